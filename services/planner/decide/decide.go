package decide

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/window"
)

// principalOf names who sent a request, for messages.
func principalOf(r records.Request) string {
	if r.Envelope.Principal == "" {
		return "no principal"
	}
	return r.Envelope.Principal
}

// Principal is the name the planner writes its records under.
const Principal = "planner"

// Input is one thing the planner reacts to.
type Input interface{ input() }

// Submit is a record read from the requests topic. Err is set when the
// record could not be decoded; the request is then rejected under Key.
// Refused is set when it decoded but its signature was refused (package
// trust): it is rejected with that reason.
type Submit struct {
	Partition int32
	Key       string
	Request   records.Request
	Err       error
	Refused   error
}

// OperationUpdate is a record read from the operations topic.
type OperationUpdate struct{ Event records.OperationEvent }

// HealthUpdate is a changed record of the health table.
type HealthUpdate struct{ Health records.Health }

// InventoryUpdate is a cluster added, changed or removed in the inventory
// table; the shell has applied it to the state's Inventory view already.
// Clusters of the workflows targeting it that wait (for their windows,
// which follow its labels) are looked at again.
type InventoryUpdate struct{ ClusterID string }

// Tick is the passing of time: deadlines (bake times) are checked against now.
type Tick struct{}

func (Submit) input()          {}
func (OperationUpdate) input() {}
func (HealthUpdate) input()    {}
func (InventoryUpdate) input() {}
func (Tick) input()            {}

// Outputs are the records one decision writes: rows for the workflows
// topic, commands for the executor, and the clusters' history. The shell
// writes them in one transaction.
type Outputs struct {
	Rows     []records.WorkflowRecord
	Commands []records.Command
	// History holds the target rows written with an outcome (succeeded,
	// failed, skipped), each with the operation it was, for the history
	// topic: a cluster's record of what each workflow did to it, which
	// outlives the workflow's own rows.
	History []records.WorkflowRecord
	// Removed are the targets whose rows, and commands if they were sent
	// one, the shell tombstones: those of a finished workflow whose
	// retention passed (see State.Retention).
	Removed []Removed
}

// Removed is a target whose records are to be tombstoned.
type Removed struct {
	WorkflowID, ClusterID string
	Commanded             bool // it was sent a command
}

// Empty reports whether the decision wrote nothing.
func (o Outputs) Empty() bool {
	return len(o.Rows) == 0 && len(o.Commands) == 0 && len(o.History) == 0 && len(o.Removed) == 0
}

// idSpace scopes the name-based UUIDs of the planner's records, so the same
// decision taken twice (after an aborted transaction) yields the same IDs.
var idSpace = uuid.MustParse("6f1f8a52-3c55-4d0e-9b7e-2a0c7d1e5b90")

// CommandID is the ID of the command for one attempt at one target.
func CommandID(workflowID, clusterID string, attempt int) string {
	var buf [256]byte
	name := append(append(append(append(buf[:0], workflowID...), '/'), clusterID...), '/')
	return nameID(strconv.AppendInt(name, int64(attempt), 10))
}

// Decide applies one input to the state at time now and returns the
// records to write. The state is changed in place; if the shell fails to
// write the outputs it must rebuild the state from the log.
func Decide(s *State, in Input, now time.Time) Outputs {
	d := &decision{s: s, now: now.UTC(), touched: map[string]*touched{}}
	switch in := in.(type) {
	case Submit:
		d.cause = in.Request.Envelope.ID
		d.submit(in)
	case OperationUpdate:
		d.cause = in.Event.Envelope.ID
		d.operation(in.Event)
	case HealthUpdate:
		d.cause = in.Health.Envelope.ID
		d.health(in.Health)
	case InventoryUpdate:
		d.inventory(in.ClusterID)
	case Tick:
		d.tick()
	}
	out := d.flush()
	// What the decision changed or looked at may have a new deadline; what
	// it finished leaves memory.
	for _, id := range d.order {
		s.schedule(d.touched[id].w, d.now)
		s.shed(d.touched[id].w)
	}
	for _, w := range d.advanced {
		s.schedule(w, d.now)
	}
	if in, ok := in.(Submit); ok && in.Request.Control != nil {
		if w, ok := s.Workflows[in.Request.Control.WorkflowID]; ok {
			s.shed(w) // restored for a retry or a rollback that did not happen
		}
	}
	return out
}

