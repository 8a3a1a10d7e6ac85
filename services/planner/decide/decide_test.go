package decide

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

func clusterIDs(cmds []records.Command) []string {
	var ids []string
	for _, c := range cmds {
		ids = append(ids, c.ClusterID)
	}
	return ids
}

func events(rows []records.WorkflowRecord) []string {
	var out []string
	for _, r := range rows {
		if r.Workflow != nil {
			out = append(out, r.Workflow.Event)
		}
	}
	return out
}

func TestSubmitPlansAndStartsFirstWave(t *testing.T) {
	h := newHarness(t, fleet(20))
	out := h.submit("wf-1", upgradeSpec(
		rollout.Phase{Name: "internal", Selector: "tier=internal", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}},
		rollout.Phase{Name: "rest", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 5}},
	))
	// c-000, c-007, c-014 are internal: the first wave is two of them.
	if got, want := clusterIDs(out.Commands), []string{"c-000", "c-007"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("first wave commands = %v, want %v", got, want)
	}
	if got, want := events(out.Rows), []string{"submitted", "phase-started", "wave-started"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	w := h.workflow("wf-1")
	if w.State != records.WorkflowRunning || w.Workflow.Targets != 20 || len(w.Phases) != 2 {
		t.Fatalf("workflow = %+v", w.Workflow)
	}
	if got, want := w.Phases[0].WaveSizes, []int{2, 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("internal waves = %v, want %v", got, want)
	}
	c := out.Commands[0]
	if c.Operation.Version != "3.9.1" || c.Cluster.Address != "sim://c-000" || c.Attempt != 1 || c.ID != CommandID("wf-1", "c-000", 1) {
		t.Fatalf("command = %+v", c)
	}
	if c.Envelope.Principal != Principal || c.Envelope.CausationID != "wf-1" {
		t.Fatalf("command envelope = %+v", c.Envelope)
	}
}

func TestRejectsBadRequests(t *testing.T) {
	cases := []struct {
		name string
		in   Submit
		want string
	}{
		{"undecodable", Submit{Key: "r1", Err: errors.New("unknown fingerprint 0x1234")}, "cannot decode request: unknown fingerprint 0x1234"},
		{"no body", Submit{Key: "r2", Request: records.Request{Envelope: records.Envelope{ID: "r2"}}}, "request has no body"},
		{"unknown cluster", Submit{Key: "r3", Request: records.Request{Envelope: records.Envelope{ID: "r3"}, Submit: &records.SubmitRollout{Spec: rollout.Spec{
			Name: "x", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{"c-001", "nope"}}}}}, "nope"},
		{"empty target set", Submit{Key: "r4", Request: records.Request{Envelope: records.Envelope{ID: "r4"}, Submit: &records.SubmitRollout{Spec: rollout.Spec{
			Name: "x", Operation: rollout.Operation{Kind: rollout.Restart}, Selector: "cloud=oracle"}}}}, "no cluster matches"},
		{"bad selector", Submit{Key: "r5", Request: records.Request{Envelope: records.Envelope{ID: "r5"}, Submit: &records.SubmitRollout{Spec: rollout.Spec{
			Name: "x", Operation: rollout.Operation{Kind: rollout.Restart}, Selector: "cloud in (aws"}}}}, "selector"},
		{"unknown operation", Submit{Key: "r6", Request: records.Request{Envelope: records.Envelope{ID: "r6"}, Submit: &records.SubmitRollout{Spec: rollout.Spec{
			Name: "x", Operation: rollout.Operation{Kind: "reboot"}, Selector: "kind=kafka"}}}}, "reboot"},
		{"key differs from id", Submit{Key: "r7", Request: records.Request{Envelope: records.Envelope{ID: "other"}, Submit: &records.SubmitRollout{Spec: upgradeSpec()}}}, "differs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fleet(5))
			out := h.do(tc.in)
			if len(out.Commands) != 0 || len(out.Rows) != 2 || out.Rows[0].Spec == nil || out.Rows[1].Workflow == nil {
				t.Fatalf("outputs = %+v, want the spec row and one rejected workflow row", out)
			}
			w := out.Rows[1].Workflow
			if w.ID != tc.in.Key || w.State != records.WorkflowRejected || w.Event != "rejected" || !strings.Contains(w.Reason, tc.want) {
				t.Fatalf("row = id %s state %s event %s reason %q, want rejected containing %q", w.ID, w.State, w.Event, w.Reason, tc.want)
			}
			// The next, valid request is still served.
			if out := h.submit("ok", upgradeSpec()); len(out.Commands) != 5 {
				t.Fatalf("a valid request after a rejected one sent %d commands, want 5", len(out.Commands))
			}
		})
	}
}

func TestDuplicateRequestIsIgnored(t *testing.T) {
	h := newHarness(t, fleet(3))
	h.submit("wf", upgradeSpec())
	if out := h.submit("wf", upgradeSpec()); !out.Empty() {
		t.Fatalf("retry of the same request wrote %+v", out)
	}
}

