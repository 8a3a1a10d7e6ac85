// Package monitor is the monitor service: it probes the clusters of the
// inventory on an interval and publishes health signals, keyed by cluster,
// when a cluster's health changes and as a periodic heartbeat.
//
// Copies of the monitor share the fleet through their consumer group on
// the inventory topic: each probes the clusters of the inventory
// partitions it owns. Its state is the last signal published per cluster
// of those partitions, read back from the health topic (co-partitioned
// with the inventory) when it gains them, so a restarted monitor, or the
// next owner of a partition, neither repeats a change nor misses one.
//
// It also follows the operations topic: when an operation on one of its
// clusters ends, it probes that cluster at once and publishes what it sees
// even if nothing changed (a restart changes nothing a probe sees), so
// that the planner's wave gate, which waits for a probe after each
// operation, does not wait for the next heartbeat.
//
// A signal whose record fails to produce is owed: the monitor remembers
// exactly the records Kafka took, and publishes an owed signal again, as
// it was (same ID, same observation time), in the next round, before
// anything newer about its cluster. A signal's ID is derived from its
// cluster, observation time, status, previous status and heartbeat flag,
// so a record written twice (a produce that failed on the way back, after
// Kafka had it) is recognisable by its ID, and so is the notification the
// notifier derives from it.
package monitor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/deadletter"
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
	// InstanceID names this copy, stable across its restarts and distinct
	// between copies: its static identity in the consumer group (a copy
	// restarted after a crash takes its partitions back at once). Empty: a
	// dynamic member.
	InstanceID string

	// roundDone, if set, is called after each round with the number of
	// clusters it probed (tests wait on it).
	roundDone func(clusters int)
}

type monitor struct {
	cfg   Config
	log   *slog.Logger
	names topics.Names
	cl    *kgo.Client
	inv   *logtable.Table[entry]

	// mu guards the partitions owned and what was published for them: a
	// revocation waits for a publication under way, so that the next
	// owner reads it back.
	mu   sync.Mutex
	last map[int32]map[string]records.Health // owned partition → cluster → last signal published
	owed map[int32]map[string]records.Health // owned partition → cluster → signal whose record failed to produce

	stop   context.CancelCauseFunc // ends Run with an error
	gained chan struct{}           // a partition was gained: probe it now

	operatedMu sync.Mutex
	operated   map[string]bool // clusters whose operation just ended: probe them now
	operatedCh chan struct{}

	// unusable holds the inventory records that could not be used until
	// the monitor owns their partition and sets them aside.
	unusable deadletter.Pending
	cl0      chan struct{} // closed once m.cl is set
	runCtx   context.Context
}

