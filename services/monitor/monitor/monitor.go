// Package monitor is the monitor service: it probes the clusters of the
// inventory and publishes health signals, keyed by cluster, when a
// cluster's health changes and as a periodic heartbeat.
//
// Copies of the monitor share the fleet through their consumer group on
// the inventory topic: each probes the clusters of the inventory
// partitions it owns. Its state is the last signal published per cluster
// of those partitions, read back from the health topic (co-partitioned
// with the inventory) when it gains them, so a restarted monitor, or the
// next owner of a partition, neither repeats a change nor misses one.
//
// Each cluster has its own schedule: a min-heap of due times, from which a
// pool of Concurrency workers takes the clusters as they come due, one
// probe each, O(log n) in the clusters owned. There are no rounds: a signal
// is published as soon as its probe is done, batched with the others ready
// at that moment, and stamped with the time its own probe ran. A change of
// the inventory, or a partition gained or lost, adds, moves or removes only
// the clusters concerned. A cluster is due again one interval after its
// probe began.
//
// Two budgets keep a large fleet cheap, whatever its size. At most
// ProbeRate probes start per second: when the clusters a copy owns do not
// fit in Interval at that rate, the interval stretches to
// clusters/ProbeRate (logged when partitions are assigned or revoked). A
// cluster whose health does not change gets a heartbeat at most every
// max(Heartbeat, clusters/HeartbeatBudget), and never more than
// HeartbeatBudget heartbeats a second go out (after a pause, when every
// cluster is due one at once, they are spread over the probes that
// follow). A change of status, reasons, version or managed configs is
// published as soon as a probe sees it, whatever the heartbeat budget.
//
// It also follows the operations topic: when an operation on one of its
// clusters ends, it probes that cluster ahead of every cluster merely due,
// outside the probe budget, and publishes what it sees even if nothing
// changed (a restart changes nothing a probe sees), so that the planner's
// wave gate, which waits for a probe after each operation, does not wait
// for the next heartbeat.
//
// Drift: each signal also says how the cluster differs from its desired
// state (package drift): the inventory's declared version and config keys,
// and for what it leaves out, what the last successful rollouts left, read
// from the history topic (co-partitioned with the inventory) for the
// partitions owned, kept as one small baseline per cluster and followed
// from there. While an operation is in flight on a cluster (from its first
// operation event until the planner's history row for it, which also
// updates the baseline), its drift is not evaluated again: the signal
// carries the drift it had, so a rollout under way is no drift and a
// correcting rollout resolves drift once its outcome is known. A change of
// drift is published at once, like a change of status.
//
// A signal whose record fails to produce is owed: the monitor remembers
// exactly the records Kafka took, and publishes an owed signal again, as
// it was (same ID, same observation time), Interval later, before anything
// newer about its cluster. A signal's ID is derived from its cluster,
// observation time, status, previous status and heartbeat flag, so a
// record written twice (a produce that failed on the way back, after Kafka
// had it) is recognisable by its ID, and so is the notification the
// notifier derives from it. A cluster that leaves the inventory has its
// health tombstoned, again Interval later until Kafka takes it.
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
	"github.com/flotilla-fleet/flotilla/pkg/drift"
	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
)

// Principal is the name the monitor writes its records under.
const Principal = "monitor"

// Config configures a monitor.
type Config struct {
	Backbone backbone.Config
	Probers  *drivers.Registry
	Clock    clockwork.Clock
	// Interval is the time between two probes of a cluster (default
	// 10s), or clusters owned / ProbeRate if that is longer.
	Interval time.Duration
	// Heartbeat is the longest time without a signal for a cluster whose
	// health does not change (default 1m), or clusters owned /
	// HeartbeatBudget if that is longer.
	Heartbeat time.Duration
	// ProbeTimeout bounds one probe (default 10s); a probe that fails or
	// times out reports the cluster unhealthy.
	ProbeTimeout time.Duration
	// Concurrency is the most probes run at once (default 32).
	Concurrency int
	// ProbeRate is the most probes of due clusters this copy starts per
	// second (default DefaultProbeRate); the interval stretches when the
	// clusters owned need more. Probes after an operation are not counted.
	ProbeRate float64
	// HeartbeatBudget is the most heartbeats this copy publishes per
	// second (default DefaultHeartbeatBudget); the heartbeat interval
	// stretches when the clusters owned need more.
	HeartbeatBudget float64
	// InstanceID names this copy, stable across its restarts and distinct
	// between copies: its static identity in the consumer group (a copy
	// restarted after a crash takes its partitions back at once). Empty: a
	// dynamic member.
	InstanceID string
	// Metrics, if set, records the monitor's metrics and its Kafka
	// clients' (package metrics); nil records none. The drift detection
	// sets flotilla_monitor_drifted_clusters through Metrics.SetDrifted.
	Metrics *metrics.Monitor
	// Trust says whether inventory records must be signed by a principal
	// allowed to write them (package trust): one that is not is unusable,
	// set aside like one that does not decode.
	Trust trust.Config

	// settled, if set, is told of each cluster the monitor is done with
	// for now, and when its probe ran: after the signal was published, or
	// found not worth publishing (tests wait on it).
	settled func(clusterID string, at time.Time)
	// paced, if set, is told the pace each time it is logged.
	paced func(Pace)
	// tracked, if set, is told under the lock of each cluster an
	// operation event or history row put in flight, or released.
	tracked func(clusterID string, inFlight bool)
}

