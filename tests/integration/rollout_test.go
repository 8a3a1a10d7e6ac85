// Package integration runs whole rollouts through the four services on a
// broker: the embedded one, or a real Kafka named by FLOTILLA_TEST_BROKERS.
//
// Its tests run in parallel: each has a fleet of its own (fleettest: its
// own namespace of topics and groups, its own fake clock), and most of
// their time is spent waiting on the services.
package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/selector"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

func threePhaseSpec(version string) rollout.Spec {
	return rollout.Spec{
		Name:      "kafka-" + version,
		Operation: rollout.Operation{Kind: rollout.Upgrade, Version: version},
		Selector:  "kind=kafka",
		Phases: []rollout.Phase{
			{Name: "internal", Selector: "tier=internal", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 5}, Bake: time.Minute},
			{Name: "azure", Selector: "cloud=azure", Waves: rollout.Waves{Mode: rollout.WavePercent, Value: 50}, MaxInFlight: 10, Bake: time.Minute},
			{Name: "rest", Waves: rollout.Waves{Mode: rollout.WaveExponential, Value: 4}, MaxInFlight: 25, Bake: 30 * time.Second},
		},
		FailureThreshold: rollout.Threshold{Count: 2},
	}
}

func finished(w *decide.Workflow) bool { return w.State.Terminal() }

// targetsOf returns the IDs of the fleet's clusters a selector picks.
func targetsOf(t *testing.T, f *fleettest.Fleet, sel string) map[string]bool {
	s := selector.MustParse(sel)
	out := map[string]bool{}
	for _, c := range f.Clusters {
		if s.Matches(c.Labels) {
			out[c.ID] = true
		}
	}
	return out
}

func TestThreePhaseRolloutCompletes(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 200})
	id := f.Submit(threePhaseSpec("3.9.1"))
	w := f.Await(id, time.Second, 3*time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s), want succeeded", w.State, w.Reason)
	}
	want := targetsOf(t, f, "kind=kafka")
	if len(w.Targets) != len(want) || len(want) < 100 {
		t.Fatalf("%d targets, want the %d kafka clusters", len(w.Targets), len(want))
	}
	for _, c := range f.Clusters {
		st, _ := f.Sim.Cluster(c.ID)
		switch {
		case want[c.ID] && (st.Version != "3.9.1" || st.Applies != 1):
			t.Errorf("%s: version %s after %d applies, want 3.9.1 after exactly 1", c.ID, st.Version, st.Applies)
		case !want[c.ID] && st.Applies != 0:
			t.Errorf("%s is not a target but was changed %d times", c.ID, st.Applies)
		}
	}
	// Phases ran in order: internal clusters, then Azure, then the rest.
	var phaseEnd []time.Time
	phaseStart := map[int]time.Time{}
	for _, tg := range w.Targets {
		for len(phaseEnd) <= tg.Phase {
			phaseEnd = append(phaseEnd, time.Time{})
		}
		if tg.FinishedAt.After(phaseEnd[tg.Phase]) {
			phaseEnd[tg.Phase] = tg.FinishedAt
		}
		if s, ok := phaseStart[tg.Phase]; !ok || tg.StartedAt.Before(s) {
			phaseStart[tg.Phase] = tg.StartedAt
		}
		inv := f.Clusters[0]
		for _, c := range f.Clusters {
			if c.ID == tg.ClusterID {
				inv = c
			}
		}
		wantPhase := 2
		switch {
		case inv.Labels["tier"] == "internal":
			wantPhase = 0
		case inv.Labels["cloud"] == "azure":
			wantPhase = 1
		}
		if tg.Phase != wantPhase {
			t.Errorf("%s (%v) ran in phase %d, want %d", tg.ClusterID, inv.Labels, tg.Phase, wantPhase)
		}
	}
	for p := 1; p < len(phaseEnd); p++ {
		if phaseStart[p].Before(phaseEnd[p-1]) {
			t.Errorf("phase %d started at %v before phase %d ended at %v", p, phaseStart[p], p-1, phaseEnd[p-1])
		}
	}
	// People were told.
	f.Eventually(0, 10*time.Second, func() bool { return hasNotification(f.Notifications(), id, "workflow.succeeded") })
	if !hasNotification(f.Notifications(), id, "workflow.succeeded") {
		t.Fatalf("no workflow.succeeded notification for %s", id)
	}
}

func hasNotification(ns []records.Notification, workflowID, kind string) bool {
	for _, n := range ns {
		if n.WorkflowID == workflowID && n.Kind == kind {
			return true
		}
	}
	return false
}

