package decide

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// This file holds what people do to a workflow (control requests) and the
// automatic resume that spares them one.

// control carries out a control request on a workflow of this planner.
// Controls are idempotent: pausing a paused workflow changes nothing.
func (d *decision) control(in Submit) {
	c := in.Request.Control
	reqID := in.Request.Envelope.ID
	who := in.Request.Envelope.Principal
	if who == "" {
		who = "someone"
	}
	w, ok := d.s.Workflows[c.WorkflowID]
	switch {
	case reqID == "":
		return // nothing to name it by; the shell logs it
	case in.Refused != nil:
		d.rejectControl(in, fmt.Sprintf("request %s by %s refused: %v", reqID, principalOf(in.Request), in.Refused))
		return
	case in.Key != reqID && in.Key != records.ControlKey(c.WorkflowID, reqID):
		d.rejectControl(in, fmt.Sprintf("record key %q: a control request is keyed %q", in.Key, records.ControlKey(c.WorkflowID, reqID)))
		return
	case !ok || w.State == "" || w.State == records.WorkflowRejected:
		d.rejectControl(in, fmt.Sprintf("no workflow %s here: it does not exist, or the request was not keyed %q with a partitioner that hashes the part before '/' (as the flotilla CLI does)",
			c.WorkflowID, records.ControlKey(c.WorkflowID, reqID)))
		return
	case w.LastControl == reqID:
		return // a retry of a control already applied
	case w.State == records.WorkflowRollingBack:
		d.rejectControl(in, fmt.Sprintf("workflow %s is rolling back: act on its rollback, workflow %s", w.ID, records.RollbackID(w.ID)))
		return
	case w.Compacted() && (c.Action == records.ActionRetry || c.Action == records.ActionRollback):
		d.rejectControl(in, fmt.Sprintf("workflow %s is %s, and its clusters' rows were removed %s after it ended (the retention): what it did to each is in flotilla cluster history",
			w.ID, w.State, d.s.Retention))
		return
	}
	if d.s.Authz != nil {
		phase := c.Phase
		if c.Action == records.ActionApprove && phase == "" {
			phase = gatePhase(w.Gate)
		}
		err := d.s.Authz.Check(authz.Request{Principal: in.Request.Envelope.Principal, Action: string(c.Action),
			Operation: string(w.Spec.Operation.Kind), Workflow: w.ID, Phase: phase, Clusters: d.workflowClusters(w)})
		if err != nil {
			d.rejectControl(in, err.Error())
			return
		}
	}
	because := ""
	if c.Reason != "" {
		because = ": " + c.Reason
	}
	switch c.Action {
	case records.ActionPause:
		if w.State.Terminal() {
			d.rejectControl(in, fmt.Sprintf("workflow %s is %s: there is nothing to pause", w.ID, w.State))
			return
		}
		w.LastControl = reqID
		if w.State == records.WorkflowPaused {
			d.touch(w) // already paused: the request is applied all the same
			return
		}
		w.State, w.PausedBy = records.WorkflowPaused, "person"
		w.Reason = "paused by " + who + because
		w.ResumeAt = time.Time{}
		d.transition(w, "paused")
	case records.ActionResume:
		if w.State.Terminal() {
			d.rejectControl(in, fmt.Sprintf("workflow %s is %s: it cannot be resumed", w.ID, w.State))
			return
		}
		w.LastControl = reqID
		if w.State == records.WorkflowRunning {
			d.touch(w)
			return
		}
		w.State, w.PausedBy, w.ResumeAt = records.WorkflowRunning, "", time.Time{}
		w.FailuresAcknowledged = w.failed
		w.Reason = ""
		d.transition(w, "resumed")
		d.advance(w)
	case records.ActionApprove:
		switch {
		case w.State.Terminal():
			d.rejectControl(in, fmt.Sprintf("workflow %s is %s: there is nothing to approve", w.ID, w.State))
			return
		case w.Gate == "":
			d.rejectControl(in, fmt.Sprintf("workflow %s is not waiting for an approval", w.ID))
			return
		case c.Phase != "" && !strings.HasSuffix(w.Gate, ":"+c.Phase):
			d.rejectControl(in, fmt.Sprintf("workflow %s waits at gate %s, not at phase %s", w.ID, w.Gate, c.Phase))
			return
		}
		refusal, opens := d.approval(w, who)
		if refusal != "" {
			d.rejectControl(in, refusal)
			return
		}
		if !opens {
			// The reason says so until the gate opens.
			w.LastControl = reqID
			w.Reason = fmt.Sprintf("%s approved by %s%s; it needs more: %s", w.Gate, who, because, d.pendingApprovals(w))
			d.transition(w, "approval-recorded")
			return
		}
		gate, reason := w.Gate, w.Reason
		w.LastControl = reqID
		w.Approved = append(w.Approved, gate)
		w.Gate, w.GateExpires = "", time.Time{}
		w.Reason = fmt.Sprintf("%s approved by %s%s", gate, who, because)
		d.transition(w, "approved")
		w.Reason = reason // a paused workflow stays paused, for its reason
		if strings.HasPrefix(gate, "before:") && w.State == records.WorkflowRunning {
			d.startWave(w, "wave-started")
		}
		d.advance(w)
	case records.ActionRetry:
		if w.State == records.WorkflowCancelled || w.State == records.WorkflowSucceeded || w.State == records.WorkflowRolledBack {
			d.rejectControl(in, fmt.Sprintf("workflow %s is %s: there is nothing to retry", w.ID, w.State))
			return
		}
		if running := w.count(records.TargetRunning); running > 0 {
			d.rejectControl(in, fmt.Sprintf("workflow %s has %d operations still running: retry when they have finished", w.ID, running))
			return
		}
		retried := d.retryFailed(w)
		if retried == 0 {
			d.rejectControl(in, fmt.Sprintf("workflow %s has no failed clusters to retry", w.ID))
			return
		}
		w.LastControl = reqID
		w.State, w.PausedBy, w.ResumeAt = records.WorkflowRunning, "", time.Time{}
		w.Reason = fmt.Sprintf("%d failed clusters retried by %s%s", retried, who, because)
		d.transition(w, "retrying")
		w.Reason = ""
		d.advance(w)
	case records.ActionCancel:
		if w.State.Terminal() {
			d.rejectControl(in, fmt.Sprintf("workflow %s is %s: there is nothing to cancel", w.ID, w.State))
			return
		}
		w.LastControl = reqID
		w.State = records.WorkflowCancelled
		w.Reason = "cancelled by " + who + because
		d.clearWaits(w)
		d.transition(w, "cancelled")
		d.end(w)
	case records.ActionRollback:
		if problem := d.rollbackRefused(w); problem != "" {
			d.rejectControl(in, problem)
			return
		}
		w.LastControl = reqID
		d.beginRollback(w, "rollback requested by "+who+because)
	default:
		d.rejectControl(in, fmt.Sprintf("unknown action %q: want approve, pause, resume, retry, cancel or rollback", c.Action))
	}
}

