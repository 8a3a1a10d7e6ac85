package decide

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// harness drives the decision core like the shell does and records every
// output, so tests can look at what was decided and rebuild from it.
type harness struct {
	t        testing.TB
	s        *State
	now      time.Time
	rows     []records.WorkflowRecord
	commands []records.Command
	nextID   int
	// versions is the version each cluster runs, as a fleet that does what
	// the commands say would run it.
	versions map[string]string
	// executorSkew is how far the executor's clock, which stamps operation
	// events, is ahead of the planner's (behind, if negative).
	executorSkew time.Duration
	// shadow makes every decision again on a state rebuilt from the rows,
	// and checks the two agree (see shadowDecide).
	shadow bool
	// removed are the targets whose rows were tombstoned.
	removed []Removed
}

func newHarness(t testing.TB, clusters []inventory.Cluster) *harness {
	inv := map[string]inventory.Cluster{}
	for _, c := range clusters {
		inv[c.ID] = c
	}
	versions := map[string]string{}
	for _, c := range clusters {
		versions[c.ID] = c.Version
	}
	s := NewState(inv, nil)
	s.HoldUnfinishedOnly = true // as the planner's
	return &harness{t: t, s: s, now: t0, versions: versions}
}

func (h *harness) id(prefix string) string {
	h.nextID++
	return fmt.Sprintf("%s-%d", prefix, h.nextID)
}

func (h *harness) do(in Input) Outputs {
	h.t.Helper()
	stopped := map[string]records.WorkflowState{} // workflows that may not start anything
	for id, w := range h.s.Workflows {
		if w.State != records.WorkflowRunning {
			stopped[id] = w.State
		}
	}
	var before *State
	if h.shadow {
		before = h.rebuiltCopy()
	}
	// What the shell does before a retry or a rollback of a finished
	// workflow: read its targets back.
	for _, s := range []*State{h.s, before} {
		if sub, ok := in.(Submit); ok && s != nil {
			if id, need := s.NeedsTargets(sub.Request); need {
				s.Restore(id, h.targetsOf(id))
			}
		}
	}
	out := Decide(h.s, in, h.now)
	if h.shadow {
		shadowDecide(h.t, h, before, in, out)
	}
	h.rows = append(h.rows, out.Rows...)
	h.removed = append(h.removed, out.Removed...)
	for _, w := range h.s.Workflows {
		if !w.State.Terminal() { // an ended workflow's index is not used again
			checkWaveIndex(h.t, h.s, w)
		}
	}
	checkDeadlines(h.t, h)
	resumed := map[string]bool{}
	for _, r := range out.Rows {
		if r.Workflow != nil && (r.Workflow.Event == "resumed" || r.Workflow.Event == "retrying") {
			resumed[r.Workflow.ID] = true
		}
	}
	for _, c := range out.Commands {
		if state, ok := stopped[c.WorkflowID]; ok && !resumed[c.WorkflowID] {
			h.t.Fatalf("command for %s sent while the workflow was %s", c.ClusterID, state)
		}
		w := h.s.Workflows[c.WorkflowID]
		tg := w.Targets[c.ClusterID]
		for p := 0; p <= tg.Phase && p < len(w.Spec.Phases); p++ {
			ph := w.Spec.Phases[p]
			if len(w.Phases[p].WaveSizes) == 0 {
				continue // an empty phase is skipped, gates and all
			}
			if ph.Approve.Before() && !slices.Contains(w.Approved, "before:"+ph.Name) {
				h.t.Fatalf("command for %s of phase %s sent before the phase %s was approved to start", c.ClusterID, w.Phases[tg.Phase].Name, ph.Name)
			}
			if p < tg.Phase && ph.Approve.After() && !slices.Contains(w.Approved, "after:"+ph.Name) {
				h.t.Fatalf("command for %s of phase %s sent before phase %s was approved as done", c.ClusterID, w.Phases[tg.Phase].Name, ph.Name)
			}
		}
		if h.now.Before(tg.NotBefore) {
			h.t.Fatalf("command for %s sent at %v, before its retry at %v", c.ClusterID, h.now, tg.NotBefore)
		}
		if hs, ok := h.s.HealthOf(c.ClusterID); ok && hs.Status == records.HealthUnhealthy && w.RollbackOf == "" {
			h.t.Fatalf("command for %s sent while it is unhealthy", c.ClusterID)
		}
		windows, err := w.Spec.CompileWindows()
		if err != nil {
			h.t.Fatal(err)
		}
		if !windows.For(c.Cluster.Labels).Open(h.now) {
			h.t.Fatalf("command for %s sent at %v, outside its maintenance window", c.ClusterID, h.now)
		}
	}
	checkWaveOrder(h.t, h.s, out.Commands)
	checkRollbackCommands(h.t, h.s, out.Commands, h.target)
	h.commands = append(h.commands, out.Commands...)
	return out
}

func (h *harness) submit(id string, spec rollout.Spec) Outputs {
	h.t.Helper()
	return h.do(Submit{Key: id, Request: records.Request{
		Envelope: records.Envelope{ID: id, Time: h.now, Principal: "alice"},
		Submit:   &records.SubmitRollout{Spec: spec},
	}})
}

