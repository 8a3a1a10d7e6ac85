// Package decide is the planner's pure decision core: given the planner's
// state, one input (a request, an operation event, a health signal or the
// passing of time) and the current time, it updates the state and returns
// the records to write. It does no I/O, starts no goroutines and reads no
// clock, so every rule is tested with tables and property tests; the shell
// around it (package planner) does the Kafka I/O.
//
// The state is exactly the rows of the workflows topic (one header row per
// workflow, one row per target) plus read-only views of the inventory and
// health tables. Every change Decide makes to a row is also an output, so the
// state rebuilt from the log after a crash is the state the planner had.
package decide

import (
	"cmp"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/window"
)

// State is what the planner knows. Workflows are owned by the state; the
// Inventory and Policies maps are views the shell keeps current, and the
// health of each cluster comes in with HealthUpdate (or SetHealth).
type State struct {
	Workflows map[string]*Workflow
	Inventory map[string]inventory.Cluster
	// Policies are the named deployment policies, by name.
	Policies map[string]rollout.Policy
	// HoldUnfinishedOnly makes the state drop a finished workflow's
	// targets from memory (Shed), as the planner's does: it holds
	// unfinished work only. A state read for people (the CLI's) keeps them.
	HoldUnfinishedOnly bool
	// Retention is how long a finished workflow keeps its target rows and
	// commands; then they are tombstoned and its header row says
	// "compacted" (what it did to each cluster stays in the history
	// topic). Zero keeps them for ever.
	Retention time.Duration
	// Partitions is the number of partitions of the workflows topic, and
	// Owns says whether this planner owns one of them: with both set, the
	// planner makes workflows of its own (drift corrections, see
	// drift.go) on a partition it owns. Unset, it makes none.
	Partitions int32
	Owns       func(partition int32) bool
	// PlanChunk is the most target rows a new workflow's plan writes in
	// one decision (zero: DefaultPlanChunk), so that a rollout of 100,000
	// clusters is planned over several transactions, not one giant one.
	PlanChunk int
	// Authz, when set, authorises every request by the roles of the
	// trust store (authorize.go): the shell sets it when signatures are
	// required, and keeps it current. Nil: anyone may do anything.
	Authz *authz.Policy

	// Derived indexes, rebuilt by Reindex after loading rows.
	busy      map[string]string // cluster ID → workflow ID whose command runs on it
	clusters  map[string]*clusterState
	planning  map[string]*Workflow // workflows whose plan is not all written (Unplanned > 0)
	deadlines deadlines            // workflows by their deadline
}

// clusterState is what the state knows of one cluster: its last health
// signal and the unfinished workflows targeting it. One map holds both, so
// that a health signal costs one lookup whatever the size of the fleet.
type clusterState struct {
	health seenHealth
	seen   bool    // a health signal came
	on     []watch // in workflow ID order (usually one); Reindex rebuilds it
}

// seenHealth is what decisions read of a cluster's last health signal,
// not what the probe measured for people (its details, its drift): a
// fleet's worth of whole signals is large, and every heartbeat would
// copy one.
type seenHealth struct {
	id         string // the signal's Envelope.ID
	status     records.HealthStatus
	reasons    []string
	observedAt time.Time
}

// signal returns the part of a health signal kept, as a signal.
func (h seenHealth) signal(clusterID string) records.Health {
	return records.Health{Envelope: records.Envelope{ID: h.id}, ClusterID: clusterID, Status: h.status, Reasons: h.reasons, ObservedAt: h.observedAt}
}

// watch is an unfinished workflow targeting a cluster, with its target.
type watch struct {
	w *Workflow
	t *records.Target
}

