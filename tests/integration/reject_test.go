package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// TestBadRequestsAreRejectedAndWorkGoesOn sends requests a user could get
// wrong, as raw records, and checks that each is rejected with a
// notification naming it and the reason, while a good request still runs.
func TestBadRequestsAreRejectedAndWorkGoesOn(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 10})
	topic := f.Backbone.Names().Requests
	request := func(spec rollout.Spec) (string, *kgo.Record) {
		id := uuid.NewString()
		return id, f.Record(topic, id, records.Request{
			Envelope: records.Envelope{ID: id, Time: f.Clock.Now(), Principal: "bob"},
			Submit:   &records.SubmitRollout{Spec: spec},
		})
	}
	good := threePhaseSpec("3.9.1")
	good.Phases = nil
	unknownCluster := good
	unknownCluster.Selector, unknownCluster.Clusters = "", []string{"sim-0001", "no-such-cluster"}
	badSelector := good
	badSelector.Selector = "cloud in (aws"
	empty := good
	empty.Selector = "cloud=oracle"
	unknownOp := good
	unknownOp.Operation = rollout.Operation{Kind: "reboot"}

	cases := map[string]string{} // request ID → expected reason
	var recs []*kgo.Record
	add := func(spec rollout.Spec, reason string) {
		id, r := request(spec)
		cases[id] = reason
		recs = append(recs, r)
	}
	add(unknownCluster, "unknown clusters: no-such-cluster")
	add(badSelector, `selector "cloud in (aws"`)
	add(empty, `no cluster matches selector "cloud=oracle"`)
	add(unknownOp, `unknown operation "reboot"`)
	garbageID := uuid.NewString()
	cases[garbageID] = "cannot decode request"
	recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(garbageID), Value: []byte("this is not a request")})
	jsonID := uuid.NewString()
	cases[jsonID] = "cannot decode request"
	recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(jsonID), Value: []byte(`{"envelope": {"id": "` + jsonID + `"}}`)})
	goodID, goodRec := request(good)
	recs = append(recs, goodRec)
	f.Produce(recs...)

	for id, reason := range cases {
		w := f.Await(id, 0, 30*time.Second, "the rejection", func(w *decide.Workflow) bool { return w.State == records.WorkflowRejected })
		if !strings.Contains(w.Reason, reason) {
			t.Errorf("request %s rejected with %q, want it to say %q", id, w.Reason, reason)
		}
	}
	f.Await(goodID, time.Second, time.Minute, "the good request finishing", func(w *decide.Workflow) bool { return w.State == records.WorkflowSucceeded })

	var notes []records.Notification
	f.Eventually(0, 10*time.Second, func() bool {
		notes = f.Notifications()
		return countRejections(notes) >= len(cases)
	})
	for id, reason := range cases {
		found := false
		for _, n := range notes {
			if n.Kind == "workflow.rejected" && n.WorkflowID == id {
				found = true
				if !strings.Contains(n.Message, id) || !strings.Contains(n.Message, reason) {
					t.Errorf("notification %q does not name request %s and reason %q", n.Message, id, reason)
				}
			}
		}
		if !found {
			t.Errorf("no rejection notification for request %s", id)
		}
	}
}

func countRejections(ns []records.Notification) int {
	n := 0
	for _, x := range ns {
		if x.Kind == "workflow.rejected" {
			n++
		}
	}
	return n
}

// TestAvroJSONRequest submits examples/request-upgrade.json as any Kafka
// client could (kcat -P), with a fresh ID and time.
func TestAvroJSONRequest(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 30})
	raw, err := os.ReadFile("../../examples/request-upgrade.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("examples/request-upgrade.json: %v", err)
	}
	id := uuid.NewString()
	env := doc["envelope"].(map[string]any)
	env["id"] = id
	env["time"] = f.Clock.Now().UnixMilli()
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(doc); err != nil {
		t.Fatal(err)
	}
	f.Produce(&kgo.Record{Topic: f.Backbone.Names().Requests, Key: []byte(id), Value: buf.Bytes()})
	w := f.Await(id, 15*time.Second, 2*time.Minute, "the rollout finishing", finished) // its bakes are 10-15 minutes
	if w.State != records.WorkflowSucceeded || len(w.Phases) != 3 {
		t.Fatalf("state %s (%s) with %d phases, want succeeded with 3", w.State, w.Reason, len(w.Phases))
	}
	for tid := range w.Targets {
		if st, _ := f.Sim.Cluster(tid); st.Version != "3.9.1" {
			t.Errorf("%s runs %s, want 3.9.1", tid, st.Version)
		}
	}
	if w.Spec.Name == "" {
		t.Fatal(fmt.Sprintf("spec not carried: %+v", w.Spec))
	}
}

