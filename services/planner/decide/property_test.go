package decide

import (
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// TestInvariants drives random rollouts through random sequences of
// operation results, health signals and the passing of time, and checks
// after every decision the rules a user relies on:
//   - never more clusters in flight in a phase than its maxInFlight;
//   - no cluster in two running operations;
//   - nothing starts in a paused, cancelled or finished workflow, whoever
//     paused or cancelled it (until a person resumes or retries it);
//   - no cluster starts outside its maintenance windows, nor while it is
//     unhealthy, nor before its retry backoff has passed;
//   - no phase starts before its approval gate, nor after a phase whose
//     gate after it is not approved;
//   - a wave starts only after every earlier wave finished, baked for its
//     bake time and was probed since;
//   - a rollback touches only clusters its workflow changed, and sets each
//     back to the version it ran before; it starts as soon as no
//     operation of its workflow is in flight;
//   - the state rebuilt from the rows written equals the live state.
func TestInvariants(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 50
	}
	for seed := int64(1); seed <= int64(seeds); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runRandomRollouts(t, seed) })
	}
}

func randomWaves(r *rand.Rand) rollout.Waves {
	switch r.Intn(4) {
	case 0:
		return rollout.Waves{}
	case 1:
		return rollout.Waves{Mode: rollout.WaveCount, Value: 1 + r.Intn(5)}
	case 2:
		return rollout.Waves{Mode: rollout.WavePercent, Value: 10 + r.Intn(60)}
	default:
		return rollout.Waves{Mode: rollout.WaveExponential, Value: 1 + r.Intn(2)}
	}
}

func randomSpec(r *rand.Rand) rollout.Spec {
	spec := upgradeSpec()
	selectors := []string{"tier=internal", "cloud=azure", "cloud in (aws,gcp)", "cloud=gcp"}
	gates := []rollout.Approval{rollout.ApproveNone, rollout.ApproveNone, rollout.ApproveBefore, rollout.ApproveAfter, rollout.ApproveBoth}
	for i, n := 0, r.Intn(3); i < n; i++ {
		spec.Phases = append(spec.Phases, rollout.Phase{
			Name: fmt.Sprintf("p%d", i), Selector: selectors[r.Intn(len(selectors))], Waves: randomWaves(r),
			MaxInFlight: r.Intn(4), Bake: time.Duration(r.Intn(3)) * time.Minute, Approve: gates[r.Intn(len(gates))],
		})
	}
	spec.Phases = append(spec.Phases, rollout.Phase{Name: "rest", Waves: randomWaves(r), MaxInFlight: r.Intn(4), Bake: time.Duration(r.Intn(3)) * time.Minute})
	actions := []rollout.ThresholdAction{rollout.ThresholdPause, rollout.ThresholdPause, rollout.ThresholdAbort, rollout.ThresholdRollback}
	if r.Intn(2) == 0 {
		spec.FailureThreshold = rollout.Threshold{Count: 1 + r.Intn(4)}
	} else {
		spec.FailureThreshold = rollout.Threshold{Percent: 5 + r.Intn(30)}
	}
	spec.FailureThreshold.Action = actions[r.Intn(len(actions))]
	if r.Intn(3) == 0 {
		spec.Phases[0].FailureThreshold = rollout.Threshold{Count: 1, Action: actions[r.Intn(len(actions))]}
	}
	if r.Intn(3) == 0 {
		spec.Selector = ""
		spec.Clusters = []string{"c-001", "c-002", "c-005", "c-010"}
	}
	if r.Intn(2) == 0 {
		spec.UnhealthyTargets = rollout.SkipUnhealthy
	}
	spec.Retries, spec.RetryBackoff = r.Intn(3), time.Duration(r.Intn(120))*time.Second
	if r.Intn(2) == 0 {
		spec.AutoResume = time.Duration(1+r.Intn(5)) * time.Minute
	}
	if r.Intn(2) == 0 { // the runs start at 12:00 UTC and last a few hours
		from := 11 + r.Intn(5)
		spec.Windows = append(spec.Windows, rollout.WindowRule{
			Selector: selectors[r.Intn(len(selectors))],
			Allow:    []string{fmt.Sprintf("%02d:00-%02d:30 UTC", from, from+1)},
		})
	}
	return spec
}

