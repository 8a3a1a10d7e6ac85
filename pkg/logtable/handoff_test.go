package logtable

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// handOffRead runs ReadToEnd with AwaitOpenTransactions on partition 0 of
// topic in the background. Once it has captured its ends, captured is
// called (on ReadToEnd's goroutine, before it waits); the result comes on
// the returned channel.
func handOffRead(b *testBroker, ctx context.Context, topic string, captured func(ends map[int32]int64)) <-chan handOffResult {
	res := make(chan handOffResult, 1)
	go func() {
		got := map[string]string{}
		err := ReadToEnd(ctx, b.opts(), topic, []int32{0}, func(r *kgo.Record) {
			if r.Value == nil {
				delete(got, string(r.Key))
				return
			}
			got[string(r.Key)] = string(r.Value)
		}, AwaitOpenTransactions(), OnEnds(captured))
		res <- handOffResult{got, err}
	}()
	return res
}

type handOffResult struct {
	got map[string]string
	err error
}

func (b *testBroker) awaitResult(res <-chan handOffResult) handOffResult {
	b.t.Helper()
	select {
	case r := <-res:
		return r
	case <-b.ctx.Done():
		b.t.Fatalf("ReadToEnd did not return: %v", b.ctx.Err())
		return handOffResult{}
	}
}

// TestReadToEndAwaitsOpenTransactions: a transaction open when a hand-off
// read starts, and ended only after it captured its ends, is waited for;
// its records are read if it commits and not if it aborts. A transaction
// begun after the capture is not waited for, and the wait ends with ctx.
func TestReadToEndAwaitsOpenTransactions(t *testing.T) {
	for _, commit := range []bool{true, false} {
		name := map[bool]string{true: "open transaction commits", false: "open transaction aborts"}[commit]
		t.Run(name, func(t *testing.T) {
			b := newTestBroker(t)
			topic := b.topic(1)
			b.produce(b.producer(topic, ""), put(0, "a", "1"))
			prev := b.producer(topic, "previous-owner")
			if err := prev.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			b.produce(prev, put(0, "a", "2"), put(0, "b", "1"))

			captured := make(chan map[int32]int64, 1)
			res := handOffRead(b, b.ctx, topic, func(ends map[int32]int64) { captured <- ends })
			var ends map[int32]int64
			select {
			case ends = <-captured:
			case <-b.ctx.Done():
				t.Fatalf("ReadToEnd did not capture its ends: %v", b.ctx.Err())
			}
			if want := map[int32]int64{0: 3}; !maps.Equal(ends, want) {
				t.Errorf("captured ends %v, want the high watermark %v", ends, want)
			}
			if err := prev.EndTransaction(b.ctx, kgo.TransactionEndTry(commit)); err != nil {
				t.Fatal(err)
			}
			r := b.awaitResult(res)
			if r.err != nil {
				t.Fatal(r.err)
			}
			want := map[string]string{"a": "1"}
			if commit {
				want = map[string]string{"a": "2", "b": "1"}
			}
			if !maps.Equal(r.got, want) {
				t.Fatalf("read %v, want %v", r.got, want)
			}
		})
	}

	t.Run("transaction begun after the capture", func(t *testing.T) {
		b := newTestBroker(t)
		topic := b.topic(1)
		b.produce(b.producer(topic, ""), put(0, "a", "1"))
		later := b.producer(topic, "later")
		t.Cleanup(func() { _ = later.EndTransaction(context.Background(), kgo.TryAbort) })
		var beginErr error // the callback runs on ReadToEnd's goroutine: no t.Fatal there
		res := handOffRead(b, b.ctx, topic, func(map[int32]int64) {
			if beginErr = later.BeginTransaction(); beginErr == nil {
				beginErr = later.ProduceSync(b.ctx, put(0, "a", "later")).FirstErr()
			}
		})
		r := b.awaitResult(res)
		if beginErr != nil {
			t.Fatalf("open a transaction after the capture: %v", beginErr)
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		if want := map[string]string{"a": "1"}; !maps.Equal(r.got, want) {
			t.Fatalf("read %v, want %v", r.got, want)
		}
	})

	t.Run("wait ends with ctx", func(t *testing.T) {
		b := newTestBroker(t)
		topic := b.topic(1)
		b.openTxn(b.producer(topic, "never-ends"), put(0, "a", "open"))
		ctx, cancel := context.WithCancel(b.ctx)
		defer cancel()
		res := handOffRead(b, ctx, topic, func(map[int32]int64) { cancel() })
		r := b.awaitResult(res)
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("ReadToEnd returned %v, read %v; want context.Canceled", r.err, r.got)
		}
	})
}

// TestReadToEndOnEnds: without AwaitOpenTransactions the ends told are the
// last stable offsets.
func TestReadToEndOnEnds(t *testing.T) {
	b := newTestBroker(t)
	topic := b.topic(2)
	b.produce(b.producer(topic, ""), put(0, "a", "1"), put(0, "b", "1"), put(1, "c", "1"))
	b.openTxn(b.producer(topic, "open"), put(0, "a", "open"))
	var ends map[int32]int64
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := ReadToEnd(ctx, b.opts(), topic, nil, func(*kgo.Record) {}, OnEnds(func(e map[int32]int64) { ends = e })); err != nil {
		t.Fatal(err)
	}
	if want := map[int32]int64{0: 2, 1: 1}; !maps.Equal(ends, want) {
		t.Fatalf("ends %v, want %v", ends, want)
	}
}

// TestReadToEndSince starts each partition at its first record stamped at
// or after the time given, and reads nothing of a partition with none.
func TestReadToEndSince(t *testing.T) {
	b := newTestBroker(t)
	topic := b.topic(2)
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	at := func(r *kgo.Record, d time.Duration) *kgo.Record { r.Timestamp = base.Add(d); return r }
	b.produce(b.producer(topic, ""),
		at(put(0, "old", "1"), 0), at(put(0, "new", "1"), 10*time.Minute), at(put(0, "newer", "1"), 20*time.Minute),
		at(put(1, "old", "1"), time.Minute))
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	var read []string
	err := ReadToEnd(ctx, b.opts(), topic, nil, func(r *kgo.Record) {
		read = append(read, fmt.Sprintf("%d/%s", r.Partition, r.Key))
	}, Since(base.Add(5*time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"0/new", "0/newer"}; !slices.Equal(read, want) {
		t.Fatalf("read %v, want %v", read, want)
	}
}