// deadline is the earliest time at which the passing of time alone can
// move a workflow: a running one's bake, wait or gate ending, a paused
// one's automatic resume, a finished one's compaction.
func (s *State) deadline(w *Workflow) (time.Time, bool) {
	if w.State.Terminal() {
		return s.compactAt(w)
	}
	if w.State == records.WorkflowPaused && !w.ResumeAt.IsZero() {
		return w.ResumeAt, true
	}
	if w.State != records.WorkflowRunning {
		return time.Time{}, false
	}
	d := earliest(earliest(w.BakeUntil, w.WaitUntil), w.GateExpires)
	if w.cur != nil {
		d = earliest(d, w.cur.recheck)
	}
	return d, !d.IsZero()
}

type touched struct {
	w           *Workflow
	created     bool               // the workflow is new: its spec row is written
	transitions []records.Workflow // header snapshots, one per transition
	targets     []*records.Target
	seen        map[string]bool
}

type decision struct {
	s        *State
	now      time.Time
	cause    string
	order    []string // workflow IDs in the order first touched
	touched  map[string]*touched
	advanced []*Workflow // workflows advance looked at
	out      Outputs
}

func (d *decision) touch(w *Workflow) *touched {
	t, ok := d.touched[w.ID]
	if !ok {
		t = &touched{w: w, seen: map[string]bool{}}
		d.touched[w.ID] = t
		d.order = append(d.order, w.ID)
	}
	return t
}

// transition records a change of the workflow's header, named by event.
func (d *decision) transition(w *Workflow, event string) {
	w.Event = event
	w.UpdatedAt = d.now
	t := d.touch(w)
	t.transitions = append(t.transitions, w.Workflow)
}

func (d *decision) changed(w *Workflow, target *records.Target) {
	t := d.touch(w)
	if !t.seen[target.ClusterID] {
		t.seen[target.ClusterID] = true
		t.targets = append(t.targets, target)
	}
}

// flush turns the touched rows into outputs. Target rows go first and the
// header last, so the newest header carries the highest Seq of the workflow.
func (d *decision) flush() Outputs {
	for _, id := range d.order {
		t := d.touched[id]
		w := t.w
		if t.created {
			w.Seq++
			d.out.Rows = append(d.out.Rows, records.WorkflowRecord{Envelope: d.envelope(w), Spec: &records.WorkflowSpec{WorkflowID: w.ID, Spec: w.Spec}})
		}
		for _, target := range t.targets {
			w.Seq++
			row := *target
			d.out.Rows = append(d.out.Rows, records.WorkflowRecord{Envelope: d.envelope(w), Target: &row})
			if row.State.Terminal() {
				entry := row
				if entry.Operation.Kind == "" {
					entry.Operation = w.Spec.Operation
				}
				d.out.History = append(d.out.History, records.WorkflowRecord{Envelope: d.envelope(w), Target: &entry})
			}
		}
		for _, h := range t.transitions {
			d.header(w, h)
		}
		if n := len(t.transitions); n == 0 || !sameHeader(t.transitions[n-1], w.Workflow) {
			// The newest row must be the state: changes after the last
			// transition are written as progress.
			w.Event = "progress"
			w.UpdatedAt = d.now
			d.header(w, w.Workflow)
		}
	}
	return d.out
}

// header writes h, a header row of w (a copy, so that each row holds its
// own), with the next Seq of w.
func (d *decision) header(w *Workflow, h records.Workflow) {
	w.Seq++
	h.Seq = w.Seq
	h.Spec = records.SpecSummary(h.Spec) // the whole spec is in the spec row
	d.out.Rows = append(d.out.Rows, records.WorkflowRecord{Envelope: d.envelope(w), Workflow: &h})
}

// rowID is the envelope ID of a workflow's row number seq.
func rowID(workflowID string, seq int64) string {
	var buf [256]byte
	name := append(append(buf[:0], workflowID...), '#')
	return nameID(strconv.AppendInt(name, seq, 10))
}

// nameID is uuid.NewSHA1(idSpace, name).String(), the name-based UUID of
// the planner's records, made without the garbage of a hash object: the
// planner makes one per row it writes.
func nameID(name []byte) string {
	var buf [320]byte
	sum := sha1.Sum(append(append(buf[:0], idSpace[:]...), name...))
	var id uuid.UUID
	copy(id[:], sum[:])
	id[6] = (id[6] & 0x0f) | 0x50 // version 5: SHA-1
	id[8] = (id[8] & 0x3f) | 0x80 // the RFC 4122 variant
	return id.String()
}

