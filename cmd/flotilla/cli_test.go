package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/internal/servicecmd"
	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// run runs the CLI with args against a fleet and returns what it printed.
func run(t *testing.T, f *fleettest.Fleet, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := rootCommand()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	args = append(args, "--brokers", strings.Join(f.Backbone.Brokers, ","), "--namespace", f.Backbone.Namespace)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestCLITour(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 40})
	now = f.Clock.Now
	t.Cleanup(func() { now = time.Now })
	cliTour(t, f)
}

// TestCLITourSigned runs the tour again with signatures required: the
// user's key (FLOTILLA_KEY) signs every record the commands write, and the
// trust store gives the user a role allowing all of it.
func TestCLITourSigned(t *testing.T) {
	dir := t.TempDir()
	root, err := keys.WriteKeyPair(filepath.Join(dir, "root"))
	if err != nil {
		t.Fatal(err)
	}
	user, err := keys.WriteKeyPair(filepath.Join(dir, "tourist"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLOTILLA_PRINCIPAL", "tourist")
	// The CLI stamps signed records with the real time, which the broker's
	// is checked against: the services' clock starts a minute later, as
	// their real clock would read after the user's first request.
	f := fleettest.Start(t, fleettest.Options{Clusters: 40, Trust: trust.Config{Require: true, Root: root.Public()}, Operator: user, OperatorName: "tourist",
		ClockStart: time.Now().UTC().Add(time.Minute),
		Setup: func(f *fleettest.Fleet) {
			ctx := context.Background()
			role := authz.Role{Name: "operator", Rules: []authz.Rule{{Name: "everything", Actions: []string{"*"}}}}
			if err := writeTrustRecord(ctx, f.Backbone, root, nil, records.TrustRoleKey(role.Name), records.TrustRecord{Role: &role}); err != nil {
				t.Fatal(err)
			}
			p := records.TrustPrincipal{Name: "tourist", Roles: []string{"operator"}, Keys: []records.TrustKey{{ID: user.ID, Public: user.Public()}}}
			if err := writeTrustRecord(ctx, f.Backbone, root, nil, records.TrustPrincipalKey(p.Name), records.TrustRecord{Principal: &p}); err != nil {
				t.Fatal(err)
			}
		}})
	t.Setenv("FLOTILLA_KEY", filepath.Join(dir, "tourist"))
	cliTour(t, f)
}

// cliTour runs the README's tour: a cluster added, listed, a rollout
// submitted, followed, listed, the history of a cluster it changed, its
// audit.
func cliTour(t *testing.T, f *fleettest.Fleet) {
	out, err := run(t, f, "cluster", "add", "edge-1", "--driver", "sim", "--address", "sim://edge-1", "--version", "3.8.0",
		"-l", "kind=kafka", "-l", "tier=internal", "-l", "cloud=aws", "-l", "env=prod")
	if err != nil || !strings.Contains(out, "cluster edge-1 registered") {
		t.Fatalf("cluster add: %v\n%s", err, out)
	}
	if !f.Eventually(0, 10*time.Second, func() bool {
		out, err = run(t, f, "cluster", "list", "--selector", "tier=internal", "-o", "json")
		return err == nil && strings.Contains(out, `"edge-1"`)
	}) {
		t.Fatalf("cluster list does not show edge-1: %v\n%s", err, out)
	}
	var listed []clusterView
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("cluster list -o json: %v\n%s", err, out)
	}
	for _, c := range listed {
		if c.Labels["tier"] != "internal" {
			t.Fatalf("--selector tier=internal listed %s with %v", c.ID, c.Labels)
		}
	}

	out, err = run(t, f, "rollout", "submit", "-f", "../../examples/three-phase-upgrade.yaml")
	if err != nil {
		t.Fatalf("rollout submit: %v\n%s", err, out)
	}
	id := lastLine(out)
	if !strings.Contains(out, "accepted") || len(id) != 36 {
		t.Fatalf("rollout submit printed %q, want acceptance and the workflow ID last", out)
	}
	f.Await(id, 5*time.Second, 2*time.Minute, "the rollout finishing", func(w *decide.Workflow) bool { return w.State.Terminal() })

	out, err = run(t, f, "rollout", "status", id, "-o", "json")
	if err != nil {
		t.Fatalf("rollout status: %v\n%s", err, out)
	}
	var p decide.Progress
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if p.ID != id || p.State != records.WorkflowSucceeded || len(p.Phases) != 3 || p.Phases[0].Name != "internal" ||
		len(p.Phases[0].Waves) == 0 || p.Succeeded != p.Targets || p.Targets == 0 {
		t.Fatalf("status = %+v", p)
	}
	if text, err := run(t, f, "rollout", "status", id); err != nil || !strings.Contains(text, "succeeded") || !strings.Contains(text, "internal") {
		t.Fatalf("rollout status (text): %v\n%s", err, text)
	}
	if text, err := run(t, f, "rollout", "list"); err != nil || !strings.Contains(text, id) {
		t.Fatalf("rollout list: %v\n%s", err, text)
	}

	changed := p.Phases[0].Waves[0].Clusters[0]
	out, err = run(t, f, "cluster", "history", changed.ID, "-o", "json")
	if err != nil {
		t.Fatalf("cluster history: %v\n%s", err, out)
	}
	var history []historyEntry
	if err := json.Unmarshal([]byte(out), &history); err != nil {
		t.Fatalf("cluster history JSON: %v\n%s", err, out)
	}
	if len(history) != 1 || history[0].WorkflowID != id || history[0].State != records.TargetSucceeded ||
		history[0].Version != changed.Version || history[0].Operation.Kind == "" || history[0].FinishedAt.IsZero() || history[0].RequestedBy != principal(backbone.Config{}) {
		t.Fatalf("history of %s (%+v) = %+v, want the rollout's one operation", changed.ID, changed, history)
	}
	if text, err := run(t, f, "cluster", "history", changed.ID); err != nil || !strings.Contains(text, id) || !strings.Contains(text, "→ "+changed.Version) {
		t.Fatalf("cluster history (text): %v\n%s", err, text)
	}
	if _, err := run(t, f, "cluster", "history", "no-such-cluster"); err == nil || !strings.Contains(err.Error(), "no history for cluster no-such-cluster") {
		t.Fatalf("history of an unknown cluster: %v", err)
	}

	out, err = run(t, f, "audit", "--workflow", id, "-o", "json")
	if err != nil {
		t.Fatalf("audit: %v\n%s", err, out)
	}
	var entries []auditEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("audit JSON: %v", err)
	}
	kinds := map[string]bool{}
	position := map[string]int{}
	for i, e := range entries {
		kinds[e.Kind] = true
		position[e.ID] = i
	}
	for i, e := range entries {
		if c, ok := position[e.CausedBy]; ok && c > i {
			t.Fatalf("audit entry %d (%s) comes before its cause at %d (%s)", i, e.What, c, entries[c].What)
		}
	}
	for _, k := range []string{"request", "decision", "command", "operation", "health"} {
		if !kinds[k] {
			t.Errorf("audit of the rollout has no %s entry", k)
		}
	}
	if entries[0].Kind != "request" || entries[0].Principal == "" {
		t.Errorf("audit starts with %+v, want who asked", entries[0])
	}
}

