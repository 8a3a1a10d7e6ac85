package conformance

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fenced reports whether err says a producer was fenced by a newer one with
// its transactional ID. Kafka answers PRODUCER_FENCED or
// INVALID_PRODUCER_EPOCH depending on the request and on the transaction
// protocol version in use.
func fenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

// TestTransactionFencing is the planner's and notifier's crash recovery: an
// instance consumes a record, produces its decision in a transaction and,
// before it commits, is replaced by a successor under the same
// transactional ID (a restart with the same --instance). The successor's
// first transaction fences the first instance: its commit fails, and
// neither its output nor its consumed offset ever becomes visible, so the
// successor decides again from the same input.
func TestTransactionFencing(t *testing.T) {
	e := setup(t, time.Minute)
	in, out := e.topic("in", nil), e.topic("out", nil)
	txnID, group := e.name+".txn", e.name+".group"
	e.produce(e.cl, &kgo.Record{Topic: in, Key: []byte("job-1"), Value: []byte("work")})

	first, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(e.seeds...),
		kgo.TransactionalID(txnID),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	var job *kgo.Record
	for job == nil {
		fetches := first.PollFetches(e.ctx)
		if err := e.ctx.Err(); err != nil {
			t.Fatalf("the first instance did not receive its input: %v", err)
		}
		if err := fetches.Err(); err != nil {
			t.Fatalf("the first instance's fetch: %v", err)
		}
		if recs := fetches.Records(); len(recs) > 0 {
			job = recs[0]
		}
	}
	if err := first.Begin(); err != nil {
		t.Fatal(err)
	}
	e.produce(first.Client(), &kgo.Record{Topic: out, Key: job.Key, Value: []byte("decided by the first instance")})

	// The successor, with the same transactional ID: initialising it
	// fences the first instance and aborts its open transaction.
	successor, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.TransactionalID(txnID))
	if err != nil {
		t.Fatal(err)
	}
	defer successor.Close()
	if err := successor.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	e.produce(successor, &kgo.Record{Topic: out, Key: job.Key, Value: []byte("decided by the successor")})
	if err := successor.EndTransaction(e.ctx, kgo.TryCommit); err != nil {
		t.Fatalf("the successor's commit: %v", err)
	}

	committed, err := first.End(e.ctx, kgo.TryCommit)
	if committed || !fenced(err) {
		t.Fatalf("the fenced instance's commit: committed %v, error %v; want it refused as fenced (PRODUCER_FENCED or INVALID_PRODUCER_EPOCH)", committed, err)
	}
	t.Logf("the fenced instance's commit was refused: %v", err)

	values := func(recs []*kgo.Record) (data []string, aborts, commits int) {
		for _, r := range recs {
			if !r.Attrs.IsControl() {
				data = append(data, string(r.Value))
				continue
			}
			// A control record's key: version (2 bytes), type (2 bytes; 0 abort, 1 commit).
			if len(r.Key) >= 4 && r.Key[3] == 1 {
				commits++
			} else {
				aborts++
			}
		}
		return data, aborts, commits
	}
	// What read-committed readers (every Flotilla reader) see.
	data, _, commits := values(e.readAll(out, kgo.ReadCommitted()))
	if !slices.Equal(data, []string{"decided by the successor"}) || commits != 1 {
		t.Errorf("read committed: %q and %d commit markers; want only the successor's decision, committed", data, commits)
	}
	// The fenced decision was written, and aborted: the check above is not vacuous.
	data, aborts, _ := values(e.readAll(out, kgo.ReadUncommitted()))
	if !slices.Equal(data, []string{"decided by the first instance", "decided by the successor"}) || aborts != 1 {
		t.Errorf("read uncommitted: %q and %d abort markers; want both decisions, the first aborted", data, aborts)
	}
	// The input was not marked consumed: the successor reads it again.
	offsets, err := e.adm.FetchOffsets(e.ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offsets.Lookup(in, 0); ok && o.Err == nil && o.At >= 0 {
		t.Errorf("group %s committed offset %d on %s in the fenced transaction", group, o.At, in)
	}
}
