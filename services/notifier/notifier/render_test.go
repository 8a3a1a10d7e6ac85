package notifier

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

var at = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func workflowRow(event string, state records.WorkflowState, reason string) records.WorkflowRecord {
	return records.WorkflowRecord{
		Envelope: records.Envelope{ID: "row-" + event, Time: at, Principal: "planner"},
		Workflow: &records.Workflow{
			ID: "wf-1", Spec: rollout.Spec{Name: "kafka-3.9.1", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}},
			State: state, Reason: reason, Event: event, Targets: 12,
			Phases: []records.PhasePlan{{Name: "internal", WaveSizes: []int{2, 2}}, {Name: "rest", WaveSizes: []int{8}}},
			Wave:   1,
		},
	}
}

func TestFromWorkflow(t *testing.T) {
	cases := []struct {
		event    string
		state    records.WorkflowState
		reason   string
		severity records.Severity
		message  string
	}{
		{"submitted", records.WorkflowRunning, "", records.SeverityInfo, `rollout "kafka-3.9.1" (wf-1) accepted: upgrade to 3.9.1 on 12 clusters in 2 phases (internal, rest)`},
		{"wave-started", records.WorkflowRunning, "", records.SeverityInfo, `rollout "kafka-3.9.1" (wf-1): phase "internal" wave 2/2 started (2 clusters)`},
		{"paused", records.WorkflowPaused, "2 of 12 clusters failed", records.SeverityWarning, `rollout "kafka-3.9.1" (wf-1) paused: 2 of 12 clusters failed`},
		{"rejected", records.WorkflowRejected, "unknown clusters: x", records.SeverityError, `rollout "kafka-3.9.1" (wf-1) rejected: unknown clusters: x`},
		{"succeeded", records.WorkflowSucceeded, "", records.SeverityInfo, `rollout "kafka-3.9.1" (wf-1) succeeded on all 12 clusters`},
		{"failed", records.WorkflowFailed, "1 of 12 clusters failed", records.SeverityError, `rollout "kafka-3.9.1" (wf-1) failed: 1 of 12 clusters failed`},
		{"aborted", records.WorkflowFailed, "aborted: 2 of 12 clusters failed", records.SeverityError, `rollout "kafka-3.9.1" (wf-1) aborted: 2 of 12 clusters failed; operations in flight finish, nothing is undone`},
		{"rolling-back", records.WorkflowRollingBack, "rollback requested by carol", records.SeverityWarning, `rollout "kafka-3.9.1" (wf-1) is rolling back: rollback requested by carol; follow it with: flotilla rollout status wf-1/rollback`},
		{"rolled-back", records.WorkflowRolledBack, "rollback requested by carol; done: 3 clusters rolled back", records.SeverityWarning, `rollout "kafka-3.9.1" (wf-1) rolled back: rollback requested by carol; done: 3 clusters rolled back`},
		{"rollback-failed", records.WorkflowFailed, "the rollback paused", records.SeverityError, `rollout "kafka-3.9.1" (wf-1) could not be rolled back: the rollback paused`},
	}
	for _, tc := range cases {
		n, ok := FromWorkflow(workflowRow(tc.event, tc.state, tc.reason))
		if !ok {
			t.Fatalf("%s: no notification", tc.event)
		}
		if n.Message != tc.message || n.Severity != tc.severity || n.Kind != "workflow."+tc.event || n.WorkflowID != "wf-1" {
			t.Errorf("%s: got %q (%s, %s), want %q (%s)", tc.event, n.Message, n.Severity, n.Kind, tc.message, tc.severity)
		}
		if n.Envelope.CausationID != "row-"+tc.event || n.Envelope.Principal != Principal || n.Fields["state"] != string(tc.state) {
			t.Errorf("%s: envelope %+v fields %v", tc.event, n.Envelope, n.Fields)
		}
	}
	if _, ok := FromWorkflow(workflowRow("progress", records.WorkflowRunning, "")); ok {
		t.Error("a progress row made a notification")
	}
	if _, ok := FromWorkflow(records.WorkflowRecord{Target: &records.Target{WorkflowID: "wf-1"}}); ok {
		t.Error("a target row made a notification")
	}
}

func TestNotificationIDIsStablePerSource(t *testing.T) {
	a, _ := FromWorkflow(workflowRow("paused", records.WorkflowPaused, "x"))
	b, _ := FromWorkflow(workflowRow("paused", records.WorkflowPaused, "x"))
	c, _ := FromWorkflow(workflowRow("succeeded", records.WorkflowSucceeded, ""))
	if a.Envelope.ID != b.Envelope.ID || a.Envelope.ID == c.Envelope.ID {
		t.Fatalf("IDs %s %s %s: want equal for one source record, different for another", a.Envelope.ID, b.Envelope.ID, c.Envelope.ID)
	}
}