// sameHeader reports whether two header rows hold the same state, apart
// from what every row stamps anew.
func sameHeader(a, b records.Workflow) bool {
	a.Event, a.UpdatedAt, a.Seq = b.Event, b.UpdatedAt, b.Seq
	return reflect.DeepEqual(a, b)
}

func (d *decision) envelope(w *Workflow) records.Envelope {
	return records.Envelope{
		ID:          rowID(w.ID, w.Seq),
		Time:        d.now,
		Principal:   Principal,
		CausationID: d.cause,
	}
}

// submit accepts or rejects a request for a new rollout.
func (d *decision) submit(in Submit) {
	// The record key names the workflow: it is what the client produced
	// under, and it must equal the request ID (checked below).
	id := in.Key
	if id == "" {
		id = in.Request.Envelope.ID
	}
	if id == "" {
		// Nothing to name the request by; the shell logs it.
		return
	}
	if in.Err == nil && in.Request.Control != nil {
		d.control(in)
		return
	}
	if _, exists := d.s.Workflows[id]; exists {
		return // a retry of a request already taken: requests are idempotent by ID
	}
	var err error
	switch {
	case in.Err != nil:
		err = fmt.Errorf("cannot decode request: %w", in.Err)
	case in.Refused != nil:
		err = fmt.Errorf("request %s by %s refused: %w", id, principalOf(in.Request), in.Refused)
	case in.Key != "" && in.Request.Envelope.ID != "" && in.Key != in.Request.Envelope.ID:
		err = fmt.Errorf("record key %q differs from request id %q", in.Key, in.Request.Envelope.ID)
	case in.Request.Submit == nil:
		err = errors.New("request has no body: want a rollout submission")
	}
	var (
		spec rollout.Spec
		plan rollout.Plan
	)
	if in.Request.Submit != nil {
		spec = in.Request.Submit.Spec
	}
	if err == nil {
		// The policy's phases are copied in: a later change to the policy
		// does not change a rollout under way.
		spec, err = spec.WithPolicy(d.s.Policies)
	}
	if err == nil {
		plan, err = spec.Plan(d.s.Inventory)
	}
	if err == nil && spec.OnConflict == rollout.ConflictReject {
		err = d.conflicts(plan)
	}
	if err == nil && d.s.Authz != nil {
		if err = d.s.Authz.Check(authz.Request{Principal: in.Request.Envelope.Principal, Action: authz.ActionSubmit,
			Operation: string(spec.Operation.Kind), Clusters: d.planClusters(plan)}); err != nil {
			err = fmt.Errorf("request %s refused: %w", id, err)
		}
	}
	w := d.s.workflow(id, in.Partition)
	w.CreatedAt = d.now
	w.Spec = spec
	w.Requester = in.Request.Envelope.Principal
	d.touch(w).created = true
	if err != nil {
		w.State = records.WorkflowRejected
		w.Reason = err.Error()
		d.transition(w, "rejected")
		return
	}
	w.State = records.WorkflowRunning
	d.startPlan(w, plan)
	d.transition(w, "submitted")
	if w.Unplanned == 0 {
		d.planned(w)
	}
}

// conflicts reports the targets of a plan that are in unfinished rollouts.
func (d *decision) conflicts(plan rollout.Plan) error {
	return ConflictError(plan, d.s.RolloutsOn)
}

// ConflictError is the planner's reason to reject a plan under
// onConflict: reject, given the unfinished rollouts targeting each cluster
// (sorted IDs); nil when no target is in one. The dry run shares it.
func ConflictError(plan rollout.Plan, rolloutsOn func(clusterID string) []string) error {
	var busy []string
	for _, ph := range plan.Phases {
		for _, wave := range ph.Waves {
			for _, id := range wave {
				if others := rolloutsOn(id); len(others) > 0 {
					busy = append(busy, fmt.Sprintf("%s (in %s)", id, others[0]))
				}
			}
		}
	}
	if len(busy) == 0 {
		return nil
	}
	sort.Strings(busy)
	more := ""
	if len(busy) > 5 {
		more = fmt.Sprintf(" and %d more", len(busy)-5)
		busy = busy[:5]
	}
	return fmt.Errorf("onConflict is reject, and targets are in unfinished rollouts: %s%s", strings.Join(busy, ", "), more)
}

func (w *Workflow) reindexTargetsCount() { w.Workflow.Targets = len(w.Targets) }

