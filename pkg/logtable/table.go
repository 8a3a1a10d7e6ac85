package logtable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrStopped is returned (wrapped, with the reason Run returned) by
// WaitReady and WaitFor once the table's Run has returned: the table will
// not change anymore.
var ErrStopped = errors.New("table stopped")

// ErrNullKey is the error OnDecodeError is given for a record with a null
// key, which a table (a compacted topic) cannot hold.
var ErrNullKey = errors.New("a record with a null key on a compacted topic")

// state is a table's recovery state, as in goka's partition tables.
type state int

const (
	stateIdle       state = iota // Run not called yet
	stateRecovering              // reading up to the end offsets captured at start
	stateReady                   // caught up, following the log
	stateStopped                 // Run returned
)

// Option configures a Table. Options that do not mention V in their
// arguments need it spelled out: logtable.WithLogger[records.ClusterRecord](l).
type Option[V any] func(*Table[V])

// OnChange sets fn to be called for every record applied after the table has
// caught up — not for the records of the rebuild, which are the past. It is
// called from the table's goroutine, one record at a time, in offset order
// per partition, after the change is visible to Get; it must not block for
// long, as the table does not advance meanwhile. For a tombstone, deleted is
// true and v is the zero value.
func OnChange[V any](fn func(key string, v V, deleted bool)) Option[V] {
	return func(t *Table[V]) { t.onChange = fn }
}

// OnRecord sets fn to be given every record the table applies, before it
// is decoded, tombstones included; ready says whether the table had caught
// up. For state kept beside the table's values, such as the chain links in
// the records' headers (package auditchain).
func OnRecord[V any](fn func(r *kgo.Record, ready bool)) Option[V] {
	return func(t *Table[V]) { t.onRecord = fn }
}

// Stream makes the table keep nothing: every record, those of the rebuild
// too, is handed to fn instead, and Get, Snapshot and Len see an empty
// table. loaded tells whether the table had caught up (was Ready) before
// the record: the records with loaded false are the rebuild. fn is called
// from the table's goroutine, one record at a time, in offset order per
// partition. It is for a service that keeps the content in a form of its
// own, so as not to hold it twice.
func Stream[V any](fn func(key string, v V, deleted, loaded bool)) Option[V] {
	return func(t *Table[V]) { t.stream = fn }
}

// OnDecodeError sets fn to be told of a record that cannot be decoded, or
// has a null key (ErrNullKey). The record is skipped (the key keeps its
// previous value) and the table carries on: a bad record is never fatal. Without this option such a record is
// logged as a warning naming topic, partition, offset and key.
func OnDecodeError[V any](fn func(r *kgo.Record, err error)) Option[V] {
	return func(t *Table[V]) { t.onDecodeError = fn }
}

// Partitions limits the table to some partitions of its topic: those a
// service owns, such as the executor's partition of commands. Without it
// the table reads every partition, including partitions added later.
func Partitions[V any](ps ...int32) Option[V] {
	return func(t *Table[V]) { t.partitions = slices.Clone(ps) }
}

// OnCaughtUp sets fn to be told, once, how long the table took from Run
// to catching up with the end offsets it captured (a service's start-up
// cost, for its metrics). It is called from the table's goroutine.
func OnCaughtUp[V any](fn func(took time.Duration)) Option[V] {
	return func(t *Table[V]) { t.onCaughtUp = fn }
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger[V any](l *slog.Logger) Option[V] {
	return func(t *Table[V]) { t.log = l }
}

// Table is a key → V map kept from a compacted topic: rebuilt from the log
// start when Run starts, then following the log. Keys are the record keys as
// strings; a tombstone (nil value) deletes its key; a record with a null key
// is skipped with a warning. Every partition of the topic is read directly
// (no consumer group), including partitions added later.
//
// It is safe for concurrent use. Readers should wait for WaitReady before
// acting on its content: until then it holds an older state of the log.
type Table[V any] struct {
	topic         string
	clientOpts    []kgo.Opt
	decode        func(*kgo.Record) (V, error)
	onChange      func(key string, v V, deleted bool)
	onRecord      func(r *kgo.Record, ready bool)
	stream        func(key string, v V, deleted, loaded bool)
	onDecodeError func(r *kgo.Record, err error)
	onCaughtUp    func(took time.Duration)
	started       time.Time // when Run began
	log           *slog.Logger
	partitions    []int32 // nil: every partition

	mu      sync.RWMutex
	m       map[string]V
	state   state
	changed chan struct{} // closed and replaced whenever the table changes
	ready   chan struct{} // closed when caught up
	stopped chan struct{} // closed when Run returns
	err     error         // why Run returned
}

// New returns a table of topic, read with a client made from clientOpts (the
// connection settings: kgo.SeedBrokers, TLS, SASL... — not consumer options)
// and decoding record values with decode. It does nothing until Run.
func New[V any](topic string, clientOpts []kgo.Opt, decode func(*kgo.Record) (V, error), opts ...Option[V]) *Table[V] {
	t := &Table[V]{
		topic:      topic,
		clientOpts: clientOpts,
		decode:     decode,
		log:        slog.Default(),
		m:          make(map[string]V),
		changed:    make(chan struct{}),
		ready:      make(chan struct{}),
		stopped:    make(chan struct{}),
	}
	for _, o := range opts {
		o(t)
	}
	t.log = t.log.With("topic", topic)
	if t.onDecodeError == nil {
		t.onDecodeError = func(r *kgo.Record, err error) {
			t.log.Warn("skipping record that cannot be decoded",
				"partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", err)
		}
	}
	return t
}

// Run rebuilds the table from the log start up to the end offsets (last
// stable offsets) captured as it starts, marks it ready, and then follows the
// log until ctx ends. It blocks meanwhile; run it in its own goroutine.
//
// It returns ctx's error when ctx ends, or earlier with an error naming the
// topic if the topic does not exist or a partition can no longer be fetched
// (the table then stops changing: restart the service rather than act on a
// stale table). A table runs once: a second Run returns an error at once.
func (t *Table[V]) Run(ctx context.Context) (err error) {
	t.mu.Lock()
	if t.state != stateIdle {
		t.mu.Unlock()
		return fmt.Errorf("table %s: Run called twice", t.topic)
	}
	t.state = stateRecovering
	t.started = time.Now()
	t.mu.Unlock()
	defer func() { t.stop(err) }()

	consume := kgo.ConsumeTopics(t.topic)
	if t.partitions != nil {
		start := map[int32]kgo.Offset{}
		for _, p := range t.partitions {
			start[p] = kgo.NewOffset().AtStart()
		}
		consume = kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{t.topic: start})
	}
	cl, err := kgo.NewClient(readerOpts(t.clientOpts, consume)...)
	if err != nil {
		return fmt.Errorf("table %s: %w", t.topic, err)
	}
	defer cl.Close()
	c, err := capture(ctx, cl, t.clientOpts, t.topic, t.partitions)
	if err != nil {
		return fmt.Errorf("table %s: %w", t.topic, err)
	}
	defer c.close()
	for {
		if c.done() {
			t.markReady()
		}
		applied := false
		err := c.poll(ctx, cl, t.log, func(r *kgo.Record, caughtUp bool) {
			if caughtUp {
				t.markReady()
			}
			applied = t.apply(r) || applied
		})
		if err != nil {
			return fmt.Errorf("table %s: %w", t.topic, err)
		}
		if applied {
			t.broadcast()
		}
	}
}

