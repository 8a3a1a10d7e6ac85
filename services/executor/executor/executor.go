// Package executor is the executor service: it carries out the planner's
// commands on clusters through drivers and records what it did on the
// operations topic.
//
// The executor owns partitions of the commands topic through its consumer
// group. For each partition it owns it:
//
//   - initialises the partition's transactional producer (one ID per
//     partition, not per instance), which fences the partition's previous
//     owner at the broker: nothing it writes after that becomes visible;
//   - reads the partition's lease: the previous owner stops acting when
//     its lease ends, so an operation it had in flight is resumed only
//     once that lease has lapsed;
//   - reads the partition's operations and commands, each to the end of
//     the log (a table per partition, package logtable), and then acts on
//     the last command of each target: a command whose operation finished,
//     or that a later attempt superseded, is done; one whose operation was
//     started but never finished is resumed through the driver, which
//     converges and never changes a cluster twice; any other is started;
//   - renews its lease every third of it, and stops acting (the process
//     exits) if it cannot renew it in time or finds itself fenced.
//
// It commits no offsets: the log is its only state.
//
// Before it acts on a cluster it claims it (package claims): of the
// operations sent for one cluster, by any planner, one runs at a time and
// the others wait, whichever executors carry them out. Once its claim is
// first in line it writes a grant, whose offset is the operation's fencing
// token: drivers get it, with a check of the lease to call before each
// change (drivers.Request.Fence). Waiting for a cluster holds no slot of
// --concurrency: only acting does.
//
// Before it starts a config operation, it reads what the operation's keys
// are set to through the driver, when the driver can ([drivers.Snapshotter]),
// and records that in the "started" event and the outcome, so that a
// rollback can restore them. An operation whose keys could not be read
// fails without acting; a resumed one keeps what its start recorded.
package executor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/auditchain"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/claims"
	"github.com/flotilla-fleet/flotilla/pkg/deadletter"
	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// Principal is the name the executor writes its records under.
const Principal = "executor"

// confirmTimeout bounds asking a driver whether a resumed attempt past
// its deadline was carried out.
const confirmTimeout = 30 * time.Second

// clockSkew is how far apart executors' clocks may be. A new owner takes
// the previous owner's lease to end at its last renewal's time plus the
// lease plus this; it never waits longer than one lease from when it
// fenced the previous owner, which needs no clock agreement at all.
const clockSkew = 2 * time.Second

// DefaultConcurrency is how many operations an executor carries out at
// once unless told otherwise. The planner's in-flight limit counts the
// operations sent; those beyond it here wait their turn in the executor.
// An operation acting mostly waits on its cluster and costs a goroutine,
// but a driver that blocks in system calls (an exec driver's process, the
// simulated fleet's files) holds an OS thread while it does, and Go stops
// a process at 10,000 threads: more copies, or a higher --concurrency for
// drivers that wait on the network (the kafka driver), go further.
const DefaultConcurrency = 1000

// Config configures an executor.
type Config struct {
	Backbone backbone.Config
	Drivers  *drivers.Registry
	Clock    clockwork.Clock
	// InstanceID names this copy of the executor, stable across its
	// restarts and distinct between copies: its static identity in the
	// consumer group (so that a copy restarted after a crash takes its
	// partitions back at once) and the holder of its leases and grants.
	// Empty: a dynamic group member, holding as "executor".
	InstanceID string
	// Concurrency is the most operations acting at once (default
	// DefaultConcurrency); operations waiting for their cluster do not
	// count.
	Concurrency int
	// Timeout bounds one operation (default 30 minutes); past it the
	// operation fails.
	Timeout time.Duration
	// Lease is how long the lease on an owned partition lasts after each
	// renewal (default 15s); it is renewed every third of it. An executor
	// that cannot renew its lease in time stops acting; a new owner waits
	// for a previous owner's lease to lapse before resuming what it had in
	// flight.
	Lease time.Duration
	// LeaseClock measures leases and the waits for the broker between
	// retries (default the real clock, whatever Clock is): a lease bounds
	// how long this process may have been cut off from Kafka or frozen,
	// which a test's fake passing of time does not change. Tests of the
	// leases themselves set it.
	LeaseClock clockwork.Clock
	// Metrics, if set, records the executor's metrics and its Kafka
	// clients' (package metrics); nil records none.
	Metrics *metrics.Executor
	// Signer signs the checkpoints of the executor's hash chains (package
	// auditchain); nil writes them unsigned.
	Signer *keys.Signer
	// CheckpointInterval is how often each partition's chains changed
	// since their last checkpoint are checkpointed (default 10s).
	CheckpointInterval time.Duration
}

