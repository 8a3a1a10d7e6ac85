package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// harness runs a monitor on a fake clock over clusters of the "test"
// driver, on a namespace of its own.
type harness struct {
	t     *testing.T
	ctx   context.Context
	bb    backbone.Config
	names topics.Names
	cl    *kgo.Client
	clock *clockwork.FakeClock
	fleet *fleet
	turns *turns
	ids   []string

	mu    sync.Mutex
	paces []Pace
	log   []turn // every turn, in order
}

type turn struct {
	id string
	at time.Time
}

// start registers ids healthy and runs a monitor configured by cfg (its
// backbone, probers, clock and hooks filled in).
func start(t *testing.T, ids []string, cfg Config) *harness {
	h := newHarness(t, ids)
	h.run("a", cfg)
	return h
}

func newHarness(t *testing.T, ids []string) *harness {
	ns := fmt.Sprintf("mtest%d-%s", time.Now().UnixNano(), strings.ToLower(t.Name()))
	h := &harness{t: t, bb: backbone.Config{Brokers: brokertest.Addrs(t), Namespace: ns,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))},
		clock: clockwork.NewFakeClockAt(t0), fleet: &fleet{obs: map[string]drivers.Observation{}}, turns: newTurns(), ids: ids}
	h.names = h.bb.Names()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	h.ctx = ctx
	cl, err := h.bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	h.cl = cl
	if err := h.bb.EnsureTopics(ctx, 3, 1); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		h.register(id)
	}
	return h
}

// copyRun is one running copy of the monitor.
type copyRun struct {
	mu    sync.Mutex
	paces []Pace
	turns []turn
	stop  func()
}

// pace returns the last pace the copy told, and how many it told.
func (c *copyRun) pace() (Pace, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.paces) == 0 {
		return Pace{}, 0
	}
	return c.paces[len(c.paces)-1], len(c.paces)
}

// turnsAt returns the clusters that had a turn at exactly at.
func (c *copyRun) turnsAt(at time.Time) map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for _, tn := range c.turns {
		if tn.at.Equal(at) {
			out[tn.id] = true
		}
	}
	return out
}

// run runs a copy of the monitor, named instance, until stopped (at the
// latest when the test ends).
func (h *harness) run(instance string, cfg Config) *copyRun {
	c := &copyRun{}
	cfg.Backbone, cfg.Probers, cfg.Clock, cfg.InstanceID = h.bb, h.fleet.registry(), h.clock, instance
	cfg.settled = func(id string, at time.Time) {
		c.mu.Lock()
		c.turns = append(c.turns, turn{id, at})
		c.mu.Unlock()
		h.mu.Lock()
		h.log = append(h.log, turn{id, at})
		h.mu.Unlock()
		h.turns.settled(id, at)
	}
	cfg.paced = func(p Pace) {
		c.mu.Lock()
		c.paces = append(c.paces, p)
		c.mu.Unlock()
		h.mu.Lock()
		h.paces = append(h.paces, p)
		h.mu.Unlock()
		h.turns.poke()
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, cfg) }()
	var once sync.Once
	c.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				h.t.Errorf("Run %s: %v", instance, err)
			}
		})
	}
	h.t.Cleanup(c.stop)
	return c
}

// register puts cluster id in the inventory, probing healthy.
func (h *harness) register(id string) {
	h.t.Helper()
	h.fleet.set(id, drivers.Observation{Status: records.HealthHealthy, Version: "3.9.0"})
	v, err := records.Encode(records.ClusterRecord{
		Envelope: records.Envelope{ID: uuid.NewString(), Time: time.Now(), Principal: "test"},
		Cluster:  inventory.Cluster{ID: id, Driver: "test", Version: "3.9.0"},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.produce(&kgo.Record{Topic: h.names.Inventory, Key: []byte(id), Value: v})
}

func (h *harness) produce(r *kgo.Record) {
	h.t.Helper()
	if err := h.cl.ProduceSync(h.ctx, r).FirstErr(); err != nil {
		h.t.Fatal(err)
	}
}

// turnsSince returns the turns had since the first n.
func (h *harness) turnsSince(n int) []turn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]turn(nil), h.log[n:]...)
}

func (h *harness) turnCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.log)
}

// awaitTurns waits until n turns were had in all.
func (h *harness) awaitTurns(n int) {
	h.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		h.turns.mu.Lock()
		more := h.turns.more
		h.turns.mu.Unlock()
		if got := h.turnCount(); got >= n {
			return
		}
		select {
		case <-more:
		case <-deadline:
			h.t.Fatalf("%d turns after 30s, want %d", h.turnCount(), n)
		}
	}
}