// entry is an inventory entry and the partition it is on.
type entry struct {
	cluster   inventory.Cluster
	partition int32
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
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	m := &monitor{cfg: cfg, log: cfg.Backbone.Log().With("service", "monitor"), names: cfg.Backbone.Names(), last: map[int32]map[string]records.Health{}, owed: map[int32]map[string]records.Health{}, stop: cancel,
		gained: make(chan struct{}, 1), operated: map[string]bool{}, operatedCh: make(chan struct{}, 1),
		cl0: make(chan struct{}), runCtx: ctx}
	go func() {
		// Probing a fleet whose inventory was recreated empty would
		// tombstone the health of every cluster.
		if err := backbone.WatchTopics(ctx, cfg.Backbone, m.names.Inventory, m.names.Health, m.names.Operations); err != nil {
			cancel(fmt.Errorf("monitor: %w", err))
		}
	}()

	m.inv = logtable.New(m.names.Inventory, cfg.Backbone.Opts(), func(r *kgo.Record) (entry, error) {
		rec, err := records.DecodeClusterRecord(r.Value)
		if err == nil && rec.Cluster.ID != string(r.Key) {
			err = fmt.Errorf("cluster %q is keyed %q", rec.Cluster.ID, r.Key)
		}
		return entry{cluster: rec.Cluster, partition: r.Partition}, err
	}, logtable.WithLogger[entry](m.log), logtable.OnDecodeError[entry](m.unusableRecord))
	invDone := make(chan error, 1)
	go func() { invDone <- m.inv.Run(ctx) }()
	if err := m.inv.WaitReady(ctx); err != nil {
		if parent.Err() != nil {
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("monitor: inventory table: %w", err)
	}

	// The group only shares out the inventory's partitions: the table
	// above has their clusters, so the member reads from the end.
	cl, err := cfg.Backbone.Client(append([]kgo.Opt{
		kgo.ConsumerGroup(m.names.Group("monitor")),
		kgo.ConsumeTopics(m.names.Inventory),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
	}, append(m.cfg.Backbone.StaticMember(m.names.Group("monitor"), cfg.InstanceID, func(err error) { cancel(fmt.Errorf("monitor: %w", err)) }),
		backbone.OwnPartitions(m.names.Inventory, func(ps []int32) { m.assigned(ctx, ps) }, m.revoked)...)...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	m.cl = cl
	close(m.cl0)
	go func() {
		for ctx.Err() == nil {
			if cl.PollFetches(ctx).IsClientClosed() { // the records themselves are not needed
				return
			}
		}
	}()
	// From now on, by the records' own (wall clock) timestamps: an
	// operation that ends once the monitor runs is not missed.
	ops, err := cfg.Backbone.Client(kgo.ConsumeTopics(m.names.Operations), kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(time.Now().UnixMilli())))
	if err != nil {
		return err
	}
	defer ops.Close()
	go m.followOperations(ctx, ops)
	m.log.Info("monitor started", "clusters", m.inv.Len(), "interval", cfg.Interval)

	ticker := cfg.Clock.NewTicker(cfg.Interval)
	defer ticker.Stop()
	var only map[string]bool // the clusters of the next round; nil = all
	for {
		m.round(ctx, only)
		only = nil
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return nil
			}
			return context.Cause(ctx)
		case err := <-invDone:
			if parent.Err() != nil {
				return nil
			}
			return fmt.Errorf("monitor: inventory table: %w", err)
		case <-ticker.Chan():
		case <-m.gained:
		case <-m.operatedCh:
			m.operatedMu.Lock()
			only, m.operated = m.operated, map[string]bool{}
			m.operatedMu.Unlock()
		}
	}
}

// followOperations notes the clusters whose operation ends, from now on.
func (m *monitor) followOperations(ctx context.Context, cl *kgo.Client) {
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		if fetches.IsClientClosed() {
			return
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Value == nil {
				return
			}
			ev, err := records.DecodeOperationEvent(r.Value)
			if err != nil || !ev.Status.Terminal() {
				return // the executor's records; the planner reports what it cannot read
			}
			m.operatedMu.Lock()
			m.operated[ev.ClusterID] = true
			m.operatedMu.Unlock()
			select {
			case m.operatedCh <- struct{}{}:
			default:
			}
		})
	}
}