// operation records what the executor reports for one target.
func (d *decision) operation(ev records.OperationEvent) {
	w, ok := d.s.Workflows[ev.WorkflowID]
	if !ok {
		return
	}
	t, ok := w.Targets[ev.ClusterID]
	if !ok || t.CommandID != ev.CommandID || t.State != records.TargetRunning {
		return // stale or duplicate: not the command this target waits for
	}
	switch ev.Status {
	case records.OperationStarted:
		// What the cluster had before is recorded before it changes, so
		// that a rollback can restore it.
		if d.recordPrevious(t, ev) {
			d.changed(w, t)
		}
		return
	case records.OperationSucceeded:
		t.State = records.TargetSucceeded
		t.Version = ev.Version
	case records.OperationFailed:
		if t.Attempt <= w.Spec.Retries {
			d.retryLater(w, t, ev)
			return
		}
		reason := ev.Reason
		if t.Attempt > 1 {
			reason = fmt.Sprintf("attempt %d of %d failed: %s", t.Attempt, t.Attempt, ev.Reason)
		}
		w.fail(t, reason)
	default:
		return
	}
	d.recordPrevious(t, ev)
	// The executor's clock says when the operation ended; the planner's
	// bounds it (not before the target started, not after now), so that an
	// event stamped in the future or the far past cannot make it ignore the
	// health signals that follow, or count those that came before.
	t.FinishedAt = ev.Envelope.Time.UTC()
	if t.FinishedAt.IsZero() || t.FinishedAt.After(d.now) {
		t.FinishedAt = d.now
	}
	if t.FinishedAt.Before(t.StartedAt) {
		t.FinishedAt = t.StartedAt
	}
	if ix := w.cur; ix.of(t) {
		ix.running--
		if t.State == records.TargetSucceeded && !d.seenSince(t) {
			ix.markUnseen(t.ClusterID, true)
		}
	}
	d.changed(w, t)
	if d.s.busy[ev.ClusterID] == w.ID {
		delete(d.s.busy, ev.ClusterID)
	}
	d.checkThreshold(w, t.Phase)
	d.advance(w)
	d.startRollback(w) // if w is rolling back and this was its last operation in flight
	d.freed(w, ev.ClusterID)
}

// freed lets the workflows that wait for a cluster w's operation ran on go on.
func (d *decision) freed(w *Workflow, clusterID string) {
	for _, x := range d.s.workflowsOn(clusterID) {
		if other := x.w; other != w {
			if other.cur != nil {
				other.cur.release(clusterID, heldBusy)
			}
			d.advance(other)
		}
	}
}

// recordPrevious copies what the cluster had before the operation from
// an operation event into the target, where the event says and the target
// does not know yet. It reports whether the target changed.
func (d *decision) recordPrevious(t *records.Target, ev records.OperationEvent) bool {
	changed := false
	if ev.PreviousVersion != "" && t.PreviousVersion != ev.PreviousVersion {
		t.PreviousVersion, changed = ev.PreviousVersion, true
	}
	if t.PreviousConfig == nil && t.PreviousUnset == nil && (ev.PreviousConfig != nil || ev.PreviousUnset != nil) {
		t.PreviousConfig, t.PreviousUnset, changed = ev.PreviousConfig, ev.PreviousUnset, true
	}
	return changed
}

// retryLater puts a target whose operation failed back in line for
// another attempt after a backoff that doubles with each attempt.
func (d *decision) retryLater(w *Workflow, t *records.Target, ev records.OperationEvent) {
	backoff := w.Spec.RetryBackoff << (t.Attempt - 1)
	t.State = records.TargetPending
	t.NotBefore = d.now.Add(backoff)
	t.Reason = fmt.Sprintf("attempt %d of %d failed: %s; retrying after %s", t.Attempt, w.Spec.Retries+1, ev.Reason, t.NotBefore.Format(time.RFC3339))
	if ix := w.cur; ix.of(t) {
		ix.running--
		ix.requeue(t.ClusterID)
	}
	d.changed(w, t)
	if d.s.busy[t.ClusterID] == w.ID {
		delete(d.s.busy, t.ClusterID)
	}
	d.advance(w)
	d.startRollback(w) // a retry is moot once w is rolling back
	d.freed(w, t.ClusterID)
}

