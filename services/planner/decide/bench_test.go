package decide

import (
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// BenchmarkOperationResult measures the cost of one operation result in a
// workflow of N targets moving in waves of 500 (a wave's commands all go
// out at once), and BenchmarkOperationResultOneWave in a workflow
// whose one wave holds all N, 100 in flight (so that, at either size,
// nearly every result starts the next target). Compare the sub-benchmarks:
// the cost per result should not grow with the size of the workflow or of
// the wave, so the ratio of targets=100000 to targets=1000 should stay
// near 1.
func BenchmarkOperationResult(b *testing.B) {
	benchmarkResults(b, rollout.Phase{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 500}})
}

func BenchmarkOperationResultOneWave(b *testing.B) {
	benchmarkResults(b, rollout.Phase{Name: "all", MaxInFlight: 100})
}

func benchmarkResults(b *testing.B, phase rollout.Phase) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			h := newHarness(b, fleet(n))
			spec := upgradeSpec(phase)
			spec.FailureThreshold = rollout.Threshold{Percent: 100}
			wf, round := "wf-0", 0
			pending := benchSubmit(h, wf, spec)
			b.ResetTimer()
			for i := 0; i < b.N; {
				if len(pending) == 0 {
					b.StopTimer()
					// Let the finished wave pass its health gate.
					h.now = h.now.Add(time.Second)
					if h.s.Workflows[wf].State.Terminal() { // all done: roll out again
						round++
						wf = fmt.Sprintf("wf-%d", round)
						pending = benchSubmit(h, wf, spec)
						b.StartTimer()
						continue
					}
					// The monitor sees the wave: its last signal starts the next.
					w := h.s.Workflows[wf]
					for _, id := range w.WaveTargets(w.Phase, w.Wave) {
						if w.Targets[id].State == records.TargetSucceeded {
							out := Decide(h.s, HealthUpdate{Health: records.Health{ClusterID: id, Status: records.HealthHealthy, ObservedAt: h.now}}, h.now)
							pending = append(pending, out.Commands...)
						}
					}
					pending = append(pending, Decide(h.s, Tick{}, h.now).Commands...)
					if len(pending) == 0 && !h.s.Workflows[wf].State.Terminal() {
						b.Fatalf("workflow stuck after %d results: %s", i, h.s.Workflows[wf].State)
					}
					b.StartTimer()
					continue
				}
				c := pending[0]
				pending = pending[1:]
				out := Decide(h.s, OperationUpdate{Event: records.OperationEvent{
					Envelope: records.Envelope{ID: c.ID, Time: h.now}, CommandID: c.ID, WorkflowID: c.WorkflowID,
					ClusterID: c.ClusterID, Status: records.OperationSucceeded, Version: "3.9.1",
				}}, h.now)
				pending = append(pending, out.Commands...)
				i++
			}
		})
	}
}

// BenchmarkHeartbeat measures the cost of a health signal that changes
// nothing — the status the planner had, for a cluster probed since its
// operation — in a workflow whose one wave holds N targets, half of them
// done and seen healthy, in a fleet of 100,000 clusters that all report
// their health. The signals go round 500 of the done clusters at every
// size ("signals=500"), so that the sizes compare the work a heartbeat
// does, which should not grow with the wave (the ratio of targets=100000
// to targets=1000 near 1); and round all of them ("signals=all"), which
// adds what the processor's caches do: at 1,000 targets the 500 clusters
// stay in them, at 100,000 the 50,000 do not.
func BenchmarkHeartbeat(b *testing.B) {
	const fleetSize = 100000
	for _, spread := range []string{"500", "all"} {
		for _, n := range []int{1000, 10000, 100000} {
			b.Run(fmt.Sprintf("signals=%s/targets=%d", spread, n), func(b *testing.B) {
				benchmarkHeartbeat(b, fleetSize, n, spread == "all")
			})
		}
	}
}

func benchmarkHeartbeat(b *testing.B, fleetSize, n int, all bool) {
	clusters := fleet(fleetSize)
	for i := range n {
		clusters[i].Labels["wave"] = "one"
	}
	h := newHarness(b, clusters)
	for _, c := range clusters {
		h.s.SetHealth(records.Health{ClusterID: c.ID, Status: records.HealthHealthy, ObservedAt: h.now})
	}
	spec := upgradeSpec(rollout.Phase{Name: "all"})
	spec.Selector = "wave=one"
	spec.FailureThreshold = rollout.Threshold{Percent: 100}
	commands := benchSubmit(h, "wf", spec)
	if len(commands) != n {
		b.Fatalf("%d commands for a one-wave rollout of %d clusters", len(commands), n)
	}
	// Half the wave done and seen healthy, set up directly: through
	// Decide, as many results would take as long as the benchmark
	// of operation results says.
	done := commands[:n/2]
	signalled := done
	if !all {
		signalled = done[:min(len(done), 500)]
	}
	w := h.s.Workflows["wf"]
	for _, c := range done {
		t := w.Targets[c.ClusterID]
		t.State, t.FinishedAt = records.TargetSucceeded, h.now
		h.s.SetHealth(records.Health{ClusterID: c.ClusterID, Status: records.HealthHealthy, ObservedAt: h.now.Add(time.Second)})
	}
	h.s.Reindex()
	h.now = h.now.Add(time.Second)
	h.rows, h.commands = nil, nil
	// The first signal after a load indexes the wave, once per
	// wave (see waveIndex); the benchmark is of those after it.
	Decide(h.s, Tick{}, h.now)
	b.ResetTimer()
	for i := range b.N {
		id := signalled[i%len(signalled)].ClusterID
		out := Decide(h.s, HealthUpdate{Health: records.Health{ClusterID: id, Status: records.HealthHealthy, ObservedAt: h.now}}, h.now)
		if len(out.Rows) != 0 || len(out.Commands) != 0 {
			b.Fatalf("a heartbeat decided %d rows and %d commands", len(out.Rows), len(out.Commands))
		}
	}
}

// benchSubmit submits a rollout through Decide itself, not the harness,
// whose checks of every command are quadratic in a wave this large, and
// ticks until its plan is written (see plan.go); it returns the commands
// sent.
func benchSubmit(h *harness, id string, spec rollout.Spec) []records.Command {
	commands := Decide(h.s, Submit{Key: id, Request: records.Request{
		Envelope: records.Envelope{ID: id, Time: h.now, Principal: "alice"},
		Submit:   &records.SubmitRollout{Spec: spec},
	}}, h.now).Commands
	for h.s.Planning() {
		commands = append(commands, Decide(h.s, Tick{}, h.now).Commands...)
	}
	return commands
}
