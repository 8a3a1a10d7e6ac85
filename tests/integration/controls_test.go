package integration

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// This file runs each safety control end to end, through the four
// services: rollback (asked for, and on reaching a threshold), abort,
// health gates, the conflict policy, maintenance windows and timeouts.
// Pause, resume, cancel, approve and retry are run through the CLI in
// cmd/flotilla; automatic resume and retries with backoff in rollout_test.go.

// control produces a control request, as the CLI does, and returns its ID.
func control(f *fleettest.Fleet, workflowID string, action records.ControlAction, reason string) string {
	return f.Control("carol", records.ControlWorkflow{WorkflowID: workflowID, Action: action, Reason: reason})
}

// versionsNow returns each simulated cluster's version and applies.
func versionsNow(f *fleettest.Fleet) map[string]string {
	out := map[string]string{}
	for _, c := range f.Clusters {
		st, _ := f.Sim.Cluster(c.ID)
		out[c.ID] = st.Version
		if out[c.ID] == "" {
			out[c.ID] = c.Version // never touched
		}
	}
	return out
}

func TestRollbackRequestUndoesTheChangedClusters(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 40})
	before := versionsNow(f)
	spec := rollout.Spec{
		Name: "kafka-3.9.1", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Selector: "kind=kafka",
		Phases: []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 4}, Bake: 10 * time.Minute}},
	}
	id := f.Submit(spec)
	// Let the first wave finish and bake a little: the next waits.
	f.Await(id, time.Second, time.Minute, "the first wave baking", func(w *decide.Workflow) bool { return !w.BakeUntil.IsZero() })
	control(f, id, records.ActionRollback, "p99 latency doubled")
	w := f.Await(id, time.Second, 2*time.Minute, "the rollback finishing", finished)
	if w.State != records.WorkflowRolledBack || !strings.Contains(w.Reason, "rollback requested by carol: p99 latency doubled") {
		t.Fatalf("state %s (%s), want rolled-back as carol asked", w.State, w.Reason)
	}
	r, ok := f.Workflow(records.RollbackID(id))
	if !ok || r.State != records.WorkflowSucceeded || r.RollbackOf != id {
		t.Fatalf("rollback workflow: %v %+v", ok, r)
	}
	changed := 0
	for cid, tg := range w.Targets {
		st, _ := f.Sim.Cluster(cid)
		switch {
		case tg.State == records.TargetSucceeded:
			changed++
			if _, rolled := r.Targets[cid]; !rolled || st.Version != before[cid] || st.Applies != 2 {
				t.Errorf("%s: version %s after %d applies; want it back at %s after its upgrade and its rollback", cid, st.Version, st.Applies, before[cid])
			}
		case st.Applies != 0:
			t.Errorf("%s was never upgraded but was changed %d times", cid, st.Applies)
		}
	}
	if changed != 4 || len(r.Targets) != 4 {
		t.Fatalf("%d clusters upgraded, %d rolled back; want the first wave of 4, both", changed, len(r.Targets))
	}
	f.Eventually(0, 10*time.Second, func() bool { return hasNotification(f.Notifications(), id, "workflow.rolled-back") })
	for _, kind := range []string{"workflow.rolling-back", "workflow.rolled-back"} {
		if !hasNotification(f.Notifications(), id, kind) {
			t.Errorf("no %s notification", kind)
		}
	}
}

