package decide

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// drive answers commands until none is left: each succeeds unless fail
// says otherwise, a second passes, and a succeeded cluster is then seen
// healthy. It returns the commands it answered, in order.
func (h *harness) drive(cmds []records.Command, fail func(records.Command) bool) []records.Command {
	h.t.Helper()
	var answered []records.Command
	for len(cmds) > 0 {
		c := cmds[0]
		cmds = cmds[1:]
		answered = append(answered, c)
		h.now = h.now.Add(time.Second)
		if fail != nil && fail(c) {
			cmds = append(cmds, h.result(c, records.OperationFailed, "simulated failure").Commands...)
			continue
		}
		cmds = append(cmds, h.result(c, records.OperationSucceeded, "").Commands...)
		h.now = h.now.Add(time.Second)
		cmds = append(cmds, h.probe(c.ClusterID, records.HealthHealthy).Commands...)
	}
	return answered
}

func TestFailureThresholdActions(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold rollout.Threshold
		phase     rollout.Threshold // of the first phase
		wantState records.WorkflowState
		wantEvent string
		wantWhy   string
	}{
		{"pause by default", rollout.Threshold{}, rollout.Threshold{}, records.WorkflowPaused, "paused", "1 of 6 clusters failed or turned unhealthy, reaching the failure threshold of 1"},
		{"abort", rollout.Threshold{Action: rollout.ThresholdAbort}, rollout.Threshold{}, records.WorkflowFailed, "aborted", "aborted: 1 of 6 clusters failed"},
		// The first operation failed and none ran beside it: nothing to undo.
		{"roll back", rollout.Threshold{Action: rollout.ThresholdRollback}, rollout.Threshold{}, records.WorkflowRolledBack, "rolling-back rolled-back", "failure threshold reached: 1 of 6 clusters failed or turned unhealthy, reaching the failure threshold of 1: c-000 (broker 2 did not come back); nothing to roll back: no cluster was changed"},
		{"the phase's own limit", rollout.Threshold{Count: 3}, rollout.Threshold{Percent: 50, Action: rollout.ThresholdAbort}, records.WorkflowFailed, "aborted", "aborted: 1 of 2 clusters of phase canary failed or turned unhealthy, reaching its failure threshold of 1"},
		{"the harsher of the two", rollout.Threshold{Action: rollout.ThresholdAbort}, rollout.Threshold{Count: 1, Action: rollout.ThresholdRollback}, records.WorkflowRolledBack, "rolling-back", "phase canary"},
		{"a phase under its limit", rollout.Threshold{Count: 3}, rollout.Threshold{Count: 2, Action: rollout.ThresholdAbort}, records.WorkflowRunning, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fleet(6))
			spec := upgradeSpec(
				rollout.Phase{Name: "canary", Selector: "cloud=aws", MaxInFlight: 1, FailureThreshold: tc.phase},
				rollout.Phase{Name: "rest"},
			)
			spec.FailureThreshold = tc.threshold
			first := h.submit("wf", spec).Commands
			out := h.result(first[0], records.OperationFailed, "broker 2 did not come back")
			w := h.workflow("wf")
			if w.State != tc.wantState || (tc.wantEvent != "" && !strings.Contains(strings.Join(events(out.Rows), " "), tc.wantEvent)) || !strings.Contains(w.Reason, tc.wantWhy) {
				t.Fatalf("after the first failure: %s (%q), events %v; want %s (%q), event %s", w.State, w.Reason, events(out.Rows), tc.wantState, tc.wantWhy, tc.wantEvent)
			}
			if tc.wantState != records.WorkflowRunning && len(out.Commands) != 0 {
				t.Fatalf("commands %v sent after the threshold was reached", clusterIDs(out.Commands))
			}
		})
	}
}