// rollbackRefused says why workflow w cannot be rolled back now, or "".
// A cluster that another rollout is about to change, or changing, is not
// wrested from it: that rollout is cancelled or finishes first.
func (d *decision) rollbackRefused(w *Workflow) string {
	switch {
	case w.RollbackOf != "":
		return fmt.Sprintf("workflow %s is itself a rollback (of %s): cancel it, or submit a new rollout", w.ID, w.RollbackOf)
	case w.State == records.WorkflowRolledBack:
		return fmt.Sprintf("workflow %s is already rolled back", w.ID)
	}
	if _, exists := d.s.Workflows[records.RollbackID(w.ID)]; exists {
		return fmt.Sprintf("workflow %s was already rolled back, by %s", w.ID, records.RollbackID(w.ID))
	}
	var busy []string
	for id, t := range w.Targets {
		if !applied(t) {
			continue
		}
		for _, other := range d.s.workflowsOn(id) {
			if other.w != w {
				busy = append(busy, fmt.Sprintf("%s (in %s)", id, other.w.ID))
				break
			}
		}
	}
	if len(busy) > 0 {
		sort.Strings(busy)
		return fmt.Sprintf("clusters it changed are in unfinished rollouts: %s; cancel those or let them finish first", listSome(busy, 5))
	}
	return ""
}

