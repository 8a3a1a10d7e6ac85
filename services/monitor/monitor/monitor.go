// Package monitor is the monitor service: it probes every cluster of the
// inventory on an interval and publishes health signals, keyed by cluster,
// when a cluster's health changes and as a periodic heartbeat.
//
// Its state is the last signal it published per cluster, read back from
// the health topic at start, so a restarted monitor neither repeats a
// change nor misses one.
package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// Principal is the name the monitor writes its records under.
const Principal = "monitor"

// Config configures a monitor.
type Config struct {
	Backbone backbone.Config
	Probers  *drivers.Registry
	Clock    clockwork.Clock
	// Interval is the time between two probes of a cluster (default 10s).
	Interval time.Duration
	// Heartbeat is the longest time without a signal for a cluster whose
	// health does not change (default 1m).
	Heartbeat time.Duration
	// ProbeTimeout bounds one probe (default 10s); a probe that fails or
	// times out reports the cluster unhealthy.
	ProbeTimeout time.Duration
	// Concurrency is the most probes run at once (default 32).
	Concurrency int
}

type monitor struct {
	cfg   Config
	log   *slog.Logger
	names topics.Names
	cl    *kgo.Client
	inv   *logtable.Table[records.ClusterRecord]
	last  map[string]records.Health // last signal published per cluster
}

// Run runs the monitor until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Minute
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 10 * time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	m := &monitor{cfg: cfg, log: cfg.Backbone.Log().With("service", "monitor"), names: cfg.Backbone.Names(), last: map[string]records.Health{}}
	cl, err := cfg.Backbone.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	m.cl = cl

	err = logtable.ReadToEnd(ctx, cfg.Backbone.Opts(), m.names.Health, nil, func(r *kgo.Record) {
		if r.Value == nil {
			delete(m.last, string(r.Key))
			return
		}
		h, err := records.DecodeHealth(r.Value)
		if err != nil {
			m.log.Error("skipping a health record that cannot be decoded", "partition", r.Partition, "offset", r.Offset, "err", err)
			return
		}
		m.last[h.ClusterID] = h
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop while reading
		}
		return fmt.Errorf("monitor: read health: %w", err)
	}
	m.inv = logtable.New(m.names.Inventory, cfg.Backbone.Opts(), func(r *kgo.Record) (records.ClusterRecord, error) {
		return records.DecodeClusterRecord(r.Value)
	}, logtable.WithLogger[records.ClusterRecord](m.log))
	invDone := make(chan error, 1)
	go func() { invDone <- m.inv.Run(ctx) }()
	if err := m.inv.WaitReady(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("monitor: inventory table: %w", err)
	}
	m.log.Info("monitor started", "clusters", m.inv.Len(), "interval", cfg.Interval)

	ticker := cfg.Clock.NewTicker(cfg.Interval)
	defer ticker.Stop()
	for {
		m.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case err := <-invDone:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("monitor: inventory table: %w", err)
		case <-ticker.Chan():
		}
	}
}

// round probes every cluster once and publishes what changed, what is due
// a heartbeat, and tombstones for clusters that left the inventory.
func (m *monitor) round(ctx context.Context) {
	clusters := m.inv.Snapshot()
	now := m.cfg.Clock.Now().UTC()
	var (
		mu      sync.Mutex
		signals []records.Health
		wg      sync.WaitGroup
		slots   = make(chan struct{}, m.cfg.Concurrency)
	)
	for _, id := range slices.Sorted(maps.Keys(clusters)) {
		c := clusters[id].Cluster
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			obs := m.probe(ctx, c)
			if h, ok := m.signal(c.ID, obs, now); ok {
				mu.Lock()
				signals = append(signals, h)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	var recs []*kgo.Record
	for _, h := range signals {
		value, err := records.Encode(h)
		if err != nil {
			m.log.Error("encode health", "cluster", h.ClusterID, "err", err)
			continue
		}
		recs = append(recs, &kgo.Record{Topic: m.names.Health, Key: []byte(h.ClusterID), Value: value})
	}
	var gone []string
	for id := range m.last {
		if _, ok := clusters[id]; !ok {
			gone = append(gone, id)
			recs = append(recs, &kgo.Record{Topic: m.names.Health, Key: []byte(id)})
		}
	}
	if len(recs) == 0 {
		return
	}
	if err := m.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		m.log.Warn("publish health; retrying next round", "err", err)
		return
	}
	for _, h := range signals {
		m.last[h.ClusterID] = h
	}
	for _, id := range gone {
		delete(m.last, id)
	}
}

func (m *monitor) probe(ctx context.Context, c inventory.Cluster) drivers.Observation {
	p, err := m.cfg.Probers.Prober(c.Driver)
	if err != nil {
		return drivers.Observation{Status: records.HealthUnknown, Reasons: []string{err.Error()}}
	}
	pctx, cancel := context.WithTimeout(ctx, m.cfg.ProbeTimeout)
	defer cancel()
	obs, err := p.Probe(pctx, c)
	if err != nil {
		return drivers.Observation{Status: records.HealthUnhealthy, Reasons: []string{"probe failed: " + err.Error()}}
	}
	return obs
}

// signal returns the health signal to publish for an observation, if any:
// on a change of status, reasons, version or managed configs, or when a
// heartbeat is due. Details alone (measurements) do not make a change.
func (m *monitor) signal(clusterID string, obs drivers.Observation, now time.Time) (records.Health, bool) {
	prev, seen := m.last[clusterID]
	changed := !seen || prev.Status != obs.Status || prev.ObservedVersion != obs.Version || prev.ConfigHash != obs.ConfigHash ||
		!slices.Equal(prev.Reasons, obs.Reasons)
	if !changed && now.Sub(prev.ObservedAt) < m.cfg.Heartbeat {
		return records.Health{}, false
	}
	previous := records.HealthUnknown
	if seen {
		previous = prev.Status
	}
	return records.Health{
		Envelope:        records.Envelope{ID: uuid.NewString(), Time: now, Principal: Principal},
		ClusterID:       clusterID,
		Status:          obs.Status,
		PreviousStatus:  previous,
		Reasons:         obs.Reasons,
		ObservedVersion: obs.Version,
		ConfigHash:      obs.ConfigHash,
		Details:         obs.Details,
		ObservedAt:      now,
		Heartbeat:       !changed,
	}, true
}
