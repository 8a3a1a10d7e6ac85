package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/metrics/metricstest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// TestEveryServiceServesItsMetrics runs a rollout through the four
// services with their metrics on one registry, served on a free port, and
// scrapes /metrics over HTTP until every service's metrics say what the
// rollout did: operations succeeded for every cluster, the workflow
// succeeded, decisions, catch-ups, probes, health signals and
// notifications counted, and each service's Kafka clients read and wrote.
func TestEveryServiceServesItsMetrics(t *testing.T) {
	t.Parallel()
	reg := metrics.NewRegistry()
	ln, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- metrics.ServeListener(ctx, ln, reg, "") }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	}()
	url := "http://" + ln.Addr().String() + metrics.Path

	const clusters = 8
	f := fleettest.Start(t, fleettest.Options{Clusters: clusters, Metrics: reg})
	id := f.Submit(rollout.Spec{
		Name: "up", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Selector: "kind=kafka",
		Phases: []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}}},
	})
	w := f.Await(id, time.Second, 2*time.Minute, "the rollout finishing", func(w *decide.Workflow) bool { return w.State.Terminal() })
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("the rollout ended %s (%s)", w.State, w.Reason)
	}
	rolled := float64(len(w.Targets))

	metricstest.Await(t, url, 30*time.Second, func(m metricstest.Families) string {
		checks := []check{
			{"operations succeeded ≥ clusters rolled", m.Value("flotilla_executor_operations_total", "outcome", "succeeded") >= rolled},
			{"no operation failed", m.Has("flotilla_executor_operations_total") && m.Value("flotilla_executor_operations_total", "outcome", "failed") == 0},
			{"operation durations observed", m.Value("flotilla_executor_operation_duration_seconds", "outcome", "succeeded") >= rolled},
			{"nothing in flight once done", m.Has("flotilla_executor_operations_in_flight") && m.Value("flotilla_executor_operations_in_flight") == 0},
			{"the workflow counted as succeeded", m.Value("flotilla_planner_workflows", "state", "succeeded") == 1},
			{"no workflow running", m.Has("flotilla_planner_workflows") && m.Value("flotilla_planner_workflows", "state", "running") == 0},
			{"decisions timed", m.Value("flotilla_planner_decision_seconds") > 0},
			{"inventory caught up once", m.Value("flotilla_planner_table_catchup_seconds", "table", "inventory") == 1},
			{"health and policies caught up", m.Value("flotilla_planner_table_catchup_seconds", "table", "health") == 1 &&
				m.Value("flotilla_planner_table_catchup_seconds", "table", "policies") == 1},
			{"workflows read on assignment", m.Value("flotilla_planner_table_catchup_seconds", "table", "workflows") >= 1},
			{"probes timed", m.Value("flotilla_monitor_probe_duration_seconds") >= clusters},
			{"no probe failed", m.Has("flotilla_monitor_probe_failures_total") && m.Value("flotilla_monitor_probe_failures_total") == 0},
			{"health changes published", m.Value("flotilla_monitor_health_signals_total", "kind", "change") >= clusters},
			{"drifted clusters exposed", m.Has("flotilla_monitor_drifted_clusters")},
			{"the success notified", m.Value("flotilla_notifier_notifications_total", "kind", "workflow.succeeded", "severity", "info") == 1},
			{"operations notified", m.Value("flotilla_notifier_notifications_total", "kind", "operation.succeeded") >= rolled},
			{"Go runtime metrics", m.Value("go_goroutines") > 0},
		}
		for _, service := range fleettest.Services {
			checks = append(checks,
				check{service + " produced", m.Value("kgo_produce_bytes_total", "service", service) > 0},
				check{service + " fetched", m.Value("kgo_fetch_bytes_total", "service", service) > 0},
				check{service + " connected", m.Value("kgo_connects_total", "service", service) > 0},
			)
		}
		return failing(checks)
	})

	// A cluster changed behind Flotilla's back drifts from what the
	// rollout left: the monitor's gauge counts it.
	changed := w.WaveTargets(0, 0)[0]
	if err := f.Sim.Change(context.Background(), changed, func(s *simfleet.State) { s.Version = "3.7.0" }); err != nil {
		t.Fatal(err)
	}
	drifted := func() float64 {
		m, err := metricstest.Scrape(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		return m.Value("flotilla_monitor_drifted_clusters")
	}
	if !f.Eventually(time.Second, time.Minute, func() bool { return drifted() == 1 }) {
		t.Fatalf("flotilla_monitor_drifted_clusters is %v, not 1, after %s was changed", drifted(), changed)
	}
}

// check is one condition on a scrape.
type check struct {
	what string
	ok   bool
}

// failing says which checks do not hold, "" if all do.
func failing(checks []check) string {
	var missing []string
	for _, c := range checks {
		if !c.ok {
			missing = append(missing, c.what)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprint("not yet: ", missing)
	}
	return ""
}
