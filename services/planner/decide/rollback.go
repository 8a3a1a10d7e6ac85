package decide

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// This file holds rollback: undoing what a workflow changed. A workflow
// being rolled back stops starting anything, waits for its operations in
// flight, and then hands the clusters it changed to a rollback workflow of
// their own (records.RollbackID), which applies to each the inverse of
// what it got: newest change first, under the original pacing (its phases
// and waves in reverse, with their in-flight limits, bakes and health
// checks). Being a workflow like any other, the rollback can be watched,
// paused, resumed and retried, and its failures count to its threshold.

// beginRollback stops workflow w and undoes it, for the reason why.
func (d *decision) beginRollback(w *Workflow, why string) {
	d.clearWaits(w)
	w.State = records.WorkflowRollingBack
	w.Reason = why
	for id := range w.Targets {
		d.s.watch(id, w) // a finished workflow had left the index
	}
	d.transition(w, "rolling-back")
	d.startRollback(w)
}

// startRollback starts the rollback of w, which is rolling back, once none
// of its operations is in flight: only then is it known what they changed.
func (d *decision) startRollback(w *Workflow) {
	if w.State != records.WorkflowRollingBack || w.count(records.TargetRunning) > 0 {
		return
	}
	id := records.RollbackID(w.ID)
	if _, exists := d.s.Workflows[id]; exists {
		return
	}
	phases, undo, problems := rollbackPlan(w)
	note := ""
	if len(problems) > 0 {
		note = fmt.Sprintf("; %s changed but cannot be rolled back: %s", clusters(len(problems)), listSome(problems, 3))
	}
	switch {
	case len(undo) == 0 && len(problems) > 0:
		w.State = records.WorkflowFailed
		w.Reason = fmt.Sprintf("%s; nothing rolled back%s", w.Reason, note)
		d.transition(w, "rollback-failed")
		d.end(w)
		return
	case len(undo) == 0:
		w.State = records.WorkflowRolledBack
		w.Reason += "; nothing to roll back: no cluster was changed"
		d.transition(w, "rolled-back")
		d.end(w)
		return
	}

	r := d.s.workflow(id, w.Partition)
	r.CreatedAt = d.now
	r.RollbackOf = w.ID
	d.touch(r).created = true
	r.Spec = rollout.Spec{
		Name:      "rollback of " + w.Spec.Name,
		Operation: rollout.Operation{Kind: w.Spec.Operation.Kind},
		// No Clusters: the target rows hold them, and a header row is
		// written at every transition.

		// A failing rollback pauses for a person: there is nothing left
		// to undo it with.
		FailureThreshold: rollout.Threshold{Count: w.Spec.FailureThreshold.Count, Percent: w.Spec.FailureThreshold.Percent},
		Windows:          w.Spec.Windows,
		OperationTimeout: w.Spec.OperationTimeout,
		Retries:          w.Spec.Retries,
		RetryBackoff:     w.Spec.RetryBackoff,
	}
	r.State = records.WorkflowRunning
	r.Phases = phases
	r.Targets = undo
	for _, clusterID := range slices.Sorted(maps.Keys(undo)) { // rows in a stable order
		d.s.watch(clusterID, r)
		d.changed(r, undo[clusterID])
	}
	r.reindexTargetsCount()
	r.reindex()

	w.Reason = fmt.Sprintf("%s; rolling back %s in %s%s", w.Reason, clusters(len(undo)), id, note)
	d.touch(w)
	d.transition(r, "submitted")
	d.startWave(r, "wave-started")
	d.advance(r)
}

// rollbackPlan returns the phases and targets of w's rollback: the
// clusters w changed, each with the inverse of its operation, in w's
// phases and waves taken in reverse, newest change first within a wave.
// Clusters that were changed but cannot be undone are listed in problems
// with the reason.
func rollbackPlan(w *Workflow) (phases []records.PhasePlan, undo map[string]*records.Target, problems []string) {
	id := records.RollbackID(w.ID)
	undo = map[string]*records.Target{}
	finished := map[string]time.Time{} // when each change was made
	for p := len(w.Phases) - 1; p >= 0; p-- {
		var sizes []int
		for wave := len(w.Phases[p].WaveSizes) - 1; wave >= 0; wave-- {
			var changed []*records.Target
			for _, clusterID := range w.WaveTargets(p, wave) {
				t := w.Targets[clusterID]
				if !applied(t) {
					continue
				}
				op, ok, problem := inverse(w.Spec.Operation, t)
				switch {
				case problem != "":
					problems = append(problems, clusterID+" ("+problem+")")
					continue
				case !ok:
					continue // the operation changed nothing on it
				}
				changed = append(changed, &records.Target{
					WorkflowID:      id,
					ClusterID:       clusterID,
					Phase:           len(phases),
					Wave:            len(sizes),
					State:           records.TargetPending,
					Operation:       op,
					PreviousVersion: t.Version,
				})
				finished[clusterID] = t.FinishedAt
			}
			if len(changed) == 0 {
				continue
			}
			sort.Slice(changed, func(i, j int) bool {
				a, b := finished[changed[i].ClusterID], finished[changed[j].ClusterID]
				if !a.Equal(b) {
					return a.After(b)
				}
				return changed[i].ClusterID < changed[j].ClusterID
			})
			for i, t := range changed {
				t.Order = i
				undo[t.ClusterID] = t
			}
			sizes = append(sizes, len(changed))
		}
		if len(sizes) > 0 {
			ph := w.Phases[p]
			phases = append(phases, records.PhasePlan{Name: ph.Name, WaveSizes: sizes, MaxInFlight: ph.MaxInFlight, Bake: ph.Bake})
		}
	}
	sort.Strings(problems)
	return phases, undo, problems
}

