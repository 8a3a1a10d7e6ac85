// Package planner is the planner service: the shell around the pure
// decision core (package decide). It consumes requests and operation
// events through its consumer group, follows the inventory, health and
// deployment policy tables, and writes workflow rows and commands in one
// Kafka transaction per batch with a stable transactional ID.
//
// The requests, workflows, commands and operations topics are
// co-partitioned by workflow ID (see topics.Partitioner), so the planner
// that owns partition p of requests and operations owns the workflows of
// partition p: on assignment it rebuilds them from the workflows topic,
// on revocation it forgets them.
package planner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/auditchain"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/deadletter"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// Config configures a planner.
type Config struct {
	Backbone backbone.Config
	Clock    clockwork.Clock
	// InstanceID makes the transactional ID of this copy of the planner;
	// it must be stable across restarts of the copy and differ between copies.
	InstanceID string
	// StaticMembership makes InstanceID this copy's identity in its
	// consumer group too (backbone.StaticMember): restarted after a crash,
	// it takes its partitions back at once; stopped, it holds them for the
	// session timeout.
	StaticMembership bool
	// PollInterval is the longest the planner waits for records before it
	// looks at health changes and deadlines (default 100ms).
	PollInterval time.Duration
	// Retention is how long a finished workflow keeps its target rows
	// and commands before they are tombstoned (decide.State.Retention):
	// 0 means DefaultRetention, a negative one for ever.
	Retention time.Duration
	// PlanChunk is the most target rows a rollout's plan writes in one
	// transaction (decide.State.PlanChunk; 0 means decide.DefaultPlanChunk).
	PlanChunk int
	// Metrics, if set, records the planner's metrics and its Kafka
	// clients' (package metrics); nil records none.
	Metrics *metrics.Planner
	// Trust says whether requests, inventory and policy records must be
	// signed (package trust), with the trust root and the time window.
	// With Trust.Require, requests are also authorised by the roles of
	// the trust store.
	Trust trust.Config
	// Signer signs the checkpoints of the planner's hash chains (package
	// auditchain); nil writes them unsigned.
	Signer *keys.Signer
	// CheckpointInterval is how often the chains changed since their last
	// checkpoint are checkpointed (default DefaultCheckpointInterval).
	CheckpointInterval time.Duration

	hooks *testHooks // nil but in this package's tests
}

// DefaultCheckpointInterval is how often a writer checkpoints its hash
// chains: how long a record may go without a signed checkpoint covering it.
const DefaultCheckpointInterval = 10 * time.Second

// DefaultRetention is how long a finished workflow keeps its rows: a week
// to look at it, retry it or roll it back.
const DefaultRetention = 7 * 24 * time.Hour

// testHooks let the package's tests see what Run does at points no record
// shows, so that they wait on conditions rather than sleep.
type testHooks struct {
	// loadEnds is told the end offsets a load of partitions captured,
	// before it reads (or waits for open transactions).
	loadEnds func(partitions []int32, ends map[int32]int64)
	// assigned is told the workflows the planner holds once it loaded
	// newly assigned partitions. It is called with the state's lock held.
	assigned func(partitions []int32, workflows map[string]*decide.Workflow)
	// revoked is told the partitions taken from the planner (revoked or
	// lost) and the workflows it holds after dropping theirs, with the
	// state's lock held.
	revoked func(partitions []int32, workflows map[string]*decide.Workflow)
	// ended is told how each transaction that wrote something ended.
	ended func(rows, commands int, committed bool, err error)
	// sessionOpts are added to the options of the planner's session.
	sessionOpts []kgo.Opt
}

type planner struct {
	cfg   Config
	log   *slog.Logger
	names topics.Names
	sess  *kgo.GroupTransactSession
	txnID string
	// topicIDs are the IDs of the topics the planner reads, as it started
	// with them; its transactions name the consumed ones (ProveMembership).
	topicIDs backbone.TopicIDs
	// plain is a client of no group or transaction: it watches the topics
	// and sets records aside.
	plain *kgo.Client
	// badPolicies holds the unusable records of the policies topic, read
	// whole by every copy, until the copy that owns the same partition of
	// requests sets them aside.
	badPolicies deadletter.Pending
	// trust is the trust store; badTrust its ignored records, set aside
	// by the copy that owns partition 0 of requests.
	trust       *trust.Table
	badTrust    deadletter.Pending
	badRequests deadletter.Pending // replays, set aside as they are read
	// seen holds the requests read lately, to refuse a replay of one.
	seen seenRequests

	mu    sync.Mutex // guards state against the rebalance callbacks
	state *decide.State
	// ready is closed once state is built from the tables and the
	// transactional ID is initialised: the rebalance callbacks wait for
	// it, the group being joined meanwhile.
	ready chan struct{}
	owned map[int32]bool
	// parked holds the workflows of the partitions revoked at the start
	// of a rebalance, so that those assigned again with nothing written to
	// them meanwhile are not read again (see assigned).
	parked map[int32]parkedPartition

	changes changeQueue // inventory, health and policy changes from the tables

	stop context.CancelCauseFunc // ends Run with an error

	workflows *workflowGauge // flotilla_planner_workflows

	// chains are the hash chains of the owned workflows' rows and
	// commands (guarded by mu); checkpointed is when they were last
	// checkpointed (the loop's own).
	chains       *auditchain.Chains
	checkpointed time.Time
}

