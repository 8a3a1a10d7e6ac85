package decide

import (
	"reflect"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// driftHarness is a planner owning every partition of 3, with a policy
// that corrects the drift of the staging clusters, one an hour.
func driftHarness(t *testing.T) *harness {
	clusters := fleet(4)
	for i := range clusters {
		if i%2 == 0 {
			clusters[i].Labels["env"] = "staging"
		}
	}
	h := newHarness(t, clusters)
	h.s.Partitions = 3
	h.s.Owns = func(int32) bool { return true }
	h.s.Policies["heal"] = rollout.Policy{Name: "heal", Phases: []rollout.Phase{{Name: "all", Bake: time.Minute}},
		DriftCorrection: rollout.DriftCorrection{Enabled: true, Selector: "env=staging", MaxPerHour: 1}}
	return h
}

// drifted is a health signal of cluster id reporting drift.
func (h *harness) drifted(id string, items ...records.DriftItem) Outputs {
	h.t.Helper()
	return h.do(HealthUpdate{Health: records.Health{
		Envelope:  records.Envelope{ID: h.id("health"), Time: h.now, Principal: "monitor"},
		ClusterID: id, Status: records.HealthHealthy, ObservedAt: h.now, ObservedVersion: "3.8.0", Drift: items, DriftChanged: true,
	}})
}

// corrections returns the drift corrections the planner made, by cluster.
func (h *harness) corrections() map[string][]*Workflow {
	out := map[string][]*Workflow{}
	for _, w := range h.s.Workflows {
		if c, ok := correctionOf(w, "heal"); ok {
			out[c] = append(out[c], w)
		}
	}
	return out
}

var versionDrift = records.DriftItem{Key: "version", Observed: "3.8.0", Desired: "3.9.1"}

func TestDriftCorrection(t *testing.T) {
	h := driftHarness(t)
	staging, prod, staging2 := "c-000", "c-001", "c-002"

	out := h.drifted(staging, versionDrift, records.DriftItem{Key: "log.retention.ms", Observed: "1", Desired: "2"})
	fixes := h.corrections()[staging]
	if len(fixes) != 1 {
		t.Fatalf("corrections of %s: %d, want 1", staging, len(fixes))
	}
	w := fixes[0]
	home := h.s.driftHome("heal")
	wantOp := rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1", ExpectVersion: "3.8.0"}
	if w.State != records.WorkflowRunning || !reflect.DeepEqual(w.Spec.Operation, wantOp) || w.Spec.Clusters[0] != staging ||
		len(w.Phases) != 1 || w.Phases[0].Name != "all" || w.Partition != home || topics.PartitionOf(w.ID, 3) != home {
		t.Fatalf("correction %+v (partition %d, home %d), want a running upgrade of %s under the policy's phases, on its home partition", w.Workflow, w.Partition, home, staging)
	}
	if len(out.Commands) != 1 || out.Commands[0].ClusterID != staging || !reflect.DeepEqual(out.Commands[0].Operation, wantOp) {
		t.Fatalf("commands %+v, want the upgrade of %s", out.Commands, staging)
	}
	if out.Rows[0].Envelope.CausationID == "" {
		t.Errorf("the correction's rows name no cause")
	}

	// Outside the policy's selector: nothing.
	h.drifted(prod, versionDrift)
	// In flight already: nothing more.
	h.drifted(staging, versionDrift)
	// Over the hour's budget: nothing.
	h.drifted(staging2, versionDrift)
	if got := h.corrections(); len(got) != 1 || len(got[staging]) != 1 {
		t.Fatalf("corrections %v, want only the first", got)
	}

	// The correction runs like any rollout; once it is done and the hour
	// has passed, the next drifted cluster is corrected.
	h.result(out.Commands[0], records.OperationSucceeded, "")
	h.probe(staging, records.HealthHealthy)
	h.advance(2 * time.Minute)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("correction %s (%s), want succeeded", w.State, w.Reason)
	}
	h.now = h.now.Add(time.Hour)
	h.drifted(staging2, versionDrift)
	if len(h.corrections()[staging2]) != 1 {
		t.Fatalf("no correction of %s after the hour", staging2)
	}
	// The config, still drifted, is corrected next (the budget allows it
	// an hour later).
	h.now = h.now.Add(time.Hour)
	h.drifted(staging, records.DriftItem{Key: "log.retention.ms", Observed: "1", Desired: "2"})
	fixes = h.corrections()[staging]
	if len(fixes) != 2 {
		t.Fatalf("corrections of %s: %d, want 2", staging, len(fixes))
	}
	for _, f := range fixes {
		if f.ID != w.ID && !reflect.DeepEqual(f.Spec.Operation, rollout.Operation{Kind: rollout.Config, Config: map[string]string{"log.retention.ms": "2"}}) {
			t.Errorf("second correction %+v, want the config", f.Spec.Operation)
		}
	}
}

// A cluster whose last correction failed is left to a person; a planner
// that does not own the policy's home partition makes none; the same
// signal decided twice makes one workflow.
func TestDriftCorrectionLimits(t *testing.T) {
	h := driftHarness(t)
	h.s.Policies["heal"] = rollout.Policy{Name: "heal", Phases: []rollout.Phase{{Name: "all"}},
		DriftCorrection: rollout.DriftCorrection{Enabled: true, Selector: "env=staging", MaxPerHour: 10}}
	home := h.s.driftHome("heal")

	h.s.Owns = func(p int32) bool { return p != home }
	h.drifted("c-000", versionDrift)
	if len(h.corrections()) != 0 {
		t.Fatal("a planner not owning the home partition made a correction")
	}
	h.s.Owns = func(int32) bool { return true }

	signal := HealthUpdate{Health: records.Health{Envelope: records.Envelope{ID: "h-same", Time: h.now}, ClusterID: "c-000",
		Status: records.HealthHealthy, ObservedAt: h.now, Drift: []records.DriftItem{versionDrift}, DriftChanged: true}}
	out := h.do(signal)
	if len(h.corrections()["c-000"]) != 1 || len(out.Commands) != 1 {
		t.Fatalf("corrections %v", h.corrections())
	}
	id := h.corrections()["c-000"][0].ID
	if again := h.s.correctionID("heal", "c-000", "h-same", home); again != id {
		t.Errorf("the same signal derives ID %s, then %s", id, again)
	}
	h.result(out.Commands[0], records.OperationFailed, "the upgrade broke")
	h.advance(time.Minute)
	if w := h.workflow(id); w.State.Terminal() == false && w.State != records.WorkflowPaused {
		t.Fatalf("correction %s", w.State)
	}
	h.control(id, records.ActionCancel, "")
	h.drifted("c-000", versionDrift)
	if got := len(h.corrections()["c-000"]); got != 1 {
		t.Fatalf("%d corrections after a failed one, want it left to a person", got)
	}
	// Another cluster is still corrected.
	h.drifted("c-002", versionDrift)
	if len(h.corrections()["c-002"]) != 1 {
		t.Fatal("no correction of another cluster")
	}
	// Without partitions (a state read for people), none.
	s := NewState(map[string]inventory.Cluster{"c-000": h.s.Inventory["c-000"]}, nil)
	s.Policies = h.s.Policies
	if out := Decide(s, signal, h.now); !out.Empty() {
		t.Fatalf("a state without partitions decided %+v", out)
	}
}