func TestWaveWaitsForPreviousWaveHealthAndBake(t *testing.T) {
	h := newHarness(t, fleet(6))
	out := h.submit("wf", upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 3}, Bake: 10 * time.Minute}))
	first := out.Commands
	if len(first) != 3 {
		t.Fatalf("first wave = %v", clusterIDs(first))
	}
	h.now = h.now.Add(time.Minute)
	for i, c := range first {
		if out := h.result(c, records.OperationSucceeded, ""); len(out.Commands) != 0 {
			t.Fatalf("result %d started %v before the wave finished baking", i, clusterIDs(out.Commands))
		}
	}
	if got := h.workflow("wf").BakeUntil; !got.Equal(h.now.Add(10 * time.Minute)) {
		t.Fatalf("BakeUntil = %v, want now+10m", got)
	}
	// Healthy, but the bake time has not passed.
	h.now = h.now.Add(time.Minute)
	for _, c := range first {
		h.probe(c.ClusterID, records.HealthHealthy)
	}
	if out := h.advance(8*time.Minute + 59*time.Second); len(out.Commands) != 0 {
		t.Fatalf("started %v before the bake time passed", clusterIDs(out.Commands))
	}
	if out := h.advance(time.Second); len(out.Commands) != 3 {
		t.Fatalf("after the bake, started %v, want the second wave of 3", clusterIDs(out.Commands))
	}
}

func TestWaveWaitsUntilEveryClusterWasProbedAfterItsOperation(t *testing.T) {
	h := newHarness(t, fleet(4))
	first := h.submit("wf", upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}})).Commands
	h.probe(first[0].ClusterID, records.HealthHealthy) // before the operation: does not count
	h.now = h.now.Add(time.Second)
	h.result(first[0], records.OperationSucceeded, "")
	h.result(first[1], records.OperationSucceeded, "")
	if out := h.advance(time.Second); len(out.Commands) != 0 {
		t.Fatalf("started %v with no probe since the operations", clusterIDs(out.Commands))
	}
	h.probe(first[0].ClusterID, records.HealthHealthy)
	if out := h.probe(first[1].ClusterID, records.HealthDegraded); len(out.Commands) != 2 {
		t.Fatalf("after both probes (healthy, degraded) started %v, want the next wave", clusterIDs(out.Commands))
	}
}

func TestMaxInFlight(t *testing.T) {
	h := newHarness(t, fleet(5))
	out := h.submit("wf", upgradeSpec(rollout.Phase{Name: "all", MaxInFlight: 2}))
	if len(out.Commands) != 2 {
		t.Fatalf("started %d, want 2", len(out.Commands))
	}
	out = h.result(out.Commands[0], records.OperationSucceeded, "")
	if got := clusterIDs(out.Commands); !reflect.DeepEqual(got, []string{"c-002"}) {
		t.Fatalf("after one finished, started %v, want [c-002]", got)
	}
}

func TestUnhealthyAfterOperationPausesAtThreshold(t *testing.T) {
	h := newHarness(t, fleet(10))
	spec := upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 3}, Bake: time.Minute})
	spec.FailureThreshold = rollout.Threshold{Count: 2}
	first := h.submit("wf", spec).Commands
	for _, c := range first {
		h.result(c, records.OperationSucceeded, "")
	}
	h.now = h.now.Add(time.Second)
	h.probe(first[0].ClusterID, records.HealthUnhealthy, "runs bad version 3.9.1")
	if w := h.workflow("wf"); w.State != records.WorkflowRunning || w.Failed() != 1 {
		t.Fatalf("after one unhealthy: state %s failed %d, want running with 1", w.State, w.Failed())
	}
	out := h.probe(first[1].ClusterID, records.HealthUnhealthy, "runs bad version 3.9.1")
	w := h.workflow("wf")
	if w.State != records.WorkflowPaused || !strings.Contains(w.Reason, "2 of 10 clusters failed") || !strings.Contains(w.Reason, "runs bad version") {
		t.Fatalf("state %s reason %q, want paused naming the failures", w.State, w.Reason)
	}
	if got := events(out.Rows); !reflect.DeepEqual(got, []string{"paused"}) {
		t.Fatalf("events = %v", got)
	}
	h.probe(first[2].ClusterID, records.HealthHealthy)
	if out := h.advance(time.Hour); len(out.Commands) != 0 {
		t.Fatalf("paused workflow started %v", clusterIDs(out.Commands))
	}
}

func TestFailedOperationsPauseAndInFlightFinish(t *testing.T) {
	h := newHarness(t, fleet(6))
	first := h.submit("wf", upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 3}})).Commands
	h.result(first[0], records.OperationFailed, "simulated failure")
	w := h.workflow("wf")
	if w.State != records.WorkflowPaused {
		t.Fatalf("state %s, want paused at the default threshold of one failure", w.State)
	}
	out := h.result(first[1], records.OperationSucceeded, "")
	if len(out.Commands) != 0 || w.Targets[first[1].ClusterID].State != records.TargetSucceeded {
		t.Fatalf("in-flight result after pause: commands %v, target %+v", clusterIDs(out.Commands), w.Targets[first[1].ClusterID])
	}
}

func TestStaleOperationEventIsIgnored(t *testing.T) {
	h := newHarness(t, fleet(2))
	c := h.submit("wf", upgradeSpec()).Commands[0]
	stale := c
	stale.ID = "some-other-command"
	if out := h.result(stale, records.OperationFailed, "boom"); !out.Empty() {
		t.Fatalf("stale event wrote %+v", out)
	}
	if out := h.do(OperationUpdate{Event: records.OperationEvent{WorkflowID: "unknown", ClusterID: "c-000", CommandID: c.ID}}); !out.Empty() {
		t.Fatalf("event for an unknown workflow wrote %+v", out)
	}
}

