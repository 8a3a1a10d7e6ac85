package decide

import (
	"testing"

	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// TestApplyTombstone applies tombstones of workflows rows whose keys have
// more than one '/': a cluster ID with a '/', and a rollback's workflow ID.
func TestApplyTombstone(t *testing.T) {
	s := NewState(nil, nil)
	rows := []records.WorkflowRecord{
		{Workflow: &records.Workflow{ID: "w1", State: records.WorkflowRunning}},
		{Target: &records.Target{WorkflowID: "w1", ClusterID: "eu/c1"}},
		{Target: &records.Target{WorkflowID: "w1", ClusterID: "c2"}},
		{Workflow: &records.Workflow{ID: records.RollbackID("w1"), State: records.WorkflowRunning}},
		{Target: &records.Target{WorkflowID: records.RollbackID("w1"), ClusterID: "c2"}},
	}
	for _, r := range rows {
		s.ApplyRow(0, r)
	}
	s.ApplyTombstone("w1/eu/c1")
	s.ApplyTombstone("w1/rollback/c2")
	w, r := s.Workflows["w1"], s.Workflows["w1/rollback"]
	if _, ok := w.Targets["eu/c1"]; ok || len(w.Targets) != 1 || len(r.Targets) != 0 {
		t.Fatalf("after the target tombstones: w1 %v, w1/rollback %v", w.Targets, r.Targets)
	}
	s.ApplyTombstone("w1/rollback")
	if _, ok := s.Workflows["w1/rollback"]; ok || s.Workflows["w1"] == nil {
		t.Fatal("the rollback's tombstone did not forget it alone")
	}
}
