package decide

import (
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// checkWaveIndex checks that the index of w's current wave, which spares
// the decision core a look at every target, says what that look would.
func checkWaveIndex(t testing.TB, s *State, w *Workflow) {
	t.Helper()
	ix := w.cur
	if ix == nil || ix.phase != w.Phase || ix.wave != w.Wave {
		return // rebuilt when next needed
	}
	queued := map[string]bool{}
	for _, i := range ix.queue {
		id := ix.order[i]
		if queued[id] {
			t.Fatalf("%s: %s is twice in the queue of wave %d/%d", w.ID, id, ix.phase, ix.wave)
		}
		queued[id] = true
	}
	var holds [holdReasons]int
	for id, why := range ix.held {
		holds[why]++
		if queued[id] {
			t.Fatalf("%s: %s is both queued and held", w.ID, id)
		}
		tg := w.Targets[id]
		switch why {
		case heldBusy:
			if _, busy := s.busy[id]; !busy {
				t.Fatalf("%s: %s is held as busy, but no operation runs on it", w.ID, id)
			}
		case heldUnhealthy:
			if h, _ := s.HealthOf(id); h.Status != records.HealthUnhealthy {
				t.Fatalf("%s: %s is held as unhealthy, but its health is %q", w.ID, id, h.Status)
			}
		case heldRetry:
			if ix.recheck.IsZero() || ix.recheck.After(tg.NotBefore) {
				t.Fatalf("%s: %s waits to retry at %v, but the wave looks again only at %v", w.ID, id, tg.NotBefore, ix.recheck)
			}
		case heldWindow:
			if ix.recheck.IsZero() {
				t.Fatalf("%s: %s waits for its window, but the wave never looks again", w.ID, id)
			}
		}
	}
	if holds != ix.holds {
		t.Fatalf("%s: hold counts %v, held %v", w.ID, ix.holds, holds)
	}
	running := 0
	for id, tg := range w.Targets {
		if tg.State == records.TargetRunning {
			running++
		}
		if tg.Phase != ix.phase || tg.Wave != ix.wave {
			continue
		}
		_, held := ix.held[id]
		if pending := tg.State == records.TargetPending; pending != (queued[id] || held) {
			t.Fatalf("%s: %s is %s, queued %v, held %v", w.ID, id, tg.State, queued[id], held)
		}
		unseen := ix.unseen[ix.place[id]]
		h, seen := s.HealthOf(id)
		want := tg.State == records.TargetSucceeded && (!seen || h.ObservedAt.Before(tg.FinishedAt))
		if unseen != want {
			t.Fatalf("%s: %s (%s, finished %v, health %+v) unseen %v, want %v", w.ID, id, tg.State, tg.FinishedAt, h, unseen, want)
		}
	}
	unseenN := 0
	for _, u := range ix.unseen {
		if u {
			unseenN++
		}
	}
	if unseenN != ix.unseenN {
		t.Fatalf("%s: %d targets marked unseen, the index counts %d", w.ID, unseenN, ix.unseenN)
	}
	if running != ix.running {
		t.Fatalf("%s: %d targets running, the index counts %d", w.ID, running, ix.running)
	}
}

// checkDeadlines checks that every running or recovering workflow with a
// deadline still to come is in the deadline queue, no later than it.
func checkDeadlines(t testing.TB, h *harness) {
	t.Helper()
	for _, w := range h.s.Workflows {
		at, ok := h.s.deadline(w)
		if !ok || !at.After(h.now) {
			continue
		}
		if !w.queued || w.queuedAt.After(at) {
			t.Fatalf("%s (%s) has a deadline at %v; queued %v at %v", w.ID, w.State, at, w.queued, w.queuedAt)
		}
	}
}

// shadowDecide makes the decision the live state just made (out) again on
// a state rebuilt from the rows written before it, as a planner that had
// restarted would, and checks it sent the same commands and left the same
// targets and workflows; only the account of what waits may differ, as
// the live state knows which clusters it already looked at.
func shadowDecide(t testing.TB, h *harness, before *State, in Input, out Outputs) {
	t.Helper()
	got := Decide(before, in, h.now)
	if !reflect.DeepEqual(got.Commands, out.Commands) {
		t.Fatalf("after a rebuild, %T decides commands %+v; live %+v", in, got.Commands, out.Commands)
	}
	for id, w := range h.s.Workflows {
		r := before.Workflows[id]
		if r == nil {
			t.Fatalf("%s missing from the rebuilt state after %T", id, in)
		}
		a, b := w.Workflow, r.Workflow
		for _, h := range []*records.Workflow{&a, &b} { // what the account of waits changes
			h.Waiting, h.WaitUntil, h.Event, h.Seq, h.UpdatedAt = "", time.Time{}, "", 0, time.Time{}
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("after a rebuild, %T leaves %s as\n%+v\nlive\n%+v", in, id, b, a)
		}
		if !reflect.DeepEqual(w.Targets, r.Targets) {
			for cid, tg := range w.Targets {
				if !reflect.DeepEqual(tg, r.Targets[cid]) {
					t.Fatalf("after a rebuild, %T leaves %s/%s as %+v; live %+v", in, id, cid, r.Targets[cid], tg)
				}
			}
		}
	}
}

// rebuiltCopy is the state rebuilt from the rows so far, over copies of the
// views, so that deciding on it changes nothing the live state sees.
func (h *harness) rebuiltCopy() *State {
	s := NewState(maps.Clone(h.s.Inventory), healthOf(h.s))
	s.Policies = maps.Clone(h.s.Policies)
	s.HoldUnfinishedOnly = h.s.HoldUnfinishedOnly
	return h.load(s)
}

// A planner that takes over a workflow moves it at its next tick, even if
// no signal about its clusters comes: here the cluster it waited for was
// busy with a workflow that the new planner does not hold (another
// partition's), whose operation ending it never hears of.
func TestALoadedWorkflowMovesAtTheNextTick(t *testing.T) {
	h := newHarness(t, fleet(2))
	h.submit("a", upgradeSpec())
	if out := h.submit("b", rollout.Spec{Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{"c-000"}}); len(out.Commands) != 0 {
		t.Fatalf("b started %v on a busy cluster", clusterIDs(out.Commands))
	}
	taken := NewState(h.s.Inventory, healthOf(h.s))
	for _, r := range h.rows {
		if r.Workflow != nil && r.Workflow.ID == "b" || r.Target != nil && r.Target.WorkflowID == "b" {
			taken.ApplyRow(1, r)
		}
	}
	taken.Reindex()
	if out := Decide(taken, Tick{}, h.now); len(out.Commands) != 1 || out.Commands[0].WorkflowID != "b" || out.Commands[0].ClusterID != "c-000" {
		t.Fatalf("the planner that took b over sent %v at its first tick, want b's command for c-000", out.Commands)
	}
	if out := Decide(taken, Tick{}, h.now.Add(time.Second)); len(out.Commands) != 0 || len(out.Rows) != 0 {
		t.Fatalf("the next tick decided %d rows and %v again", len(out.Rows), clusterIDs(out.Commands))
	}
}

// A cluster held outside its maintenance window is looked at again when its
// inventory record changes: new labels may put it under other windows, and
// a cluster removed from the inventory fails at once.
func TestAnInventoryChangeMovesAHeldCluster(t *testing.T) {
	h := newHarness(t, fleet(6)) // t0 is 12:00 UTC; c-000 and c-003 are on aws
	spec := upgradeSpec()
	spec.Windows = []rollout.WindowRule{{Selector: "cloud=aws", Allow: []string{"14:00-16:00 UTC"}}}
	spec.FailureThreshold = rollout.Threshold{Percent: 100}
	out := h.submit("wf", spec)
	if got := clusterIDs(out.Commands); slices.Contains(got, "c-000") || slices.Contains(got, "c-003") {
		t.Fatalf("started %v, want the aws clusters held outside their window", got)
	}
	moved := h.s.Inventory["c-000"]
	moved.Labels = maps.Clone(moved.Labels)
	moved.Labels["cloud"] = "gcp"
	h.s.Inventory["c-000"] = moved
	out = h.do(InventoryUpdate{ClusterID: "c-000"})
	if got := clusterIDs(out.Commands); !reflect.DeepEqual(got, []string{"c-000"}) {
		t.Fatalf("after c-000 moved to gcp, started %v, want c-000", got)
	}
	w := h.workflow("wf")
	if !strings.Contains(w.Waiting, "1 clusters wait for their maintenance window") {
		t.Fatalf("Waiting %q, want c-003 alone told as waiting", w.Waiting)
	}
	delete(h.s.Inventory, "c-003")
	out = h.do(InventoryUpdate{ClusterID: "c-003"})
	if tg := w.Targets["c-003"]; tg.State != records.TargetFailed || !strings.Contains(tg.Reason, "removed from the inventory") {
		t.Fatalf("c-003 removed from the inventory is %s (%s), want failed at once", tg.State, tg.Reason)
	}
	if len(out.Commands) != 0 || w.Waiting != "" {
		t.Fatalf("after c-003 was removed: commands %v, waiting %q", clusterIDs(out.Commands), w.Waiting)
	}
}

// Every target row written with an outcome is also a history entry, with
// the operation it was: what the cluster's history shows once the
// workflow's own rows are gone.
func TestOutcomesGoToTheClustersHistory(t *testing.T) {
	h := newHarness(t, fleet(2))
	spec := upgradeSpec()
	spec.FailureThreshold = rollout.Threshold{Percent: 100}
	cmds := h.submit("wf", spec).Commands
	if out := h.submit("wf-other", rollout.Spec{Name: "noop", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{"c-009"}}); len(out.History) != 0 {
		t.Fatalf("a rejected rollout wrote history %+v", out.History)
	}
	out := h.result(cmds[0], records.OperationSucceeded, "")
	if len(out.History) != 1 {
		t.Fatalf("a success wrote %d history entries, want 1", len(out.History))
	}
	got := out.History[0].Target
	if got.ClusterID != cmds[0].ClusterID || got.WorkflowID != "wf" || got.State != records.TargetSucceeded ||
		got.Operation.Kind != rollout.Upgrade || got.Operation.Version != "3.9.1" || got.Version != "3.9.1" || got.PreviousVersion != "3.8.0" {
		t.Fatalf("history entry %+v", got)
	}
	out = h.result(cmds[1], records.OperationFailed, "disk full")
	if len(out.History) != 1 || out.History[0].Target.State != records.TargetFailed || !strings.Contains(out.History[0].Target.Reason, "disk full") {
		t.Fatalf("a failure wrote history %+v", out.History)
	}
	for _, r := range out.Rows {
		if r.Target != nil && r.Target.Operation.Kind != "" {
			t.Fatalf("the target row itself carries the operation %+v: only its history entry should", r.Target)
		}
	}
}

// A finished workflow keeps its rows for its retention; then its target
// rows and commands are tombstoned, its header says "compacted", and a
// retry or a rollback is refused, pointing at the clusters' history. A
// cancelled workflow waits for its operations in flight first: a
// retention after its last change.
func TestAFinishedWorkflowIsCompactedAfterItsRetention(t *testing.T) {
	h := newHarness(t, fleet(3))
	h.s.Retention = time.Hour
	cmds := h.submit("done", rollout.Spec{Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{"c-000", "c-001"}}).Commands
	for _, c := range cmds {
		h.result(c, records.OperationSucceeded, "")
		h.probe(c.ClusterID, records.HealthHealthy)
	}
	h.advance(time.Second)
	if w := h.workflow("done"); w.State != records.WorkflowSucceeded {
		t.Fatalf("the rollout is %s, want succeeded", w.State)
	}
	cancelled := h.submit("cancelled", rollout.Spec{Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{"c-002"}})
	h.control("cancelled", records.ActionCancel, "")

	if out := h.advance(59 * time.Minute); len(out.Removed) != 0 {
		t.Fatalf("removed %v before the retention passed", out.Removed)
	}
	out := h.advance(time.Minute)
	want := []Removed{{"done", "c-000", true}, {"done", "c-001", true}}
	if !reflect.DeepEqual(out.Removed, want) {
		t.Fatalf("removed %v at the end of the retention, want %v (the cancelled one still runs)", out.Removed, want)
	}
	w := h.workflow("done")
	if !w.Compacted() || len(w.Targets) != 0 || w.State != records.WorkflowSucceeded {
		t.Fatalf("after compaction: compacted %v, %d targets, %s", w.Compacted(), len(w.Targets), w.State)
	}
	if p := w.Progress(); !p.Compacted || p.Targets != 2 || p.State != records.WorkflowSucceeded {
		t.Fatalf("progress of a compacted workflow: %+v", p)
	}
	for _, action := range []records.ControlAction{records.ActionRollback, records.ActionRetry} {
		out := h.control("done", action, "")
		if len(out.Rows) != 1 || out.Rows[0].Workflow.State != records.WorkflowRejected || !strings.Contains(out.Rows[0].Workflow.Reason, "cluster history") {
			t.Fatalf("%s of a compacted workflow: %+v", action, out.Rows)
		}
	}
	assertSameState(t, h.s, h.rebuilt())

	// The cancelled workflow's operation ends long after its retention:
	// its rows go a retention after that last change.
	h.advance(2 * time.Hour)
	if len(h.workflow("cancelled").Targets) != 1 {
		t.Fatal("the cancelled workflow was compacted with its operation in flight")
	}
	h.result(cancelled.Commands[0], records.OperationSucceeded, "")
	if out := h.advance(59 * time.Minute); len(out.Removed) != 0 {
		t.Fatalf("removed %v less than a retention after the last change", out.Removed)
	}
	if out := h.advance(time.Minute); !reflect.DeepEqual(out.Removed, []Removed{{"cancelled", "c-002", true}}) {
		t.Fatalf("a retention after its operation ended, removed %v", out.Removed)
	}
	assertSameState(t, h.s, h.rebuilt())
}

// The IDs of the planner's records must not change from one release to the
// next: a decision taken again after a restart must write the same IDs.
func TestRecordIDsAreTheNameBasedUUIDs(t *testing.T) {
	for _, wf := range []string{"wf", "3f2c9d1e-0000-4000-8000-000000000000", "wf-1/rollback", strings.Repeat("x", 300)} {
		for _, seq := range []int64{0, 1, 42, 1 << 40} {
			if got, want := rowID(wf, seq), uuid.NewSHA1(idSpace, []byte(wf+"#"+strconv.FormatInt(seq, 10))).String(); got != want {
				t.Fatalf("rowID(%q, %d) = %s, want %s", wf, seq, got, want)
			}
		}
		if got, want := CommandID(wf, "c-001", 3), uuid.NewSHA1(idSpace, []byte(wf+"/c-001/3")).String(); got != want {
			t.Fatalf("CommandID(%q) = %s, want %s", wf, got, want)
		}
	}
}