// health records a cluster's health signal. An unhealthy cluster counts
// as failed in the workflow that changed it last, and only if it was seen
// so after that change: a later rollout's damage is not blamed on an
// earlier one.
func (d *decision) health(h records.Health) {
	d.s.SetHealth(h)
	for _, x := range d.s.workflowsOn(h.ClusterID) {
		w, t := x.w, x.t
		if ix := w.cur; ix.of(t) {
			switch {
			case h.Status != records.HealthUnhealthy:
				ix.release(t.ClusterID, heldUnhealthy)
			case w.Spec.UnhealthyTargets == rollout.SkipUnhealthy:
				ix.release(t.ClusterID, heldWindow) // skipped now, not once its window opens
			}
			if ix.unseenN > 0 && t.State == records.TargetSucceeded && !h.ObservedAt.Before(t.FinishedAt) {
				ix.markUnseen(t.ClusterID, false)
			}
		}
		if h.Status == records.HealthUnhealthy && d.changedLast(w, t) && !h.ObservedAt.Before(t.FinishedAt) {
			d.markUnhealthy(w, t, h)
			d.checkThreshold(w, t.Phase)
		}
		if w.State == records.WorkflowPaused {
			d.checkRecovery(w)
		}
		d.advance(w)
	}
	d.correctDrift(h)
}

// changedLast reports whether target t's operation is the last one that
// changed its cluster, among the unfinished workflows.
func (d *decision) changedLast(w *Workflow, t *records.Target) bool {
	if t.State != records.TargetSucceeded {
		return false
	}
	for _, other := range d.s.workflowsOn(t.ClusterID) {
		if o := other.t; other.w != w && o.State == records.TargetSucceeded && o.FinishedAt.After(t.FinishedAt) {
			return false
		}
	}
	return true
}

func (d *decision) markUnhealthy(w *Workflow, t *records.Target, h records.Health) {
	reason := "unhealthy after the operation"
	if len(h.Reasons) > 0 {
		reason += ": " + strings.Join(h.Reasons, "; ")
	}
	w.fail(t, reason)
	t.Unhealthy = true
	if ix := w.cur; ix.of(t) {
		ix.markUnseen(t.ClusterID, false)
	}
	d.changed(w, t)
}

// inventory looks again at a cluster whose inventory record changed, in
// the workflows that target it.
func (d *decision) inventory(clusterID string) {
	for _, x := range d.s.workflowsOn(clusterID) {
		if x.w.cur.of(x.t) {
			x.w.cur.release(clusterID)
		}
		d.advance(x.w)
	}
}

// tick moves the workflows whose deadline has come, and those just loaded.
func (d *decision) tick() {
	due := d.s.due(d.now)
	sort.Slice(due, func(i, j int) bool { return due[i].ID < due[j].ID })
	for _, w := range due {
		if w.State.Terminal() {
			d.compact(w)
			continue
		}
		d.advanced = append(d.advanced, w)
		// What a deadline passing causes, the row that set it caused.
		d.cause = rowID(w.ID, w.Seq)
		if w.Unplanned > 0 {
			if d.planMore(w); w.Unplanned == 0 {
				d.planned(w)
			}
			continue
		}
		if w.State == records.WorkflowPaused {
			d.checkRecovery(w)
			continue
		}
		d.advance(w)
	}
}

// checkThreshold stops a running workflow whose failures reached its
// threshold, or the threshold of phase (where the last failure was), as
// the threshold's action says. Failures a person resumed past do not count
// again towards the rollout's threshold; a phase over its own threshold
// stops again at each further failure.
func (d *decision) checkThreshold(w *Workflow, phase int) {
	if w.State != records.WorkflowRunning {
		return
	}
	action, why, reached := rollout.ThresholdPause, "", false
	if limit := w.Spec.FailureThreshold.Limit(w.Workflow.Targets); w.failed-w.FailuresAcknowledged >= limit {
		action, reached = w.Spec.FailureThreshold.Action, true
		why = fmt.Sprintf("%d of %d clusters failed or turned unhealthy, reaching the failure threshold of %d", w.failed, w.Workflow.Targets, limit)
	}
	if phase >= 0 && phase < len(w.Phases) && w.failed > w.FailuresAcknowledged {
		ph := w.Phases[phase]
		size := 0
		for _, n := range ph.WaveSizes {
			size += n
		}
		limit := ph.FailureThreshold.Limit(size)
		if !ph.FailureThreshold.IsZero() && w.failedIn[phase] >= limit && (!reached || severity(ph.FailureThreshold.Action) > severity(action)) {
			action, reached = ph.FailureThreshold.Action, true
			why = fmt.Sprintf("%d of %d clusters of phase %s failed or turned unhealthy, reaching its failure threshold of %d", w.failedIn[phase], size, ph.Name, limit)
		}
	}
	if !reached {
		return
	}
	why += ": " + d.failureSummary(w, 3)
	switch action {
	case rollout.ThresholdAbort:
		w.State = records.WorkflowFailed
		w.Reason = "aborted: " + why
		d.clearWaits(w)
		d.transition(w, "aborted")
		d.end(w)
	case rollout.ThresholdRollback:
		d.beginRollback(w, "failure threshold reached: "+why)
	default:
		w.State, w.PausedBy = records.WorkflowPaused, "threshold"
		w.Reason = why
		d.transition(w, "paused")
	}
}