func TestCLIPrintsRejection(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 5})
	spec := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(spec, []byte("name: x\noperation: {type: upgrade, version: 3.9.1}\nselector: cloud=oracle\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, f, "rollout", "submit", "-f", spec)
	if err == nil || !strings.Contains(err.Error(), "rejected") || !strings.Contains(err.Error(), `no cluster matches selector "cloud=oracle"`) {
		t.Fatalf("submit of a spec matching nothing: err %v\n%s", err, out)
	}
	if err := os.WriteFile(spec, []byte("name: x\noperation: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, f, "rollout", "submit", "-f", spec); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("submit of bad YAML: err %v, want it to name the file", err)
	}
}

// TestDevCarriesOnAfterRestart runs `flotilla dev` on a data directory,
// stops it in the middle of a rollout and starts it again on the same
// directory: the rollout finishes, every cluster upgraded exactly once.
func TestDevCarriesOnAfterRestart(t *testing.T) {
	dir := t.TempDir()
	start := func() (brokers []string, stop func()) {
		dev := startDev(t, devOptions{DataDir: dir, Clusters: 30,
			Drivers: servicecmd.DriverFlags{Sim: servicecmd.SimFlags{OpDuration: 200 * time.Millisecond}}})
		return dev.brokers, func() { dev.stop(t) }
	}
	cli := func(brokers []string, args ...string) string {
		t.Helper()
		var out bytes.Buffer
		cmd := rootCommand()
		cmd.SetOut(&out)
		cmd.SetArgs(append(args, "--brokers", strings.Join(brokers, ",")))
		if err := cmd.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("flotilla %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	status := func(brokers []string, id string) decide.Progress {
		var p decide.Progress
		if err := json.Unmarshal([]byte(cli(brokers, "rollout", "status", id, "-o", "json")), &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not happen within a minute", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	spec := filepath.Join(dir, "spec.yaml")
	os.WriteFile(spec, []byte("name: up\noperation: {type: upgrade, version: 3.9.1}\nselector: kind=kafka\nstrategy:\n  phases:\n    - name: all\n      waves: 3\n"), 0o644)

	brokers, stop := start()
	id := lastLine(cli(brokers, "rollout", "submit", "-f", spec))
	waitFor("progress", func() bool { p := status(brokers, id); return p.Succeeded >= 3 && p.Pending > 0 })
	stop()

	brokers, stop = start()
	defer stop()
	waitFor("the rollout finishing", func() bool { return status(brokers, id).State.Terminal() })
	p := status(brokers, id)
	if p.State != records.WorkflowSucceeded {
		t.Fatalf("after a restart the rollout ended %s (%s)", p.State, p.Reason)
	}
	if clusters := cli(brokers, "cluster", "list"); !strings.Contains(clusters, "30 clusters") {
		t.Fatalf("after a restart the fleet is:\n%s", clusters)
	}
	for _, ph := range p.Phases {
		for _, w := range ph.Waves {
			for _, c := range w.Clusters {
				raw, err := os.ReadFile(filepath.Join(dir, "sim", c.ID+".json"))
				if err != nil {
					t.Fatal(err)
				}
				var st struct {
					Version string
					Applies int
				}
				if err := json.Unmarshal(raw, &st); err != nil {
					t.Fatal(err)
				}
				if st.Version != "3.9.1" || st.Applies != 1 {
					t.Errorf("%s: version %s after %d applies, want 3.9.1 after exactly one", c.ID, st.Version, st.Applies)
				}
			}
		}
	}
}

// TestExamplesAreValid keeps the README's examples honest: every rollout
// spec in examples/ parses and validates, except the one that shows a
// rejection, which the planner must reject.
func TestExamplesAreValid(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "operation:") {
			continue // not a rollout spec (e.g. exec-drivers.yaml)
		}
		spec, err := rollout.ParseYAML(data)
		if err == nil {
			err = spec.Validate()
		}
		if bad := strings.Contains(file, "bad-selector"); bad != (err != nil) {
			t.Errorf("%s: validation error %v", file, err)
		}
	}
}

func TestCLIPauseResumeCancel(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 30})
	now = f.Clock.Now
	t.Cleanup(func() { now = time.Now })
	spec := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(spec, []byte("name: slow\noperation: {type: upgrade, version: 3.9.1}\nselector: kind=kafka\nstrategy:\n  phases:\n    - name: all\n      waves: 2\n      bake: 1m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, f, "rollout", "submit", "-f", spec)
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, out)
	}
	id := lastLine(out)
	f.Await(id, time.Second, time.Minute, "a first cluster done", func(w *decide.Workflow) bool { return w.Progress().Succeeded > 0 })

	out, err = run(t, f, "rollout", "pause", id, "--reason", "checking dashboards")
	if err != nil || !strings.Contains(out, "is paused: paused by") || !strings.Contains(out, "checking dashboards") {
		t.Fatalf("pause: %v\n%s", err, out)
	}
	commands := len(f.ReadAll(f.Backbone.Names().Commands))
	f.PassTime(time.Hour) // an hour passes, paused
	if got := len(f.ReadAll(f.Backbone.Names().Commands)); got != commands {
		t.Fatalf("%d commands sent while paused", got-commands)
	}
	if out, err = run(t, f, "rollout", "resume", id); err != nil || !strings.Contains(out, "is running") {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	f.Await(id, 5*time.Second, 2*time.Minute, "the rollout finishing after resume", func(w *decide.Workflow) bool { return w.State == records.WorkflowSucceeded })
	if _, err := run(t, f, "rollout", "cancel", id); err == nil || !strings.Contains(err.Error(), "is succeeded: there is nothing to cancel") {
		t.Fatalf("cancel of a finished rollout: %v", err)
	}

	out, _ = run(t, f, "rollout", "submit", "-f", spec)
	other := lastLine(out)
	if out, err = run(t, f, "rollout", "cancel", other, "--reason", "wrong version"); err != nil || !strings.Contains(out, "is cancelled: cancelled by") {
		t.Fatalf("cancel: %v\n%s", err, out)
	}
	if _, err := run(t, f, "rollout", "pause", "no-such-rollout"); err == nil || !strings.Contains(err.Error(), "no workflow no-such-rollout here") {
		t.Fatalf("pause of an unknown rollout: %v", err)
	}
}

func TestCLIApprove(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 20})
	spec := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(spec, []byte("name: gated\noperation: {type: upgrade, version: 3.9.1}\nselector: kind=kafka\nstrategy:\n  phases:\n    - name: canary\n      selector: tier=internal\n      approve: before\n    - name: rest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, f, "rollout", "submit", "-f", spec)
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, out)
	}
	id := lastLine(out)
	f.Await(id, time.Second, 30*time.Second, "the gate", func(w *decide.Workflow) bool { return w.Gate == "before:canary" })
	if text, err := run(t, f, "rollout", "status", id); err != nil || !strings.Contains(text, "waiting for approval at before:canary") {
		t.Fatalf("status at the gate: %v\n%s", err, text)
	}
	if len(f.ReadAll(f.Backbone.Names().Commands)) != 0 {
		t.Fatal("commands sent before the approval")
	}
	if _, err := run(t, f, "rollout", "approve", id, "--phase", "rest"); err == nil || !strings.Contains(err.Error(), "not at phase rest") {
		t.Fatalf("approving the wrong phase: %v", err)
	}
	if out, err := run(t, f, "rollout", "approve", id, "--phase", "canary", "--reason", "CHG-42"); err != nil || !strings.Contains(out, "is running") {
		t.Fatalf("approve: %v\n%s", err, out)
	}
	f.Await(id, time.Second, time.Minute, "the rollout finishing", func(w *decide.Workflow) bool { return w.State == records.WorkflowSucceeded })
	var approval []string
	f.Eventually(0, 10*time.Second, func() bool {
		approval = nil
		for _, n := range f.Notifications() {
			if n.WorkflowID == id && (n.Kind == "workflow.waiting-approval" || n.Kind == "workflow.approved") {
				approval = append(approval, n.Message)
			}
		}
		return len(approval) == 2
	})
	if len(approval) != 2 || !strings.Contains(approval[1], "before:canary approved by") || !strings.Contains(approval[1], "CHG-42") {
		t.Fatalf("approval notifications: %q", approval)
	}
	// Who opened the gate.
	if text, err := run(t, f, "rollout", "status", id); err != nil || !strings.Contains(text, "approvals: before:canary opened by "+principal(f.Backbone)+"\n") {
		t.Fatalf("rollout status does not say who opened the gate: %v\n%s", err, text)
	}
}

