package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

var nsCounter atomic.Int64

// testBackbone returns a backbone of a namespace of its own on brokers,
// with its topics created.
func testBackbone(t *testing.T, brokers []string) backbone.Config {
	t.Helper()
	ns := fmt.Sprintf("ntest%d-%d-%s", time.Now().UnixNano(), nsCounter.Add(1), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	cfg := backbone.Config{Brokers: brokers, Namespace: ns,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := cfg.EnsureTopics(ctx, 3, 1); err != nil {
		t.Fatalf("create topics on %v: %v", brokers, err)
	}
	return cfg
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// privateBroker starts an embedded broker of the test's own, for what the
// shared one must not be put through (requests that go unanswered).
func privateBroker(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// transactingBroker returns the brokers of a test of transactions: the
// real Kafka of FLOTILLA_TEST_BROKERS, or else an embedded broker that
// ends transactions as Kafka does.
//
// Kafka answers EndTxn once it has logged the outcome, then writes the
// markers and completes the transaction in the background; until it has
// (a few milliseconds on one machine), a request of the next transaction
// of the same transactional ID is answered CONCURRENT_TRANSACTIONS. kgo
// waits that out on a produce, but a GroupTransactSession whose
// TxnOffsetCommit is so answered aborts the transaction. kfake completes a
// transaction before it answers EndTxn, so this one answers a
// TxnOffsetCommit that comes within completing of an EndTxn, with no
// produce between them (kgo would have waited on the produce),
// CONCURRENT_TRANSACTIONS, as Kafka does.
//
// complete reports whether the broker has completed the last transaction
// of a transactional ID.
func transactingBroker(t *testing.T) (brokers []string, complete func(txnID string) bool) {
	t.Helper()
	if brokertest.Real() {
		cl, err := kgo.NewClient(brokertest.Opts(t)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		adm := kadm.NewClient(cl)
		return brokertest.Addrs(t), func(txnID string) bool {
			described, err := adm.DescribeTransactions(t.Context(), txnID)
			if err != nil {
				return false
			}
			d, ok := described[txnID]
			return ok && d.Err == nil && (d.State == "Empty" || d.State == "CompleteCommit" || d.State == "CompleteAbort")
		}
	}
	const completing = 10 * time.Millisecond
	c := privateBroker(t)
	var mu sync.Mutex
	until := map[string]time.Time{} // transactional ID → when its last transaction is complete
	c.Fault(
		kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Count: -1, When: func(req kmsg.Request) bool {
			mu.Lock()
			defer mu.Unlock()
			until[req.(*kmsg.EndTxnRequest).TransactionalID] = time.Now().Add(completing)
			return false
		}},
		kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Count: -1, When: func(req kmsg.Request) bool {
			if id := req.(*kmsg.ProduceRequest).TransactionID; id != nil {
				mu.Lock()
				defer mu.Unlock()
				delete(until, *id)
			}
			return false
		}},
		kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Count: -1, Err: kerr.ConcurrentTransactions, When: func(req kmsg.Request) bool {
			mu.Lock()
			defer mu.Unlock()
			return time.Now().Before(until[req.(*kmsg.TxnOffsetCommitRequest).TransactionalID])
		}},
	)
	return c.ListenAddrs(), func(txnID string) bool {
		mu.Lock()
		defer mu.Unlock()
		return !time.Now().Before(until[txnID])
	}
}

// follower counts the committed notifications of a namespace as they come.
type follower struct {
	mu   sync.Mutex
	n    int
	more chan struct{} // closed and replaced on every notification
}

func follow(t *testing.T, cfg backbone.Config) *follower {
	t.Helper()
	// The client's context ends first: its Close does not wait on a
	// broker that stopped answering.
	ctx, cancel := context.WithCancel(context.Background())
	cl, err := cfg.Client(kgo.WithContext(ctx), kgo.ConsumeTopics(cfg.Names().Notifications), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	f := &follower{more: make(chan struct{})}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fetches := cl.PollFetches(ctx)
			f.mu.Lock()
			if n := fetches.NumRecords(); n > 0 {
				f.n += n
				close(f.more)
				f.more = make(chan struct{})
			}
			f.mu.Unlock()
		}
	}()
	return f
}

// await waits until at least n notifications were committed.
func (f *follower) await(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		got, more := f.n, f.more
		f.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("%d notifications after %v, want %d", got, timeout, n)
		}
	}
}

func healthRecord(t *testing.T, topic string, h records.Health) *kgo.Record {
	t.Helper()
	v, err := records.Encode(h)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(h.ClusterID), Value: v}
}

// running is a notifier started by a test.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("the notifier did not stop within 30s")
		}
	})
	return r
}

// stop cancels the notifier's context and returns how long Run took to
// return, and what it returned.
func (r *running) stop(t *testing.T) (time.Duration, error) {
	t.Helper()
	begin := time.Now()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return time.Since(begin), err
	case <-time.After(30 * time.Second):
		t.Fatal("the notifier did not stop within 30s")
		return 0, nil
	}
}