// applied reports whether a target's operation was carried out: it
// succeeded, even if the cluster turned unhealthy afterwards. A failed
// operation changed nothing (drivers change a cluster fully or not at
// all), so there is nothing to undo.
func applied(t *records.Target) bool {
	return t.State == records.TargetSucceeded || (t.State == records.TargetFailed && t.Unhealthy)
}

// inverse returns the operation that undoes op on target t: the previous
// version, or the previous values of the config keys it changed (keys that
// had no value are reset). It expects the cluster to be as op left it (the
// version, the values set), so that a later change is never undone. ok is
// false when op changed nothing on t (a restart, a version or config
// already in place); problem says why a change cannot be undone (what it
// replaced was not recorded).
func inverse(op rollout.Operation, t *records.Target) (inv rollout.Operation, ok bool, problem string) {
	switch op.Kind {
	case rollout.Upgrade:
		switch {
		case t.PreviousVersion == "":
			return inv, false, "its previous version is not known"
		case t.PreviousVersion == t.Version:
			return inv, false, ""
		}
		return rollout.Operation{Kind: rollout.Upgrade, Version: t.PreviousVersion, ExpectVersion: t.Version}, true, ""
	case rollout.Config:
		if t.PreviousConfig == nil && t.PreviousUnset == nil {
			return inv, false, "its previous config was not recorded (its driver cannot read configs)"
		}
		inv = rollout.Operation{Kind: rollout.Config, Config: map[string]string{}, ExpectConfig: map[string]string{}}
		restore := func(key string) {
			if prev, had := t.PreviousConfig[key]; had {
				inv.Config[key] = prev
			} else {
				inv.Reset = append(inv.Reset, key)
			}
		}
		for key, v := range op.Config {
			if prev, had := t.PreviousConfig[key]; !had || prev != v {
				restore(key)
				inv.ExpectConfig[key] = v
			}
		}
		for _, key := range op.Reset {
			if _, had := t.PreviousConfig[key]; had {
				restore(key)
			}
		}
		if len(inv.Config) == 0 && len(inv.Reset) == 0 {
			return rollout.Operation{}, false, ""
		}
		if len(inv.Config) == 0 {
			inv.Config = nil
		}
		if len(inv.ExpectConfig) == 0 {
			inv.ExpectConfig = nil // a key reset has no value to expect
		}
		sort.Strings(inv.Reset)
		return inv, true, ""
	}
	return inv, false, "" // a restart leaves nothing to undo
}

// rollbackEnded settles the workflow that w rolled back, if w is a
// rollback that just ended: rolled back if w succeeded, failed otherwise.
func (d *decision) rollbackEnded(w *Workflow) {
	if w.RollbackOf == "" {
		return
	}
	parent, ok := d.s.Workflows[w.RollbackOf]
	if !ok || parent.State != records.WorkflowRollingBack {
		return
	}
	d.cause = rowID(w.ID, w.Seq)
	if w.State == records.WorkflowSucceeded {
		parent.State = records.WorkflowRolledBack
		parent.Reason = fmt.Sprintf("%s; done: %s rolled back", parent.Reason, clusters(w.Workflow.Targets))
		d.transition(parent, "rolled-back")
	} else {
		parent.State = records.WorkflowFailed
		parent.Reason = fmt.Sprintf("%s; the rollback %s: %s", parent.Reason, w.State, w.Reason)
		d.transition(parent, "rollback-failed")
	}
	d.end(parent)
}

// clusters writes "1 cluster" or "n clusters".
func clusters(n int) string {
	if n == 1 {
		return "1 cluster"
	}
	return fmt.Sprintf("%d clusters", n)
}

// listSome writes the first most items and how many more there are.
func listSome(items []string, most int) string {
	if len(items) <= most {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:most], ", "), len(items)-most)
}
