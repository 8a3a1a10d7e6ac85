package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// These tests prove that the client commands read only the partitions that
// can hold what they look for, and no further than they must: a hook
// counts every record the commands' clients fetch.

// fetched counts the records a client fetched, per topic and partition.
type fetched struct {
	mu  sync.Mutex
	at  map[string]map[int32][]int64 // topic → partition → offsets fetched
	hit func(*kgo.Record)            // called once per record, if set
}

func (f *fetched) OnFetchRecordBuffered(r *kgo.Record) {
	f.mu.Lock()
	if f.at[r.Topic] == nil {
		f.at[r.Topic] = map[int32][]int64{}
	}
	f.at[r.Topic][r.Partition] = append(f.at[r.Topic][r.Partition], r.Offset)
	hit := f.hit
	f.mu.Unlock()
	if hit != nil {
		hit(r)
	}
}

// countFetches makes every client the commands create count what it
// fetches, until the test ends.
func countFetches(t *testing.T) *fetched {
	f := &fetched{at: map[string]map[int32][]int64{}}
	extraClientOpts = []kgo.Opt{kgo.WithHooks(f)}
	t.Cleanup(func() { extraClientOpts = nil })
	return f
}

// reset forgets what was counted.
func (f *fetched) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at = map[string]map[int32][]int64{}
}

// partitions returns the partitions of topic fetched from.
func (f *fetched) partitions(topic string) map[int32][]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int32][]int64{}
	for p, offs := range f.at[topic] {
		out[p] = append([]int64(nil), offs...)
	}
	return out
}

// topicsFetched returns the topics fetched from.
func (f *fetched) topicsFetched() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for topic := range f.at {
		out = append(out, topic)
	}
	return out
}

// assertOnly fails the test if topic was fetched from partitions other
// than want, or below from's offset on any of them.
func (f *fetched) assertOnly(t *testing.T, what, topic string, want []int32, from map[int32]int64) {
	t.Helper()
	for p, offs := range f.partitions(topic) {
		if !slices.Contains(want, p) {
			t.Errorf("%s fetched %d records from partition %d of %s; want only partitions %v", what, len(offs), p, topic, want)
			continue
		}
		for _, o := range offs {
			if o < from[p] {
				t.Errorf("%s fetched offset %d of %s partition %d, below the end %d it had before the command", what, o, topic, p, from[p])
				break
			}
		}
	}
}

// partitionOf is the partition of a topic with n partitions that holds key.
func partitionOf(topic, key string, n int) int32 {
	return partitioning{topic: n}.of(topic, key)[0]
}

// history writes rows of finished workflows of their own to the workflows
// topic: perWorkflow target rows and a header each, n rows in all, spread
// over every partition. It returns their workflow IDs.
func history(t testing.TB, cfg backbone.Config, n, perWorkflow int) []string {
	t.Helper()
	cl, err := cfg.Client(kgo.ProducerBatchMaxBytes(1<<20), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var ids []string
	var recs []*kgo.Record
	flush := func() {
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatalf("write history: %v", err)
		}
		recs = recs[:0]
	}
	for written := 0; written < n; {
		id := uuid.NewString()
		ids = append(ids, id)
		for _, row := range workflowRows(id, records.WorkflowSucceeded, perWorkflow) {
			if written == n {
				break
			}
			recs = append(recs, workflowRecord(t, cfg, row))
			written++
		}
		if len(recs) >= 5000 {
			flush()
		}
	}
	flush()
	return ids
}

// workflowRows are the rows of a one-phase workflow of targets clusters
// c-1, c-2..., all succeeded: its header first.
func workflowRows(id string, state records.WorkflowState, targets int) []records.WorkflowRecord {
	env := records.Envelope{ID: uuid.NewString(), Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Principal: "planner"}
	w := &records.Workflow{ID: id, State: state, Event: "succeeded", Phases: []records.PhasePlan{{Name: "all", WaveSizes: []int{targets}}}}
	w.Spec.Name = "history"
	rows := []records.WorkflowRecord{{Envelope: env, Workflow: w}}
	for i := 1; i < targets; i++ {
		rows = append(rows, records.WorkflowRecord{Envelope: env, Target: &records.Target{
			WorkflowID: id, ClusterID: fmt.Sprintf("c-%d", i), State: records.TargetSucceeded}})
	}
	return rows
}