// Run runs the planner until ctx ends, and then returns nil promptly,
// whatever the broker's state: a transaction being ended and the leaving
// of the group get backbone.StopGrace each. It returns an error, to end
// the process, if a table or the planner's partitions cannot be read, or
// if a transaction fails: fenced by another copy with the same InstanceID,
// not authorised, or ended with any other error (see step). Only an abort
// without an error makes it rebuild its state and carry on.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	// Every client of the planner counts in its Kafka metrics.
	cfg.Backbone.ClientOpts = slices.Concat(cfg.Backbone.ClientOpts, cfg.Metrics.ClientOpts())
	p := &planner{
		cfg:       cfg,
		log:       cfg.Backbone.Log().With("service", "planner"),
		names:     cfg.Backbone.Names(),
		owned:     map[int32]bool{},
		ready:     make(chan struct{}),
		workflows: newWorkflowGauge(cfg.Metrics),
		chains:    auditchain.New(auditchain.Planner, cfg.Signer),
	}
	if cfg.CheckpointInterval <= 0 {
		p.cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	caughtUp := func(table string) func(time.Duration) {
		return func(d time.Duration) { cfg.Metrics.ObserveCatchUp(table, d) }
	}
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p.stop = cancel

	// The inventory and health are held once, in the decision state: the
	// tables stream them, the rebuild into these maps (the tables'
	// goroutines' until they are ready), what follows as changes.
	p.trust = trust.NewTable(p.names.Trust, cfg.Backbone.Opts(), cfg.Trust, trust.WithLogger(p.log), trust.OnIgnored(func(r *kgo.Record, err error) {
		p.badTrust.Add(r, err)
		p.mu.Lock()
		owned := p.owned[0]
		p.mu.Unlock()
		if owned {
			go p.setAside(ctx, p.badTrust.Take(p.names.DeadLetters, decide.Principal, []int32{0}, p.cfg.Clock.Now(), p.letterFailed))
		}
	}))
	invSnap, healthSnap := map[string]inventory.Cluster{}, map[string]records.Health{}
	inv := logtable.New(p.names.Inventory, cfg.Backbone.Opts(), p.trust.DecodeCluster, logtable.WithLogger[records.ClusterRecord](p.log), logtable.OnCaughtUp[records.ClusterRecord](caughtUp("inventory")), logtable.Stream(func(key string, v records.ClusterRecord, deleted, loaded bool) {
		switch {
		case loaded:
			p.changes.push(change{key: key, cluster: &v.Cluster, deleted: deleted})
		case deleted:
			delete(invSnap, key)
		default:
			invSnap[key] = v.Cluster
		}
	}))
	health := logtable.New(p.names.Health, cfg.Backbone.Opts(), func(r *kgo.Record) (records.Health, error) {
		return records.DecodeHealth(r.Value)
	}, logtable.WithLogger[records.Health](p.log), logtable.OnCaughtUp[records.Health](caughtUp("health")), logtable.Stream(func(key string, v records.Health, deleted, loaded bool) {
		switch {
		case loaded:
			p.changes.push(change{key: key, health: &v, deleted: deleted})
		case deleted:
			delete(healthSnap, key)
		default:
			healthSnap[key] = v
		}
	}))
	// A policy record that is not usable removes the policy rather than
	// being skipped: the planner then holds the same policies whether or
	// not compaction has removed the key's earlier records.
	policies := logtable.New(p.names.Policies, cfg.Backbone.Opts(), func(r *kgo.Record) (*rollout.Policy, error) {
		rec, err := p.decodePolicy(r)
		if err != nil {
			p.log.Warn("ignoring a deployment policy record", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", err)
			p.badPolicies.Add(r, err)
			p.mu.Lock()
			owned := p.owned[r.Partition]
			p.mu.Unlock()
			if owned {
				go p.setAside(ctx, p.badPolicies.Take(p.names.DeadLetters, decide.Principal, []int32{r.Partition}, p.cfg.Clock.Now(), p.letterFailed))
			}
			return nil, nil
		}
		return &rec.Policy, nil
	}, logtable.WithLogger[*rollout.Policy](p.log), logtable.OnCaughtUp[*rollout.Policy](caughtUp("policies")), logtable.OnChange(func(key string, v *rollout.Policy, deleted bool) {
		p.changes.push(change{key: key, policy: v, deleted: deleted || v == nil, isPolicy: true})
	}))
	// Deciding on a log recreated empty would undo what it records.
	plain, err := cfg.Backbone.Client()
	if err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	defer plain.Close()
	p.plain = plain
	watched := []string{p.names.Requests, p.names.Operations, p.names.Workflows, p.names.Commands,
		p.names.Inventory, p.names.Health, p.names.Policies}
	if cfg.Trust.Require {
		watched = append(watched, p.names.Trust)
	}
	watch, err := backbone.NewTopicWatch(ctx, plain, watched, backbone.WatchLogger(p.log))
	if err != nil {
		if parent.Err() != nil {
			return nil
		}
		return fmt.Errorf("planner: watch topics: %w", err)
	}
	p.topicIDs = watch.IDs()
	go func() {
		if err := watch.Run(ctx); err != nil {
			cancel(fmt.Errorf("planner: %w", err))
		}
	}()
	tableErr := make(chan error, 4)
	go func() { tableErr <- p.trust.Run(ctx) }()
	go func() { tableErr <- inv.Run(ctx) }()
	go func() { tableErr <- health.Run(ctx) }()
	go func() { tableErr <- policies.Run(ctx) }()
	txnID := p.names.Group("planner") + "-" + cfg.InstanceID
	opts := cfg.Backbone.Opts(
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { p.assigned(ctx, m[p.names.Requests]) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			p.revoked(ctx, m[p.names.Requests], true)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			p.revoked(ctx, m[p.names.Requests], false)
		}),
	)
	if cfg.StaticMembership {
		opts = append(opts, cfg.Backbone.StaticMember(p.names.Group("planner"), cfg.InstanceID, func(err error) { cancel(fmt.Errorf("planner: %w", err)) })...)
	}
	opts = append(opts,
		kgo.ConsumerGroup(p.names.Group("planner")),
		kgo.ConsumeTopics(p.names.Requests, p.names.Operations),
		// One member gets the same partition numbers of both topics
		// (they are co-partitioned by workflow ID), and keeps them
		// through rebalances that do not need to move them.
		kgo.Balancers(backbone.CoPartitionedBalancer()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.TransactionalID(txnID),
	)
	if cfg.hooks != nil {
		opts = append(opts, cfg.hooks.sessionOpts...)
	}
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	p.sess = sess
	p.txnID = txnID
	// Closing waits for the group to be left: bounded, so that a planner
	// asked to stop does so promptly even if the broker does not answer.
	defer backbone.CloseSession(sess)
	// Initialising the transactional ID now aborts a transaction that a
	// previous run of this copy left open, which would otherwise hold up
	// the loading of this copy's partitions (see load) until it times out.
	if _, _, err := sess.Client().ProducerID(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return p.txnFailed(fmt.Errorf("initialise transactional ID %s: %w", txnID, err))
	}
	for _, t := range []interface{ WaitReady(context.Context) error }{p.trust, inv, health, policies} {
		if err := t.WaitReady(ctx); err != nil {
			if parent.Err() != nil {
				return nil
			}
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("planner: %w", err)
		}
	}
	p.state = decide.NewState(invSnap, healthSnap)
	healthSnap = nil // copied into the state
	p.state.Retention = max(cfg.Retention, 0)
	p.state.PlanChunk = cfg.PlanChunk
	p.state.Authz = p.trust.Policy()
	p.state.HoldUnfinishedOnly = true // finished workflows' targets are read back when needed
	// Drift corrections are workflows the planner makes itself, on a
	// partition it must own (decide's drift.go): it needs the count.
	listed, err := kadm.NewClient(plain).ListTopics(ctx, p.names.Workflows)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		if parent.Err() != nil {
			return nil
		}
		return fmt.Errorf("planner: partitions of %s: %w", p.names.Workflows, err)
	}
	p.state.Partitions = int32(len(listed[p.names.Workflows].Partitions))
	p.state.Owns = func(part int32) bool { return p.owned[part] } // decided on under p.mu, which guards owned
	for name, pol := range policies.Snapshot() {
		if pol != nil {
			p.state.Policies[name] = *pol
		}
	}
	close(p.ready)
	p.log.Info("planner started", "clusters", len(invSnap), "policies", len(p.state.Policies))

	for {
		select {
		case err := <-tableErr:
			if parent.Err() != nil {
				return nil // asked to stop
			}
			return fmt.Errorf("planner: table: %w", err)
		default:
		}
		wait := cfg.PollInterval
		p.mu.Lock()
		if p.state.Planning() {
			wait = 0 // a rollout's plan is being written: the next chunk now
		}
		p.mu.Unlock()
		pollCtx, cancelPoll := context.WithTimeout(ctx, wait)
		fetches := sess.PollFetches(pollCtx)
		cancelPoll()
		if ctx.Err() != nil {
			if parent.Err() != nil {
				return nil // asked to stop
			}
			return context.Cause(ctx)
		}
		fetches.EachError(func(topic string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				p.log.Warn("fetch", "topic", topic, "partition", part, "err", err)
			}
		})
		if err := p.step(ctx, fetches); err != nil {
			return err
		}
	}
}