type executor struct {
	cfg    Config
	holder string // the name its leases and grants are held under
	log    *slog.Logger
	names  topics.Names
	claims *claims.Claims
	slots  chan struct{}

	mu    sync.Mutex
	parts map[int32]*partition // owned partitions of the commands topic
	// badClaims holds unusable claims records until the owner of the same
	// partition number of commands sets them aside.
	badClaims deadletter.Pending

	stop context.CancelCauseFunc // ends Run with an error
}

// partition is what the executor holds for one owned partition.
type partition struct {
	id       int32
	ctx      context.Context // ended when the partition is revoked, or the executor stops
	cancel   context.CancelFunc
	w        *writer
	commands *logtable.Table[records.Command]
	ops      *logtable.Table[records.OperationEvent]
	tables   sync.WaitGroup // the tables' and the writer's goroutines
	wg       sync.WaitGroup // operations running for it
	// inherited is when the previous owner's lease lapses: an operation it
	// had in flight is resumed only after it.
	inherited time.Time

	// guarded by executor.mu
	ready     bool                              // both tables read: commands are handled
	written   map[string]records.OperationEvent // events written and not yet read back by ops, by target
	running   map[string]bool                   // command IDs being carried out
	leaseEnds time.Time                         // the lease's end, on this executor's clock
}

// Run runs the executor until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.LeaseClock == nil {
		cfg.LeaseClock = clockwork.NewRealClock()
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Minute
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 15 * time.Second
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = 10 * time.Second
	}
	if cfg.Drivers == nil {
		return errors.New("executor: no drivers registered")
	}
	// Every client of the executor counts in its Kafka metrics.
	cfg.Backbone.ClientOpts = slices.Concat(cfg.Backbone.ClientOpts, cfg.Metrics.ClientOpts())
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	e := &executor{
		holder: cmp.Or(cfg.InstanceID, Principal),
		stop:   cancel,
		cfg:    cfg,
		log:    cfg.Backbone.Log().With("service", "executor", "instance", cfg.InstanceID),
		names:  cfg.Backbone.Names(),
		slots:  make(chan struct{}, cfg.Concurrency),
		parts:  map[int32]*partition{},
	}
	go func() {
		// Acting on a log recreated empty would undo what it records.
		if err := backbone.WatchTopics(ctx, cfg.Backbone, e.names.Commands, e.names.Operations, e.names.Claims, e.names.Leases); err != nil {
			cancel(fmt.Errorf("executor: %w", err))
		}
	}()
	e.claims = claims.New(e.names.Claims, cfg.Backbone.Opts(), e.log, claims.OnUnusable(e.unusableClaim))
	claimsErr := make(chan error, 1)
	go func() { claimsErr <- e.claims.Run(ctx) }()
	if err := e.claims.WaitReady(ctx); err != nil {
		if parent.Err() != nil {
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("executor: %w", err)
	}

	// The group only shares out the partitions of commands: each
	// partition's own tables read them.
	opts := append([]kgo.Opt{
		kgo.ConsumerGroup(e.names.Group("executor")),
		kgo.ConsumeTopics(e.names.Commands),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
	}, e.cfg.Backbone.StaticMember(e.names.Group("executor"), cfg.InstanceID, func(err error) { cancel(fmt.Errorf("executor: %w", err)) })...)
	opts = append(opts, backbone.OwnPartitions(e.names.Commands, func(ps []int32) { e.assigned(ctx, ps) }, e.revoked)...)
	group, err := cfg.Backbone.Client(opts...)
	if err != nil {
		return err
	}
	defer func() {
		e.revokeAll()
		group.Close()
	}()
	group.PauseFetchTopics(e.names.Commands)
	go func() {
		for ctx.Err() == nil {
			if group.PollFetches(ctx).IsClientClosed() {
				return
			}
		}
	}()
	go e.sweepEvery(ctx, time.Minute)
	e.log.Info("executor started", "concurrency", cfg.Concurrency, "lease", cfg.Lease)
	select {
	case err := <-claimsErr:
		if parent.Err() != nil {
			return nil
		}
		// Without the claims it cannot know who holds a cluster.
		return fmt.Errorf("executor: %w", err)
	case <-ctx.Done():
		if parent.Err() != nil {
			return nil // asked to stop
		}
		return context.Cause(ctx)
	}
}

// assigned takes over newly owned partitions. kgo calls it before the
// member is given more; the partitions are taken over in parallel.
func (e *executor) assigned(ctx context.Context, partitions []int32) {
	var wg sync.WaitGroup
	for _, p := range partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.takeOver(ctx, p); err != nil && ctx.Err() == nil {
				// Without its record of what it did, the executor must
				// not act: it stops, leaving the group, and its
				// partitions go to another copy or to its own restart.
				e.stop(fmt.Errorf("executor: take over partition %d of %s: %w", p, e.names.Commands, err))
			}
		}()
	}
	wg.Wait()
	if len(partitions) > 0 && ctx.Err() == nil {
		e.log.Info("partitions assigned", "partitions", partitions)
	}
}