func TestAbortLetsOperationsInFlightFinish(t *testing.T) {
	h := newHarness(t, fleet(6))
	spec := upgradeSpec(rollout.Phase{Name: "all", MaxInFlight: 2})
	spec.FailureThreshold = rollout.Threshold{Action: rollout.ThresholdAbort}
	first := h.submit("wf", spec).Commands
	h.result(first[0], records.OperationFailed, "disk full")
	w := h.workflow("wf")
	if w.State != records.WorkflowFailed {
		t.Fatalf("state %s, want failed (aborted)", w.State)
	}
	if busy, ok := h.rebuilt().Busy(first[1].ClusterID); !ok || busy != "wf" {
		t.Fatalf("after a rebuild, %s is not busy with the aborted workflow's operation in flight", first[1].ClusterID)
	}
	out := h.result(first[1], records.OperationSucceeded, "")
	if got := h.view("wf").Targets[first[1].ClusterID]; len(out.Commands) != 0 || got.State != records.TargetSucceeded {
		t.Fatalf("in-flight result after abort: commands %v, target %+v", clusterIDs(out.Commands), got)
	}
	if !w.Shed() {
		t.Fatal("the aborted workflow keeps its targets in memory once its last operation ended")
	}
	if _, ok := h.s.Busy(first[1].ClusterID); ok {
		t.Fatalf("%s still busy after its operation finished", first[1].ClusterID)
	}
}

func TestRollbackUndoesChangedClustersNewestFirstUnderTheSamePacing(t *testing.T) {
	h := newHarness(t, fleet(6))
	spec := upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}, MaxInFlight: 1, Bake: time.Minute})
	cmds := h.submit("wf", spec).Commands
	// Waves 1 and 2 complete; the first cluster of wave 3 is in flight.
	var order []string // clusters in the order their change finished
	for len(cmds) > 0 && h.workflow("wf").Wave < 2 {
		c := cmds[0]
		cmds = cmds[1:]
		h.now = h.now.Add(time.Second)
		cmds = append(cmds, h.result(c, records.OperationSucceeded, "").Commands...)
		order = append(order, c.ClusterID)
		h.now = h.now.Add(time.Second)
		cmds = append(cmds, h.probe(c.ClusterID, records.HealthHealthy).Commands...)
		cmds = append(cmds, h.advance(time.Minute).Commands...)
	}
	if len(cmds) != 1 {
		t.Fatalf("%d commands in flight in wave 3, want 1", len(cmds))
	}
	inFlight := cmds[0]

	out := h.control("wf", records.ActionRollback, "latency doubled")
	w := h.workflow("wf")
	if w.State != records.WorkflowRollingBack || len(out.Commands) != 0 {
		t.Fatalf("after rollback: %s, commands %v; want rolling back, waiting for %s", w.State, clusterIDs(out.Commands), inFlight.ClusterID)
	}
	if _, exists := h.s.Workflows[records.RollbackID("wf")]; exists {
		t.Fatal("rollback started while an operation was in flight")
	}
	h.now = h.now.Add(time.Second)
	out = h.result(inFlight, records.OperationSucceeded, "")
	order = append(order, inFlight.ClusterID)

	r := h.workflow(records.RollbackID("wf"))
	if r.RollbackOf != "wf" || r.State != records.WorkflowRunning || r.Workflow.Targets != 5 {
		t.Fatalf("rollback workflow: of %q, %s, %d targets; want of wf, running, the 5 changed clusters", r.RollbackOf, r.State, r.Workflow.Targets)
	}
	// Waves in reverse: wave 3's one change, then wave 2's, then wave 1's.
	if got := r.Phases[0].WaveSizes; !reflect.DeepEqual(got, []int{1, 2, 2}) || r.Phases[0].MaxInFlight != 1 || r.Phases[0].Bake != time.Minute {
		t.Fatalf("rollback phase %+v, want waves [1 2 2], maxInFlight 1, bake 1m", r.Phases[0])
	}
	undone := h.drive(out.Commands, nil)
	for r.State == records.WorkflowRunning {
		undone = append(undone, h.drive(h.advance(time.Minute).Commands, nil)...)
	}
	var got []string
	for _, c := range undone {
		got = append(got, c.ClusterID)
		if c.WorkflowID != r.ID || !reflect.DeepEqual(c.Operation, rollout.Operation{Kind: rollout.Upgrade, Version: "3.8.0", ExpectVersion: "3.9.1"}) {
			t.Errorf("rollback command %+v, want an upgrade of %s back to 3.8.0", c.Operation, c.ClusterID)
		}
	}
	for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
		order[i], order[j] = order[j], order[i]
	}
	if !reflect.DeepEqual(got, order) {
		t.Fatalf("rolled back %v, want the newest change first: %v", got, order)
	}
	if r.State != records.WorkflowSucceeded || w.State != records.WorkflowRolledBack {
		t.Fatalf("rollback %s (%s), workflow %s (%s); want succeeded and rolled-back", r.State, r.Reason, w.State, w.Reason)
	}
	if !strings.Contains(w.Reason, "rollback requested by carol: latency doubled") || !strings.Contains(w.Reason, "done: 5 clusters rolled back") {
		t.Fatalf("reason %q", w.Reason)
	}
	for id, v := range h.versions {
		if v != "3.8.0" {
			t.Errorf("%s runs %s after the rollback, want 3.8.0", id, v)
		}
	}
	if s := h.rebuilt(); !reflect.DeepEqual(s.Workflows[r.ID].Workflow, r.Workflow) || s.Workflows["wf"].State != records.WorkflowRolledBack {
		t.Fatal("the state rebuilt from the log differs")
	}
}

