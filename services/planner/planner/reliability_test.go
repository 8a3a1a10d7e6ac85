package planner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/internal/fleettest/zombie"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// stopBound is how long a test lets Run take to return once it must: a
// deadline for the test to fail by, not a measure of speed.
const stopBound = 5 * time.Second

var nsCounter atomic.Int64

// testEnv is a namespace of its own on a broker, with its topics (one
// partition each, so that every workflow lives on partition 0, unless
// made with newTestEnvWith).
type testEnv struct {
	t     *testing.T
	ctx   context.Context
	bb    backbone.Config
	names topics.Names
	clock *clockwork.FakeClock

	planChunk int // the planners' Config.PlanChunk
}

func newTestEnv(t *testing.T, brokers []string) *testEnv {
	t.Helper()
	return newTestEnvWith(t, brokers, 1)
}

// newTestEnvWith is newTestEnv with topics of the given partitions.
func newTestEnvWith(t *testing.T, brokers []string, partitions int32) *testEnv {
	t.Helper()
	ns := fmt.Sprintf("planner%d-%d-%s", nsCounter.Add(1), time.Now().UnixNano(), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	if len(ns) > 60 {
		ns = ns[:60]
	}
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e := &testEnv{
		t:     t,
		bb:    backbone.Config{Brokers: brokers, Namespace: ns, Logger: log},
		names: topics.NewNames(ns),
		clock: clockwork.NewFakeClockAt(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)),
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	e.ctx = ctx
	if err := e.bb.EnsureTopics(ctx, partitions, 1); err != nil {
		t.Fatalf("create topics: %v", err)
	}
	return e
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// running is a planner started by a test.
type running struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned err
	err    error
}

// start runs a planner with the given instance ID and hooks until the test
// ends (or cancel).
func (e *testEnv) start(instance string, hooks *testHooks) *running {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	cfg := Config{Backbone: e.bb, Clock: e.clock, InstanceID: instance, PollInterval: 20 * time.Millisecond, PlanChunk: e.planChunk, hooks: hooks}
	go func() {
		defer close(r.done)
		r.err = Run(ctx, cfg)
	}()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			e.t.Errorf("planner %s did not stop within 30s", instance)
		}
	})
	return r
}

