package monitor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// fleet is what the probes of a test see, cluster by cluster.
type fleet struct {
	mu   sync.Mutex
	obs  map[string]drivers.Observation
	errs map[string]error // a probe of the cluster fails with it
}

// fail makes the probes of id fail with err (nil: succeed again).
func (f *fleet) fail(id string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.errs == nil {
		f.errs = map[string]error{}
	}
	f.errs[id] = err
}

func (f *fleet) set(id string, o drivers.Observation) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.obs[id] = o
}

func (f *fleet) registry() *drivers.Registry {
	reg := drivers.NewRegistry()
	reg.Register("test", nil, drivers.ProberFunc(func(_ context.Context, c inventory.Cluster) (drivers.Observation, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if err := f.errs[c.ID]; err != nil {
			return drivers.Observation{}, err
		}
		return f.obs[c.ID], nil
	}))
	return reg
}

// turns records, cluster by cluster, when the monitor last settled a turn
// (a probe and its publication), by the monitor's clock.
type turns struct {
	mu   sync.Mutex
	at   map[string]time.Time
	more chan struct{}
}

func newTurns() *turns { return &turns{at: map[string]time.Time{}, more: make(chan struct{})} }

func (r *turns) settled(id string, at time.Time) {
	r.mu.Lock()
	if at.After(r.at[id]) {
		r.at[id] = at
	}
	r.mu.Unlock()
	r.poke()
}

// poke wakes those waiting for a change.
func (r *turns) poke() {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.more)
	r.more = make(chan struct{})
}

// await waits until every cluster of ids had a turn at t or later.
func (r *turns) await(t *testing.T, ids []string, at time.Time) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		r.mu.Lock()
		var behind []string
		for _, id := range ids {
			if r.at[id].Before(at) {
				behind = append(behind, id)
			}
		}
		more := r.more
		r.mu.Unlock()
		if len(behind) == 0 {
			return
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("clusters %v had no turn at %s or later after 30s", behind, at.Format(time.TimeOnly))
		}
	}
}

// TestAFailedRecordRepeatsNoTransition makes the record of one cluster's
// transition fail to produce (it is over the health topic's
// max.message.bytes) in a round where every cluster turns unhealthy, and
// checks that the transitions of the other clusters are published once,
// not again at their next probe (the notifier would announce them twice),
// and that the failed one is published again an interval later as the
// same transition: observed when it happened, under the same ID.
func TestAFailedRecordRepeatsNoTransition(t *testing.T) {
	ns := fmt.Sprintf("mtest%d-%s", time.Now().UnixNano(), strings.ToLower(t.Name()))
	bb := backbone.Config{Brokers: brokertest.Addrs(t), Namespace: ns,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	names := bb.Names()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const partitions, maxBytes = 3, 16 << 10
	// The health topic takes records of up to 16 KiB.
	if err := topics.Ensure(ctx, kadm.NewClient(cl), []topics.Spec{{Name: names.Health, Partitions: partitions, ReplicationFactor: -1,
		Configs: map[string]*string{"cleanup.policy": kadm.StringPtr("compact"), "max.message.bytes": kadm.StringPtr(fmt.Sprint(maxBytes))}}}); err != nil {
		t.Fatal(err)
	}
	if err := bb.EnsureTopics(ctx, partitions, 1); err != nil {
		t.Fatal(err)
	}

	const big = "c0" // its transition has details too big for the topic
	ids := []string{"c0", "c1", "c2", "c3", "c4", "c5"}
	part := topics.Partitioner().ForTopic(names.Health)
	elsewhere := 0 // clusters whose health is on another partition than big's
	for _, id := range ids[1:] {
		if part.Partition(&kgo.Record{Key: []byte(id)}, partitions) != part.Partition(&kgo.Record{Key: []byte(big)}, partitions) {
			elsewhere++
		}
	}
	if elsewhere == 0 {
		t.Fatal("every cluster's health is on the partition of the big one: the test shows nothing")
	}

	f := &fleet{obs: map[string]drivers.Observation{}}
	var recs []*kgo.Record
	for _, id := range ids {
		f.set(id, drivers.Observation{Status: records.HealthHealthy, Version: "3.9.0"})
		v, err := records.Encode(records.ClusterRecord{
			Envelope: records.Envelope{ID: uuid.NewString(), Time: time.Now(), Principal: "test"},
			Cluster:  inventory.Cluster{ID: id, Driver: "test", Version: "3.9.0"},
		})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: names.Inventory, Key: []byte(id), Value: v})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	clock := clockwork.NewFakeClockAt(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	const interval = 5 * time.Second
	r := newTurns()
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, Config{Backbone: bb, Probers: f.registry(), Clock: clock, Interval: interval, Heartbeat: time.Hour, settled: r.settled})
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	r.await(t, ids, clock.Now()) // every cluster first seen healthy
	for _, id := range ids {
		o := drivers.Observation{Status: records.HealthUnhealthy, Reasons: []string{"brokers offline"}, Version: "3.9.0"}
		if id == big {
			noise := make([]byte, 2*maxBytes) // random: no compression makes it fit
			if _, err := rand.Read(noise); err != nil {
				t.Fatal(err)
			}
			o.Details = map[string]string{"log": hex.EncodeToString(noise)}
		}
		f.set(id, o)
	}
	clock.Advance(interval)
	turned := clock.Now().UTC()
	r.await(t, ids, turned) // every cluster turns unhealthy; big's record fails
	clock.Advance(interval)
	r.await(t, ids, clock.Now()) // big's owed again; nothing changed for the others
	clock.Advance(interval)
	r.await(t, ids, clock.Now())

	transitions := map[string][]records.Health{}
	if err := logtable.ReadToEnd(ctx, bb.Opts(), names.Health, nil, func(rec *kgo.Record) {
		h, err := records.DecodeHealth(rec.Value)
		if err != nil {
			t.Fatalf("health %d@%d: %v", rec.Partition, rec.Offset, err)
		}
		if h.Status == records.HealthUnhealthy && h.PreviousStatus == records.HealthHealthy {
			transitions[h.ClusterID] = append(transitions[h.ClusterID], h)
		}
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		hs := transitions[id]
		if len(hs) != 1 {
			var at []string
			for _, h := range hs {
				at = append(at, fmt.Sprintf("%s observed %s", h.Envelope.ID, h.ObservedAt.Format(time.TimeOnly)))
			}
			t.Errorf("%s: %d transitions healthy → unhealthy published (%s), want 1", id, len(hs), strings.Join(at, ", "))
			continue
		}
		h := hs[0]
		if !h.ObservedAt.Equal(turned) {
			t.Errorf("%s: its transition was observed at %s, want %s, when it happened", id, h.ObservedAt, turned)
		}
		if want := healthID(id, h.ObservedAt, h.Status, h.PreviousStatus, h.Heartbeat); h.Envelope.ID != want {
			t.Errorf("%s: its transition has ID %s, want %s", id, h.Envelope.ID, want)
		}
		if _, ok := h.Details["log"]; id == big && ok {
			t.Errorf("%s: its transition was published with the details too big for the topic", id)
		}
	}
	t.Logf("on %s: %d of %d clusters on another partition than %s's", brokertest.Name(), elsewhere, len(ids)-1, big)
}