func TestCLIRetry(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 30, FailureRate: 0.3})
	spec := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(spec, []byte("name: flaky\noperation: {type: upgrade, version: 3.9.1}\nselector: kind=kafka\nfailureThreshold: \"100%\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, f, "rollout", "submit", "-f", spec)
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, out)
	}
	id := lastLine(out)
	w := f.Await(id, time.Second, time.Minute, "the rollout ending", func(w *decide.Workflow) bool { return w.State.Terminal() })
	if w.State != records.WorkflowFailed {
		t.Fatalf("state %s, want failed: a third of the operations fail", w.State)
	}
	for round := 1; w.State == records.WorkflowFailed; round++ {
		if round > 12 {
			t.Fatalf("still failed after %d retries: %s", round-1, w.Reason)
		}
		before := w.LastControl
		if out, err := run(t, f, "rollout", "retry", id, "--reason", "flaky brokers"); err != nil || !strings.Contains(out, "is running") {
			t.Fatalf("retry: %v\n%s", err, out)
		}
		w = f.Await(id, time.Second, time.Minute, "the retried rollout ending", func(w *decide.Workflow) bool {
			return w.LastControl != before && w.State.Terminal()
		})
	}
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s)", w.State, w.Reason)
	}
	for tid := range w.Targets {
		if n := f.Sim.Applies(tid); n != 1 {
			t.Errorf("%s changed %d times, want once", tid, n)
		}
	}
	if _, err := run(t, f, "rollout", "retry", id); err == nil || !strings.Contains(err.Error(), "nothing to retry") {
		t.Fatalf("retry of a succeeded rollout: %v", err)
	}
}

