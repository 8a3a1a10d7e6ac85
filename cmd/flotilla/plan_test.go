package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

const threePhase = "../../examples/three-phase-upgrade.yaml"

// planJSON runs `rollout plan -o json` and decodes its document.
func planJSON(t *testing.T, f *fleettest.Fleet, args ...string) dryRun {
	t.Helper()
	out, err := run(t, f, append([]string{"rollout", "plan", "-o", "json"}, args...)...)
	if err != nil {
		t.Fatalf("rollout plan %v: %v\n%s", args, err, out)
	}
	var d dryRun
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("rollout plan -o json: %v\n%s", err, out)
	}
	return d
}

// assertNothingWritten fails if anything reached the topics a client
// writes to or the planner answers on.
func assertNothingWritten(t *testing.T, f *fleettest.Fleet) {
	t.Helper()
	names := f.Backbone.Names()
	for _, topic := range []string{names.Requests, names.Workflows, names.Commands} {
		if recs := f.ReadAll(topic); len(recs) > 0 {
			t.Errorf("the dry run wrote %d records to %s", len(recs), topic)
		}
	}
}

func writeSpec(t *testing.T, text string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestRolloutPlanMatchesPlanner checks that the dry run shows the waves
// the planner then takes: the same clusters in the same phase and wave.
func TestRolloutPlanMatchesPlanner(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 40})
	now = f.Clock.Now
	t.Cleanup(func() { now = time.Now })

	text, err := run(t, f, "rollout", "plan", "-f", threePhase)
	if err != nil {
		t.Fatalf("rollout plan: %v\n%s", err, text)
	}
	for _, want := range []string{
		`rollout "kafka-3.9.1": upgrade to 3.9.1`,
		"dry run at 2026-11-22T12:00:00Z: nothing was submitted",
		`phase 1 "internal" (selector tier=internal)`,
		`phase 2 "azure" (selector cloud=azure)`,
		`phase 3 "rest" (the targets left)`,
		"failure threshold: pauses when 2 clusters failed or turned unhealthy",
		"estimate: about ",
		"assuming each operation takes 5m (--op-duration) and the monitor probes every 10s (--probe-interval)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("rollout plan does not say %q:\n%s", want, text)
		}
	}

	raw, err := run(t, f, "rollout", "plan", "-f", threePhase, "-o", "json")
	if err != nil {
		t.Fatalf("rollout plan -o json: %v\n%s", err, raw)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		t.Fatalf("rollout plan -o json: %v\n%s", err, raw)
	}
	for _, field := range []string{"name", "operation", "targets", "at", "failureThreshold", "onConflict", "unhealthyTargets", "phases", "notHealthy", "inOtherRollouts", "estimate"} {
		if _, ok := doc[field]; !ok {
			t.Errorf("JSON document has no %q field", field)
		}
	}
	phase := doc["phases"].([]any)[0].(map[string]any)
	for _, field := range []string{"name", "selector", "targets", "maxInFlight", "bake", "waves", "waitingForWindow"} {
		if _, ok := phase[field]; !ok {
			t.Errorf("JSON phase has no %q field: %v", field, phase)
		}
	}
	wave := phase["waves"].([]any)[0].(map[string]any)
	for _, field := range []string{"wave", "size", "clusters", "startsAfter", "duration"} {
		if _, ok := wave[field]; !ok {
			t.Errorf("JSON wave has no %q field: %v", field, wave)
		}
	}
	estimate := doc["estimate"].(map[string]any)
	for _, field := range []string{"duration", "seconds", "windowWait", "approvals", "neverOpen", "opDuration", "probeInterval", "model"} {
		if _, ok := estimate[field]; !ok {
			t.Errorf("JSON estimate has no %q field: %v", field, estimate)
		}
	}

	d := planJSON(t, f, "-f", threePhase)
	if len(d.Phases) != 3 || d.Targets == 0 || d.Phases[0].Name != "internal" || d.Phases[2].Name != "rest" {
		t.Fatalf("plan of %s: %+v", threePhase, d)
	}
	// A wave longer than the text shows is elided, unless --clusters.
	oneWave := writeSpec(t, "name: all\noperation: {type: restart}\nselector: kind=kafka\n")
	big := planJSON(t, f, "-f", oneWave).Phases[0].Waves[0]
	if big.Size <= planListed {
		t.Fatalf("one wave of %d clusters; want more than %d", big.Size, planListed)
	}
	text, err = run(t, f, "rollout", "plan", "-f", oneWave)
	more := fmt.Sprintf("%s and %d more", big.Clusters[planListed-1], big.Size-planListed)
	if err != nil || !strings.Contains(text, more) || strings.Contains(text, big.Clusters[planListed]) {
		t.Errorf("text shows the %d clusters of a wave, want the first %d and %q: %v\n%s", big.Size, planListed, more, err, text)
	}
	if all, err := run(t, f, "rollout", "plan", "-f", oneWave, "--clusters"); err != nil || !strings.Contains(all, strings.Join(big.Clusters, ", ")) {
		t.Errorf("rollout plan --clusters does not list every cluster of the wave: %v\n%s", err, all)
	}
	assertNothingWritten(t, f)

	out, err := run(t, f, "rollout", "submit", "-f", threePhase)
	if err != nil {
		t.Fatalf("rollout submit: %v\n%s", err, out)
	}
	id := lastLine(out)
	w := f.Await(id, 0, 10*time.Second, "the planner accepting the rollout", func(w *decide.Workflow) bool { return len(w.Targets) > 0 })
	planned := map[string][2]int{} // cluster → phase, wave (0-based, as the planner counts)
	for p, ph := range d.Phases {
		for _, wave := range ph.Waves {
			for _, c := range wave.Clusters {
				planned[c] = [2]int{p, wave.Wave - 1}
			}
		}
	}
	if len(planned) != len(w.Targets) || len(planned) != d.Targets {
		t.Fatalf("the dry run planned %d clusters (%d targets), the planner took %d", len(planned), d.Targets, len(w.Targets))
	}
	for c, target := range w.Targets {
		if got, want := planned[c], [2]int{target.Phase, target.Wave}; got != want {
			t.Errorf("%s: the dry run put it in phase %d wave %d, the planner in phase %d wave %d", c, got[0], got[1], want[0], want[1])
		}
	}

	// The rollout runs on (the fake clock stands still): its targets are
	// in an unfinished rollout, which the dry run reports; with
	// onConflict: reject, it gives the planner's own rejection.
	d = planJSON(t, f, "-f", threePhase)
	if len(d.InOtherRollouts) != d.Targets || !slices.Equal(d.InOtherRollouts[0].Workflows, []string{id}) {
		t.Errorf("with rollout %s running, inOtherRollouts = %+v, want every target in it", id, d.InOtherRollouts)
	}
	spec, err := os.ReadFile(threePhase)
	if err != nil {
		t.Fatal(err)
	}
	rejecting := writeSpec(t, string(spec)+"onConflict: reject\n")
	_, planErr := run(t, f, "rollout", "plan", "-f", rejecting)
	_, submitErr := run(t, f, "rollout", "submit", "-f", rejecting)
	if planErr == nil || submitErr == nil {
		t.Fatalf("onConflict: reject with every target busy: plan %v, submit %v", planErr, submitErr)
	}
	_, reason, _ := strings.Cut(submitErr.Error(), " rejected: ")
	if !strings.Contains(reason, "onConflict is reject") || !strings.HasSuffix(planErr.Error(), "would reject this rollout: "+reason) {
		t.Errorf("plan says %q; the planner said %q", planErr, reason)
	}
}