// Defaults of the budgets. At 500 probes a second one copy goes round
// 100,000 clusters in 200 seconds; 10s probes of up to 5,000 clusters fit.
// 200 heartbeats a second keep the 1-minute heartbeat up to 12,000
// clusters and give 100,000 clusters one every 500s (every third probe),
// where a 1-minute heartbeat would write 1,667 records a second that tell
// nothing new (a change is published at once, whatever the budget).
const (
	DefaultProbeRate       = 500
	DefaultHeartbeatBudget = 200
)

type monitor struct {
	cfg   Config
	log   *slog.Logger
	names topics.Names
	cl    *kgo.Client
	inv   *logtable.Table[entry]

	// mu guards the partitions owned, what was published for them and the
	// schedule of their clusters.
	mu     sync.Mutex
	last   map[int32]map[string]records.Health // owned partition → cluster → last signal published
	owed   map[int32]map[string]records.Health // owned partition → cluster → signal whose record failed to produce
	sched  *schedule
	probes *bucket // the probe budget
	beats  *bucket // the heartbeat budget
	pace   Pace    // of the clusters scheduled now

	// pubMu is held while a publication is under way: a revocation waits
	// for it, so that the next owner reads it back.
	// baselines (under mu) is, per owned partition, what the successful
	// rollouts left on each cluster that has a history.
	baselines map[int32]map[string]drift.Baseline
	drifted   int // clusters of the partitions owned whose last signal says drift, under mu
	// busy (under mu) holds, per cluster, the workflows with an
	// operation in flight on it, or ended but not yet in its history.
	busy map[string]busyOps
	hist *kgo.Client // follows the history of the owned partitions
	// histNext (under mu) is, per owned partition, the offset of the next
	// history record to apply: a fetch left over from before the
	// partition was lost and gained again is not applied twice.
	histNext map[int32]int64
	// since is when this run began, by the wall clock of the records: the
	// operations read from before it only tell what is in flight.
	since time.Time

	pubMu   sync.Mutex
	results chan result   // from the workers to the publisher
	wake    chan struct{} // the schedule changed ahead of what the dispatcher waits for

	stop context.CancelCauseFunc // ends Run with an error

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

// busyOp is a workflow's operation on a cluster: when the monitor last
// heard of it, whether it ended, and whether its history row released it
// (kept settleAfter, so that its outcome read after the row, from another
// topic, does not hold the cluster again).
type busyOp struct {
	workflow string
	at       time.Time
	ended    bool
	released bool
}

// busyOps are a cluster's busy operations, one per workflow: a slice, not
// a map, since a cluster has one or two at a time, and a map each for the
// 100,000 clusters a large rollout just ended on was most of what a
// monitor restarted then held.
type busyOps []busyOp

// find returns the index of workflow's operation, -1 if there is none.
func (ops busyOps) find(workflow string) int {
	for i := range ops {
		if ops[i].workflow == workflow {
			return i
		}
	}
	return -1
}

// set puts op in place of its workflow's, or adds it.
func (ops busyOps) set(op busyOp) busyOps {
	if i := ops.find(op.workflow); i >= 0 {
		ops[i] = op
		return ops
	}
	return append(ops, op)
}

// keep stores a cluster's operations, dropping the cluster once it has
// none. Under mu.
func (m *monitor) keep(clusterID string, ops busyOps) {
	if len(ops) == 0 {
		delete(m.busy, clusterID)
		return
	}
	m.busy[clusterID] = ops
}

// How long an operation keeps a cluster's drift as it was. An ended one
// is released by its history row, which the planner writes as soon as it
// reads the outcome; settleAfter bounds the wait should it never come (a
// history row read back before the operation's own records). One still
// running is forgotten after opLookback, beyond any executor's timeout.
const (
	settleAfter = time.Minute
	opLookback  = time.Hour
	// followPartitionBytes is the most the followers of operations and
	// history fetch of a partition at a time: an hour of operations read
	// at start is large, and kgo's default (up to 50 MiB a fetch,
	// decompressed) doubled the monitor's memory for it.
	followPartitionBytes = 256 << 10
)

// result is what a worker hands the publisher about one cluster.
type result struct {
	it     *item
	at     time.Time       // when its probe ran
	signal *records.Health // nil: a tombstone
}

// Run runs the monitor until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	// Every client of the monitor counts in its Kafka metrics.
	cfg.Backbone.ClientOpts = slices.Concat(cfg.Backbone.ClientOpts, cfg.Metrics.ClientOpts())
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	m := &monitor{cfg: cfg, log: cfg.Backbone.Log().With("service", "monitor"), names: cfg.Backbone.Names(),
		last: map[int32]map[string]records.Health{}, owed: map[int32]map[string]records.Health{},
		sched: newSchedule(), probes: newBucket(cfg.ProbeRate), beats: newBucket(cfg.HeartbeatBudget), pace: cfg.pace(0),
		baselines: map[int32]map[string]drift.Baseline{}, busy: map[string]busyOps{}, histNext: map[int32]int64{}, since: time.Now(),
		results: make(chan result, 256), wake: make(chan struct{}, 1), stop: cancel,
		cl0: make(chan struct{}), runCtx: ctx}
	// A direct consumer, given each owned partition of the history once
	// it has been read to its end.
	hist, err := cfg.Backbone.Client(kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{}),
		kgo.FetchMaxPartitionBytes(followPartitionBytes))
	if err != nil {
		return err
	}
	defer hist.Close()
	m.hist = hist
	go func() {
		// Probing a fleet whose inventory was recreated empty would
		// tombstone the health of every cluster.
		if err := backbone.WatchTopics(ctx, cfg.Backbone, m.names.Inventory, m.names.Health, m.names.Operations, m.names.History); err != nil {
			cancel(fmt.Errorf("monitor: %w", err))
		}
	}()

	tt := trust.NewTable(m.names.Trust, cfg.Backbone.Opts(), cfg.Trust, trust.WithLogger(m.log))
	go func() {
		if err := tt.Run(ctx); err != nil && ctx.Err() == nil {
			cancel(fmt.Errorf("monitor: trust store: %w", err))
		}
	}()
	m.inv = logtable.New(m.names.Inventory, cfg.Backbone.Opts(), func(r *kgo.Record) (entry, error) {
		rec, err := tt.DecodeCluster(r)
		if err == nil && rec.Cluster.ID != string(r.Key) {
			err = fmt.Errorf("cluster %q is keyed %q", rec.Cluster.ID, r.Key)
		}
		return entry{cluster: rec.Cluster, partition: r.Partition}, err
	}, logtable.WithLogger[entry](m.log), logtable.OnDecodeError[entry](m.unusableRecord), logtable.OnChange(m.inventoryChanged))
	invDone := make(chan error, 1)
	go func() { invDone <- m.inv.Run(ctx) }()
	// The group only shares out the inventory's partitions: the table
	// above has their clusters, so the member reads from the end. It joins
	// while the table is read; assigned waits for the table.
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
	if err := m.inv.WaitReady(ctx); err != nil {
		if parent.Err() != nil {
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("monitor: inventory table: %w", err)
	}
	go func() {
		for ctx.Err() == nil {
			if cl.PollFetches(ctx).IsClientClosed() { // the records themselves are not needed
				return
			}
		}
	}()
	// By the records' own (wall clock) timestamps, from opLookback before
	// this run: an operation that ends once the monitor runs is not
	// missed, and one already in flight is known.
	ops, err := cfg.Backbone.Client(kgo.ConsumeTopics(m.names.Operations), kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(m.since.Add(-opLookback).UnixMilli())),
		kgo.FetchMaxPartitionBytes(followPartitionBytes))
	if err != nil {
		return err
	}
	defer ops.Close()
	go m.followOperations(ctx, ops)
	go m.followHistory(ctx)
	m.log.Info("monitor started", "clusters", m.inv.Len(), "interval", cfg.Interval, "heartbeat", cfg.Heartbeat,
		"probe_rate", cfg.ProbeRate, "heartbeat_budget", cfg.HeartbeatBudget, "concurrency", cfg.Concurrency)

	// The loops end before the clients close, so that nothing is left
	// half published.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)
	jobs := make(chan *item)
	for range cfg.Concurrency {
		wg.Go(func() { m.work(ctx, jobs) })
	}
	wg.Go(func() { m.publishLoop(ctx) })
	wg.Go(func() { m.dispatch(ctx, jobs) })

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
	}
}