func TestRollbackTouchesOnlyChangedClusters(t *testing.T) {
	clusters := fleet(5)
	clusters[1].Version = "3.9.1" // already at the target: the upgrade changes nothing on it
	h := newHarness(t, clusters)
	spec := upgradeSpec()
	spec.FailureThreshold = rollout.Threshold{Count: 2, Action: rollout.ThresholdRollback}
	h.drive(h.submit("wf", spec).Commands, func(c records.Command) bool {
		return c.ClusterID == "c-002" || c.ClusterID == "c-003" // failed: never changed
	})
	if w := h.workflow("wf"); w.State != records.WorkflowRolledBack {
		t.Fatalf("state %s (%s), want rolled back from the threshold", w.State, w.Reason)
	}
	var got []string
	for _, c := range h.commands {
		if c.WorkflowID == records.RollbackID("wf") {
			got = append(got, c.ClusterID)
		}
	}
	if want := []string{"c-004", "c-000"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("rolled back %v, want the changed clusters %v, newest first", got, want)
	}
}

func TestRollbackOfAnUnhealthyClusterIsNotHeld(t *testing.T) {
	h := newHarness(t, fleet(2))
	spec := upgradeSpec()
	spec.FailureThreshold = rollout.Threshold{Action: rollout.ThresholdRollback}
	first := h.submit("wf", spec).Commands
	h.result(first[0], records.OperationSucceeded, "")
	h.result(first[1], records.OperationSucceeded, "")
	h.now = h.now.Add(time.Second)
	out := h.probe(first[0].ClusterID, records.HealthUnhealthy, "3 offline partitions")
	if got := clusterIDs(out.Commands); !reflect.DeepEqual(got, []string{"c-000", "c-001"}) || out.Commands[0].WorkflowID != records.RollbackID("wf") {
		t.Fatalf("commands %v, want the rollback to start at once, unhealthy cluster included", got)
	}
}

func TestRollbackOfAFinishedRollout(t *testing.T) {
	h := newHarness(t, fleet(3))
	h.drive(h.submit("wf", upgradeSpec()).Commands, nil)
	if w := h.workflow("wf"); w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s, want succeeded", w.State)
	}
	h.submit("other", rollout.Spec{Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{"c-001"},
		Windows: []rollout.WindowRule{{Deny: []string{"2026-11-01T00:00:00Z/2026-12-01T00:00:00Z"}}}})
	out := h.control("wf", records.ActionRollback, "")
	if len(out.Rows) != 1 || !strings.Contains(out.Rows[0].Workflow.Reason, "clusters it changed are in unfinished rollouts: c-001 (in other)") {
		t.Fatalf("rollback while another rollout holds a cluster: %+v", out.Rows[0].Workflow)
	}
	h.control("other", records.ActionCancel, "")
	h.drive(h.control("wf", records.ActionRollback, "").Commands, nil)
	if w := h.workflow("wf"); w.State != records.WorkflowRolledBack {
		t.Fatalf("state %s (%s), want rolled back", w.State, w.Reason)
	}
}

func TestRollbackRequestsThatAreRefused(t *testing.T) {
	h := newHarness(t, fleet(2))
	h.drive(h.submit("wf", upgradeSpec()).Commands, nil)
	h.drive(h.control("wf", records.ActionRollback, "").Commands, nil)
	for _, tc := range []struct{ workflow, want string }{
		{"wf", "workflow wf is already rolled back"},
		{records.RollbackID("wf"), "is itself a rollback (of wf)"},
		{"nope", "no workflow nope here"},
	} {
		out := h.control(tc.workflow, records.ActionRollback, "")
		if len(out.Rows) != 1 || !strings.Contains(out.Rows[0].Workflow.Reason, tc.want) {
			t.Errorf("rollback of %s: %+v, want a rejection saying %q", tc.workflow, out.Rows, tc.want)
		}
	}
}

