package logtable

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestFollow follows two of three partitions from captured ends: it gets
// what is written after them, committed, in order, and nothing from
// before, from the third partition or from an aborted transaction; it
// waits for records not written yet and stops when apply says so.
func TestFollow(t *testing.T) {
	b := newTestBroker(t)
	topic := b.topic(3)
	plain := b.producer(topic, "")
	txn := b.producer(topic, "follow")
	b.produce(plain, put(0, "old", "0"), put(1, "old", "1"), put(2, "old", "2"))
	b.txn(txn, true, put(0, "old-txn", "0"))
	ends, err := EndOffsets(b.ctx, b.opts(), topic, []int32{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	from := map[int32]kgo.Offset{}
	for p, end := range ends {
		from[p] = kgo.NewOffset().At(end)
	}
	b.produce(plain, put(2, "other", "2"), put(1, "a", "1"))
	b.txn(txn, false, put(0, "aborted", "0"))
	b.txn(txn, true, put(0, "b", "0"))

	var got []string
	second := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Follow(b.ctx, b.opts(), topic, from, func(r *kgo.Record) bool {
			got = append(got, string(r.Key))
			if len(got) == 2 {
				close(second) // written so far: a, b
			}
			return string(r.Key) == "last"
		})
	}()
	select {
	case <-second:
	case err := <-done:
		t.Fatalf("Follow returned %v before the records written after the ends", err)
	case <-b.ctx.Done():
		t.Fatal("Follow did not deliver the records written after the ends")
	}
	b.produce(plain, put(1, "c", "1"), put(1, "last", "1"), put(1, "after", "1"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	slices.Sort(got[:2]) // partitions interleave
	if want := []string{"a", "b", "c", "last"}; !slices.Equal(got, want) {
		t.Fatalf("followed %q, want %q", got, want)
	}

	ctx, cancel := context.WithTimeout(b.ctx, 100*time.Millisecond)
	defer cancel()
	if err := Follow(ctx, b.opts(), topic, map[int32]kgo.Offset{2: kgo.NewOffset().AtEnd()}, func(*kgo.Record) bool { return true }); err == nil {
		t.Fatal("Follow of a partition nothing is written to returned nil before its context ended")
	}
}

func TestTableOnCaughtUpIsToldOnce(t *testing.T) {
	b := newTestBroker(t)
	sc := scenarios[1]
	topic := b.topic(sc.partitions)
	sc.write(b, topic)
	calls := make(chan time.Duration, 2)
	tbl := New(topic, b.opts(), decodeString, OnCaughtUp[string](func(took time.Duration) { calls <- took }))
	done := runTable(t, b.ctx, tbl)
	defer done()
	if err := tbl.WaitReady(b.ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case took := <-calls:
		if took <= 0 {
			t.Errorf("caught up in %v, want > 0", took)
		}
	case <-b.ctx.Done():
		t.Fatal("OnCaughtUp was not called")
	}
	done()
	if len(calls) != 0 {
		t.Errorf("OnCaughtUp called %d more times", len(calls))
	}
}