// withDefaults fills in the defaults of the fields left zero.
func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	if c.Interval <= 0 {
		c.Interval = 10 * time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = time.Minute
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = 10 * time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 32
	}
	if c.ProbeRate <= 0 {
		c.ProbeRate = DefaultProbeRate
	}
	if c.HeartbeatBudget <= 0 {
		c.HeartbeatBudget = DefaultHeartbeatBudget
	}
	return c
}

// followOperations puts the clusters whose operation ends, from now on,
// ahead of the schedule.
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
			if err != nil {
				return // the executor's records; the planner reports what it cannot read
			}
			m.mu.Lock()
			m.operationSeen(ev, r.Timestamp)
			hurried := false
			if ev.Status.Terminal() && !r.Timestamp.Before(m.since) {
				hurried = m.sched.hurry(ev.ClusterID)
			}
			m.mu.Unlock()
			if hurried {
				m.poke()
			}
		})
	}
}

// operationSeen notes a workflow's operation on a cluster as in flight,
// or ended; its history row releases it. Under mu.
func (m *monitor) operationSeen(ev records.OperationEvent, at time.Time) {
	ops := m.busy[ev.ClusterID]
	i := ops.find(ev.WorkflowID)
	if ev.Status.Terminal() && at.Before(m.since.Add(-settleAfter)) {
		// Ended more than settleAfter before this run, by the record's
		// own time: the wait for its history row is over already, so it
		// holds nothing. Reading the last hour of operations as the
		// monitor starts would otherwise keep an entry for each.
		if i >= 0 {
			m.keep(ev.ClusterID, slices.Delete(ops, i, i+1))
		}
		return
	}
	if i >= 0 && ops[i].released && ev.Status.Terminal() {
		return // the outcome its history row already told
	}
	m.busy[ev.ClusterID] = ops.set(busyOp{workflow: ev.WorkflowID, at: m.cfg.Clock.Now(), ended: ev.Status.Terminal()})
	if m.cfg.tracked != nil {
		m.cfg.tracked(ev.ClusterID, true)
	}
}

