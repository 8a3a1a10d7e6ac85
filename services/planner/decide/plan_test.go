package decide

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// targetRows counts the rows of new (pending) targets of a decision, and
// returns its last header row.
func targetRows(out Outputs) (targets int, header *records.Workflow) {
	for _, r := range out.Rows {
		switch {
		case r.Target != nil && r.Target.State == records.TargetPending:
			targets++
		case r.Workflow != nil:
			header = r.Workflow
		}
	}
	return targets, header
}

// A rollout larger than a chunk is planned over several decisions, none
// writing more than a chunk of target rows, and nothing is sent before the
// whole plan is written.
func TestALargePlanIsWrittenInChunks(t *testing.T) {
	h := newHarness(t, fleet(20))
	h.s.PlanChunk = 6
	spec := upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WavePercent, Value: 50}})
	out := h.submit("wf", spec)
	if n, header := targetRows(out); n != 0 || header == nil || header.Unplanned != 20 || header.Targets != 20 || len(out.Commands) != 0 {
		t.Fatalf("submit: %d target rows, %d commands, header %+v; want the header alone, 20 of 20 unplanned", n, len(out.Commands), header)
	}
	out = h.advance(0)
	want := []int{14, 8, 2}
	for i := 0; ; i++ {
		n, header := targetRows(out)
		if n > 6 {
			t.Fatalf("decision %d wrote %d target rows, more than a chunk of 6", i, n)
		}
		if i < len(want) {
			if n != 6 || header == nil || header.Unplanned != want[i] || header.Targets != 20 {
				t.Fatalf("decision %d: %d target rows, header %+v; want 6 rows and %d of 20 unplanned", i, n, header, want[i])
			}
			if len(out.Commands) != 0 || !h.s.Planning() {
				t.Fatalf("decision %d sent %d commands while %d targets have no row", i, len(out.Commands), want[i])
			}
			// What else comes meanwhile moves nothing.
			h.probe("c-000", records.HealthHealthy)
			out = h.advance(0)
			continue
		}
		if n != 2 || header == nil || header.Unplanned != 0 || len(out.Commands) != 10 || h.s.Planning() {
			t.Fatalf("last decision: %d target rows, %d commands, header %+v; want the last 2 rows and the first wave of 10 started", n, len(out.Commands), header)
		}
		break
	}
	w := h.s.Workflows["wf"]
	if len(w.Targets) != 20 || w.Phases[0].WaveSizes[0] != 10 || w.Phases[0].WaveSizes[1] != 10 {
		t.Fatalf("%d targets, waves %v; want 20 in two waves of 10", len(w.Targets), w.Phases[0].WaveSizes)
	}
}

// A planner that restarts while a plan is being written plans again against
// the inventory it has then, and writes the targets that have no row yet.
func TestAPlanInterruptedByARestartIsFinishedFromTheInventory(t *testing.T) {
	h := newHarness(t, fleet(20))
	h.s.PlanChunk = 6
	h.submit("wf", upgradeSpec(rollout.Phase{Name: "all"}))
	h.advance(0)
	h.advance(0) // 12 of 20 written
	// The fleet changes, and the planner restarts.
	h.s.Inventory["c-100"] = inventory.Cluster{ID: "c-100", Labels: map[string]string{"kind": "kafka"}, Driver: "sim", Version: "3.8.0"}
	delete(h.s.Inventory, "c-019")
	h.s = h.rebuilt()
	if !h.s.Planning() || h.s.Workflows["wf"].Unplanned != 8 {
		t.Fatalf("rebuilt: planning %v, %d unplanned; want 8 still to write", h.s.Planning(), h.s.Workflows["wf"].Unplanned)
	}
	h.advance(0)
	out := h.advance(0)
	w := h.s.Workflows["wf"]
	if w.Unplanned != 0 || len(out.Commands) == 0 {
		t.Fatalf("%d unplanned, %d commands; want the plan written and the rollout started", w.Unplanned, len(out.Commands))
	}
	if _, ok := w.Targets["c-100"]; !ok || len(w.Targets) != 20 || w.Phases[0].WaveSizes[0] != 20 || w.Workflow.Targets != 20 {
		t.Fatalf("targets %d (c-100 in: %v), wave %v, count %d; want the 19 left and c-100", len(w.Targets), ok, w.Phases[0].WaveSizes, w.Workflow.Targets)
	}
	if _, ok := w.Targets["c-019"]; ok {
		t.Fatal("c-019 left the inventory before it was planned, but is a target")
	}
}