func TestEndsSucceededOrFailed(t *testing.T) {
	for _, failOne := range []bool{false, true} {
		h := newHarness(t, fleet(4))
		spec := upgradeSpec(rollout.Phase{Name: "a", Selector: "cloud=aws"}, rollout.Phase{Name: "b"})
		spec.FailureThreshold = rollout.Threshold{Count: 3}
		pending := h.submit("wf", spec).Commands
		for len(pending) > 0 {
			c := pending[0]
			pending = pending[1:]
			status := records.OperationSucceeded
			if failOne && c.ClusterID == "c-001" {
				status = records.OperationFailed
			}
			pending = append(pending, h.result(c, status, "boom").Commands...)
			h.now = h.now.Add(time.Second)
			if status == records.OperationSucceeded {
				pending = append(pending, h.probe(c.ClusterID, records.HealthHealthy).Commands...)
			}
		}
		w := h.workflow("wf")
		want := records.WorkflowSucceeded
		if failOne {
			want = records.WorkflowFailed
		}
		if w.State != want {
			t.Fatalf("failOne=%v: state %s (%s), want %s", failOne, w.State, w.Reason, want)
		}
		if failOne && !strings.Contains(w.Reason, "c-001 (boom)") {
			t.Fatalf("reason %q does not name the failed cluster", w.Reason)
		}
	}
}

func TestClusterBusyInAnotherWorkflowWaits(t *testing.T) {
	h := newHarness(t, fleet(2))
	a := h.submit("a", upgradeSpec()).Commands
	b := h.submit("b", rollout.Spec{Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{"c-000"}})
	if len(b.Commands) != 0 {
		t.Fatalf("second workflow started %v on a busy cluster", clusterIDs(b.Commands))
	}
	out := h.result(a[0], records.OperationSucceeded, "")
	if got := clusterIDs(out.Commands); !reflect.DeepEqual(got, []string{"c-000"}) || out.Commands[0].WorkflowID != "b" {
		t.Fatalf("after the cluster was freed, started %v", got)
	}
}

func TestRebuiltStateMatches(t *testing.T) {
	h := newHarness(t, fleet(8))
	first := h.submit("wf", upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 4}, Bake: time.Minute})).Commands
	h.result(first[0], records.OperationSucceeded, "")
	h.result(first[1], records.OperationFailed, "x")
	h.submit("bad", rollout.Spec{Name: "bad"})
	assertSameState(t, h.s, h.rebuilt())
}

func assertSameState(t testing.TB, live, rebuilt *State) {
	t.Helper()
	if len(live.Workflows) != len(rebuilt.Workflows) {
		t.Fatalf("rebuilt %d workflows, live %d", len(rebuilt.Workflows), len(live.Workflows))
	}
	for id, w := range live.Workflows {
		r := rebuilt.Workflows[id]
		if r == nil {
			t.Fatalf("workflow %s missing after rebuild", id)
		}
		if !reflect.DeepEqual(w.Workflow, r.Workflow) {
			t.Fatalf("workflow %s header differs:\nlive    %+v\nrebuilt %+v", id, w.Workflow, r.Workflow)
		}
		if !reflect.DeepEqual(w.Targets, r.Targets) || w.failed != r.failed || !slices.Equal(w.failedIn, r.failedIn) {
			t.Fatalf("workflow %s (%s) targets differ after rebuild: live %d (shed %v), rebuilt %d (shed %v); failed %d/%d", id, w.State, len(w.Targets), w.shed, len(r.Targets), r.shed, w.failed, r.failed)
		}
	}
	if !reflect.DeepEqual(live.busy, rebuilt.busy) {
		t.Fatalf("busy clusters differ: live %v rebuilt %v", live.busy, rebuilt.busy)
	}
	if l, r := workflowIDsByCluster(live), workflowIDsByCluster(rebuilt); !reflect.DeepEqual(l, r) {
		t.Fatalf("workflows by cluster differ: live %v rebuilt %v", l, r)
	}
	for id, c := range live.clusters {
		for _, x := range c.on {
			if live.Workflows[x.w.ID] != x.w || x.w.Targets[id] != x.t || x.t == nil {
				t.Fatalf("cluster %s is indexed under a workflow %s or target that is not the state's", id, x.w.ID)
			}
		}
	}
}

// workflowIDsByCluster is the index of workflows by cluster, by ID.
func workflowIDsByCluster(s *State) map[string][]string {
	out := map[string][]string{}
	for id, c := range s.clusters {
		for _, x := range c.on {
			out[id] = append(out[id], x.w.ID)
		}
	}
	return out
}