func TestBadVersionPausesAtThreshold(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 60, BadVersions: []string{"3.9.2"}})
	spec := rollout.Spec{
		Name:      "bad",
		Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.2"},
		Selector:  "kind=kafka",
		Phases: []rollout.Phase{
			{Name: "canary", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 3}, Bake: 5 * time.Minute},
		},
		FailureThreshold: rollout.Threshold{Count: 2},
	}
	id := f.Submit(spec)
	w := f.Await(id, time.Second, time.Minute, "the pause", func(w *decide.Workflow) bool { return w.State == records.WorkflowPaused })
	if !strings.Contains(w.Reason, "runs bad version 3.9.2") || !strings.Contains(w.Reason, "failure threshold of 2") {
		t.Fatalf("pause reason %q does not say why", w.Reason)
	}
	pausedAt := w.UpdatedAt
	// Much later, still paused, and nothing else was touched.
	f.PassTime(time.Hour)
	w, _ = f.Workflow(id)
	if w.State != records.WorkflowPaused {
		t.Fatalf("state %s after waiting, want still paused", w.State)
	}
	if got := f.Sim.TotalApplies(); got != 3 {
		t.Fatalf("%d clusters changed, want only the first wave of 3", got)
	}
	for _, ev := range f.Operations() {
		if ev.Status == records.OperationStarted && ev.Envelope.Time.After(pausedAt) {
			t.Fatalf("operation on %s started at %v, after the pause at %v", ev.ClusterID, ev.Envelope.Time, pausedAt)
		}
	}
	f.Eventually(0, 10*time.Second, func() bool { return hasNotification(f.Notifications(), id, "workflow.paused") })
	if !hasNotification(f.Notifications(), id, "workflow.paused") {
		t.Fatal("no workflow.paused notification")
	}
}

// TestEveryServiceRestartsMidRollout stops each service in the middle of
// a rollout, with operations in flight, and starts it again; the rollout
// finishes and every cluster is upgraded exactly once.
func TestEveryServiceRestartsMidRollout(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 80, OpDuration: 20 * time.Second})
	id := f.Submit(threePhaseSpec("3.9.1"))
	targets := 0
	progress := func(w *decide.Workflow) int {
		targets = len(w.Targets)
		n := 0
		for _, tg := range w.Targets {
			if tg.State == records.TargetSucceeded {
				n++
			}
		}
		return n
	}
	done := 0
	for _, name := range append(fleettest.Services, "all") {
		// Wait until operations are in flight, so the stop cuts them off.
		w := f.Await(id, time.Second, time.Minute, "progress before stopping "+name, func(w *decide.Workflow) bool {
			running := 0
			for _, tg := range w.Targets {
				if tg.State == records.TargetRunning {
					running++
				}
			}
			return progress(w) > done && running > 0
		})
		done = progress(w)
		stop := []string{name}
		if name == "all" {
			stop = fleettest.Services
		}
		for _, s := range stop {
			f.StopService(s)
		}
		f.Clock.Advance(10 * time.Second) // time passes while they are down
		for _, s := range stop {
			f.StartService(s)
		}
	}
	w := f.Await(id, time.Second, 3*time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s), want succeeded", w.State, w.Reason)
	}
	for tid := range w.Targets {
		if n := f.Sim.Applies(tid); n != 1 {
			t.Errorf("%s was upgraded %d times, want exactly once", tid, n)
		}
	}
	// The notifier told each operation's outcome exactly once.
	f.Eventually(0, 10*time.Second, func() bool { return countKind(f.Notifications(), id, "operation.succeeded") >= targets })
	seen := map[string]int{}
	for _, n := range f.Notifications() {
		seen[n.Envelope.ID]++
		if seen[n.Envelope.ID] > 1 {
			t.Fatalf("notification %s (%s) written twice", n.Envelope.ID, n.Message)
		}
	}
	if got := countKind(f.Notifications(), id, "operation.succeeded"); got != targets {
		t.Fatalf("%d operation.succeeded notifications, want one per target (%d)", got, targets)
	}
}

func countKind(ns []records.Notification, workflowID, kind string) int {
	n := 0
	for _, x := range ns {
		if x.WorkflowID == workflowID && x.Kind == kind {
			n++
		}
	}
	return n
}

