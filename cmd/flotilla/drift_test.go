package main

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// TestCLIDrift is drift end to end: two simulated clusters are changed
// behind Flotilla's back, one away from what its last rollout left (its
// inventory declares nothing), one away from the config its inventory
// declares. The monitor reports both drifted with the reason (and the
// notifier says so), drift list shows them, drift fix --dry-run shows the
// rollouts it would submit and submits nothing, drift fix submits them
// through the planner, they bring the clusters back, and drift-resolved
// follows.
func TestCLIDrift(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 4})
	now = f.Clock.Now
	t.Cleanup(func() { now = time.Now })
	ctx := t.Context()
	a, b := f.Clusters[0], f.Clusters[1]

	// a's desired version is what a rollout leaves on it.
	id := f.Submit(rollout.Spec{Name: "to-3.9.1", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Clusters: []string{a.ID}})
	f.Await(id, time.Second, time.Minute, "the rollout succeeding", func(w *decide.Workflow) bool { return w.State == records.WorkflowSucceeded })
	// b declares a config key and ignores another.
	out, err := run(t, f, "cluster", "add", b.ID, "--driver", b.Driver, "--address", b.Address, "--version", b.Version,
		"-l", "env="+b.Labels["env"], "-l", "kind="+b.Labels["kind"],
		"--desired-config", "log.retention.ms=200", "--desired-config", "num.io.threads=8", "--drift-ignore", "num.io.threads")
	if err != nil {
		t.Fatalf("cluster add: %v\n%s", err, out)
	}
	if !f.Eventually(time.Second, 30*time.Second, func() bool {
		h, ok := f.Health(b.ID)
		return ok && slices.Equal(h.Drift, []records.DriftItem{{Key: "log.retention.ms", Desired: "200"}})
	}) {
		t.Fatalf("%s is not reported drifted on its declared config: %s", b.ID, f.HealthOf([]inventory.Cluster{b}))
	}
	if h, _ := f.Health(a.ID); len(h.Drift) != 0 {
		t.Fatalf("%s drifted after its rollout: %+v", a.ID, h)
	}

	// Behind Flotilla's back.
	if err := f.Sim.Change(ctx, a.ID, func(s *simfleet.State) { s.Version = "3.8.5" }); err != nil {
		t.Fatal(err)
	}
	if err := f.Sim.Change(ctx, b.ID, func(s *simfleet.State) {
		s.Config = map[string]string{"log.retention.ms": "100", "num.io.threads": "16"}
	}); err != nil {
		t.Fatal(err)
	}
	wantA := []records.DriftItem{{Key: "version", Observed: "3.8.5", Desired: "3.9.1"}}
	wantB := []records.DriftItem{{Key: "log.retention.ms", Observed: "100", Desired: "200"}}
	if !f.Eventually(time.Second, 30*time.Second, func() bool {
		ha, _ := f.Health(a.ID)
		hb, _ := f.Health(b.ID)
		return reflect.DeepEqual(ha.Drift, wantA) && reflect.DeepEqual(hb.Drift, wantB)
	}) {
		t.Fatalf("not reported drifted: %s", f.HealthOf([]inventory.Cluster{a, b}))
	}
	if h, _ := f.Health(a.ID); h.Status != records.HealthHealthy || !slices.Contains(h.Reasons, "version 3.8.5, desired 3.9.1") {
		t.Errorf("%s: %s %q, want healthy with the drift as a reason", a.ID, h.Status, h.Reasons)
	}

	out, err = run(t, f, "drift", "list", "-o", "json")
	if err != nil {
		t.Fatalf("drift list: %v\n%s", err, out)
	}
	var views []driftView
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("drift list JSON: %v\n%s", err, out)
	}
	want := []driftView{
		{Cluster: a.ID, Drift: []driftItemView{{Key: "version", Observed: "3.8.5", Desired: "3.9.1", From: "rollout"}}},
		{Cluster: b.ID, Drift: []driftItemView{{Key: "log.retention.ms", Observed: "100", Desired: "200", From: "inventory"}}},
	}
	if len(views) != 2 || views[0].Cluster != want[0].Cluster || !reflect.DeepEqual(views[0].Drift, want[0].Drift) ||
		views[1].Cluster != want[1].Cluster || !reflect.DeepEqual(views[1].Drift, want[1].Drift) {
		t.Fatalf("drift list = %+v, want %+v", views, want)
	}
	text, err := run(t, f, "drift", "list")
	if err != nil || !strings.Contains(text, "version           3.8.5     3.9.1    rollout") || !strings.Contains(text, "2 clusters drifted") {
		t.Fatalf("drift list (text): %v\n%s", err, text)
	}
	// The selector narrows.
	if text, err := run(t, f, "drift", "list", "-s", "env="+b.Labels["env"]+",kind="+b.Labels["kind"], "-o", "json"); err != nil || strings.Contains(text, `"`+a.ID+`"`) != (a.Labels["env"] == b.Labels["env"] && a.Labels["kind"] == b.Labels["kind"]) {
		t.Fatalf("drift list -s: %v\n%s", err, text)
	}

	before := len(f.ReadAll(f.Backbone.Names().Requests))
	text, err = run(t, f, "drift", "fix", "--dry-run")
	if err != nil || !strings.Contains(text, "dry run: 2 rollouts would be submitted") ||
		!strings.Contains(text, `rollout "drift-fix-upgrade-3.9.1": upgrade to 3.9.1, 1 cluster in 1 phase`) || !strings.Contains(text, "drift-fix-config-") {
		t.Fatalf("drift fix --dry-run: %v\n%s", err, text)
	}
	if after := len(f.ReadAll(f.Backbone.Names().Requests)); after != before {
		t.Fatalf("the dry run wrote %d requests", after-before)
	}

	out, err = run(t, f, "drift", "fix")
	if err != nil || !strings.Contains(out, "upgrade to 3.9.1 on 1 cluster") || !strings.Contains(out, "config log.retention.ms=200 on 1 cluster") {
		t.Fatalf("drift fix: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	ids := lines[len(lines)-2:]
	for _, id := range ids {
		f.Await(id, time.Second, time.Minute, "the correcting rollout succeeding", func(w *decide.Workflow) bool { return w.State == records.WorkflowSucceeded })
	}
	if st, _ := f.Sim.Cluster(a.ID); st.Version != "3.9.1" {
		t.Errorf("%s runs %s after the fix", a.ID, st.Version)
	}
	if st, _ := f.Sim.Cluster(b.ID); st.Config["log.retention.ms"] != "200" || st.Config["num.io.threads"] != "16" {
		t.Errorf("%s config %v after the fix, want the declared key set, the ignored one left", b.ID, st.Config)
	}
	if !f.Eventually(time.Second, 30*time.Second, func() bool {
		text, err = run(t, f, "drift", "list")
		return err == nil && strings.Contains(text, "no cluster drifted")
	}) {
		t.Fatalf("drift list after the fix: %v\n%s", err, text)
	}

	kinds := map[string][]string{}
	if !f.Eventually(0, 30*time.Second, func() bool {
		kinds = map[string][]string{}
		for _, n := range f.Notifications() {
			if strings.HasPrefix(n.Kind, "cluster.drift") {
				kinds[n.ClusterID] = append(kinds[n.ClusterID], n.Kind)
			}
		}
		return slices.Contains(kinds[a.ID], "cluster.drift-resolved") && slices.Contains(kinds[b.ID], "cluster.drift-resolved")
	}) {
		t.Fatalf("drift notifications %v, want drifted then resolved for both", kinds)
	}
	for _, c := range []string{a.ID, b.ID} {
		if k := kinds[c]; k[0] != "cluster.drifted" || k[len(k)-1] != "cluster.drift-resolved" {
			t.Errorf("%s: drift notifications %v, want drifted first and resolved last", c, k)
		}
	}
	// The notification of a's drift says what.
	for _, n := range f.Notifications() {
		if n.Kind == "cluster.drifted" && n.ClusterID == a.ID && !strings.Contains(n.Message, "version 3.8.5, desired 3.9.1") {
			t.Errorf("drifted notification %q", n.Message)
		}
	}

	// Nothing left to fix.
	if text, err := run(t, f, "drift", "fix"); err != nil || !strings.Contains(text, "nothing to fix") {
		t.Fatalf("drift fix with no drift: %v\n%s", err, text)
	}
}

// TestDriftCorrectedByAPolicy: with a policy whose driftCorrection picks
// it, a cluster registered with a desired version it does not run is
// corrected by the planner itself, through a workflow under the policy's
// phases, and its drift is resolved.
func TestDriftCorrectedByAPolicy(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 2})
	now = f.Clock.Now
	t.Cleanup(func() { now = time.Now })
	if out, err := run(t, f, "policy", "apply", "-f", "../../examples/policies/heal-staging.yaml"); err != nil {
		t.Fatalf("policy apply: %v\n%s", err, out)
	}
	if out, err := run(t, f, "policy", "show", "heal-staging"); err != nil || !strings.Contains(out, "driftCorrection") {
		t.Fatalf("policy show: %v\n%s", err, out)
	}
	// Should the drift reach the planner before the policy does, the
	// cluster's next heartbeat (a minute of the fake clock) brings it again.
	out, err := run(t, f, "cluster", "add", "stage-1", "--driver", "sim", "--version", "3.8.0", "-l", "env=staging", "-l", "kind=kafka",
		"--desired-version", "3.9.1")
	if err != nil {
		t.Fatalf("cluster add: %v\n%s", err, out)
	}
	var fix *decide.Workflow
	if !f.Eventually(time.Second, time.Minute, func() bool {
		st, _ := f.Sim.Cluster("stage-1")
		h, _ := f.Health("stage-1")
		return st.Version == "3.9.1" && h.ObservedVersion == "3.9.1" && len(h.Drift) == 0
	}) {
		t.Fatalf("stage-1 not corrected: %s", f.HealthOf([]inventory.Cluster{{ID: "stage-1"}}))
	}
	s, err := readWorkflows(t.Context(), f.Backbone)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range s.Workflows {
		if w.Spec.Policy == "heal-staging" && slices.Equal(w.Spec.Clusters, []string{"stage-1"}) {
			fix = w
		}
	}
	if fix == nil || fix.Spec.Operation.Kind != rollout.Upgrade || fix.Spec.Operation.Version != "3.9.1" || len(fix.Phases) != 1 || fix.Phases[0].Name != "all" {
		t.Fatalf("the correcting workflow: %+v", fix)
	}
	if !f.Eventually(0, 30*time.Second, func() bool {
		var kinds []string
		for _, n := range f.Notifications() {
			if n.ClusterID == "stage-1" && strings.HasPrefix(n.Kind, "cluster.drift") {
				kinds = append(kinds, n.Kind)
			}
		}
		return slices.Equal(kinds, []string{"cluster.drifted", "cluster.drift-resolved"})
	}) {
		t.Fatal("no drifted then drift-resolved notification for stage-1")
	}
}