// A rollout cancelled while its plan is written writes no more of it.
func TestACancelStopsThePlan(t *testing.T) {
	h := newHarness(t, fleet(20))
	h.s.PlanChunk = 6
	h.submit("wf", upgradeSpec())
	h.control("wf", records.ActionCancel, "wrong version")
	if st := h.s.Workflows["wf"].State; st != records.WorkflowCancelled || h.s.Planning() {
		t.Fatalf("state %s, planning %v; want cancelled, planning stopped", st, h.s.Planning())
	}
	for i := range 3 {
		if n, _ := targetRows(h.advance(0)); n != 0 {
			t.Fatalf("tick %d after the cancel wrote %d target rows", i, n)
		}
	}
	if len(h.commands) != 0 {
		t.Fatalf("%d commands sent for a rollout cancelled while planned", len(h.commands))
	}
}

// BenchmarkSubmit measures the decision that accepts a rollout of N
// targets, and the ticks that write the rest of its plan, per target.
func BenchmarkSubmit(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			h := newHarness(b, fleet(n))
			spec := upgradeSpec(rollout.Phase{Name: "all", MaxInFlight: 100})
			b.ResetTimer()
			for i := range b.N {
				id := fmt.Sprintf("wf-%d", i)
				benchSubmit(h, id, spec)
				b.StopTimer()
				Decide(h.s, Submit{Key: "cancel-" + id, Request: records.Request{
					Envelope: records.Envelope{ID: "cancel-" + id, Time: h.now},
					Control:  &records.ControlWorkflow{WorkflowID: id, Action: records.ActionCancel},
				}}, h.now)
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/target")
		})
	}
}

// A planner loads its partitions a few at a time and sheds the finished
// workflows' targets after each: the state it ends with is the one a
// load of everything at once gives, down to what compaction will remove.
func TestAStateLoadedInPartsIsTheStateLoadedWhole(t *testing.T) {
	h := newHarness(t, fleet(6))
	h.s.Retention = time.Hour
	for _, id := range []string{"done", "running"} {
		h.submit(id, upgradeSpec(rollout.Phase{Name: "all"}))
	}
	for _, c := range h.running("done") {
		h.result(c, records.OperationSucceeded, "")
	}
	for _, c := range h.commands {
		h.probe(c.ClusterID, records.HealthHealthy)
	}
	h.advance(time.Second)
	if h.s.Workflows["done"].State != records.WorkflowSucceeded || h.s.Workflows["running"].State.Terminal() {
		t.Fatalf("done %s, running %s; want one finished, one not", h.s.Workflows["done"].State, h.s.Workflows["running"].State)
	}
	whole := h.rebuilt()
	parts := NewState(h.s.Inventory, healthOf(h.s))
	parts.HoldUnfinishedOnly, parts.Retention = true, h.s.Retention
	for _, id := range []string{"done", "running"} { // a part per workflow
		for _, r := range h.rows {
			if (r.Workflow != nil && r.Workflow.ID == id) || (r.Target != nil && r.Target.WorkflowID == id) || (r.Spec != nil && r.Spec.WorkflowID == id) {
				parts.ApplyRow(0, r)
			}
		}
		parts.ShedFinished()
	}
	parts.Reindex()
	for _, id := range []string{"done", "running"} {
		a, b := whole.Workflows[id], parts.Workflows[id]
		if a.shed != b.shed || !reflect.DeepEqual(a.removal, b.removal) || !reflect.DeepEqual(a.Targets, b.Targets) {
			t.Errorf("%s loaded in parts: shed %v, %d removals, %d targets; whole: shed %v, %d removals, %d targets", id, b.shed, len(b.removal), len(b.Targets), a.shed, len(a.removal), len(a.Targets))
		}
	}
	if !whole.Workflows["done"].shed || len(whole.Workflows["done"].removal) != 6 {
		t.Fatalf("the finished workflow is not shed with its 6 removals: the test shows nothing")
	}
}
