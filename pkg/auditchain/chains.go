package auditchain

import (
	"cmp"
	"context"
	"encoding/binary"
	"hash/fnv"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// Chains is one writer's chains, one per workflow: each chain's head and
// the latest record of each of its live keys, which is what a checkpoint
// lists. It is rebuilt from the log (Observe, ObserveCheckpoint) when the
// writer takes a partition, and advanced only through a Txn, whose changes
// are undone if the transaction aborts. Not safe for concurrent use.
type Chains struct {
	writer string
	signer *keys.Signer
	m      map[string]*chain
}

type chain struct {
	seq     int64
	head    Hash
	keys    map[entryKey]entry // live keys
	buckets int                // a power of two; grows, never shrinks
	changed map[int]int64      // bucket → seq of its last change
	done    map[int]int64      // bucket → seq of its last checkpoint
}

type entryKey struct{ role, key string }

type entry struct {
	seq  int64
	hash Hash
}

// BucketKeys is about how many keys one checkpoint lists at most: a
// chain's keys are split into as many buckets (a power of two) as that
// takes, so that a checkpoint of a 100,000-target rollout is many records
// of about 100 KiB rather than one too large for Kafka.
const BucketKeys = 1000

// New returns the chains of writer (Planner or Executor). A nil signer
// writes unsigned checkpoints.
func New(writer string, signer *keys.Signer) *Chains {
	return &Chains{writer: writer, signer: signer, m: map[string]*chain{}}
}

func (c *Chains) chain(workflow string) *chain {
	ch := c.m[workflow]
	if ch == nil {
		ch = &chain{keys: map[entryKey]entry{}, buckets: 1, changed: map[int]int64{}, done: map[int]int64{}}
		c.m[workflow] = ch
	}
	return ch
}

// Head returns the sequence number and hash of a workflow's chain head.
func (c *Chains) Head(workflow string) (int64, Hash) {
	ch := c.m[workflow]
	if ch == nil {
		return 0, Hash{}
	}
	return ch.seq, ch.head
}

// Dirty reports whether a chain of the workflows mine says yes to (nil:
// all) changed since its last checkpoint.
func (c *Chains) Dirty(mine func(workflow string) bool) bool {
	for w, ch := range c.m {
		if mine != nil && !mine(w) {
			continue
		}
		for b, seq := range ch.changed {
			if seq > ch.done[b] {
				return true
			}
		}
	}
	return false
}

type workflowKey struct{}

// Tag marks r as a record of workflow's chain, for a writer that links
// records where it no longer knows their workflow (Tagged).
func Tag(r *kgo.Record, workflow string) {
	r.Context = context.WithValue(context.Background(), workflowKey{}, workflow)
}

// Tagged returns the workflow Tag marked r with.
func Tagged(r *kgo.Record) (string, bool) {
	if r.Context == nil {
		return "", false
	}
	w, ok := r.Context.Value(workflowKey{}).(string)
	return w, ok
}

// Forget drops the chains of the workflows keep says no to (those of a
// partition given up).
func (c *Chains) Forget(drop func(workflow string) bool) {
	for w := range c.m {
		if drop(w) {
			delete(c.m, w)
		}
	}
}

// Observe applies a chained record read from the log; a record without a
// link, or one behind what is known of its key, changes nothing.
func (c *Chains) Observe(role string, r *kgo.Record) {
	l, ok, err := LinkOf(r)
	if !ok || err != nil {
		return
	}
	ch := c.chain(l.Workflow)
	if l.Seq > ch.seq {
		ch.seq, ch.head = l.Seq, l.Hash
	}
	k := entryKey{role, string(r.Key)}
	if e, ok := ch.keys[k]; ok && e.seq > l.Seq {
		return
	}
	if r.Value == nil {
		delete(ch.keys, k)
	} else {
		ch.keys[k] = entry{l.Seq, l.Hash}
	}
	b := bucketOf(k, ch.buckets)
	ch.changed[b] = max(ch.changed[b], l.Seq)
}

// ObserveCheckpoint applies one of the writer's own checkpoints read from
// the log: what it covers need not be checkpointed again. Read them
// before the records, so that records land in the buckets they had.
func (c *Chains) ObserveCheckpoint(cp records.Checkpoint) {
	if cp.Writer != c.writer || cp.Buckets < 1 {
		return
	}
	ch := c.chain(cp.WorkflowID)
	if cp.Buckets > ch.buckets {
		ch.buckets = cp.Buckets
		clear(ch.done)
	}
	if cp.Buckets == ch.buckets {
		ch.done[cp.Bucket] = max(ch.done[cp.Bucket], cp.Seq)
	}
}

func bucketOf(k entryKey, buckets int) int {
	h := fnv.New32a()
	h.Write([]byte(k.role))
	h.Write([]byte{0})
	h.Write([]byte(k.key))
	return int(h.Sum32() & uint32(buckets-1))
}

// BucketOf returns the bucket of a role's key in a chain of buckets.
func BucketOf(role, key string, buckets int) int { return bucketOf(entryKey{role, key}, buckets) }

func bucketsFor(keys int) int {
	b := 1
	for b*BucketKeys < keys {
		b *= 2
	}
	return b
}

// Txn is the changes of one Kafka transaction: applied as the records are
// linked, undone by Abort.
type Txn struct {
	c    *Chains
	undo []func()
}

// Begin starts a transaction's changes.
func (c *Chains) Begin() *Txn { return &Txn{c: c} }

// Append links r, a record of role in workflow's chain, as the chain's
// next record: it sets r's link header. Link the records of one
// topic-partition in the order they are produced.
func (t *Txn) Append(workflow, role string, r *kgo.Record) {
	ch := t.c.chain(workflow)
	k := entryKey{role, string(r.Key)}
	oldSeq, oldHead := ch.seq, ch.head
	oldEntry, had := ch.keys[k]
	b := bucketOf(k, ch.buckets)
	oldChanged, buckets := ch.changed[b], ch.buckets
	t.undo = append(t.undo, func() {
		ch.seq, ch.head = oldSeq, oldHead
		if had {
			ch.keys[k] = oldEntry
		} else {
			delete(ch.keys, k)
		}
		if ch.buckets == buckets {
			ch.changed[b] = oldChanged
		}
	})
	l := Link{Workflow: workflow, Seq: ch.seq + 1, Prev: ch.head}
	l.Hash = Sum(workflow, l.Seq, l.Prev, role, r)
	setLink(r, l)
	ch.seq, ch.head = l.Seq, l.Hash
	if r.Value == nil {
		delete(ch.keys, k)
	} else {
		ch.keys[k] = entry{l.Seq, l.Hash}
	}
	ch.changed[b] = l.Seq
}

// Checkpoints returns the checkpoints due: one for each bucket of each
// chain changed since its last checkpoint, of the workflows mine says
// are the writer's own now (nil: all), signed if the writer has a key, and
// marks them written (undone by Abort). A chain that outgrew its buckets
// is split into more, all of them checkpointed.
func (t *Txn) Checkpoints(now time.Time, mine func(workflow string) bool) []records.Checkpoint {
	var out []records.Checkpoint
	for _, w := range slices.Sorted(maps.Keys(t.c.m)) {
		if mine != nil && !mine(w) {
			continue
		}
		ch := t.c.m[w]
		if n := bucketsFor(len(ch.keys)); n > ch.buckets {
			old, oldChanged, oldDone := ch.buckets, ch.changed, ch.done
			t.undo = append(t.undo, func() { ch.buckets, ch.changed, ch.done = old, oldChanged, oldDone })
			ch.buckets, ch.changed, ch.done = n, map[int]int64{}, map[int]int64{}
			for b := range n {
				ch.changed[b] = ch.seq
			}
		}
		var dirty []int
		isDirty := make([]bool, ch.buckets)
		for b, seq := range ch.changed {
			if seq > ch.done[b] {
				dirty = append(dirty, b)
				isDirty[b] = true
			}
		}
		if len(dirty) == 0 {
			continue
		}
		slices.Sort(dirty)
		entries := map[int][]records.ChainEntry{}
		for k, e := range ch.keys {
			if b := bucketOf(k, ch.buckets); isDirty[b] {
				entries[b] = append(entries[b], records.ChainEntry{Topic: k.role, Key: k.key, Seq: e.seq, Hash: e.hash[:]})
			}
		}
		for _, b := range dirty {
			es := entries[b]
			slices.SortFunc(es, func(x, y records.ChainEntry) int {
				return cmp.Or(cmp.Compare(x.Topic, y.Topic), cmp.Compare(x.Key, y.Key))
			})
			cp := records.Checkpoint{
				Envelope:   records.Envelope{ID: uuid.NewString(), Time: now.UTC(), Principal: t.c.writer},
				Writer:     t.c.writer,
				WorkflowID: w,
				Bucket:     b,
				Buckets:    ch.buckets,
				Seq:        ch.seq,
				Head:       ch.head[:],
				Entries:    es,
			}
			if t.c.signer != nil {
				cp.KeyID = t.c.signer.ID
				cp.Signature = t.c.signer.Sign(SignedBytes(cp))
			}
			out = append(out, cp)
			old, had := ch.done[b]
			t.undo = append(t.undo, func() {
				if had {
					ch.done[b] = old
				} else {
					delete(ch.done, b)
				}
			})
			ch.done[b] = ch.seq
		}
	}
	return out
}

// Abort undoes the transaction's changes.
func (t *Txn) Abort() {
	for i := len(t.undo) - 1; i >= 0; i-- {
		t.undo[i]()
	}
	t.undo = nil
}

// SignedBytes returns what a checkpoint's signature signs: every field but
// the envelope, the key ID and the signature, each length-prefixed (see
// schemas/README.md).
func SignedBytes(cp records.Checkpoint) []byte {
	var b []byte
	lp := func(s []byte) []byte {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		return append(b, s...)
	}
	b = append(b, "flotilla-checkpoint/1\n"...)
	b = lp([]byte(cp.Writer))
	b = lp([]byte(cp.WorkflowID))
	b = binary.BigEndian.AppendUint32(b, uint32(cp.Bucket))
	b = binary.BigEndian.AppendUint32(b, uint32(cp.Buckets))
	b = binary.BigEndian.AppendUint64(b, uint64(cp.Seq))
	b = lp(cp.Head)
	b = binary.BigEndian.AppendUint32(b, uint32(len(cp.Entries)))
	for _, e := range cp.Entries {
		b = lp([]byte(e.Topic))
		b = lp([]byte(e.Key))
		b = binary.BigEndian.AppendUint64(b, uint64(e.Seq))
		b = lp(e.Hash)
	}
	return b
}