func (e *testEnv) client(opts ...kgo.Opt) *kgo.Client {
	e.t.Helper()
	cl, err := kgo.NewClient(append(e.bb.Opts(kgo.RetryBackoffFn(func(int) time.Duration { return 20 * time.Millisecond })), opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cl.Close)
	return cl
}

func (e *testEnv) produce(recs ...*kgo.Record) {
	e.t.Helper()
	if err := e.client().ProduceSync(e.ctx, recs...).FirstErr(); err != nil {
		e.t.Fatalf("produce: %v", err)
	}
}

func (e *testEnv) record(topic, key string, v any) *kgo.Record {
	e.t.Helper()
	value, err := records.Encode(v)
	if err != nil {
		e.t.Fatalf("encode %T: %v", v, err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: value}
}

// awaitRow waits until the workflows topic has a committed row keyed key.
func (e *testEnv) awaitRow(key string) {
	e.t.Helper()
	for {
		found := false
		err := logtable.ReadToEnd(e.ctx, e.bb.Opts(), e.names.Workflows, nil, func(r *kgo.Record) {
			found = found || string(r.Key) == key
		})
		if err != nil {
			e.t.Fatalf("no workflow row %s: %v", key, err)
		}
		if found {
			return
		}
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("no workflow row %s: %v", key, e.ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// signal is a condition a test waits for, raised once.
type signal struct {
	once sync.Once
	ch   chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) raise() { s.once.Do(func() { close(s.ch) }) }

func (s *signal) wait(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-s.ch:
	case <-ctx.Done():
		t.Fatalf("%s: %v", what, ctx.Err())
	}
}

// TestFencedPlannerStops fences a running planner, as a second copy
// started with the same instance ID does, and makes it decide something:
// its transactional producer cannot write anymore, and Run must end with
// an error naming the fencing instead of rebuilding and carrying on as a
// zombie that keeps its partitions and never commits.
func TestFencedPlannerStops(t *testing.T) {
	e := newTestEnv(t, brokertest.Addrs(t))
	p := e.start("p0", nil)

	// A request the planner rejects: once its row is written, the
	// planner's producer has its epoch, so the fencing below is of it.
	e.produce(&kgo.Record{Topic: e.names.Requests, Key: []byte("r1"), Value: []byte("not a request")})
	e.awaitRow("r1")

	twin := e.client(kgo.TransactionalID(e.names.Group("planner") + "-p0"))
	if _, _, err := twin.ProducerID(e.ctx); err != nil {
		t.Fatalf("fence the planner: %v", err)
	}
	e.produce(&kgo.Record{Topic: e.names.Requests, Key: []byte("r2"), Value: []byte("not a request either")})

	select {
	case <-p.done:
		err := p.err
		if err == nil {
			t.Fatal("Run returned nil after the planner was fenced")
		}
		if !errors.Is(err, kerr.ProducerFenced) && !errors.Is(err, kerr.InvalidProducerEpoch) {
			t.Fatalf("Run returned %v; want an error naming the fencing (PRODUCER_FENCED or INVALID_PRODUCER_EPOCH)", err)
		}
		if !strings.Contains(err.Error(), "fenced") {
			t.Errorf("Run's error does not say the planner was fenced: %v", err)
		}
		t.Logf("Run returned: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the fenced planner is still running 20s after it was fenced and given a request: it carries on as a zombie")
	}
}

// TestHandOffReadsThePreviousOwnersLastBatch hands a partition over while
// its previous owner's last transaction is open: that transaction holds
// workflow rows and the consumed offsets of the request they answer. The
// new owner is assigned the partition and captures how far to read the
// workflows; only then does the transaction commit. The committed-offset
// fetch (RequireStable) waits for the commit, so the new owner starts
// after the request: its state must hold the rows the request made, or
// that workflow stalls forever.
func TestHandOffReadsThePreviousOwnersLastBatch(t *testing.T) {
	e := newTestEnv(t, brokertest.Addrs(t))

	clusters := simfleet.GenerateClusters(3)
	inv := map[string]inventory.Cluster{}
	var recs []*kgo.Record
	for _, c := range clusters {
		inv[c.ID] = c
		recs = append(recs, e.record(e.names.Inventory, c.ID, records.ClusterRecord{
			Envelope: records.Envelope{ID: "inv-" + c.ID, Time: e.clock.Now(), Principal: "test"}, Cluster: c,
		}))
	}
	const wf = "handed-over"
	req := records.Request{
		Envelope: records.Envelope{ID: wf, Time: e.clock.Now(), Principal: "alice"},
		Submit:   &records.SubmitRollout{Spec: rollout.Spec{Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Selector: "kind=kafka"}},
	}
	recs = append(recs, e.record(e.names.Requests, wf, req))
	e.produce(recs...)

	// The previous owner, planner p0, consumed the request and decided
	// on it; its transaction holds the rows and the offset after the
	// request, and is still open.
	out := decide.Decide(decide.NewState(inv, nil), decide.Submit{Partition: 0, Key: wf, Request: req}, e.clock.Now())
	if !slices.ContainsFunc(out.Rows, func(r records.WorkflowRecord) bool { return r.Workflow != nil && r.Workflow.ID == wf }) {
		t.Fatalf("the decision on the request wrote %d rows, none of workflow %s", len(out.Rows), wf)
	}
	prevID := e.names.Group("planner") + "-p0"
	prev := e.client(kgo.TransactionalID(prevID))
	if err := prev.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	var rows []*kgo.Record
	for _, row := range out.Rows {
		key := ""
		switch {
		case row.Workflow != nil:
			key = row.Workflow.ID
		case row.Target != nil:
			key = topics.TargetKey(row.Target.WorkflowID, row.Target.ClusterID)
		}
		rows = append(rows, e.record(e.names.Workflows, key, row))
	}
	if err := prev.ProduceSync(e.ctx, rows...).FirstErr(); err != nil {
		t.Fatalf("produce the previous owner's rows: %v", err)
	}
	commitOffsetInTxn(t, e.ctx, prev, prevID, e.names.Group("planner"), e.names.Requests, 0, 1)
	t.Cleanup(func() { _ = prev.EndTransaction(context.Background(), kgo.TryAbort) })

	captured := newSignal()
	loaded := newSignal()
	var has bool
	e.start("p1", &testHooks{
		loadEnds: func([]int32, map[int32]int64) { captured.raise() },
		assigned: func(_ []int32, workflows map[string]*decide.Workflow) {
			_, has = workflows[wf]
			loaded.raise()
		},
	})
	captured.wait(t, e.ctx, "the new owner did not start loading its partition")
	if err := prev.EndTransaction(e.ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit the previous owner's transaction: %v", err)
	}
	loaded.wait(t, e.ctx, "the new owner did not finish loading its partition")
	if !has {
		t.Fatalf("the new owner of partition 0 lacks workflow %s: its rows were in the previous owner's transaction, open at the hand-off and committed since, with the offset after its request; the workflow stalls", wf)
	}
}

// TestRestartAbortsItsPredecessorsTransaction restarts a planner whose
// previous run died with its transaction open (with a long transaction
// timeout): the restart initialises the same transactional ID, which
// aborts that transaction at once, so loading its partitions — which waits
// for the transactions open on them — does not wait for the timeout, and
// the aborted rows are not in its state.
func TestRestartAbortsItsPredecessorsTransaction(t *testing.T) {
	e := newTestEnv(t, brokertest.Addrs(t))
	const wf = "never-committed"
	out := decide.Decide(decide.NewState(nil, nil), decide.Submit{Partition: 0, Key: wf, Err: errors.New("a bad request")}, e.clock.Now())
	if len(out.Rows) == 0 {
		t.Fatal("the decision on a bad request wrote no row")
	}
	dead := e.client(kgo.TransactionalID(e.names.Group("planner")+"-p0"), kgo.TransactionTimeout(10*time.Minute))
	if err := dead.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := dead.ProduceSync(e.ctx, e.record(e.names.Workflows, wf, out.Rows[0])).FirstErr(); err != nil {
		t.Fatalf("produce the dead run's row: %v", err)
	}

	loaded := newSignal()
	var has bool
	e.start("p0", &testHooks{assigned: func(_ []int32, workflows map[string]*decide.Workflow) {
		_, has = workflows[wf]
		loaded.raise()
	}})
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	loaded.wait(t, ctx, "the restarted planner did not load its partition: it waits for the transaction its previous run left open (10 minutes) instead of aborting it")
	if has {
		t.Fatalf("the restarted planner holds workflow %s, written in a transaction that never committed", wf)
	}
}

// commitOffsetInTxn adds to the open transaction of cl (transactional ID
// txnID) the commit of offset for partition of topic in group, as a
// consume-transform-produce loop does.
func commitOffsetInTxn(t *testing.T, ctx context.Context, cl *kgo.Client, txnID, group, topic string, partition int32, offset int64) {
	t.Helper()
	id, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID = txnID
	add.ProducerID, add.ProducerEpoch, add.Group = id, epoch, group
	addResp, err := add.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(addResp.ErrorCode)
	}
	if err != nil {
		t.Fatalf("add offsets to the transaction: %v", err)
	}
	commit := kmsg.NewPtrTxnOffsetCommitRequest()
	commit.TransactionalID = add.TransactionalID
	commit.Group, commit.ProducerID, commit.ProducerEpoch = group, id, epoch
	commit.Generation, commit.MemberID = -1, ""
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic, rt.TopicID = topic, md.Topics[topic].ID // names it up to v5, by ID from v6
	rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset, rp.LeaderEpoch = partition, offset, -1
	rt.Partitions = append(rt.Partitions, rp)
	commit.Topics = append(commit.Topics, rt)
	resp, err := commit.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("commit offsets in the transaction: %v", err)
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				t.Fatalf("commit offsets in the transaction: partition %d: %v", rp.Partition, err)
			}
		}
	}
}

