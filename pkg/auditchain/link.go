// Package auditchain makes Flotilla's audit trail tamper-evident: a hash
// chain per workflow and writer over the records the writer produces, and
// signed checkpoints of those chains, from which a verifier tells what
// compaction legitimately removed from what was altered, removed,
// inserted, reordered or duplicated.
//
// Each chained record carries a header (HeaderKey) holding its link: the
// workflow whose chain it is in, its sequence number in that chain, the
// hash of the chain's previous record and its own hash, SHA-256 of its
// canonical bytes (Sum). The planner chains a workflow's rows (workflows)
// and commands (commands) in one chain, the executor its operation records
// (operations) in another: one writer each, since every record of a
// workflow is on one partition, owned by one copy of each service.
//
// Compaction keeps the last record of every key and may remove any other,
// so links alone cannot tell a record compacted away from one removed. A
// checkpoint (records.Checkpoint, on the checkpoints topic, keyed so that
// compaction keeps the latest of each) names the chain's head and the
// latest record of every live key, split into buckets so that a large
// workflow's checkpoint stays small, and is signed with the writer's
// Ed25519 key: what a checkpoint names must survive, or have been
// superseded by a later record of the chain.
package auditchain

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// HeaderKey is the record header that holds a record's link.
const HeaderKey = "flotilla-chain"

// The roles of the chained topics, as they are hashed (not the topics'
// names, which carry the installation's namespace).
const (
	Workflows  = "workflows"
	Commands   = "commands"
	Operations = "operations"
)

// The writers of chains.
const (
	Planner  = "planner"
	Executor = "executor"
)

// WriterOf returns the writer of a role's records.
func WriterOf(role string) string {
	if role == Operations {
		return Executor
	}
	return Planner
}

// Hash is a SHA-256 hash.
type Hash = [32]byte

// Link is a record's place in its chain.
type Link struct {
	Workflow string
	Seq      int64 // 1 for the chain's first record
	Prev     Hash  // the hash of the record of Seq-1; zero for the first
	Hash     Hash  // Sum of the record
}

const linkVersion = 1

// Marshal returns the header value: a version byte, the sequence number
// (8 bytes, big-endian), the previous hash, the hash, then the workflow ID.
func (l Link) Marshal() []byte {
	b := make([]byte, 0, 1+8+64+len(l.Workflow))
	b = append(b, linkVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(l.Seq))
	b = append(b, l.Prev[:]...)
	b = append(b, l.Hash[:]...)
	return append(b, l.Workflow...)
}

// ErrMalformedLink is returned for a header that is no link.
var ErrMalformedLink = errors.New("malformed chain header")

// ParseLink reads a header value written by Marshal.
func ParseLink(b []byte) (Link, error) {
	if len(b) < 1+8+64 || b[0] != linkVersion {
		return Link{}, fmt.Errorf("%w: %d bytes", ErrMalformedLink, len(b))
	}
	l := Link{Seq: int64(binary.BigEndian.Uint64(b[1:9])), Workflow: string(b[73:])}
	copy(l.Prev[:], b[9:41])
	copy(l.Hash[:], b[41:73])
	if l.Seq < 1 {
		return Link{}, fmt.Errorf("%w: sequence number %d", ErrMalformedLink, l.Seq)
	}
	return l, nil
}

// LinkOf returns the link of a record, whether it has one, and an error if
// its header is malformed.
func LinkOf(r *kgo.Record) (Link, bool, error) {
	for _, h := range r.Headers {
		if h.Key == HeaderKey {
			l, err := ParseLink(h.Value)
			return l, true, err
		}
	}
	return Link{}, false, nil
}

// setLink puts l in r's headers, replacing a link r had (a write tried
// again is linked again).
func setLink(r *kgo.Record, l Link) {
	for i, h := range r.Headers {
		if h.Key == HeaderKey {
			r.Headers[i].Value = l.Marshal()
			return
		}
	}
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderKey, Value: l.Marshal()})
}

// Sum returns the hash of a record at seq in workflow's chain after prev:
// SHA-256 of its canonical bytes (see schemas/README.md), which are the
// record exactly as written — its role, key, value (a tombstone is marked
// as such, not as an empty value) and other headers — so that a reader of
// any later schema version checks it byte for byte, without re-encoding.
func Sum(workflow string, seq int64, prev Hash, role string, r *kgo.Record) Hash {
	h := sha256.New()
	var buf [8]byte
	lp := func(b []byte) {
		binary.BigEndian.PutUint32(buf[:4], uint32(len(b)))
		h.Write(buf[:4])
		h.Write(b)
	}
	h.Write([]byte("flotilla-chain/1\n"))
	lp([]byte(workflow))
	binary.BigEndian.PutUint64(buf[:], uint64(seq))
	h.Write(buf[:])
	h.Write(prev[:])
	lp([]byte(role))
	lp(r.Key)
	if r.Value == nil {
		h.Write([]byte{0})
	} else {
		h.Write([]byte{1})
		lp(r.Value)
	}
	for _, hd := range r.Headers {
		if hd.Key == HeaderKey {
			continue
		}
		lp([]byte(hd.Key))
		lp(hd.Value)
	}
	var out Hash
	h.Sum(out[:0])
	return out
}
