package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
)

// LimitsResult is what raw franz-go clients reach on the broker, with
// records of the size Flotilla writes: the ceiling the services are
// compared to.
type LimitsResult struct {
	Records     int     `json:"records"`
	RecordBytes int     `json:"recordBytes"` // mean size of a value: commands and operation events, Avro-encoded
	Produce     float64 `json:"producePerSecond"`
	ProduceMBps float64 `json:"produceMBPerSecond"`
	Consume     float64 `json:"consumePerSecond"`
	// Txn is the records per second of a consume→produce loop in
	// transactions (a GroupTransactSession committing once per poll, as
	// the planner does) fed by a raw producer: each record consumed is
	// produced again.
	Txn        float64 `json:"txnPerSecond"`
	TxnCommits int     `json:"txnCommits"`
	Error      string  `json:"error,omitempty"`
}

func (b *bench) limits(ctx context.Context) *LimitsResult {
	ctx, cancel := b.stage(ctx, "raw limits")
	defer cancel()
	res := &LimitsResult{Records: b.o.RawRecords}
	if err := b.measureLimits(ctx, res); err != nil {
		res.Error = err.Error()
	}
	return res
}

func (b *bench) measureLimits(ctx context.Context, res *LimitsResult) error {
	cfg := backbone.Config{Brokers: b.brokers, Namespace: fmt.Sprintf("bench-%s-limits", b.runID), Logger: b.o.Log}
	in, txnIn, out := cfg.Namespace+".raw-in", cfg.Namespace+".raw-txn-in", cfg.Namespace+".raw-out"
	if err := b.createTopics(ctx, cfg, in, txnIn, out); err != nil {
		return err
	}
	defer b.deleteTopics(cfg, in, txnIn, out)
	values, err := sampleValues()
	if err != nil {
		return err
	}
	total := 0
	for _, v := range values {
		total += len(v)
	}
	res.RecordBytes = total / len(values)

	elapsed, err := rawProduce(ctx, cfg, in, values, res.Records)
	if err != nil {
		return fmt.Errorf("raw produce: %w", err)
	}
	res.Produce = rate(res.Records, elapsed)
	res.ProduceMBps = res.Produce * float64(res.RecordBytes) / 1e6
	elapsed, err = rawConsume(ctx, cfg, res.Records, in)
	if err != nil {
		return fmt.Errorf("raw consume: %w", err)
	}
	res.Consume = rate(res.Records, elapsed)
	elapsed, commits, err := rawTxnLoop(ctx, cfg, txnIn, out, values, res.Records)
	res.TxnCommits = commits
	if err != nil {
		return fmt.Errorf("raw transactional loop: %w", err)
	}
	res.Txn = rate(res.Records, elapsed)
	return nil
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func (b *bench) createTopics(ctx context.Context, cfg backbone.Config, names ...string) error {
	cl, err := cfg.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, b.o.Partitions, b.replication, nil, names...)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	return nil
}

func (b *bench) deleteTopics(cfg backbone.Config, names ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cl, err := cfg.Client(); err == nil {
		_, _ = kadm.NewClient(cl).DeleteTopics(ctx, names...) // best effort
		cl.Close()
	}
}

// sampleValues returns values as Flotilla writes them to its busiest
// topics: a command (with its cluster's inventory entry) and the
// operation events "started" and "succeeded" of each of a few clusters.
func sampleValues() ([][]byte, error) {
	var values [][]byte
	op := rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}
	for _, c := range simfleet.GenerateClusters(20) {
		wf, id := uuid.NewString(), uuid.NewString()
		cmd := records.Command{Envelope: envelope(), ID: id, WorkflowID: wf, ClusterID: c.ID, Attempt: 1, Operation: op, Cluster: c}
		started := records.OperationEvent{Envelope: envelope(), CommandID: id, WorkflowID: wf, ClusterID: c.ID, Attempt: 1,
			Status: records.OperationStarted, PreviousVersion: c.Version, Deadline: time.Now().Add(30 * time.Minute), Executor: "bench"}
		done := started
		done.Envelope, done.Status, done.Version = envelope(), records.OperationSucceeded, "3.9.1"
		for _, v := range []any{cmd, started, done} {
			b, err := records.Encode(v)
			if err != nil {
				return nil, err
			}
			values = append(values, b)
		}
	}
	return values, nil
}

