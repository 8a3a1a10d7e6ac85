package notifier

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// Principal is the name the notifier writes its records under.
const Principal = "notifier"

// idSpace scopes notification IDs: a notification's ID is derived from the
// ID of the record that caused it, so re-reading that record after a crash
// yields the same notification, which readers can drop as a duplicate.
var idSpace = uuid.MustParse("0b6c3f0e-8a47-4a5e-9a41-5d1c2f7e9b13")

func notification(cause records.Envelope, kind string, sev records.Severity) records.Notification {
	return records.Notification{
		Envelope: records.Envelope{
			ID:          uuid.NewSHA1(idSpace, []byte(cause.ID+"/"+kind)).String(),
			Time:        cause.Time,
			Principal:   Principal,
			CausationID: cause.ID,
		},
		Kind:     kind,
		Severity: sev,
		Fields:   map[string]string{},
	}
}

func name(w *records.Workflow) string {
	if w.Spec.Name != "" {
		return fmt.Sprintf("rollout %q (%s)", w.Spec.Name, w.ID)
	}
	return "request " + w.ID
}

// FromWorkflow turns a workflow row into a notification, if the decision
// that wrote it is one people want to hear about. Target rows and plain
// progress rows say nothing new: operations report on the clusters.
func FromWorkflow(rec records.WorkflowRecord) (records.Notification, bool) {
	w := rec.Workflow
	if w == nil || w.Event == "" || w.Event == "progress" {
		return records.Notification{}, false
	}
	sev := records.SeverityInfo
	var msg string
	phase := func() (string, int) {
		if w.Phase < len(w.Phases) {
			return w.Phases[w.Phase].Name, len(w.Phases[w.Phase].WaveSizes)
		}
		return "", 0
	}
	waveSize := func() int {
		if w.Phase < len(w.Phases) && w.Wave < len(w.Phases[w.Phase].WaveSizes) {
			return w.Phases[w.Phase].WaveSizes[w.Wave]
		}
		return 0
	}
	switch w.Event {
	case "submitted":
		var names []string
		for _, p := range w.Phases {
			names = append(names, p.Name)
		}
		msg = fmt.Sprintf("%s accepted: %s on %d clusters in %d phases (%s)", name(w), describeOperation(w), w.Targets, len(w.Phases), strings.Join(names, ", "))
	case "rejected":
		sev = records.SeverityError
		msg = fmt.Sprintf("%s rejected: %s", name(w), w.Reason)
	case "phase-started":
		p, _ := phase()
		size := 0
		if w.Phase < len(w.Phases) {
			for _, n := range w.Phases[w.Phase].WaveSizes {
				size += n
			}
		}
		msg = fmt.Sprintf("%s: phase %d/%d %q started (%d clusters)", name(w), w.Phase+1, len(w.Phases), p, size)
	case "wave-started":
		p, waves := phase()
		msg = fmt.Sprintf("%s: phase %q wave %d/%d started (%d clusters)", name(w), p, w.Wave+1, waves, waveSize())
	case "wave-completed":
		p, waves := phase()
		msg = fmt.Sprintf("%s: phase %q wave %d/%d finished its operations; baking until %s", name(w), p, w.Wave+1, waves, w.BakeUntil.Format("15:04:05Z07:00"))
	case "waiting":
		msg = fmt.Sprintf("%s: %s", name(w), w.Waiting)
	case "paused":
		sev = records.SeverityWarning
		msg = fmt.Sprintf("%s paused: %s", name(w), w.Reason)
	case "waiting-approval":
		sev = records.SeverityWarning
		msg = fmt.Sprintf("%s waits for approval at gate %s", name(w), w.Gate)
		if !w.GateExpires.IsZero() {
			msg += fmt.Sprintf(" (until %s, then it pauses)", w.GateExpires.UTC().Format(time.RFC3339))
		}
		msg += "; approve with: flotilla rollout approve " + w.ID
	case "approved", "approval-recorded":
		msg = fmt.Sprintf("%s: %s", name(w), w.Reason)
	case "retrying":
		msg = fmt.Sprintf("%s: %s", name(w), w.Reason)
	case "recovering":
		msg = fmt.Sprintf("%s: the clusters that paused it are healthy again; it resumes by itself at %s unless one relapses",
			name(w), w.ResumeAt.UTC().Format(time.RFC3339))
	case "resumed":
		msg = fmt.Sprintf("%s resumed", name(w))
		if w.Reason != "" {
			msg += ": " + w.Reason
		}
	case "cancelled":
		sev = records.SeverityWarning
		msg = fmt.Sprintf("%s %s; operations in flight finish", name(w), w.Reason)
	case "succeeded":
		msg = fmt.Sprintf("%s succeeded on all %d clusters", name(w), w.Targets)
	case "failed":
		sev = records.SeverityError
		msg = fmt.Sprintf("%s failed: %s", name(w), w.Reason)
	case "aborted":
		sev = records.SeverityError
		msg = fmt.Sprintf("%s %s; operations in flight finish, nothing is undone", name(w), w.Reason)
	case "rolling-back":
		sev = records.SeverityWarning
		msg = fmt.Sprintf("%s is rolling back: %s; follow it with: flotilla rollout status %s", name(w), w.Reason, records.RollbackID(w.ID))
	case "rolled-back":
		sev = records.SeverityWarning
		msg = fmt.Sprintf("%s rolled back: %s", name(w), w.Reason)
	case "compacted":
		msg = fmt.Sprintf("%s (%s) kept its per-cluster rows for its retention: they are removed; its summary stays, and what it did to each cluster is in flotilla cluster history", name(w), w.State)
	case "rollback-failed":
		sev = records.SeverityError
		msg = fmt.Sprintf("%s could not be rolled back: %s", name(w), w.Reason)
	default:
		msg = fmt.Sprintf("%s: %s", name(w), w.Event)
	}
	n := notification(rec.Envelope, "workflow."+w.Event, sev)
	n.WorkflowID = w.ID
	n.Message = msg
	n.Fields["workflow"] = w.ID
	n.Fields["event"] = w.Event
	n.Fields["state"] = string(w.State)
	if w.Spec.Name != "" {
		n.Fields["name"] = w.Spec.Name
	}
	if w.Reason != "" {
		n.Fields["reason"] = w.Reason
	}
	if w.Phase < len(w.Phases) {
		n.Fields["phase"] = w.Phases[w.Phase].Name
		n.Fields["wave"] = strconv.Itoa(w.Wave + 1)
	}
	return n, true
}