// TestThresholdRollsBackABadVersion has the failure threshold roll a rollout
// back by itself: the canary clusters it broke are set back to their
// previous version, newest first, and turn healthy again.
func TestThresholdRollsBackABadVersion(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 40, BadVersions: []string{"3.9.2"}})
	before := versionsNow(f)
	spec := rollout.Spec{
		Name: "bad", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.2"}, Selector: "kind=kafka",
		Phases: []rollout.Phase{
			{Name: "canary", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 3}, MaxInFlight: 1, Bake: 5 * time.Minute,
				FailureThreshold: rollout.Threshold{Count: 2, Action: rollout.ThresholdRollback}},
		},
		FailureThreshold: rollout.Threshold{Count: 5},
	}
	id := f.Submit(spec)
	w := f.Await(id, time.Second, 2*time.Minute, "the rollback finishing", finished)
	if w.State != records.WorkflowRolledBack || !strings.Contains(w.Reason, "phase canary") {
		t.Fatalf("state %s (%s), want rolled back by the canary's threshold", w.State, w.Reason)
	}
	r, _ := f.Workflow(records.RollbackID(id))
	upgraded := 0
	for cid, tg := range w.Targets {
		st, _ := f.Sim.Cluster(cid)
		if tg.State == records.TargetPending {
			if st.Applies != 0 {
				t.Errorf("%s was not in the rollout's way yet, but was changed", cid)
			}
			continue
		}
		upgraded++
		if _, rolled := r.Targets[cid]; !rolled || st.Version != before[cid] {
			t.Errorf("%s runs %s after the rollback, want %s", cid, st.Version, before[cid])
		}
	}
	if upgraded < 2 || upgraded > 3 {
		t.Fatalf("%d clusters upgraded before the threshold rolled back, want 2 or 3", upgraded)
	}
	// Newest first: the rollback started the cluster upgraded last first.
	var upgradedOrder, rolledOrder []string
	for _, ev := range f.Operations() {
		if ev.Status != records.OperationSucceeded {
			continue
		}
		switch ev.WorkflowID {
		case id:
			upgradedOrder = append(upgradedOrder, ev.ClusterID)
		case r.ID:
			rolledOrder = append(rolledOrder, ev.ClusterID)
		}
	}
	slices.Reverse(upgradedOrder)
	if !slices.Equal(rolledOrder, upgradedOrder) {
		t.Fatalf("rolled back %v, want newest first: %v", rolledOrder, upgradedOrder)
	}
	healthy := func() bool {
		hs := f.Healths()
		for cid := range r.Targets {
			if hs[cid].Status != records.HealthHealthy {
				return false
			}
		}
		return true
	}
	if !f.Eventually(time.Second, time.Minute, healthy) {
		t.Fatalf("the rolled back clusters are not healthy again: %v", f.HealthOf(f.Clusters))
	}
}

func TestThresholdAbortsARollout(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 40, BadVersions: []string{"3.9.2"}})
	spec := rollout.Spec{
		Name: "bad", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.2"}, Selector: "kind=kafka",
		Phases:           []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 3}, Bake: time.Minute}},
		FailureThreshold: rollout.Threshold{Count: 2, Action: rollout.ThresholdAbort},
	}
	id := f.Submit(spec)
	w := f.Await(id, time.Second, time.Minute, "the abort", finished)
	if w.State != records.WorkflowFailed || !strings.HasPrefix(w.Reason, "aborted: ") {
		t.Fatalf("state %s (%s), want failed, aborted", w.State, w.Reason)
	}
	f.PassTime(time.Hour)
	if got := f.Sim.TotalApplies(); got != 3 {
		t.Fatalf("%d clusters changed, want only the first wave of 3, left as they are", got)
	}
	f.Eventually(0, 10*time.Second, func() bool { return hasNotification(f.Notifications(), id, "workflow.aborted") })
	if !hasNotification(f.Notifications(), id, "workflow.aborted") {
		t.Fatal("no workflow.aborted notification")
	}
}