// TestCLIRollback rolls back a config change through the CLI: every
// cluster it changed gets its previous values back, and keys that had none
// lose their override.
func TestCLIRollback(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 30})
	now = f.Clock.Now
	t.Cleanup(func() { now = time.Now })
	out, err := run(t, f, "rollout", "submit", "-f", "../../examples/config-undo.yaml")
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, out)
	}
	id := lastLine(out)
	w := f.Await(id, time.Second, time.Minute, "the rollout finishing", func(w *decide.Workflow) bool { return w.State.Terminal() })
	if w.State != records.WorkflowSucceeded || len(w.Targets) == 0 {
		t.Fatalf("state %s (%s), %d targets", w.State, w.Reason, len(w.Targets))
	}
	for cid := range w.Targets {
		if st, _ := f.Sim.Cluster(cid); st.Config["log.retention.ms"] != "604800000" {
			t.Fatalf("%s config %v after the change", cid, st.Config)
		}
	}

	out, err = run(t, f, "rollout", "rollback", id, "--reason", "consumers lag")
	if err != nil || !strings.Contains(out, "rollback requested by") || !strings.Contains(out, "consumers lag") {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	// The fleet's view may still show the rollout succeeded: wait past that.
	w = f.Await(id, time.Second, time.Minute, "the rollback finishing", func(w *decide.Workflow) bool {
		return w.State.Terminal() && w.State != records.WorkflowSucceeded
	})
	if w.State != records.WorkflowRolledBack {
		t.Fatalf("state %s (%s), want rolled-back", w.State, w.Reason)
	}
	for cid := range w.Targets {
		if st, _ := f.Sim.Cluster(cid); len(st.Config) != 0 {
			t.Errorf("%s config %v after the rollback, want no overrides, as before", cid, st.Config)
		}
	}
	text, err := run(t, f, "rollout", "status", id)
	if err != nil || !strings.Contains(text, "state:     rolled-back") || !strings.Contains(text, "rollback:  "+records.RollbackID(id)) {
		t.Fatalf("status: %v\n%s", err, text)
	}
	text, err = run(t, f, "rollout", "status", records.RollbackID(id), "--clusters")
	if err != nil || !strings.Contains(text, "state:     succeeded") || !strings.Contains(text, "reset log.retention.ms") {
		t.Fatalf("status of the rollback: %v\n%s", err, text)
	}
	if _, err := run(t, f, "rollout", "rollback", id); err == nil || !strings.Contains(err.Error(), "is already rolled back") {
		t.Fatalf("second rollback: %v", err)
	}
}