// apply applies one data record and reports whether the table changed.
func (t *Table[V]) apply(r *kgo.Record) bool {
	if r.Key == nil {
		t.onDecodeError(r, ErrNullKey)
		return false
	}
	if t.onRecord != nil {
		t.mu.RLock()
		ready := t.state == stateReady
		t.mu.RUnlock()
		t.onRecord(r, ready)
	}
	key := string(r.Key)
	var v V
	deleted := r.Value == nil
	if !deleted {
		var err error
		if v, err = t.decode(r); err != nil {
			t.onDecodeError(r, err)
			return false
		}
	}
	t.mu.Lock()
	switch {
	case t.stream != nil:
	case deleted:
		delete(t.m, key)
	default:
		t.m[key] = v
	}
	ready := t.state == stateReady
	t.mu.Unlock()
	if t.stream != nil {
		t.stream(key, v, deleted, ready)
	}
	if ready && t.onChange != nil {
		t.onChange(key, v, deleted)
	}
	return true
}

func (t *Table[V]) markReady() {
	t.mu.Lock()
	if t.state != stateRecovering {
		t.mu.Unlock()
		return
	}
	t.state = stateReady
	t.mu.Unlock()
	close(t.ready)
	t.log.Debug("table caught up", "keys", t.Len())
	if t.onCaughtUp != nil {
		t.onCaughtUp(time.Since(t.started))
	}
	t.broadcast()
}

func (t *Table[V]) stop(err error) {
	t.mu.Lock()
	t.state, t.err = stateStopped, err
	t.mu.Unlock()
	close(t.stopped)
}

func (t *Table[V]) broadcast() {
	t.mu.Lock()
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// stopErr is the error WaitReady and WaitFor return once Run has returned.
func (t *Table[V]) stopErr() error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return fmt.Errorf("table %s: %w: %w", t.topic, ErrStopped, t.err)
}

// Ready reports whether the table has caught up and is following the log.
// It is false before, and again once Run has returned.
func (t *Table[V]) Ready() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.state == stateReady
}

// WaitReady blocks until the table has caught up. It fails with ctx's error
// if ctx ends first, or with an error wrapping ErrStopped (and the reason) if
// Run returns before the table caught up.
func (t *Table[V]) WaitReady(ctx context.Context) error {
	select {
	case <-t.ready:
		return nil
	case <-t.stopped:
		select {
		case <-t.ready: // it did catch up before stopping
			return nil
		default:
			return t.stopErr()
		}
	case <-ctx.Done():
		return fmt.Errorf("wait for table %s to catch up: %w", t.topic, ctx.Err())
	}
}

// Get returns the value of key, and whether the table holds it.
func (t *Table[V]) Get(key string) (V, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	v, ok := t.m[key]
	return v, ok
}

// Snapshot returns a copy of the table. Values are copied shallowly: do not
// modify what they point to.
func (t *Table[V]) Snapshot() map[string]V {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return maps.Clone(t.m)
}

// Keys returns the keys of the table, in no order: cheaper than Snapshot
// where the values are read one by one (Get) or not at all.
func (t *Table[V]) Keys() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return slices.Collect(maps.Keys(t.m))
}

// Len returns the number of keys in the table.
func (t *Table[V]) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

// WaitFor blocks until cond holds: it checks cond now and after every change
// to the table (cond may call Get, Len, Ready...). It fails with ctx's error
// if ctx ends first, or with an error wrapping ErrStopped once Run has
// returned and cond still does not hold. Meant for tests and CLIs; services
// react to changes with OnChange.
func (t *Table[V]) WaitFor(ctx context.Context, cond func(*Table[V]) bool) error {
	for {
		t.mu.RLock()
		changed := t.changed
		t.mu.RUnlock()
		if cond(t) {
			return nil
		}
		select {
		case <-changed:
		case <-t.stopped:
			if cond(t) {
				return nil
			}
			return t.stopErr()
		case <-ctx.Done():
			return fmt.Errorf("wait for table %s: %w", t.topic, ctx.Err())
		}
	}
}