// TestUnhealthyTargetsAreHeldOrSkipped registers a cluster that is
// unhealthy before the rollout reaches it: a rollout that skips such
// clusters leaves it alone and says so; one that holds them waits for it.
func TestUnhealthyTargetsAreHeldOrSkipped(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 10, BadVersions: []string{"3.7.0"}})
	sick := f.Clusters[0]
	sick.ID, sick.Version, sick.Address = "sick-1", "3.7.0", "sim://sick-1"
	sick.Labels = map[string]string{"kind": "kafka", "group": "gate"}
	well := f.Clusters[0]
	well.ID, well.Address = "well-1", "sim://well-1"
	well.Labels = map[string]string{"kind": "kafka", "group": "gate"}
	f.Register(sick, well)
	f.Clusters = append(f.Clusters, sick, well)
	if !f.Eventually(time.Second, time.Minute, func() bool { h, ok := f.Health("sick-1"); return ok && h.Status == records.HealthUnhealthy }) {
		t.Fatal("the monitor never saw sick-1 unhealthy")
	}
	spec := rollout.Spec{Name: "skip", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Selector: "group=gate",
		UnhealthyTargets: rollout.SkipUnhealthy}
	id := f.Submit(spec)
	w := f.Await(id, time.Second, time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded || w.Targets["sick-1"].State != records.TargetSkipped || !strings.Contains(w.Reason, "1 of 2 clusters skipped") {
		t.Fatalf("state %s (%s), sick-1 %s; want succeeded with sick-1 skipped", w.State, w.Reason, w.Targets["sick-1"].State)
	}
	if n := f.Sim.Applies("sick-1"); n != 0 {
		t.Fatalf("sick-1 was changed %d times, want left alone", n)
	}

	spec.Name, spec.UnhealthyTargets, spec.Operation.Version = "hold", rollout.HoldUnhealthy, "3.9.3"
	id = f.Submit(spec)
	w = f.Await(id, time.Second, time.Minute, "well-1 done, sick-1 held", func(w *decide.Workflow) bool {
		return w.Targets["well-1"].State == records.TargetSucceeded && strings.Contains(w.Waiting, "1 clusters are unhealthy and wait to recover")
	})
	if n := f.Sim.Applies("sick-1"); n != 0 {
		t.Fatalf("sick-1 was changed %d times while unhealthy", n)
	}
	f.Sim.SetBadVersions() // sick-1 recovers
	w = f.Await(id, time.Second, time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded || f.Sim.Applies("sick-1") != 1 {
		t.Fatalf("state %s (%s), sick-1 changed %d times; want succeeded once sick-1 recovered", w.State, w.Reason, f.Sim.Applies("sick-1"))
	}
}

// TestConflictingRolloutsWaitOrAreRejected submits a second rollout over
// clusters a first one is changing: with onConflict reject it is refused;
// with wait it runs, never touching a cluster while the first does.
func TestConflictingRolloutsWaitOrAreRejected(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 30, OpDuration: 10 * time.Second})
	first := f.Submit(rollout.Spec{Name: "upgrade", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Selector: "kind=kafka",
		Phases: []rollout.Phase{{Name: "all", MaxInFlight: 2}}})
	f.Await(first, 0, time.Minute, "the first rollout starting", func(w *decide.Workflow) bool { return w.Progress().Running > 0 })

	restart := rollout.Spec{Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Selector: "kind=kafka", OnConflict: rollout.ConflictReject}
	rejected := f.Submit(restart)
	w := f.Await(rejected, 0, time.Minute, "the rejection", finished)
	if w.State != records.WorkflowRejected || !strings.Contains(w.Reason, "onConflict is reject") || !strings.Contains(w.Reason, "(in "+first+")") {
		t.Fatalf("state %s (%s), want rejected naming the rollout in the way", w.State, w.Reason)
	}

	restart.OnConflict = rollout.ConflictWait
	waiting := f.Submit(restart)
	for _, id := range []string{first, waiting} {
		if w := f.Await(id, time.Second, 2*time.Minute, "both rollouts finishing", finished); w.State != records.WorkflowSucceeded {
			t.Fatalf("%s: %s (%s), want succeeded", id, w.State, w.Reason)
		}
	}
	checkOneOperationAtATime(t, f, 2)
}

