package decide

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/selector"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// Drift correction: a deployment policy whose DriftCorrection is enabled
// lets the planner correct, by itself, the clusters it picks whose health
// signal reports drift. Each correction is a workflow like any other (its
// request is the planner's own, caused by the health signal), planned with
// the policy's phases, so every safety control applies.
//
// Which planner acts, and how the pace is kept across copies: all of a
// policy's corrections live on one partition, the policy's home
// (topics.PartitionOf its name), and only the planner that owns it makes
// them. It holds every correction of the policy, so it alone counts them
// against MaxPerHour. A correction's ID is derived from the policy, the
// cluster and the signal, and chosen to hash to the home partition, so
// that deciding the same signal again (after an aborted transaction, or
// by the next owner) makes the same workflow, once.

// correctionPrefix starts the name of every drift correction workflow.
const correctionPrefix = "drift-correction "

// correctionName names the correction of cluster id.
func correctionName(id string) string { return correctionPrefix + id }

// correctionOf returns the cluster a workflow corrects under policy, if it
// is a drift correction of that policy.
func correctionOf(w *Workflow, policy string) (string, bool) {
	if w.Spec.Policy != policy || !strings.HasPrefix(w.Spec.Name, correctionPrefix) || len(w.Spec.Clusters) != 1 {
		return "", false
	}
	return w.Spec.Clusters[0], true
}

// driftHome is the partition that holds a policy's corrections.
func (s *State) driftHome(policy string) int32 {
	return topics.PartitionOf("drift-correction-"+policy, s.Partitions)
}

// correctDrift makes the correction workflow a drifted health signal
// calls for, if a policy asks for it and lets it now.
func (d *decision) correctDrift(h records.Health) {
	if len(h.Drift) == 0 || d.s.Partitions <= 0 || d.s.Owns == nil {
		return
	}
	c, ok := d.s.Inventory[h.ClusterID]
	if !ok || len(d.s.RolloutsOn(c.ID)) > 0 {
		return // gone, or a rollout of this planner will change it
	}
	for _, name := range slices.Sorted(maps.Keys(d.s.Policies)) {
		p := d.s.Policies[name]
		if !p.DriftCorrection.Enabled {
			continue
		}
		sel, err := selector.Parse(p.DriftCorrection.Selector)
		if err != nil || !sel.Matches(c.Labels) {
			continue
		}
		// The first policy (by name) that picks the cluster decides.
		home := d.s.driftHome(name)
		if !d.s.Owns(home) || !d.correctionAllowed(name, c.ID, p.DriftCorrection) {
			return
		}
		id := d.s.correctionID(name, c.ID, h.Envelope.ID, home)
		if id == "" {
			return
		}
		if _, exists := d.s.Workflows[id]; exists {
			return
		}
		spec := rollout.Spec{Name: correctionName(c.ID), Operation: correction(h.Drift), Clusters: []string{c.ID}, Policy: name}
		d.submit(Submit{Partition: home, Key: id, Request: records.Request{
			Envelope: records.Envelope{ID: id, Time: d.now, Principal: Principal, CausationID: h.Envelope.ID},
			Submit:   &records.SubmitRollout{Spec: spec},
		}})
		return
	}
}

// correctionAllowed reports whether policy may correct cluster id now:
// fewer than its MaxPerHour corrections started in the last hour, and the
// cluster's last correction under it, if any, did not fail (a correction
// that does not hold is for a person: flotilla drift fix, or the
// inventory).
func (d *decision) correctionAllowed(policy, id string, dc rollout.DriftCorrection) bool {
	started := 0
	var last *Workflow
	for _, w := range d.s.Workflows {
		cluster, ok := correctionOf(w, policy)
		if !ok {
			continue
		}
		if d.now.Sub(w.CreatedAt) < time.Hour {
			started++
		}
		if cluster == id && (last == nil || w.CreatedAt.After(last.CreatedAt) || (w.CreatedAt.Equal(last.CreatedAt) && w.ID > last.ID)) {
			last = w
		}
	}
	if started >= dc.PerHour() {
		return false
	}
	return last == nil || !last.State.Terminal() || last.State == records.WorkflowSucceeded
}

// correctionID is the ID of the correction of cluster id under policy
// for a signal: derived from them, and the first of a series that hashes
// to the policy's home partition ("" if none does, which a hash makes all
// but impossible).
func (s *State) correctionID(policy, id, signal string, home int32) string {
	for i := range 64 * int(s.Partitions) {
		wid := nameID(fmt.Appendf(nil, "drift-correction\x00%s\x00%s\x00%s\x00%d", policy, id, signal, i))
		if topics.PartitionOf(wid, s.Partitions) == home {
			return wid
		}
	}
	return ""
}

// correction is the operation that undoes drift: an upgrade to the
// desired version when the version drifted (the config, if it drifted
// too, is corrected by the next workflow, once this one is done), else a
// config change setting every drifted key. Each expects the cluster as
// the signal saw it, so that a cluster changed meanwhile is left alone.
func correction(items []records.DriftItem) rollout.Operation {
	for _, it := range items {
		if it.Key == inventory.DriftVersionKey {
			return rollout.Operation{Kind: rollout.Upgrade, Version: it.Desired, ExpectVersion: it.Observed}
		}
	}
	op := rollout.Operation{Kind: rollout.Config, Config: map[string]string{}}
	for _, it := range items {
		op.Config[it.Key] = it.Desired
	}
	return op
}