// inFlight reports whether an operation on the cluster is in flight or
// awaits its history row, forgetting those past their time. Under mu.
func (m *monitor) inFlight(clusterID string, now time.Time) bool {
	busy := false
	ops := slices.DeleteFunc(m.busy[clusterID], func(op busyOp) bool {
		if (op.ended || op.released) && now.Sub(op.at) >= settleAfter || now.Sub(op.at) >= opLookback {
			return true
		}
		busy = busy || !op.released
		return false
	})
	m.keep(clusterID, ops)
	return busy
}

// historySeen applies a history row of an owned partition to its
// cluster's baseline, and releases the workflow's operation on it. It
// reports whether the cluster's desired state or drift may have changed.
// A row followed (new) is remembered for settleAfter, in case its
// operation's outcome comes later; a row read back when a partition is
// assigned (a year of them) only releases what is known in flight, so that
// the read costs no memory. Under mu.
func (m *monitor) historySeen(baselines map[string]drift.Baseline, t records.Target, followed bool) bool {
	b := baselines[t.ClusterID]
	changed := b.Apply(t)
	if changed {
		baselines[t.ClusterID] = b
	}
	ops := m.busy[t.ClusterID]
	i := ops.find(t.WorkflowID)
	if i < 0 && !followed {
		return changed
	}
	if i >= 0 && !ops[i].released {
		changed = true
	}
	m.busy[t.ClusterID] = ops.set(busyOp{workflow: t.WorkflowID, at: m.cfg.Clock.Now(), released: true})
	if m.cfg.tracked != nil && !m.inFlight(t.ClusterID, m.cfg.Clock.Now()) {
		m.cfg.tracked(t.ClusterID, false)
	}
	return changed
}