// TestMaintenanceWindowHoldsTheRollout starts a rollout at 12:00 whose
// clusters may change only 13:00-14:00 UTC: nothing happens before then.
func TestMaintenanceWindowHoldsTheRollout(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 20})
	opens := time.Date(2026, 11, 22, 13, 0, 0, 0, time.UTC)
	id := f.Submit(rollout.Spec{Name: "night", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Selector: "kind=kafka",
		Windows: []rollout.WindowRule{{Allow: []string{"13:00-14:00 UTC"}}}})
	w := f.Await(id, 0, time.Minute, "the wait for the window", func(w *decide.Workflow) bool { return w.WaitUntil.Equal(opens) })
	if !strings.Contains(w.Waiting, "wait for their maintenance window, which opens at 2026-11-22T13:00:00Z") {
		t.Fatalf("waiting %q", w.Waiting)
	}
	f.PassTime(30 * time.Minute)
	if got := f.Sim.TotalApplies(); got != 0 {
		t.Fatalf("%d clusters changed before their window opened", got)
	}
	w = f.Await(id, 30*time.Second, 2*time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s), want succeeded", w.State, w.Reason)
	}
	for cid, tg := range w.Targets {
		if tg.StartedAt.Before(opens) || !tg.StartedAt.Before(opens.Add(time.Hour)) {
			t.Errorf("%s started at %v, outside 13:00-14:00", cid, tg.StartedAt)
		}
	}
}

// TestOperationTimeout gives operations a rollout timeout far shorter than
// the clusters take: each attempt is cut off, retried, and the rollout
// pauses with the timeout as the reason.
func TestOperationTimeout(t *testing.T) {
	t.Parallel()
	// Simulated operations take an hour of fake time, which this test
	// never lets pass: only the timeout (real time) can end them.
	f := fleettest.Start(t, fleettest.Options{Clusters: 10, OpDuration: time.Hour})
	id := f.Submit(rollout.Spec{Name: "slow", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Clusters: []string{f.Clusters[0].ID},
		OperationTimeout: 300 * time.Millisecond, Retries: 1})
	w := f.Await(id, 0, time.Minute, "the pause", func(w *decide.Workflow) bool { return w.State == records.WorkflowPaused })
	tg := w.Targets[f.Clusters[0].ID]
	if tg.Attempt != 2 || !strings.Contains(tg.Reason, "attempt 2 of 2 failed") || !strings.Contains(tg.Reason, "deadline") {
		t.Fatalf("target after the timeouts: attempt %d, %q", tg.Attempt, tg.Reason)
	}
	if st, _ := f.Sim.Cluster(f.Clusters[0].ID); st.Version == "3.9.1" {
		t.Fatal("the operation cut off by its timeout changed the cluster")
	}
}

// TestApprovalGateExpires leaves a gate unapproved past its timeout: the
// rollout pauses, saying why; approved and resumed later, it goes on.
func TestApprovalGateExpires(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 20})
	id := f.Submit(rollout.Spec{Name: "gated", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Selector: "kind=kafka",
		Phases: []rollout.Phase{{Name: "all", Approve: rollout.ApproveBefore, ApprovalTimeout: time.Hour}}})
	f.Await(id, 0, time.Minute, "the gate", func(w *decide.Workflow) bool { return w.Gate == "before:all" })
	w := f.Await(id, time.Minute, time.Minute, "the gate expiring", func(w *decide.Workflow) bool { return w.State == records.WorkflowPaused })
	if w.PausedBy != "gate" || !strings.Contains(w.Reason, "approval gate before:all was not approved in time") || f.Sim.TotalApplies() != 0 {
		t.Fatalf("paused by %q (%s), %d clusters changed; want paused by the gate, nothing changed", w.PausedBy, w.Reason, f.Sim.TotalApplies())
	}
	control(f, id, records.ActionApprove, "CHG-7")
	control(f, id, records.ActionResume, "")
	if w := f.Await(id, time.Second, time.Minute, "the rollout finishing", finished); w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s), want succeeded once approved and resumed", w.State, w.Reason)
	}
}