// health reads the health topic: every record, by cluster, oldest first
// (a tombstone is a nil entry).
func (h *harness) health() map[string][]*records.Health {
	h.t.Helper()
	out := map[string][]*records.Health{}
	if err := logtable.ReadToEnd(h.ctx, h.bb.Opts(), h.names.Health, nil, func(r *kgo.Record) {
		if r.Value == nil {
			out[string(r.Key)] = append(out[string(r.Key)], nil)
			return
		}
		s, err := records.DecodeHealth(r.Value)
		if err != nil {
			h.t.Fatalf("health %d@%d: %v", r.Partition, r.Offset, err)
		}
		out[s.ClusterID] = append(out[s.ClusterID], &s)
	}); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// awaitHealth waits until the health topic satisfies cond.
func (h *harness) awaitHealth(what string, cond func(map[string][]*records.Health) bool) map[string][]*records.Health {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		hs := h.health()
		if cond(hs) {
			return hs
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("after 30s, still no %s", what)
		}
		// Polling a topic, not standing in for a condition: the
		// condition is checked again on each read.
		time.Sleep(20 * time.Millisecond)
	}
}

func clusterIDs(n int) []string {
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("c%d", i))
	}
	return ids
}

// TestProbeBudgetSpreadsProbes gives the monitor more clusters than its
// interval holds at its probe rate: the interval stretches (and says so),
// probes start no faster than the rate, and each signal carries the time
// of its own probe.
func TestProbeBudgetSpreadsProbes(t *testing.T) {
	const rate = 2 // a probe every 500ms, one second's worth at once
	ids := clusterIDs(6)
	h := start(t, ids, Config{Interval: time.Second, Heartbeat: time.Hour, ProbeRate: rate})

	h.awaitTurns(2) // the budget's burst
	for k := 1; h.turnCount() < len(ids); k++ {
		h.clock.Advance(500 * time.Millisecond)
		h.awaitTurns(min(2+k, len(ids)))
	}
	first := map[string]time.Time{}
	for _, tn := range h.turnsSince(0)[:len(ids)] {
		first[tn.id] = tn.at
	}
	if len(first) != len(ids) {
		t.Fatalf("the first %d turns probed %d clusters, want each once", len(ids), len(first))
	}
	for _, tn := range h.turnsSince(0) {
		if allowed := 2 + int(tn.at.Sub(t0)/(500*time.Millisecond)); countBy(h.turnsSince(0), tn.at) > allowed {
			t.Fatalf("%d probes by %s, over the budget of %d", countBy(h.turnsSince(0), tn.at), tn.at.Sub(t0), allowed)
		}
	}
	hs := h.awaitHealth("first signal of every cluster", func(hs map[string][]*records.Health) bool { return len(hs) == len(ids) })
	distinct := map[time.Time]bool{}
	for id, s := range hs {
		if !s[0].ObservedAt.Equal(first[id]) {
			t.Errorf("%s: observed at %s, want %s, when its probe ran", id, s[0].ObservedAt.Sub(t0), first[id].Sub(t0))
		}
		distinct[s[0].ObservedAt] = true
	}
	if len(distinct) < 3 {
		t.Errorf("the first signals carry %d distinct probe times, want them spread by the budget", len(distinct))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.paces) == 0 || !h.paces[len(h.paces)-1].Stretched || h.paces[len(h.paces)-1].Interval != 3*time.Second {
		t.Errorf("paces told: %+v, want the interval stretched to 3s (6 clusters at 2/s)", h.paces)
	}
}

// countBy counts the turns at or before at.
func countBy(ts []turn, at time.Time) int {
	n := 0
	for _, tn := range ts {
		if !tn.at.After(at) {
			n++
		}
	}
	return n
}

// probedOnceAtOneASecond runs a monitor over ids with a budget of one probe
// a second, each due every second, until each was probed once.
func probedOnceAtOneASecond(t *testing.T, ids []string) *harness {
	h := start(t, ids, Config{Interval: time.Second, Heartbeat: time.Hour, ProbeRate: 1})
	h.awaitTurns(1)
	for h.turnCount() < len(ids) {
		h.clock.Advance(time.Second)
		h.awaitTurns(h.turnCount() + 1)
	}
	return h
}