// historyTarget decodes a history record; nil for a tombstone (the
// history ages out: what it built stays) or a record that cannot be used.
func (m *monitor) historyTarget(r *kgo.Record) *records.Target {
	if r.Value == nil {
		return nil
	}
	rec, err := records.DecodeWorkflowRecord(r.Value)
	if err != nil || rec.Target == nil {
		// The planner's record: it is not the monitor's to set aside.
		m.log.Debug("a history record cannot be used", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", err)
		return nil
	}
	return rec.Target
}

// followHistory applies the history rows written after each owned
// partition was read, and probes their cluster ahead of the queue: the
// outcome of a rollout changes what is desired, or ends what held the
// drift as it was.
func (m *monitor) followHistory(ctx context.Context) {
	for ctx.Err() == nil {
		fetches := m.hist.PollFetches(ctx)
		if fetches.IsClientClosed() {
			return
		}
		poke := false
		fetches.EachRecord(func(r *kgo.Record) {
			t := m.historyTarget(r)
			if t == nil {
				return
			}
			m.mu.Lock()
			if baselines := m.baselines[r.Partition]; baselines != nil && r.Offset >= m.histNext[r.Partition] {
				m.histNext[r.Partition] = r.Offset + 1
				if m.historySeen(baselines, *t, true) {
					poke = m.sched.hurry(t.ClusterID) || poke
				}
			}
			m.mu.Unlock()
		})
		if poke {
			m.poke()
		}
	}
}

// inventoryChanged schedules at once a cluster of an owned partition that
// was added or changed, or removed (its next turn tombstones its health).
func (m *monitor) inventoryChanged(id string, e entry, deleted bool) {
	m.mu.Lock()
	if deleted {
		if it := m.sched.items[id]; it != nil {
			e.partition = it.partition
		} else {
			m.mu.Unlock()
			return // not one of ours, or no health to tombstone
		}
	}
	if m.last[e.partition] == nil {
		m.mu.Unlock()
		return // another copy's
	}
	first := m.sched.add(id, e.partition, m.cfg.Clock.Now())
	// A cluster just registered, or whose record changed (its address,
	// its credentials), is probed ahead of those merely due, and what is
	// seen published: whoever changed it waits for that.
	hurried := !deleted && m.sched.hurry(id)
	m.pace = m.cfg.pace(m.sched.Len())
	m.mu.Unlock()
	if first || hurried {
		m.poke()
	}
}

// poke tells the dispatcher to look at the schedule again.
func (m *monitor) poke() {
	select {
	case m.wake <- struct{}{}:
	default: // it will look anyway
	}
}

// assigned reads back the last signal published for each cluster of newly
// owned partitions, and schedules their clusters at once. kgo calls it
// before the member is given more.
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
	// What the successful rollouts left, from the history of the same
	// partitions; then the follower carries on from where this read ended.
	baselines := map[int32]map[string]drift.Baseline{}
	for _, p := range partitions {
		baselines[p] = map[string]drift.Baseline{}
	}
	var histEnds map[int32]int64
	err = logtable.ReadToEnd(ctx, m.cfg.Backbone.Opts(), m.names.History, partitions, func(r *kgo.Record) {
		if t := m.historyTarget(r); t != nil {
			m.mu.Lock()
			m.historySeen(baselines[r.Partition], *t, false)
			m.mu.Unlock()
		}
	}, logtable.OnEnds(func(ends map[int32]int64) { histEnds = ends }))
	if err != nil {
		if ctx.Err() == nil {
			m.stop(fmt.Errorf("monitor: read the history of partitions %v: %w", partitions, err))
		}
		return
	}
	if m.inv.WaitReady(ctx) != nil {
		return // stopping, or the table failed: Run ends
	}
	from := map[int32]kgo.Offset{}
	for _, p := range partitions {
		from[p] = kgo.NewOffset().At(histEnds[p])
	}
	m.mu.Lock()
	maps.Copy(m.baselines, baselines)
	for _, p := range partitions {
		m.histNext[p] = histEnds[p]
	}
	m.hist.AddConsumePartitions(map[string]map[int32]kgo.Offset{m.names.History: from})
	maps.Copy(m.last, loaded)
	for _, health := range loaded {
		m.countDrifted(health, 1)
	}
	for _, p := range partitions {
		m.owed[p] = map[string]records.Health{}
	}
	// Under the lock, so that an inventory change made after this look
	// finds its partition owned (and one made before is in the look).
	now := m.cfg.Clock.Now()
	for _, id := range m.inv.Keys() { // not a copy of the whole inventory
		if e, ok := m.inv.Get(id); ok && loaded[e.partition] != nil {
			due := now
			if _, seen := loaded[e.partition][id]; !seen {
				due = time.Time{} // never probed: ahead of those that have a health, within the budget
			}
			m.sched.add(id, e.partition, due)
		}
	}
	for p, health := range loaded {
		for id := range health {
			m.sched.add(id, p, now) // a cluster gone from the inventory: its health is tombstoned
		}
	}
	m.pace = m.cfg.pace(m.sched.Len())
	pace := m.pace
	m.mu.Unlock()
	go m.setAsideUnusable(ctx, partitions)
	go m.setAside(ctx, badHealth.Take(m.names.DeadLetters, Principal, partitions, m.cfg.Clock.Now(), m.letterFailed))
	m.log.Info("partitions assigned", "partitions", partitions)
	m.logPace(pace)
	m.poke()
}

