package auditchain

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// Scope limits what VerifyLog reads: one workflow, on its partitions (nil:
// every partition).
type Scope struct {
	Workflow   string
	Partitions []int32
}

// VerifyLog reads the checkpoints, the chained topics (workflows,
// commands, operations) and the requests of an installation, each up to
// its end as it is when its read starts, and verifies them (Verifier).
// The services may go on writing meanwhile. A tombstone on
// the requests topic is a finding too: requests are never removed
// (compaction only collapses the retries of one ID), so a tombstone erases
// one from the record.
func VerifyLog(ctx context.Context, clientOpts []kgo.Opt, names topics.Names, scope Scope, pub map[string]ed25519.PublicKey) (Report, error) {
	roles := map[string]string{Workflows: names.Workflows, Commands: names.Commands, Operations: names.Operations}
	v := NewVerifier(pub, roles)
	var want func(string) bool
	if scope.Workflow != "" {
		want = func(w string) bool { return w == scope.Workflow }
	}
	ofWorkflow := func(key []byte) bool {
		k := string(key)
		return scope.Workflow == "" || k == scope.Workflow || strings.HasPrefix(k, scope.Workflow+"/")
	}
	// The checkpoints first: each read captures its ends as it starts, so
	// the records a checkpoint names were committed before the chained
	// topics' ends are captured, and are read.
	if err := logtable.ReadToEnd(ctx, clientOpts, names.Checkpoints, scope.Partitions, func(r *kgo.Record) { v.Checkpoint(r, want) }); err != nil {
		return Report{}, err
	}
	for _, role := range []string{Workflows, Commands, Operations} {
		err := logtable.ReadToEnd(ctx, clientOpts, roles[role], scope.Partitions, func(r *kgo.Record) {
			if _, linked, _ := LinkOf(r); !linked && want != nil {
				if ofWorkflow(r.Key) {
					v.Record(role, r, nil) // in no chain, but keyed as the workflow's
				}
				return
			}
			v.Record(role, r, want)
		})
		if err != nil {
			return Report{}, err
		}
	}
	rep := v.Finish()
	type request struct {
		value     []byte // the latest value
		tombstone int64  // the offset of the latest tombstone, if it is the latest record; -1 otherwise
		partition int32
	}
	reqs := map[string]*request{}
	err := logtable.ReadToEnd(ctx, clientOpts, names.Requests, scope.Partitions, func(r *kgo.Record) {
		if !ofWorkflow(r.Key) {
			return
		}
		rep.Requests++
		q := reqs[string(r.Key)]
		if q == nil {
			q = &request{}
			reqs[string(r.Key)] = q
		}
		q.value, q.tombstone, q.partition = r.Value, -1, r.Partition
		if r.Value == nil {
			q.tombstone = r.Offset
		}
	})
	if err != nil {
		return Report{}, err
	}
	copies := map[string]copyAt{}
	for _, c := range v.copies {
		copies[c.Key] = c
	}
	for key, q := range reqs {
		if q.tombstone < 0 {
			continue
		}
		what := fmt.Sprintf("request %s erased by a tombstone at offset %d: requests are never removed", key, q.tombstone)
		if c, ok := copies[key]; ok {
			what += fmt.Sprintf("; the workflow's copy (%s/%d/%d) says %s asked for it at %s", c.topic, c.partition, c.offset, c.Principal, c.Time.Format(time.RFC3339))
		}
		rep.Findings = append(rep.Findings, Finding{Topic: names.Requests, Partition: q.partition, Offset: q.tombstone, Key: key, What: what})
	}
	for key, c := range copies {
		if _, ok := reqs[key]; ok {
			continue
		}
		rep.Findings = append(rep.Findings, Finding{Topic: names.Requests, Partition: c.Partition, Offset: -1, Key: key, Workflow: c.workflow,
			What: fmt.Sprintf("removed: the workflow's copy (%s/%d/%d) says %s asked for it at %s (offset %d), and the requests topic no longer holds it", c.topic, c.partition, c.offset, c.Principal, c.Time.Format(time.RFC3339), c.Offset)})
	}
	slices.SortFunc(rep.Findings, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset), cmp.Compare(a.Key, b.Key))
	})
	return rep, nil
}