// rawProduce writes n records of values to topic, keyed as Flotilla keys
// them (workflowID/clusterID, over many workflows), and returns how long
// it took.
func rawProduce(ctx context.Context, cfg backbone.Config, topic string, values [][]byte, n int) (time.Duration, error) {
	cl, err := cfg.Client(kgo.ProducerLinger(5 * time.Millisecond))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	workflows := make([]string, 1000)
	for i := range workflows {
		workflows[i] = uuid.NewString()
	}
	var failed firstErr
	start := time.Now()
	for i := range n {
		key := fmt.Sprintf("%s/sim-%06d", workflows[i%len(workflows)], i)
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: values[i%len(values)]}, failed.promise)
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, err
	}
	return time.Since(start), failed.get()
}

// rawConsume reads n records from the start of topics (read committed)
// and returns how long it took, from the client's first poll.
func rawConsume(ctx context.Context, cfg backbone.Config, n int, topics ...string) (time.Duration, error) {
	if n == 0 {
		return 0, nil
	}
	cl, err := cfg.Client(kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	start := time.Now()
	got := 0
	for got < n {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("%d of %d records read: %w", got, n, err)
		}
		if err := fetches.Err(); err != nil {
			return 0, err
		}
		got += fetches.NumRecords()
	}
	return time.Since(start), nil
}

// rawTxnLoop runs a consume→produce loop in transactions, like the
// planner's: each poll's records are produced to out in one transaction
// that also commits their offsets. A raw producer writes n records of
// values to in meanwhile, as fast as it can, so that each transaction
// takes what arrived while the one before committed, as the planner's
// do. It returns how long it took from the producer's start to the n-th
// record committed (so never less than the producer took), and the
// transactions committed.
func rawTxnLoop(ctx context.Context, cfg backbone.Config, in, out string, values [][]byte, n int) (time.Duration, int, error) {
	group := cfg.Namespace + ".raw-txn"
	assigned := make(chan struct{})
	var once sync.Once
	var start time.Time // when the group assigned the partitions and the producer began
	sess, err := kgo.NewGroupTransactSession(cfg.Opts(
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(in), kgo.Balancers(kgo.RangeBalancer()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(), kgo.TransactionalID(group),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			once.Do(func() { start = time.Now(); close(assigned) })
		}),
	)...)
	if err != nil {
		return 0, 0, err
	}
	defer sess.Close()
	produced := make(chan error, 1)
	go func() {
		select {
		case <-assigned:
			_, err := rawProduce(ctx, cfg, in, values, n)
			produced <- err
		case <-ctx.Done():
			produced <- ctx.Err()
		}
	}()
	commits, err := transactAll(ctx, sess, out, n)
	if err := errors.Join(err, <-produced); err != nil {
		return 0, commits, err
	}
	return time.Since(start), commits, nil
}

// transactAll polls and transacts until n records are committed, and
// returns the transactions committed.
func transactAll(ctx context.Context, sess *kgo.GroupTransactSession, out string, n int) (int, error) {
	done, commits := 0, 0
	for done < n {
		fetches := sess.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return commits, fmt.Errorf("%d of %d records done: %w", done, n, err)
		}
		if err := fetches.Err(); err != nil {
			return commits, err
		}
		if fetches.NumRecords() == 0 {
			continue
		}
		committed, err := transact(ctx, sess, fetches, out)
		if err != nil {
			return commits, err
		}
		if committed {
			done += fetches.NumRecords()
			commits++
		}
	}
	return commits, nil
}

// transact produces every record of fetches to out in one transaction.
func transact(ctx context.Context, sess *kgo.GroupTransactSession, fetches kgo.Fetches, out string) (bool, error) {
	if err := sess.Begin(); err != nil {
		return false, err
	}
	var failed firstErr
	fetches.EachRecord(func(r *kgo.Record) {
		sess.Produce(ctx, &kgo.Record{Topic: out, Key: r.Key, Value: r.Value}, failed.promise)
	})
	committed, err := sess.End(ctx, kgo.TransactionEndTry(failed.get() == nil))
	return committed, errors.Join(err, failed.get())
}

// firstErr keeps the first error of produce promises.
type firstErr struct {
	mu  sync.Mutex
	err error
}

func (f *firstErr) promise(_ *kgo.Record, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstErr) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