// logPace says how often each cluster is probed and heartbeats.
func (m *monitor) logPace(p Pace) {
	if p.Stretched {
		m.log.Info("probe budget stretches the interval: more clusters than the interval holds at the probe rate",
			"clusters", p.Clusters, "interval", p.Interval, "configured_interval", m.cfg.Interval, "probe_rate", m.cfg.ProbeRate, "heartbeat", p.Heartbeat)
	} else {
		m.log.Info("probe pace", "clusters", p.Clusters, "interval", p.Interval, "heartbeat", p.Heartbeat)
	}
	if m.cfg.paced != nil {
		m.cfg.paced(p)
	}
}

// revoked forgets lost partitions, once a publication under way is done.
func (m *monitor) revoked(partitions []int32) {
	m.pubMu.Lock()
	m.mu.Lock()
	for _, p := range partitions {
		// An owed signal is lost with its partition: the next owner
		// reads back what Kafka has, probes, and publishes the change
		// it sees under an ID of its own.
		m.countDrifted(m.last[p], -1)
		delete(m.last, p)
		delete(m.owed, p)
		delete(m.baselines, p)
		delete(m.histNext, p)
		m.sched.removePartition(p)
	}
	m.hist.RemoveConsumePartitions(map[string][]int32{m.names.History: partitions})
	m.pace = m.cfg.pace(m.sched.Len())
	pace := m.pace
	m.mu.Unlock()
	m.pubMu.Unlock()
	if len(partitions) > 0 {
		m.log.Info("partitions revoked", "partitions", partitions)
		m.logPace(pace)
	}
}

// dispatch hands the workers the clusters to probe, as they come due.
func (m *monitor) dispatch(ctx context.Context, jobs chan<- *item) {
	for {
		it := m.next(ctx)
		if it == nil {
			return
		}
		select {
		case jobs <- it:
		case <-ctx.Done():
			return
		}
	}
}

// tick is the shortest time the dispatcher sleeps for a probe due.
const tick = 50 * time.Millisecond

// next waits for the next cluster to probe: one whose operation ended, or
// else the first due once the probe budget allows. It returns nil when ctx
// ends.
func (m *monitor) next(ctx context.Context) *item {
	for {
		m.mu.Lock()
		now := m.cfg.Clock.Now()
		if it := m.sched.nextUrgent(); it != nil {
			m.mu.Unlock()
			return it
		}
		wait := time.Duration(-1) // nothing scheduled: until woken
		if top := m.sched.peek(); top != nil {
			at := maxTime(top.due, m.probes.ready(now))
			if !at.After(now) {
				m.probes.take(now)
				it := m.sched.take()
				m.mu.Unlock()
				return it
			}
			// A wake-up per probe would cost more than the probe:
			// what comes due within a tick goes together (and its
			// signals in one produce).
			wait = max(at.Sub(now), tick)
		}
		m.mu.Unlock()
		if !m.sleep(ctx, now, wait) {
			return nil
		}
	}
}

// sleep waits d on the clock from then (forever if d < 0), or until poked.
// It returns false when ctx ends.
func (m *monitor) sleep(ctx context.Context, then time.Time, d time.Duration) bool {
	var fire <-chan time.Time
	if d >= 0 {
		t := m.cfg.Clock.NewTimer(d)
		defer t.Stop()
		if m.cfg.Clock.Since(then) >= time.Millisecond {
			// The clock moved on (a test's fake clock was advanced)
			// while the timer was being set: it would fire late.
			return true
		}
		fire = t.Chan()
	}
	select {
	case <-ctx.Done():
		return false
	case <-m.wake:
	case <-fire:
	}
	return true
}

// work probes the clusters it is handed.
func (m *monitor) work(ctx context.Context, jobs <-chan *item) {
	for {
		select {
		case it := <-jobs:
			m.turn(ctx, it)
		case <-ctx.Done():
			return
		}
	}
}

// turn does a cluster's turn: the tombstone of a cluster gone from the
// inventory, an owed signal, or a probe and what it is worth publishing.
func (m *monitor) turn(ctx context.Context, it *item) {
	// At the precision a record keeps (milliseconds), so that a signal
	// read back is the signal published, ID included.
	at := m.cfg.Clock.Now().UTC().Truncate(time.Millisecond)
	e, listed := m.inv.Get(it.id)
	m.mu.Lock()
	prev, seen := m.last[it.partition][it.id]
	owed, isOwed := m.owed[it.partition][it.id]
	fresh := listed && !isOwed && it.takeFresh()
	m.mu.Unlock()
	switch {
	case !listed && !seen:
		m.settle(settled{it, at, leave}) // nothing to tombstone
	case !listed:
		m.send(ctx, result{it: it, at: at})
	case isOwed:
		// Published again as it was, before anything newer; the next
		// probe compares with it.
		m.send(ctx, result{it: it, at: at, signal: &owed})
	default:
		obs, observed := m.probe(ctx, e.cluster)
		var items []records.DriftItem
		if seen {
			items = prev.Drift
		}
		m.mu.Lock()
		base := m.baselines[it.partition][it.id]
		busy := m.inFlight(it.id, m.cfg.Clock.Now())
		m.mu.Unlock()
		// A probe that saw nothing, or a cluster an operation is
		// changing, keeps the drift it had.
		if observed && !busy {
			items = drift.Compare(e.cluster, base, obs)
		}
		if h, ok := m.signal(prev, seen, it.id, obs, items, at, fresh); ok {
			m.send(ctx, result{it: it, at: at, signal: &h})
		} else {
			m.settle(settled{it, at, probeNext})
		}
	}
}