// takeOver fences the partition's previous owner, reads its lease, takes
// the lease, rebuilds the partition's tables and starts its commands.
func (e *executor) takeOver(ctx context.Context, p int32) error {
	pctx, cancel := context.WithCancel(ctx)
	part := &partition{id: p, ctx: pctx, cancel: cancel, written: map[string]records.OperationEvent{}, running: map[string]bool{}}
	ok := false
	defer func() {
		if !ok {
			cancel()
			part.tables.Wait()
		}
	}()
	w, err := newWriter(pctx, e.cfg.Backbone, fmt.Sprintf("%s-%d", e.names.Group("executor"), p))
	if err != nil {
		return err
	}
	fencedAt := e.cfg.LeaseClock.Now()
	w.chains = auditchain.New(auditchain.Executor, e.cfg.Signer)
	w.operations, w.checkpoints = e.names.Operations, e.names.Checkpoints
	w.checkpointEvery, w.now = e.cfg.CheckpointInterval, e.cfg.Clock.Now
	part.w = w
	part.tables.Add(1)
	go func() {
		defer part.tables.Done()
		if err := w.run(pctx); err != nil {
			e.lost(part, err)
		}
	}()
	// Without a lease on record no executor has acted on the partition
	// under one: there is nothing to wait for.
	var badLeases []*kgo.Record
	var badReasons []error
	err = logtable.ReadToEnd(pctx, e.cfg.Backbone.Opts(), e.names.Leases, nil, func(r *kgo.Record) {
		if string(r.Key) != records.LeaseKey(p) || r.Value == nil {
			// A record under no partition's lease key is set aside by
			// the owner of the same partition number of commands.
			if r.Partition == p && !isLeaseKey(r.Key) {
				badLeases, badReasons = append(badLeases, r), append(badReasons, fmt.Errorf("not keyed by a partition of %s (commands-N): %q", e.names.Commands, r.Key))
			}
			return
		}
		prev, err := records.DecodeLeaseRecord(r.Value)
		if err == nil && prev.Partition != p {
			err = fmt.Errorf("the lease of partition %d is keyed %q", prev.Partition, r.Key)
		}
		if err != nil {
			badLeases, badReasons = append(badLeases, r), append(badReasons, err)
			return
		}
		part.inherited = fencedAt.Add(prev.Duration)
		if byRecord := prev.RenewedAt.Add(prev.Duration + clockSkew); byRecord.Before(part.inherited) {
			part.inherited = byRecord
		}
	})
	if err != nil {
		return fmt.Errorf("read the lease: %w", err)
	}
	for i, r := range badLeases {
		e.setAside(part, r, badReasons[i])
	}
	// Taking the lease is retried like every write: a broker moving a
	// leader makes the first write wait for fresh metadata.
	if err := e.retry(pctx, e.log.With("partition", p), "take the lease", func() error {
		err := e.renew(part)
		if backbone.FencedTxnError(err) {
			return fmt.Errorf("%w: %w", errWriterClosed, err) // no retry
		}
		return err
	}); err != nil {
		return fmt.Errorf("take the lease: %w", err)
	}

	// The chains of the partition's operation records are rebuilt from
	// its checkpoints (first: they say how each chain's keys are split)
	// and from the operations table's read, before anything is written.
	if err := logtable.ReadToEnd(pctx, e.cfg.Backbone.Opts(), e.names.Checkpoints, []int32{p}, func(r *kgo.Record) {
		if cp, err := records.DecodeCheckpoint(r.Value); err == nil && r.Value != nil {
			w.chains.ObserveCheckpoint(cp)
		}
	}); err != nil {
		return fmt.Errorf("read the checkpoints: %w", err)
	}
	setAside := func(r *kgo.Record, err error) { e.setAside(part, r, err) }
	part.ops = logtable.New(e.names.Operations, e.cfg.Backbone.Opts(), func(r *kgo.Record) (records.OperationEvent, error) {
		ev, err := records.DecodeOperationEvent(r.Value)
		if err == nil {
			err = keyedByTarget(r, ev.WorkflowID, ev.ClusterID)
		}
		return ev, err
	}, logtable.Partitions[records.OperationEvent](p), logtable.WithLogger[records.OperationEvent](e.log), logtable.OnDecodeError[records.OperationEvent](setAside),
		logtable.OnRecord[records.OperationEvent](func(r *kgo.Record, ready bool) {
			if !ready { // after, the records are the writer's own
				w.chains.Observe(auditchain.Operations, r)
			}
		}),
		logtable.OnChange(func(key string, ev records.OperationEvent, deleted bool) {
			// Read back: the table has it now, written need not hold it.
			e.mu.Lock()
			if w, ok := part.written[key]; ok && !deleted && w.Envelope.ID == ev.Envelope.ID {
				delete(part.written, key)
			}
			e.mu.Unlock()
		}))
	part.commands = logtable.New(e.names.Commands, e.cfg.Backbone.Opts(), func(r *kgo.Record) (records.Command, error) {
		cmd, err := records.DecodeCommand(r.Value)
		if err == nil {
			err = keyedByTarget(r, cmd.WorkflowID, cmd.ClusterID)
		}
		if err == nil && (cmd.ID == "" || cmd.Attempt < 1) {
			err = fmt.Errorf("command %q for %s has no ID or attempt %d", cmd.ID, cmd.ClusterID, cmd.Attempt)
		}
		return cmd, err
	}, logtable.Partitions[records.Command](p), logtable.WithLogger[records.Command](e.log), logtable.OnDecodeError[records.Command](setAside),
		logtable.OnChange(func(key string, cmd records.Command, deleted bool) {
			if deleted {
				e.forget(part, key)
				return
			}
			e.handle(part, cmd)
		}))
	for _, t := range []interface{ Run(context.Context) error }{part.ops, part.commands} {
		part.tables.Add(1)
		go func() {
			defer part.tables.Done()
			if err := t.Run(pctx); err != nil && pctx.Err() == nil {
				e.lost(part, err)
			}
		}()
	}
	if err := part.ops.WaitReady(pctx); err != nil {
		return err
	}
	if err := part.commands.WaitReady(pctx); err != nil {
		return err
	}
	w.linked.Store(true)
	e.mu.Lock()
	e.parts[p] = part
	part.ready = true // from now on new commands are handled as they come
	e.mu.Unlock()
	ok = true
	go e.renewEvery(part)
	for _, rec := range e.badClaims.Take(e.names.DeadLetters, Principal, []int32{p}, e.cfg.Clock.Now(), e.letterFailed) {
		e.writeLetter(part, rec)
	}
	// The keys, not a copy of the tables: a week of commands is large.
	for _, key := range part.commands.Keys() {
		if cmd, ok := part.commands.Get(key); ok {
			e.handle(part, cmd)
		}
	}
	// Commands removed while no one owned the partition, or before their
	// operation record was read: theirs go now.
	var orphans []string
	for _, key := range part.ops.Keys() {
		if _, ok := part.commands.Get(key); !ok {
			orphans = append(orphans, key)
		}
	}
	e.forget(part, orphans...)
	e.sweep(part)
	return nil
}

