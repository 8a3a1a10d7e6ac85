package integration

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/auditchain"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// auditFleet is a fleet whose planner and executor sign their checkpoints.
type auditFleet struct {
	*fleettest.Fleet
	t    *testing.T
	pubs map[string]ed25519.PublicKey
}

func startAuditFleet(t *testing.T, o fleettest.Options) *auditFleet {
	dir := t.TempDir()
	pubs := map[string]ed25519.PublicKey{}
	signer := func(name string) *keys.Signer {
		s, err := keys.WriteKeyPair(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		pubs[s.ID] = s.Public()
		return &s
	}
	o.PlannerKey, o.ExecutorKey = signer("planner"), signer("executor")
	return &auditFleet{Fleet: fleettest.Start(t, o), t: t, pubs: pubs}
}

func (f *auditFleet) verify(scope auditchain.Scope) auditchain.Report {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := auditchain.VerifyLog(ctx, f.Backbone.Opts(), f.Backbone.Names(), scope, f.pubs)
	if err != nil {
		f.t.Fatal(err)
	}
	return rep
}

// awaitClean waits until the log verifies with every record under a
// signed checkpoint, and returns the report.
func (f *auditFleet) awaitClean(what string) auditchain.Report {
	f.t.Helper()
	var rep auditchain.Report
	if !f.Eventually(0, 30*time.Second, func() bool {
		rep = f.verify(auditchain.Scope{})
		return len(rep.Findings) == 0 && rep.Tail == 0 && rep.Unsigned == 0
	}) {
		f.t.Fatalf("%s: the log does not verify clean: %d findings %v, %d records not under a checkpoint, %d unsigned", what, len(rep.Findings), rep.Findings, rep.Tail, rep.Unsigned)
	}
	return rep
}

// TestTheAuditTrailVerifiesThroughCompactionAndRestarts runs rollouts,
// compacts the topics, restarts the planner and the executor (which
// rebuild their chains from the log) and lets the retention remove a
// finished rollout's rows (appending to its chains after the restart):
// the log verifies clean at every step, every checkpoint signed by the
// services' keys.
func TestTheAuditTrailVerifiesThroughCompactionAndRestarts(t *testing.T) {
	t.Parallel()
	f := startAuditFleet(t, fleettest.Options{Clusters: 6, Retention: time.Hour, Brokers: brokertest.ForCompaction(t)})
	first := f.Submit(rollout.Spec{Name: "restart three", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{f.Clusters[0].ID, f.Clusters[1].ID, f.Clusters[2].ID}})
	f.Await(first, time.Second, time.Minute, "the first rollout finishing", finished)
	rep := f.awaitClean("after a rollout")
	if rep.Records == 0 || rep.Checkpoints == 0 || len(rep.Signers) != 2 {
		t.Fatalf("verified %d records, %d checkpoints, signed by %v: want both services' keys", rep.Records, rep.Checkpoints, rep.Signers)
	}

	f.Compact()
	f.awaitClean("after compaction")

	f.StopService("planner")
	f.StopService("executor")
	f.StartService("planner")
	f.StartService("executor")
	second := f.Submit(rollout.Spec{Name: "restart two", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{f.Clusters[3].ID, f.Clusters[4].ID}})
	f.Await(second, time.Second, time.Minute, "the second rollout finishing", finished)
	f.Await(first, time.Minute, time.Minute, "the first rollout's rows removed after the retention", func(w *decide.Workflow) bool { return w.Compacted() })
	f.awaitClean("after restarts and the retention")
	f.Compact()
	rep = f.awaitClean("after compacting again")

	if one := f.verify(auditchain.Scope{Workflow: second, Partitions: []int32{topics.PartitionOf(second, 3)}}); len(one.Findings) != 0 || one.Workflows != 2 || one.Records >= rep.Records {
		t.Errorf("--workflow %s: %d findings %v, %d chains, %d of the log's %d records", second, len(one.Findings), one.Findings, one.Workflows, one.Records, rep.Records)
	}
}

// TestAuditVerifyFindsTampering tampers with the log in each way and
// checks that verify names the record and what was done to it.
func TestAuditVerifyFindsTampering(t *testing.T) {
	t.Parallel()
	f := startAuditFleet(t, fleettest.Options{Clusters: 6, Brokers: brokertest.ForCompaction(t)})
	var ids []string
	for i := range 3 {
		ids = append(ids, f.Submit(rollout.Spec{Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{f.Clusters[2*i].ID, f.Clusters[2*i+1].ID}}))
	}
	for _, id := range ids {
		f.Await(id, time.Second, time.Minute, "the rollouts finishing", finished)
	}
	f.awaitClean("before tampering")
	names := f.Backbone.Names()
	before := map[string][]*kgo.Record{}
	for _, topic := range []string{names.Workflows, names.Commands, names.Operations} {
		before[topic] = f.ReadAll(topic)
	}
	last := func(topic, key string) *kgo.Record {
		var out *kgo.Record
		for _, r := range before[topic] {
			if string(r.Key) == key {
				out = r
			}
		}
		if out == nil {
			t.Fatalf("no record of %s in %s", key, topic)
		}
		return out
	}
	again := func(r *kgo.Record) *kgo.Record {
		return &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
	}
	target := func(i, c int) string { return topics.TargetKey(ids[i], f.Clusters[2*i+c].ID) }

	// Altered: a target row rewritten with another reason, its link copied.
	row := last(names.Workflows, target(0, 0))
	rec, err := records.DecodeWorkflowRecord(row.Value)
	if err != nil {
		t.Fatal(err)
	}
	rec.Target.Reason = "nothing to see here"
	altered := again(row)
	if altered.Value, err = records.Encode(rec); err != nil {
		t.Fatal(err)
	}
	// Reordered: a target row of workflow 1 written again after the header
	// rows that followed it; duplicated: the head of its executor's chain
	// (its last operation record) written again.
	older := last(names.Workflows, target(1, 0))
	var dup *kgo.Record
	for _, r := range before[names.Operations] {
		if strings.HasPrefix(string(r.Key), ids[1]+"/") {
			dup = r
		}
	}
	f.Produce(altered,
		// Removed: the operation record of a target of workflow 2, by a
		// tombstone (compaction then removes both).
		&kgo.Record{Topic: names.Operations, Key: []byte(target(2, 0))},
		// Inserted: a forged command for a cluster the workflow never had.
		f.Record(names.Commands, topics.TargetKey(ids[2], "forged"), records.Command{Envelope: records.Envelope{ID: "forged", Principal: "planner"}, ID: "forged", WorkflowID: ids[2], ClusterID: "forged", Attempt: 1}),
		again(older), again(dup),
		// Erased: workflow 0's request.
		&kgo.Record{Topic: names.Requests, Key: []byte(ids[0])},
	)
	// A duplicate shows while both copies are there: once compaction has
	// removed the first, the second is the record as written, in its
	// place in the chain, and nothing is changed.
	if pre := f.verify(auditchain.Scope{}); !slices.ContainsFunc(pre.Findings, func(fd auditchain.Finding) bool {
		return fd.Key == string(dup.Key) && strings.Contains(fd.What, "duplicated")
	}) {
		t.Errorf("no finding \"duplicated\" about %s in:\n%v", dup.Key, strings.Join(findingLines(pre), "\n"))
	}
	// A record after the tombstone in its partition (the embedded broker
	// never compacts a partition's last batch), and tombstones dropped at
	// once: compaction then removes both the tombstone and what it erased.
	f.Produce(&kgo.Record{Topic: names.Operations, Key: []byte(ids[2] + "/filler")})
	embedded := os.Getenv("FLOTILLA_TEST_BROKERS") == ""
	if embedded {
		cl, err := f.Backbone.Client()
		if err != nil {
			t.Fatal(err)
		}
		zero := "0"
		_, err = kadm.NewClient(cl).AlterTopicConfigs(context.Background(), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "delete.retention.ms", Value: &zero}}, names.Operations)
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	f.Compact()

	rep := f.verify(auditchain.Scope{})
	for _, want := range []struct{ key, what string }{
		{target(0, 0), "altered"},
		{topics.TargetKey(ids[2], "forged"), "inserted"},
		{target(1, 0), "reordered"},
		{ids[0], "erased by a tombstone"},
		{ids[0], "the workflow's copy"},
	} {
		found := false
		for _, fd := range rep.Findings {
			if fd.Key == want.key && strings.Contains(fd.What, want.what) {
				found = true
			}
		}
		if !found {
			t.Errorf("no finding %q about %s in:\n%v", want.what, want.key, strings.Join(findingLines(rep), "\n"))
		}
	}
	// Once compaction dropped the tombstone too, the removal is reported as
	// such; a real Kafka's cleaner may not have run yet, and the tombstone
	// is reported as a record in no chain.
	removal := "inserted"
	if embedded {
		removal = "removed: the checkpoint"
	}
	found := false
	for _, fd := range rep.Findings {
		found = found || fd.Key == target(2, 0) && strings.Contains(fd.What, removal)
	}
	if !found && !(removal == "inserted" && slices.ContainsFunc(rep.Findings, func(fd auditchain.Finding) bool {
		return fd.Key == target(2, 0) && strings.Contains(fd.What, "removed")
	})) {
		t.Errorf("no finding %q about %s in:\n%v", removal, target(2, 0), strings.Join(findingLines(rep), "\n"))
	}
}

func findingLines(rep auditchain.Report) []string {
	var out []string
	for _, f := range rep.Findings {
		out = append(out, f.String())
	}
	return out
}
