package planner

import (
	"net/http/httptest"
	"testing"

	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/metrics/metricstest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// TestWorkflowGaugeFollowsTransitionsAndRecounts: committed header rows
// move a workflow from state to state, target rows do not count, a
// workflow no longer held is not counted, and a recount (partitions
// assigned or revoked) replaces what was counted.
func TestWorkflowGaugeFollowsTransitionsAndRecounts(t *testing.T) {
	reg := metrics.NewRegistry()
	m, err := metrics.NewPlanner(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	counts := func() map[string]float64 {
		t.Helper()
		fams, err := metricstest.Scrape(t.Context(), srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, s := range workflowStates {
			if v := fams.Value("flotilla_planner_workflows", "state", string(s)); v != 0 {
				out[string(s)] = v
			}
		}
		if !fams.Has("flotilla_planner_workflows") {
			t.Fatal("no flotilla_planner_workflows")
		}
		return out
	}
	header := func(id string, s records.WorkflowState) records.WorkflowRecord {
		return records.WorkflowRecord{Workflow: &records.Workflow{ID: id, State: s}}
	}
	want := func(got, want map[string]float64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("workflows by state %v, want %v", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("workflows by state %v, want %v", got, want)
			}
		}
	}

	hold := func(states map[string]records.WorkflowState) map[string]*decide.Workflow {
		held := map[string]*decide.Workflow{}
		for id, s := range states {
			w := &decide.Workflow{}
			w.ID, w.State = id, s
			held[id] = w
		}
		return held
	}

	g := newWorkflowGauge(m)
	want(counts(), map[string]float64{})
	g.committed(decide.Outputs{Rows: []records.WorkflowRecord{
		header("a", records.WorkflowRunning), header("b", records.WorkflowRunning),
		{Target: &records.Target{WorkflowID: "a", ClusterID: "c1"}},
	}}, hold(map[string]records.WorkflowState{"a": records.WorkflowRunning, "b": records.WorkflowRunning}))
	want(counts(), map[string]float64{"running": 2})
	g.committed(decide.Outputs{Rows: []records.WorkflowRecord{header("a", records.WorkflowPaused), header("a", records.WorkflowSucceeded), header("b", records.WorkflowRunning)}},
		hold(map[string]records.WorkflowState{"a": records.WorkflowSucceeded, "b": records.WorkflowRunning}))
	want(counts(), map[string]float64{"running": 1, "succeeded": 1})
	// b's partition was revoked between the commit and its count.
	g.committed(decide.Outputs{Rows: []records.WorkflowRecord{header("b", records.WorkflowPaused)}},
		hold(map[string]records.WorkflowState{"a": records.WorkflowSucceeded}))
	want(counts(), map[string]float64{"succeeded": 1})

	// c is read from a partition assigned.
	g.recount(hold(map[string]records.WorkflowState{"a": records.WorkflowSucceeded, "c": records.WorkflowFailed}))
	want(counts(), map[string]float64{"succeeded": 1, "failed": 1})

	newWorkflowGauge(nil).committed(decide.Outputs{Rows: []records.WorkflowRecord{header("a", records.WorkflowRunning)}}, nil) // no metrics: nothing kept
}
