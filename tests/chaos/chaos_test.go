//go:build unix

package chaos_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/tests/chaos"
)

// TestChaos makes a seeded chaos run and fails on anything its checks
// find. It runs only when asked:
//
//	FLOTILLA_CHAOS=1 go test ./tests/chaos            # the short run (embedded broker), a few minutes
//	FLOTILLA_CHAOS=long go test -timeout 2h ./tests/chaos
//	FLOTILLA_CHAOS=1 FLOTILLA_TEST_BROKERS=127.0.0.1:39092 go test ./tests/chaos   # on a real Kafka
//
// FLOTILLA_CHAOS_SEED picks the seed (default 1). A failed run keeps its
// files (logs, call log, sim state) and names their directory.
func TestChaos(t *testing.T) {
	mode := os.Getenv("FLOTILLA_CHAOS")
	if mode == "" || mode == "0" {
		t.Skip("the chaos suite runs with FLOTILLA_CHAOS=1 (short) or FLOTILLA_CHAOS=long")
	}
	seed := uint64(1)
	if s := os.Getenv("FLOTILLA_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FLOTILLA_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	o := chaos.Short(seed)
	if mode == "long" {
		o = chaos.Long(seed)
	}
	if brokertest.Real() {
		o.Brokers = strings.Join(brokertest.Addrs(t), ",")
	}
	dir, err := os.MkdirTemp("", "flotilla-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	o.Dir = dir
	o.Progress = testWriter{t}
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-30*time.Second))
		defer cancel()
	}
	rep, err := chaos.Run(ctx, o)
	if rep != nil {
		var b strings.Builder
		rep.Print(&b)
		t.Log("\n" + b.String())
	}
	if err != nil {
		t.Fatalf("chaos run (files in %s): %v", dir, err)
	}
	for _, c := range rep.Failed() {
		t.Errorf("%s: %d violations, e.g. %s", c.Name, c.Count, strings.Join(c.Violations[:min(3, len(c.Violations))], "; "))
	}
	for _, e := range rep.HarnessErrors {
		t.Errorf("harness: %s", e)
	}
	if t.Failed() {
		t.Logf("the run's files are in %s", dir)
		return
	}
	os.RemoveAll(dir)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