func runRandomRollouts(t *testing.T, seed int64) {
	r := rand.New(rand.NewSource(seed))
	clusters := fleet(5 + r.Intn(30))
	h := newHarness(t, clusters)
	h.shadow = seed%5 == 0 // a rebuild per decision: on a fifth of the seeds
	if seed%4 == 1 {
		h.s.Retention = 20 * time.Minute // finished workflows are compacted during the run
	}
	if seed%3 == 2 {
		h.s.PlanChunk = 2 + int(seed/3%4) // rollouts are planned over several ticks
	}
	var ids []string
	for i, n := 0, 1+r.Intn(3); i < n; i++ {
		id := fmt.Sprintf("wf-%d", i)
		ids = append(ids, id)
		h.submit(id, randomSpec(r))
		checkInvariants(t, h)
	}
	actions := []records.ControlAction{records.ActionPause, records.ActionResume, records.ActionResume, records.ActionCancel,
		records.ActionApprove, records.ActionApprove, records.ActionApprove, records.ActionRetry, records.ActionRollback}
	for step := 0; step < 400; step++ {
		if r.Intn(15) == 0 { // a person steps in, on a rollout or a rollback
			all := slices.Sorted(maps.Keys(h.s.Workflows))
			h.control(all[r.Intn(len(all))], actions[r.Intn(len(actions))], "random")
			checkInvariants(t, h)
			continue
		}
		switch k := r.Intn(10); {
		case k < 5: // a running operation finishes
			var running []records.Command
			for _, id := range slices.Sorted(maps.Keys(h.s.Workflows)) {
				running = append(running, h.running(id)...)
			}
			if len(running) == 0 {
				continue
			}
			c := running[r.Intn(len(running))]
			status := records.OperationSucceeded
			if r.Intn(8) == 0 {
				status = records.OperationFailed
			}
			h.result(c, status, "random failure")
		case k < 8: // the monitor reports a cluster
			status := records.HealthHealthy
			if r.Intn(8) == 0 {
				status = records.HealthUnhealthy
			}
			h.probe(clusters[r.Intn(len(clusters))].ID, status, "random")
		default:
			h.advance(time.Duration(r.Intn(90)) * time.Second)
		}
		checkInvariants(t, h)
	}
	assertSameState(t, h.s, h.rebuilt())
}

func checkInvariants(t *testing.T, h *harness) {
	t.Helper()
	inFlight := map[string]string{}
	for _, w := range h.s.Workflows {
		if _, started := h.s.Workflows[records.RollbackID(w.ID)]; w.State == records.WorkflowRollingBack && !started && w.count(records.TargetRunning) == 0 {
			t.Fatalf("%s is rolling back with no operation in flight, but its rollback has not started", w.ID)
		}
		perPhase := map[int]int{}
		for _, tg := range w.Targets {
			if tg.State != records.TargetRunning {
				continue
			}
			perPhase[tg.Phase]++
			if other, ok := inFlight[tg.ClusterID]; ok {
				t.Fatalf("cluster %s runs operations of %s and %s at once", tg.ClusterID, other, w.ID)
			}
			inFlight[tg.ClusterID] = w.ID
			if tg.Phase != w.Phase || tg.Wave != w.Wave {
				t.Fatalf("%s: target %s of phase %d wave %d runs while the current wave is %d/%d", w.ID, tg.ClusterID, tg.Phase, tg.Wave, w.Phase, w.Wave)
			}
		}
		for p, n := range perPhase {
			if limit := w.Phases[p].MaxInFlight; limit > 0 && n > limit {
				t.Fatalf("%s phase %d: %d clusters in flight, limit %d", w.ID, p, n, limit)
			}
		}
	}
}

// checkRollbackCommands checks that the commands of a rollback go only to
// clusters that the workflow it rolls back changed, each back to the
// version it ran before.
func checkRollbackCommands(t testing.TB, s *State, sent []records.Command, target func(workflowID, clusterID string) *records.Target) {
	t.Helper()
	for _, c := range sent {
		w := s.Workflows[c.WorkflowID]
		if w.RollbackOf == "" {
			continue
		}
		parent := s.Workflows[w.RollbackOf]
		changed := target(w.RollbackOf, c.ClusterID)
		switch {
		case changed == nil || !applied(changed):
			t.Fatalf("rollback %s sent a command to %s, which %s did not change (%+v)", w.ID, c.ClusterID, w.RollbackOf, changed)
		case parent.Spec.Operation.Kind != rollout.Upgrade:
			continue // config rollbacks are checked by TestInverseOperation
		case changed.PreviousVersion == changed.Version:
			t.Fatalf("rollback %s sent a command to %s, which %s left at version %s", w.ID, c.ClusterID, w.RollbackOf, changed.Version)
		case c.Operation.Kind != rollout.Upgrade || c.Operation.Version != changed.PreviousVersion || c.Operation.ExpectVersion != changed.Version:
			t.Fatalf("rollback %s sets %s to %+v, want version %s, which it ran before", w.ID, c.ClusterID, c.Operation, changed.PreviousVersion)
		}
	}
}

// checkWaveOrder looks at the commands of one decision: when each was
// sent, every earlier wave of its workflow had finished and baked.
func checkWaveOrder(t testing.TB, s *State, sent []records.Command) {
	t.Helper()
	for _, c := range sent {
		w := s.Workflows[c.WorkflowID]
		tg := w.Targets[c.ClusterID]
		sentAt := c.Envelope.Time
		for _, other := range w.Targets {
			earlier := other.Phase < tg.Phase || (other.Phase == tg.Phase && other.Wave < tg.Wave)
			if !earlier {
				continue
			}
			if other.State == records.TargetPending || other.State == records.TargetRunning || other.FinishedAt.After(sentAt) {
				t.Fatalf("%s: %s (phase %d wave %d) started at %v before %s of an earlier wave finished (%s, %v)",
					w.ID, c.ClusterID, tg.Phase, tg.Wave, sentAt, other.ClusterID, other.State, other.FinishedAt)
			}
			bake := w.Phases[other.Phase].Bake
			if other.Phase == tg.Phase && other.Wave == tg.Wave-1 && other.State == records.TargetSucceeded && sentAt.Before(other.FinishedAt.Add(bake)) {
				t.Fatalf("%s: %s started at %v before the previous wave baked (%s finished %v, bake %v)",
					w.ID, c.ClusterID, sentAt, other.ClusterID, other.FinishedAt, bake)
			}
		}
	}
}