func TestUnhealthyCountsOnlyAgainstTheLastChange(t *testing.T) {
	h := newHarness(t, fleet(2))
	first := h.submit("first", rollout.Spec{Name: "a", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Clusters: []string{"c-000", "c-001"},
		Phases: []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 1}, Bake: time.Hour}}})
	h.result(first.Commands[0], records.OperationSucceeded, "") // c-000 changed by "first", which now bakes
	second := h.submit("second", rollout.Spec{Name: "b", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.2"}, Clusters: []string{"c-000"}})
	h.now = h.now.Add(time.Second)
	h.result(second.Commands[0], records.OperationSucceeded, "")
	h.now = h.now.Add(time.Second)
	h.probe("c-000", records.HealthUnhealthy, "runs bad version 3.9.2")
	if w := h.workflow("first"); w.Failed() != 0 || w.State != records.WorkflowRunning {
		t.Fatalf("first: %d failed, state %s; the damage was done by second", w.Failed(), w.State)
	}
	if w := h.workflow("second"); w.Failed() != 1 || w.State != records.WorkflowPaused {
		t.Fatalf("second: %d failed, state %s, want 1 and paused", w.Failed(), w.State)
	}
}

func TestMaintenanceWindowHoldsClustersUntilItOpens(t *testing.T) {
	h := newHarness(t, fleet(6)) // t0 is 12:00 UTC; c-000 and c-003 are on aws
	spec := upgradeSpec()
	spec.Windows = []rollout.WindowRule{{Selector: "cloud=aws", Allow: []string{"14:00-16:00 UTC"}}}
	out := h.submit("wf", spec)
	if got, want := clusterIDs(out.Commands), []string{"c-001", "c-002", "c-004", "c-005"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("started %v, want every cluster but the aws ones, which are outside their window", got)
	}
	w := h.workflow("wf")
	if !w.WaitUntil.Equal(t0.Add(2*time.Hour)) || !strings.Contains(w.Waiting, "2 clusters wait for their maintenance window") {
		t.Fatalf("WaitUntil %v, Waiting %q", w.WaitUntil, w.Waiting)
	}
	if got := events(out.Rows); !reflect.DeepEqual(got[len(got)-1:], []string{"waiting"}) {
		t.Fatalf("events %v, want the wait told", got)
	}
	for _, c := range out.Commands {
		h.result(c, records.OperationSucceeded, "")
	}
	if out := h.advance(time.Hour + 59*time.Minute); len(out.Commands) != 0 {
		t.Fatalf("started %v at 13:59, before the window", clusterIDs(out.Commands))
	}
	out = h.advance(time.Minute)
	if got := clusterIDs(out.Commands); !reflect.DeepEqual(got, []string{"c-000", "c-003"}) {
		t.Fatalf("at 14:00 started %v, want the aws clusters", got)
	}
	if w.Waiting != "" || !w.WaitUntil.IsZero() {
		t.Fatalf("still waiting: %q until %v", w.Waiting, w.WaitUntil)
	}
}

func TestPauseResumeCancel(t *testing.T) {
	h := newHarness(t, fleet(9))
	first := h.submit("wf", upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 3}})).Commands
	out := h.control("wf", records.ActionPause, "looking at the dashboards")
	w := h.workflow("wf")
	if w.State != records.WorkflowPaused || w.Reason != "paused by carol: looking at the dashboards" || events(out.Rows)[0] != "paused" {
		t.Fatalf("after pause: %s %q %v", w.State, w.Reason, events(out.Rows))
	}
	// In-flight operations finish; nothing new starts, even after the wave.
	for _, c := range first {
		h.result(c, records.OperationSucceeded, "")
	}
	h.now = h.now.Add(time.Second)
	for _, c := range first {
		if out := h.probe(c.ClusterID, records.HealthHealthy); len(out.Commands) != 0 {
			t.Fatalf("paused workflow started %v", clusterIDs(out.Commands))
		}
	}
	if out := h.control("wf", records.ActionPause, ""); len(out.Commands) != 0 || w.State != records.WorkflowPaused {
		t.Fatal("a second pause changed something")
	}
	out = h.control("wf", records.ActionResume, "")
	if w.State != records.WorkflowRunning || len(out.Commands) != 3 {
		t.Fatalf("after resume: %s, started %v, want the next wave", w.State, clusterIDs(out.Commands))
	}
	h.control("wf", records.ActionCancel, "wrong version")
	if w.State != records.WorkflowCancelled || w.Reason != "cancelled by carol: wrong version" {
		t.Fatalf("after cancel: %s %q", w.State, w.Reason)
	}
	// The wave in flight finishes and is recorded; nothing more starts.
	for _, c := range out.Commands {
		if out := h.result(c, records.OperationSucceeded, ""); len(out.Commands) != 0 {
			t.Fatalf("cancelled workflow started %v", clusterIDs(out.Commands))
		}
	}
	if got := h.view("wf").Progress().Succeeded; got != 6 {
		t.Fatalf("%d succeeded, want the 6 that ran", got)
	}
	if _, busy := h.s.Busy("c-003"); busy {
		t.Fatal("a cluster stays busy after its operation finished in a cancelled workflow")
	}
	// A cancelled workflow cannot be resumed: the request is refused, under its own ID.
	out = h.control("wf", records.ActionResume, "")
	if len(out.Rows) != 1 || out.Rows[0].Workflow.State != records.WorkflowRejected || !strings.Contains(out.Rows[0].Workflow.Reason, "is cancelled: it cannot be resumed") {
		t.Fatalf("resume of a cancelled workflow: %+v", out.Rows)
	}
}