// TestRunStopsPromptlyWhateverTheBroker cancels a planner's context when
// its broker is gone, or does not answer the end of a transaction: Run
// must return promptly (a service gets a few seconds after SIGTERM), not
// after the client's retries or the transaction's own timeout. The broker
// is an embedded one of the test's own, whatever FLOTILLA_TEST_BROKERS says:
// the test stops it, or makes it hold back answers.
func TestRunStopsPromptlyWhateverTheBroker(t *testing.T) {
	newBroker := func(t *testing.T) *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	awaitStop := func(t *testing.T, p *running) {
		t.Helper()
		start := time.Now()
		p.cancel()
		select {
		case <-p.done:
			if p.err != nil {
				t.Errorf("Run returned %v once asked to stop; want nil", p.err)
			}
			t.Logf("Run returned %v after it was asked to stop", time.Since(start).Round(time.Millisecond))
		case <-time.After(stopBound):
			t.Fatalf("Run did not return within %v of its context's end", stopBound)
		}
	}

	t.Run("broker gone", func(t *testing.T) {
		broker := newBroker(t)
		e := newTestEnv(t, broker.ListenAddrs())
		assigned := newSignal()
		p := e.start("p0", &testHooks{assigned: func([]int32, map[string]*decide.Workflow) { assigned.raise() }})
		assigned.wait(t, e.ctx, "the planner was not assigned its partition")
		broker.Close()
		awaitStop(t, p)
	})

	t.Run("broker unresponsive", func(t *testing.T) {
		broker := newBroker(t)
		e := newTestEnv(t, broker.ListenAddrs())
		assigned := newSignal()
		p := e.start("p0", &testHooks{assigned: func([]int32, map[string]*decide.Workflow) { assigned.raise() }})
		assigned.wait(t, e.ctx, "the planner was not assigned its partition")
		broker.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
			broker.KeepControl()
			return nil, nil, true // never answered
		})
		awaitStop(t, p)
	})

	t.Run("end of transaction unanswered", func(t *testing.T) {
		broker := newBroker(t)
		e := newTestEnv(t, broker.ListenAddrs())
		ending := newSignal()
		broker.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
			broker.KeepControl()
			ending.raise()
			return nil, nil, true // never answered
		})
		p := e.start("p0", nil)
		e.produce(&kgo.Record{Topic: e.names.Requests, Key: []byte("r1"), Value: []byte("not a request")})
		ending.wait(t, e.ctx, "the planner did not end a transaction")
		awaitStop(t, p)
	})
}