// severity orders threshold actions from the mildest.
func severity(a rollout.ThresholdAction) int {
	switch a {
	case rollout.ThresholdAbort:
		return 1
	case rollout.ThresholdRollback:
		return 2
	}
	return 0
}

// clearWaits drops what a workflow that stops running was waiting for.
func (d *decision) clearWaits(w *Workflow) {
	w.BakeUntil, w.WaitUntil, w.Waiting = time.Time{}, time.Time{}, ""
	w.Gate, w.GateExpires, w.PausedBy, w.ResumeAt = "", time.Time{}, "", time.Time{}
}

func (d *decision) failureSummary(w *Workflow, most int) string {
	failed := w.failedTargets()
	var parts []string
	for i, t := range failed {
		if i == most {
			parts = append(parts, fmt.Sprintf("and %d more", len(failed)-most))
			break
		}
		parts = append(parts, t.ClusterID+" ("+t.Reason+")")
	}
	return strings.Join(parts, ", ")
}

// startWave makes the current wave (or the next non-empty one) current.
func (d *decision) startWave(w *Workflow, event string) {
	for w.Phase < len(w.Phases) && w.Wave >= len(w.Phases[w.Phase].WaveSizes) {
		w.Phase++
		w.Wave = 0
	}
	if w.Phase < len(w.Phases) {
		if w.Wave == 0 && d.gated(w, "before") {
			return // the phase starts when it is approved
		}
		if w.Wave == 0 {
			d.transition(w, "phase-started")
		}
		d.transition(w, event)
	}
}

// gated reports whether the current phase waits at its approval gate
// before (or after) it, and makes the workflow wait there if it just
// arrived. A gate opens once, by an approve request.
func (d *decision) gated(w *Workflow, where string) bool {
	if w.Phase >= len(w.Spec.Phases) {
		return false // a spec without phases has no gates
	}
	ph := w.Spec.Phases[w.Phase]
	if (where == "before" && !ph.Approve.Before()) || (where == "after" && !ph.Approve.After()) {
		return false
	}
	gate := where + ":" + ph.Name
	if slices.Contains(w.Approved, gate) {
		return false
	}
	if w.Gate != gate {
		w.Gate = gate
		w.GateExpires = time.Time{}
		if ph.ApprovalTimeout > 0 {
			w.GateExpires = d.now.Add(ph.ApprovalTimeout)
		}
		d.transition(w, "waiting-approval")
	}
	return true
}

// advance moves a running workflow as far as the rules allow now: starts
// pending targets of the current wave up to the in-flight limit, starts the
// bake when the wave is done, moves to the next wave when the bake is over
// and every cluster of the wave is seen healthy, and ends the workflow
// after its last wave.
func (d *decision) advance(w *Workflow) {
	d.advanced = append(d.advanced, w)
	if w.Unplanned > 0 {
		return // it starts once its plan is all written
	}
	for w.State == records.WorkflowRunning {
		if w.Gate != "" {
			if !w.GateExpires.IsZero() && !d.now.Before(w.GateExpires) {
				w.GateExpires = time.Time{} // approving later still opens it
				w.State, w.PausedBy = records.WorkflowPaused, "gate"
				w.Reason = fmt.Sprintf("approval gate %s was not approved in time", w.Gate)
				d.transition(w, "paused")
			}
			return
		}
		if w.Phase >= len(w.Phases) {
			d.finish(w)
			return
		}
		ix := d.index(w)
		if !ix.done() {
			d.dispatch(w, ix)
			if !ix.done() || w.State != records.WorkflowRunning {
				return
			}
			// Every cluster left was skipped or failed: the wave is done.
		}
		if w.BakeUntil.IsZero() {
			w.BakeUntil = d.now.Add(w.Phases[w.Phase].Bake)
			d.transition(w, "wave-completed")
		}
		if d.now.Before(w.BakeUntil) || !d.waveSeenHealthy(w, ix) {
			return
		}
		if w.State != records.WorkflowRunning {
			return // seeing the wave unhealthy paused it
		}
		if w.Wave+1 >= len(w.Phases[w.Phase].WaveSizes) && d.gated(w, "after") {
			return // the next phase waits for approval of this one
		}
		w.BakeUntil = time.Time{}
		w.Wave++
		if w.Wave >= len(w.Phases[w.Phase].WaveSizes) {
			w.Phase++
			w.Wave = 0
		}
		d.startWave(w, "wave-started")
	}
}