// TestBadRecordsOnEveryTopicAreSetAside writes records no service can use
// to every topic the services read, before and while a rollout runs: each
// one is set aside by the service owning its partition on the dead-letter
// topic, with where it was and why, the notifier announces it, and the
// rollout succeeds. The planner, monitor and executor read some topics
// only when they take partitions over (workflows, health, leases), so
// they are restarted after the bad records are written.
func TestBadRecordsOnEveryTopicAreSetAside(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 10})
	names := f.Backbone.Names()
	bad := []*kgo.Record{
		{Topic: names.Commands, Key: []byte("wf-x/sim-0001"), Value: []byte("garbage")},
		{Topic: names.Operations, Key: []byte("wf-x/sim-0001"), Value: []byte{0xc3, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
		{Topic: names.Inventory, Key: []byte("sim-9999"), Value: []byte("not a cluster")},
		{Topic: names.Workflows, Key: []byte("wf-bad"), Value: []byte("not a row")},
		{Topic: names.Policies, Key: []byte("bad-policy"), Value: []byte("not a policy")},
		{Topic: names.Health, Key: []byte("sim-0003"), Value: []byte("not a health signal")},
		{Topic: names.Leases, Key: []byte("not-a-lease"), Value: []byte("not a lease")},
		{Topic: names.Claims, Key: []byte("sim-0004/cmd-x"), Value: []byte("not a claim")},
	}
	setAsideBy := map[string]string{
		names.Commands: "executor", names.Operations: "executor", names.Leases: "executor", names.Claims: "executor",
		names.Inventory: "monitor", names.Health: "monitor",
		names.Workflows: "planner", names.Policies: "planner",
	}
	f.Produce(bad...)
	// Kafka refuses a null key on a compacted topic itself; the embedded
	// broker takes it, and it is set aside.
	nullKey := &kgo.Record{Topic: names.Commands, Value: []byte("no key")}
	if f.ProduceErr(nullKey) == nil {
		bad = append(bad, nullKey)
	}
	for _, svc := range []string{"planner", "monitor", "executor"} {
		f.StopService(svc)
		f.StartService(svc)
	}
	spec := threePhaseSpec("3.9.1")
	spec.Phases = nil
	id := f.Submit(spec)
	late := &kgo.Record{Topic: names.Commands, Key: []byte("wf-y/sim-0002"), Value: []byte("more garbage")}
	f.Produce(late)
	bad = append(bad, late)
	f.Await(id, time.Second, time.Minute, "the rollout finishing", func(w *decide.Workflow) bool { return w.State == records.WorkflowSucceeded })

	// A record read again after a restart is set aside again, under the
	// same ID: count the records set aside, not the announcements.
	announced := map[string]records.Notification{}
	where := func(r *kgo.Record) string { return fmt.Sprintf("%s/%d@%d", r.Topic, r.Partition, r.Offset) } // as a notification says it
	if !f.Eventually(0, 30*time.Second, func() bool {
		for _, n := range f.Notifications() {
			if n.Kind == "record.set-aside" {
				announced[n.Fields["record"]] = n
			}
		}
		for _, r := range bad {
			if _, ok := announced[where(r)]; !ok {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("%d records announced as set aside, want %d: %v", len(announced), len(bad), slices.Collect(maps.Keys(announced)))
	}
	for _, r := range bad {
		n, ok := announced[where(r)]
		if !ok {
			t.Errorf("the record at %s was not announced as set aside (announced: %v)", where(r), slices.Collect(maps.Keys(announced)))
			continue
		}
		if want := setAsideBy[r.Topic]; n.Fields["service"] != want || n.Severity != records.SeverityError {
			t.Errorf("notification %+v: want it set aside by the %s, severity error", n, want)
		}
	}
	for _, want := range []string{"not an Avro single-object record", "unknown schema", "not keyed by a partition of"} {
		if !slices.ContainsFunc(slices.Collect(maps.Values(announced)), func(n records.Notification) bool { return strings.Contains(n.Message, want) }) {
			t.Errorf("no set-aside notification says %q: %+v", want, announced)
		}
	}
}