func describeOperation(w *records.Workflow) string {
	op := w.Spec.Operation
	if w.RollbackOf != "" {
		return fmt.Sprintf("%s of %s undone (each cluster back to what it had)", op.Kind, w.RollbackOf)
	}
	switch op.Kind {
	case "upgrade":
		return "upgrade to " + op.Version
	case "config":
		return fmt.Sprintf("config change of %d keys", len(op.Config))
	}
	return string(op.Kind)
}

// FromOperation turns an operation event into a notification.
func FromOperation(ev records.OperationEvent) (records.Notification, bool) {
	sev := records.SeverityInfo
	var msg string
	switch ev.Status {
	case records.OperationStarted:
		msg = fmt.Sprintf("cluster %s: operation started (attempt %d)", ev.ClusterID, ev.Attempt)
	case records.OperationSucceeded:
		msg = fmt.Sprintf("cluster %s: operation succeeded", ev.ClusterID)
		if ev.PreviousVersion != ev.Version && ev.Version != "" {
			msg += fmt.Sprintf(", version %s → %s", ev.PreviousVersion, ev.Version)
		}
	case records.OperationFailed:
		sev = records.SeverityError
		msg = fmt.Sprintf("cluster %s: operation failed: %s", ev.ClusterID, ev.Reason)
	default:
		return records.Notification{}, false
	}
	n := notification(ev.Envelope, "operation."+string(ev.Status), sev)
	n.WorkflowID = ev.WorkflowID
	n.ClusterID = ev.ClusterID
	n.Message = msg + " [workflow " + ev.WorkflowID + "]"
	n.Fields["workflow"] = ev.WorkflowID
	n.Fields["cluster"] = ev.ClusterID
	n.Fields["status"] = string(ev.Status)
	n.Fields["attempt"] = strconv.Itoa(ev.Attempt)
	n.Fields["command"] = ev.CommandID
	if ev.Reason != "" {
		n.Fields["reason"] = ev.Reason
	}
	if ev.Version != "" {
		n.Fields["version"] = ev.Version
	}
	if ev.PreviousVersion != "" {
		n.Fields["previous_version"] = ev.PreviousVersion
	}
	return n, true
}

// FromHealth turns a change of a cluster's health into a notification;
// heartbeats, unchanged statuses and a first healthy signal say nothing.
func FromHealth(h records.Health) (records.Notification, bool) {
	if h.Heartbeat || h.Status == h.PreviousStatus {
		return records.Notification{}, false
	}
	if h.PreviousStatus == records.HealthUnknown && h.Status == records.HealthHealthy {
		return records.Notification{}, false // a cluster first seen healthy is no news
	}
	sev := records.SeverityInfo
	switch h.Status {
	case records.HealthDegraded:
		sev = records.SeverityWarning
	case records.HealthUnhealthy:
		sev = records.SeverityError
	}
	msg := fmt.Sprintf("cluster %s is %s (was %s)", h.ClusterID, h.Status, h.PreviousStatus)
	if len(h.Reasons) > 0 {
		msg += ": " + strings.Join(h.Reasons, "; ")
	}
	n := notification(h.Envelope, "health.changed", sev)
	n.ClusterID = h.ClusterID
	n.Message = msg
	n.Fields["cluster"] = h.ClusterID
	n.Fields["status"] = string(h.Status)
	n.Fields["previous_status"] = string(h.PreviousStatus)
	if h.ObservedVersion != "" {
		n.Fields["version"] = h.ObservedVersion
	}
	if len(h.Reasons) > 0 {
		n.Fields["reasons"] = strings.Join(h.Reasons, "; ")
	}
	return n, true
}