func TestResumeAcknowledgesFailuresThatPaused(t *testing.T) {
	h := newHarness(t, fleet(6))
	first := h.submit("wf", upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}})).Commands
	h.result(first[0], records.OperationFailed, "disk full")
	w := h.workflow("wf")
	if w.State != records.WorkflowPaused {
		t.Fatalf("state %s, want paused by the first failure", w.State)
	}
	h.control("wf", records.ActionResume, "disk cleaned up")
	if w.State != records.WorkflowRunning {
		t.Fatalf("state %s after resume, want running: the failure that paused it is acknowledged", w.State)
	}
	h.result(first[1], records.OperationFailed, "disk full again")
	if w.State != records.WorkflowPaused {
		t.Fatalf("state %s, want paused again by a new failure", w.State)
	}
}

func TestControlRequestsThatCannotBeCarriedOut(t *testing.T) {
	h := newHarness(t, fleet(2))
	h.submit("wf", upgradeSpec())
	cases := []struct {
		name string
		in   Submit
		want string
	}{
		{"unknown workflow", Submit{Key: "nope/r1", Request: records.Request{Envelope: records.Envelope{ID: "r1"},
			Control: &records.ControlWorkflow{WorkflowID: "nope", Action: records.ActionPause}}}, "no workflow nope here"},
		{"badly keyed", Submit{Key: "r2-other", Request: records.Request{Envelope: records.Envelope{ID: "r2"},
			Control: &records.ControlWorkflow{WorkflowID: "wf", Action: records.ActionPause}}}, `a control request is keyed "wf/r2"`},
		{"unknown action", Submit{Key: "wf/r3", Request: records.Request{Envelope: records.Envelope{ID: "r3"},
			Control: &records.ControlWorkflow{WorkflowID: "wf", Action: "reboot"}}}, `unknown action "reboot"`},
	}
	for _, tc := range cases {
		out := h.do(tc.in)
		if len(out.Rows) != 1 || out.Rows[0].Workflow.ID != tc.in.Request.Envelope.ID || out.Rows[0].Workflow.State != records.WorkflowRejected ||
			!strings.Contains(out.Rows[0].Workflow.Reason, tc.want) {
			t.Errorf("%s: rows %+v, want the request rejected saying %q", tc.name, out.Rows, tc.want)
		}
	}
	if w := h.workflow("wf"); w.State != records.WorkflowRunning {
		t.Fatalf("workflow %s after refused controls", w.State)
	}
}

func TestApprovalGates(t *testing.T) {
	h := newHarness(t, fleet(8))
	spec := upgradeSpec(
		rollout.Phase{Name: "canary", Selector: "cloud=aws", Approve: rollout.ApproveBoth, ApprovalTimeout: time.Hour},
		rollout.Phase{Name: "rest"},
	)
	out := h.submit("wf", spec)
	w := h.workflow("wf")
	if len(out.Commands) != 0 || w.Gate != "before:canary" || !w.GateExpires.Equal(t0.Add(time.Hour)) {
		t.Fatalf("started %v, gate %q expiring %v; want nothing started, waiting at before:canary for an hour", clusterIDs(out.Commands), w.Gate, w.GateExpires)
	}
	if got := events(out.Rows); !reflect.DeepEqual(got, []string{"submitted", "waiting-approval"}) {
		t.Fatalf("events %v", got)
	}
	if out := h.advance(59 * time.Minute); len(out.Commands) != 0 {
		t.Fatal("started before the approval")
	}
	// Approving the wrong phase is refused; the right one opens the gate.
	if out := h.do(Submit{Key: "wf/a1", Request: records.Request{Envelope: records.Envelope{ID: "a1", Principal: "dan"},
		Control: &records.ControlWorkflow{WorkflowID: "wf", Action: records.ActionApprove, Phase: "rest"}}}); len(out.Rows) != 1 ||
		!strings.Contains(out.Rows[0].Workflow.Reason, "waits at gate before:canary, not at phase rest") {
		t.Fatalf("approving the wrong phase: %+v", out.Rows)
	}
	out = h.control("wf", records.ActionApprove, "change ticket 42")
	if got := clusterIDs(out.Commands); !reflect.DeepEqual(got, []string{"c-000", "c-003", "c-006"}) {
		t.Fatalf("after approval started %v, want the aws canary", got)
	}
	if got := events(out.Rows); !reflect.DeepEqual(got, []string{"approved", "phase-started", "wave-started"}) {
		t.Fatalf("events %v", got)
	}
	for _, c := range out.Commands {
		h.result(c, records.OperationSucceeded, "")
	}
	h.now = h.now.Add(time.Second)
	for _, c := range out.Commands {
		if out := h.probe(c.ClusterID, records.HealthHealthy); len(out.Commands) != 0 {
			t.Fatalf("the next phase started %v before the after-gate was approved", clusterIDs(out.Commands))
		}
	}
	if w.Gate != "after:canary" {
		t.Fatalf("gate %q, want after:canary", w.Gate)
	}
	// Not approved in time: the rollout pauses, and still waits for the approval.
	h.advance(time.Hour)
	if w.State != records.WorkflowPaused || !strings.Contains(w.Reason, "after:canary was not approved in time") {
		t.Fatalf("state %s %q, want paused by the expired gate", w.State, w.Reason)
	}
	h.control("wf", records.ActionResume, "")
	if out := h.advance(time.Minute); len(out.Commands) != 0 || w.Gate != "after:canary" {
		t.Fatalf("resumed workflow skipped its gate: started %v", clusterIDs(out.Commands))
	}
	if out := h.control("wf", records.ActionApprove, ""); len(out.Commands) != 5 {
		t.Fatalf("after the after-gate, started %v, want the rest", clusterIDs(out.Commands))
	}
	if out := h.control("wf", records.ActionApprove, ""); len(out.Rows) != 1 || !strings.Contains(out.Rows[0].Workflow.Reason, "is not waiting for an approval") {
		t.Fatalf("approve with no gate: %+v", out.Rows)
	}
	// Who opened each gate is in the rows, the refused approvals left out.
	want := []GateApprovals{{Gate: "before:canary", By: []string{"carol"}, Opened: true}, {Gate: "after:canary", By: []string{"carol"}, Opened: true}}
	if got := w.Progress().Approvals; !reflect.DeepEqual(got, want) {
		t.Fatalf("approvals %+v, want %+v", got, want)
	}
}