// forget tombstones the operation record of a command the planner
// removed (a finished workflow's, after its retention): the executor,
// the operations topic's one writer, removes the answer with the
// question, and so holds only what is still to do. The cluster's history
// keeps what the operation did. A write that fails is retried by the next
// owner of the partition, which finds the record orphaned.
func (e *executor) forget(part *partition, keys ...string) {
	e.mu.Lock()
	ready := part.ready
	for _, key := range keys {
		delete(part.written, key)
	}
	e.mu.Unlock()
	if !ready {
		return // the take-over looks for orphans once both tables are read
	}
	var tombstones []*kgo.Record
	for _, key := range keys {
		if ev, ok := part.ops.Get(key); ok {
			rec := &kgo.Record{Topic: e.names.Operations, Key: []byte(key)}
			auditchain.Tag(rec, ev.WorkflowID)
			tombstones = append(tombstones, rec)
		}
	}
	if len(tombstones) == 0 {
		return
	}
	go func() { // not on the table's goroutine, which delivers the commands
		if err := part.w.write(part.ctx, tombstones...); err != nil && part.ctx.Err() == nil {
			e.log.Warn("could not remove the operation records of removed commands; the partition's next owner will", "records", len(tombstones), "err", err)
		}
	}()
}

// keyedByTarget checks that a record about a target is keyed by it.
func keyedByTarget(r *kgo.Record, workflowID, clusterID string) error {
	if want := topics.TargetKey(workflowID, clusterID); string(r.Key) != want {
		return fmt.Errorf("record for %s is keyed %q", want, r.Key)
	}
	return nil
}