// TestRolloutPlanWindows checks that targets outside their windows now are
// reported with the time their windows open, and the wait estimated.
func TestRolloutPlanWindows(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 20})
	now = f.Clock.Now // Sunday 2026-11-22 12:00 UTC: the night windows are closed
	t.Cleanup(func() { now = time.Now })
	const spec = "../../examples/night-window.yaml"

	text, err := run(t, f, "rollout", "plan", "-f", spec)
	if err != nil {
		t.Fatalf("rollout plan: %v\n%s", err, text)
	}
	d := planJSON(t, f, "-f", spec)
	waiting := len(d.Phases[0].WaitingForWindow)
	// Monday 00:00 UTC is 01:00 in Paris, inside the European night.
	want := fmt.Sprintf("%d clusters wait for their window, which opens at 2026-11-23T00:00:00Z", waiting)
	if waiting != d.Targets || !strings.Contains(text, want) {
		t.Errorf("%d of %d targets wait; text does not say %q:\n%s", waiting, d.Targets, want, text)
	}
	if wait, err := time.ParseDuration(d.Estimate.WindowWait); err != nil || wait < 12*time.Hour || time.Duration(d.Estimate.Seconds)*time.Second < wait {
		t.Errorf("estimate %+v: want a wait of at least 12h, included in the total", d.Estimate)
	}
	// The first operation starts when the first window opens.
	if d.Phases[0].Waves[0].StartsAfter != "12h0m0s" {
		t.Errorf("the first wave starts after %s, want 12h0m0s (when the European windows open)", d.Phases[0].Waves[0].StartsAfter)
	}
}

