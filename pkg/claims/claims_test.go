package claims_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/claims"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// newBackbone makes a namespace of the test broker with its topics.
func newBackbone(t *testing.T) backbone.Config {
	t.Helper()
	bb := backbone.Config{Brokers: brokertest.Addrs(t), Namespace: fmt.Sprintf("claims-%d", time.Now().UnixNano())}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bb.EnsureTopics(ctx, 3, 1); err != nil {
		t.Fatal(err)
	}
	return bb
}

// follow returns the claims of bb, followed until the test ends.
func follow(t *testing.T, bb backbone.Config) *claims.Claims {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := claims.New(bb.Names().Claims, bb.Opts(), slog.New(slog.DiscardHandler))
	go c.Run(ctx)
	setup, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	if err := c.WaitReady(setup); err != nil {
		t.Fatal(err)
	}
	return c
}

// writer is a plain producer of the test broker.
func writer(t *testing.T, bb backbone.Config) claims.Writer {
	t.Helper()
	producer, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	return claims.ProduceWith(producer)
}

func claim(cluster, command string) records.ClaimRecord {
	return records.ClaimRecord{Envelope: records.Envelope{ID: command, Time: time.Now(), Principal: "executor"}, ClusterID: cluster, CommandID: command, WorkflowID: "wf", QueuedOffset: -1}
}

// acquire runs Acquire in the background and reports its result.
func acquire(c *claims.Claims, ctx context.Context, w claims.Writer, r records.ClaimRecord) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, w, r)
		done <- err
	}()
	return done
}

func TestOneHolderPerClusterAcrossCopies(t *testing.T) {
	bb := newBackbone(t)
	a, b := follow(t, bb), follow(t, bb)
	w := writer(t, bb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := a.Acquire(ctx, w, claim("eu/c1", "cmd-1")); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	second := acquire(b, ctx, w, claim("eu/c1", "cmd-2"))
	other := acquire(b, ctx, w, claim("c2", "cmd-3"))
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
	held, err := a.Acquire(ctx, w, claim("eu/c1", "cmd-1"))
	if err != nil {
		t.Fatalf("claiming again for the holding command: %v", err)
	}
	// The grant keeps the claim's place: the cluster stays with cmd-1.
	grant, err := a.Grant(held, "executor-a")
	if err != nil {
		t.Fatal(err)
	}
	if err := w(ctx, grant); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		h, ok := b.Holder("eu/c1")
		return ok && h.CommandID == "cmd-1" && h.Holder == "executor-a"
	})
	if err := a.Release(ctx, w, "eu/c1", "cmd-1"); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatalf("the second claim after the release: %v", err)
	}
	// The first copy follows the log too, and comes to the same view.
	waitFor(t, func() bool { h, ok := a.Holder("eu/c1"); return ok && h.CommandID == "cmd-2" })
	if err := a.Release(ctx, w, "eu/c1", "no-such-command"); err != nil {
		t.Fatalf("releasing a claim that is not live: %v", err)
	}
}

func TestAcquireGivesUpWithItsContext(t *testing.T) {
	bb := newBackbone(t)
	c, w := follow(t, bb), writer(t, bb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Acquire(ctx, w, claim("c1", "cmd-1")); err != nil {
		t.Fatal(err)
	}
	waiting, stop := context.WithCancel(ctx)
	done := acquire(c, waiting, w, claim("c1", "cmd-2"))
	waitFor(t, func() bool { return len(c.Live()) == 2 })
	stop()
	if err := <-done; err == nil {
		t.Fatal("Acquire returned nil after its context ended, with the cluster held")
	}
}

// TestClaimsSurviveARestart: a copy started afresh reads the live claims
// from the log, in the order they were made.
func TestClaimsSurviveARestart(t *testing.T) {
	bb := newBackbone(t)
	w := writer(t, bb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := follow(t, bb)
	for _, cmd := range []string{"cmd-1", "cmd-2"} {
		go first.Acquire(ctx, w, claim("c1", cmd))
		waitFor(t, func() bool {
			_, ok := first.Holder("c1")
			return ok && len(first.Live()) == map[string]int{"cmd-1": 1, "cmd-2": 2}[cmd]
		})
	}
	if err := first.Release(ctx, w, "c1", "cmd-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(first.Live()) == 1 })

	again := follow(t, bb)
	if h, ok := again.Holder("c1"); !ok || h.CommandID != "cmd-2" || len(again.Live()) != 1 {
		t.Fatalf("after a restart: holder %+v, %v, live %v; want cmd-2 alone", h, ok, again.Live())
	}
}

// TestReadersAgreeOnAClaimWrittenTwice: a claim written a second time
// before it was read back (its writer gave up waiting and tried again),
// with another claim in between, is in one place in line for a reader
// that followed the log as it was written and one that read it afresh.
func TestReadersAgreeOnAClaimWrittenTwice(t *testing.T) {
	bb := newBackbone(t)
	w := writer(t, bb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	following := follow(t, bb)
	for _, cmd := range []string{"cmd-1", "cmd-2", "cmd-1"} {
		value, err := records.Encode(claim("c1", cmd))
		if err != nil {
			t.Fatal(err)
		}
		rec := &kgo.Record{Topic: bb.Names().Claims, Key: []byte(records.ClaimKey("c1", cmd)), Value: value}
		if err := w(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	rebuilt := follow(t, bb) // has read all three
	if h, _ := rebuilt.Holder("c1"); h.CommandID != "cmd-2" {
		t.Fatalf("holder %s; want cmd-2: cmd-1's latest record is after it", h.CommandID)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, _ := following.Holder("c1")
		if h.CommandID == "cmd-2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reader that followed the log says %s holds c1, the one that rebuilt it says cmd-2", h.CommandID)
		}
		time.Sleep(5 * time.Millisecond)
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