// aborts counts how the notifier's transactions end.
type aborts struct {
	commits, aborts atomic.Int64
	mu              sync.Mutex
	errs            map[string]int
}

func (a *aborts) ended(committed bool, err error) {
	if committed {
		a.commits.Add(1)
		return
	}
	a.aborts.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.errs == nil {
		a.errs = map[string]int{}
	}
	a.errs[fmt.Sprint(err)]++
}

// TestNoAbortsInAnUndisturbedRun runs the notifier while health signals
// arrive, changes (which make a notification each) and heartbeats (which
// make none), and checks that no transaction aborted: with nothing
// disturbing it (no rebalance, no broker trouble, no stop), every batch
// is consumed once and every notification written once.
//
// The signals come first as a stream, one by one, then in rounds that
// make the pattern of a live fleet on purpose: a heartbeat arrives while
// the transaction of a change is under way, so that the notifier's next
// batch, right after that transaction ends, holds only the heartbeat.
func TestNoAbortsInAnUndisturbedRun(t *testing.T) {
	brokers, complete := transactingBroker(t)
	bb := testBackbone(t, brokers)
	names := bb.Names()
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	const clusters = 6
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	status := [clusters]records.HealthStatus{}
	seq := 0
	// signal returns the next signal of cluster c: a change or a heartbeat.
	signal := func(c int, change bool) *kgo.Record {
		seq++
		at = at.Add(time.Second)
		h := records.Health{
			Envelope:  records.Envelope{ID: fmt.Sprintf("h-%d", seq), Time: at, Principal: "monitor"},
			ClusterID: fmt.Sprintf("c%d", c), Status: status[c], PreviousStatus: status[c], ObservedAt: at, Heartbeat: true,
		}
		if h.PreviousStatus == "" {
			h.Status, h.PreviousStatus = records.HealthHealthy, records.HealthHealthy
		}
		if change {
			h.Status = records.HealthDegraded
			if h.PreviousStatus == records.HealthDegraded {
				h.Status = records.HealthHealthy
			}
			h.Heartbeat = false
		}
		status[c] = h.Status
		return healthRecord(t, names.Health, h)
	}
	produce := func(r *kgo.Record) {
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Errorf("produce: %v", err)
		}
	}

	var a aborts
	var heartbeatMu sync.Mutex
	var heartbeat *kgo.Record // to produce while the next transaction is under way
	clock := clockwork.NewFakeClock()
	const idle = 5 * time.Second
	n := start(t, Config{Backbone: bb, InstanceID: "n0", Clock: clock, IdleCommit: idle, ended: a.ended, ending: func() {
		heartbeatMu.Lock()
		defer heartbeatMu.Unlock()
		if heartbeat != nil {
			produce(heartbeat)
			heartbeat = nil
		}
	}})
	notes := follow(t, bb)

	want := 0
	for i := range 900 {
		change := i%3 == 0
		if change {
			want++
		}
		produce(signal(i%clusters, change))
	}
	notes.await(t, want, 30*time.Second)
	for i := range 40 {
		heartbeatMu.Lock()
		heartbeat = signal(i%clusters, false)
		heartbeatMu.Unlock()
		produce(signal((i+1)%clusters, true))
		want++
		notes.await(t, want, 30*time.Second)
	}
	// The last heartbeat is committed on its own once it has waited idle
	// for a notification to go with. On a real clock the idle time keeps
	// that commit well apart from the last transaction; on the fake one,
	// time jumps only once Kafka has completed it.
	txnID := names.Group("notifier") + "-n0"
	waitCommittedToEnd(t, bb, func() {
		if complete(txnID) {
			clock.Advance(idle)
		}
	})
	if _, err := n.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := a.aborts.Load(); got != 0 {
		t.Errorf("%d transactions aborted in an undisturbed run (%d committed), ending with: %v", got, a.commits.Load(), a.errs)
	}
	var got []records.Notification
	rctx, rcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer rcancel()
	if err := logtable.ReadToEnd(rctx, bb.Opts(), names.Notifications, nil, func(r *kgo.Record) {
		n, err := records.DecodeNotification(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		checkCloudEvent(t, r.Headers, n, Source(names.Namespace))
		got = append(got, n)
	}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, n := range got {
		if seen[n.Envelope.ID] {
			t.Errorf("notification %s written twice: %s", n.Envelope.ID, n.Message)
		}
		seen[n.Envelope.ID] = true
	}
	if len(got) != want {
		t.Errorf("%d notifications, want %d", len(got), want)
	}
	t.Logf("%d transactions committed, %d aborted, on %s", a.commits.Load(), a.aborts.Load(), brokerName())
}

func brokerName() string {
	if brokertest.Real() {
		return brokertest.Name()
	}
	return "a private embedded kfake"
}

// waitCommittedToEnd waits until the notifier's group has committed the
// end of every partition of the topics it reads, calling step between two
// looks.
func waitCommittedToEnd(t *testing.T, bb backbone.Config, step func()) {
	t.Helper()
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	names := bb.Names()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		ends, err := adm.ListEndOffsets(ctx, names.Workflows, names.Operations, names.Health)
		if err != nil {
			t.Fatal(err)
		}
		committed, err := adm.FetchOffsets(ctx, names.Group("notifier"))
		if err == nil {
			caught := true
			ends.Each(func(o kadm.ListedOffset) {
				c, ok := committed.Lookup(o.Topic, o.Partition)
				if o.Offset > 0 && (!ok || c.At < o.Offset) {
					caught = false
				}
			})
			if caught {
				return
			}
		}
		step()
		select {
		case <-ctx.Done():
			t.Fatalf("the notifier did not commit the end of its topics: %v", ctx.Err())
		case <-time.After(20 * time.Millisecond): // the broker has no way to tell us: ask again
		}
	}
}