// send hands a result to the publisher.
func (m *monitor) send(ctx context.Context, r result) {
	select {
	case m.results <- r:
	case <-ctx.Done():
	}
}

// settled is an item done with for now, and when its probe ran.
type settled struct {
	it   *item
	at   time.Time
	then next
}

// next says when a settled item is due again.
type next int

const (
	probeNext next = iota // an interval after its probe
	retryNext             // its record failed: Interval from now
	leave                 // tombstoned, or nothing to tombstone: out of the schedule
)

// settle puts items back in the schedule, and tells the test hook.
func (m *monitor) settle(items ...settled) {
	m.mu.Lock()
	now, first := m.cfg.Clock.Now(), false
	for _, s := range items {
		switch s.then {
		case leave:
			if m.sched.current(s.it) {
				m.sched.remove(s.it.id)
				m.pace = m.cfg.pace(m.sched.Len())
			}
		case retryNext:
			first = m.sched.retry(s.it, now.Add(m.cfg.Interval)) || first
		default:
			first = m.sched.settle(s.it, s.at.Add(m.pace.Interval), now) || first
		}
	}
	m.mu.Unlock()
	if first {
		m.poke()
	}
	if m.cfg.settled != nil {
		for _, s := range items {
			m.cfg.settled(s.it.id, s.at)
		}
	}
}

// publishLoop publishes the results as they come, each batch what the
// workers finished while the previous one was being produced.
func (m *monitor) publishLoop(ctx context.Context) {
	const most = 1000 // records per produce
	batch := make([]result, 0, most)
	for {
		select {
		case r := <-m.results:
			batch = append(batch[:0], r)
		case <-ctx.Done():
			return
		}
	more:
		for len(batch) < most {
			select {
			case r := <-m.results:
				batch = append(batch, r)
			default:
				break more
			}
		}
		m.publish(ctx, batch)
	}
}

// publish writes a batch of signals and tombstones, leaving out clusters
// no longer scheduled (their partition was lost). It remembers, record by
// record, what Kafka took: a signal written is the cluster's last, a signal
// that failed is owed (see the package doc), a tombstone that failed is
// sent again Interval later.
func (m *monitor) publish(ctx context.Context, batch []result) {
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	recs := make([]*kgo.Record, 0, len(batch))
	what := make(map[*kgo.Record]result, len(batch)) // ProduceSync gives results in the order they come
	var done []settled
	m.mu.Lock()
	for _, r := range batch {
		if !m.sched.current(r.it) {
			continue // lost meanwhile: its next owner probes it
		}
		rec := &kgo.Record{Topic: m.names.Health, Key: []byte(r.it.id)}
		if r.signal != nil {
			value, err := records.Encode(*r.signal)
			if err != nil {
				m.log.Error("encode health", "cluster", r.it.id, "err", err)
				done = append(done, settled{r.it, r.at, probeNext})
				continue
			}
			rec.Value = value
		}
		recs = append(recs, rec)
		what[rec] = r
	}
	m.mu.Unlock()
	var produced kgo.ProduceResults
	if len(recs) > 0 {
		produced = m.cl.ProduceSync(ctx, recs...)
	}
	var failed []string
	var firstErr error
	m.mu.Lock()
	for _, pr := range produced {
		r := what[pr.Record]
		if pr.Err != nil {
			failed, firstErr = append(failed, r.it.id), cmp.Or(firstErr, pr.Err)
			m.failed(r, pr.Err)
			done = append(done, settled{r.it, r.at, retryNext})
			continue
		}
		m.took(r)
		switch {
		case r.signal == nil:
			m.cfg.Metrics.Published(metrics.SignalTombstone)
		case r.signal.Heartbeat:
			m.cfg.Metrics.Published(metrics.SignalHeartbeat)
		default:
			m.cfg.Metrics.Published(metrics.SignalChange)
		}
		then := probeNext
		if r.signal == nil {
			then = leave
		}
		done = append(done, settled{r.it, r.at, then})
	}
	m.mu.Unlock()
	m.settle(done...)
	if len(failed) > 0 {
		slices.Sort(failed)
		m.log.Warn("publish health; sending the failed records again after the interval", "failed", len(failed), "of", len(recs), "clusters", failed, "err", firstErr)
	}
}