// setAside puts a record of the partition's commands or operations that
// cannot be used on the dead-letter topic, with the reason: processing
// goes on without it, and the notifier announces it.
func (e *executor) setAside(part *partition, r *kgo.Record, reason error) {
	e.log.Warn("setting aside a record that cannot be used", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", reason)
	rec, err := deadletter.Record(e.names.DeadLetters, Principal, r, reason, e.cfg.Clock.Now())
	if err != nil {
		e.letterFailed(r, err)
		return
	}
	e.writeLetter(part, rec)
}

// writeLetter writes a dead letter through the partition's writer.
func (e *executor) writeLetter(part *partition, letter *kgo.Record) {
	if err := part.w.write(part.ctx, letter); err != nil && part.ctx.Err() == nil {
		e.log.Error("could not set a record aside", "dead letter", string(letter.Key), "err", err)
	}
}

// letterFailed logs a record that could not be set aside.
func (e *executor) letterFailed(src *kgo.Record, err error) {
	e.log.Error("could not set a record aside", "topic", src.Topic, "partition", src.Partition, "offset", src.Offset, "err", err)
}

// unusableClaim is told of a claims record that cannot be used. Every
// executor reads every claim; the owner of the same partition number of
// commands sets it aside, now or when it takes that partition over.
func (e *executor) unusableClaim(r *kgo.Record, reason error) {
	e.log.Warn("a claim record cannot be used", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", reason)
	e.badClaims.Add(r, reason)
	go func() { // not on the table's goroutine, which must not wait for e.mu
		e.mu.Lock()
		part := e.parts[r.Partition]
		e.mu.Unlock()
		if part == nil {
			return
		}
		for _, rec := range e.badClaims.Take(e.names.DeadLetters, Principal, []int32{part.id}, e.cfg.Clock.Now(), e.letterFailed) {
			e.writeLetter(part, rec)
		}
	}()
}

// isLeaseKey reports whether key is records.LeaseKey of some partition.
func isLeaseKey(key []byte) bool {
	n, ok := strings.CutPrefix(string(key), "commands-")
	p, err := strconv.ParseInt(n, 10, 32)
	return ok && err == nil && p >= 0 && records.LeaseKey(int32(p)) == string(key)
}

// lost stops the executor when a partition's writer or tables fail: it
// cannot know what it did, or record what it does, anymore.
func (e *executor) lost(part *partition, err error) {
	if backbone.FencedTxnError(err) {
		err = fmt.Errorf("fenced: another executor has taken partition %d over: %w", part.id, err)
	}
	e.stop(fmt.Errorf("executor: partition %d: %w", part.id, err))
}

// renew writes the partition's lease and, once it is committed, moves the
// lease's end to a lease after the renewal was sent.
func (e *executor) renew(part *partition) error {
	sent := e.cfg.LeaseClock.Now()
	lease := records.LeaseRecord{
		Envelope:  records.Envelope{ID: uuid.NewString(), Time: sent.UTC(), Principal: Principal},
		Partition: part.id, Holder: e.holder, RenewedAt: sent.UTC(), Duration: e.cfg.Lease,
	}
	value, err := records.Encode(lease)
	if err != nil {
		return err
	}
	// A renewal may take until the lease it renews ends (a third of the
	// lease at least, as when the lease is first taken).
	e.mu.Lock()
	left := part.leaseEnds.Sub(sent)
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(part.ctx, max(left, e.cfg.Lease/3))
	defer cancel()
	if err := part.w.write(ctx, &kgo.Record{Topic: e.names.Leases, Key: []byte(records.LeaseKey(part.id)), Value: value}); err != nil {
		return err
	}
	e.mu.Lock()
	part.leaseEnds = sent.Add(e.cfg.Lease)
	e.mu.Unlock()
	return nil
}

// renewEvery renews the partition's lease every third of it until the
// partition is revoked. If the lease ends before a renewal succeeds, the
// executor stops: its operations may no longer act, and the partition's
// work restarts from the log.
func (e *executor) renewEvery(part *partition) {
	ticker := e.cfg.LeaseClock.NewTicker(e.cfg.Lease / 3)
	defer ticker.Stop()
	for {
		select {
		case <-part.ctx.Done():
			return
		case <-ticker.Chan():
		}
		// A failed renewal is tried again at once, with a short backoff,
		// until the lease ends: a coordinator moving or a broker
		// restarting must not cost the partition.
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
			err := e.renew(part)
			if part.ctx.Err() != nil {
				return
			}
			if err == nil {
				break
			}
			if backbone.FencedTxnError(err) || errors.Is(err, errWriterClosed) {
				e.lost(part, err)
				return
			}
			if e.fence(part) != nil {
				e.lost(part, fmt.Errorf("could not renew the lease before it ended: %w", err))
				return
			}
			e.log.Warn("could not renew the lease; retrying", "partition", part.id, "err", err)
			select {
			case <-part.ctx.Done():
				return
			case <-e.cfg.LeaseClock.After(backoff):
			}
		}
	}
}

// fence reports whether the executor still holds the partition's lease
// now: the check drivers make before each change (drivers.Request.Fence).
// It compares times rather than waiting for a timer, so that a process
// resumed after being frozen past its lease sees at once that it lapsed.
func (e *executor) fence(part *partition) error {
	if err := part.ctx.Err(); err != nil {
		return fmt.Errorf("partition %d is no longer owned: %w", part.id, drivers.ErrFenced)
	}
	e.mu.Lock()
	ends := part.leaseEnds
	e.mu.Unlock()
	if now := e.cfg.LeaseClock.Now(); !now.Before(ends) {
		return fmt.Errorf("the lease on partition %d ended at %s: %w", part.id, ends.UTC().Format(time.RFC3339Nano), drivers.ErrFenced)
	}
	return nil
}

// sweepEvery releases, every interval, the claims left behind in the
// partitions owned.
func (e *executor) sweepEvery(ctx context.Context, interval time.Duration) {
	ticker := e.cfg.Clock.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.Chan():
		}
		e.mu.Lock()
		parts := slices.Collect(maps.Values(e.parts))
		e.mu.Unlock()
		for _, part := range parts {
			e.sweep(part)
		}
	}
}