// TestTwoCopiesOfEachService runs a second planner, executor and notifier
// beside the first ones, so the groups share the partitions out, and stops
// copies mid-rollout so partitions move: the rollout finishes, every
// cluster is upgraded exactly once and every notification is written once.
func TestTwoCopiesOfEachService(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 120, OpDuration: 10 * time.Second, Partitions: 6})
	for _, s := range []string{"planner#2", "executor#2", "notifier#2", "monitor#2"} {
		f.StartService(s)
	}
	var ids []string
	for _, v := range []string{"3.9.1"} {
		ids = append(ids, f.Submit(threePhaseSpec(v)))
	}
	restart := rollout.Spec{Name: "restart-connect", Operation: rollout.Operation{Kind: rollout.Restart}, Selector: "kind=connect",
		Phases: []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 3}}}}
	ids = append(ids, f.Submit(restart))

	f.Await(ids[0], time.Second, time.Minute, "progress", func(w *decide.Workflow) bool {
		for _, tg := range w.Targets {
			if tg.State == records.TargetSucceeded {
				return true
			}
		}
		return false
	})
	for _, s := range []string{"planner", "executor#2", "notifier", "monitor"} {
		f.StopService(s) // their partitions move to the other copy
	}
	for _, id := range ids {
		w := f.Await(id, time.Second, 3*time.Minute, "the rollout finishing", finished)
		if w.State != records.WorkflowSucceeded {
			t.Fatalf("%s: state %s (%s)", w.Spec.Name, w.State, w.Reason)
		}
	}
	for _, c := range f.Clusters {
		st, _ := f.Sim.Cluster(c.ID)
		want := 0
		if c.Labels["kind"] == "kafka" || c.Labels["kind"] == "connect" {
			want = 1
		}
		if st.Applies != want {
			t.Errorf("%s (%s) changed %d times, want %d", c.ID, c.Labels["kind"], st.Applies, want)
		}
	}
	var notes []records.Notification
	f.Eventually(0, 10*time.Second, func() bool {
		notes = f.Notifications()
		return hasNotification(notes, ids[0], "workflow.succeeded") && hasNotification(notes, ids[1], "workflow.succeeded")
	})
	seen := map[string]bool{}
	for _, n := range notes {
		if seen[n.Envelope.ID] {
			t.Fatalf("notification %q written twice", n.Message)
		}
		seen[n.Envelope.ID] = true
	}
	// The two monitors shared the clusters: none was announced twice.
	first := map[string]int{}
	for _, r := range f.ReadAll(f.Backbone.Names().Health) {
		if h, err := records.DecodeHealth(r.Value); err == nil && h.PreviousStatus == records.HealthUnknown {
			first[h.ClusterID]++
		}
	}
	for id, n := range first {
		if n > 1 {
			t.Errorf("%s was first seen %d times: both monitors probed it", id, n)
		}
	}
}

// TestFailedOperationsAreRetried runs a rollout on a fleet where some
// operations fail: each failed one is retried after its backoff under a
// new command, the rollout succeeds, and every cluster changed once.
func TestFailedOperationsAreRetried(t *testing.T) {
	t.Parallel()
	// A fifth of the operations fail, each attempt independently (the sim
	// decides by command ID): with ten retries, a cluster failing every
	// attempt has odds of 0.2^11, about 2e-8; with some 56 targets, no
	// failure at all has odds of 0.8^56, about 4e-6.
	f := fleettest.Start(t, fleettest.Options{Clusters: 80, FailureRate: 0.2})
	spec := threePhaseSpec("3.9.1")
	spec.Retries, spec.RetryBackoff = 10, time.Second
	id := f.Submit(spec)
	w := f.Await(id, time.Second, 2*time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s), want succeeded after retries", w.State, w.Reason)
	}
	failed, retried := 0, 0
	for _, ev := range f.Operations() {
		if ev.WorkflowID == id && ev.Status == records.OperationFailed {
			failed++
		}
	}
	for tid, tg := range w.Targets {
		if tg.Attempt > 1 {
			retried++
		}
		if n := f.Sim.Applies(tid); n != 1 {
			t.Errorf("%s changed %d times, want once", tid, n)
		}
	}
	if failed == 0 || retried == 0 {
		t.Fatalf("%d failed operations, %d clusters retried: the fleet's failure rate should have made some", failed, retried)
	}
}

// TestAutoResumeAfterRecovery pauses a rollout on a version that makes
// clusters unhealthy, then lets the clusters recover (the version is
// fixed in place): the rollout resumes by itself after its autoResume time
// and finishes.
func TestAutoResumeAfterRecovery(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 30, BadVersions: []string{"3.9.2"}})
	spec := rollout.Spec{
		Name: "flaky", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.2"}, Selector: "kind=kafka",
		Phases:           []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 3}, Bake: time.Minute}},
		FailureThreshold: rollout.Threshold{Count: 2},
		AutoResume:       5 * time.Minute,
	}
	id := f.Submit(spec)
	f.Await(id, time.Second, time.Minute, "the pause", func(w *decide.Workflow) bool { return w.State == records.WorkflowPaused })
	f.Sim.SetBadVersions() // the clusters recover
	w := f.Await(id, 10*time.Second, 2*time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s), want succeeded after resuming by itself", w.State, w.Reason)
	}
	f.Eventually(0, 10*time.Second, func() bool { return hasNotification(f.Notifications(), id, "workflow.recovering") })
	var resumed string
	for _, n := range f.Notifications() {
		if n.WorkflowID == id && n.Kind == "workflow.resumed" {
			resumed = n.Message
		}
	}
	if !strings.Contains(resumed, "resumed by itself") {
		t.Fatalf("resumption notification %q", resumed)
	}
}
