// Package conformance checks the guarantees Flotilla takes from its Kafka
// backbone, on whichever broker the tests get (package brokertest): the
// embedded kfake broker, or a real Kafka named by FLOTILLA_TEST_BROKERS.
// CI runs it on both, and real Kafka is the judge: kfake differs from Kafka
// where it matters here (it compacts only when asked, accepts null keys on
// compacted topics, publishes new topics synchronously), so a guarantee is
// only established once it holds on Kafka.
//
// The guarantees, and where each is tested:
//   - topics are created at start with the configs the services rely on,
//     idempotently, and can be read at once (TestEnsureTopics);
//   - a read-committed table catches up with the log even when a partition
//     ends in a transaction marker, in an aborted transaction, or has an
//     open transaction: pkg/logtable's scenarios (TestReadToEnd,
//     TestTableRebuild), which run on the same broker as this package;
//   - a transactional consume-decide-produce step is fenced by its
//     successor under the same transactional ID, and nothing of the fenced
//     step becomes visible (TestTransactionFencing);
//   - compaction keeps the latest value of every key and drops deleted
//     keys (TestCompactionKeepsLatestPerKey).
package conformance

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// env is one test's view of the broker: a context bounded in time, a
// client, and a name no other test (or earlier run on the same broker) uses.
type env struct {
	t     *testing.T
	ctx   context.Context
	seeds []string
	cl    *kgo.Client
	adm   *kadm.Client
	name  string
}

func setup(t *testing.T, timeout time.Duration) *env {
	t.Helper()
	return setupAt(t, timeout, brokertest.Addrs(t))
}

// setupAt is setup on the broker at seeds: one of brokertest.ForCompaction
// for a test that compacts.
func setupAt(t *testing.T, timeout time.Duration, seeds []string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	cl, err := kgo.NewClient(brokertest.OptsAt(seeds)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	name := fmt.Sprintf("conf-%s-%d", regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"), time.Now().UnixNano())
	return &env{t: t, ctx: ctx, seeds: seeds, cl: cl, adm: kadm.NewClient(cl), name: name}
}

// topic creates a topic named after the test and suffix, with one
// partition and configs, and waits until clients can see it.
func (e *env) topic(suffix string, configs map[string]*string) string {
	e.t.Helper()
	name := e.name + "." + suffix
	// topics.Ensure returns once the topic is in the broker's metadata: a
	// producer that asked too early would wait out kgo's metadata min age.
	if err := topics.Ensure(e.ctx, e.adm, []topics.Spec{{Name: name, Partitions: 1, ReplicationFactor: -1, Configs: configs}}); err != nil {
		e.t.Fatalf("create topic %s on %s: %v", name, brokertest.Name(), err)
	}
	return name
}

func (e *env) produce(cl *kgo.Client, recs ...*kgo.Record) {
	e.t.Helper()
	if err := cl.ProduceSync(e.ctx, recs...).FirstErr(); err != nil {
		e.t.Fatalf("produce: %v", err)
	}
}

// readAll reads topic from its start to its end with the given isolation
// level, control records included, with a client of its own.
func (e *env) readAll(topic string, isolation kgo.IsolationLevel) []*kgo.Record {
	e.t.Helper()
	ends, err := e.adm.ListEndOffsets(e.ctx, topic)
	if err != nil {
		e.t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	end, _ := ends.Lookup(topic, 0)
	if end.Err != nil {
		e.t.Fatalf("end offset of %s: %v", topic, end.Err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(isolation),
		kgo.KeepControlRecords(),
	)
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	// Read uncommitted, the high watermark is the end; read committed,
	// the last stable offset is, and with no open transaction they agree.
	for next := int64(0); next < end.Offset; {
		fetches := cl.PollFetches(e.ctx)
		if err := e.ctx.Err(); err != nil {
			e.t.Fatalf("read %s: at offset %d of %d: %v", topic, next, end.Offset, err)
		}
		if err := fetches.Err(); err != nil {
			e.t.Fatalf("read %s: %v", topic, err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			out = append(out, r)
			next = r.Offset + 1
		})
	}
	return out
}

// readTable reads topic to its end as Flotilla's tables do (read committed,
// tombstones included) and returns every data record per key, in order.
func (e *env) readTable(topic string) map[string][]*kgo.Record {
	e.t.Helper()
	byKey := map[string][]*kgo.Record{}
	err := logtable.ReadToEnd(e.ctx, []kgo.Opt{kgo.SeedBrokers(e.seeds...)}, topic, nil, func(r *kgo.Record) {
		byKey[string(r.Key)] = append(byKey[string(r.Key)], r)
	})
	if err != nil {
		e.t.Fatalf("read %s: %v", topic, err)
	}
	return byKey
}
