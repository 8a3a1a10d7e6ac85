package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// TestAFinishedRolloutKeepsItsSummaryAndItsClustersHistory runs a rollout
// to its end and lets its retention pass: the planner tombstones its target
// rows and commands, the executor its operation records, and what stays is
// its header row (the summary) and each cluster's history entry. A planner
// started afterwards holds the summary only, and refuses to retry it. An
// executor that was down meanwhile removes the operation records when it
// takes its partitions back.
func TestAFinishedRolloutKeepsItsSummaryAndItsClustersHistory(t *testing.T) {
	t.Parallel()
	for _, down := range []bool{false, true} {
		name := "executor up"
		if down {
			name = "executor down"
		}
		t.Run(name, func(t *testing.T) { checkRetention(t, down) })
	}
}

func checkRetention(t *testing.T, executorDown bool) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 6, Retention: time.Hour})
	targets := []string{f.Clusters[0].ID, f.Clusters[1].ID, f.Clusters[2].ID}
	id := f.Submit(rollout.Spec{Name: "restart three", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: targets})
	if w := f.Await(id, time.Second, time.Minute, "the rollout finishing", finished); w.State != records.WorkflowSucceeded {
		t.Fatalf("rollout %s: %s (%s)", id, w.State, w.Reason)
	}
	if executorDown {
		f.StopService("executor")
	}
	f.Await(id, time.Minute, time.Minute, "its rows removed after the retention", func(w *decide.Workflow) bool { return w.Compacted() })
	if executorDown {
		f.StartService("executor")
	}

	names := f.Backbone.Names()
	gone := func(topic string) bool {
		last := map[string][]byte{}
		for _, r := range f.ReadAll(topic) {
			last[string(r.Key)] = r.Value
		}
		for _, c := range targets {
			if v, ok := last[topics.TargetKey(id, c)]; !ok || v != nil {
				return false
			}
		}
		return true
	}
	for _, topic := range []string{names.Workflows, names.Commands} {
		if !gone(topic) {
			t.Errorf("%s: the rollout's records are not all tombstoned", topic)
		}
	}
	if !f.Eventually(0, 30*time.Second, func() bool { return gone(names.Operations) }) {
		t.Errorf("%s: the executor did not tombstone the rollout's operation records", names.Operations)
	}
	history := map[string]records.Target{}
	for _, r := range f.ReadAll(names.History) {
		if rec, err := records.DecodeWorkflowRecord(r.Value); err == nil && rec.Target != nil && rec.Target.WorkflowID == id {
			history[rec.Target.ClusterID] = *rec.Target
		}
	}
	for _, c := range targets {
		if h, ok := history[c]; !ok || h.State != records.TargetSucceeded || h.Operation.Kind != rollout.Restart {
			t.Errorf("history of %s: %+v, want the rollout's restart, succeeded", c, h)
		}
	}

	f.StopService("planner")
	f.StartService("planner")
	ctl := control(f, id, records.ActionRetry, "again")
	w := f.Await(ctl, time.Second, time.Minute, "the retry answered", func(w *decide.Workflow) bool { return w.State != "" })
	if w.State != records.WorkflowRejected || !strings.Contains(w.Reason, "cluster history") {
		t.Fatalf("retry of a compacted rollout: %s (%s), want rejected, pointing at the history", w.State, w.Reason)
	}
	if s, ok := f.Workflow(id); !ok || !s.Compacted() || s.State != records.WorkflowSucceeded || s.Workflow.Targets != len(targets) {
		t.Fatalf("the summary after a restart: %+v", s)
	}
}
