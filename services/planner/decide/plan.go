package decide

import (
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// DefaultPlanChunk is the most target rows a workflow's plan writes in one
// decision unless State.PlanChunk says otherwise.
const DefaultPlanChunk = 5000

// A rollout's plan is written in chunks: the decision that accepts a
// rollout of more targets than PlanChunk writes its spec row and its header
// only, and each tick after it writes the next chunk of target rows (the
// shell ticks once per transaction); the workflow starts once the last is
// written (Unplanned is 0). A smaller rollout is written and started by the
// decision that accepts it. Nothing is sent before then, so a
// target without a row is one the rollout has not touched. A planner that
// restarts in between plans again against the inventory it has then and
// writes the targets of that plan that have no row yet (replan).

func (s *State) planChunk() int {
	if s.PlanChunk > 0 {
		return s.PlanChunk
	}
	return DefaultPlanChunk
}

// Planning reports whether a workflow's plan is not all written yet: the
// shell ticks again without waiting, to write the next chunk.
func (s *State) Planning() bool { return len(s.planning) > 0 }

// startPlan sets a new workflow's phases and the targets to write from
// its plan, and writes them if they fit in a chunk.
func (d *decision) startPlan(w *Workflow, plan rollout.Plan) {
	w.Targets = map[string]*records.Target{}
	w.unplanned = nil
	for p, ph := range plan.Phases {
		sizes := make([]int, len(ph.Waves))
		for i, wave := range ph.Waves {
			sizes[i] = len(wave)
			for _, clusterID := range wave {
				w.unplanned = append(w.unplanned, plannedTarget{clusterID, p, i})
			}
		}
		w.Phases = append(w.Phases, records.PhasePlan{Name: ph.Name, WaveSizes: sizes, MaxInFlight: ph.MaxInFlight, Bake: ph.Bake, FailureThreshold: ph.FailureThreshold})
	}
	w.Workflow.Targets = len(w.unplanned)
	w.reindex() // the per-phase counts; the waves are indexed once all is written
	if len(w.unplanned) > d.s.planChunk() {
		w.Unplanned = len(w.unplanned)
		d.s.planning[w.ID] = w
		return
	}
	d.planMore(w)
}

// planMore writes the next chunk of w's plan; once the last is written,
// the wave sizes and count are those of the targets written.
func (d *decision) planMore(w *Workflow) {
	n := min(len(w.unplanned), d.s.planChunk())
	for _, pt := range w.unplanned[:n] {
		t := &records.Target{WorkflowID: w.ID, ClusterID: pt.clusterID, Phase: pt.phase, Wave: pt.wave, State: records.TargetPending}
		w.Targets[pt.clusterID] = t
		d.s.watch(pt.clusterID, w)
		d.changed(w, t)
	}
	w.unplanned = w.unplanned[n:]
	w.Unplanned = len(w.unplanned)
	if w.Unplanned > 0 {
		d.s.planning[w.ID] = w
		return
	}
	w.unplanned = nil
	delete(d.s.planning, w.ID)
	// A plan written again after a restart may differ from the first.
	for p := range w.Phases {
		w.Phases[p].WaveSizes = make([]int, len(w.Phases[p].WaveSizes))
	}
	for _, t := range w.Targets {
		if t.Phase < len(w.Phases) && t.Wave < len(w.Phases[t.Phase].WaveSizes) {
			w.Phases[t.Phase].WaveSizes[t.Wave]++
		}
	}
	w.reindexTargetsCount()
	w.reindex()
}

// planned starts a workflow whose plan is all written.
func (d *decision) planned(w *Workflow) {
	d.startWave(w, "wave-started")
	d.advance(w)
}

// stopPlanning drops what is left of a finished workflow's plan.
func (s *State) stopPlanning(w *Workflow) {
	w.unplanned = nil
	delete(s.planning, w.ID)
}

// replan finds, for a workflow loaded from its rows whose plan was not
// all written, the targets still to write: those of its plan against the
// inventory now that have no row.
func (s *State) replan(w *Workflow) {
	w.unplanned = nil
	if w.Unplanned == 0 || w.State.Terminal() {
		return
	}
	s.planning[w.ID] = w
	plan, err := w.Spec.Plan(s.Inventory)
	if err != nil {
		return // no more targets: the next tick starts it with those it has
	}
	for p, ph := range plan.Phases {
		if p >= len(w.Phases) {
			break
		}
		last := len(w.Phases[p].WaveSizes) - 1
		for i, wave := range ph.Waves {
			for _, clusterID := range wave {
				if _, ok := w.Targets[clusterID]; !ok {
					// A plan of more waves than the first (a larger fleet)
					// puts the rest in the phase's last one.
					w.unplanned = append(w.unplanned, plannedTarget{clusterID, p, min(i, last)})
				}
			}
		}
	}
}