// Workflow is one workflow's header row with its target rows.
type Workflow struct {
	records.Workflow
	Targets map[string]*records.Target
	// Partition is the partition of the workflows topic the workflow lives
	// on; the shell uses it to drop workflows whose partition it lost.
	Partition int32

	waves     [][][]string // phase → wave → cluster IDs, in start order
	failed    int          // targets in state failed
	failedIn  []int        // phase → its targets in state failed
	failedIDs map[string]struct{}
	cur       *waveIndex // the current wave's, nil until needed

	queued   bool      // whether the deadline queue holds the workflow,
	queuedAt time.Time // at this time

	// shed is set when a finished workflow's targets left memory (see
	// shed); removal is what its compaction will tombstone.
	shed    bool
	removal []Removed

	windows         rollout.Windows // the spec's window rules, compiled on first use
	windowsCompiled bool

	specRow bool // Spec was loaded from the spec row, not a header row

	unplanned []plannedTarget // the plan's targets with no row yet, in plan order
}

// plannedTarget is a target of a plan not written yet.
type plannedTarget struct {
	clusterID   string
	phase, wave int
}

// schedule returns the windows a cluster of the workflow must keep.
func (w *Workflow) schedule(labels map[string]string) window.All {
	if !w.windowsCompiled {
		// Plan validated the rules; a spec that fails here has none that hold.
		w.windows, _ = w.Spec.CompileWindows()
		w.windowsCompiled = true
	}
	return w.windows.For(labels)
}

// NewState returns an empty state over the given inventory view and
// health signals (nil means none).
func NewState(inv map[string]inventory.Cluster, health map[string]records.Health) *State {
	if inv == nil {
		inv = map[string]inventory.Cluster{}
	}
	s := &State{
		Workflows: map[string]*Workflow{},
		Inventory: inv,
		Policies:  map[string]rollout.Policy{},
		busy:      map[string]string{},
		clusters:  make(map[string]*clusterState, len(health)),
		planning:  map[string]*Workflow{},
	}
	for _, h := range health {
		s.SetHealth(h)
	}
	return s
}

// SetHealth records a cluster's health signal without deciding on it, as
// when loading; HealthUpdate decides on it.
func (s *State) SetHealth(h records.Health) {
	c := s.cluster(h.ClusterID)
	c.health = seenHealth{id: h.Envelope.ID, status: h.Status, reasons: h.Reasons, observedAt: h.ObservedAt}
	c.seen = true
}

// ForgetHealth drops a cluster's health signal (its record was deleted).
func (s *State) ForgetHealth(clusterID string) {
	if c, ok := s.clusters[clusterID]; ok {
		c.health, c.seen = seenHealth{}, false
		s.dropIfEmpty(clusterID, c)
	}
}

// HealthOf returns a cluster's last health signal, if one came.
func (s *State) HealthOf(clusterID string) (records.Health, bool) {
	if c, ok := s.clusters[clusterID]; ok && c.seen {
		return c.health.signal(clusterID), true
	}
	return records.Health{}, false
}

// HealthSignals calls fn with every cluster's last health signal.
func (s *State) HealthSignals(fn func(records.Health)) {
	for id, c := range s.clusters {
		if c.seen {
			fn(c.health.signal(id))
		}
	}
}

func (s *State) cluster(id string) *clusterState {
	c, ok := s.clusters[id]
	if !ok {
		c = &clusterState{}
		s.clusters[id] = c
	}
	return c
}

func (s *State) dropIfEmpty(id string, c *clusterState) {
	if !c.seen && len(c.on) == 0 {
		delete(s.clusters, id)
	}
}

// ApplyRow loads one row of the workflows topic, as read from the log.
// Rows of one workflow may come in any order (compaction keeps only the
// newest of each key); a header row older than the one held is ignored.
// Call Reindex after the last row.
func (s *State) ApplyRow(partition int32, rec records.WorkflowRecord) {
	switch {
	case rec.Workflow != nil:
		w := s.workflow(rec.Workflow.ID, partition)
		if w.Seq > rec.Workflow.Seq {
			return
		}
		spec := w.Spec
		w.Workflow = *rec.Workflow
		if w.specRow {
			w.Spec = spec // the header's is the summary (see records.Workflow.Spec)
		}
		w.windowsCompiled = false
	case rec.Spec != nil:
		w := s.workflow(rec.Spec.WorkflowID, partition)
		w.Spec, w.specRow = rec.Spec.Spec, true
		w.windowsCompiled = false
	case rec.Target != nil:
		t := *rec.Target
		w := s.workflow(t.WorkflowID, partition)
		w.Targets[t.ClusterID] = &t
	}
}