// step decides on one batch of records, the table changes queued since
// the last step and the passing of time, and writes the outcome in one
// transaction.
//
// Only a transaction aborted without an error (a rebalance meanwhile, an
// offset commit the group refused as stale) is answered by rebuilding the
// state from the log and carrying on. Any error of the transaction ends
// the planner (see txnFailed): a fenced or failed transactional producer
// cannot commit anymore, and a planner that carried on would keep its
// partitions without ever committing, re-reading everything on every batch.
//
// The state's lock is not held while writing: the session's revocation
// wrapper holds the lock End needs while it calls our revoked callback,
// which takes the state's lock. A revocation meanwhile makes End abort,
// and the state is rebuilt.
func (p *planner) step(ctx context.Context, fetches kgo.Fetches) error {
	polled := time.Now() // wall time, for the metrics: not the decisions' clock
	requests := p.decodeRequests(fetches)
	policies, err := p.policiesFor(ctx, requests)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("read deployment policies: %w", err)
	}
	restored, err := p.targetsFor(ctx, requests)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("read back the targets of finished workflows: %w", err)
	}
	out, copies := p.decideBatch(fetches, requests, policies, restored)
	if out.Empty() && fetches.NumRecords() == 0 && !p.checkpointDue() {
		return nil
	}
	if out.Empty() && fetches.NumRecords() == 0 {
		p.mu.Lock()
		dirty := p.chains.Dirty(p.ownedWorkflow)
		p.mu.Unlock()
		if !dirty {
			p.checkpointed = time.Now()
			return nil
		}
	}
	committed, err := p.write(ctx, out, copies)
	switch {
	case ctx.Err() != nil:
		return nil // stopping: the transaction was aborted, or is left to the restart
	case err != nil:
		return p.txnFailed(err)
	case !committed:
		p.log.Warn("transaction aborted; rebuilding from the log")
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.rebuild(ctx)
	}
	p.mu.Lock()
	p.workflows.committed(out, p.state.Workflows)
	p.mu.Unlock()
	if fetches.NumRecords() > 0 {
		p.cfg.Metrics.ObserveDecision(time.Since(polled))
	}
	return nil
}

// txnFailed is the error that ends the planner after its transaction
// failed with err, saying why when the error says it.
func (p *planner) txnFailed(err error) error {
	switch {
	case backbone.FencedTxnError(err):
		return fmt.Errorf("planner: fenced: a newer producer took transactional ID %s (is another planner running with instance ID %q?); stopping: %w", p.txnID, p.cfg.InstanceID, err)
	case backbone.FatalTxnError(err):
		return fmt.Errorf("planner: transactional ID %s can no longer be used; stopping (a restart initialises it again and aborts the open transaction): %w", p.txnID, err)
	default:
		return fmt.Errorf("planner: transaction failed; stopping, since a transaction that failed leaves the producer unreliable (a restart initialises transactional ID %s again and aborts the open transaction): %w", p.txnID, err)
	}
}