func TestUnhealthyTargetsAreHeldOrSkipped(t *testing.T) {
	for _, policy := range []rollout.UnhealthyPolicy{rollout.HoldUnhealthy, rollout.SkipUnhealthy} {
		h := newHarness(t, fleet(3))
		h.probe("c-001", records.HealthUnhealthy, "2 partitions offline")
		spec := upgradeSpec()
		spec.UnhealthyTargets = policy
		out := h.submit("wf", spec)
		if got := clusterIDs(out.Commands); !reflect.DeepEqual(got, []string{"c-000", "c-002"}) {
			t.Fatalf("%q: started %v, want the healthy clusters only", policy, got)
		}
		w := h.workflow("wf")
		tg := w.Targets["c-001"]
		switch policy {
		case rollout.HoldUnhealthy:
			if tg.State != records.TargetPending || !strings.Contains(w.Waiting, "1 clusters are unhealthy and wait to recover") {
				t.Fatalf("hold: target %s, waiting %q", tg.State, w.Waiting)
			}
			h.now = h.now.Add(time.Second)
			if out := h.probe("c-001", records.HealthHealthy); !reflect.DeepEqual(clusterIDs(out.Commands), []string{"c-001"}) {
				t.Fatalf("hold: after recovery started %v, want c-001", clusterIDs(out.Commands))
			}
		case rollout.SkipUnhealthy:
			if tg.State != records.TargetSkipped || !strings.Contains(tg.Reason, "2 partitions offline") {
				t.Fatalf("skip: target %+v", tg)
			}
			for _, c := range out.Commands {
				h.result(c, records.OperationSucceeded, "")
			}
			h.now = h.now.Add(time.Second)
			h.probe("c-000", records.HealthHealthy)
			h.probe("c-002", records.HealthHealthy)
			if w.State != records.WorkflowSucceeded || !strings.Contains(w.Reason, "1 of 3 clusters skipped") {
				t.Fatalf("skip: ended %s %q", w.State, w.Reason)
			}
		}
	}
}

func TestConflictWaitOrReject(t *testing.T) {
	h := newHarness(t, fleet(3))
	h.submit("first", upgradeSpec())
	second := rollout.Spec{Name: "r", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{"c-001", "c-002"}, OnConflict: rollout.ConflictReject}
	out := h.submit("second", second)
	if w := out.Rows[1].Workflow; w.State != records.WorkflowRejected || !strings.Contains(w.Reason, "targets are in unfinished rollouts: c-001 (in first), c-002 (in first)") {
		t.Fatalf("reject: %+v", out.Rows[1].Workflow)
	}
	second.OnConflict = rollout.ConflictWait
	if out := h.submit("third", second); len(out.Commands) != 0 || h.workflow("third").State != records.WorkflowRunning {
		t.Fatalf("wait: started %v, state %s", clusterIDs(out.Commands), h.workflow("third").State)
	}
}

func TestRolloutsOnIsTheSameAfterARebuild(t *testing.T) {
	h := newHarness(t, fleet(4))
	first := h.submit("wf", upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}})).Commands
	h.result(first[0], records.OperationFailed, "boom")
	h.result(first[1], records.OperationSucceeded, "")
	rebuilt := h.rebuilt()
	for _, c := range fleet(4) {
		if live, again := h.s.RolloutsOn(c.ID), rebuilt.RolloutsOn(c.ID); !reflect.DeepEqual(live, again) {
			t.Errorf("%s: rollouts on it %v live, %v after a rebuild", c.ID, live, again)
		}
	}
}

func TestFailedOperationsAreRetriedWithBackoff(t *testing.T) {
	h := newHarness(t, fleet(2))
	spec := upgradeSpec()
	spec.Retries, spec.RetryBackoff, spec.OperationTimeout = 2, time.Minute, 10*time.Minute
	first := h.submit("wf", spec).Commands
	if first[0].Timeout != 10*time.Minute {
		t.Fatalf("command timeout %v, want the rollout's 10m", first[0].Timeout)
	}
	w := h.workflow("wf")
	h.result(first[0], records.OperationFailed, "broker did not come back")
	tg := w.Targets["c-000"]
	if w.State != records.WorkflowRunning || tg.State != records.TargetPending || !tg.NotBefore.Equal(t0.Add(time.Minute)) || w.Failed() != 0 {
		t.Fatalf("after a first failure: workflow %s, target %s until %v, %d failed; want a retry in 1m, nothing counted", w.State, tg.State, tg.NotBefore, w.Failed())
	}
	if !strings.Contains(w.Waiting, "1 clusters wait to retry") {
		t.Fatalf("waiting %q", w.Waiting)
	}
	if out := h.advance(59 * time.Second); len(out.Commands) != 0 {
		t.Fatal("retried before the backoff")
	}
	second := h.advance(time.Second).Commands
	if len(second) != 1 || second[0].Attempt != 2 || second[0].ID == first[0].ID {
		t.Fatalf("retry = %+v, want attempt 2 under a new command ID", second)
	}
	h.result(second[0], records.OperationFailed, "again")
	if !tg.NotBefore.Equal(h.now.Add(2 * time.Minute)) {
		t.Fatalf("second backoff until %v, want twice the first (2m)", tg.NotBefore)
	}
	third := h.advance(2 * time.Minute).Commands
	h.result(third[0], records.OperationFailed, "and again")
	if tg.State != records.TargetFailed || tg.Reason != "attempt 3 of 3 failed: and again" || w.State != records.WorkflowPaused {
		t.Fatalf("after the last attempt: target %s %q, workflow %s", tg.State, tg.Reason, w.State)
	}
}