// TestRolloutPlanWarnsOfUnhealthyTargets checks the warning list of
// targets the health table shows unhealthy or degraded.
func TestRolloutPlanWarnsOfUnhealthyTargets(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 20})
	now = f.Clock.Now
	t.Cleanup(func() { now = time.Now })
	sick := f.Clusters[0].ID
	// The monitor probes once at start and again only as the fake clock
	// moves, which it does not here: once its signal is in, ours is last.
	if !f.Eventually(0, 10*time.Second, func() bool { _, ok := f.Health(sick); return ok }) {
		t.Fatalf("no health signal for %s", sick)
	}
	f.Produce(f.Record(f.Backbone.Names().Health, sick, records.Health{
		Envelope:  records.Envelope{ID: "h-1", Time: f.Clock.Now(), Principal: "monitor"},
		ClusterID: sick, Status: records.HealthUnhealthy, PreviousStatus: records.HealthHealthy,
		Reasons: []string{"2 offline partitions"}, ObservedAt: f.Clock.Now(),
	}))
	spec := writeSpec(t, fmt.Sprintf("name: r\noperation: {type: restart}\nclusters: [%s, %s]\n", sick, f.Clusters[1].ID))

	text, err := run(t, f, "rollout", "plan", "-f", spec)
	if err != nil {
		t.Fatalf("rollout plan: %v\n%s", err, text)
	}
	if !strings.Contains(text, "warning: 1 target not healthy now") || !strings.Contains(text, sick) ||
		!strings.Contains(text, "unhealthy: 2 offline partitions") || !strings.Contains(text, "held until it recovers") {
		t.Errorf("rollout plan does not warn of %s:\n%s", sick, text)
	}
	d := planJSON(t, f, "-f", spec)
	if len(d.NotHealthy) != 1 || d.NotHealthy[0].ID != sick || d.NotHealthy[0].Health != records.HealthUnhealthy {
		t.Errorf("notHealthy = %+v, want %s unhealthy", d.NotHealthy, sick)
	}
}