// policiesFor returns the deployment policies read afresh from the log,
// when a rollout in fetches names one the planner does not know; nil
// otherwise. The policies table follows the log on its own, so a rollout
// submitted right after its policy was applied could reach the planner
// first: reading the (small) topic to its end, after the request was
// written, sees every policy applied before it.
func (p *planner) policiesFor(ctx context.Context, requests map[*kgo.Record]decodedRequest) (map[string]rollout.Policy, error) {
	missing := false
	p.mu.Lock()
	for _, d := range requests {
		if d.err == nil && d.req.Submit != nil && d.req.Submit.Spec.Policy != "" {
			_, known := p.state.Policies[d.req.Submit.Spec.Policy]
			missing = missing || !known
		}
	}
	p.mu.Unlock()
	if !missing {
		return nil, nil
	}
	fresh := map[string]rollout.Policy{}
	err := logtable.ReadToEnd(ctx, p.cfg.Backbone.Opts(), p.names.Policies, nil, func(r *kgo.Record) {
		if r.Value == nil {
			delete(fresh, string(r.Key))
			return
		}
		rec, err := p.decodePolicy(r)
		if err != nil {
			delete(fresh, string(r.Key)) // as the table does: see Run
			return
		}
		fresh[string(r.Key)] = rec.Policy
	})
	return fresh, err
}

// decodedRequest is a record of the requests topic, decoded, and why its
// signature was refused, if it was (trust.Table.Check).
type decodedRequest struct {
	req     records.Request
	err     error
	refused error
}

// decodeRequests decodes and verifies the requests of a batch once, for
// policiesFor and decideBatch. It is called without the state's lock: a
// request signed with a key the trust table has not read yet makes it
// read the trust topic.
func (p *planner) decodeRequests(fetches kgo.Fetches) map[*kgo.Record]decodedRequest {
	out := map[*kgo.Record]decodedRequest{}
	fetches.EachRecord(func(r *kgo.Record) {
		if r.Topic == p.names.Requests && r.Value != nil {
			req, err := records.DecodeRequest(r.Value)
			d := decodedRequest{req: req, err: err}
			if err == nil {
				d.refused = p.trust.Check(r, req.Envelope, req.Signature)
			}
			out[r] = d
		}
	})
	return out
}

// decodePolicy decodes a policy record (DecodePolicy) and verifies its
// signature and its principal's right to write policies.
func (p *planner) decodePolicy(r *kgo.Record) (records.PolicyRecord, error) {
	rec, err := DecodePolicy(r)
	if err == nil {
		err = p.trust.CheckPolicy(r, rec)
	}
	return rec, err
}

// targetsFor reads back from the log the targets of the finished
// workflows that requests of the batch need (a retry, a rollback): the
// planner holds unfinished work only (decide.State.HoldUnfinishedOnly). It
// reads only those workflows' partitions of the workflows topic and
// decodes only their rows.
func (p *planner) targetsFor(ctx context.Context, requests map[*kgo.Record]decodedRequest) (map[string][]records.Target, error) {
	need := map[string]bool{}
	var partitions []int32
	p.mu.Lock()
	for _, d := range requests {
		if d.err != nil {
			continue
		}
		if id, ok := p.state.NeedsTargets(d.req); ok && !need[id] {
			need[id] = true
			if part := p.state.Workflows[id].Partition; !slices.Contains(partitions, part) {
				partitions = append(partitions, part)
			}
		}
	}
	p.mu.Unlock()
	if len(need) == 0 {
		return nil, nil
	}
	rows := map[string]records.Target{} // by key
	err := logtable.ReadToEnd(ctx, p.cfg.Backbone.Opts(), p.names.Workflows, partitions, func(r *kgo.Record) {
		key := string(r.Key)
		if r.Value == nil {
			delete(rows, key) // a target compacted away, if it was one of theirs
			return
		}
		under := false
		for id := range need {
			under = under || strings.HasPrefix(key, id+"/")
		}
		if !under {
			return // not a row of those workflows: not decoded
		}
		if rec, err := records.DecodeWorkflowRecord(r.Value); err == nil && rec.Target != nil && need[rec.Target.WorkflowID] {
			rows[key] = *rec.Target
		}
	}, logtable.AwaitOpenTransactions())
	if err != nil {
		return nil, err
	}
	out := map[string][]records.Target{}
	for _, t := range rows {
		out[t.WorkflowID] = append(out[t.WorkflowID], t)
	}
	p.log.Info("read back the targets of finished workflows for a retry or a rollback", "workflows", len(need), "targets", len(rows))
	return out, nil
}

