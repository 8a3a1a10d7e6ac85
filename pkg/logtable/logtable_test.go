package logtable

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// testBroker is the broker a test runs against: the one in
// FLOTILLA_TEST_BROKERS if set (real Kafka is the judge), else the test
// binary's embedded broker (brokertest). Topic names are unique per test.
type testBroker struct {
	t     *testing.T
	ctx   context.Context
	seeds []string
	adm   *kadm.Client
}

func newTestBroker(t *testing.T) *testBroker {
	t.Helper()
	seeds := brokertest.Addrs(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	cl, err := kgo.NewClient(brokertest.Opts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &testBroker{t: t, ctx: ctx, seeds: seeds, adm: kadm.NewClient(cl)}
}

func (b *testBroker) opts() []kgo.Opt { return []kgo.Opt{kgo.SeedBrokers(b.seeds...)} }

// topic creates a compacted topic with a name unique to the test.
func (b *testBroker) topic(partitions int32) string {
	b.t.Helper()
	return b.topicWith(partitions, "compact")
}

// topicWith creates a topic with cleanup.policy policy.
func (b *testBroker) topicWith(partitions int32, policy string) string {
	b.t.Helper()
	name := fmt.Sprintf("logtable-%s-%d", regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(b.t.Name(), "-"), time.Now().UnixNano())
	// topics.Ensure returns once the topic is in the broker's metadata: a
	// producer that asked too early would wait out kgo's metadata min age.
	err := topics.Ensure(b.ctx, b.adm, []topics.Spec{{
		Name: name, Partitions: partitions, ReplicationFactor: -1,
		Configs: map[string]*string{"cleanup.policy": kadm.StringPtr(policy)},
	}})
	if err != nil {
		b.t.Fatalf("create topic %s: %v", name, err)
	}
	return name
}

// producer returns a client producing to topic on explicit partitions;
// transactional if txnID is not "".
func (b *testBroker) producer(topic, txnID string) *kgo.Client {
	b.t.Helper()
	opts := append(b.opts(), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if txnID != "" {
		opts = append(opts, kgo.TransactionalID(fmt.Sprintf("%s-%d", txnID, time.Now().UnixNano())))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(cl.Close)
	return cl
}

func put(p int32, key, value string) *kgo.Record {
	return &kgo.Record{Partition: p, Key: []byte(key), Value: []byte(value)}
}

func del(p int32, key string) *kgo.Record { return &kgo.Record{Partition: p, Key: []byte(key)} }

func (b *testBroker) produce(cl *kgo.Client, recs ...*kgo.Record) {
	b.t.Helper()
	if err := cl.ProduceSync(b.ctx, recs...).FirstErr(); err != nil {
		b.t.Fatal(err)
	}
}

// txn produces recs in one transaction and commits it (or aborts it).
func (b *testBroker) txn(cl *kgo.Client, commit bool, recs ...*kgo.Record) {
	b.t.Helper()
	if err := cl.BeginTransaction(); err != nil {
		b.t.Fatal(err)
	}
	b.produce(cl, recs...)
	if err := cl.EndTransaction(b.ctx, kgo.TransactionEndTry(commit)); err != nil {
		b.t.Fatal(err)
	}
}

// openTxn produces recs in a transaction left open until the test ends.
func (b *testBroker) openTxn(cl *kgo.Client, recs ...*kgo.Record) {
	b.t.Helper()
	if err := cl.BeginTransaction(); err != nil {
		b.t.Fatal(err)
	}
	b.produce(cl, recs...)
	b.t.Cleanup(func() { _ = cl.EndTransaction(context.Background(), kgo.TryAbort) })
}

// decodeString decodes a value as a string; a value starting with '!' is
// malformed.
func decodeString(r *kgo.Record) (string, error) {
	if bytes.HasPrefix(r.Value, []byte("!")) {
		return "", fmt.Errorf("malformed value %q", r.Value)
	}
	return string(r.Value), nil
}

// Each scenario writes a log; both readers — ReadToEnd and Table — must
// rebuild exactly want from it, and return (become ready) without waiting
// for anything written after the scenario.
var scenarios = []struct {
	name       string
	partitions int32
	write      func(b *testBroker, topic string)
	want       map[string]string
}{
	{
		name:       "empty topic",
		partitions: 3,
		write:      func(*testBroker, string) {},
		want:       map[string]string{},
	},
	{
		name:       "overwrites and tombstones",
		partitions: 2,
		write: func(b *testBroker, topic string) {
			cl := b.producer(topic, "")
			b.produce(cl, put(0, "a", "1"), put(0, "b", "1"), put(1, "c", "1"), put(0, "a", "2"), del(0, "b"), del(1, "never-set"))
		},
		want: map[string]string{"a": "2", "c": "1"},
	},
	{
		name:       "partition ends in a commit marker",
		partitions: 2,
		write: func(b *testBroker, topic string) {
			cl := b.producer(topic, "commit")
			b.txn(cl, true, put(0, "a", "1"), put(1, "b", "1"))
			b.txn(cl, true, put(0, "a", "2"), del(1, "b"))
		},
		want: map[string]string{"a": "2"},
	},
	{
		name:       "partition ends in an aborted transaction",
		partitions: 1,
		write: func(b *testBroker, topic string) {
			b.produce(b.producer(topic, ""), put(0, "a", "1"))
			b.txn(b.producer(topic, "abort"), false, put(0, "a", "aborted"), put(0, "x", "aborted"), del(0, "a"))
		},
		want: map[string]string{"a": "1"},
	},
	{
		name:       "another producer has an open transaction",
		partitions: 2,
		write: func(b *testBroker, topic string) {
			committed := b.producer(topic, "committed")
			b.txn(committed, true, put(0, "a", "1"), put(1, "b", "1"))
			b.openTxn(b.producer(topic, "open"), put(0, "a", "open"), put(1, "z", "open"))
			// Committed after the open transaction began: past the
			// last stable offset, so not part of this rebuild.
			b.txn(committed, true, put(0, "late", "1"))
		},
		want: map[string]string{"a": "1", "b": "1"},
	},
	{
		// The aborted records sit right below the last stable offset
		// but their abort marker lies past it: no record the reader
		// receives ever reaches the captured end.
		name:       "aborted transaction interleaved with an open one",
		partitions: 1,
		write: func(b *testBroker, topic string) {
			b.produce(b.producer(topic, ""), put(0, "a", "1"))
			aborted, open := b.producer(topic, "aborted"), b.producer(topic, "open")
			if err := aborted.BeginTransaction(); err != nil {
				b.t.Fatal(err)
			}
			b.produce(aborted, put(0, "a", "aborted"))
			b.openTxn(open, put(0, "z", "open"))
			if err := aborted.EndTransaction(b.ctx, kgo.TryAbort); err != nil {
				b.t.Fatal(err)
			}
		},
		want: map[string]string{"a": "1"},
	},
}

func TestReadToEnd(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			b := newTestBroker(t)
			topic := b.topic(sc.partitions)
			sc.write(b, topic)
			got := map[string]string{}
			lastOffset := map[int32]int64{}
			err := ReadToEnd(b.ctx, b.opts(), topic, nil, func(r *kgo.Record) {
				if r.Attrs.IsControl() {
					t.Errorf("control record applied at offset %d", r.Offset)
				}
				if last, ok := lastOffset[r.Partition]; ok && r.Offset <= last {
					t.Errorf("partition %d: offset %d applied after %d", r.Partition, r.Offset, last)
				}
				lastOffset[r.Partition] = r.Offset
				if r.Value == nil {
					delete(got, string(r.Key))
				} else {
					got[string(r.Key)] = string(r.Value)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, sc.want) {
				t.Errorf("read %v, want %v", got, sc.want)
			}
		})
	}
}

func TestTableRebuild(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			b := newTestBroker(t)
			topic := b.topic(sc.partitions)
			sc.write(b, topic)
			tbl := New(topic, b.opts(), decodeString)
			done := runTable(t, b.ctx, tbl)
			if err := tbl.WaitReady(b.ctx); err != nil {
				t.Fatal(err)
			}
			if got := tbl.Snapshot(); !maps.Equal(got, sc.want) {
				t.Errorf("table %v, want %v", got, sc.want)
			}
			if !tbl.Ready() || tbl.Len() != len(sc.want) {
				t.Errorf("Ready() = %v, Len() = %d", tbl.Ready(), tbl.Len())
			}
			for k, v := range sc.want {
				if got, ok := tbl.Get(k); !ok || got != v {
					t.Errorf("Get(%q) = %q, %v; want %q", k, got, ok, v)
				}
			}
			done()
		})
	}
}

