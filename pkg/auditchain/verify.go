package auditchain

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"fmt"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// Finding is one thing wrong with the log: where, and what.
type Finding struct {
	Topic     string
	Partition int32
	Offset    int64 // -1: a record that is not there
	Key       string
	Workflow  string
	What      string
}

func (f Finding) String() string {
	at := fmt.Sprintf("%s/%d/%d", f.Topic, f.Partition, f.Offset)
	if f.Offset < 0 {
		at = fmt.Sprintf("%s/%d", f.Topic, f.Partition)
	}
	return fmt.Sprintf("%s key %q: %s", at, f.Key, f.What)
}

// Report is what a verification found.
type Report struct {
	Findings    []Finding
	Records     int            // chained records verified
	Workflows   int            // chains (workflow, writer) verified
	Checkpoints int            // latest checkpoints checked
	Signers     map[string]int // checkpoints by the ID of the key that signed them
	Unsigned    int            // checkpoints without a signature
	Requests    int            // request records read (VerifyLog)
	// Tail counts the records newer than their chain's last checkpoint:
	// written since it (the next checkpoint covers them), so that only
	// their links vouch for them.
	Tail int
}

// Verifier checks chained records and checkpoints read from the log. Give
// it each partition's records in offset order (Record, Checkpoint), then
// call Finish. Keys are the public keys that may sign checkpoints, by key
// ID; a checkpoint signed by another key is a finding.
type Verifier struct {
	keys   map[string]ed25519.PublicKey
	topics map[string]string // role → topic name
	chains map[chainID]*vchain
	report Report
	copies []copyAt // the request copies of the records that verified
}

type copyAt struct {
	RequestCopy
	topic     string
	partition int32
	offset    int64
	key       string
	workflow  string
}

type chainID struct{ writer, workflow string }

type vchain struct {
	recs    []*vrec
	latest  map[entryKey]*vrec
	cps     map[string]*vcp // by record key: the latest of each
	buckets int
}

type vrec struct {
	link      Link
	role      string
	topic     string
	partition int32
	offset    int64
	key       string
	tombstone bool
}

type vcp struct {
	cp        records.Checkpoint
	topic     string
	partition int32
	offset    int64
	key       string
}

// NewVerifier returns a verifier. topics names the topic of each role
// (Workflows, Commands, Operations), for the findings.
func NewVerifier(pub map[string]ed25519.PublicKey, topics map[string]string) *Verifier {
	return &Verifier{keys: pub, topics: topics, chains: map[chainID]*vchain{}, report: Report{Signers: map[string]int{}}}
}

func (v *Verifier) find(topic string, r *kgo.Record, workflow, what string, args ...any) {
	v.report.Findings = append(v.report.Findings, Finding{Topic: topic, Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Workflow: workflow, What: fmt.Sprintf(what, args...)})
}

func (v *Verifier) chain(id chainID) *vchain {
	ch := v.chains[id]
	if ch == nil {
		ch = &vchain{latest: map[entryKey]*vrec{}, cps: map[string]*vcp{}}
		v.chains[id] = ch
	}
	return ch
}

// Record checks one record of a chained topic (role Workflows, Commands
// or Operations). want, if not nil, keeps only the records of the
// workflows it says yes to.
func (v *Verifier) Record(role string, r *kgo.Record, want func(workflow string) bool) {
	l, ok, err := LinkOf(r)
	switch {
	case err != nil:
		v.find(r.Topic, r, "", "not written by the %s: %v", WriterOf(role), err)
		return
	case !ok:
		if want == nil {
			v.find(r.Topic, r, "", "inserted: not in any chain of the %s (no %s header)", WriterOf(role), HeaderKey)
		}
		return
	}
	if want != nil && !want(l.Workflow) {
		return
	}
	v.report.Records++
	if Sum(l.Workflow, l.Seq, l.Prev, role, r) != l.Hash {
		// Not what the writer wrote: it takes no part in the chain's checks
		// (the record it replaced, if compacted away, is reported missing).
		v.find(r.Topic, r, l.Workflow, "altered: its bytes do not match its hash (seq %d of workflow %s's %s chain)", l.Seq, l.Workflow, WriterOf(role))
		return
	}
	if c, ok := RequestCopyOf(r); ok {
		v.copies = append(v.copies, copyAt{c, r.Topic, r.Partition, r.Offset, string(r.Key), l.Workflow})
	}
	ch := v.chain(chainID{WriterOf(role), l.Workflow})
	rec := &vrec{link: l, role: role, topic: r.Topic, partition: r.Partition, offset: r.Offset, key: string(r.Key), tombstone: r.Value == nil}
	ch.recs = append(ch.recs, rec)
	ch.latest[entryKey{role, rec.key}] = rec
}