func workflowRecord(t testing.TB, cfg backbone.Config, row records.WorkflowRecord) *kgo.Record {
	t.Helper()
	value, err := records.Encode(row)
	if err != nil {
		t.Fatal(err)
	}
	key := ""
	if row.Workflow != nil {
		key = row.Workflow.ID
	} else {
		key = topics.TargetKey(row.Target.WorkflowID, row.Target.ClusterID)
	}
	return &kgo.Record{Topic: cfg.Names().Workflows, Key: []byte(key), Value: value}
}

// newBackbone creates the topics of a namespace of the test's own, with
// partitions partitions, on the test broker; no service runs.
func newBackbone(t testing.TB, partitions int32) backbone.Config {
	t.Helper()
	cfg := backbone.Config{Brokers: fleettest.Brokers(t), Namespace: fmt.Sprintf("cli-%s", uuid.NewString()[:8])}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cfg.EnsureTopics(ctx, partitions, 1); err != nil {
		t.Fatalf("create topics: %v", err)
	}
	return cfg
}

// cli runs the CLI against cfg's namespace.
func cli(t *testing.T, cfg backbone.Config, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := rootCommand()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append(args, "--brokers", strings.Join(cfg.Brokers, ","), "--namespace", cfg.Names().Namespace))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestStatusReadsOnlyItsPartition: `rollout status` fetches only its
// workflow's partition of the workflows topic, whatever the other
// partitions hold, and stops at the end it captured when it started: a
// row written meanwhile is not shown.
func TestStatusReadsOnlyItsPartition(t *testing.T) {
	const partitions = 6
	cfg := newBackbone(t, partitions)
	history(t, cfg, 3000, 50)
	id := uuid.NewString()
	cl, err := cfg.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for _, row := range workflowRows(id, records.WorkflowRunning, 20) {
		recs = append(recs, workflowRecord(t, cfg, row))
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	topic := cfg.Names().Workflows
	p := partitionOf(topic, id, partitions)

	counted := countFetches(t)
	var once sync.Once
	counted.hit = func(*kgo.Record) {
		// Status has captured its end and reads: a later row of the
		// workflow is past that end.
		once.Do(func() {
			row := workflowRows(id, records.WorkflowPaused, 1)[0]
			if err := cl.ProduceSync(context.Background(), workflowRecord(t, cfg, row)).FirstErr(); err != nil {
				t.Error(err)
			}
		})
	}
	out, err := cli(t, cfg, "rollout", "status", id, "-o", "json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var got decide.Progress
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if got.ID != id || got.State != records.WorkflowRunning || got.Targets != 19 || got.Succeeded != 19 {
		t.Fatalf("status = %+v, want workflow %s running, as it was when status started, 19 of 19 targets succeeded", got, id)
	}
	counted.assertOnly(t, "rollout status", topic, []int32{p}, nil)
	if n := len(counted.partitions(topic)[p]); n == 0 {
		t.Fatalf("status fetched nothing from partition %d", p)
	}
	if other := counted.topicsFetched(); len(other) != 1 {
		t.Errorf("status fetched from topics %v, want only %s", other, topic)
	}

	counted.hit = nil
	if out, err := cli(t, cfg, "rollout", "status", "no-such-rollout"); err == nil || !strings.Contains(err.Error(), "no rollout no-such-rollout") {
		t.Fatalf("status of an unknown rollout: %v\n%s", err, out)
	}
	if out, err := cli(t, backbone.Config{Brokers: cfg.Brokers, Namespace: "no-such-namespace"}, "rollout", "status", id); err == nil ||
		!strings.Contains(err.Error(), "topic no-such-namespace.workflows does not exist") {
		t.Fatalf("status in a namespace without topics: %v\n%s", err, out)
	}
}

// TestRequestsFollowFromCapturedEnds: submit and a control read the
// planner's answer only from the partitions that can hold it, from their
// ends before the request was sent, however long the history before.
// A request sent again under its ID (--id), which the planner does not
// answer twice, is answered from the log.
func TestRequestsFollowFromCapturedEnds(t *testing.T) {
	const partitions = 4
	f := fleettest.Start(t, fleettest.Options{Clusters: 10, Partitions: partitions})
	cfg := f.Backbone
	history(t, cfg, 4000, 40)
	topic := cfg.Names().Workflows
	ends := func() map[int32]int64 {
		t.Helper()
		e, err := logtable.EndOffsets(context.Background(), cfg.Opts(), topic, nil)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	spec := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(spec, []byte("name: gated\noperation: {type: upgrade, version: 3.9.1}\nselector: kind=kafka\nstrategy:\n  phases:\n    - name: all\n      approve: before\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	counted := countFetches(t)

	before := ends()
	out, err := cli(t, cfg, "rollout", "submit", "-f", spec)
	if err != nil || !strings.Contains(out, "accepted") {
		t.Fatalf("submit: %v\n%s", err, out)
	}
	id := lastLine(out)
	counted.assertOnly(t, "submit", topic, []int32{partitionOf(topic, id, partitions)}, before)
	if fetchedTopics := counted.topicsFetched(); len(fetchedTopics) != 1 || fetchedTopics[0] != topic {
		t.Errorf("submit fetched from %v, want only %s", fetchedTopics, topic)
	}

	counted.reset()
	before = ends()
	if out, err := cli(t, cfg, "rollout", "pause", id, "--reason", "a look first"); err != nil || !strings.Contains(out, "is paused") {
		t.Fatalf("pause: %v\n%s", err, out)
	}
	// The answer may be on the workflow's partition (applied) or the
	// request's (refused): the request ID is in the requests topic.
	var pauseID string
	for _, r := range f.ReadAll(cfg.Names().Requests) {
		if req, err := records.DecodeRequest(r.Value); err == nil && req.Control != nil && req.Control.Action == records.ActionPause {
			pauseID = req.Envelope.ID
		}
	}
	counted.assertOnly(t, "pause", topic, []int32{partitionOf(topic, id, partitions), partitionOf(topic, pauseID, partitions)}, before)

	// Retries: the planner writes nothing for a request ID it has
	// already acted on; the answer is found in the log all the same.
	if out, err := cli(t, cfg, "rollout", "pause", id, "--id", pauseID, "--timeout", "15s"); err != nil || !strings.Contains(out, "is paused") {
		t.Fatalf("pause again under its ID: %v\n%s", err, out)
	}
	if out, err := cli(t, cfg, "rollout", "submit", "-f", spec, "--id", id, "--timeout", "15s"); err != nil || lastLine(out) != id || !strings.Contains(out, "accepted") {
		t.Fatalf("submit again under its ID: %v\n%s", err, out)
	}
	for range 2 {
		if _, err := cli(t, cfg, "rollout", "resume", "no-such-rollout", "--id", "resume-1", "--timeout", "15s"); err == nil ||
			!strings.Contains(err.Error(), "no workflow no-such-rollout here") {
			t.Fatalf("resume of an unknown rollout, under one ID: %v", err)
		}
	}
	if w, ok := f.Workflow(id); !ok || w.State != records.WorkflowPaused || w.LastControl != pauseID {
		t.Fatalf("workflow after the retries: %+v", w)
	}
}

// TestAuditReadsWhatItNeeds: audit --workflow reads only the workflow's
// partition of the topics keyed by workflow and the health of its
// clusters; audit --cluster only the cluster's partition of inventory and
// health, and no requests or policies. Each prints what the whole log,
// filtered, shows.
func TestAuditReadsWhatItNeeds(t *testing.T) {
	const partitions = 4
	f := fleettest.Start(t, fleettest.Options{Clusters: 12, Partitions: partitions})
	cfg := f.Backbone
	names := cfg.Names()
	spec := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(spec, []byte("name: up\noperation: {type: upgrade, version: 3.9.1}\nselector: kind=kafka\nstrategy:\n  phases:\n    - name: all\n      waves: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for len(ids) < 2 || partitionOf(names.Workflows, ids[0], partitions) == partitionOf(names.Workflows, ids[len(ids)-1], partitions) {
		// Two rollouts on different partitions; the later ones are
		// refused for conflict or wait: more history.
		id := f.Submit(rolloutSpec(t, spec))
		ids = append(ids, id)
		f.Await(id, time.Second, time.Minute, "the rollout ending", func(w *decide.Workflow) bool { return w.State.Terminal() })
	}
	workflow := ids[0]
	cluster := f.Clusters[0].ID
	whole, err := readAudit(context.Background(), cfg, "", "")
	if err != nil {
		t.Fatal(err)
	}

	counted := countFetches(t)
	out, err := cli(t, cfg, "audit", "--workflow", workflow, "-o", "json")
	if err != nil {
		t.Fatalf("audit --workflow: %v\n%s", err, out)
	}
	p := partitionOf(names.Workflows, workflow, partitions)
	for _, topic := range []string{names.Requests, names.Workflows, names.Commands, names.Operations} {
		counted.assertOnly(t, "audit --workflow", topic, []int32{p}, nil)
	}
	for _, topic := range []string{names.Inventory, names.Policies} {
		if n := len(counted.partitions(topic)); n != 0 {
			t.Errorf("audit --workflow read %d partitions of %s, which has nothing about workflows", n, topic)
		}
	}
	assertSameAudit(t, "--workflow", out, filterAudit(whole, workflow, ""), true)

	counted.reset()
	out, err = cli(t, cfg, "audit", "--cluster", cluster, "-o", "json")
	if err != nil {
		t.Fatalf("audit --cluster: %v\n%s", err, out)
	}
	for _, topic := range []string{names.Inventory, names.Health} {
		counted.assertOnly(t, "audit --cluster", topic, []int32{partitionOf(topic, cluster, partitions)}, nil)
	}
	for _, topic := range []string{names.Requests, names.Policies} {
		if n := len(counted.partitions(topic)); n != 0 {
			t.Errorf("audit --cluster read %d partitions of %s, which has nothing about clusters", n, topic)
		}
	}
	assertSameAudit(t, "--cluster", out, filterAudit(whole, "", cluster), false)

	// Who and when: alice's requests only; a range that holds nothing.
	out, err = cli(t, cfg, "audit", "--workflow", workflow, "--principal", "alice", "-o", "json")
	if err != nil {
		t.Fatalf("audit --principal: %v\n%s", err, out)
	}
	var hers []auditEntry
	if err := json.Unmarshal([]byte(out), &hers); err != nil {
		t.Fatal(err)
	}
	if len(hers) == 0 {
		t.Error("audit --principal alice: nothing, though alice submitted the rollout")
	}
	for _, e := range hers {
		if e.Principal != "alice" {
			t.Errorf("audit --principal alice shows an entry by %s: %+v", e.Principal, e)
		}
	}
	if out, err := cli(t, cfg, "audit", "--workflow", workflow, "--since", time.Now().Add(time.Hour).Format(time.RFC3339), "-o", "json"); err != nil || strings.TrimSpace(out) != "null" && strings.TrimSpace(out) != "[]" {
		t.Errorf("audit --since an hour from now: %v\n%s; want no entry", err, out)
	}
	if _, err := cli(t, cfg, "audit", "--since", "yesterday"); err == nil || !strings.Contains(err.Error(), `--since "yesterday": want an RFC 3339 time`) {
		t.Errorf("audit --since yesterday: %v; want the flag named and what it takes", err)
	}
	if _, err := cli(t, cfg, "audit", "--cluster", "no-such-cluster"); err == nil || !strings.Contains(err.Error(), "nothing about cluster no-such-cluster") {
		t.Fatalf("audit of an unknown cluster: %v", err)
	}
	if _, err := cli(t, cfg, "audit", "--workflow", "no-such-rollout"); err == nil || !strings.Contains(err.Error(), "nothing about workflow no-such-rollout") {
		t.Fatalf("audit of an unknown workflow: %v", err)
	}
}

// assertSameAudit fails the test unless the JSON audit printed holds the
// entries want, in the same order; unless exact, entries of the same time
// may come in another order, causes before their effects: a cluster's
// entries are placed among those of the same time by their chains of
// causes, and audit --cluster does not read the records of other clusters
// those chains run through.
func assertSameAudit(t *testing.T, what, printed string, want []auditEntry, exact bool) {
	t.Helper()
	var got []auditEntry
	if err := json.Unmarshal([]byte(printed), &got); err != nil {
		t.Fatalf("audit %s JSON: %v\n%s", what, err, printed)
	}
	if len(want) == 0 {
		t.Fatalf("audit %s of the whole log has no entries: nothing compared", what)
	}
	// Through JSON both, as the times print.
	raw, _ := json.Marshal(want)
	want = nil
	_ = json.Unmarshal(raw, &want)
	same := reflect.DeepEqual(got, want)
	if !exact && !same && len(got) == len(want) {
		same = true
		for i := range got {
			same = same && got[i].Time.Equal(want[i].Time)
		}
		byPlace := func(entries []auditEntry) []auditEntry {
			sorted := slices.Clone(entries)
			slices.SortFunc(sorted, func(a, b auditEntry) int {
				return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
			})
			return sorted
		}
		same = same && reflect.DeepEqual(byPlace(got), byPlace(want))
		seen := map[string]bool{}
		for _, e := range got {
			if e.CausedBy != "" && !seen[e.CausedBy] && slices.ContainsFunc(got, func(c auditEntry) bool { return c.ID == e.CausedBy }) {
				t.Errorf("audit %s prints %q before its cause", what, e.What)
			}
			seen[e.ID] = true
		}
	}
	if !same {
		t.Errorf("audit %s printed %d entries:\n%s\nthe whole log filtered has %d:\n%s", what, len(got), describeEntries(got), len(want), describeEntries(want))
	}
}

func describeEntries(entries []auditEntry) string {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "  %s %s %s %s@%d/%d %s\n", e.Time.Format(time.RFC3339Nano), e.Kind, e.Cluster, e.Topic, e.Partition, e.Offset, e.What)
	}
	return b.String()
}

func rolloutSpec(t *testing.T, file string) rollout.Spec {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := rollout.ParseYAML(data)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestAuditWhoAndWhen(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"2h", now.Add(-2 * time.Hour)},
		{"2026-11-30T08:00:00Z", time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)},
	} {
		if got, err := parseWhen("--since", tc.in, now); err != nil || !got.Equal(tc.want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"-2h", "noon", "2026-11-30"} {
		if _, err := parseWhen("--until", bad, now); err == nil || !strings.Contains(err.Error(), "--until") {
			t.Errorf("parseWhen(%q): %v; want an error naming the flag", bad, err)
		}
	}
	entries := []auditEntry{
		{Time: now.Add(-3 * time.Hour), Principal: "alice", ID: "a1"},
		{Time: now.Add(-2 * time.Hour), Principal: "planner", ID: "p1"},
		{Time: now.Add(-time.Hour), Principal: "bob", ID: "b1"},
		{Time: now, Principal: "alice", ID: "a2"},
	}
	ids := func(es []auditEntry) string {
		var out []string
		for _, e := range es {
			out = append(out, e.ID)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		principals []string
		from, to   time.Time
		want       string
	}{
		{nil, time.Time{}, time.Time{}, "a1,p1,b1,a2"},
		{[]string{"alice"}, time.Time{}, time.Time{}, "a1,a2"},
		{[]string{"alice", "bob"}, time.Time{}, time.Time{}, "a1,b1,a2"},
		{nil, now.Add(-2 * time.Hour), now, "p1,b1"}, // since inclusive, until exclusive
		{[]string{"alice"}, now.Add(-2 * time.Hour), time.Time{}, "a2"},
	} {
		if got := ids(filterWhoWhen(entries, tc.principals, tc.from, tc.to)); got != tc.want {
			t.Errorf("filterWhoWhen(%v, %v, %v) = %s; want %s", tc.principals, tc.from, tc.to, got, tc.want)
		}
	}
}