// TestAZombiesTimeDrivenDecisionIsFenced freezes planner a past its
// session timeout (its heartbeats never reach the coordinator, while it
// believes they did) so that planner b takes its partition over, and then
// lets time make both decide: a rollout's maintenance window opens. The
// transaction of a's decision consumes nothing, so kgo commits no offsets
// in it, and the group's generation check — the only fence between two
// copies with transactional IDs of their own — never sees it: without
// ProveMembership, a's commands and rows would be committed next to b's.
func TestAZombiesTimeDrivenDecisionIsFenced(t *testing.T) {
	e := newTestEnv(t, brokertest.Addrs(t))
	cluster := simfleet.GenerateClusters(1)[0]
	const wf = "window-opens"
	opens := e.clock.Now().Add(time.Hour)
	spec := rollout.Spec{
		Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{cluster.ID},
		Windows: []rollout.WindowRule{{Allow: []string{opens.Format(time.RFC3339) + "/" + opens.Add(24*time.Hour).Format(time.RFC3339)}}},
	}
	e.produce(
		e.record(e.names.Inventory, cluster.ID, records.ClusterRecord{Envelope: records.Envelope{ID: "inv", Time: e.clock.Now(), Principal: "test"}, Cluster: cluster}),
		e.record(e.names.Requests, wf, records.Request{Envelope: records.Envelope{ID: wf, Time: e.clock.Now(), Principal: "alice"}, Submit: &records.SubmitRollout{Spec: spec}}),
	)

	type end struct {
		committed bool
		err       error
	}
	var frozen zombie.Dialer
	aEnds := make(chan end, 100)
	e.start("a", &testHooks{
		sessionOpts: []kgo.Opt{kgo.Dialer(frozen.DialContext), kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(200 * time.Millisecond)},
		ended: func(_, commands int, committed bool, err error) {
			if commands > 0 {
				aEnds <- end{committed, err}
			}
		},
	})
	e.awaitRow(wf) // a accepted the rollout; its window is closed
	frozen.Silence()

	taken := newSignal()
	bCommitted := newSignal()
	e.start("b", &testHooks{
		assigned: func(_ []int32, workflows map[string]*decide.Workflow) {
			if workflows[wf] != nil {
				taken.raise()
			}
		},
		ended: func(_, commands int, committed bool, _ error) {
			if commands > 0 && committed {
				bCommitted.raise()
			}
		},
	})
	taken.wait(t, e.ctx, "planner b did not take partition 0 over from the frozen planner a")
	if frozen.Swallowed.Load() == 0 {
		t.Fatal("planner a sent no heartbeat since it was silenced: it was not frozen")
	}

	e.clock.Advance(time.Hour)
	bCommitted.wait(t, e.ctx, "planner b did not commit the commands of the window's opening")
	var first end
	select {
	case first = <-aEnds:
	case <-e.ctx.Done():
		t.Fatal("the zombie planner a did not decide on the window's opening")
	}
	if first.committed {
		t.Errorf("the zombie planner a committed its commands for the window's opening, after b had taken its partition over")
	}
	if first.err != nil {
		t.Errorf("the zombie's transaction ended with %v; want an abort without an error (the member is gone, as after a rebalance)", first.err)
	}
	var commands int
	key := topics.TargetKey(wf, cluster.ID)
	if err := logtable.ReadToEnd(e.ctx, e.bb.Opts(), e.names.Commands, nil, func(r *kgo.Record) {
		if string(r.Key) == key {
			commands++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if commands != 1 {
		t.Errorf("%d commands for %s are committed; want 1, b's", commands, key)
	}
}

// TestARebalanceMovesOnlyThePartitionsThatChangeOwner starts planner a
// alone on two partitions, then planner b. Only the partition that goes to
// b is taken from a (the balancer is cooperative and sticky): a keeps the
// workflows of the other without reading anything again, holds none of the
// moved one's, and b reads only the moved one.
func TestARebalanceMovesOnlyThePartitionsThatChangeOwner(t *testing.T) {
	e := newTestEnvWith(t, brokertest.Addrs(t), 2)
	var recs []*kgo.Record
	for i := range 8 {
		id := fmt.Sprintf("wf-%d", i)
		recs = append(recs, e.record(e.names.Requests, id, records.Request{
			Envelope: records.Envelope{ID: id, Time: e.clock.Now(), Principal: "alice"},
			Submit:   &records.SubmitRollout{Spec: rollout.Spec{Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{"unknown"}}},
		}))
	}
	e.produce(recs...)

	type change struct {
		who        string
		assigned   bool
		partitions []int32
		workflows  map[string]int32 // workflow ID → partition
	}
	var mu sync.Mutex
	loads := map[string][][]int32{}
	changes := make(chan change, 10)
	hooks := func(who string) *testHooks {
		tell := func(assigned bool) func([]int32, map[string]*decide.Workflow) {
			return func(partitions []int32, workflows map[string]*decide.Workflow) {
				c := change{who: who, assigned: assigned, partitions: slices.Sorted(slices.Values(partitions)), workflows: map[string]int32{}}
				for id, w := range workflows {
					c.workflows[id] = w.Partition
				}
				changes <- c
			}
		}
		return &testHooks{
			loadEnds: func(partitions []int32, _ map[int32]int64) {
				mu.Lock()
				loads[who] = append(loads[who], slices.Clone(partitions))
				mu.Unlock()
			},
			assigned: tell(true),
			revoked:  tell(false),
		}
	}
	next := func(what string) change {
		t.Helper()
		select {
		case c := <-changes:
			return c
		case <-e.ctx.Done():
			t.Fatalf("%s: %v", what, e.ctx.Err())
			return change{}
		}
	}
	e.start("a", hooks("a"))
	if first := next("planner a was not assigned its partitions"); first.who != "a" || !first.assigned || !slices.Equal(first.partitions, []int32{0, 1}) {
		t.Fatalf("planner a alone: %+v; want [0 1] assigned", first)
	}
	for i := range 8 {
		e.awaitRow(fmt.Sprintf("wf-%d", i)) // a rejected each (an unknown cluster)
	}
	mu.Lock()
	delete(loads, "a")
	mu.Unlock()

	e.start("b", hooks("b"))
	var fromA, toB change
	for fromA.who == "" || toB.who == "" {
		switch c := next("the rebalance did not finish"); {
		case c.who == "a" && !c.assigned:
			fromA = c
		case c.who == "b" && c.assigned:
			toB = c
		default:
			t.Fatalf("unexpected change once b joined: %+v", c)
		}
	}
	if len(fromA.partitions) != 1 || !slices.Equal(fromA.partitions, toB.partitions) {
		t.Fatalf("taken from a %v, given to b %v; want the same one partition", fromA.partitions, toB.partitions)
	}
	moved := fromA.partitions[0]
	mu.Lock()
	defer mu.Unlock()
	if len(loads["a"]) != 0 {
		t.Errorf("planner a read %v again, though it kept its other partition", loads["a"])
	}
	if !slices.Equal(slices.Concat(loads["b"]...), []int32{moved}) {
		t.Errorf("planner b read %v; want only partition %d", loads["b"], moved)
	}
	for id, part := range fromA.workflows {
		if part == moved {
			t.Errorf("planner a holds workflow %s of partition %d, which went to b", id, part)
		}
	}
	if kept, gone := len(fromA.workflows), len(toB.workflows); kept == 0 || gone == 0 || kept+gone != 8 {
		t.Fatalf("a holds %d workflows and b %d; the test wants some on each partition, 8 in all", kept, gone)
	}
}