// runTable runs tbl until the returned function is called, which checks that
// Run returned the context's error.
func runTable[V any](t *testing.T, ctx context.Context, tbl *Table[V]) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- tbl.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

type change struct {
	key, value string
	deleted    bool
}

func TestTableOnChangeOnlyAfterCatchUp(t *testing.T) {
	b := newTestBroker(t)
	topic := b.topic(2)
	cl := b.producer(topic, "")
	b.produce(cl, put(0, "a", "1"), put(1, "b", "1"), put(0, "a", "2"))

	var mu sync.Mutex
	var changes []change
	tbl := New(topic, b.opts(), decodeString, OnChange(func(key, v string, deleted bool) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, change{key, v, deleted})
	}))
	runTable(t, b.ctx, tbl)
	if err := tbl.WaitReady(b.ctx); err != nil {
		t.Fatal(err)
	}

	b.produce(cl, put(1, "c", "1"), put(0, "a", "3"), del(1, "b"))
	want := []change{{"c", "1", false}, {"a", "3", false}, {"b", "", true}}
	err := tbl.WaitFor(b.ctx, func(*Table[string]) bool {
		mu.Lock()
		defer mu.Unlock()
		return len(changes) >= len(want)
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := slices.Clone(changes)
	mu.Unlock()
	// Order holds per partition only.
	byKey := func(a, b change) int { return strings.Compare(a.key, b.key) }
	slices.SortFunc(got, byKey)
	slices.SortFunc(want, byKey)
	if !slices.Equal(got, want) {
		t.Errorf("OnChange calls %v, want only the records after catch-up %v", got, want)
	}
	if snap := tbl.Snapshot(); !maps.Equal(snap, map[string]string{"a": "3", "c": "1"}) {
		t.Errorf("table %v", snap)
	}
}

// A streaming table keeps nothing and hands over every record: the
// rebuild's as not loaded, those after it as loaded.
func TestTableStream(t *testing.T) {
	b := newTestBroker(t)
	topic := b.topic(2)
	cl := b.producer(topic, "")
	b.produce(cl, put(0, "a", "1"), put(1, "b", "1"), put(0, "a", "2"), del(1, "b"))

	rebuilt := map[string]string{} // the table's goroutine's until ready
	loaded := make(chan change, 10)
	tbl := New(topic, b.opts(), decodeString, Stream(func(key, v string, deleted, isLoaded bool) {
		switch {
		case isLoaded:
			loaded <- change{key, v, deleted}
		case deleted:
			delete(rebuilt, key)
		default:
			rebuilt[key] = v
		}
	}))
	runTable(t, b.ctx, tbl)
	if err := tbl.WaitReady(b.ctx); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(rebuilt, map[string]string{"a": "2"}) {
		t.Errorf("rebuild streamed %v, want a=2", rebuilt)
	}

	b.produce(cl, put(1, "c", "1"), del(0, "a"))
	want := []change{{"a", "", true}, {"c", "1", false}}
	var got []change
	for len(got) < len(want) {
		select {
		case c := <-loaded:
			got = append(got, c)
		case <-b.ctx.Done():
			t.Fatalf("streamed after the rebuild %v, want %v: %v", got, want, b.ctx.Err())
		}
	}
	slices.SortFunc(got, func(a, b change) int { return strings.Compare(a.key, b.key) })
	if !slices.Equal(got, want) {
		t.Errorf("streamed after the rebuild %v, want %v", got, want)
	}
	if n := tbl.Len(); n != 0 {
		t.Errorf("a streaming table holds %d keys", n)
	}
}

func TestTableSkipsBadRecords(t *testing.T) {
	b := newTestBroker(t)
	// Kafka refuses records without a key on a compacted topic, but a
	// table may read a topic that is not (or was not always) compacted.
	topic := b.topicWith(1, "delete")
	cl := b.producer(topic, "")
	b.produce(cl, put(0, "a", "!bad"), put(0, "b", "1"), &kgo.Record{Value: []byte("no key")}, put(0, "c", "1"), put(0, "c", "!bad"))

	var mu sync.Mutex
	var reported []string
	var logs bytes.Buffer
	tbl := New(topic, b.opts(), decodeString,
		OnDecodeError[string](func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			reported = append(reported, fmt.Sprintf("%s@%d: %v", r.Key, r.Offset, err))
		}),
		WithLogger[string](slog.New(slog.NewTextHandler(&logs, nil))),
	)
	runTable(t, b.ctx, tbl)
	if err := tbl.WaitReady(b.ctx); err != nil {
		t.Fatal(err)
	}
	b.produce(cl, put(0, "d", "!bad"), put(0, "e", "1"))
	if err := tbl.WaitFor(b.ctx, func(tbl *Table[string]) bool { _, ok := tbl.Get("e"); return ok }); err != nil {
		t.Fatal(err)
	}

	// A bad record is skipped: the key keeps its previous value.
	if got := tbl.Snapshot(); !maps.Equal(got, map[string]string{"b": "1", "c": "1", "e": "1"}) {
		t.Errorf("table %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	// A null key is reported like a value that does not decode.
	want := []string{`a@0: malformed value "!bad"`, `@2: ` + ErrNullKey.Error(), `c@4: malformed value "!bad"`, `d@5: malformed value "!bad"`}
	if !slices.Equal(reported, want) {
		t.Errorf("reported %q, want %q", reported, want)
	}
}

func TestTableLogsDecodeErrorsByDefault(t *testing.T) {
	b := newTestBroker(t)
	topic := b.topic(1)
	b.produce(b.producer(topic, ""), put(0, "a", "!bad"), put(0, "b", "1"))
	var logs bytes.Buffer
	tbl := New(topic, b.opts(), decodeString, WithLogger[string](slog.New(slog.NewTextHandler(&logs, nil))))
	runTable(t, b.ctx, tbl)
	if err := tbl.WaitReady(b.ctx); err != nil {
		t.Fatal(err)
	}
	line := logs.String()
	for _, want := range []string{"level=WARN", "topic=" + topic, "partition=0", "offset=0", "key=a", "malformed"} {
		if !strings.Contains(line, want) {
			t.Errorf("log %q lacks %q", line, want)
		}
	}
	if got, _ := tbl.Get("b"); got != "1" {
		t.Errorf("record after the bad one not applied")
	}
}

func TestReadToEndPartitions(t *testing.T) {
	b := newTestBroker(t)
	topic := b.topic(3)
	b.produce(b.producer(topic, ""), put(0, "a", "1"), put(1, "b", "1"), put(2, "c", "1"))
	var got []string
	if err := ReadToEnd(b.ctx, b.opts(), topic, []int32{0, 2}, func(r *kgo.Record) { got = append(got, string(r.Key)) }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("read %v from partitions 0 and 2", got)
	}
}

func TestReadToEndErrors(t *testing.T) {
	b := newTestBroker(t)
	topic := b.topic(2)
	b.openTxn(b.producer(topic, "open"), put(0, "a", "1"))
	b.produce(b.producer(topic, ""), put(1, "b", "1"))
	canceled, cancel := context.WithCancel(b.ctx)
	cancel()
	for _, tc := range []struct {
		name       string
		ctx        context.Context
		topic      string
		partitions []int32
		want       string
		is         error
	}{
		{"missing topic", b.ctx, "no-such-topic", nil, "topic no-such-topic does not exist", kerr.UnknownTopicOrPartition},
		{"missing partition", b.ctx, topic, []int32{5}, fmt.Sprintf("topic %s has no partition 5", topic), nil},
		{"context ended", canceled, topic, nil, "context canceled", context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ReadToEnd(tc.ctx, b.opts(), tc.topic, tc.partitions, func(*kgo.Record) {})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

func TestTableStopped(t *testing.T) {
	b := newTestBroker(t)

	missing := New("no-such-topic", b.opts(), decodeString)
	if err := missing.Run(b.ctx); err == nil || !strings.Contains(err.Error(), "no-such-topic") {
		t.Fatalf("Run on a missing topic: %v", err)
	}
	if err := missing.WaitReady(b.ctx); !errors.Is(err, ErrStopped) || !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("WaitReady after Run failed: %v", err)
	}
	if err := missing.Run(b.ctx); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Run: %v", err)
	}

	topic := b.topic(1)
	tbl := New(topic, b.opts(), decodeString)
	stop := runTable(t, b.ctx, tbl)
	if err := tbl.WaitReady(b.ctx); err != nil {
		t.Fatal(err)
	}
	stop()
	if tbl.Ready() {
		t.Error("Ready after Run returned")
	}
	err := tbl.WaitFor(b.ctx, func(tbl *Table[string]) bool { return tbl.Len() > 0 })
	if !errors.Is(err, ErrStopped) {
		t.Errorf("WaitFor on a stopped table: %v", err)
	}
}