// TestOperationEndJumpsTheQueue: with the probe budget spent and every
// cluster due, a cluster whose operation ends is probed at once, and what
// it sees published though nothing changed.
func TestOperationEndJumpsTheQueue(t *testing.T) {
	ids := clusterIDs(4)
	h := probedOnceAtOneASecond(t, ids)
	h.clock.Advance(time.Second) // all due again; one token
	target := ids[len(ids)-1]
	ended := h.clock.Now()
	v, err := records.Encode(records.OperationEvent{
		Envelope:  records.Envelope{ID: uuid.NewString(), Time: ended, Principal: "executor"},
		CommandID: "cmd-x", WorkflowID: "wf-x", ClusterID: target, Attempt: 1, Status: records.OperationSucceeded,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.produce(&kgo.Record{Topic: h.names.Operations, Key: []byte(topics.TargetKey("wf-x", target)), Value: v})
	hs := h.awaitHealth("signal after the operation", func(hs map[string][]*records.Health) bool {
		s := hs[target]
		return len(s) > 1 && !s[len(s)-1].ObservedAt.Before(ended)
	})
	last := hs[target][len(hs[target])-1]
	if !last.Heartbeat || last.Status != records.HealthHealthy {
		t.Errorf("after the operation: %+v, want a healthy heartbeat (nothing changed)", last)
	}
}

// TestARegisteredClusterJumpsTheQueue: with the probe budget spent and
// every cluster due, a cluster registered is probed at once, ahead of them
// (no token comes while the clock stands still): whoever registered it is
// waiting for its health.
func TestARegisteredClusterJumpsTheQueue(t *testing.T) {
	ids := clusterIDs(4)
	h := probedOnceAtOneASecond(t, ids)
	h.clock.Advance(time.Second) // all due again, and one token
	h.awaitTurns(len(ids) + 1)   // which a due cluster takes
	h.register("new")
	h.awaitHealth("signal of the new cluster, with no token left", func(hs map[string][]*records.Health) bool { return len(hs["new"]) == 1 })
}

// TestInventoryChangeTouchesOnlyItsCluster: a cluster added is probed at
// once, one removed has its health tombstoned, and no other cluster is
// probed meanwhile.
func TestInventoryChangeTouchesOnlyItsCluster(t *testing.T) {
	ids := clusterIDs(5)
	h := start(t, ids, Config{Interval: time.Hour, Heartbeat: time.Hour})
	h.turns.await(t, ids, t0)
	h.awaitHealth("first signal of every cluster", func(hs map[string][]*records.Health) bool { return len(hs) == len(ids) })
	n := h.turnCount()

	h.register("new")
	gone := ids[0]
	h.produce(&kgo.Record{Topic: h.names.Inventory, Key: []byte(gone)})
	hs := h.awaitHealth("signal of the new cluster and tombstone of the gone one", func(hs map[string][]*records.Health) bool {
		g := hs[gone]
		return len(hs["new"]) == 1 && len(g) > 0 && g[len(g)-1] == nil
	})
	h.awaitTurns(n + 2)
	for _, tn := range h.turnsSince(n) {
		if tn.id != "new" && tn.id != gone {
			t.Errorf("%s had a turn after another cluster's inventory change", tn.id)
		}
	}
	for _, id := range ids[1:] {
		if len(hs[id]) != 1 {
			t.Errorf("%s: %d signals, want its first only", id, len(hs[id]))
		}
	}
}

// TestHeartbeatBudget: clusters whose health does not change heartbeat no
// more often than the budget allows, each of them still regularly.
func TestHeartbeatBudget(t *testing.T) {
	ids := clusterIDs(6)
	// 6 clusters at 2 heartbeats/s: one every 3s each, though 1s asked.
	h := start(t, ids, Config{Interval: time.Second, Heartbeat: time.Second, HeartbeatBudget: 2})
	h.turns.await(t, ids, t0)
	const steps = 12
	for range steps {
		h.clock.Advance(time.Second)
		h.turns.await(t, ids, h.clock.Now())
	}
	hs := h.health()
	total := 0
	for _, id := range ids {
		var last time.Time
		beats := 0
		for _, s := range hs[id] {
			if s == nil || !s.Heartbeat {
				continue
			}
			if !last.IsZero() && s.ObservedAt.Sub(last) < 3*time.Second {
				t.Errorf("%s: heartbeats %s apart, want at least 3s", id, s.ObservedAt.Sub(last))
			}
			last = s.ObservedAt
			beats++
		}
		if beats < steps/4 {
			t.Errorf("%s: %d heartbeats in %ds, want one every 3 or 4s", id, beats, steps)
		}
		total += beats
	}
	if max := 2*steps + 2; total > max {
		t.Errorf("%d heartbeats in %ds, over the budget of 2/s (%d)", total, steps, max)
	}

	// After a long pause every cluster is due a heartbeat at once: the
	// budget lets one second's worth out.
	h.clock.Advance(time.Hour)
	paused := h.clock.Now()
	h.turns.await(t, ids, paused)
	at := 0
	for _, s := range h.health() {
		if last := s[len(s)-1]; last != nil && last.Heartbeat && last.ObservedAt.Equal(paused) {
			at++
		}
	}
	if at != 2 {
		t.Errorf("%d heartbeats at once after a pause, want 2 (one second of the budget)", at)
	}
}

// ranAndStopped runs a monitor over ids until each has its first signal,
// and stops it.
func ranAndStopped(t *testing.T, ids []string, cfg Config) *harness {
	h := newHarness(t, ids)
	first := h.run("a", cfg)
	h.turns.await(t, ids, t0)
	h.awaitHealth("first signal of every cluster", func(hs map[string][]*records.Health) bool { return len(hs) == len(ids) })
	first.stop()
	return h
}

// TestRestartCarriesOn stops the monitor and starts it again: it reads
// back what it published, so it repeats nothing, and publishes once what
// changed while it was away.
func TestRestartCarriesOn(t *testing.T) {
	ids := clusterIDs(6)
	cfg := Config{Interval: time.Second, Heartbeat: time.Hour}
	h := ranAndStopped(t, ids, cfg)

	broken := ids[1]
	h.fleet.set(broken, drivers.Observation{Status: records.HealthUnhealthy, Reasons: []string{"brokers offline"}, Version: "3.9.0"})
	h.clock.Advance(time.Minute)
	h.run("a", cfg)
	h.turns.await(t, ids, h.clock.Now())
	h.clock.Advance(time.Second)
	h.turns.await(t, ids, h.clock.Now())
	for id, s := range h.health() {
		want := 1
		if id == broken {
			want = 2
		}
		if len(s) != want {
			t.Errorf("%s: %d signals after a restart, want %d", id, len(s), want)
			continue
		}
		if id == broken && (s[1].Status != records.HealthUnhealthy || s[1].PreviousStatus != records.HealthHealthy) {
			t.Errorf("%s: %s after %s, want unhealthy after healthy", id, s[1].Status, s[1].PreviousStatus)
		}
	}
}

// TestARestartProbesTheNeverProbedFirst: a cluster registered while the
// monitor was down, which has no health yet, is probed first when it
// starts again, within the probe budget, ahead of the clusters due.
func TestARestartProbesTheNeverProbedFirst(t *testing.T) {
	ids := clusterIDs(6)
	cfg := Config{Interval: time.Second, Heartbeat: time.Hour}
	h := ranAndStopped(t, ids, cfg)

	h.register("new")
	h.clock.Advance(time.Minute) // every cluster due
	n := h.turnCount()
	cfg.ProbeRate = 1
	h.run("a", cfg)
	h.awaitTurns(n + 1)
	if tn := h.turnsSince(n)[0]; tn.id != "new" {
		t.Errorf("%s was probed first after the restart; want the never probed cluster", tn.id)
	}
}

// TestTwoCopiesShareTheFleet runs a second copy beside the first: once
// their group has shared out the partitions, each cluster is probed by one
// copy only, and the copy that gained it read back what the other
// published (nothing is published again).
func TestTwoCopiesShareTheFleet(t *testing.T) {
	ids := clusterIDs(12)
	h := newHarness(t, ids)
	cfg := Config{Interval: time.Second, Heartbeat: time.Hour}
	a := h.run("a", cfg)
	h.turns.await(t, ids, t0)
	h.awaitHealth("first signal of every cluster", func(hs map[string][]*records.Health) bool { return len(hs) == len(ids) })
	_, told := a.pace()
	b := h.run("b", cfg)
	deadline := time.After(30 * time.Second)
	for {
		h.turns.mu.Lock()
		more := h.turns.more
		h.turns.mu.Unlock()
		pa, na := a.pace()
		pb, nb := b.pace()
		if na > told && nb > 0 && pa.Clusters+pb.Clusters == len(ids) && pa.Clusters > 0 && pb.Clusters > 0 {
			break
		}
		select {
		case <-more: // a turn had or a pace told
		case <-deadline:
			t.Fatalf("the copies did not share the fleet after 30s: a %+v, b %+v", pa, pb)
		}
	}
	for range 2 {
		h.clock.Advance(time.Second)
		now := h.clock.Now()
		h.turns.await(t, ids, now)
		byA, byB := a.turnsAt(now), b.turnsAt(now)
		for _, id := range ids {
			if byA[id] == byB[id] {
				t.Errorf("%s: probed at %s by a %v, by b %v, want by exactly one", id, now.Sub(t0), byA[id], byB[id])
			}
		}
	}
	for id, s := range h.health() {
		if len(s) != 1 {
			t.Errorf("%s: %d signals, want 1: the new owner repeated what the old one published", id, len(s))
		}
	}
}