// TestBlackoutHoldsTheClustersItCovers: a blackout (an absolute deny
// window) over the GCP clusters holds them until it ends, while the others
// go on.
func TestBlackoutHoldsTheClustersItCovers(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 40})
	until := time.Date(2026, 11, 22, 18, 0, 0, 0, time.UTC)
	spec := rollout.Spec{Name: "freeze", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Selector: "kind=kafka",
		Windows: []rollout.WindowRule{{Selector: "cloud=gcp", Deny: []string{"2026-11-22T00:00:00Z/" + until.Format(time.RFC3339)}}}}
	id := f.Submit(spec)
	frozen := targetsOf(t, f, "cloud=gcp,kind=kafka")
	w := f.Await(id, time.Second, time.Minute, "the others done, the frozen waiting", func(w *decide.Workflow) bool {
		p := w.Progress()
		return p.Succeeded == len(w.Targets)-len(frozen) && w.WaitUntil.Equal(until)
	})
	for cid := range frozen {
		if n := f.Sim.Applies(cid); n != 0 || w.Targets[cid].State != records.TargetPending {
			t.Fatalf("%s changed %d times during its blackout (%s)", cid, n, w.Targets[cid].State)
		}
	}
	w = f.Await(id, 10*time.Minute, 2*time.Minute, "the rollout finishing after the blackout", finished)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s)", w.State, w.Reason)
	}
	for cid := range frozen {
		if started := w.Targets[cid].StartedAt; started.Before(until) {
			t.Errorf("%s started at %v, before its blackout ended at %v", cid, started, until)
		}
	}
}

// TestOneOperationPerClusterAcrossPlanners runs two planners, each owning
// some of the workflows' partitions, and three rollouts over the same
// clusters, one on each partition: the planners do not know each other's
// workflows, but the executors' claims on the clusters keep every
// cluster in one operation at a time.
func TestOneOperationPerClusterAcrossPlanners(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 10, OpDuration: 10 * time.Second})
	f.StartService("planner#2")
	targets := []string{f.Clusters[0].ID, f.Clusters[1].ID, f.Clusters[2].ID, f.Clusters[3].ID}
	names := f.Backbone.Names()
	partitioner := topics.Partitioner().ForTopic(names.Requests)
	var ids []string
	for taken := map[int]bool{}; len(ids) < 3; {
		id := uuid.NewString()
		if p := partitioner.Partition(&kgo.Record{Key: []byte(id)}, 3); !taken[p] {
			taken[p] = true
			ids = append(ids, id)
		}
	}
	for i, id := range ids {
		f.Produce(f.Record(names.Requests, id, records.Request{
			Envelope: records.Envelope{ID: id, Time: f.Clock.Now(), Principal: "alice"},
			Submit: &records.SubmitRollout{Spec: rollout.Spec{Name: fmt.Sprintf("restart-%d", i), Operation: rollout.Operation{Kind: rollout.Restart},
				Clusters: targets}},
		}))
	}
	for _, id := range ids {
		if w := f.Await(id, time.Second, 2*time.Minute, "every rollout finishing", finished); w.State != records.WorkflowSucceeded {
			t.Fatalf("%s: %s (%s)", id, w.State, w.Reason)
		}
	}
	checkOneOperationAtATime(t, f, 3, targets...)
}