func TestNothingToRollBack(t *testing.T) {
	h := newHarness(t, fleet(2))
	spec := rollout.Spec{Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Selector: "kind=kafka"}
	first := h.submit("wf", spec).Commands
	h.result(first[0], records.OperationSucceeded, "")
	out := h.control("wf", records.ActionRollback, "")
	h.result(first[1], records.OperationSucceeded, "")
	w := h.workflow("wf")
	if w.State != records.WorkflowRolledBack || !strings.Contains(w.Reason, "nothing to roll back") || len(out.Commands) != 0 {
		t.Fatalf("rollback of a restart: %s (%s)", w.State, w.Reason)
	}
	if _, exists := h.s.Workflows[records.RollbackID("wf")]; exists {
		t.Fatal("a rollback workflow was made with nothing to do")
	}
}

func TestControlsOfAWorkflowRollingBack(t *testing.T) {
	h := newHarness(t, fleet(2))
	first := h.submit("wf", upgradeSpec()).Commands
	h.control("wf", records.ActionRollback, "")
	for _, action := range []records.ControlAction{records.ActionPause, records.ActionResume, records.ActionCancel, records.ActionRetry, records.ActionRollback} {
		out := h.control("wf", action, "")
		if len(out.Rows) != 1 || !strings.Contains(out.Rows[0].Workflow.Reason, "is rolling back: act on its rollback, workflow wf/rollback") {
			t.Errorf("%s while rolling back: %+v", action, out.Rows)
		}
	}
	h.result(first[0], records.OperationSucceeded, "")
	out := h.result(first[1], records.OperationFailed, "")
	if got := clusterIDs(out.Commands); !reflect.DeepEqual(got, []string{first[0].ClusterID}) {
		t.Fatalf("rollback commands %v, want only the cluster whose operation succeeded", got)
	}
	h.control(records.RollbackID("wf"), records.ActionCancel, "let it be")
	if w := h.workflow("wf"); w.State != records.WorkflowFailed || !strings.Contains(w.Reason, "the rollback cancelled: cancelled by carol: let it be") {
		t.Fatalf("after its rollback was cancelled: %s (%s)", w.State, w.Reason)
	}
}

func TestInverseOperation(t *testing.T) {
	cfg := rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "1", "b": "2", "c": "3"}, Reset: []string{"d", "e"}}
	for _, tc := range []struct {
		name    string
		op      rollout.Operation
		target  records.Target
		want    rollout.Operation
		ok      bool
		problem string
	}{
		{"upgrade", rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, records.Target{PreviousVersion: "3.8.0", Version: "3.9.1"},
			rollout.Operation{Kind: rollout.Upgrade, Version: "3.8.0", ExpectVersion: "3.9.1"}, true, ""},
		{"upgrade that changed nothing", rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, records.Target{PreviousVersion: "3.9.1", Version: "3.9.1"},
			rollout.Operation{}, false, ""},
		{"upgrade from an unknown version", rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, records.Target{Version: "3.9.1"},
			rollout.Operation{}, false, "its previous version is not known"},
		{"restart", rollout.Operation{Kind: rollout.Restart}, records.Target{PreviousVersion: "3.8.0", Version: "3.8.0"}, rollout.Operation{}, false, ""},
		{"config", cfg, records.Target{
			PreviousConfig: map[string]string{"a": "0", "b": "2", "d": "4"}, // c and e had no value; b was already 2
			PreviousUnset:  []string{"c", "e"},
		}, rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "0", "d": "4"}, Reset: []string{"c"},
			ExpectConfig: map[string]string{"a": "1", "c": "3"}}, true, ""},
		{"config already in place", cfg, records.Target{PreviousConfig: map[string]string{"a": "1", "b": "2", "c": "3"}, PreviousUnset: []string{"d", "e"}},
			rollout.Operation{}, false, ""},
		{"config not recorded", cfg, records.Target{}, rollout.Operation{}, false, "its previous config was not recorded (its driver cannot read configs)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, problem := inverse(tc.op, &tc.target)
			if !reflect.DeepEqual(got, tc.want) || ok != tc.ok || problem != tc.problem {
				t.Errorf("inverse = %+v, %v, %q; want %+v, %v, %q", got, ok, problem, tc.want, tc.ok, tc.problem)
			}
		})
	}
}