// Checkpoint checks one record of the checkpoints topic.
func (v *Verifier) Checkpoint(r *kgo.Record, want func(workflow string) bool) {
	if r.Value == nil {
		v.find(r.Topic, r, "", "a tombstone: checkpoints are never removed")
		return
	}
	cp, err := records.DecodeCheckpoint(r.Value)
	if err != nil {
		v.find(r.Topic, r, "", "not a checkpoint: %v", err)
		return
	}
	if want != nil && !want(cp.WorkflowID) {
		return
	}
	ch := v.chain(chainID{cp.Writer, cp.WorkflowID})
	ch.cps[string(r.Key)] = &vcp{cp: cp, topic: r.Topic, partition: r.Partition, offset: r.Offset, key: string(r.Key)}
}

// Finish checks every chain and returns the report.
func (v *Verifier) Finish() Report {
	ids := slices.SortedFunc(maps.Keys(v.chains), func(a, b chainID) int {
		return cmp.Or(cmp.Compare(a.workflow, b.workflow), cmp.Compare(a.writer, b.writer))
	})
	for _, id := range ids {
		v.verifyChain(id, v.chains[id])
	}
	v.report.Workflows = len(v.chains)
	return v.report
}

func (v *Verifier) findRec(r *vrec, what string, args ...any) {
	v.report.Findings = append(v.report.Findings, Finding{Topic: r.topic, Partition: r.partition, Offset: r.offset, Key: r.key, Workflow: r.link.Workflow, What: fmt.Sprintf(what, args...)})
}

func at(r *vrec) string { return fmt.Sprintf("%s/%d/%d", r.topic, r.partition, r.offset) }

func (v *Verifier) verifyChain(id chainID, ch *vchain) {
	// Order: within a topic-partition, a chain's sequence numbers grow with
	// the offsets. A record written again later is behind.
	dup := map[*vrec]bool{}
	bySeq := map[int64]*vrec{}
	ahead := map[string]*vrec{} // topic/partition → the record of highest seq so far
	for _, r := range ch.recs {
		tp := fmt.Sprintf("%s/%d", r.topic, r.partition)
		if first, ok := bySeq[r.link.Seq]; ok {
			dup[r] = true
			switch a := ahead[tp]; {
			case first.link.Hash == r.link.Hash && a != nil && a.link.Seq > r.link.Seq:
				v.findRec(r, "reordered: seq %d of workflow %s's %s chain written again after seq %d at %s (first at %s)", r.link.Seq, id.workflow, id.writer, a.link.Seq, at(a), at(first))
			case first.link.Hash == r.link.Hash:
				v.findRec(r, "duplicated: the record of seq %d of workflow %s's %s chain again, first at %s", r.link.Seq, id.workflow, id.writer, at(first))
			default:
				v.findRec(r, "forked: seq %d of workflow %s's %s chain is also at %s, with other content", r.link.Seq, id.workflow, id.writer, at(first))
			}
			continue
		}
		bySeq[r.link.Seq] = r
		if a := ahead[tp]; a != nil && a.link.Seq > r.link.Seq {
			v.findRec(r, "reordered: seq %d of workflow %s's %s chain comes after seq %d at %s", r.link.Seq, id.workflow, id.writer, a.link.Seq, at(a))
			continue
		}
		ahead[tp] = r
	}
	// Links: each record follows the one before it, where both survive.
	seqs := slices.Sorted(maps.Keys(bySeq))
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			continue // compacted away in between, or removed: the checkpoints tell
		}
		a, b := bySeq[seqs[i-1]], bySeq[seqs[i]]
		if b.link.Prev != a.link.Hash {
			v.findRec(b, "does not follow seq %d at %s: it or the record before it was altered, or one was inserted", a.link.Seq, at(a))
		}
	}
	// Checkpoints: the latest of each bucket of the latest split.
	var cps []*vcp
	for _, c := range ch.cps {
		ch.buckets = max(ch.buckets, c.cp.Buckets)
	}
	for _, c := range ch.cps {
		if c.cp.Buckets == ch.buckets {
			cps = append(cps, c)
		}
	}
	slices.SortFunc(cps, func(a, b *vcp) int { return cmp.Compare(a.cp.Bucket, b.cp.Bucket) })
	var covered int64
	for _, c := range cps {
		v.verifyCheckpoint(id, ch, c, bySeq)
		covered = max(covered, c.cp.Seq)
	}
	for _, r := range ch.recs {
		if r.link.Seq > covered {
			v.report.Tail++
		}
	}
}

