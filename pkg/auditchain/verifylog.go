package auditchain

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"

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

// VerifyLog reads the chained topics (workflows, commands, operations),
// the checkpoints and the requests of an installation, up to their ends as
// they are when it starts, and verifies them (Verifier). A tombstone on
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
	if err := logtable.ReadToEnd(ctx, clientOpts, names.Checkpoints, scope.Partitions, func(r *kgo.Record) { v.Checkpoint(r, want) }); err != nil {
		return Report{}, err
	}
	rep := v.Finish()
	err := logtable.ReadToEnd(ctx, clientOpts, names.Requests, scope.Partitions, func(r *kgo.Record) {
		if !ofWorkflow(r.Key) {
			return
		}
		rep.Requests++
		if r.Value == nil {
			rep.Findings = append(rep.Findings, Finding{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: string(r.Key),
				What: fmt.Sprintf("request %s erased by a tombstone at offset %d: requests are never removed", r.Key, r.Offset)})
		}
	})
	return rep, err
}
