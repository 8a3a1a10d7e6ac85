package decide

import (
	"strings"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// Progress is a workflow's status as people read it: where it is, and
// how far each phase and wave got. It is derived from the rows only.
type Progress struct {
	ID        string                `json:"id"`
	Name      string                `json:"name"`
	State     records.WorkflowState `json:"state"`
	Reason    string                `json:"reason,omitempty"`
	Operation rollout.Operation     `json:"operation"`
	CreatedAt time.Time             `json:"createdAt"`
	UpdatedAt time.Time             `json:"updatedAt"`
	BakeUntil *time.Time            `json:"bakeUntil,omitempty"`
	Waiting   string                `json:"waiting,omitempty"`
	WaitUntil *time.Time            `json:"waitUntil,omitempty"`
	Gate      string                `json:"gate,omitempty"`
	ResumeAt  *time.Time            `json:"resumeAt,omitempty"`
	Approved  []string              `json:"approved,omitempty"`
	// Approvals say who approved each gate, as the planner accepted the
	// approvals: the gates opened, in order, then the one it waits at if
	// it has some already.
	Approvals []GateApprovals `json:"approvals,omitempty"`
	// RollbackOf is, for a rollback, the workflow it rolls back;
	// Rollback, for a workflow rolling or rolled back, its rollback.
	RollbackOf string `json:"rollbackOf,omitempty"`
	Rollback   string `json:"rollback,omitempty"`
	// Compacted is set once the workflow's target rows were removed after
	// its retention: only Targets is counted, and the phases have no
	// clusters.
	Compacted bool `json:"compacted,omitempty"`
	// Unplanned is, while a large rollout's plan is being written, how
	// many of its targets have no row yet; it starts once this is 0.
	Unplanned int `json:"unplanned,omitempty"`
	Counts
	Phases []PhaseProgress `json:"phases"`
}

// GateApprovals are the accepted approvals of one gate.
type GateApprovals struct {
	Gate   string   `json:"gate"`
	By     []string `json:"by"`
	Opened bool     `json:"opened"`
}

// String says who approved the gate: "before:rest opened by bob",
// "before:prod approved so far by alice".
func (g GateApprovals) String() string {
	by := strings.Join(g.By, ", ")
	if by == "" {
		by = "(not recorded)"
	}
	if g.Opened {
		return g.Gate + " opened by " + by
	}
	return g.Gate + " approved so far by " + by
}

// gateApprovals groups w's approvals by gate: those opened, in order,
// then the one it waits at.
func gateApprovals(w *Workflow) []GateApprovals {
	var out []GateApprovals
	for _, gate := range w.Approved {
		out = append(out, GateApprovals{Gate: gate, By: approvers(w, gate), Opened: true})
	}
	if by := approvers(w, w.Gate); w.Gate != "" && len(by) > 0 {
		out = append(out, GateApprovals{Gate: w.Gate, By: by})
	}
	return out
}

// Counts are the targets in each state.
type Counts struct {
	Targets   int `json:"targets"`
	Pending   int `json:"pending"`
	Running   int `json:"running"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Skipped   int `json:"skipped,omitempty"`
}

func (c *Counts) add(s records.TargetState) {
	c.Targets++
	switch s {
	case records.TargetPending:
		c.Pending++
	case records.TargetRunning:
		c.Running++
	case records.TargetSucceeded:
		c.Succeeded++
	case records.TargetFailed:
		c.Failed++
	case records.TargetSkipped:
		c.Skipped++
	}
}

// PhaseProgress is one phase's progress.
type PhaseProgress struct {
	Name  string `json:"name"`
	State string `json:"state"` // pending, running, baking, awaiting approval, paused, stopped, not run, done
	Counts
	Waves []WaveProgress `json:"waves"`
}

// WaveProgress is one wave's progress, with its clusters.
type WaveProgress struct {
	Wave  int    `json:"wave"` // 1-based
	State string `json:"state"`
	Counts
	Clusters []ClusterProgress `json:"clusters"`
}

// ClusterProgress is one target's state.
type ClusterProgress struct {
	ID      string              `json:"id"`
	State   records.TargetState `json:"state"`
	Version string              `json:"version,omitempty"`
	Reason  string              `json:"reason,omitempty"`
	// Operation is the cluster's own operation, where it differs from the
	// workflow's (a rollback's inverse).
	Operation *rollout.Operation `json:"operation,omitempty"`
}

// Progress computes the workflow's progress.
func (w *Workflow) Progress() Progress {
	p := Progress{
		ID: w.ID, Name: w.Spec.Name, State: w.State, Reason: w.Reason, Operation: w.Spec.Operation,
		CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt,
	}
	if !w.BakeUntil.IsZero() {
		b := w.BakeUntil
		p.BakeUntil = &b
	}
	if !w.WaitUntil.IsZero() {
		u := w.WaitUntil
		p.WaitUntil = &u
	}
	p.Waiting = w.Waiting
	p.Gate = w.Gate
	if !w.ResumeAt.IsZero() {
		r := w.ResumeAt
		p.ResumeAt = &r
	}
	p.Approved = w.Approved
	p.Approvals = gateApprovals(w)
	p.RollbackOf = w.RollbackOf
	if !w.State.Terminal() {
		p.Unplanned = w.Unplanned
	}
	if w.State == records.WorkflowRollingBack || w.State == records.WorkflowRolledBack {
		p.Rollback = records.RollbackID(w.ID)
	}
	if w.Compacted() {
		p.Compacted, p.Targets = true, w.Workflow.Targets
		for _, ph := range w.Phases {
			p.Phases = append(p.Phases, PhaseProgress{Name: ph.Name, State: "done"})
		}
		return p
	}
	for pi, ph := range w.Phases {
		pp := PhaseProgress{Name: ph.Name}
		for wi := range ph.WaveSizes {
			wp := WaveProgress{Wave: wi + 1}
			for _, id := range w.WaveTargets(pi, wi) {
				t := w.Targets[id]
				wp.add(t.State)
				pp.add(t.State)
				p.add(t.State)
				cp := ClusterProgress{ID: id, State: t.State, Version: t.Version, Reason: t.Reason}
				if t.Operation.Kind != "" {
					op := t.Operation
					cp.Operation = &op
				}
				wp.Clusters = append(wp.Clusters, cp)
			}
			wp.State = w.stepState(pi, wi, wp.Counts)
			pp.Waves = append(pp.Waves, wp)
		}
		pp.State = w.stepState(pi, -1, pp.Counts)
		p.Phases = append(p.Phases, pp)
	}
	return p
}

// stepState names the state of a phase (wave < 0) or of one of its waves.
func (w *Workflow) stepState(phase, wave int, c Counts) string {
	current := phase == w.Phase && (wave < 0 || wave == w.Wave) && !w.State.Terminal()
	before := phase < w.Phase || (phase == w.Phase && wave >= 0 && wave < w.Wave)
	switch {
	case current && w.State == records.WorkflowPaused:
		return "paused"
	case current && w.State == records.WorkflowRollingBack:
		return "stopped" // its rollback runs in a workflow of its own
	case current && w.Gate != "" && c.Running == 0:
		return "awaiting approval" // at a gate: nothing starts until it opens
	case current && !w.BakeUntil.IsZero() && wave >= 0:
		return "baking"
	case current:
		return "running"
	case w.State.Terminal() && c.Pending > 0 && c.Pending == c.Targets:
		return "not run" // the workflow ended before it
	case w.State.Terminal() && c.Pending > 0:
		return "stopped"
	case before || c.Pending == 0 && c.Running == 0 && c.Targets > 0:
		return "done"
	}
	return "pending"
}