func (v *Verifier) verifyCheckpoint(id chainID, ch *vchain, c *vcp, bySeq map[int64]*vrec) {
	v.report.Checkpoints++
	cp := c.cp
	where := fmt.Sprintf("%s/%d/%d", c.topic, c.partition, c.offset)
	bad := func(what string, args ...any) {
		v.report.Findings = append(v.report.Findings, Finding{Topic: c.topic, Partition: c.partition, Offset: c.offset, Key: c.key, Workflow: cp.WorkflowID, What: fmt.Sprintf(what, args...)})
	}
	switch {
	case cp.KeyID == "" && len(cp.Signature) == 0:
		v.report.Unsigned++
	case len(v.keys) == 0: // no keys to check it with: counted as its key says
		v.report.Signers[cp.KeyID]++
	case v.keys[cp.KeyID] == nil:
		bad("signed by key %s, which is not among the services' keys", cp.KeyID)
		return
	case !ed25519.Verify(v.keys[cp.KeyID], SignedBytes(cp), cp.Signature):
		bad("forged: its signature by key %s does not verify", cp.KeyID)
		return
	default:
		v.report.Signers[cp.KeyID]++
	}
	if r := bySeq[cp.Seq]; r != nil && !bytes.Equal(r.link.Hash[:], cp.Head) {
		v.findRec(r, "altered: not the record of seq %d that the checkpoint at %s names as the chain's head", cp.Seq, where)
	}
	listed := map[entryKey]int64{}
	for _, e := range cp.Entries {
		k := entryKey{e.Topic, e.Key}
		listed[k] = e.Seq
		r := bySeq[e.Seq]
		if r != nil && r.role == e.Topic && r.key == e.Key {
			if !bytes.Equal(r.link.Hash[:], e.Hash) {
				v.findRec(r, "altered: not the record of seq %d that the checkpoint at %s names", e.Seq, where)
			}
			continue
		}
		if l := ch.latest[k]; l != nil && l.link.Seq > cp.Seq {
			continue // superseded since the checkpoint: compaction may remove it
		}
		topic := cmp.Or(v.topics[e.Topic], e.Topic)
		v.report.Findings = append(v.report.Findings, Finding{Topic: topic, Partition: c.partition, Offset: -1, Key: e.Key, Workflow: cp.WorkflowID,
			What: fmt.Sprintf("removed: the checkpoint at %s names seq %d of this key, which the log no longer holds, and nothing of the chain superseded it", where, e.Seq)})
	}
	// What the log holds as a key's latest, not superseded after the
	// checkpoint, must be what the checkpoint lists.
	for k, r := range ch.latest {
		if r.tombstone || r.link.Seq > cp.Seq || BucketOf(k.role, k.key, cp.Buckets) != cp.Bucket {
			continue
		}
		if seq, ok := listed[k]; ok {
			if seq < r.link.Seq {
				v.findRec(r, "inserted: seq %d, after the seq %d that the checkpoint at %s names as its key's latest", r.link.Seq, seq, where)
			}
			continue
		}
		v.findRec(r, "not in the checkpoint at %s, which lists the latest record of every key of its bucket: inserted, or a later record of its key was removed", where)
	}
}
