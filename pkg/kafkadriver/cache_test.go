package kafkadriver

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// countingDriver is a driver whose client builds are counted.
func countingDriver(t *testing.T, opts Options) (*Driver, *atomic.Int64) {
	d := newDriver(t, opts)
	var builds atomic.Int64
	d.newClient = func(opts ...kgo.Opt) (*kgo.Client, error) {
		builds.Add(1)
		return kgo.NewClient(opts...)
	}
	return d, &builds
}

// closed reports whether a client was closed: its context is then done.
func closed(t *testing.T, cl *client) bool {
	t.Helper()
	return cl.kgo.Context().Err() != nil
}

func TestClientCache(t *testing.T) {
	tg := kfakeTarget(t, 1)
	d, builds := countingDriver(t, Options{})
	ctx := ctxFor(t)
	c := tg.cluster("a", map[string]string{"expected.brokers": "1"})

	for range 3 {
		if obs, err := d.Probe(ctx, c); err != nil || obs.Status != records.HealthHealthy {
			t.Fatalf("probe: %v %v", obs, err)
		}
	}
	if _, err := d.Apply(ctx, drivers.Request{CommandID: "c", Cluster: c, Operation: configOp("topic:orders:retention.ms", "1000")}); err != nil {
		t.Fatal(err)
	}
	if n := builds.Load(); n != 1 {
		t.Fatalf("%d clients built for three probes and an apply of one cluster, want 1", n)
	}
	first := d.clients["a"]

	// Changed settings: a new client, and the old one is closed.
	c.Settings = map[string]string{"expected.brokers": "1", "request.timeout.ms": "5000"}
	if _, err := d.Probe(ctx, c); err != nil {
		t.Fatal(err)
	}
	if n := builds.Load(); n != 2 || d.clients["a"] == first {
		t.Fatalf("%d clients built after a settings change, want 2", n)
	}
	if !closed(t, first) {
		t.Error("the client of the old settings is still open")
	}

	// So does a changed address.
	second := d.clients["a"]
	c.Address = tg.addr + "," + tg.addr
	if _, err := d.Probe(ctx, c); err != nil {
		t.Fatal(err)
	}
	if builds.Load() != 3 || !closed(t, second) {
		t.Errorf("address change: %d builds, old closed %v", builds.Load(), closed(t, second))
	}
}

func TestClientCacheRetiresInUseClientAfterUse(t *testing.T) {
	tg := kfakeTarget(t, 1)
	d, _ := countingDriver(t, Options{})
	c := tg.cluster("a", nil)

	old, release, err := d.acquire(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Settings = map[string]string{"request.timeout.ms": "5000"}
	cur, releaseCur, err := d.acquire(c)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseCur()
	if cur == old {
		t.Fatal("settings changed but the client was reused")
	}
	if closed(t, old) {
		t.Fatal("a client in use was closed under its caller")
	}
	release()
	release() // releasing twice is harmless
	if !closed(t, old) {
		t.Error("the replaced client was not closed once its caller was done")
	}
	if closed(t, cur) {
		t.Error("the current client was closed")
	}
}

func TestClientCacheClosesIdleClients(t *testing.T) {
	tg := kfakeTarget(t, 1)
	clock := clockwork.NewFakeClock()
	d, _ := countingDriver(t, Options{Clock: clock, IdleTimeout: time.Minute})
	ctx := ctxFor(t)

	if _, err := d.Probe(ctx, tg.cluster("gone", nil)); err != nil {
		t.Fatal(err)
	}
	gone := d.clients["gone"]
	clock.Advance(30 * time.Second)
	if _, err := d.Probe(ctx, tg.cluster("live", nil)); err != nil {
		t.Fatal(err)
	}
	if closed(t, gone) {
		t.Fatal("a client idle for less than the idle timeout was closed")
	}
	clock.Advance(31 * time.Second)
	if _, err := d.Probe(ctx, tg.cluster("live", nil)); err != nil {
		t.Fatal(err)
	}
	if !closed(t, gone) {
		t.Error("the client of a cluster no longer probed was not closed after the idle timeout")
	}
	if _, ok := d.clients["gone"]; ok {
		t.Error("the idle client is still cached")
	}
	if closed(t, d.clients["live"]) {
		t.Error("the client of a live cluster was closed")
	}
}

// TestClientCacheExpiresOldestFirst checks that idle clients are let go in
// the order they were last used, and that one in use is never, however long
// its call takes.
func TestClientCacheExpiresOldestFirst(t *testing.T) {
	tg := kfakeTarget(t, 1)
	clock := clockwork.NewFakeClock()
	d, _ := countingDriver(t, Options{Clock: clock, IdleTimeout: time.Minute})

	_, releaseBusy, err := d.acquire(tg.cluster("busy", nil))
	if err != nil {
		t.Fatal(err)
	}
	busy := d.clients["busy"]
	for _, id := range []string{"a", "b", "c"} {
		_, release, err := d.acquire(tg.cluster(id, nil))
		if err != nil {
			t.Fatal(err)
		}
		release()
		clock.Advance(20 * time.Second)
	}
	a, b, c := d.clients["a"], d.clients["b"], d.clients["c"]
	// Now a was released 60s ago, b 40s, c 20s: a use of c lets a go.
	touch := func(id string) {
		t.Helper()
		_, release, err := d.acquire(tg.cluster(id, nil))
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	touch("c")
	if !closed(t, a) || closed(t, b) || closed(t, c) {
		t.Fatalf("after a minute: a closed %v (want true), b %v, c %v (want false)", closed(t, a), closed(t, b), closed(t, c))
	}
	clock.Advance(21 * time.Second)
	touch("c")
	if !closed(t, b) || closed(t, c) {
		t.Fatalf("b idle 61s closed %v (want true), c just used closed %v (want false)", closed(t, b), closed(t, c))
	}
	if closed(t, busy) || d.clients["busy"] != busy {
		t.Fatal("a client in use for longer than the idle timeout was let go")
	}
	releaseBusy()
	clock.Advance(61 * time.Second)
	touch("c")
	if !closed(t, busy) {
		t.Error("a client idle for the idle timeout after its long call was not closed")
	}
	if len(d.clients) != 1 || d.idleLRU.Len() != 1 {
		t.Errorf("%d clients cached, %d idle, want only c's", len(d.clients), d.idleLRU.Len())
	}
}

func TestClose(t *testing.T) {
	tg := kfakeTarget(t, 1)
	d, _ := countingDriver(t, Options{})
	ctx := ctxFor(t)
	c := tg.cluster("a", nil)
	if _, err := d.Probe(ctx, c); err != nil {
		t.Fatal(err)
	}
	cl := d.clients["a"]
	d.Close()
	d.Close()
	if !closed(t, cl) {
		t.Error("Close left a client open")
	}
	if _, err := d.Probe(ctx, c); !errors.Is(err, ErrClosed) {
		t.Errorf("probe after Close: %v", err)
	}
	if _, err := d.Apply(ctx, drivers.Request{CommandID: "c", Cluster: c, Operation: configOp("a", "b")}); !errors.Is(err, ErrClosed) {
		t.Errorf("apply after Close: %v", err)
	}
}

func TestRegister(t *testing.T) {
	d := newDriver(t, Options{})
	r := drivers.NewRegistry()
	d.Register(r)
	if got, err := r.Driver("kafka"); err != nil || got != d {
		t.Errorf("driver: %v, %v", got, err)
	}
	if got, err := r.Prober("kafka"); err != nil || got != d {
		t.Errorf("prober: %v, %v", got, err)
	}
}