// ApplyTombstone applies the tombstone of a workflows row: key is a
// workflow ID (the header's), or a workflow ID, '/' and a cluster ID (a
// target's). A rollback's workflow ID has a '/' of its own
// (records.RollbackID), so the workflow is the longest known prefix.
// It returns the workflow the row was of ("" if none is known).
func (s *State) ApplyTombstone(key string) (workflowID string) {
	if _, ok := s.Workflows[key]; ok {
		s.Forget(key)
		return key
	}
	for i := len(key) - 1; i > 0; i-- {
		if key[i] != '/' {
			continue
		}
		if w := s.Workflows[key[:i]]; w != nil {
			delete(w.Targets, key[i+1:])
			return w.ID
		}
	}
	return ""
}

// Forget drops a workflow, as when its partition is lost.
func (s *State) Forget(id string) {
	delete(s.Workflows, id)
	delete(s.planning, id) // so that Planning does not wait on it before the Reindex
}

func (s *State) workflow(id string, partition int32) *Workflow {
	w, ok := s.Workflows[id]
	if !ok {
		w = &Workflow{Targets: map[string]*records.Target{}, Partition: partition}
		w.ID = id
		s.Workflows[id] = w
	}
	return w
}

// ShedFinished drops from memory the targets of the finished workflows
// loaded so far, as Reindex does, for a shell that loads its rows in parts:
// it then holds no more finished targets than one part has. Reindex is
// still needed after the last part.
func (s *State) ShedFinished() {
	for _, w := range s.Workflows {
		s.shed(w)
	}
}

// Reindex rebuilds the derived indexes from the rows. It is needed after
// loading rows with ApplyRow or after Forget, not after Decide.
func (s *State) Reindex() {
	s.busy = map[string]string{}
	for id, c := range s.clusters {
		c.on = nil
		s.dropIfEmpty(id, c)
	}
	s.planning = map[string]*Workflow{}
	s.deadlines = nil
	for _, w := range s.Workflows {
		if !w.shed || len(w.Targets) > 0 { // one shed as it was loaded (ShedFinished) stays shed
			w.shed, w.removal = false, nil
		}
		w.reindex()
		s.indexWorkflow(w)
		s.shed(w)
		w.queued = false
		s.replan(w)
		switch at, ok := s.deadline(w); {
		case w.Unplanned > 0 && !w.State.Terminal():
			s.queue(w, time.Time{}) // the next tick writes more of its plan
		case w.State == records.WorkflowRunning:
			// The next tick advances what was loaded: what moved it
			// before (a heartbeat, another planner's operation ending)
			// may not come again.
			s.queue(w, time.Time{})
		case ok:
			s.queue(w, at)
		}
	}
}

func (s *State) indexWorkflow(w *Workflow) {
	for id, t := range w.Targets {
		if t.State == records.TargetRunning {
			s.busy[id] = w.ID // an ended workflow's operations in flight still finish
		}
		if !w.State.Terminal() {
			s.watch(id, w) // as when the workflow was submitted: every target
		}
	}
}

func (s *State) watch(clusterID string, w *Workflow) {
	c, x := s.cluster(clusterID), watch{w, w.Targets[clusterID]}
	i := sort.Search(len(c.on), func(i int) bool { return c.on[i].w.ID >= w.ID })
	if i < len(c.on) && c.on[i].w.ID == w.ID {
		c.on[i] = x
		return
	}
	c.on = slices.Insert(slices.Clip(c.on), i, x) // a new array: a caller may be ranging over the old one
}