// result reports the outcome of command c, as an executor whose cluster
// does what the command says (an upgrade that succeeds changes its version).
func (h *harness) result(c records.Command, status records.OperationStatus, reason string) Outputs {
	h.t.Helper()
	prev := h.versions[c.ClusterID]
	if status == records.OperationSucceeded && c.Operation.Kind == rollout.Upgrade {
		h.versions[c.ClusterID] = c.Operation.Version
	}
	return h.do(OperationUpdate{Event: records.OperationEvent{
		Envelope:        records.Envelope{ID: h.id("op"), Time: h.now.Add(h.executorSkew), Principal: "executor", CausationID: c.ID},
		CommandID:       c.ID,
		WorkflowID:      c.WorkflowID,
		ClusterID:       c.ClusterID,
		Attempt:         c.Attempt,
		Status:          status,
		Reason:          reason,
		PreviousVersion: prev,
		Version:         h.versions[c.ClusterID],
	}})
}

func (h *harness) probe(clusterID string, status records.HealthStatus, reasons ...string) Outputs {
	h.t.Helper()
	return h.do(HealthUpdate{Health: records.Health{
		Envelope:   records.Envelope{ID: h.id("health"), Time: h.now, Principal: "monitor"},
		ClusterID:  clusterID,
		Status:     status,
		Reasons:    reasons,
		ObservedAt: h.now,
	}})
}

func (h *harness) advance(d time.Duration) Outputs {
	h.t.Helper()
	h.now = h.now.Add(d)
	return h.do(Tick{})
}

// running returns the commands whose targets are still running.
func (h *harness) running(workflowID string) []records.Command {
	var out []records.Command
	w := h.s.Workflows[workflowID]
	for _, c := range h.commands {
		if c.WorkflowID != workflowID {
			continue
		}
		if t := w.Targets[c.ClusterID]; t != nil && t.State == records.TargetRunning && t.CommandID == c.ID { // nil: compacted
			out = append(out, c)
		}
	}
	return out
}

func (h *harness) workflow(id string) *Workflow {
	h.t.Helper()
	w, ok := h.s.Workflows[id]
	if !ok {
		h.t.Fatalf("workflow %s unknown", id)
	}
	return w
}

// rebuilt returns a state loaded from the rows written so far, as the
// planner rebuilds it after a restart.
func (h *harness) rebuilt() *State {
	s := NewState(h.s.Inventory, healthOf(h.s))
	s.HoldUnfinishedOnly = h.s.HoldUnfinishedOnly
	return h.load(s)
}

// target returns a target of a workflow: the planner's, or, for a finished
// workflow whose targets it shed, the last row of it in the log.
func (h *harness) target(workflowID, clusterID string) *records.Target {
	if w := h.s.Workflows[workflowID]; w != nil && !w.Shed() {
		return w.Targets[clusterID]
	}
	for _, t := range h.targetsOf(workflowID) {
		if t.ClusterID == clusterID {
			return &t
		}
	}
	return nil
}

// view returns a workflow as people see it, from the rows (as the CLI
// reads it): with its targets, finished or not.
func (h *harness) view(id string) *Workflow {
	h.t.Helper()
	w, ok := h.load(NewState(h.s.Inventory, healthOf(h.s))).Workflows[id]
	if !ok {
		h.t.Fatalf("workflow %s unknown", id)
	}
	return w
}

// targetsOf returns the target rows of workflow id in the log, the last
// of each, less those removed.
func (h *harness) targetsOf(id string) []records.Target {
	last := map[string]records.Target{}
	for _, r := range h.rows {
		if r.Target != nil && r.Target.WorkflowID == id {
			last[r.Target.ClusterID] = *r.Target
		}
	}
	for _, r := range h.removed {
		if r.WorkflowID == id {
			delete(last, r.ClusterID)
		}
	}
	var out []records.Target
	for _, t := range last {
		out = append(out, t)
	}
	return out
}

// load loads into s the rows written so far and the tombstones of removed
// targets' rows (which come after every row of theirs in the log).
func (h *harness) load(s *State) *State {
	s.Retention, s.PlanChunk = h.s.Retention, h.s.PlanChunk
	for _, r := range h.rows {
		s.ApplyRow(0, r)
	}
	for _, r := range h.removed {
		if w := s.Workflows[r.WorkflowID]; w != nil {
			delete(w.Targets, r.ClusterID)
		}
	}
	s.Reindex()
	return s
}

func fleet(n int) []inventory.Cluster {
	clouds := []string{"aws", "gcp", "azure"}
	var out []inventory.Cluster
	for i := 0; i < n; i++ {
		tier := "standard"
		if i%7 == 0 {
			tier = "internal"
		}
		out = append(out, inventory.Cluster{
			ID:      fmt.Sprintf("c-%03d", i),
			Labels:  map[string]string{"cloud": clouds[i%3], "tier": tier, "kind": "kafka", "env": "prod"},
			Driver:  "sim",
			Address: fmt.Sprintf("sim://c-%03d", i),
			Version: "3.8.0",
		})
	}
	return out
}

func upgradeSpec(phases ...rollout.Phase) rollout.Spec {
	return rollout.Spec{
		Name:      "upgrade",
		Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"},
		Selector:  "kind=kafka",
		Phases:    phases,
	}
}

func (h *harness) control(workflowID string, action records.ControlAction, reason string) Outputs {
	h.t.Helper()
	id := h.id("ctl")
	return h.do(Submit{Key: records.ControlKey(workflowID, id), Request: records.Request{
		Envelope: records.Envelope{ID: id, Time: h.now, Principal: "carol"},
		Control:  &records.ControlWorkflow{WorkflowID: workflowID, Action: action, Reason: reason},
	}})
}

// healthOf returns the health signals a state holds, for a state rebuilt
// from the rows beside it.
func healthOf(s *State) map[string]records.Health {
	out := map[string]records.Health{}
	s.HealthSignals(func(h records.Health) { out[h.ClusterID] = h })
	return out
}