// sweep releases the live claims of a partition's commands that no
// operation of this executor is carrying out or waiting to: the owner of
// the partition is the only one acting on its commands, so such a claim
// was left behind (by an owner that stopped after recording the outcome,
// or before its command was superseded) and would hold its cluster
// forever.
func (e *executor) sweep(part *partition) {
	for _, c := range e.claims.Live() {
		if c.CommandPartition != part.id {
			continue
		}
		e.mu.Lock()
		active := part.running[c.CommandID]
		e.mu.Unlock()
		if active {
			continue
		}
		if err := e.claims.Release(part.ctx, part.w.write, c.ClusterID, c.CommandID); err != nil && part.ctx.Err() == nil {
			e.log.Warn("could not release a claim left behind", "cluster", c.ClusterID, "command", c.CommandID, "err", err)
		}
	}
}

// revoked stops the operations of lost partitions and forgets them: their
// next owner resumes them from the log.
func (e *executor) revoked(partitions []int32) {
	var gone []*partition
	e.mu.Lock()
	for _, p := range partitions {
		if part := e.parts[p]; part != nil {
			gone = append(gone, part)
			delete(e.parts, p)
		}
	}
	e.mu.Unlock()
	for _, part := range gone {
		part.cancel()
		part.wg.Wait()
		part.tables.Wait()
	}
}

func (e *executor) revokeAll() {
	e.mu.Lock()
	ps := slices.Collect(maps.Keys(e.parts))
	e.mu.Unlock()
	e.revoked(ps)
}

// last returns the latest operation event of a target: the one this
// executor wrote, which the table may not have read back yet, else the
// table's.
func (e *executor) last(part *partition, key string) (records.OperationEvent, bool) {
	if ev, ok := part.written[key]; ok {
		return ev, true
	}
	return part.ops.Get(key)
}

// handle starts, resumes or skips one command.
func (e *executor) handle(part *partition, cmd records.Command) {
	key := topics.TargetKey(cmd.WorkflowID, cmd.ClusterID)
	e.mu.Lock()
	defer e.mu.Unlock()
	if !part.ready || part.ctx.Err() != nil || part.running[cmd.ID] {
		return // being taken over (it is in the snapshot), revoked, or running
	}
	last, seen := e.last(part, key)
	switch {
	case seen && last.CommandID == cmd.ID && last.Status.Terminal():
		return // done before
	case seen && last.CommandID != cmd.ID && last.Attempt > cmd.Attempt:
		return // superseded by a later attempt, which ran: never run it again
	}
	var started *records.OperationEvent // set when resuming
	if seen && last.CommandID == cmd.ID && last.Status == records.OperationStarted {
		started = &last
	}
	part.running[cmd.ID] = true
	part.wg.Add(1)
	go func() {
		defer e.done(part, cmd.ID)
		e.carryOut(part, key, cmd, started)
	}()
}

func (e *executor) done(part *partition, commandID string) {
	e.mu.Lock()
	delete(part.running, commandID)
	e.mu.Unlock()
	part.wg.Done()
}

// retry calls fn until it succeeds or ctx ends, backing off between
// attempts: a write fails only while the broker is away.
func (e *executor) retry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := fn()
		if err == nil || ctx.Err() != nil || errors.Is(err, errWriterClosed) {
			return err
		}
		log.Warn("could not "+what+"; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.cfg.LeaseClock.After(backoff):
		}
	}
}

