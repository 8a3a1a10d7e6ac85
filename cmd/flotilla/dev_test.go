package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/servicecmd"
	"github.com/flotilla-fleet/flotilla/pkg/kafkaauth"
	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/metrics/metricstest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// TestDevBrokerOnly runs `flotilla dev --broker-only`: the broker, the
// topics and the simulated fleet, and no service. The inventory holds the
// fleet and no service's group exists; then the four service commands it
// prints, each run as a command of its own (as separate processes would),
// carry a rollout through, the executor and the monitor sharing the
// simulated clusters through --sim-dir, and each serves its metrics
// (--metrics-addr), scraped after the rollout. Without --broker-only, dev
// runs the services itself and their groups appear.
func TestDevBrokerOnly(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	pr, pw := io.Pipe()
	devDone := make(chan error, 1)
	go func() {
		cmd := rootCommand()
		cmd.SetOut(pw)
		cmd.SetArgs([]string{"dev", "--broker-only", "--addr", "127.0.0.1:0", "--data-dir", dir, "--sim-clusters", "12",
			"--sim-op-duration", "100ms", "--probe-interval", "200ms", "--heartbeat", "1s", "--log-level", "warn"})
		devDone <- cmd.ExecuteContext(ctx)
		pw.Close()
	}()
	// The service commands dev prints, by service.
	printed := map[string][]string{}
	var shown bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		lines := bufio.NewScanner(pr)
		for len(printed) < 4 && lines.Scan() {
			shown.WriteString(lines.Text() + "\n")
			if args, ok := strings.CutPrefix(lines.Text(), "  flotilla "); ok {
				f := strings.Fields(args)
				printed[f[0]] = f
			}
		}
	}()
	select {
	case <-read:
	case <-time.After(30 * time.Second):
		cancel()
		<-read
	}
	if len(printed) < 4 {
		t.Fatalf("dev --broker-only did not print the four service commands:\n%s", shown.String())
	}
	go io.Copy(io.Discard, pr)
	t.Logf("dev --broker-only printed:\n%s", shown.String())

	exec := printed["executor"]
	brokers := exec[slices.Index(exec, "--brokers")+1]
	simDir := filepath.Join(dir, "sim")
	for _, service := range []string{"executor", "monitor"} {
		args := strings.Join(printed[service], " ")
		if !strings.Contains(args, "--sim-dir "+simDir) || !strings.Contains(args, "--sim-op-duration 100ms") {
			t.Errorf("the %s's command does not share the simulated fleet: %s", service, args)
		}
	}
	if m := strings.Join(printed["monitor"], " "); !strings.Contains(m, "--interval 200ms") {
		t.Errorf("the monitor's command does not probe as dev would: %s", m)
	}

	cli := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		cmd := rootCommand()
		cmd.SetOut(&out)
		cmd.SetArgs(append(args, "--brokers", brokers))
		if err := cmd.ExecuteContext(ctx); err != nil {
			t.Fatalf("flotilla %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	var fleet []clusterView
	if err := json.Unmarshal([]byte(cli("cluster", "list", "-o", "json")), &fleet); err != nil {
		t.Fatal(err)
	}
	if len(fleet) != 12 {
		t.Fatalf("the inventory holds %d clusters, want the 12 of --sim-clusters", len(fleet))
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	serviceGroups := func() []string {
		listed, err := adm.ListGroups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var found []string
		for _, g := range listed.Groups() {
			for _, service := range []string{"planner", "executor", "monitor", "notifier"} {
				if g == "fleet."+service {
					found = append(found, g)
				}
			}
		}
		return found
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if found := serviceGroups(); len(found) > 0 {
			t.Fatalf("dev --broker-only runs services: groups %v exist", found)
		}
	}

	// Each service as dev said, as a command of its own, serving its
	// metrics on an address of its own.
	var services sync.WaitGroup
	defer services.Wait()
	defer cancel()
	metricsAt := map[string]string{}
	for name, args := range printed {
		addr := freeAddr(t)
		metricsAt[name] = addr
		services.Add(1)
		go func() {
			defer services.Done()
			cmd := rootCommand()
			cmd.SetArgs(append(slices.Clone(args), "--log-level", "warn", "--metrics-addr", addr))
			if err := cmd.ExecuteContext(ctx); err != nil {
				t.Errorf("flotilla %s: %v", name, err)
			}
		}()
	}
	spec := filepath.Join(dir, "spec.yaml")
	if err := os.WriteFile(spec, []byte("name: up\noperation: {type: upgrade, version: 3.9.1}\nselector: kind=kafka\nstrategy:\n  phases:\n    - name: all\n      waves: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := lastLine(cli("rollout", "submit", "-f", spec))
	var p decide.Progress
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if err := json.Unmarshal([]byte(cli("rollout", "status", id, "-o", "json")), &p); err != nil {
			t.Fatal(err)
		}
		if p.State.Terminal() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rollout did not finish within a minute: %+v", p)
		}
	}
	if p.State != records.WorkflowSucceeded {
		t.Fatalf("the rollout ended %s (%s)", p.State, p.Reason)
	}
	upgraded := 0
	for _, ph := range p.Phases {
		for _, w := range ph.Waves {
			for _, c := range w.Clusters {
				raw, err := os.ReadFile(filepath.Join(simDir, c.ID+".json"))
				if err != nil {
					t.Fatal(err)
				}
				var st struct{ Version string }
				if err := json.Unmarshal(raw, &st); err != nil {
					t.Fatal(err)
				}
				if st.Version != "3.9.1" {
					t.Errorf("%s runs %s in %s, want 3.9.1", c.ID, st.Version, simDir)
				}
				upgraded++
			}
		}
	}
	if upgraded == 0 {
		t.Fatal("the rollout upgraded no cluster")
	}
	// Each process's /metrics has its own service's metrics, and only
	// those, with what the rollout did.
	for name, addr := range metricsAt {
		metricstest.Await(t, "http://"+addr+metrics.Path, 30*time.Second, func(m metricstest.Families) string {
			var missing []string
			for fam := range m {
				if s, ok := strings.CutPrefix(fam, "flotilla_"); ok && !strings.HasPrefix(s, name+"_") {
					missing = append(missing, "no "+fam+" (another service's)")
				}
			}
			if m.Value("kgo_produce_bytes_total", "service", name) == 0 || m.Value("kgo_fetch_bytes_total", "service", name) == 0 {
				missing = append(missing, "Kafka bytes produced and fetched")
			}
			switch name {
			case "planner":
				if m.Value("flotilla_planner_workflows", "state", "succeeded") != 1 {
					missing = append(missing, "the workflow succeeded")
				}
			case "executor":
				if m.Value("flotilla_executor_operations_total", "outcome", "succeeded") < float64(upgraded) {
					missing = append(missing, fmt.Sprintf("%d operations succeeded", upgraded))
				}
			case "monitor":
				if m.Value("flotilla_monitor_probe_duration_seconds") == 0 {
					missing = append(missing, "probes")
				}
			case "notifier":
				if m.Value("flotilla_notifier_notifications_total", "kind", "workflow.succeeded") != 1 {
					missing = append(missing, "the success notified")
				}
			}
			if len(missing) > 0 {
				return name + ": " + strings.Join(missing, ", ")
			}
			return ""
		})
	}
	cancel()
	services.Wait()
	if err := <-devDone; err != nil {
		t.Errorf("dev --broker-only stopped with: %v", err)
	}
}

// TestDevSecure runs `flotilla dev --secure`: a client without credentials
// is refused, the user's printed client config signs the CLI in, an
// unsigned rollout is rejected, and one signed with the printed key runs
// through the services, each signed in as its own principal under the
// plan's ACLs. Started again on the same data
// directory it carries on; without --secure it refuses to start.
func TestDevSecure(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("FLOTILLA_PRINCIPAL", "dana")
	var dashboardAt atomic.Value // its address, once it listens
	start := func(secure bool) (brokers []string, out *syncBuffer, stop func(), err error) {
		out = &syncBuffer{}
		dev, err := tryDev(t, devOptions{DataDir: dir, Clusters: 12, Secure: secure, Out: out,
			Chain:   servicecmd.ChainFlags{Interval: 200 * time.Millisecond},
			Drivers: servicecmd.DriverFlags{Sim: servicecmd.SimFlags{OpDuration: 100 * time.Millisecond}},
			HTTP:    "127.0.0.1:0", OnDashboard: func(a net.Addr) { dashboardAt.Store(a.String()) }})
		if err != nil {
			return nil, out, nil, err
		}
		return dev.brokers, out, func() { dev.stop(t) }, nil
	}
	cli := func(brokers []string, args ...string) (string, error) {
		var out bytes.Buffer
		cmd := rootCommand()
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append(args, "--brokers", strings.Join(brokers, ","), "--timeout", "10s"))
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}

	brokers, out, stop, err := start(true)
	if err != nil {
		t.Fatalf("dev --secure did not start: %v", err)
	}
	// What dev prints: the config file and the key to export.
	var config, key string
	for _, line := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "export FLOTILLA_KAFKA_CONFIG="); ok {
			config = v
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "export FLOTILLA_KEY="); ok {
			key, _, _ = strings.Cut(v, " ")
		}
	}
	if config == "" || key == "" {
		t.Fatalf("dev --secure printed no FLOTILLA_KAFKA_CONFIG or FLOTILLA_KEY to export:\n%s", out.String())
	}
	// The dashboard asks for dana's password, which dev says where to find.
	if !strings.Contains(out.String(), "the dashboard and /metrics ask for a password: sign in as dana with the one in") {
		t.Errorf("dev --secure did not say how to sign in to the dashboard:\n%s", out.String())
	}
	password, err := kafkaauth.ReadPasswordFile(filepath.Join(dir, "secure", "dana.password"))
	if err != nil {
		t.Fatal(err)
	}
	dashboardStatus := func(user, pass string) int {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			addr, _ := dashboardAt.Load().(string)
			if addr == "" {
				if time.Now().After(deadline) {
					t.Fatal("the dashboard did not listen in 30s")
				}
				continue
			}
			req, _ := http.NewRequest("GET", "http://"+addr+"/api/fleet", nil)
			req.SetBasicAuth(user, pass)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
				return resp.StatusCode // 503: the log not read yet
			}
		}
	}
	if got := dashboardStatus("dana", "wrong"); got != http.StatusUnauthorized {
		t.Errorf("the secure dashboard with a wrong password: %d, want 401", got)
	}
	if got := dashboardStatus("dana", password); got != http.StatusOK {
		t.Errorf("the secure dashboard as dana: %d, want 200", got)
	}
	if _, err := cli(brokers, "cluster", "list"); err == nil {
		t.Fatal("a client without credentials listed the fleet of a secure broker")
	}
	t.Setenv("FLOTILLA_KAFKA_CONFIG", config)
	if list, err := cli(brokers, "cluster", "list"); err != nil || !strings.Contains(list, "12 clusters") {
		t.Fatalf("cluster list as dana: %v\n%s", err, list)
	}
	spec := filepath.Join(dir, "spec.yaml")
	os.WriteFile(spec, []byte("name: up\noperation: {type: upgrade, version: 3.9.1}\nselector: kind=kafka\nstrategy:\n  phases:\n    - name: all\n      waves: 2\n"), 0o644)
	// Signed in, but unsigned: the planner refuses it.
	if refused, err := cli(brokers, "rollout", "submit", "-f", spec); err == nil || !strings.Contains(err.Error(), "not signed, and signatures are required") {
		t.Fatalf("an unsigned rollout submit: %v\n%s\nwant a rejection that says it is unsigned", err, refused)
	}
	t.Setenv("FLOTILLA_KEY", key)
	submitted, err := cli(brokers, "rollout", "submit", "-f", spec)
	if err != nil {
		t.Fatalf("rollout submit as dana, signed: %v\n%s", err, submitted)
	}
	id := lastLine(submitted)
	state := func() records.WorkflowState {
		raw, err := cli(brokers, "rollout", "status", id, "-o", "json")
		if err != nil {
			t.Fatalf("rollout status: %v\n%s", err, raw)
		}
		var p decide.Progress
		if err := json.Unmarshal([]byte(raw), &p); err != nil {
			t.Fatal(err)
		}
		return p.State
	}
	deadline := time.Now().Add(time.Minute)
	for !state().Terminal() {
		if time.Now().After(deadline) {
			t.Fatal("the rollout did not finish within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := state(); s != records.WorkflowSucceeded {
		t.Fatalf("the rollout ended %s", s)
	}
	if audit, err := cli(brokers, "audit", "--workflow", id); err != nil || !strings.Contains(audit, "dana") {
		t.Fatalf("audit as dana: %v\n%s", err, audit)
	}
	// The audit trail verifies, its checkpoints signed by the services'
	// key that dev printed.
	var serviceKeys string
	for _, line := range strings.Split(out.String(), "\n") {
		if _, v, ok := strings.Cut(line, "flotilla audit verify --service-keys "); ok {
			serviceKeys = strings.TrimSpace(v)
		}
	}
	deadline = time.Now().Add(time.Minute)
	for {
		verified, err := cli(brokers, "audit", "verify", "--workflow", id, "--service-keys", serviceKeys)
		if err != nil {
			t.Fatalf("audit verify as dana: %v\n%s", err, verified)
		}
		if !strings.Contains(verified, "unsigned") && strings.Contains(verified, "signed by") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit verify found no signed checkpoint within a minute:\n%s", verified)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()

	if _, _, _, err := start(false); err == nil || !strings.Contains(err.Error(), "--secure") {
		t.Fatalf("dev without --secure on a secure data directory: err %v, want a refusal that names --secure", err)
	}
	brokers, _, stop, err = start(true)
	if err != nil {
		t.Fatalf("dev --secure did not start again: %v", err)
	}
	defer stop()
	if s := state(); s != records.WorkflowSucceeded {
		t.Fatalf("after a restart the rollout is %s", s)
	}
}
