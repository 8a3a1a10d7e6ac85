// Package executor is the executor service: it carries out the planner's
// commands on clusters through drivers and records what it did on the
// operations topic.
//
// The executor owns partitions of the commands topic through its consumer
// group. On every assignment it reads the operations it recorded for those
// partitions, then the commands from the log start: a command with a
// finished operation is done; one whose operation was started but never
// finished (the executor died in between) is resumed through the driver,
// which converges and never changes a cluster twice; any other is started.
// It commits no offsets: the log is its only state.
//
// Before it acts on a cluster it claims it (package claims): of the
// operations sent for one cluster, by any planner, one runs at a time and
// the others wait, whichever executors carry them out.
//
// Before it starts a config operation, it reads what the operation's keys
// are set to through the driver, when the driver can ([drivers.Snapshotter]),
// and records that in the "started" event and the outcome, so that a
// rollback can restore them. An operation whose keys could not be read
// fails without acting; a resumed one keeps what its start recorded.
package executor

import (
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
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/claims"
	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// Principal is the name the executor writes its records under.
const Principal = "executor"

// Config configures an executor.
type Config struct {
	Backbone backbone.Config
	Drivers  *drivers.Registry
	Clock    clockwork.Clock
	// Concurrency is the most operations run at once (default 64).
	Concurrency int
	// Timeout bounds one operation (default 30 minutes); past it the
	// operation fails.
	Timeout time.Duration
}

type executor struct {
	cfg    Config
	log    *slog.Logger
	names  topics.Names
	cl     *kgo.Client
	claims *claims.Claims
	slots  chan struct{}
	wg     sync.WaitGroup // every running operation

	mu    sync.Mutex
	parts map[int32]*partition // owned partitions of the commands topic

	stop context.CancelCauseFunc // ends Run with an error
}

// partition is what the executor holds for one owned partition.
type partition struct {
	id      int32
	ctx     context.Context // cancelled when the partition is revoked
	cancel  context.CancelFunc
	wg      sync.WaitGroup                    // operations running for it
	ops     map[string]records.OperationEvent // last event per "workflow/cluster"
	running map[string]string                 // key → ID of the command being carried out
}

// Run runs the executor until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Minute
	}
	if cfg.Drivers == nil {
		return errors.New("executor: no drivers registered")
	}
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	e := &executor{
		stop:  cancel,
		cfg:   cfg,
		log:   cfg.Backbone.Log().With("service", "executor"),
		names: cfg.Backbone.Names(),
		slots: make(chan struct{}, cfg.Concurrency),
		parts: map[int32]*partition{},
	}
	opts := append([]kgo.Opt{
		kgo.ConsumerGroup(e.names.Group("executor")),
		kgo.ConsumeTopics(e.names.Commands),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}, backbone.OwnPartitions(e.names.Commands, func(ps []int32) { e.assigned(ctx, ps) }, e.revoked)...)
	cl, err := cfg.Backbone.Client(opts...)
	if err != nil {
		return err
	}
	e.cl = cl
	defer func() {
		e.wg.Wait()
		cl.Close()
	}()
	e.claims = claims.New(e.names.Claims, cfg.Backbone.Opts(), cl, e.log)
	claimsErr := make(chan error, 1)
	go func() { claimsErr <- e.claims.Run(ctx) }()
	if err := e.claims.WaitReady(ctx); err != nil {
		if parent.Err() != nil {
			return nil
		}
		return fmt.Errorf("executor: %w", err)
	}
	go e.sweepEvery(ctx, time.Minute)
	e.log.Info("executor started", "concurrency", cfg.Concurrency)
	for {
		select {
		case err := <-claimsErr:
			if parent.Err() != nil {
				return nil
			}
			// Without the claims it cannot know who holds a cluster.
			return fmt.Errorf("executor: %w", err)
		default:
		}
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			if parent.Err() != nil {
				return nil // asked to stop
			}
			return context.Cause(ctx)
		}
		fetches.EachError(func(topic string, p int32, err error) {
			e.log.Warn("fetch", "topic", topic, "partition", p, "err", err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Value == nil {
				return
			}
			cmd, err := records.DecodeCommand(r.Value)
			if err != nil {
				e.log.Error("skipping a command that cannot be decoded", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", err)
				return
			}
			e.handle(r.Partition, cmd)
		})
	}
}