func TestRetryRequestRunsFailedClustersAgain(t *testing.T) {
	h := newHarness(t, fleet(4))
	spec := upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}})
	spec.FailureThreshold = rollout.Threshold{Count: 2}
	pending := h.submit("wf", spec).Commands
	for len(pending) > 0 { // c-001 fails; the others succeed and are seen healthy
		c := pending[0]
		pending = pending[1:]
		status := records.OperationSucceeded
		if c.ClusterID == "c-001" {
			status = records.OperationFailed
		}
		pending = append(pending, h.result(c, status, "disk full").Commands...)
		h.now = h.now.Add(time.Second)
		if status == records.OperationSucceeded {
			pending = append(pending, h.probe(c.ClusterID, records.HealthHealthy).Commands...)
		}
	}
	w := h.workflow("wf")
	if w.State != records.WorkflowFailed {
		t.Fatalf("state %s, want failed", w.State)
	}
	out := h.control("wf", records.ActionRetry, "disk cleaned")
	if w.State != records.WorkflowRunning || w.Phase != 0 || w.Wave != 0 {
		t.Fatalf("after retry: %s at %d/%d, want running from the first wave", w.State, w.Phase, w.Wave)
	}
	if got := clusterIDs(out.Commands); !reflect.DeepEqual(got, []string{"c-001"}) || out.Commands[0].Attempt != 2 {
		t.Fatalf("retry started %v, want c-001 again, attempt 2", got)
	}
	h.result(out.Commands[0], records.OperationSucceeded, "")
	h.now = h.now.Add(time.Second)
	h.probe("c-001", records.HealthHealthy)
	h.probe("c-002", records.HealthHealthy)
	h.probe("c-003", records.HealthHealthy)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s), want succeeded once the retried cluster made it", w.State, w.Reason)
	}
	if out := h.control("wf", records.ActionRetry, ""); len(out.Rows) != 1 || !strings.Contains(out.Rows[0].Workflow.Reason, "is succeeded: there is nothing to retry") {
		t.Fatalf("retry of a succeeded workflow: %+v", out.Rows)
	}
}

func TestPausedByUnhealthyClustersResumesByItselfOnceTheyRecover(t *testing.T) {
	h := newHarness(t, fleet(6))
	spec := upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}})
	spec.AutoResume = 10 * time.Minute
	first := h.submit("wf", spec).Commands
	for _, c := range first {
		h.result(c, records.OperationSucceeded, "")
	}
	h.now = h.now.Add(time.Second)
	h.probe("c-001", records.HealthHealthy)
	h.probe("c-000", records.HealthUnhealthy, "under-replicated")
	w := h.workflow("wf")
	if w.State != records.WorkflowPaused || w.PausedBy != "threshold" {
		t.Fatalf("state %s by %q, want paused by the threshold", w.State, w.PausedBy)
	}
	h.now = h.now.Add(time.Minute)
	h.probe("c-000", records.HealthHealthy)
	if !w.ResumeAt.Equal(h.now.Add(10*time.Minute)) || w.State != records.WorkflowPaused {
		t.Fatalf("after recovery: %s, resume at %v; want still paused, resuming in 10m", w.State, w.ResumeAt)
	}
	// A relapse puts the resumption off; a slow recovery keeps it paused, failing nothing.
	h.now = h.now.Add(5 * time.Minute)
	h.probe("c-000", records.HealthUnhealthy, "under-replicated again")
	if !w.ResumeAt.IsZero() || w.State != records.WorkflowPaused {
		t.Fatalf("after a relapse: %s, resume at %v", w.State, w.ResumeAt)
	}
	if out := h.advance(time.Hour); len(out.Commands) != 0 || w.State != records.WorkflowPaused {
		t.Fatalf("a slow recovery: %s, started %v", w.State, clusterIDs(out.Commands))
	}
	h.probe("c-000", records.HealthHealthy)
	if out := h.advance(9 * time.Minute); len(out.Commands) != 0 {
		t.Fatal("resumed before the clusters were healthy for 10m")
	}
	out := h.advance(time.Minute)
	if w.State != records.WorkflowRunning || len(out.Commands) != 2 || w.Targets["c-000"].State != records.TargetSucceeded {
		t.Fatalf("after 10m healthy: %s, started %v, c-000 %s", w.State, clusterIDs(out.Commands), w.Targets["c-000"].State)
	}
	if got := events(out.Rows); !slices.Contains(got, "resumed") {
		t.Fatalf("events %v, want the resumption told", got)
	}
}

