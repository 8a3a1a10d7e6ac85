package claims_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/claims"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// start returns claims over a fresh claims topic, as two executors each
// follow it: both read every claim.
func start(t *testing.T, copies int) []*claims.Claims {
	t.Helper()
	bb := backbone.Config{Brokers: brokertest.Addrs(t), Namespace: fmt.Sprintf("claims-%d", time.Now().UnixNano())}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	setup, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	if err := bb.EnsureTopics(setup, 3, 1); err != nil {
		t.Fatal(err)
	}
	var out []*claims.Claims
	for range copies {
		producer, err := bb.Client()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(producer.Close)
		c := claims.New(bb.Names().Claims, bb.Opts(), producer, slog.New(slog.DiscardHandler))
		go c.Run(ctx)
		if err := c.WaitReady(setup); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func claim(cluster, command string) records.ClaimRecord {
	return records.ClaimRecord{Envelope: records.Envelope{ID: command, Time: time.Now(), Principal: "executor"}, ClusterID: cluster, CommandID: command, WorkflowID: "wf"}
}

// acquire runs Acquire in the background and reports its result.
func acquire(c *claims.Claims, ctx context.Context, r records.ClaimRecord) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.Acquire(ctx, r) }()
	return done
}

func TestOneHolderPerClusterAcrossCopies(t *testing.T) {
	cs := start(t, 2)
	a, b := cs[0], cs[1]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := a.Acquire(ctx, claim("eu/c1", "cmd-1")); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	second := acquire(b, ctx, claim("eu/c1", "cmd-2"))
	other := acquire(b, ctx, claim("c2", "cmd-3"))
	if err := <-other; err != nil {
		t.Fatalf("a claim on another cluster: %v", err)
	}
	// The second claim waits while the first holds: both copies agree.
	waitFor(t, func() bool { h, ok := b.Holder("eu/c1"); return ok && h.CommandID == "cmd-1" && len(b.Live()) == 3 })
	select {
	case err := <-second:
		t.Fatalf("the second claim on eu/c1 returned (%v) while the first held it", err)
	default:
	}
	if err := a.Acquire(ctx, claim("eu/c1", "cmd-1")); err != nil {
		t.Fatalf("claiming again for the holding command: %v", err)
	}
	if err := a.Release(ctx, "eu/c1", "cmd-1"); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatalf("the second claim after the release: %v", err)
	}
	// The first copy follows the log too, and comes to the same view.
	waitFor(t, func() bool { h, ok := a.Holder("eu/c1"); return ok && h.CommandID == "cmd-2" })
	if err := a.Release(ctx, "eu/c1", "no-such-command"); err != nil {
		t.Fatalf("releasing a claim that is not live: %v", err)
	}
}

func TestAcquireGivesUpWithItsContext(t *testing.T) {
	c := start(t, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Acquire(ctx, claim("c1", "cmd-1")); err != nil {
		t.Fatal(err)
	}
	waiting, stop := context.WithCancel(ctx)
	done := acquire(c, waiting, claim("c1", "cmd-2"))
	waitFor(t, func() bool { return len(c.Live()) == 2 })
	stop()
	if err := <-done; err == nil {
		t.Fatal("Acquire returned nil after its context ended, with the cluster held")
	}
}

// TestClaimsSurviveARestart: a copy started afresh reads the live claims
// from the log, in the order they were made.
func TestClaimsSurviveARestart(t *testing.T) {
	bb := backbone.Config{Brokers: brokertest.Addrs(t), Namespace: fmt.Sprintf("claims-%d", time.Now().UnixNano())}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bb.EnsureTopics(ctx, 3, 1); err != nil {
		t.Fatal(err)
	}
	producer, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	run := func() (*claims.Claims, context.CancelFunc) {
		rctx, stop := context.WithCancel(ctx)
		c := claims.New(bb.Names().Claims, bb.Opts(), producer, slog.New(slog.DiscardHandler))
		go c.Run(rctx)
		return c, stop
	}
	first, stop := run()
	for _, cmd := range []string{"cmd-1", "cmd-2"} {
		go first.Acquire(ctx, claim("c1", cmd))
		waitFor(t, func() bool {
			_, ok := first.Holder("c1")
			return ok && len(first.Live()) == map[string]int{"cmd-1": 1, "cmd-2": 2}[cmd]
		})
	}
	if err := first.Release(ctx, "c1", "cmd-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(first.Live()) == 1 })
	stop()

	again, stop := run()
	defer stop()
	if err := again.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if h, ok := again.Holder("c1"); !ok || h.CommandID != "cmd-2" || len(again.Live()) != 1 {
		t.Fatalf("after a restart: holder %+v, %v, live %v; want cmd-2 alone", h, ok, again.Live())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