// assigned loads the operations recorded for newly owned partitions. kgo
// calls it before fetching of those partitions begins.
func (e *executor) assigned(ctx context.Context, partitions []int32) {
	if len(partitions) == 0 {
		return
	}
	loaded := map[int32]map[string]records.OperationEvent{}
	for _, p := range partitions {
		loaded[p] = map[string]records.OperationEvent{}
	}
	err := logtable.ReadToEnd(ctx, e.cfg.Backbone.Opts(), e.names.Operations, partitions, func(r *kgo.Record) {
		ops := loaded[r.Partition]
		if r.Value == nil {
			delete(ops, string(r.Key))
			return
		}
		ev, err := records.DecodeOperationEvent(r.Value)
		if err != nil {
			e.log.Error("skipping an operation record that cannot be decoded", "partition", r.Partition, "offset", r.Offset, "err", err)
			return
		}
		ops[string(r.Key)] = ev
	})
	if err != nil {
		// Without its record of what it did, the executor must not act:
		// it stops, leaving the group, and its partitions go to another
		// copy or to its own restart.
		e.stop(fmt.Errorf("executor: load the operations of partitions %v: %w", partitions, err))
		return
	}
	e.releaseLeftBehind(ctx, loaded)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range partitions {
		pctx, cancel := context.WithCancel(ctx)
		e.parts[p] = &partition{id: p, ctx: pctx, cancel: cancel, ops: loaded[p], running: map[string]string{}}
	}
	e.log.Info("partitions assigned", "partitions", partitions)
}

// sweepEvery releases, every interval, the claims of operations that have
// ended in the partitions owned: a release that failed (the broker was
// away) would otherwise hold the cluster until the partition moves.
func (e *executor) sweepEvery(ctx context.Context, interval time.Duration) {
	ticker := e.cfg.Clock.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.Chan():
		}
		owned := map[int32]map[string]records.OperationEvent{}
		e.mu.Lock()
		for p, part := range e.parts {
			owned[p] = maps.Clone(part.ops)
		}
		e.mu.Unlock()
		e.releaseLeftBehind(ctx, owned)
	}
}

// releaseLeftBehind releases the claims of the commands of the partitions
// in loaded (their operations, by target) whose operation has ended, or
// been superseded by a later command: left by an executor that stopped,
// or failed to release, after recording the outcome, they would hold
// their cluster forever.
func (e *executor) releaseLeftBehind(ctx context.Context, loaded map[int32]map[string]records.OperationEvent) {
	for _, c := range e.claims.Live() {
		ops, mine := loaded[c.CommandPartition]
		if !mine {
			continue
		}
		last, seen := ops[topics.TargetKey(c.WorkflowID, c.ClusterID)]
		if !seen || (last.CommandID == c.CommandID && !last.Status.Terminal()) {
			continue // not started yet, or running: its command is carried out again
		}
		if err := e.claims.Release(ctx, c.ClusterID, c.CommandID); err != nil {
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
			part.cancel()
			gone = append(gone, part)
			delete(e.parts, p)
		}
	}
	e.mu.Unlock()
	for _, part := range gone {
		part.wg.Wait()
	}
}

// handle starts, resumes or skips one command.
func (e *executor) handle(p int32, cmd records.Command) {
	key := topics.TargetKey(cmd.WorkflowID, cmd.ClusterID)
	e.mu.Lock()
	part := e.parts[p]
	if part == nil {
		e.mu.Unlock()
		return // revoked meanwhile
	}
	last, seen := part.ops[key]
	if seen && last.CommandID == cmd.ID && last.Status.Terminal() {
		e.mu.Unlock()
		return // done before
	}
	if part.running[key] == cmd.ID {
		e.mu.Unlock()
		return // already running
	}
	var started *records.OperationEvent // set when resuming
	if seen && last.CommandID == cmd.ID && last.Status == records.OperationStarted {
		started = &last
	}
	part.running[key] = cmd.ID
	part.wg.Add(1)
	e.wg.Add(1)
	e.mu.Unlock()

	select {
	case e.slots <- struct{}{}:
	case <-part.ctx.Done():
		e.done(part, key, cmd.ID)
		return
	}
	go func() {
		defer func() { <-e.slots }()
		defer e.done(part, key, cmd.ID)
		e.carryOut(part, key, cmd, started)
	}()
}

func (e *executor) done(part *partition, key, commandID string) {
	e.mu.Lock()
	if part.running[key] == commandID {
		delete(part.running, key)
	}
	e.mu.Unlock()
	part.wg.Done()
	e.wg.Done()
}

