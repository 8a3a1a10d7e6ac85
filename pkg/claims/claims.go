// Package claims keeps one lock per cluster in the log, so that no cluster
// is ever in two running operations, whichever planners sent them and
// whichever executors carry them out.
//
// Before it acts on a cluster, an executor produces a claim to the claims
// topic, keyed "clusterID/commandID": every claim on a cluster lands on the
// same partition, so the log orders them. The claim first in line holds the
// cluster; the others wait. When the operation has ended, the executor
// releases the claim with a tombstone, and the next claim holds the
// cluster. Every executor reads every claim, so they all agree on who holds
// what, without talking to each other.
//
// A claim's place in line is the offset of its first record. Records that
// follow it for the same key (the grant, which names the executor that
// acts and whose own offset is the operation's fencing token) repeat that
// place in QueuedOffset; a key written again without one (a claim written
// twice before it was read back) takes the place of its latest record.
// Either way the place comes from the key's latest record alone, which is
// what compaction keeps: a reader that followed the log and one that
// rebuilt it after a restart agree on the order.
//
// The claims of a command are written by the executor that owns the
// command's partition of the commands topic, through its fenced,
// transactional writer: a former owner cannot write a claim once a new one
// took over, so a key never has two writers.
package claims

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// Writer writes records and returns once Kafka has them (committed, for a
// transactional writer), with their offsets set.
type Writer func(ctx context.Context, recs ...*kgo.Record) error

// ProduceWith is a Writer producing through cl, which must hash a key's
// part before '/' (topics.Partitioner). Tests and tools use it; the
// executor writes through its fenced writer instead.
func ProduceWith(cl *kgo.Client) Writer {
	return func(ctx context.Context, recs ...*kgo.Record) error {
		return cl.ProduceSync(ctx, recs...).FirstErr()
	}
}

// Claims is the claims topic, followed: who holds each cluster, and who
// waits. It is safe for concurrent use.
type Claims struct {
	topic string
	table *logtable.Table[claim]

	mu        sync.Mutex
	indexed   chan struct{}      // closed once the claims read at start are indexed
	byKey     map[string]claim   // live claims by record key
	byCluster map[string][]claim // live claims on a cluster, first in line first
	changed   chan struct{}      // closed and replaced on every change
}

// claim is a live claim and the offset of its latest record.
type claim struct {
	records.ClaimRecord
	offset int64
}

// place is the claim's place in line.
func (c claim) place() int64 {
	if c.QueuedOffset >= 0 {
		return c.QueuedOffset
	}
	return c.offset
}

// Option configures Claims.
type Option func(*options)

type options struct {
	onUnusable func(r *kgo.Record, reason error)
}

// OnUnusable sets fn to be told of a claims record that cannot be used (it
// does not decode, or is not keyed by its cluster and command), which is
// skipped; without it such a record is logged.
func OnUnusable(fn func(r *kgo.Record, reason error)) Option {
	return func(o *options) { o.onUnusable = fn }
}

// New returns the claims of topic, read with a client made from
// clientOpts. It does nothing until Run.
func New(topic string, clientOpts []kgo.Opt, log *slog.Logger, opts ...Option) *Claims {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	c := &Claims{topic: topic, byKey: map[string]claim{}, byCluster: map[string][]claim{}, changed: make(chan struct{}), indexed: make(chan struct{})}
	decode := func(r *kgo.Record) (claim, error) {
		rec, err := records.DecodeClaimRecord(r.Value)
		if err == nil && records.ClaimKey(rec.ClusterID, rec.CommandID) != string(r.Key) {
			err = fmt.Errorf("claim of %s for command %s is keyed %q", rec.ClusterID, rec.CommandID, r.Key)
		}
		return claim{ClaimRecord: rec, offset: r.Offset}, err
	}
	tableOpts := []logtable.Option[claim]{logtable.OnChange(c.apply), logtable.WithLogger[claim](log)}
	if o.onUnusable != nil {
		tableOpts = append(tableOpts, logtable.OnDecodeError[claim](o.onUnusable))
	}
	c.table = logtable.New(topic, clientOpts, decode, tableOpts...)
	return c
}

// Run follows the topic until ctx ends (see logtable.Table.Run).
func (c *Claims) Run(ctx context.Context) error {
	go func() {
		if c.table.WaitReady(ctx) == nil {
			c.index()
		}
	}()
	return c.table.Run(ctx)
}

// index indexes the claims read at start. Changes from then on reach
// apply, which waits for the lock; one it applies again changes nothing.
func (c *Claims) index() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, cl := range c.table.Snapshot() {
		c.put(key, cl)
	}
	close(c.indexed)
	c.broadcast()
}

// WaitReady blocks until the claims have been read to the end of the log
// as it was when Run started. Acquire waits for it too.
func (c *Claims) WaitReady(ctx context.Context) error {
	if err := c.table.WaitReady(ctx); err != nil {
		return err
	}
	select {
	case <-c.indexed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for claims on %s: %w", c.topic, ctx.Err())
	}
}

// apply keeps the index of live claims as the table changes.
func (c *Claims) apply(key string, v claim, deleted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.indexed:
	default:
		return // index has yet to read the snapshot, which has this change
	}
	if deleted {
		c.remove(key)
	} else {
		c.put(key, v)
	}
	c.broadcast()
}

