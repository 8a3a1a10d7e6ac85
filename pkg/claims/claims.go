// Package claims keeps one lock per cluster in the log, so that no cluster
// is ever in two running operations, whichever planners sent them and
// whichever executors carry them out.
//
// Before it acts on a cluster, an executor produces a claim to the claims
// topic, keyed "clusterID/commandID": every claim on a cluster lands on the
// same partition, so the log orders them. The earliest live claim on a
// cluster holds it; the others wait. When the operation has ended and its
// outcome is recorded, the executor releases the claim with a tombstone,
// and the next claim holds the cluster. Every executor reads every claim,
// so they all agree on who holds what, without talking to each other.
//
// A claim is idempotent by command: claiming again for a command whose
// claim is live changes nothing, and keeps its place. A claim left behind
// by an executor that died after recording its outcome is released by the
// executor that next owns the command's partition (see Live).
package claims

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// Claims is the claims topic, followed: who holds each cluster, and who
// waits. It is safe for concurrent use.
type Claims struct {
	topic    string
	producer *kgo.Client
	table    *logtable.Table[claim]

	mu        sync.Mutex
	indexed   chan struct{}      // closed once the claims read at start are indexed
	byCluster map[string][]claim // live claims on a cluster, earliest first
	changed   chan struct{}      // closed and replaced on every change
}

// claim is a live claim and its place in the log.
type claim struct {
	records.ClaimRecord
	offset int64
}

// New returns the claims of topic, read with a client made from clientOpts
// and written with producer (whose partitioner must hash a key's part
// before '/', as topics.Partitioner does). It does nothing until Run.
func New(topic string, clientOpts []kgo.Opt, producer *kgo.Client, log *slog.Logger) *Claims {
	c := &Claims{topic: topic, producer: producer, byCluster: map[string][]claim{}, changed: make(chan struct{}), indexed: make(chan struct{})}
	decode := func(r *kgo.Record) (claim, error) {
		rec, err := records.DecodeClaimRecord(r.Value)
		return claim{ClaimRecord: rec, offset: r.Offset}, err
	}
	c.table = logtable.New(topic, clientOpts, decode, logtable.OnChange(c.apply), logtable.WithLogger[claim](log))
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
	for _, cl := range c.table.Snapshot() {
		c.add(cl)
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
		c.add(v)
	}
	c.broadcast()
}

// broadcast wakes those waiting for a change. Callers hold c.mu.
func (c *Claims) broadcast() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// add indexes a live claim. A claim already live keeps its first place.
func (c *Claims) add(v claim) {
	list := c.byCluster[v.ClusterID]
	if slices.ContainsFunc(list, func(o claim) bool { return o.CommandID == v.CommandID }) {
		return
	}
	i, _ := slices.BinarySearchFunc(list, v.offset, func(o claim, off int64) int { return cmp.Compare(o.offset, off) })
	c.byCluster[v.ClusterID] = slices.Insert(list, i, v)
}

// remove drops the claim with record key key, if live. Command IDs have
// no '/' (cluster IDs may): the last one ends the cluster ID.
func (c *Claims) remove(key string) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return
	}
	cluster, command := key[:i], key[i+1:]
	list := slices.DeleteFunc(c.byCluster[cluster], func(o claim) bool { return o.CommandID == command })
	if len(list) == 0 {
		delete(c.byCluster, cluster)
	} else {
		c.byCluster[cluster] = list
	}
}

// Acquire claims a cluster for a command and returns once the claim holds
// it: when every earlier claim on the cluster has been released. It fails
// if the claim cannot be written, or with ctx's error.
func (c *Claims) Acquire(ctx context.Context, r records.ClaimRecord) error {
	if err := c.WaitReady(ctx); err != nil {
		return err
	}
	if !c.live(r.ClusterID, r.CommandID) {
		value, err := records.Encode(r)
		if err != nil {
			return err
		}
		rec := &kgo.Record{Topic: c.topic, Key: []byte(records.ClaimKey(r.ClusterID, r.CommandID)), Value: value}
		if err := c.producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
			return fmt.Errorf("claim %s for command %s: %w", r.ClusterID, r.CommandID, err)
		}
	}
	for {
		c.mu.Lock()
		list, changed := c.byCluster[r.ClusterID], c.changed
		holds := len(list) > 0 && list[0].CommandID == r.CommandID
		c.mu.Unlock()
		if holds {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for cluster %s: %w", r.ClusterID, ctx.Err())
		}
	}
}

// Release releases the claim of a command on a cluster; releasing a claim
// that is not live is harmless.
func (c *Claims) Release(ctx context.Context, clusterID, commandID string) error {
	rec := &kgo.Record{Topic: c.topic, Key: []byte(records.ClaimKey(clusterID, commandID))}
	if err := c.producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("release the claim on %s for command %s: %w", clusterID, commandID, err)
	}
	return nil
}

// Holder returns the claim that holds a cluster, if any.
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
	var out []records.ClaimRecord
	for _, list := range c.byCluster {
		for _, cl := range list {
			out = append(out, cl.ClaimRecord)
		}
	}
	return out
}

func (c *Claims) live(clusterID, commandID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.ContainsFunc(c.byCluster[clusterID], func(o claim) bool { return o.CommandID == commandID })
}