// assigned reads back the last signal published for each cluster of newly
// owned partitions. kgo calls it before the member is given more.
func (m *monitor) assigned(ctx context.Context, partitions []int32) {
	if len(partitions) == 0 {
		return
	}
	loaded := map[int32]map[string]records.Health{}
	for _, p := range partitions {
		loaded[p] = map[string]records.Health{}
	}
	// The monitor owns the health of the clusters of its partitions: it
	// sets aside the records it cannot read back, as it reads them.
	var badHealth deadletter.Pending
	err := logtable.ReadToEnd(ctx, m.cfg.Backbone.Opts(), m.names.Health, partitions, func(r *kgo.Record) {
		if r.Value == nil {
			delete(loaded[r.Partition], string(r.Key))
			return
		}
		h, err := records.DecodeHealth(r.Value)
		if err == nil && h.ClusterID != string(r.Key) {
			err = fmt.Errorf("the health of cluster %q is keyed %q", h.ClusterID, r.Key)
		}
		if err != nil {
			m.log.Warn("setting aside a health record that cannot be used", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", err)
			badHealth.Add(r, err)
			return
		}
		loaded[r.Partition][h.ClusterID] = h
	})
	if err != nil {
		if ctx.Err() == nil {
			// Without what it published, it would repeat changes: stop,
			// and let the partitions go to another copy or a restart.
			m.stop(fmt.Errorf("monitor: read the health of partitions %v: %w", partitions, err))
		}
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	maps.Copy(m.last, loaded)
	go m.setAsideUnusable(ctx, partitions)
	go m.setAside(ctx, badHealth.Take(m.names.DeadLetters, Principal, partitions, m.cfg.Clock.Now(), m.letterFailed))
	for _, p := range partitions {
		m.owed[p] = map[string]records.Health{}
	}
	m.log.Info("partitions assigned", "partitions", partitions)
	select {
	case m.gained <- struct{}{}:
	default: // a round is due already
	}
}

// revoked forgets lost partitions, once a publication under way is done.
func (m *monitor) revoked(partitions []int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range partitions {
		// An owed signal is lost with its partition: the next owner
		// reads back what Kafka has, probes, and publishes the change
		// it sees under an ID of its own.
		delete(m.last, p)
		delete(m.owed, p)
	}
}

// round probes every cluster of the owned partitions once (or those of
// only, if not nil) and publishes what changed, what is due a heartbeat,
// what it saw of the clusters in only, and tombstones for clusters that
// left the inventory.
func (m *monitor) round(ctx context.Context, only map[string]bool) {
	m.mu.Lock()
	owned := map[int32]bool{}
	for p := range m.last {
		owned[p] = true
	}
	m.mu.Unlock()
	clusters := map[string]entry{}
	add := func(id string, e entry) {
		if owned[e.partition] {
			clusters[id] = e
		}
	}
	if only != nil { // a few clusters: no copy of the whole inventory
		for id := range only {
			if e, ok := m.inv.Get(id); ok {
				add(id, e)
			}
		}
	} else {
		for id, e := range m.inv.Snapshot() {
			add(id, e)
		}
	}
	// At the precision a record keeps (milliseconds), so that a signal
	// read back is the signal published, ID included.
	now := m.cfg.Clock.Now().UTC().Truncate(time.Millisecond)
	var (
		mu      sync.Mutex
		signals []records.Health
		wg      sync.WaitGroup
		slots   = make(chan struct{}, m.cfg.Concurrency)
	)
	for _, id := range slices.Sorted(maps.Keys(clusters)) {
		e := clusters[id]
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			m.mu.Lock()
			prev, seen := m.last[e.partition][e.cluster.ID]
			owed, isOwed := m.owed[e.partition][e.cluster.ID]
			m.mu.Unlock()
			if isOwed {
				// Published again as it was, before anything newer;
				// the next round compares the probe with it.
				mu.Lock()
				signals = append(signals, owed)
				mu.Unlock()
				return
			}
			obs := m.probe(ctx, e.cluster)
			if h, ok := m.signal(prev, seen, e.cluster.ID, obs, now, only[e.cluster.ID]); ok {
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
	m.publish(ctx, clusters, signals)
	if m.cfg.roundDone != nil {
		m.cfg.roundDone(len(clusters))
	}
}

// publish writes the signals of a round, and tombstones for clusters of
// owned partitions that left the inventory, leaving out partitions lost
// during the round. It remembers, record by record, what Kafka took: a
// signal written is the cluster's last, a signal that failed is owed (see
// the package doc), a tombstone that failed is sent again next round.
func (m *monitor) publish(ctx context.Context, clusters map[string]entry, signals []records.Health) {
	m.mu.Lock()
	defer m.mu.Unlock()
	type sent struct {
		partition int32
		id        string
		signal    *records.Health // nil for a tombstone
	}
	var recs []*kgo.Record
	what := map[*kgo.Record]sent{} // ProduceSync gives results in the order they come
	for _, h := range signals {
		p := clusters[h.ClusterID].partition
		if m.last[p] == nil {
			continue // lost meanwhile: its next owner probes it
		}
		value, err := records.Encode(h)
		if err != nil {
			m.log.Error("encode health", "cluster", h.ClusterID, "err", err)
			continue
		}
		r := &kgo.Record{Topic: m.names.Health, Key: []byte(h.ClusterID), Value: value}
		recs = append(recs, r)
		what[r] = sent{p, h.ClusterID, &h}
	}
	for p, last := range m.last {
		for id := range last {
			if _, ok := m.inv.Get(id); !ok {
				delete(m.owed[p], id) // nothing is owed about a cluster that left
				r := &kgo.Record{Topic: m.names.Health, Key: []byte(id)}
				recs = append(recs, r)
				what[r] = sent{p, id, nil}
			}
		}
	}
	if len(recs) == 0 {
		return
	}
	results := m.cl.ProduceSync(ctx, recs...)
	var failed []string
	var firstErr error
	for _, r := range results {
		s := what[r.Record]
		switch {
		case r.Err != nil && s.signal == nil:
			failed, firstErr = append(failed, s.id), cmp.Or(firstErr, r.Err) // it stays in last: its tombstone is sent again
		case r.Err != nil:
			failed, firstErr = append(failed, s.id), cmp.Or(firstErr, r.Err)
			owed := *s.signal
			if errors.Is(r.Err, kerr.MessageTooLarge) || errors.Is(r.Err, kerr.RecordListTooLarge) {
				// What the probe measured is for people; the
				// transition must get through.
				owed.Details = map[string]string{"details": "left out: over the health topic's max.message.bytes"}
			}
			if m.owed[s.partition] != nil {
				m.owed[s.partition][s.id] = owed
			}
		case s.signal == nil:
			delete(m.last[s.partition], s.id)
		default:
			if m.last[s.partition] != nil {
				m.last[s.partition][s.id] = *s.signal
			}
			delete(m.owed[s.partition], s.id)
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		m.log.Warn("publish health; sending the failed records again next round", "failed", len(failed), "of", len(recs), "clusters", failed, "err", firstErr)
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
// prev is the last signal published for the cluster, if seen; fresh asks
// for a signal whatever it says (the cluster's operation just ended).
func (m *monitor) signal(prev records.Health, seen bool, clusterID string, obs drivers.Observation, now time.Time, fresh bool) (records.Health, bool) {
	changed := !seen || prev.Status != obs.Status || prev.ObservedVersion != obs.Version || prev.ConfigHash != obs.ConfigHash ||
		!slices.Equal(prev.Reasons, obs.Reasons)
	if !changed && !fresh && now.Sub(prev.ObservedAt) < m.cfg.Heartbeat {
		return records.Health{}, false
	}
	previous := records.HealthUnknown
	if seen {
		previous = prev.Status
	}
	return records.Health{
		Envelope:        records.Envelope{ID: healthID(clusterID, now, obs.Status, previous, !changed), Time: now, Principal: Principal},
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

// idSpace scopes the IDs of health signals.
var idSpace = uuid.MustParse("5f0e3c1a-7d2b-4c89-9a6e-2b8f41d7c305")

// healthID is the ID of a health signal: derived from what makes the
// signal (its cluster, when it was observed, to the millisecond a record
// keeps, its status and previous status, and whether it is a heartbeat),
// so that two records of one signal carry one ID.
func healthID(clusterID string, observedAt time.Time, status, previous records.HealthStatus, heartbeat bool) string {
	return uuid.NewSHA1(idSpace, fmt.Appendf(nil, "%s\x00%d\x00%s\x00%s\x00%t", clusterID, observedAt.UnixMilli(), status, previous, heartbeat)).String()
}

// unusableRecord is told of an inventory record that cannot be used; the
// owner of its partition sets it aside.
func (m *monitor) unusableRecord(r *kgo.Record, err error) {
	m.log.Warn("an inventory record cannot be used", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", err)
	m.unusable.Add(r, err)
	m.mu.Lock()
	_, owned := m.last[r.Partition]
	m.mu.Unlock()
	if owned {
		go m.setAsideUnusable(m.runCtx, []int32{r.Partition})
	}
}

// setAsideUnusable puts the unusable inventory records of partitions the
// monitor owns on the dead-letter topic.
func (m *monitor) setAsideUnusable(ctx context.Context, partitions []int32) {
	m.setAside(ctx, m.unusable.Take(m.names.DeadLetters, Principal, partitions, m.cfg.Clock.Now(), m.letterFailed))
}

// letterFailed logs a record that could not be set aside.
func (m *monitor) letterFailed(src *kgo.Record, err error) {
	m.log.Error("could not set a record aside", "topic", src.Topic, "partition", src.Partition, "offset", src.Offset, "err", err)
}

// setAside produces dead letters, once the monitor's client is made.
func (m *monitor) setAside(ctx context.Context, recs []*kgo.Record) {
	select {
	case <-m.cl0:
	case <-ctx.Done():
		return
	}
	if len(recs) == 0 {
		return
	}
	if err := m.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil && ctx.Err() == nil {
		m.log.Error("could not set records aside", "records", len(recs), "err", err)
	}
}