// took records what Kafka took: the cluster's last signal, or its
// tombstone.
func (m *monitor) took(r result) {
	p, id := r.it.partition, r.it.id
	delete(m.owed[p], id)
	before := len(m.last[p][id].Drift) > 0
	switch {
	case r.signal == nil:
		delete(m.last[p], id)
	case m.last[p] != nil:
		m.last[p][id] = *r.signal
	}
	if after := len(m.last[p][id].Drift) > 0; after != before {
		m.drifted += map[bool]int{true: 1, false: -1}[after]
		m.cfg.Metrics.SetDrifted(m.drifted)
	}
}

// countDrifted adds (sign 1) or takes away (-1) the drifted clusters of
// the health of a partition gained or lost, and sets the gauge.
func (m *monitor) countDrifted(health map[string]records.Health, sign int) {
	for _, h := range health {
		if len(h.Drift) > 0 {
			m.drifted += sign
		}
	}
	m.cfg.Metrics.SetDrifted(m.drifted)
}

// failed records a signal whose record Kafka did not take as owed; a
// tombstone that failed stays due, as the cluster's health stays in last.
func (m *monitor) failed(r result, err error) {
	if r.signal == nil || m.owed[r.it.partition] == nil {
		return
	}
	owed := *r.signal
	if errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) {
		// What the probe measured is for people; the transition must
		// get through.
		owed.Details = map[string]string{"details": "left out: over the health topic's max.message.bytes"}
	}
	m.owed[r.it.partition][r.it.id] = owed
}

// probe probes a cluster; false says the probe could not observe it.
func (m *monitor) probe(ctx context.Context, c inventory.Cluster) (drivers.Observation, bool) {
	p, err := m.cfg.Probers.Prober(c.Driver)
	if err != nil {
		m.cfg.Metrics.ProbeFailed()
		return drivers.Observation{Status: records.HealthUnknown, Reasons: []string{err.Error()}}, false
	}
	pctx, cancel := context.WithTimeout(ctx, m.cfg.ProbeTimeout)
	defer cancel()
	began := time.Now() // wall time, for the metrics: not the schedule's clock
	obs, err := p.Probe(pctx, c)
	m.cfg.Metrics.ObserveProbe(time.Since(began), err != nil && ctx.Err() == nil) // a probe cut short by a stop is not the cluster's failure
	if err != nil {
		return drivers.Observation{Status: records.HealthUnhealthy, Reasons: []string{"probe failed: " + err.Error()}}, false
	}
	return obs, true
}

// signal returns the health signal to publish for an observation and the
// cluster's drift, if any: on a change of status, reasons, version,
// managed configs or drift, or when a heartbeat is due. Details alone
// (measurements) do not make a change. Each drift item is also a reason;
// it leaves the status as the probe found it (see the README's Drift).
// prev is the last signal published for the cluster, if seen; fresh asks
// for a signal whatever it says (the cluster's operation just ended).
func (m *monitor) signal(prev records.Health, seen bool, clusterID string, obs drivers.Observation, items []records.DriftItem, now time.Time, fresh bool) (records.Health, bool) {
	reasons := obs.Reasons
	if len(items) > 0 {
		reasons = append(slices.Clip(obs.Reasons), drift.Lines(items)...)
	}
	var prevDrift []records.DriftItem
	if seen {
		prevDrift = prev.Drift
	}
	driftChanged := !slices.Equal(prevDrift, items)
	changed := !seen || prev.Status != obs.Status || prev.ObservedVersion != obs.Version || prev.ConfigHash != obs.ConfigHash ||
		!slices.Equal(prev.Reasons, reasons) || driftChanged
	if !changed && !fresh && !m.heartbeatDue(prev, now) {
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
		Reasons:         reasons,
		ObservedVersion: obs.Version,
		ConfigHash:      obs.ConfigHash,
		Details:         obs.Details,
		ObservedAt:      now,
		Heartbeat:       !changed,
		Drift:           items,
		DriftChanged:    driftChanged,
	}, true
}

// heartbeatDue reports whether a cluster whose health did not change is
// due a heartbeat: its last signal is older than the pace's heartbeat, and
// the heartbeat budget has room (after a pause every cluster is due at
// once; the budget spreads them over the probes that follow).
func (m *monitor) heartbeatDue(prev records.Health, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return now.Sub(prev.ObservedAt) >= m.pace.Heartbeat && m.beats.allow(now)
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