// waveSeenHealthy reports whether every succeeded cluster of the wave has
// been probed since its operation finished and is not unhealthy. A cluster
// seen unhealthy counts as failed (which may pause the workflow); one not
// yet seen holds the wave until the monitor looks at it. While the index
// knows of one not seen, that is the answer; then every cluster is looked
// at, once the last is seen.
func (d *decision) waveSeenHealthy(w *Workflow, ix *waveIndex) bool {
	if ix.unseenN > 0 {
		return false
	}
	all := true
	for _, id := range ix.order {
		t := w.Targets[id]
		if t.State != records.TargetSucceeded {
			continue
		}
		h, ok := d.s.HealthOf(id)
		if !ok || h.ObservedAt.Before(t.FinishedAt) {
			ix.markUnseen(id, true) // its signal was removed
			all = false
			continue
		}
		if h.Status == records.HealthUnhealthy && d.changedLast(w, t) {
			// It fails, and the wave goes on unless that paused it.
			d.markUnhealthy(w, t, h)
			d.checkThreshold(w, t.Phase)
		}
	}
	return all
}

// dispatch sends commands for the wave's pending targets, in order, while
// the in-flight limit allows. A cluster busy with another workflow's
// operation waits until it is freed; one that is unhealthy, until its
// health changes; one outside its maintenance windows or waiting to retry,
// until the earliest of those times.
func (d *decision) dispatch(w *Workflow, ix *waveIndex) {
	limit := w.Phases[w.Phase].MaxInFlight
	if !ix.recheck.IsZero() && !d.now.Before(ix.recheck) {
		ix.releaseTimed()
	}
	defer func() { d.setWaiting(w, ix.waits()) }()
	for len(ix.queue) > 0 && (limit <= 0 || ix.running < limit) {
		t := w.Targets[ix.next()]
		if _, busy := d.s.busy[t.ClusterID]; busy {
			ix.hold(t.ClusterID, heldBusy, time.Time{}, d.now)
			continue
		}
		if d.now.Before(t.NotBefore) {
			ix.hold(t.ClusterID, heldRetry, t.NotBefore, d.now)
			continue
		}
		c, ok := d.s.Inventory[t.ClusterID]
		if !ok {
			w.fail(t, "cluster was removed from the inventory")
			t.FinishedAt = d.now
			d.changed(w, t)
			d.checkThreshold(w, t.Phase)
			if w.State != records.WorkflowRunning {
				return
			}
			continue
		}
		// A rollback is what may heal an unhealthy cluster: it is not held.
		if h, seen := d.s.HealthOf(t.ClusterID); seen && h.Status == records.HealthUnhealthy && w.RollbackOf == "" {
			if w.Spec.UnhealthyTargets == rollout.SkipUnhealthy {
				t.State = records.TargetSkipped
				t.Reason = "skipped: unhealthy before its operation"
				if len(h.Reasons) > 0 {
					t.Reason += ": " + strings.Join(h.Reasons, "; ")
				}
				t.FinishedAt = d.now
				d.changed(w, t)
				continue
			}
			ix.hold(t.ClusterID, heldUnhealthy, time.Time{}, d.now) // until it recovers
			continue
		}
		if sched := w.schedule(c.Labels); !sched.Open(d.now) {
			next, ok := sched.NextOpen(d.now)
			if !ok {
				next = time.Time{} // it does not open within the horizon
			}
			ix.hold(t.ClusterID, heldWindow, next, d.now)
			continue
		}
		t.State = records.TargetRunning
		t.Attempt++
		t.CommandID = CommandID(w.ID, t.ClusterID, t.Attempt)
		t.StartedAt = d.now
		d.s.busy[t.ClusterID] = w.ID
		d.changed(w, t)
		op := w.Spec.Operation
		if t.Operation.Kind != "" {
			op = t.Operation // a rollback's inverse, particular to the cluster
		}
		d.out.Commands = append(d.out.Commands, records.Command{
			Envelope:   records.Envelope{ID: t.CommandID, Time: d.now, Principal: Principal, CausationID: d.cause},
			ID:         t.CommandID,
			WorkflowID: w.ID,
			ClusterID:  t.ClusterID,
			Attempt:    t.Attempt,
			Timeout:    w.Spec.OperationTimeout,
			Operation:  op,
			Cluster:    c,
		})
		ix.running++
	}
}