func TestAFailedOperationWaitsForAPerson(t *testing.T) {
	h := newHarness(t, fleet(4))
	spec := upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}})
	spec.AutoResume = time.Minute
	first := h.submit("wf", spec).Commands
	h.result(first[0], records.OperationFailed, "disk full")
	h.result(first[1], records.OperationSucceeded, "")
	h.now = h.now.Add(time.Second)
	h.probe(first[0].ClusterID, records.HealthHealthy)
	h.probe(first[1].ClusterID, records.HealthHealthy)
	if out := h.advance(time.Hour); len(out.Commands) != 0 || h.workflow("wf").State != records.WorkflowPaused {
		t.Fatal("a rollout paused by a failed operation resumed by itself")
	}
}

// TestOperationEventTimesAreBoundedByThePlannersClock feeds operation
// events stamped by an executor whose clock is a day ahead, or a day
// behind: the planner decides with its own clock, so a cluster unhealthy
// right after its operation still counts, and a health signal observed
// before the operation began never does.
func TestOperationEventTimesAreBoundedByThePlannersClock(t *testing.T) {
	spec := upgradeSpec(rollout.Phase{Name: "all", Bake: time.Minute})
	t.Run("from the future", func(t *testing.T) {
		h := newHarness(t, fleet(2))
		h.executorSkew = 24 * time.Hour
		first := h.submit("wf", spec).Commands
		h.result(first[0], records.OperationSucceeded, "")
		h.now = h.now.Add(time.Second)
		h.probe(first[0].ClusterID, records.HealthUnhealthy, "runs bad version")
		if w := h.workflow("wf"); w.Failed() != 1 {
			t.Fatalf("a cluster unhealthy a second after its operation, whose event is stamped a day ahead: %d failed, want 1 (the planner ignored the signal)", w.Failed())
		}
	})
	t.Run("from the past", func(t *testing.T) {
		h := newHarness(t, fleet(2))
		h.executorSkew = -24 * time.Hour
		started := h.now
		first := h.submit("wf", spec).Commands
		h.now = started.Add(time.Minute)
		h.result(first[0], records.OperationSucceeded, "")
		h.now = started.Add(-time.Hour) // a signal observed before the operation, delivered late
		h.probe(first[0].ClusterID, records.HealthUnhealthy, "was down before")
		h.now = started.Add(time.Minute)
		if w := h.workflow("wf"); w.Failed() != 0 {
			t.Fatalf("a health signal observed an hour before the operation began counted against it (event stamped a day behind): %d failed, want 0", w.Failed())
		}
	})
}

// A workflow's spec is written once, in its spec row; the header rows,
// written on every decision, carry only its name and operation, and a
// state rebuilt from the rows has the whole spec again.
func TestTheSpecIsWrittenOnce(t *testing.T) {
	h := newHarness(t, fleet(20))
	spec := upgradeSpec(rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 4}, MaxInFlight: 2})
	spec.Clusters = []string{"c-001", "c-002"}
	spec.Retries = 3
	h.submit("wf", spec)
	for range 100 {
		if h.s.Workflows["wf"].State.Terminal() {
			break
		}
		h.now = h.now.Add(time.Minute)
		for _, c := range h.commands {
			if h.target("wf", c.ClusterID).State == records.TargetRunning {
				h.result(c, records.OperationSucceeded, "")
			}
		}
		for id, tg := range h.s.Workflows["wf"].Targets {
			if tg.State == records.TargetSucceeded {
				h.probe(id, records.HealthHealthy)
			}
		}
		h.do(Tick{})
	}
	if st := h.s.Workflows["wf"].State; st != records.WorkflowSucceeded {
		t.Fatalf("workflow %s, want succeeded", st)
	}
	specRows, headers := 0, 0
	for _, r := range h.rows {
		switch {
		case r.Spec != nil:
			specRows++
			if !reflect.DeepEqual(r.Spec.Spec, h.s.Workflows["wf"].Spec) || r.Spec.WorkflowID != "wf" {
				t.Errorf("spec row %+v, want the workflow's whole spec", r.Spec)
			}
		case r.Workflow != nil:
			headers++
			if !reflect.DeepEqual(r.Workflow.Spec, records.SpecSummary(spec)) {
				t.Errorf("header row %d (%s) carries spec %+v, want only its name and operation", r.Workflow.Seq, r.Workflow.Event, r.Workflow.Spec)
			}
		}
	}
	if specRows != 1 || headers < 5 {
		t.Fatalf("%d spec rows and %d header rows, want 1 spec row and a header per decision", specRows, headers)
	}
	// The rows in any order (compaction keeps the newest of each key, and
	// the spec row is older than every header).
	rev := NewState(h.s.Inventory, nil)
	for i := len(h.rows) - 1; i >= 0; i-- {
		rev.ApplyRow(0, h.rows[i])
	}
	for _, s := range []*State{h.rebuilt(), rev} {
		if got := s.Workflows["wf"].Spec; !reflect.DeepEqual(got, h.s.Workflows["wf"].Spec) {
			t.Fatalf("rebuilt spec %+v, want %+v", got, h.s.Workflows["wf"].Spec)
		}
	}
}
