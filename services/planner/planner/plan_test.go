package planner

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// TestAPlanCutShortByAStopIsFinishedByTheNextPlanner stops the planner
// while a rollout's plan is half written, one transaction of target rows
// at a time, and starts another: it writes the rest of the plan, once,
// and only then sends commands.
func TestAPlanCutShortByAStopIsFinishedByTheNextPlanner(t *testing.T) {
	e := newTestEnv(t, brokertest.Addrs(t))
	e.planChunk = 10
	const wf, targets, inFlight = "big", 40, 5
	clusters := simfleet.GenerateClusters(targets)
	var ids []string
	var recs []*kgo.Record
	for _, c := range clusters {
		ids = append(ids, c.ID)
		recs = append(recs, e.record(e.names.Inventory, c.ID, records.ClusterRecord{Envelope: records.Envelope{ID: "inv-" + c.ID, Time: e.clock.Now(), Principal: "test"}, Cluster: c}))
	}
	e.produce(recs...)
	spec := rollout.Spec{Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: ids,
		Phases: []rollout.Phase{{Name: "all", MaxInFlight: inFlight}}}
	e.produce(e.record(e.names.Requests, wf, records.Request{Envelope: records.Envelope{ID: wf, Time: e.clock.Now(), Principal: "alice"}, Submit: &records.SubmitRollout{Spec: spec}}))

	var commits atomic.Int32
	halfway, release := newSignal(), make(chan struct{})
	a := e.start("a", &testHooks{ended: func(rows, commands int, committed bool, _ error) {
		if commands > 0 {
			t.Errorf("planner a sent %d commands before the plan was written", commands)
		}
		if rows > e.planChunk+3 { // a chunk, and the spec row and two header rows of the first
			t.Errorf("a transaction of the plan wrote %d rows, more than a chunk of %d and its header", rows, e.planChunk)
		}
		if committed && commits.Add(1) == 2 {
			halfway.raise()
			<-release // stopped here, as by a crash between two chunks
		}
	}})
	halfway.wait(t, e.ctx, "planner a did not commit two chunks of the plan")
	a.cancel()
	close(release)
	<-a.done

	written := targetKeys(t, e, wf)
	if len(written) != 2*e.planChunk {
		t.Fatalf("%d target rows after two chunks, want %d", len(written), 2*e.planChunk)
	}
	started := newSignal()
	e.start("b", &testHooks{ended: func(_, commands int, committed bool, _ error) {
		if commands > 0 && committed {
			started.raise()
		}
	}})
	started.wait(t, e.ctx, "planner b did not start the rollout")

	written = targetKeys(t, e, wf)
	if len(written) != targets {
		t.Fatalf("%d target rows after planner b, want one for each of the %d clusters", len(written), targets)
	}
	var header *records.Workflow
	commanded := map[string]int{}
	if err := logtable.ReadToEnd(e.ctx, e.bb.Opts(), e.names.Workflows, nil, func(r *kgo.Record) {
		if rec, err := records.DecodeWorkflowRecord(r.Value); err == nil && rec.Workflow != nil && rec.Workflow.ID == wf {
			header = rec.Workflow
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := logtable.ReadToEnd(e.ctx, e.bb.Opts(), e.names.Commands, nil, func(r *kgo.Record) {
		commanded[string(r.Key)]++
	}); err != nil {
		t.Fatal(err)
	}
	if header == nil || header.Unplanned != 0 || header.Targets != targets || header.State != records.WorkflowRunning {
		t.Fatalf("last header %+v, want running with its %d targets all planned", header, targets)
	}
	if len(commanded) != inFlight {
		t.Fatalf("commands for %d clusters, want the first %d", len(commanded), inFlight)
	}
	for key, n := range commanded {
		if n != 1 || !written[key] {
			t.Errorf("command %s: %d of them, target row %v; want one, for a planned target", key, n, written[key])
		}
	}
}

// targetKeys returns the keys of workflow wf's target rows in the log.
func targetKeys(t *testing.T, e *testEnv, wf string) map[string]bool {
	t.Helper()
	keys := map[string]bool{}
	if err := logtable.ReadToEnd(e.ctx, e.bb.Opts(), e.names.Workflows, nil, func(r *kgo.Record) {
		if k := string(r.Key); strings.HasPrefix(k, wf+"/") && k != topics.SpecKey(wf) {
			keys[k] = true
		}
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}