// unwatch drops w from the workflows targeting a cluster; it reports
// whether others still do.
func (s *State) unwatch(clusterID string, w *Workflow) (others bool) {
	c, ok := s.clusters[clusterID]
	if !ok {
		return false
	}
	if i := slices.IndexFunc(c.on, func(x watch) bool { return x.w == w }); i >= 0 {
		c.on = slices.Delete(slices.Clone(c.on), i, i+1) // as in watch
	}
	s.dropIfEmpty(clusterID, c)
	return len(c.on) > 0
}

// workflowsOn returns the unfinished workflows targeting a cluster, with
// their targets, in workflow ID order. The slice is the index's own:
// callers only read it, and a change to the index makes a new one, so
// ranging over it stays safe.
func (s *State) workflowsOn(clusterID string) []watch {
	c, ok := s.clusters[clusterID]
	if !ok {
		return nil
	}
	for i, x := range c.on {
		if x.w.State.Terminal() { // ended in this decision, not yet dropped (see end)
			out := slices.Clone(c.on[:i])
			for _, x := range c.on[i+1:] {
				if !x.w.State.Terminal() {
					out = append(out, x)
				}
			}
			return out
		}
	}
	return c.on
}

// RolloutsOn returns the IDs of the unfinished workflows that target a
// cluster, sorted. State loaded with
// ApplyRow needs Reindex first.
func (s *State) RolloutsOn(clusterID string) []string {
	var ids []string
	for _, x := range s.workflowsOn(clusterID) {
		ids = append(ids, x.w.ID)
	}
	return ids
}

// Busy reports which workflow, if any, has a command running on a cluster.
func (s *State) Busy(clusterID string) (string, bool) {
	id, ok := s.busy[clusterID]
	return id, ok
}

// Reindex rebuilds the workflow's own indexes (its waves, its failures)
// after target rows were added to it with ApplyRow, for a reader that
// follows the log and shows one workflow's progress without reindexing
// the whole state (State.Reindex does every workflow).
func (w *Workflow) Reindex() { w.reindex() }

func (w *Workflow) reindex() {
	w.waves = make([][][]string, len(w.Phases))
	for p, ph := range w.Phases {
		w.waves[p] = make([][]string, len(ph.WaveSizes))
	}
	w.failed, w.failedIn, w.failedIDs = 0, make([]int, len(w.Phases)), map[string]struct{}{}
	w.cur = nil
	type place struct {
		order int
		id    string
	}
	places := make([][][]place, len(w.Phases))
	for p, ph := range w.Phases {
		places[p] = make([][]place, len(ph.WaveSizes))
	}
	for id, t := range w.Targets {
		if t.Phase < len(places) && t.Wave < len(places[t.Phase]) {
			places[t.Phase][t.Wave] = append(places[t.Phase][t.Wave], place{t.Order, id})
		}
		if t.State == records.TargetFailed {
			w.countFailure(t, 1)
		}
	}
	for p, ph := range places {
		for i, wave := range ph {
			slices.SortFunc(wave, func(a, b place) int {
				return cmp.Or(cmp.Compare(a.order, b.order), strings.Compare(a.id, b.id))
			})
			ids := make([]string, len(wave))
			for k, pl := range wave {
				ids[k] = pl.id
			}
			w.waves[p][i] = ids
		}
	}
}

// fail marks a target failed, for reason.
func (w *Workflow) fail(t *records.Target, reason string) {
	if t.State != records.TargetFailed {
		w.countFailure(t, 1)
	}
	t.State, t.Reason = records.TargetFailed, reason
}

// countFailure adds delta to the failures of the workflow and of t's phase.
func (w *Workflow) countFailure(t *records.Target, delta int) {
	w.failed += delta
	if t.Phase < len(w.failedIn) {
		w.failedIn[t.Phase] += delta
	}
	if w.failedIDs == nil {
		w.failedIDs = map[string]struct{}{}
	}
	if delta > 0 {
		w.failedIDs[t.ClusterID] = struct{}{}
	} else {
		delete(w.failedIDs, t.ClusterID)
	}
}