// TestRolloutPlanRejects checks that a spec the planner would reject
// fails with the planner's reason, and that nothing is written.
func TestRolloutPlanRejects(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 5})
	head := "name: x\noperation: {type: upgrade, version: 3.9.1}\n"
	for _, tc := range []struct {
		name, spec string
		want       []string
	}{
		{"no target", head + "selector: cloud=oracle\n", []string{`would reject this rollout: no cluster matches selector "cloud=oracle"`}},
		{"unknown clusters", head + "clusters: [nope, sim-0001, also-nope]\n", []string{"would reject this rollout: unknown clusters: also-nope, nope"}},
		{"targets without a phase", head + "selector: kind\nstrategy:\n  phases:\n    - name: only\n      selector: cloud=nowhere\n",
			[]string{"would reject this rollout: 5 of 5 targets match no phase", "add a final phase without a selector"}},
		{"invalid", head + "selector: kind\nstrategy:\n  phases:\n    - name: p\n      waves: \"150%\"\n",
			[]string{"spec.yaml:\n", "strategy.phases[0].waves: a percentage must be in 1..100, got 150"}},
		{"bad selector", head + "selector: \"env in (prod\"\n", []string{"spec.yaml:\n", "selector"}},
		{"bad YAML", "name: x\noperation: [\n", []string{"spec.yaml:\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeSpec(t, tc.spec)
			out, err := run(t, f, "rollout", "plan", "-f", file)
			if err == nil {
				t.Fatalf("rollout plan succeeded:\n%s", out)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if !strings.Contains(err.Error(), file) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
	assertNothingWritten(t, f)
}

// TestDryRunEstimate checks the estimate's model, the window waits and
// the gates on a fixed fleet, without Kafka.
func TestDryRunEstimate(t *testing.T) {
	inv := map[string]inventory.Cluster{}
	for i := 1; i <= 10; i++ {
		id := fmt.Sprintf("c%02d", i)
		tier := "standard"
		if i <= 2 {
			tier = "internal"
		}
		inv[id] = inventory.Cluster{ID: id, Driver: "sim", Labels: map[string]string{"kind": "kafka", "tier": tier}}
	}
	sunday := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	monday := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	model := estimateModel{OpDuration: 5 * time.Minute, ProbeInterval: 10 * time.Second}
	fours := []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 4}, MaxInFlight: 2, Bake: time.Minute}}
	spec := func(phases []rollout.Phase, windows ...rollout.WindowRule) rollout.Spec {
		return rollout.Spec{Name: "r", Operation: rollout.Operation{Kind: rollout.Restart}, Selector: "kind=kafka", Phases: phases, Windows: windows}
	}
	for _, tc := range []struct {
		name      string
		spec      rollout.Spec
		at        time.Time
		rollouts  map[string][]string
		total     string   // estimate.duration
		wait      string   // estimate.windowWait
		starts    []string // startsAfter of each wave, phase by phase
		approvals int
		waiting   int    // targets whose windows are closed at at
		opens     string // when the first of them opens
		neverOpen int
		conflicts int
		err       string
	}{
		{
			// waves of 4, 4, 2 in batches of 2: 2×5m+1m+10s, twice, then 5m+1m+10s.
			name: "batches of maxInFlight", spec: spec(fours), at: sunday,
			total: "28m30s", wait: "0s", starts: []string{"0s", "11m10s", "22m20s"},
		},
		{
			name: "one wave, all at once", spec: spec(nil), at: sunday,
			total: "5m10s", wait: "0s", starts: []string{"0s"},
		},
		{
			// before on canary, both on rest; the empty phase is skipped, gates and all.
			name: "approval gates",
			spec: spec([]rollout.Phase{
				{Name: "canary", Selector: "tier=internal", Approve: rollout.ApproveBefore},
				{Name: "empty", Selector: "tier=nowhere", Approve: rollout.ApproveBoth},
				{Name: "rest", Approve: rollout.ApproveBoth, ApprovalTimeout: time.Hour},
			}),
			at: sunday, total: "10m20s", wait: "0s", starts: []string{"0s", "5m10s"}, approvals: 3,
		},
		{
			name: "windows closed now", spec: spec(fours, rollout.WindowRule{Allow: []string{"Mon-Fri 09:00-17:00 UTC"}}), at: sunday,
			total: "21h28m30s", wait: "21h0m0s", starts: []string{"21h0m0s", "21h11m10s", "21h22m20s"},
			waiting: 10, opens: "2026-11-23T09:00:00Z",
		},
		{
			// Open now, but closed when the second batch of the second wave
			// comes, at 09:16:10: it waits a week, then the third wave follows.
			name: "window closing during the rollout", spec: spec(fours, rollout.WindowRule{Allow: []string{"Mon 09:00-09:15 UTC"}}), at: monday,
			total: "168h12m20s", wait: "167h43m50s", starts: []string{"0s", "11m10s", "168h6m10s"},
		},
		{
			// c03 and c04 start now; c01 and c02, in the first wave too, at their window.
			name: "a rule for some clusters", spec: spec(fours, rollout.WindowRule{Selector: "tier=internal", Allow: []string{"Mon 09:00-09:15 UTC"}}), at: sunday,
			total: "21h23m30s", wait: "20h55m0s", starts: []string{"0s", "21h6m10s", "21h17m20s"},
			waiting: 2, opens: "2026-11-23T09:00:00Z",
		},
		{
			// Nothing can start: the estimate counts only the probe, and warns.
			name: "windows that never open", spec: spec(nil, rollout.WindowRule{Deny: []string{"2026-01-01T00:00:00Z/2028-06-01T00:00:00Z"}}), at: sunday,
			total: "10s", wait: "0s", starts: []string{"0s"}, waiting: 10, neverOpen: 10,
		},
		{
			name: "targets in another rollout wait", spec: spec(nil), at: sunday, rollouts: map[string][]string{"c03": {"w-1", "w-2"}, "zz": {"w-1"}},
			total: "5m10s", wait: "0s", starts: []string{"0s"}, conflicts: 1,
		},
		{
			name: "targets in another rollout reject",
			spec: func() rollout.Spec { s := spec(nil); s.OnConflict = rollout.ConflictReject; return s }(),
			at:   sunday, rollouts: map[string][]string{"c03": {"w-1", "w-2"}, "c01": {"w-3"}},
			err: "onConflict is reject, and targets are in unfinished rollouts: c01 (in w-3), c03 (in w-1)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := newDryRun(tc.spec, fleetNow{Inventory: inv, Rollouts: tc.rollouts}, tc.at, model)
			if tc.err != "" || err != nil {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			var starts []string
			waiting := 0
			opens := ""
			for _, ph := range d.Phases {
				for _, w := range ph.Waves {
					starts = append(starts, w.StartsAfter)
				}
				waiting += len(ph.WaitingForWindow)
				if ph.FirstWindowOpens != nil {
					opens = ph.FirstWindowOpens.UTC().Format(time.RFC3339)
				}
			}
			e := d.Estimate
			if e.Duration != tc.total || e.WindowWait != tc.wait || !slices.Equal(starts, tc.starts) || e.Approvals != tc.approvals {
				t.Errorf("estimate %s (wait %s, %d approvals), waves start after %v; want %s (wait %s, %d approvals), %v",
					e.Duration, e.WindowWait, e.Approvals, starts, tc.total, tc.wait, tc.approvals, tc.starts)
			}
			if total, _ := time.ParseDuration(e.Duration); e.Seconds != int64(total.Seconds()) {
				t.Errorf("estimate seconds %d, duration %s", e.Seconds, e.Duration)
			}
			if waiting != tc.waiting || opens != tc.opens || e.NeverOpen != tc.neverOpen {
				t.Errorf("%d clusters wait, first opening %q, %d never open; want %d, %q, %d", waiting, opens, e.NeverOpen, tc.waiting, tc.opens, tc.neverOpen)
			}
			if len(d.InOtherRollouts) != tc.conflicts {
				t.Errorf("inOtherRollouts = %+v, want %d", d.InOtherRollouts, tc.conflicts)
			}
		})
	}
}