// checkOneOperationAtATime checks, from the operations topic, that no
// cluster ran two operations at once (from "started" to its outcome) and
// that each of clusters (every cluster operated on, if none is named) ran
// want operations.
func checkOneOperationAtATime(t *testing.T, f *fleettest.Fleet, want int, clusters ...string) {
	t.Helper()
	type span struct{ from, to time.Time }
	spans := map[string][]span{}
	started := map[string]time.Time{}
	for _, ev := range f.Operations() {
		switch ev.Status {
		case records.OperationStarted:
			started[ev.CommandID] = ev.Envelope.Time
		case records.OperationSucceeded, records.OperationFailed:
			spans[ev.ClusterID] = append(spans[ev.ClusterID], span{started[ev.CommandID], ev.Envelope.Time})
		}
	}
	if len(clusters) == 0 {
		clusters = slices.Sorted(maps.Keys(spans))
	}
	for _, cid := range clusters {
		ss := spans[cid]
		if len(ss) != want {
			t.Errorf("%s ran %d operations, want %d", cid, len(ss), want)
		}
		for i := range ss {
			for j := i + 1; j < len(ss); j++ {
				if ss[i].from.Before(ss[j].to) && ss[j].from.Before(ss[i].to) {
					t.Errorf("%s ran two operations at once: %v-%v and %v-%v", cid, ss[i].from, ss[i].to, ss[j].from, ss[j].to)
				}
			}
		}
	}
}

// TestMonitorProbesAClusterAsItsOperationEnds: when an operation ends, the
// monitor probes its cluster at once and says what it sees, even if
// nothing changed, so that the next wave does not wait for a heartbeat.
func TestMonitorProbesAClusterAsItsOperationEnds(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 5})
	id := f.Clusters[2].ID
	if !f.Eventually(0, 30*time.Second, func() bool { _, ok := f.Health(id); return ok }) {
		t.Fatalf("no health for %s", id)
	}
	f.Clock.Advance(time.Second) // less than the probe interval and the heartbeat
	ended := f.Clock.Now()
	f.Produce(f.Record(f.Backbone.Names().Operations, topics.TargetKey("wf-x", id), records.OperationEvent{
		Envelope:  records.Envelope{ID: uuid.NewString(), Time: ended, Principal: "executor"},
		CommandID: "cmd-x", WorkflowID: "wf-x", ClusterID: id, Attempt: 1, Status: records.OperationSucceeded,
	}))
	if !f.Eventually(0, 30*time.Second, func() bool { h, ok := f.Health(id); return ok && !h.ObservedAt.Before(ended) }) {
		h, _ := f.Health(id)
		t.Fatalf("%s last seen at %v, not since its operation ended at %v", id, h.ObservedAt, ended)
	}
}

// TestRollbackLeavesALaterChangeAlone rolls back a finished upgrade after a
// later rollout upgraded one of its clusters again: that cluster is left
// as the later rollout made it, the rollback pausing on it for a person;
// the others go back.
func TestRollbackLeavesALaterChangeAlone(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 12})
	first := f.Submit(rollout.Spec{Name: "to-3.9.1", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Selector: "kind=kafka"})
	w := f.Await(first, time.Second, time.Minute, "the first upgrade finishing", finished)
	var later string
	for id := range w.Targets {
		later = id
		break
	}
	second := f.Submit(rollout.Spec{Name: "to-3.9.3", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.3"}, Clusters: []string{later}})
	f.Await(second, time.Second, time.Minute, "the later upgrade finishing", finished)

	control(f, first, records.ActionRollback, "")
	r := f.Await(records.RollbackID(first), time.Second, time.Minute, "the rollback stopping", func(w *decide.Workflow) bool {
		return w.State == records.WorkflowPaused && w.Progress().Running == 0
	})
	if st, _ := f.Sim.Cluster(later); st.Version != "3.9.3" {
		t.Fatalf("%s runs %s after the rollback, want 3.9.3 as the later rollout left it", later, st.Version)
	}
	if tg := r.Targets[later]; tg.State != records.TargetFailed || !strings.Contains(tg.Reason, "runs 3.9.3, not 3.9.1 as expected") {
		t.Fatalf("rollback of %s: %s (%q), want failed, saying it changed since", later, tg.State, tg.Reason)
	}
	for id, tg := range r.Targets {
		if st, _ := f.Sim.Cluster(id); id != later && (tg.State != records.TargetSucceeded || st.Version != "3.8.0") {
			t.Errorf("%s: %s, runs %s; want rolled back to 3.8.0", id, tg.State, st.Version)
		}
	}
}