// TestCLIShowsACompactedRollout: once a finished rollout's retention has
// passed, status shows its summary and says where its clusters' records
// went; each cluster's history still has it.
func TestCLIShowsACompactedRollout(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 4, Retention: time.Hour})
	id := f.Submit(rollout.Spec{Name: "restart two", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{f.Clusters[0].ID, f.Clusters[1].ID}})
	f.Await(id, time.Second, time.Minute, "the rollout finishing", func(w *decide.Workflow) bool { return w.State.Terminal() })
	f.Await(id, time.Minute, time.Minute, "its rows removed", func(w *decide.Workflow) bool { return w.Compacted() })

	out, err := run(t, f, "rollout", "status", id, "-o", "json")
	if err != nil {
		t.Fatalf("rollout status: %v\n%s", err, out)
	}
	var p decide.Progress
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if !p.Compacted || p.Targets != 2 || p.State != records.WorkflowSucceeded {
		t.Fatalf("status of a compacted rollout = %+v", p)
	}
	if text, err := run(t, f, "rollout", "status", id); err != nil || !strings.Contains(text, "removed after the retention") {
		t.Fatalf("rollout status (text): %v\n%s", err, text)
	}
	if text, err := run(t, f, "cluster", "history", f.Clusters[0].ID); err != nil || !strings.Contains(text, id) || !strings.Contains(text, "alice") {
		t.Fatalf("cluster history after the compaction, with who asked (alice): %v\n%s", err, text)
	}
}