// decideBatch applies the table changes, the records (with their decoded
// requests) and a tick to the state, with policies (if not nil) in place
// of the policies it holds.
//
// It also returns, by index in the outputs' rows, the copy of its request
// that a row keeps (auditchain.RequestHeader): the spec row of an accepted
// rollout, the header row of a rejected request or of a workflow a
// control was applied to.
func (p *planner) decideBatch(fetches kgo.Fetches, requests map[*kgo.Record]decodedRequest, policies map[string]rollout.Policy, restored map[string][]records.Target) (decide.Outputs, map[int]auditchain.RequestCopy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, targets := range restored {
		p.state.Restore(id, targets)
	}
	now := p.cfg.Clock.Now()
	var out decide.Outputs
	copies := map[int]auditchain.RequestCopy{}
	decideOn := func(in decide.Input) {
		o := decide.Decide(p.state, in, now)
		out.Rows = append(out.Rows, o.Rows...)
		out.Commands = append(out.Commands, o.Commands...)
		out.History = append(out.History, o.History...)
		out.Removed = append(out.Removed, o.Removed...)
	}
	for _, c := range p.changes.drain() {
		switch {
		case c.cluster != nil && c.deleted:
			delete(p.state.Inventory, c.key)
			decideOn(decide.InventoryUpdate{ClusterID: c.key})
		case c.cluster != nil:
			p.state.Inventory[c.key] = *c.cluster
			decideOn(decide.InventoryUpdate{ClusterID: c.key})
		case c.health != nil && c.deleted:
			p.state.ForgetHealth(c.key)
		case c.health != nil:
			decideOn(decide.HealthUpdate{Health: *c.health})
		case c.isPolicy && c.deleted:
			delete(p.state.Policies, c.key)
		case c.isPolicy:
			p.state.Policies[c.key] = *c.policy
		}
	}
	if policies != nil {
		p.state.Policies = policies
	}
	p.state.Authz = p.trust.Policy()
	var replays []*kgo.Record
	fetches.EachRecord(func(r *kgo.Record) {
		if !p.owned[r.Partition] {
			return
		}
		switch r.Topic {
		case p.names.Requests:
			d, ok := requests[r]
			if !ok {
				return // a tombstone
			}
			req, err := d.req, d.err
			if err != nil {
				p.log.Warn("rejecting a request that cannot be decoded", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", err)
			}
			key := string(r.Key)
			if key == "" && req.Envelope.ID == "" {
				key = fmt.Sprintf("%s-%d-%d", p.names.Requests, r.Partition, r.Offset)
			}
			if p.trust.Required() && err == nil {
				if why := p.replayed(r, req); why != nil {
					p.log.Warn("setting aside a replayed request", "partition", r.Partition, "offset", r.Offset, "key", key, "err", why)
					p.badRequests.Add(r, why)
					replays = append(replays, r)
					return
				}
			}
			first := len(out.Rows)
			decideOn(decide.Submit{Partition: r.Partition, Key: key, Request: req, Err: err, Refused: d.refused})
			if i := answerRow(out.Rows[first:], key, req); i >= 0 {
				copies[first+i] = auditchain.CopyOf(r, req.Envelope.ID, req.Envelope.Principal, req.Envelope.Time)
			}
		case p.names.Operations:
			if r.Value == nil {
				return
			}
			ev, err := records.DecodeOperationEvent(r.Value)
			if err != nil {
				p.log.Error("skipping an operation event that cannot be decoded", "partition", r.Partition, "offset", r.Offset, "err", err)
				return
			}
			decideOn(decide.OperationUpdate{Event: ev})
		}
	})
	decideOn(decide.Tick{})
	if len(replays) > 0 {
		var parts []int32
		for _, r := range replays {
			if !slices.Contains(parts, r.Partition) {
				parts = append(parts, r.Partition)
			}
		}
		go p.setAside(context.Background(), p.badRequests.Take(p.names.DeadLetters, decide.Principal, parts, now, p.letterFailed))
	}
	return out, copies
}

// answerRow returns the index of the row among rows that keeps the copy of
// request req, keyed key; -1 if none does.
func answerRow(rows []records.WorkflowRecord, key string, req records.Request) int {
	workflow := key
	if req.Control != nil {
		workflow = req.Control.WorkflowID
	}
	header := -1
	for i, row := range rows {
		switch {
		case row.Spec != nil && row.Spec.WorkflowID == workflow && req.Submit != nil:
			return i
		case row.Workflow != nil && row.Workflow.ID == workflow && header < 0:
			header = i
		}
	}
	return header
}

// write produces the outputs and commits them with the consumed offsets.
// It returns whether the transaction committed, and the first error of
// beginning it, of producing in it (the transaction is then aborted) or of
// ending it.
func (p *planner) write(ctx context.Context, out decide.Outputs, copies map[int]auditchain.RequestCopy) (bool, error) {
	if err := p.sess.Begin(); err != nil {
		return false, fmt.Errorf("begin transaction: %w", err)
	}
	promise := kgo.AbortingFirstErrPromise(p.sess.Client())
	// Each record of a workflow's rows and commands is linked into its
	// chain in the order it is produced: rows first, as always (a reader
	// that goes by the records' times sees a row before the commands it
	// sent). The records are linked under the state's lock (the rebalance
	// callbacks rebuild the chains) and produced after it, in that order.
	var recs []*kgo.Record
	p.mu.Lock()
	tx := p.chains.Begin()
	for i, row := range out.Rows {
		key, wf := "", ""
		switch {
		case row.Workflow != nil:
			key, wf = row.Workflow.ID, row.Workflow.ID
		case row.Target != nil:
			key, wf = topics.TargetKey(row.Target.WorkflowID, row.Target.ClusterID), row.Target.WorkflowID
		case row.Spec != nil:
			key, wf = topics.SpecKey(row.Spec.WorkflowID), row.Spec.WorkflowID
		}
		var copied *auditchain.RequestCopy
		if c, ok := copies[i]; ok {
			copied = &c
		}
		recs = p.record(recs, tx, wf, p.names.Workflows, key, row, promise, copied)
	}
	for _, c := range out.Commands {
		recs = p.record(recs, tx, c.WorkflowID, p.names.Commands, topics.TargetKey(c.WorkflowID, c.ClusterID), c, promise, nil)
	}
	for _, h := range out.History {
		recs = p.record(recs, nil, "", p.names.History, topics.HistoryKey(h.Target.ClusterID, h.Target.WorkflowID), h, promise, nil)
	}
	for _, r := range out.Removed {
		key := []byte(topics.TargetKey(r.WorkflowID, r.ClusterID))
		rec := &kgo.Record{Topic: p.names.Workflows, Key: key}
		tx.Append(r.WorkflowID, auditchain.Workflows, rec)
		recs = append(recs, rec)
		if r.Commanded {
			rec := &kgo.Record{Topic: p.names.Commands, Key: key}
			tx.Append(r.WorkflowID, auditchain.Commands, rec)
			recs = append(recs, rec)
		}
	}
	if p.checkpointDue() {
		// Only the owned workflows': a parked partition's chains are kept
		// for when it comes back, and written by its owner meanwhile.
		for _, cp := range tx.Checkpoints(p.cfg.Clock.Now(), p.ownedWorkflow) {
			recs = p.record(recs, nil, "", p.names.Checkpoints, topics.CheckpointKey(cp.WorkflowID, cp.Writer, cp.Bucket), cp, promise, nil)
		}
		p.checkpointed = time.Now()
	}
	p.mu.Unlock()
	for _, rec := range recs {
		p.sess.Produce(ctx, rec, promise.Promise())
	}
	produceErr := promise.Err()
	// A transaction that consumed nothing (decided on time alone) commits
	// the positions again, so that the group fences it if this copy lost
	// its partitions unawares (frozen past its session timeout).
	endCtx := backbone.ProveMembership(ctx, p.positions(), p.topicIDs)
	committed, err := backbone.EndTransactionPromptly(endCtx, p.sess, produceErr == nil)
	if h := p.cfg.hooks; h != nil && h.ended != nil {
		h.ended(len(out.Rows), len(out.Commands), committed, err)
	}
	if !committed || err != nil || produceErr != nil {
		p.mu.Lock()
		tx.Abort()
		p.mu.Unlock()
	}
	switch {
	case err != nil:
		return false, fmt.Errorf("end transaction: %w", err)
	case produceErr != nil:
		return false, fmt.Errorf("produce (the transaction was aborted): %w", produceErr)
	}
	return committed, nil
}

// ownedWorkflow reports whether a workflow is on a partition the planner
// owns. Callers hold p.mu.
func (p *planner) ownedWorkflow(w string) bool {
	return p.owned[topics.PartitionOf(w, p.state.Partitions)]
}

// checkpointDue reports whether the chains are due a checkpoint.
func (p *planner) checkpointDue() bool {
	return time.Since(p.checkpointed) >= p.cfg.CheckpointInterval
}

// positions are the offsets the planner's group has committed for the
// partitions it holds, for ProveMembership; an owned partition with no
// commit yet counts as at offset 0 of requests, which is where the planner
// starts reading a partition with no committed offset anyway.
func (p *planner) positions() map[string]map[int32]kgo.EpochOffset {
	at := p.sess.Client().CommittedOffsets()
	if at == nil {
		at = map[string]map[int32]kgo.EpochOffset{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for part := range p.owned {
		if _, ok := at[p.names.Requests][part]; ok {
			continue
		}
		if _, ok := at[p.names.Operations][part]; ok {
			continue
		}
		if at[p.names.Requests] == nil {
			at[p.names.Requests] = map[int32]kgo.EpochOffset{}
		}
		at[p.names.Requests][part] = kgo.EpochOffset{Epoch: -1, Offset: 0}
	}
	return at
}

// record encodes a record and appends it to recs; with tx, linked into
// workflow's chain; with copied, keeping that copy of its request.
func (p *planner) record(recs []*kgo.Record, tx *auditchain.Txn, workflow, topic, key string, v any, promise *kgo.FirstErrPromise, copied *auditchain.RequestCopy) []*kgo.Record {
	value, err := records.Encode(v)
	if err != nil {
		promise.Promise()(nil, fmt.Errorf("encode %s record %s: %w", topic, key, err))
		return recs
	}
	rec := &kgo.Record{Topic: topic, Key: []byte(key), Value: value}
	if copied != nil {
		auditchain.AddRequestCopy(rec, *copied)
	}
	if tx != nil {
		role := auditchain.Workflows
		if topic == p.names.Commands {
			role = auditchain.Commands
		}
		tx.Append(workflow, role, rec)
	}
	return append(recs, rec)
}

// parkedPartition is what the planner held of a partition it was asked
// to give up in a rebalance: its workflows, and the workflows topic's end
// offset there when it gave them up.
type parkedPartition struct {
	end       int64
	workflows []*decide.Workflow
}

// await waits until the planner is ready (see ready); it reports false if
// ctx ended first.
func (p *planner) await(ctx context.Context) bool {
	select {
	case <-p.ready:
		return true
	case <-ctx.Done():
		return false
	}
}

// assigned makes the planner the owner of the workflows of partitions.
// kgo calls it before fetching of those partitions begins, with only the
// partitions new to the planner: the group's balancer
// (backbone.CoPartitionedBalancer) leaves a member the partitions it keeps
// through a rebalance, so those are neither revoked nor read again. A
// partition the planner gave up and gets back before anything was written
// to it (its end offset, once no transaction is open on it, is the one it
// had then: logtable.StableEnds) gets its workflows back without a read;
// every other is read from the log.
func (p *planner) assigned(ctx context.Context, partitions []int32) {
	if len(partitions) == 0 || !p.await(ctx) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	parked := p.parked
	p.parked = nil
	kept, reload := p.unpark(ctx, parked, partitions)
	if err := p.loadTimed(ctx, reload); err != nil {
		// Without its workflows the planner must not decide: it stops,
		// leaving the group, and its partitions go to another copy or to
		// its own restart.
		p.stop(fmt.Errorf("planner: load the workflows of partitions %v: %w", reload, err))
		return
	}
	if err := p.rememberRequests(ctx, partitions); err != nil {
		p.stop(fmt.Errorf("planner: read the recent requests of partitions %v, to refuse their replays: %w", partitions, err))
		return
	}
	for _, part := range partitions {
		p.owned[part] = true
	}
	p.workflows.recount(p.state.Workflows)
	p.log.Info("partitions assigned", "partitions", partitions, "kept", kept, "read", reload, "workflows", len(p.state.Workflows))
	if h := p.cfg.hooks; h != nil && h.assigned != nil {
		h.assigned(partitions, p.state.Workflows)
	}
}

// unpark puts back into the state the parked workflows of those partitions
// nothing was written to since they were parked, and returns those
// partitions and the others, which must be read from the log.
func (p *planner) unpark(ctx context.Context, parked map[int32]parkedPartition, partitions []int32) (kept, reload []int32) {
	var candidates []int32
	for _, part := range partitions {
		if _, ok := parked[part]; ok {
			candidates = append(candidates, part)
		}
	}
	var ends map[int32]int64
	if len(candidates) > 0 {
		var err error
		if ends, err = logtable.StableEnds(ctx, p.cfg.Backbone.Opts(), p.names.Workflows, candidates); err != nil {
			p.log.Warn("cannot tell whether partitions kept in a rebalance changed; reading them again", "partitions", candidates, "err", err)
		}
	}
	for _, part := range partitions {
		held, ok := parked[part]
		if !ok || ends == nil || ends[part] != held.end {
			reload = append(reload, part)
			continue
		}
		for _, w := range held.workflows {
			p.state.Workflows[w.ID] = w
		}
		kept = append(kept, part)
	}
	p.state.Reindex()
	return kept, reload
}

// revoked drops the workflows of partitions the planner no longer owns.
// Revoked at the start of a rebalance (park), they are parked with the
// partitions' end offsets, for assigned; partitions lost (the group went
// on without this copy) are simply forgotten, as they are when the end
// offsets cannot be read.
func (p *planner) revoked(ctx context.Context, partitions []int32, park bool) {
	if len(partitions) == 0 || !p.await(ctx) {
		return // a cooperative rebalance that leaves this copy what it has
	}
	var ends map[int32]int64
	if park {
		listCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var err error
		ends, err = logtable.EndOffsets(listCtx, p.cfg.Backbone.Opts(), p.names.Workflows, partitions)
		cancel()
		if err != nil && ctx.Err() == nil {
			p.log.Warn("cannot read the end offsets of revoked partitions; they will be read again if assigned again", "partitions", partitions, "err", err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parked = nil
	if ends != nil {
		p.parked = map[int32]parkedPartition{}
		for _, part := range partitions {
			p.parked[part] = parkedPartition{end: ends[part]}
		}
	}
	gone := map[int32]bool{}
	for _, part := range partitions {
		gone[part] = true
		delete(p.owned, part)
	}
	// A parked partition's chains are kept with its workflows: taken back
	// unchanged, it is not read again.
	p.chains.Forget(func(w string) bool {
		part := topics.PartitionOf(w, p.state.Partitions)
		_, parked := p.parked[part]
		return gone[part] && !parked
	})
	for id, w := range p.state.Workflows {
		if !gone[w.Partition] {
			continue
		}
		if held, ok := p.parked[w.Partition]; ok {
			held.workflows = append(held.workflows, w)
			p.parked[w.Partition] = held
		}
		p.state.Forget(id)
	}
	p.state.Reindex()
	p.workflows.recount(p.state.Workflows)
	if h := p.cfg.hooks; h != nil && h.revoked != nil {
		h.revoked(partitions, p.state.Workflows)
	}
}

// loadTimed is load, timed as the workflows table's catch-up. Callers
// hold p.mu.
func (p *planner) loadTimed(ctx context.Context, partitions []int32) error {
	if len(partitions) == 0 {
		return nil
	}
	start := time.Now()
	err := p.load(ctx, partitions)
	if err == nil {
		p.cfg.Metrics.ObserveCatchUp("workflows", time.Since(start))
	}
	return err
}

// load reads the rows of the given partitions of the workflows topic into
// the state. Callers hold p.mu.
//
// It reads what every transaction open on those partitions when it starts
// commits, waiting for them to end (logtable.AwaitOpenTransactions): on a
// hand-off, the previous owner's last transaction may still be open, and
// the consumed offsets it commits — which the group's offset fetch waits
// for (kgo.RequireStableFetchOffsets) — start this planner after the batch
// it answers; without its rows the state would lack that batch's outcome.
func (p *planner) load(ctx context.Context, partitions []int32) error {
	if len(partitions) == 0 {
		return nil // (ReadToEnd would read every partition)
	}
	// The chains of these partitions' workflows are rebuilt from their
	// checkpoints (first: they say how each chain's keys are split),
	// rows and commands.
	if err := p.loadChains(ctx, partitions); err != nil {
		return err
	}
	var bad deadletter.Pending
	apply := func(r *kgo.Record) {
		p.chains.Observe(auditchain.Workflows, r)
		if r.Value == nil { // a tombstone removes a target or a whole workflow
			p.state.ApplyTombstone(string(r.Key))
			return
		}
		rec, err := records.DecodeWorkflowRecord(r.Value)
		if err == nil {
			err = rowKeyError(r, rec)
		}
		if err != nil {
			p.log.Warn("setting aside a workflow row that cannot be used", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", err)
			bad.Add(r, err)
			return
		}
		p.state.ApplyRow(r.Partition, rec)
	}
	// A few partitions at a time, dropping the finished workflows'
	// targets after each: a partition's every row is read before its
	// workflows are known finished, and a year of them is large.
	var err error
	for part := range slices.Chunk(slices.Sorted(slices.Values(partitions)), loadChunk) {
		err = logtable.ReadToEnd(ctx, p.cfg.Backbone.Opts(), p.names.Workflows, part, apply,
			logtable.AwaitOpenTransactions(), logtable.OnEnds(func(ends map[int32]int64) {
				if h := p.cfg.hooks; h != nil && h.loadEnds != nil {
					h.loadEnds(part, ends)
				}
			}))
		if err != nil {
			break
		}
		p.state.ShedFinished()
	}
	p.state.Reindex()
	// The planner owns these partitions' rows: it sets aside, once read,
	// those it cannot use, and the unusable policies of the same partitions.
	now := p.cfg.Clock.Now()
	letters := append(bad.Take(p.names.DeadLetters, decide.Principal, partitions, now, p.letterFailed),
		p.badPolicies.Take(p.names.DeadLetters, decide.Principal, partitions, now, p.letterFailed)...)
	letters = append(letters, p.badTrust.Take(p.names.DeadLetters, decide.Principal, partitions, now, p.letterFailed)...)
	go p.setAside(ctx, letters)
	return err
}

// loadChains forgets the chains of partitions and rebuilds them from the
// partitions' checkpoints and commands; load adds the rows. Callers hold
// p.mu.
func (p *planner) loadChains(ctx context.Context, partitions []int32) error {
	in := map[int32]bool{}
	for _, part := range partitions {
		in[part] = true
	}
	p.chains.Forget(func(w string) bool { return in[topics.PartitionOf(w, p.state.Partitions)] })
	err := logtable.ReadToEnd(ctx, p.cfg.Backbone.Opts(), p.names.Checkpoints, partitions, func(r *kgo.Record) {
		if cp, err := records.DecodeCheckpoint(r.Value); err == nil && r.Value != nil {
			p.chains.ObserveCheckpoint(cp)
		}
	}, logtable.AwaitOpenTransactions())
	if err != nil {
		return fmt.Errorf("read the checkpoints: %w", err)
	}
	err = logtable.ReadToEnd(ctx, p.cfg.Backbone.Opts(), p.names.Commands, partitions, func(r *kgo.Record) {
		p.chains.Observe(auditchain.Commands, r)
	}, logtable.AwaitOpenTransactions())
	if err != nil {
		return fmt.Errorf("read the commands' chain links: %w", err)
	}
	return nil
}

// loadChunk is how many partitions of workflows a load reads at once.
const loadChunk = 3

// rowKeyError says what is wrong with the key of a workflow row, if
// anything: a header row is keyed by its workflow's ID, a target row by
// topics.TargetKey. A row under another key would be read as the wrong
// workflow's, or never be replaced.
func rowKeyError(r *kgo.Record, rec records.WorkflowRecord) error {
	switch {
	case rec.Workflow != nil && string(r.Key) != rec.Workflow.ID:
		return fmt.Errorf("the header row of workflow %q is keyed %q", rec.Workflow.ID, r.Key)
	case rec.Target != nil && string(r.Key) != topics.TargetKey(rec.Target.WorkflowID, rec.Target.ClusterID):
		return fmt.Errorf("the row of target %s of workflow %q is keyed %q", rec.Target.ClusterID, rec.Target.WorkflowID, r.Key)
	case rec.Spec != nil && string(r.Key) != topics.SpecKey(rec.Spec.WorkflowID):
		return fmt.Errorf("the spec row of workflow %q is keyed %q", rec.Spec.WorkflowID, r.Key)
	case rec.Workflow == nil && rec.Target == nil && rec.Spec == nil:
		return errors.New("a workflow row with no workflow, target or spec")
	}
	return nil
}

// setAside produces dead letters.
func (p *planner) setAside(ctx context.Context, recs []*kgo.Record) {
	if len(recs) == 0 {
		return
	}
	if err := p.plain.ProduceSync(ctx, recs...).FirstErr(); err != nil && ctx.Err() == nil {
		p.log.Error("could not set records aside", "records", len(recs), "err", err)
	}
}

// letterFailed logs a record that could not be set aside.
func (p *planner) letterFailed(src *kgo.Record, err error) {
	p.log.Error("could not set a record aside", "topic", src.Topic, "partition", src.Partition, "offset", src.Offset, "err", err)
}

// rebuild throws away what was decided but not committed and reloads the
// owned workflows from the log. Health signals decided on in the lost
// transaction are decided on again.
func (p *planner) rebuild(ctx context.Context) error {
	p.parked = nil // may hold what was decided in the lost transaction
	var parts []int32
	for part := range p.owned {
		parts = append(parts, part)
	}
	for id := range p.state.Workflows {
		p.state.Forget(id)
	}
	err := p.loadTimed(ctx, parts)
	p.workflows.recount(p.state.Workflows)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("planner: rebuild from the log: %w", err)
	}
	p.state.HealthSignals(func(h records.Health) {
		p.changes.push(change{key: h.ClusterID, health: &h})
	})
	return nil
}

// DecodePolicy reads a record of the policies topic as the planner takes
// it. A policy that does not validate, or whose name is not its record's
// key, fails like a value that cannot be decoded: the planner logs it and
// holds no policy of that name until a good record comes, so a bad record
// written by some other client never reaches a rollout. The CLI reads the
// topic with it too, to show the policies the planner uses.
func DecodePolicy(r *kgo.Record) (records.PolicyRecord, error) {
	rec, err := records.DecodePolicyRecord(r.Value)
	if err != nil {
		return records.PolicyRecord{}, err
	}
	if rec.Policy.Name != string(r.Key) {
		return records.PolicyRecord{}, fmt.Errorf("policy %q is keyed %q: the key must be the policy's name", rec.Policy.Name, r.Key)
	}
	if err := rec.Policy.Validate(); err != nil {
		return records.PolicyRecord{}, fmt.Errorf("invalid policy %q: %w", rec.Policy.Name, err)
	}
	return rec, nil
}

// change is one inventory, health or policy record applied to a table.
type change struct {
	key     string
	cluster *inventory.Cluster
	health  *records.Health
	policy  *rollout.Policy
	// isPolicy marks a policy change; deleted ones have no policy.
	isPolicy bool
	deleted  bool
}

// changeQueue carries table changes from the tables' goroutines to the
// planner's loop without ever blocking the tables.
type changeQueue struct {
	mu    sync.Mutex
	items []change
}

func (q *changeQueue) push(c change) {
	q.mu.Lock()
	q.items = append(q.items, c)
	q.mu.Unlock()
}

func (q *changeQueue) drain() []change {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}