// carryOut records the start of an operation, applies it through the
// cluster's driver and records the outcome. started is the "started" event
// of an attempt being resumed, nil for a new one. If the partition is
// revoked or the executor stops meanwhile, it records nothing more: the next
// owner resumes from the "started" record.
func (e *executor) carryOut(part *partition, key string, cmd records.Command, started *records.OperationEvent) {
	log := e.log.With("workflow", cmd.WorkflowID, "cluster", cmd.ClusterID, "command", cmd.ID)
	// Waiting for the cluster does not count against the timeout.
	claim := records.ClaimRecord{
		Envelope:  records.Envelope{ID: uuid.NewString(), Time: e.cfg.Clock.Now().UTC(), Principal: Principal, CausationID: cmd.ID},
		ClusterID: cmd.ClusterID, CommandID: cmd.ID, WorkflowID: cmd.WorkflowID, CommandPartition: part.id,
	}
	if err := e.claims.Acquire(part.ctx, claim); err != nil {
		if part.ctx.Err() == nil {
			log.Warn("could not claim the cluster; not acting", "err", err)
		}
		return // the command is carried out again on the partition's next assignment
	}
	outcome := e.event(cmd, records.OperationSucceeded)
	outcome.Envelope.CausationID = cmd.ID
	timeout := e.cfg.Timeout // the operator's limit caps the rollout's
	if cmd.Timeout > 0 && cmd.Timeout < timeout {
		timeout = cmd.Timeout
	}
	deadline := e.cfg.Clock.Now().Add(timeout)
	if started != nil && !started.Deadline.IsZero() {
		deadline = started.Deadline // a resumed attempt has what is left of its time
	}
	opCtx, cancel := context.WithTimeout(part.ctx, deadline.Sub(e.cfg.Clock.Now()))
	defer cancel()
	d, err := e.cfg.Drivers.Driver(cmd.Cluster.Driver)
	if err == nil {
		if started == nil {
			ev := e.event(cmd, records.OperationStarted)
			ev.PreviousVersion = cmd.Cluster.Version
			ev.Deadline = deadline
			err = e.readBefore(opCtx, d, cmd, &ev)
			if part.ctx.Err() != nil {
				return // revoked or stopping: the next owner starts it afresh
			}
			if err == nil {
				if err := e.record(part, key, ev); err != nil {
					log.Warn("could not record the start; not acting", "err", err)
					return
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
	if err == nil {
		err = opCtx.Err() // a resumed attempt whose time has run out does not start again
	}
	if err == nil {
		var res drivers.Result
		res, err = d.Apply(opCtx, drivers.Request{CommandID: cmd.ID, Cluster: cmd.Cluster, Operation: cmd.Operation})
		if part.ctx.Err() != nil {
			return // revoked or stopping: the next owner resumes
		}
		outcome.PreviousVersion, outcome.Version, outcome.Output = res.PreviousVersion, res.Version, res.Output
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	if err != nil {
		outcome.Status = records.OperationFailed
		outcome.Reason = err.Error()
	}
	outcome.Envelope.Time = e.cfg.Clock.Now().UTC() // when the operation ended, not when it began
	if err := e.record(part, key, outcome); err != nil {
		log.Warn("could not record the outcome; it is resumed after a restart", "err", err)
		return
	}
	log.Info("operation finished", "status", outcome.Status, "reason", outcome.Reason)
	if err := e.claims.Release(part.ctx, cmd.ClusterID, cmd.ID); err != nil {
		log.Warn("could not release the claim on the cluster; the partition's next owner does", "err", err)
	}
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

func (e *executor) event(cmd records.Command, status records.OperationStatus) records.OperationEvent {
	return records.OperationEvent{
		Envelope:   records.Envelope{ID: uuid.NewString(), Time: e.cfg.Clock.Now().UTC(), Principal: Principal, CausationID: cmd.Envelope.ID},
		CommandID:  cmd.ID,
		WorkflowID: cmd.WorkflowID,
		ClusterID:  cmd.ClusterID,
		Attempt:    cmd.Attempt,
		Status:     status,
	}
}

// record writes an operation event and waits until Kafka has it.
func (e *executor) record(part *partition, key string, ev records.OperationEvent) error {
	value, err := records.Encode(ev)
	if err != nil {
		return fmt.Errorf("encode operation event: %w", err)
	}
	rec := &kgo.Record{Topic: e.names.Operations, Key: []byte(key), Value: value}
	if err := e.cl.ProduceSync(part.ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("produce operation event: %w", err)
	}
	e.mu.Lock()
	part.ops[key] = ev
	e.mu.Unlock()
	return nil
}