// TestStopsPromptly stops the notifier, idle or in the middle of a
// transaction that the broker no longer answers, and checks that Run
// returns well within 3 seconds.
func TestStopsPromptly(t *testing.T) {
	const within = 2 * time.Second
	t.Run("idle", func(t *testing.T) {
		bb := testBackbone(t, brokertest.Addrs(t))
		n := start(t, Config{Backbone: bb, InstanceID: "n0"})
		notes := follow(t, bb)
		produceHealthChange(t, bb, "c1")
		notes.await(t, 1, 30*time.Second)
		took, err := n.stop(t)
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		if took > within {
			t.Errorf("Run returned %v after its context ended, want within %v", took, within)
		}
		t.Logf("stopped in %v", took)
	})
	// A broker that stops answering in the middle of a transaction: only
	// an embedded one of the test's own can be made to, on either run.
	t.Run("broker silent mid-transaction", func(t *testing.T) {
		c := privateBroker(t)
		bb := testBackbone(t, c.ListenAddrs())
		n := start(t, Config{Backbone: bb, InstanceID: "n0"})
		notes := follow(t, bb)
		produceHealthChange(t, bb, "c1")
		notes.await(t, 1, 30*time.Second)
		// From the notifier's next transactional produce on, the broker
		// reads every request and answers none.
		silent := make(chan struct{})
		var once sync.Once
		c.ControlKey(-1, func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			if p, ok := req.(*kmsg.ProduceRequest); ok && p.TransactionID != nil {
				once.Do(func() { close(silent) })
			}
			select {
			case <-silent:
				return nil, nil, true // read, never answered
			default:
				return nil, nil, false
			}
		})
		produceHealthChange(t, bb, "c2")
		select {
		case <-silent:
		case <-time.After(30 * time.Second):
			t.Fatal("the notifier did not produce the second notification")
		}
		took, err := n.stop(t)
		if err != nil {
			t.Logf("Run: %v", err)
		}
		if took > within {
			t.Errorf("Run returned %v after its context ended, with a broker that does not answer; want within %v", took, within)
		}
		t.Logf("stopped in %v with a broker that does not answer", took)
	})
}

var changeSeq atomic.Int64

func produceHealthChange(t *testing.T, bb backbone.Config, cluster string) {
	t.Helper()
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	h := records.Health{Envelope: records.Envelope{ID: fmt.Sprintf("change-%d", changeSeq.Add(1)), Time: at, Principal: "monitor"},
		ClusterID: cluster, Status: records.HealthUnhealthy, PreviousStatus: records.HealthHealthy, ObservedAt: at}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, healthRecord(t, bb.Names().Health, h)).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// TestFencedEndsWithAClearError starts a second producer under the
// notifier's transactional ID, as a twin copy started with the same
// instance ID would: the notifier, fenced, must end with an error that
// says so, wrapping Kafka's, rather than carry on.
func TestFencedEndsWithAClearError(t *testing.T) {
	bb := testBackbone(t, brokertest.Addrs(t))
	n := start(t, Config{Backbone: bb, InstanceID: "n0"})
	notes := follow(t, bb)
	produceHealthChange(t, bb, "c1")
	notes.await(t, 1, 30*time.Second)

	twin, err := bb.Client(kgo.TransactionalID(bb.Names().Group("notifier")+"-n0"), kgo.DefaultProduceTopic(bb.Names().Notifications))
	if err != nil {
		t.Fatal(err)
	}
	defer twin.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := twin.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := twin.ProduceSync(ctx, &kgo.Record{Key: []byte("twin")}).FirstErr(); err != nil { // InitProducerID: fences the notifier
		t.Fatal(err)
	}
	if err := twin.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}

	produceHealthChange(t, bb, "c2")
	select {
	case err := <-n.done:
		n.done <- err
		if err == nil {
			t.Fatal("Run returned nil after it was fenced")
		}
		if !errors.Is(err, kerr.ProducerFenced) && !errors.Is(err, kerr.InvalidProducerEpoch) {
			t.Errorf("Run: %v; want an error wrapping PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", err)
		}
		if !strings.Contains(err.Error(), "fenced") || !strings.Contains(err.Error(), bb.Names().Group("notifier")+"-n0") {
			t.Errorf("Run: %v; want it to say it was fenced, naming its transactional ID", err)
		}
		t.Logf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("a fenced notifier still runs after 30s")
	}
}