// waits are why pending clusters of the current wave were not started.
type waits struct {
	outsideWindow int
	windowOpens   time.Time // zero: no window opens within the horizon
	unhealthy     int
	retrying      int
	retryAt       time.Time
}

// setWaiting records which clusters of the current wave wait, and why:
// for their maintenance windows, to recover their health, or to retry;
// and the earliest time at which waiting may end (a window opening, a
// retry coming due). It writes a row only when that changes.
func (d *decision) setWaiting(w *Workflow, why waits) {
	var parts []string
	switch {
	case why.outsideWindow > 0 && why.windowOpens.IsZero():
		parts = append(parts, fmt.Sprintf("%d clusters wait for a maintenance window that does not open within %d days", why.outsideWindow, int(window.Horizon.Hours()/24)))
	case why.outsideWindow > 0:
		parts = append(parts, fmt.Sprintf("%d clusters wait for their maintenance window, which opens at %s", why.outsideWindow, why.windowOpens.UTC().Format(time.RFC3339)))
	}
	if why.unhealthy > 0 {
		parts = append(parts, fmt.Sprintf("%d clusters are unhealthy and wait to recover before their operation", why.unhealthy))
	}
	if why.retrying > 0 {
		parts = append(parts, fmt.Sprintf("%d clusters wait to retry a failed operation, the first at %s", why.retrying, why.retryAt.UTC().Format(time.RFC3339)))
	}
	until := why.windowOpens
	if !why.retryAt.IsZero() && (until.IsZero() || why.retryAt.Before(until)) {
		until = why.retryAt
	}
	waiting := strings.Join(parts, "; ")
	if waiting == w.Waiting && until.Equal(w.WaitUntil) {
		return
	}
	w.Waiting, w.WaitUntil = waiting, until
	if waiting != "" {
		d.transition(w, "waiting")
	} else {
		d.touch(w) // the wait is over: a progress row says so
	}
}

// count returns the number of the workflow's targets in a state.
func (w *Workflow) count(state records.TargetState) int {
	n := 0
	for _, t := range w.Targets {
		if t.State == state {
			n++
		}
	}
	return n
}

// finish ends a workflow whose every wave is done.
func (d *decision) finish(w *Workflow) {
	if w.failed > 0 {
		w.State = records.WorkflowFailed
		w.Reason = fmt.Sprintf("%d of %d clusters failed: %s", w.failed, w.Workflow.Targets, d.failureSummary(w, 3))
		d.transition(w, "failed")
	} else {
		w.State = records.WorkflowSucceeded
		w.Reason = ""
		if skipped := w.count(records.TargetSkipped); skipped > 0 {
			w.Reason = fmt.Sprintf("%d of %d clusters skipped: unhealthy before their operation", skipped, w.Workflow.Targets)
		}
		d.transition(w, "succeeded")
	}
	d.end(w)
}

// end drops a workflow that reached a terminal state from the index of
// workflows targeting each cluster, and tells the workflow it rolls back,
// if any.
//
// An unhealthy cluster that w changed last may now count against the
// workflow that changed it before (see changedLast): its signal is
// applied again to the workflows still targeting it.
func (d *decision) end(w *Workflow) {
	w.cur = nil // not needed again, unless a person retries it
	d.s.stopPlanning(w)
	var unhealthy []string
	for id := range w.Targets {
		if h, _ := d.s.HealthOf(id); d.s.unwatch(id, w) && h.Status == records.HealthUnhealthy {
			unhealthy = append(unhealthy, id)
		}
	}
	d.rollbackEnded(w)
	sort.Strings(unhealthy)
	for _, id := range unhealthy {
		h, _ := d.s.HealthOf(id)
		d.health(h)
	}
}

// compact removes a finished workflow's target rows and commands once its
// retention has passed: its header row stays, as the workflow's summary
// (state, reason, counts, phases), and the history topic keeps what it did
// to each cluster. Its targets leave memory with them.
func (d *decision) compact(w *Workflow) {
	if at, ok := d.s.compactAt(w); !ok || d.now.Before(at) {
		return
	}
	d.cause = rowID(w.ID, w.Seq)
	if !w.shed {
		w.removal = w.removals()
		w.Targets = map[string]*records.Target{}
	}
	d.out.Removed = append(d.out.Removed, w.removal...)
	// Nothing is left to read back, nor to count.
	w.shed, w.removal = false, nil
	w.reindex()
	d.transition(w, "compacted")
}
