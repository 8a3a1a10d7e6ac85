package bench

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-fleet/flotilla/internal/servicecmd"
)

// childEnv makes the test binary run a service instead of the tests, so
// that the bench can start the services as processes without a flotilla
// binary built.
const childEnv = "FLOTILLA_BENCH_TEST_SERVICE"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		root := &cobra.Command{Use: "flotilla", SilenceUsage: true}
		root.AddCommand(servicecmd.Planner(), servicecmd.Executor(), servicecmd.Monitor(), servicecmd.Notifier())
		servicecmd.Main(root)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBenchQuick runs the quick bench end to end on the embedded broker
// and checks that its figures are sane and agree with each other (no
// timing is asserted: the machine's speed is what the bench measures).
func TestBenchQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the services over a simulated fleet")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	r, err := Run(ctx, Options{
		Quick: true, Exe: exe, Env: []string{childEnv + "=1"}, Timeout: 3 * time.Minute,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table.String())
	checkLimits(t, r.Limits)
	checkRollouts(t, r)
	checkReaction(t, r.Reaction)
	checkRecoveries(t, r)
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("the report does not marshal: %v", err)
	}
}

func checkLimits(t *testing.T, l *LimitsResult) {
	t.Helper()
	if l == nil || l.Error != "" {
		t.Fatalf("limits: %+v", l)
	}
	if l.Produce <= 0 || l.Consume <= 0 || l.Txn <= 0 || l.TxnCommits == 0 || l.RecordBytes < 100 {
		t.Errorf("limits: %+v", l)
	}
}

func checkRollouts(t *testing.T, r *Report) {
	t.Helper()
	if len(r.Rollouts) != 1 {
		t.Fatalf("%d rollouts reported, want 1", len(r.Rollouts))
	}
	ro := r.Rollouts[0]
	if !ro.Finished || ro.Error != "" || ro.Note != "" {
		t.Fatalf("rollout did not finish: %+v", ro)
	}
	if ro.Targets == 0 || ro.Completed != ro.Targets {
		t.Errorf("rollout completed %d of %d targets", ro.Completed, ro.Targets)
	}
	if ro.MaxInFlight <= 0 || ro.MaxInFlight > ro.InFlightLimit {
		t.Errorf("rollout: at most %d in flight, want 1..%d", ro.MaxInFlight, ro.InFlightLimit)
	}
	if ro.OpsPerSecond <= 0 || ro.TxnRatio <= 0 {
		t.Errorf("rollout: %v operations/s, %v of the raw limit", ro.OpsPerSecond, ro.TxnRatio)
	}
	checkRSS(t, "rollout", ro.PeakRSS)
}

func checkReaction(t *testing.T, re *ReactionResult) {
	t.Helper()
	if re == nil || re.Error != "" {
		t.Fatalf("reaction: %+v", re)
	}
	if len(re.Trials) != 3 {
		t.Errorf("%d trials, want 3", len(re.Trials))
	}
	for i, tr := range re.Trials {
		if tr.Millis <= 0 || tr.InFlight < nearLimit(re.InFlightLimit) || tr.InFlight > re.InFlightLimit {
			t.Errorf("trial %d: %+v", i+1, tr)
		}
	}
	if re.CommandsAfterPause != 0 {
		t.Errorf("%d commands sent after a pause", re.CommandsAfterPause)
	}
	if re.P50Millis <= 0 || re.P99Millis < re.P50Millis {
		t.Errorf("reaction p50 %v, p99 %v", re.P50Millis, re.P99Millis)
	}
	checkRSS(t, "reaction", re.PeakRSS)
}

func checkRecoveries(t *testing.T, r *Report) {
	t.Helper()
	if len(r.Recoveries) != 1 {
		t.Fatalf("%d recoveries reported, want 1", len(r.Recoveries))
	}
	rc := r.Recoveries[0]
	if rc.Error != "" {
		t.Fatalf("recovery: %s", rc.Error)
	}
	if len(rc.Services) != len(serviceNames) {
		t.Fatalf("recovery of %d services, want %d", len(rc.Services), len(serviceNames))
	}
	for _, s := range rc.Services {
		reads := s.Service != "notifier" // which goes on from its committed offsets
		if !s.Acted || s.ActingSeconds <= 0 || (s.Records > 0) != reads || reads && (s.CatchUp <= 0 || s.Raw <= 0) {
			t.Errorf("recovery of %s: %+v", s.Service, s)
		}
	}
	if rc.IdleSeconds <= 0 || len(rc.IdleCores) != len(serviceNames) {
		t.Errorf("idle: %v s, %v", rc.IdleSeconds, rc.IdleCores)
	}
	checkRSS(t, "recovery", rc.PeakRSS)
	if len(r.Goals) == 0 {
		t.Error("no goal checked")
	}
}

func checkRSS(t *testing.T, stage string, rss map[string]int64) {
	t.Helper()
	for _, name := range serviceNames {
		if rss[name] <= 0 {
			t.Errorf("%s: no peak RSS for %s: %v", stage, name, rss)
		}
	}
}