// TestRolloutPlanWithPolicy checks that the dry run of a spec naming a
// deployment policy takes the policy's phases from the policies topic, says
// so, and shows the waves the planner then takes; and that a policy that
// is not there is the planner's reason to reject.
func TestRolloutPlanWithPolicy(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 40})
	const spec = "../../examples/policy-upgrade.yaml"

	_, err := run(t, f, "rollout", "plan", "-f", spec)
	if want := `would reject this rollout: policy: unknown deployment policy "azure-first" (none is defined; see flotilla policy apply)`; err == nil ||
		!strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), spec) {
		t.Fatalf("rollout plan with no policy stored: error %v, want it to name %s and say %q", err, spec, want)
	}
	for _, file := range []string{azureFirst, internalFirst} {
		if out, err := run(t, f, "policy", "apply", "-f", file); err != nil {
			t.Fatalf("policy apply: %v\n%s", err, out)
		}
	}
	_, err = run(t, f, "rollout", "plan", "-f", writeSpec(t, "name: r\noperation: {type: restart}\nselector: kind=kafka\npolicy: azure-frist\n"))
	if want := `policy: unknown deployment policy "azure-frist" (have: azure-first, internal-first)`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("rollout plan naming a misspelt policy: error %v, want %q", err, want)
	}
	both := writeSpec(t, "name: r\noperation: {type: restart}\nselector: kind=kafka\npolicy: azure-first\nstrategy:\n  phases:\n    - name: all\n")
	if _, err := run(t, f, "rollout", "plan", "-f", both); err == nil || !strings.Contains(err.Error(), "give one or the other") {
		t.Errorf("rollout plan of a spec with a policy and phases: error %v, want it refused", err)
	}

	text, err := run(t, f, "rollout", "plan", "-f", spec)
	if err != nil {
		t.Fatalf("rollout plan: %v\n%s", err, text)
	}
	for _, want := range []string{
		`phases from deployment policy "azure-first"`,
		`phase 1 "azure-westeurope" (selector cloud=azure,region=westeurope)`,
		`phase 2 "azure-eastus" (selector cloud=azure,region=eastus)`,
		`phase 3 "rest" (the targets left)`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("rollout plan does not say %q:\n%s", want, text)
		}
	}
	d := planJSON(t, f, "-f", spec)
	if d.Policy != "azure-first" || len(d.Phases) != 3 {
		t.Fatalf("rollout plan -o json: policy %q, %d phases; want azure-first's 3", d.Policy, len(d.Phases))
	}
	assertNothingWritten(t, f)

	// Restarted, the planner has read the policies before the request.
	f.StopService("planner")
	f.StartService("planner")
	out, err := run(t, f, "rollout", "submit", "-f", spec)
	if err != nil {
		t.Fatalf("rollout submit: %v\n%s", err, out)
	}
	w := f.Await(lastLine(out), 0, 10*time.Second, "the planner placing the targets", func(w *decide.Workflow) bool { return len(w.Targets) == d.Targets })
	for p, ph := range d.Phases {
		for _, wave := range ph.Waves {
			for _, c := range wave.Clusters {
				if tg := w.Targets[c]; tg == nil || tg.Phase != p || tg.Wave != wave.Wave-1 {
					t.Errorf("%s: the dry run put it in phase %d wave %d, the planner in %+v", c, p, wave.Wave-1, tg)
				}
			}
		}
	}
}

// TestRolloutPlanShowsThresholdActions checks that the dry run says what
// each failure threshold does: the rollout's and a phase's own.
func TestRolloutPlanShowsThresholdActions(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 60})
	const spec = "../../examples/canary-rollback.yaml"
	text, err := run(t, f, "rollout", "plan", "-f", spec)
	if err != nil {
		t.Fatalf("rollout plan: %v\n%s", err, text)
	}
	d := planJSON(t, f, "-f", spec)
	want := []string{
		fmt.Sprintf("failure threshold: aborts when %d clusters failed or turned unhealthy", d.FailureThreshold),
		"failure threshold: rolls back when 1 cluster of the phase failed or turned unhealthy",
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("the dry run does not say %q:\n%s", w, text)
		}
	}
	if d.FailureAction != "abort" || d.Phases[0].FailureAction != "rollback" || d.Phases[0].FailureThreshold != 1 || d.Phases[1].FailureThreshold != 0 {
		t.Errorf("json: rollout %d %s, phases %+v", d.FailureThreshold, d.FailureAction, d.Phases)
	}
}
