package integration

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// policyUpgrade is an upgrade of every Kafka cluster that takes its phases
// from the named deployment policy.
func policyUpgrade(policy string) rollout.Spec {
	return rollout.Spec{
		Name:             "kafka-3.9.1-" + policy,
		Operation:        rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"},
		Selector:         "kind=kafka",
		Policy:           policy,
		FailureThreshold: rollout.Threshold{Count: 2},
	}
}

// decided waits for the planner's first row about request id: accepted or
// rejected.
func decided(f *fleettest.Fleet, id string) *decide.Workflow {
	return f.Await(id, 0, 10*time.Second, "the planner deciding on the request", func(*decide.Workflow) bool { return true })
}

// TestRolloutTakesPhasesFromPolicy submits a rollout that names a policy
// the planner read from the log when it started, and checks that the
// rollout runs the policy's phases: their names and order, each cluster
// in the phase and wave the policy gives it, to success. Bad records on the
// policies topic do not stop the planner, and a rollout naming a policy
// that is not there, or whose record is not usable, is rejected with a
// reason naming it.
func TestRolloutTakesPhasesFromPolicy(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 40})
	azure := f.ReadPolicy("../../examples/policies/azure-first.yaml")
	f.ApplyPolicy(azure, rollout.Policy{Name: "no-phases"})
	names := f.Backbone.Names()
	f.Produce(&kgo.Record{Topic: names.Policies, Key: []byte("garbage"), Value: []byte("not a policy")})
	// Restarted, the planner reads the policies to the end of the log
	// before it decides anything: the policy is there for the request.
	f.StopService("planner")
	f.StartService("planner")

	id := f.Submit(policyUpgrade(azure.Name))
	w := f.Await(id, 30*time.Second, 2*time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s), want succeeded", w.State, w.Reason)
	}
	var phases []string
	for _, ph := range w.Phases {
		phases = append(phases, ph.Name)
	}
	if want := []string{"azure-westeurope", "azure-eastus", "rest"}; !slices.Equal(phases, want) {
		t.Fatalf("the workflow's phases are %v, want the policy's %v", phases, want)
	}

	// Every cluster ran in the phase and wave the policy puts it in, and
	// the phases ran one after the other.
	spec, err := policyUpgrade(azure.Name).WithPolicy(map[string]rollout.Policy{azure.Name: azure})
	if err != nil {
		t.Fatal(err)
	}
	inv := map[string]inventory.Cluster{}
	for _, c := range f.Clusters {
		inv[c.ID] = c
	}
	plan, err := spec.Plan(inv)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Targets) != plan.Targets {
		t.Fatalf("%d targets, want %d", len(w.Targets), plan.Targets)
	}
	phaseStart := make([]time.Time, len(plan.Phases))
	phaseEnd := make([]time.Time, len(plan.Phases))
	for p, ph := range plan.Phases {
		if len(ph.Waves) == 0 {
			t.Fatalf("phase %s picks no cluster of the test fleet: the example no longer fits it", ph.Name)
		}
		for wave, ids := range ph.Waves {
			for _, c := range ids {
				tg := w.Targets[c]
				if tg == nil {
					t.Errorf("%s (%v) is not a target", c, inv[c].Labels)
					continue
				}
				if tg.Phase != p || tg.Wave != wave {
					t.Errorf("%s (%v) ran in phase %d wave %d, want %d (%s) wave %d", c, inv[c].Labels, tg.Phase, tg.Wave, p, ph.Name, wave)
				}
				if phaseStart[p].IsZero() || tg.StartedAt.Before(phaseStart[p]) {
					phaseStart[p] = tg.StartedAt
				}
				if tg.FinishedAt.After(phaseEnd[p]) {
					phaseEnd[p] = tg.FinishedAt
				}
			}
		}
	}
	for p := 1; p < len(plan.Phases); p++ {
		if phaseStart[p].Before(phaseEnd[p-1]) {
			t.Errorf("phase %d started at %v, before phase %d ended at %v", p, phaseStart[p], p-1, phaseEnd[p-1])
		}
	}

	for _, name := range []string{"no-such-policy", "no-phases", "garbage"} {
		w := decided(f, f.Submit(policyUpgrade(name)))
		if want := `unknown deployment policy "` + name + `"`; w.State != records.WorkflowRejected || !strings.Contains(w.Reason, want) {
			t.Errorf("a rollout naming policy %s: %s (%s), want rejected saying %q", name, w.State, w.Reason, want)
		}
	}
}

// TestPolicyChangesReachThePlanner applies and removes a policy while the
// planner runs: a rollout naming it, submitted right after, is accepted;
// one submitted after its removal is rejected, while a rollout accepted
// before the removal keeps the policy's phases and finishes.
func TestPolicyChangesReachThePlanner(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 20})
	canary := rollout.Policy{Name: "canary-first", Phases: []rollout.Phase{
		{Name: "canary", Selector: "tier=internal"},
		{Name: "rest", Waves: rollout.Waves{Mode: rollout.WavePercent, Value: 50}},
	}}
	f.ApplyPolicy(canary)

	// A rollout submitted right after its policy was applied is accepted:
	// a planner that does not know the policy yet reads the policies to
	// the end of the log before it decides.
	accepted := decided(f, f.Submit(policyUpgrade(canary.Name)))
	if accepted.State == records.WorkflowRejected {
		t.Fatalf("the rollout submitted right after its policy was rejected: %s", accepted.Reason)
	}

	f.RemovePolicy(canary.Name)
	var rejected *decide.Workflow
	if !f.Eventually(0, 20*time.Second, func() bool {
		rejected = decided(f, f.Submit(policyUpgrade(canary.Name)))
		return rejected.State == records.WorkflowRejected
	}) {
		t.Fatalf("rollouts naming %s are still accepted after its removal", canary.Name)
	}
	if want := `unknown deployment policy "canary-first"`; !strings.Contains(rejected.Reason, want) {
		t.Errorf("rejected with %q, want it to say %q", rejected.Reason, want)
	}

	// The rollouts accepted meanwhile target the same clusters and wait
	// for one another; the first one finishes with the policy's phases.
	w := f.Await(accepted.ID, 5*time.Second, time.Minute, "the rollout accepted before the removal finishing", finished)
	if w.State != records.WorkflowSucceeded || len(w.Phases) != 2 || w.Phases[0].Name != "canary" || w.Phases[1].Name != "rest" {
		t.Fatalf("the rollout accepted before the removal is %s (%s) with phases %+v, want succeeded with canary and rest", w.State, w.Reason, w.Phases)
	}
}