// FromDrift turns a change of a cluster's drift into a notification:
// cluster.drifted (warning) when the signal's drift is new or different,
// with what differs, cluster.drift-resolved (info) when it is gone. The
// monitor marks the change (DriftChanged): the notifier keeps no state.
func FromDrift(h records.Health) (records.Notification, bool) {
	if !h.DriftChanged {
		return records.Notification{}, false
	}
	if len(h.Drift) == 0 {
		n := notification(h.Envelope, "cluster.drift-resolved", records.SeverityInfo)
		n.ClusterID = h.ClusterID
		n.Message = fmt.Sprintf("cluster %s is back to its desired state", h.ClusterID)
		n.Fields["cluster"] = h.ClusterID
		return n, true
	}
	lines := make([]string, len(h.Drift))
	for i, d := range h.Drift {
		lines[i] = d.String()
	}
	n := notification(h.Envelope, "cluster.drifted", records.SeverityWarning)
	n.ClusterID = h.ClusterID
	n.Message = fmt.Sprintf("cluster %s drifted from its desired state: %s", h.ClusterID, strings.Join(lines, "; "))
	n.Fields["cluster"] = h.ClusterID
	n.Fields["drift"] = strings.Join(lines, "; ")
	for _, d := range h.Drift {
		n.Fields["observed."+d.Key] = d.Observed
		n.Fields["desired."+d.Key] = d.Desired
	}
	return n, true
}

// Undecodable reports a record of another service that could not be
// decoded, naming where it is, so that nothing is dropped silently.
func Undecodable(topic string, partition int32, offset int64, key string, at time.Time, err error) records.Notification {
	where := fmt.Sprintf("%s/%d@%d", topic, partition, offset)
	n := notification(records.Envelope{ID: where, Time: at.UTC()}, "record.undecodable", records.SeverityError)
	n.Envelope.CausationID = ""
	n.Message = fmt.Sprintf("record %s (key %q) cannot be decoded and was skipped: %v", where, key, err)
	n.Fields["record"] = where
	n.Fields["key"] = key
	n.Fields["reason"] = err.Error()
	return n
}

// FromDeadLetter announces a record a service set aside (package
// deadletter): where it was, who set it aside, and why.
func FromDeadLetter(d records.DeadLetter) records.Notification {
	where := fmt.Sprintf("%s/%d@%d", d.SourceTopic, d.SourcePartition, d.SourceOffset)
	key := string(d.Key)
	if d.NullKey {
		key = "(null)"
	}
	n := notification(d.Envelope, "record.set-aside", records.SeverityError)
	n.Message = fmt.Sprintf("record %s (key %q) was set aside by the %s: %s", where, key, d.Service, d.Reason)
	n.Fields["record"] = where
	n.Fields["key"] = key
	n.Fields["service"] = d.Service
	n.Fields["reason"] = d.Reason
	return n
}

// DeliveryFailed announces that notification n could not be delivered to
// the sink destination: status is the last HTTP status (0: none, the
// request itself failed) and reason what went wrong. It keeps n's workflow
// and cluster, so the rules that route n's notifications route it too. Its
// ID is derived from n's and the destination's, so announcing the same
// failure again after a restart repeats the ID, which readers drop.
func DeliveryFailed(n records.Notification, destination string, status int, reason string, at time.Time) records.Notification {
	f := notification(records.Envelope{ID: "sink/" + destination + "/" + n.Envelope.ID, Time: at.UTC()}, "sink.delivery-failed", records.SeverityError)
	f.Envelope.CausationID = n.Envelope.ID
	f.WorkflowID, f.ClusterID = n.WorkflowID, n.ClusterID
	f.Message = fmt.Sprintf("notification %s (%s) could not be delivered to sink %s: %s", n.Envelope.ID, TypePrefix+n.Kind, destination, reason)
	f.Fields["destination"] = destination
	f.Fields["notification"] = n.Envelope.ID
	f.Fields["type"] = TypePrefix + n.Kind
	f.Fields["status"] = strconv.Itoa(status)
	f.Fields["reason"] = reason
	if n.WorkflowID != "" {
		f.Fields["workflow"] = n.WorkflowID
	}
	if n.ClusterID != "" {
		f.Fields["cluster"] = n.ClusterID
	}
	return f
}