// retryFailed puts every failed target of a workflow back in line, with
// the same plan, and moves the workflow back to the earliest wave that has
// one. Waves after it that were done pass their gate again (bake and
// health) on the way. It returns the number of targets retried.
func (d *decision) retryFailed(w *Workflow) int {
	retried := 0
	for _, t := range w.failedTargets() {
		w.countFailure(t, -1)
		t.State, t.Reason, t.Unhealthy, t.NotBefore = records.TargetPending, "", false, time.Time{}
		d.changed(w, t)
		retried++
	}
	if retried == 0 {
		return 0
	}
	// Back to the earliest wave with a target not done.
	for _, t := range w.Targets {
		if (t.State == records.TargetPending || t.State == records.TargetRunning) && (t.Phase < w.Phase || (t.Phase == w.Phase && t.Wave < w.Wave)) {
			w.Phase, w.Wave = t.Phase, t.Wave
		}
	}
	w.FailuresAcknowledged = 0
	w.BakeUntil, w.Gate, w.GateExpires = time.Time{}, "", time.Time{}
	w.cur = nil // targets of any wave are pending again
	for id := range w.Targets {
		d.s.watch(id, w) // a finished workflow had left the index
	}
	return retried
}

// rejectControl records a control request that cannot be carried out as a
// rejected request under its own ID, as a rejected rollout is.
func (d *decision) rejectControl(in Submit, reason string) {
	id := in.Request.Envelope.ID
	if _, exists := d.s.Workflows[id]; exists {
		return
	}
	w := d.s.workflow(id, in.Partition)
	w.CreatedAt = d.now
	w.State = records.WorkflowRejected
	w.Reason = fmt.Sprintf("%s of workflow %s refused: %s", in.Request.Control.Action, in.Request.Control.WorkflowID, reason)
	d.transition(w, "rejected")
}

// checkRecovery resumes by itself a workflow that its failure threshold
// paused, when the rollout asks for it and every cluster it counted as
// failed failed only by turning unhealthy and has been healthy again for
// the rollout's autoResume time. A slow recovery keeps it paused: nothing
// fails meanwhile. Any failed operation leaves the decision to a person.
func (d *decision) checkRecovery(w *Workflow) {
	if w.State != records.WorkflowPaused || w.PausedBy != "threshold" || w.Spec.AutoResume <= 0 {
		return
	}
	var recovered []*records.Target
	all := true
	for _, t := range w.failedTargets() {
		h, seen := d.s.HealthOf(t.ClusterID)
		if !t.Unhealthy || !seen || h.Status != records.HealthHealthy {
			all = false
			break
		}
		recovered = append(recovered, t)
	}
	if !all || len(recovered) == 0 {
		if !w.ResumeAt.IsZero() {
			w.ResumeAt = time.Time{} // not recovered after all: wait again
			d.touch(w)
		}
		return
	}
	if w.ResumeAt.IsZero() {
		w.ResumeAt = d.now.Add(w.Spec.AutoResume)
		d.transition(w, "recovering")
		return
	}
	if d.now.Before(w.ResumeAt) {
		return
	}
	for _, t := range recovered {
		w.countFailure(t, -1)
		t.State, t.Unhealthy, t.Reason = records.TargetSucceeded, false, ""
		d.changed(w, t)
	}
	w.cur = nil // targets of any wave succeeded again
	w.FailuresAcknowledged = min(w.FailuresAcknowledged, w.failed)
	w.State, w.PausedBy, w.ResumeAt = records.WorkflowRunning, "", time.Time{}
	w.Reason = fmt.Sprintf("resumed by itself: %d clusters healthy again for %s", len(recovered), w.Spec.AutoResume)
	d.transition(w, "resumed")
	w.Reason = ""
	d.advance(w)
}