func TestFromOperation(t *testing.T) {
	ev := records.OperationEvent{Envelope: records.Envelope{ID: "op-1", Time: at}, WorkflowID: "wf-1", ClusterID: "c-1", Attempt: 1,
		Status: records.OperationFailed, Reason: "simulated failure applying upgrade to 3.9.1"}
	n, ok := FromOperation(ev)
	if !ok || n.Severity != records.SeverityError || !strings.Contains(n.Message, "cluster c-1: operation failed: simulated failure") || n.ClusterID != "c-1" {
		t.Fatalf("got %+v", n)
	}
	ev.Status, ev.PreviousVersion, ev.Version = records.OperationSucceeded, "3.8.0", "3.9.1"
	if n, _ := FromOperation(ev); !strings.Contains(n.Message, "version 3.8.0 → 3.9.1") {
		t.Fatalf("got %q", n.Message)
	}
}

func TestFromHealth(t *testing.T) {
	h := records.Health{Envelope: records.Envelope{ID: "h-1", Time: at}, ClusterID: "c-1", Status: records.HealthUnhealthy,
		PreviousStatus: records.HealthHealthy, Reasons: []string{"runs bad version 3.9.2"}}
	n, ok := FromHealth(h)
	if !ok || n.Severity != records.SeverityError || n.Message != "cluster c-1 is unhealthy (was healthy): runs bad version 3.9.2" {
		t.Fatalf("got %+v", n)
	}
	for _, quiet := range []records.Health{
		{ClusterID: "c-1", Status: records.HealthHealthy, PreviousStatus: records.HealthHealthy},
		{ClusterID: "c-1", Status: records.HealthUnhealthy, PreviousStatus: records.HealthHealthy, Heartbeat: true},
		{ClusterID: "c-1", Status: records.HealthHealthy, PreviousStatus: records.HealthUnknown},
	} {
		if n, ok := FromHealth(quiet); ok {
			t.Errorf("%+v made notification %q", quiet, n.Message)
		}
	}
}

func TestFromDrift(t *testing.T) {
	h := records.Health{Envelope: records.Envelope{ID: "h-2", Time: at}, ClusterID: "c-1", Status: records.HealthHealthy,
		PreviousStatus: records.HealthHealthy, DriftChanged: true,
		Drift: []records.DriftItem{{Key: "version", Observed: "3.8.0", Desired: "3.9.1"}, {Key: "log.retention.ms", Observed: "100", Desired: "200"}}}
	n, ok := FromDrift(h)
	if !ok || n.Kind != "cluster.drifted" || n.Severity != records.SeverityWarning || n.ClusterID != "c-1" ||
		n.Message != "cluster c-1 drifted from its desired state: version 3.8.0, desired 3.9.1; config log.retention.ms=100, desired 200" ||
		n.Fields["desired.version"] != "3.9.1" || n.Fields["observed.log.retention.ms"] != "100" {
		t.Fatalf("drifted: %+v", n)
	}
	if _, ok := FromHealth(h); ok {
		t.Error("a drift with the status unchanged made a health.changed notification too")
	}
	h.Drift = nil
	n, ok = FromDrift(h)
	if !ok || n.Kind != "cluster.drift-resolved" || n.Severity != records.SeverityInfo || n.Message != "cluster c-1 is back to its desired state" {
		t.Fatalf("resolved: %+v", n)
	}
	// Drift unchanged (a heartbeat, another change of health) says nothing.
	for _, quiet := range []records.Health{
		{ClusterID: "c-1", Drift: []records.DriftItem{{Key: "version", Observed: "3.8.0", Desired: "3.9.1"}}},
		{ClusterID: "c-1", Status: records.HealthUnhealthy, PreviousStatus: records.HealthHealthy},
	} {
		if n, ok := FromDrift(quiet); ok {
			t.Errorf("%+v made notification %q", quiet, n.Message)
		}
	}
}

// A signal whose health and drift both changed makes both notifications,
// under IDs of their own.
func TestAHealthRecordMakesBothNotifications(t *testing.T) {
	names := topics.NewNames("fleet")
	h := records.Health{Envelope: records.Envelope{ID: "h-3", Time: at, Principal: "monitor"}, ClusterID: "c-1", Status: records.HealthUnhealthy,
		PreviousStatus: records.HealthHealthy, DriftChanged: true, Drift: []records.DriftItem{{Key: "version", Observed: "3.9.2", Desired: "3.9.1"}}}
	v, err := records.Encode(h)
	if err != nil {
		t.Fatal(err)
	}
	notes, err := fromRecord(names, &kgo.Record{Topic: names.Health, Key: []byte("c-1"), Value: v})
	if err != nil || len(notes) != 2 || notes[0].Kind != "health.changed" || notes[1].Kind != "cluster.drifted" || notes[0].Envelope.ID == notes[1].Envelope.ID {
		t.Fatalf("notifications %+v, %v", notes, err)
	}
}