// carryOut claims the cluster, records the start of the operation,
// applies it through the cluster's driver and records the outcome.
// started is the "started" event of an attempt being resumed, nil for a
// new one. If the partition is revoked or the executor stops meanwhile, it
// records nothing more: the next owner resumes from the "started" record.
func (e *executor) carryOut(part *partition, key string, cmd records.Command, started *records.OperationEvent) {
	log := e.log.With("workflow", cmd.WorkflowID, "cluster", cmd.ClusterID, "command", cmd.ID)
	ctx := part.ctx
	if started != nil {
		// Its previous owner may still be carrying it out until its
		// lease lapses (a frozen process that has not noticed yet).
		if wait := part.inherited.Sub(e.cfg.LeaseClock.Now()); wait > 0 {
			log.Info("waiting for the previous owner's lease to lapse before resuming", "until", part.inherited.UTC())
			select {
			case <-ctx.Done():
				return
			case <-e.cfg.LeaseClock.After(wait):
			}
		}
	}
	// Waiting for the cluster does not count against the timeout, nor
	// hold a slot.
	req := records.ClaimRecord{
		Envelope:  records.Envelope{ID: uuid.NewString(), Time: e.cfg.Clock.Now().UTC(), Principal: Principal, CausationID: cmd.ID},
		ClusterID: cmd.ClusterID, CommandID: cmd.ID, WorkflowID: cmd.WorkflowID, CommandPartition: part.id,
	}
	var held records.ClaimRecord
	if err := e.retry(ctx, log, "claim the cluster", func() (err error) {
		held, err = e.claims.Acquire(ctx, part.w.write, req)
		return err
	}); err != nil {
		return // revoked or stopping: the next owner carries it out
	}
	select {
	case e.slots <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-e.slots }()
	// Acting from here: in flight until it returns, with an outcome once
	// one is recorded.
	acting, ended := time.Now(), ""
	e.cfg.Metrics.Started()
	defer func() { e.cfg.Metrics.Ended(ended, time.Since(acting)) }()

	// The grant: its offset is the attempt's fencing token.
	grant, err := e.claims.Grant(held, e.holder)
	if err != nil {
		log.Error("cannot grant the claim", "err", err)
		return
	}
	if err := e.retry(ctx, log, "grant the claim", func() error { return part.w.write(ctx, grant) }); err != nil {
		return
	}
	token := grant.Offset

	outcome := e.event(cmd, records.OperationSucceeded, token)
	outcome.Envelope.CausationID = cmd.ID
	timeout := e.cfg.Timeout // the operator's limit caps the rollout's
	if cmd.Timeout > 0 && cmd.Timeout < timeout {
		timeout = cmd.Timeout
	}
	deadline := e.cfg.Clock.Now().Add(timeout)
	if started != nil && !started.Deadline.IsZero() {
		deadline = started.Deadline // a resumed attempt has what is left of its time
	}
	opCtx, cancel := context.WithTimeout(ctx, deadline.Sub(e.cfg.Clock.Now()))
	defer cancel()
	d, err := e.cfg.Drivers.Driver(cmd.Cluster.Driver)
	if err == nil {
		if started == nil {
			ev := e.event(cmd, records.OperationStarted, token)
			ev.PreviousVersion = cmd.Cluster.Version
			ev.Deadline = deadline
			err = e.readBefore(opCtx, d, cmd, &ev)
			if ctx.Err() != nil {
				return // revoked or stopping: the next owner starts it afresh
			}
			if err == nil {
				if err := e.retry(ctx, log, "record the start", func() error { return e.record(part, key, ev) }); err != nil {
					return // not started: the next owner starts it
				}
				started = &ev
			}
		} else {
			log.Info("resuming an operation started before a restart")
		}
	}
	if started != nil {
		// What the cluster had before is what the start recorded: a
		// resumed attempt may find it changed already.
		outcome.PreviousConfig, outcome.PreviousUnset = started.PreviousConfig, started.PreviousUnset
	}
	if err == nil && opCtx.Err() != nil && started != nil {
		// A resumed attempt whose time has run out does not start
		// again; but its previous owner may have carried it out before it
		// stopped, so the driver is asked, without acting, whether it did.
		confirmCtx, cancelConfirm := context.WithTimeout(ctx, confirmTimeout)
		res, cerr := d.Apply(confirmCtx, drivers.Request{
			CommandID: cmd.ID, Attempt: cmd.Attempt, Cluster: cmd.Cluster, Operation: cmd.Operation, ConfirmOnly: true,
			FencingToken: token, Fence: func() error { return e.fence(part) },
		})
		cancelConfirm()
		if ctx.Err() != nil {
			return
		}
		if cerr == nil {
			log.Info("a resumed attempt past its deadline had been carried out: confirmed")
			outcome.PreviousVersion, outcome.Version, outcome.Output = res.PreviousVersion, res.Version, res.Output
		} else {
			err = fmt.Errorf("%w (the driver could not confirm it was carried out: %v)", opCtx.Err(), cerr)
		}
		goto recorded
	}
	if err == nil {
		err = opCtx.Err() // a new attempt whose time has run out does not start
	}
	if err == nil {
		var res drivers.Result
		res, err = d.Apply(opCtx, drivers.Request{
			CommandID: cmd.ID, Attempt: cmd.Attempt, Cluster: cmd.Cluster, Operation: cmd.Operation,
			FencingToken: token, Fence: func() error { return e.fence(part) },
		})
		if ctx.Err() != nil {
			return // revoked or stopping: the next owner resumes
		}
		if errors.Is(err, drivers.ErrFenced) {
			// Not a failure of the operation: this executor may no
			// longer act, and whoever holds the cluster now records it.
			e.lost(part, fmt.Errorf("operation %s on %s: %w", cmd.ID, cmd.ClusterID, err))
			return
		}
		outcome.PreviousVersion, outcome.Version, outcome.Output = res.PreviousVersion, res.Version, res.Output
	}
recorded:
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	if err != nil {
		outcome.Status = records.OperationFailed
		outcome.Reason = err.Error()
	}
	outcome.Envelope.Time = e.cfg.Clock.Now().UTC() // when the operation ended, not when it began
	// The outcome and the release commit together: no claim is left
	// behind by a crash in between.
	if err := e.retry(ctx, log, "record the outcome", func() error {
		return e.record(part, key, outcome, e.claims.ReleaseRecord(cmd.ClusterID, cmd.ID))
	}); err != nil {
		return // the next owner resumes it, and the driver confirms
	}
	ended = metrics.Succeeded
	if outcome.Status == records.OperationFailed {
		ended = metrics.Failed
	}
	log.Info("operation finished", "status", outcome.Status, "reason", outcome.Reason)
}

