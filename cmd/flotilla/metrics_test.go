package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/metrics/metricstest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// TestDevServesTheMetricsOfItsFourServices runs `flotilla dev` with
// --metrics-addr on a free port and a rollout through it, and scrapes the
// one endpoint until it shows each service's work under its own names.
func TestDevServesTheMetricsOfItsFourServices(t *testing.T) {
	dir := t.TempDir()
	bound := make(chan net.Addr, 1)
	dev := startDev(t, devOptions{DataDir: dir, Clusters: 8, MetricsAddr: "127.0.0.1:0", OnMetrics: func(a net.Addr) { bound <- a }})
	brokers := dev.brokers
	url := "http://" + awaitDev(t, dev, bound, "the metrics server").String() + metrics.Path

	spec := filepath.Join(dir, "spec.yaml")
	if err := os.WriteFile(spec, []byte("name: up\noperation: {type: upgrade, version: 3.9.1}\nselector: kind=kafka\nstrategy:\n  phases:\n    - name: all\n      waves: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) string {
		t.Helper()
		out, err := runCLI(brokers, args...)
		if err != nil {
			t.Fatalf("flotilla %v: %v\n%s", args, err, out)
		}
		return out
	}
	id := lastLine(cli("rollout", "submit", "-f", spec))
	var p decide.Progress
	for deadline := time.Now().Add(time.Minute); !p.State.Terminal(); time.Sleep(50 * time.Millisecond) {
		if err := json.Unmarshal([]byte(cli("rollout", "status", id, "-o", "json")), &p); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rollout did not finish within a minute: %+v", p)
		}
	}
	if p.State != records.WorkflowSucceeded || p.Succeeded == 0 {
		t.Fatalf("the rollout ended %s (%s), %d clusters succeeded", p.State, p.Reason, p.Succeeded)
	}
	metricstest.Await(t, url, 30*time.Second, func(m metricstest.Families) string {
		var missing []string
		need := func(what string, ok bool) {
			if !ok {
				missing = append(missing, what)
			}
		}
		need("the workflow succeeded", m.Value("flotilla_planner_workflows", "state", "succeeded") == 1)
		need("decisions", m.Value("flotilla_planner_decision_seconds") > 0)
		need("operations succeeded", m.Value("flotilla_executor_operations_total", "outcome", "succeeded") >= float64(p.Succeeded))
		need("probes", m.Value("flotilla_monitor_probe_duration_seconds") > 0)
		need("health changes", m.Value("flotilla_monitor_health_signals_total", "kind", "change") > 0)
		need("notifications", m.Value("flotilla_notifier_notifications_total", "kind", "workflow.succeeded") == 1)
		for _, service := range []string{"planner", "executor", "monitor", "notifier"} {
			need(service+" produced", m.Value("kgo_produce_bytes_total", "service", service) > 0)
			need(service+" fetched", m.Value("kgo_fetch_bytes_total", "service", service) > 0)
		}
		if len(missing) > 0 {
			return fmt.Sprint("not yet: ", missing)
		}
		return ""
	})
}

// runCLI runs the CLI against brokers and returns what it printed.
func runCLI(brokers []string, args ...string) (string, error) {
	var out strings.Builder
	cmd := rootCommand()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append(args, "--brokers", strings.Join(brokers, ",")))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// freeAddr returns a local address no one listens on now, for a command
// that takes an address rather than a listener.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestDevServesTheDashboardWithItsMetrics runs `flotilla dev` with its
// dashboard on a free port: it prints the URL, the dashboard shows the
// simulated fleet once it has read the log, and the four services'
// metrics are at its /metrics.
func TestDevServesTheDashboardWithItsMetrics(t *testing.T) {
	bound := make(chan net.Addr, 1)
	out := &lockedWriter{w: &strings.Builder{}}
	dev := startDev(t, devOptions{Clusters: 8, HTTP: "127.0.0.1:0", Out: out, OnDashboard: func(a net.Addr) { bound <- a }})
	base := "http://" + awaitDev(t, dev, bound, "the dashboard").String()
	var fleet struct {
		Health struct{ Total, Healthy int }
	}
	for deadline := time.Now().Add(time.Minute); fleet.Health.Healthy < 8; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the dashboard did not show 8 healthy clusters within a minute: %+v", fleet)
		}
		resp, err := http.Get(base + "/api/fleet")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			_ = json.NewDecoder(resp.Body).Decode(&fleet)
		}
		resp.Body.Close()
	}
	m, err := metricstest.Scrape(context.Background(), base+metrics.Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"flotilla_planner_workflows", "flotilla_executor_operations_in_flight", "flotilla_monitor_probe_duration_seconds", "kgo_connects_total"} {
		if !m.Has(name) {
			t.Errorf("the dashboard's /metrics lacks %s", name)
		}
	}
	if printed := out.String(); !strings.Contains(printed, "dashboard: "+base+"/") {
		t.Errorf("dev did not print the dashboard's URL %s/; it printed %q", base, printed)
	}
}

// lockedWriter is a string builder safe for use from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestDevServesItsEndpointsOnlyToItsUsers runs `flotilla dev` with a web
// config of one user: its dashboard and its /metrics on --metrics-addr
// refuse a request without her password (401) and serve one with it.
func TestDevServesItsEndpointsOnlyToItsUsers(t *testing.T) {
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(webConfig, []byte("basic_auth_users:\n  alice: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dashboard, metricsAt := make(chan net.Addr, 1), make(chan net.Addr, 1)
	dev := startDev(t, devOptions{DataDir: dir, Clusters: 4, WebConfig: webConfig,
		HTTP: "127.0.0.1:0", OnDashboard: func(a net.Addr) { dashboard <- a },
		MetricsAddr: "127.0.0.1:0", OnMetrics: func(a net.Addr) { metricsAt <- a }})
	urls := []string{"http://" + awaitDev(t, dev, dashboard, "the dashboard").String(), "http://" + awaitDev(t, dev, metricsAt, "the metrics server").String()}
	status := func(url, user, password string) int {
		t.Helper()
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, url := range []string{urls[0] + "/", urls[0] + "/api/fleet", urls[0] + "/events", urls[1] + metrics.Path} {
		if got := status(url, "", ""); got != http.StatusUnauthorized {
			t.Errorf("%s without a password: %d, want 401", url, got)
		}
		if got := status(url, "alice", "wrong"); got != http.StatusUnauthorized {
			t.Errorf("%s with a wrong password: %d, want 401", url, got)
		}
	}
	if got := status(urls[1]+metrics.Path, "alice", "s3cret"); got != http.StatusOK {
		t.Errorf("%s as alice: %d, want 200", urls[1]+metrics.Path, got)
	}
	// The dashboard answers 503 until it has read the log, then 200.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		got := status(urls[0]+"/api/fleet", "alice", "s3cret")
		if got == http.StatusOK {
			break
		}
		if got != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("the dashboard as alice: %d, want 200 once it has read the log", got)
		}
	}
}