func TestConfigRollbackUsesThePreviousConfigRecordedBeforeTheChange(t *testing.T) {
	h := newHarness(t, fleet(1))
	spec := rollout.Spec{Name: "retention", Operation: rollout.Operation{Kind: rollout.Config, Config: map[string]string{"log.retention.ms": "1"}}, Clusters: []string{"c-000"}}
	cmd := h.submit("wf", spec).Commands[0]
	h.do(OperationUpdate{Event: records.OperationEvent{
		Envelope: records.Envelope{ID: "started", Time: h.now}, CommandID: cmd.ID, WorkflowID: "wf", ClusterID: "c-000", Attempt: 1,
		Status: records.OperationStarted, PreviousConfig: map[string]string{"log.retention.ms": "604800000"},
	}})
	out := h.control("wf", records.ActionRollback, "")
	h.result(cmd, records.OperationSucceeded, "")
	r := h.workflow(records.RollbackID("wf"))
	if len(r.Targets) != 1 {
		t.Fatalf("rollback targets %v", r.Targets)
	}
	cmds := append(out.Commands, h.running(r.ID)...)
	if len(cmds) != 1 || !reflect.DeepEqual(cmds[0].Operation, rollout.Operation{Kind: rollout.Config, Config: map[string]string{"log.retention.ms": "604800000"},
		ExpectConfig: map[string]string{"log.retention.ms": "1"}}) {
		t.Fatalf("rollback commands %+v, want log.retention.ms back to 604800000", cmds)
	}
}

func TestPolicyGivesTheRolloutItsPhases(t *testing.T) {
	h := newHarness(t, fleet(6))
	h.s.Policies["azure-first"] = rollout.Policy{Name: "azure-first", Phases: []rollout.Phase{
		{Name: "azure", Selector: "cloud=azure"},
		{Name: "rest", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}},
	}}
	spec := upgradeSpec()
	spec.Policy = "azure-first"
	h.submit("wf", spec)
	w := h.workflow("wf")
	if w.State != records.WorkflowRunning || len(w.Phases) != 2 || w.Phases[0].Name != "azure" || !reflect.DeepEqual(w.WaveTargets(0, 0), []string{"c-002", "c-005"}) {
		t.Fatalf("workflow %s (%s), phases %+v", w.State, w.Reason, w.Phases)
	}
	if len(w.Spec.Phases) != 2 || w.Spec.Policy != "azure-first" {
		t.Fatalf("the workflow's spec does not keep the policy's phases: %+v", w.Spec)
	}
	// A later change to the policy leaves the rollout as it was planned.
	delete(h.s.Policies, "azure-first")
	if s := h.rebuilt(); len(s.Workflows["wf"].Phases) != 2 {
		t.Fatal("the rebuilt workflow lost its phases")
	}

	spec.Policy = "gcp-first"
	h.submit("wf-2", spec)
	if w := h.workflow("wf-2"); w.State != records.WorkflowRejected || w.Reason != `policy: unknown deployment policy "gcp-first" (none is defined; see flotilla policy apply)` {
		t.Fatalf("unknown policy: %s (%s)", w.State, w.Reason)
	}
}

// TestRollbackWaitsForOperationsThatWouldRetry: an operation in flight
// when the rollback was asked for fails with retries left; it is not
// retried, and the rollback goes on.
func TestRollbackWaitsForOperationsThatWouldRetry(t *testing.T) {
	h := newHarness(t, fleet(2))
	spec := upgradeSpec()
	spec.Retries, spec.RetryBackoff = 3, time.Minute
	first := h.submit("wf", spec).Commands
	h.result(first[0], records.OperationSucceeded, "")
	h.control("wf", records.ActionRollback, "")
	out := h.result(first[1], records.OperationFailed, "disk full")
	if got := clusterIDs(out.Commands); !reflect.DeepEqual(got, []string{first[0].ClusterID}) || out.Commands[0].WorkflowID != records.RollbackID("wf") {
		t.Fatalf("commands %v, want the rollback of %s alone", got, first[0].ClusterID)
	}
	h.advance(time.Hour)
	if w := h.workflow("wf"); w.Targets[first[1].ClusterID].State == records.TargetRunning {
		t.Fatal("the failed operation was retried while the rollout rolls back")
	}
}