// broadcast wakes those waiting for a change. Callers hold c.mu.
func (c *Claims) broadcast() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// put indexes the latest record of a live claim, at its place in line.
// Callers hold c.mu.
func (c *Claims) put(key string, v claim) {
	c.remove(key)
	c.byKey[key] = v
	list := c.byCluster[v.ClusterID]
	i, _ := slices.BinarySearchFunc(list, v.place(), func(o claim, place int64) int { return cmp.Compare(o.place(), place) })
	c.byCluster[v.ClusterID] = slices.Insert(list, i, v)
}

// remove drops the claim with record key key, if live. Callers hold c.mu.
func (c *Claims) remove(key string) {
	old, ok := c.byKey[key]
	if !ok {
		return
	}
	delete(c.byKey, key)
	list := slices.DeleteFunc(c.byCluster[old.ClusterID], func(o claim) bool { return o.CommandID == old.CommandID })
	if len(list) == 0 {
		delete(c.byCluster, old.ClusterID)
	} else {
		c.byCluster[old.ClusterID] = list
	}
}

// record returns the record of a claim.
func (c *Claims) record(r records.ClaimRecord) (*kgo.Record, error) {
	value, err := records.Encode(r)
	if err != nil {
		return nil, fmt.Errorf("encode the claim on %s for command %s: %w", r.ClusterID, r.CommandID, err)
	}
	return &kgo.Record{Topic: c.topic, Key: []byte(records.ClaimKey(r.ClusterID, r.CommandID)), Value: value}, nil
}

// Acquire puts a claim for r's command in line for r's cluster, writing r
// with w unless the command's claim is in line already, and returns once
// it is first in line: when every claim before it has been released. It
// returns the claim as it stands in line, its QueuedOffset set to its
// place, for Grant. It fails if the claim cannot be written, or with ctx's
// error.
func (c *Claims) Acquire(ctx context.Context, w Writer, r records.ClaimRecord) (records.ClaimRecord, error) {
	if err := c.WaitReady(ctx); err != nil {
		return records.ClaimRecord{}, err
	}
	key := records.ClaimKey(r.ClusterID, r.CommandID)
	c.mu.Lock()
	_, live := c.byKey[key]
	c.mu.Unlock()
	written := int64(-1)
	if !live {
		r.QueuedOffset, r.Holder = -1, ""
		rec, err := c.record(r)
		if err != nil {
			return records.ClaimRecord{}, err
		}
		if err := w(ctx, rec); err != nil {
			return records.ClaimRecord{}, fmt.Errorf("claim %s for command %s: %w", r.ClusterID, r.CommandID, err)
		}
		written = rec.Offset
	}
	for {
		c.mu.Lock()
		list, changed := c.byCluster[r.ClusterID], c.changed
		var first claim
		if len(list) > 0 {
			first = list[0]
		}
		cur, found := c.byKey[key]
		c.mu.Unlock()
		// Until the index has read back what was just written, what it
		// holds for the key is older.
		if found && cur.offset >= written && first.CommandID == r.CommandID {
			held := cur.ClaimRecord
			held.QueuedOffset = cur.place()
			return held, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return records.ClaimRecord{}, fmt.Errorf("wait for cluster %s: %w", r.ClusterID, ctx.Err())
		}
	}
}

// Grant returns the record that grants a held claim (as Acquire returned
// it) to holder, keeping its place in line. Its offset, once written, is
// the fencing token of the operation: it is greater than that of every
// grant before it on the cluster, since those were written before the
// claims ahead of this one were released.
func (c *Claims) Grant(held records.ClaimRecord, holder string) (*kgo.Record, error) {
	if held.QueuedOffset < 0 {
		return nil, errors.New("grant: the claim has no place in line (use what Acquire returned)")
	}
	held.Holder = holder
	return c.record(held)
}

// ReleaseRecord returns the tombstone that releases the claim of a command
// on a cluster; releasing a claim that is not live is harmless.
func (c *Claims) ReleaseRecord(clusterID, commandID string) *kgo.Record {
	return &kgo.Record{Topic: c.topic, Key: []byte(records.ClaimKey(clusterID, commandID))}
}

// Release writes the release of a claim with w.
func (c *Claims) Release(ctx context.Context, w Writer, clusterID, commandID string) error {
	if err := w(ctx, c.ReleaseRecord(clusterID, commandID)); err != nil {
		return fmt.Errorf("release the claim on %s for command %s: %w", clusterID, commandID, err)
	}
	return nil
}

// Holder returns the claim first in line for a cluster, if any.
func (c *Claims) Holder(clusterID string) (records.ClaimRecord, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if list := c.byCluster[clusterID]; len(list) > 0 {
		return list[0].ClaimRecord, true
	}
	return records.ClaimRecord{}, false
}

// Live returns every live claim, holding or waiting.
func (c *Claims) Live() []records.ClaimRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]records.ClaimRecord, 0, len(c.byKey))
	for _, cl := range c.byKey {
		out = append(out, cl.ClaimRecord)
	}
	return out
}