// failedTargets returns the failed targets, by cluster ID.
func (w *Workflow) failedTargets() []*records.Target {
	ids := make([]string, 0, len(w.failedIDs))
	for id := range w.failedIDs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]*records.Target, len(ids))
	for i, id := range ids {
		out[i] = w.Targets[id]
	}
	return out
}

// Failed is the number of the workflow's targets that failed or turned unhealthy.
func (w *Workflow) Failed() int { return w.failed }

// WaveTargets returns the cluster IDs of one wave, sorted.
func (w *Workflow) WaveTargets(phase, wave int) []string {
	if phase < 0 || phase >= len(w.waves) || wave < 0 || wave >= len(w.waves[phase]) {
		return nil
	}
	return w.waves[phase][wave]
}

// Shed reports whether a finished workflow's targets are out of memory:
// the planner holds unfinished work only. A retry or a rollback of it
// needs them back first (NeedsTargets, Restore).
func (w *Workflow) Shed() bool { return w.shed }

// shed drops a finished workflow's targets from memory, keeping only the
// keys its compaction will tombstone; not while an operation of it is in
// flight (a cancelled workflow's), whose end updates its target.
func (s *State) shed(w *Workflow) {
	if !s.HoldUnfinishedOnly || w.shed || !w.State.Terminal() || len(w.Targets) == 0 {
		return
	}
	for _, t := range w.Targets {
		if t.State == records.TargetRunning {
			return
		}
	}
	w.removal = w.removals()
	w.Targets = map[string]*records.Target{}
	w.waves, w.cur, w.failedIDs = nil, nil, nil
	w.shed = true
}

// removals lists what compacting w tombstones: its targets' rows, and the
// commands of those that were sent one.
func (w *Workflow) removals() []Removed {
	out := make([]Removed, 0, len(w.Targets))
	for _, id := range slices.Sorted(maps.Keys(w.Targets)) {
		out = append(out, Removed{WorkflowID: w.ID, ClusterID: id, Commanded: w.Targets[id].Attempt > 0})
	}
	return out
}

// NeedsTargets reports which finished workflow's targets, out of memory,
// a request needs back before Decide (Restore): a retry or a rollback.
func (s *State) NeedsTargets(req records.Request) (string, bool) {
	c := req.Control
	if c == nil || (c.Action != records.ActionRetry && c.Action != records.ActionRollback) {
		return "", false
	}
	w, ok := s.Workflows[c.WorkflowID]
	return c.WorkflowID, ok && w.shed
}

// Restore puts back a shed workflow's target rows, as read from the log.
func (s *State) Restore(id string, targets []records.Target) {
	w, ok := s.Workflows[id]
	if !ok || !w.shed {
		return
	}
	for _, t := range targets {
		if t.WorkflowID == id {
			row := t
			w.Targets[t.ClusterID] = &row
		}
	}
	w.shed, w.removal = false, nil
	w.reindex()
}

// Compacted reports whether a finished workflow's target rows were removed
// after its retention: only its header row is left.
func (w *Workflow) Compacted() bool { return w.Event == "compacted" }

// compactAt is when a finished workflow's rows are removed: its retention
// after its last change (its end, or the end of its last operation in
// flight, for a cancelled one).
func (s *State) compactAt(w *Workflow) (time.Time, bool) {
	if s.Retention <= 0 || w.Compacted() || !w.State.Terminal() || w.State == records.WorkflowRejected {
		return time.Time{}, false
	}
	for _, t := range w.Targets { // none if shed
		if t.State == records.TargetRunning {
			return time.Time{}, false // a cancelled workflow's operation still finishes
		}
	}
	return w.UpdatedAt.Add(s.Retention), true
}