// readBefore reads the cluster, once, before an operation acts on it:
//
//   - for a config operation, through the driver's Snapshot when it has
//     one, what the operation's keys are now, recorded in the started
//     event ev so that the operation can be undone; if they cannot be
//     read, the operation must not act;
//   - for an operation with expectations (ExpectVersion, ExpectConfig: a
//     rollback must not undo a change made since the one it undoes),
//     whether the cluster is as expected. The version is read through
//     Snapshot, else the driver's probe; what cannot be read is not held
//     against the cluster (a broken cluster, which a rollback may heal,
//     may not answer).
func (e *executor) readBefore(ctx context.Context, d drivers.Driver, cmd records.Command, ev *records.OperationEvent) error {
	op := cmd.Operation
	config := op.Kind == rollout.Config
	expects := op.ExpectVersion != "" || len(op.ExpectConfig) > 0
	s, ok := d.(drivers.Snapshotter)
	var snap drivers.Snapshot
	read := false
	if ok && (config || expects) {
		var err error
		snap, err = s.Snapshot(ctx, drivers.Request{CommandID: cmd.ID, Cluster: cmd.Cluster, Operation: op})
		if err == nil && config {
			err = snap.Check(op)
		}
		if err != nil && config {
			return fmt.Errorf("could not record the config of %s before changing it, so left it alone: %w", cmd.ClusterID, err)
		}
		read = err == nil
	}
	if snap.Version == "" && op.ExpectVersion != "" {
		if p, err := e.cfg.Drivers.Prober(cmd.Cluster.Driver); err == nil {
			if obs, err := p.Probe(ctx, cmd.Cluster); err == nil {
				snap.Version = obs.Version
			}
		}
	}
	if op.ExpectVersion != "" && snap.Version != "" && snap.Version != op.ExpectVersion {
		return fmt.Errorf("%s runs %s, not %s as expected: it was changed since, so it was left alone", cmd.ClusterID, snap.Version, op.ExpectVersion)
	}
	for _, k := range slices.Sorted(maps.Keys(op.ExpectConfig)) {
		if cur, set := snap.Config[k]; read && (!set || cur != op.ExpectConfig[k]) {
			return fmt.Errorf("%s has %s=%q, not %q as expected: it was changed since, so it was left alone", cmd.ClusterID, k, cur, op.ExpectConfig[k])
		}
	}
	if read && config {
		if snap.Version != "" {
			ev.PreviousVersion = snap.Version
		}
		ev.PreviousConfig, ev.PreviousUnset = snap.Config, snap.Unset
	}
	return nil
}

func (e *executor) event(cmd records.Command, status records.OperationStatus, token int64) records.OperationEvent {
	return records.OperationEvent{
		Envelope:     records.Envelope{ID: uuid.NewString(), Time: e.cfg.Clock.Now().UTC(), Principal: Principal, CausationID: cmd.Envelope.ID},
		CommandID:    cmd.ID,
		WorkflowID:   cmd.WorkflowID,
		ClusterID:    cmd.ClusterID,
		Attempt:      cmd.Attempt,
		Status:       status,
		Executor:     e.holder,
		FencingToken: token,
	}
}

// record writes an operation event, with other records in the same
// transaction, and returns once it is committed.
func (e *executor) record(part *partition, key string, ev records.OperationEvent, with ...*kgo.Record) error {
	value, err := records.Encode(ev)
	if err != nil {
		return fmt.Errorf("encode operation event: %w", err)
	}
	rec := &kgo.Record{Topic: e.names.Operations, Key: []byte(key), Value: value}
	auditchain.Tag(rec, ev.WorkflowID)
	if err := part.w.write(part.ctx, append([]*kgo.Record{rec}, with...)...); err != nil {
		return fmt.Errorf("produce operation event: %w", err)
	}
	e.mu.Lock()
	part.written[key] = ev
	e.mu.Unlock()
	return nil
}
