package topics

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
)

// testAdmin returns an admin client and a namespace unique to the test: on
// the broker in FLOTILLA_TEST_BROKERS if set, else on the test binary's
// embedded broker (brokertest).
func testAdmin(t *testing.T) (*kadm.Client, *kgo.Client, string) {
	t.Helper()
	cl, err := kgo.NewClient(brokertest.Opts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ns := fmt.Sprintf("test-%s-%d", regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"), time.Now().UnixNano())
	return kadm.NewClient(cl), cl, ns
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewNames(t *testing.T) {
	for _, tc := range []struct {
		namespace string
		want      Names
	}{
		{"", Names{"fleet", "fleet.inventory", "fleet.policies", "fleet.trust", "fleet.requests", "fleet.workflows", "fleet.commands", "fleet.operations", "fleet.health", "fleet.history", "fleet.claims", "fleet.leases", "fleet.notifications", "fleet.deadletters", "fleet.checkpoints"}},
		{"staging", Names{"staging", "staging.inventory", "staging.policies", "staging.trust", "staging.requests", "staging.workflows", "staging.commands", "staging.operations", "staging.health", "staging.history", "staging.claims", "staging.leases", "staging.notifications", "staging.deadletters", "staging.checkpoints"}},
	} {
		if got := NewNames(tc.namespace); got != tc.want {
			t.Errorf("NewNames(%q) = %+v, want %+v", tc.namespace, got, tc.want)
		}
	}
	n := NewNames("")
	if got := n.All(); len(got) != 14 || got[0] != "fleet.inventory" || got[13] != "fleet.checkpoints" {
		t.Errorf("All() = %v", got)
	}
	if got := n.Group("planner"); got != "fleet.planner" {
		t.Errorf("Group(planner) = %q", got)
	}
}

func TestCatalogue(t *testing.T) {
	n := NewNames("")
	specs := Catalogue(n, 6, 3)
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
		if want := int32(6); s.Name == n.Trust && s.Partitions != 1 || s.Name != n.Trust && s.Partitions != want || s.ReplicationFactor != 3 {
			t.Errorf("%s: %d partitions, rf %d", s.Name, s.Partitions, s.ReplicationFactor)
		}
		policy := *s.Configs["cleanup.policy"]
		switch s.Name {
		case n.History:
			if policy != "compact,delete" || *s.Configs["retention.ms"] != "31536000000" {
				t.Errorf("%s configs: policy %s retention %s", s.Name, policy, *s.Configs["retention.ms"])
			}
		case n.Notifications, n.DeadLetters:
			if policy != "delete" || *s.Configs["retention.ms"] != "31536000000" {
				t.Errorf("%s configs: policy %s retention %s", s.Name, policy, *s.Configs["retention.ms"])
			}
		case n.Workflows, n.Operations, n.Health: // what the notifier reads
			if lag := s.Configs["min.compaction.lag.ms"]; policy != "compact" || len(s.Configs) != 2 || lag == nil || *lag != "86400000" {
				t.Errorf("%s: configs %v, want cleanup.policy=compact and min.compaction.lag.ms=86400000", s.Name, s.Configs)
			}
			if s.AtLeast["min.compaction.lag.ms"] != MinCompactionLag.Milliseconds() {
				t.Errorf("%s: AtLeast %v, want min.compaction.lag.ms %d", s.Name, s.AtLeast, MinCompactionLag.Milliseconds())
			}
		case n.Inventory, n.Policies, n.Trust, n.Requests: // what users write
			if ts := s.Configs["message.timestamp.type"]; policy != "compact" || len(s.Configs) != 2 || ts == nil || *ts != "LogAppendTime" {
				t.Errorf("%s: configs %v, want cleanup.policy=compact and message.timestamp.type=LogAppendTime", s.Name, s.Configs)
			}
		default:
			if policy != "compact" || len(s.Configs) != 1 {
				t.Errorf("%s: configs %v, want only cleanup.policy=compact", s.Name, s.Configs)
			}
		}
	}
	if !slices.Equal(names, n.All()) {
		t.Errorf("catalogue names %v, want %v", names, n.All())
	}
}

func configsOf(t *testing.T, ctx context.Context, adm *kadm.Client, topic string) map[string]string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe %s: %v %v", topic, err, rc.Err)
	}
	m := make(map[string]string)
	for _, c := range rc.Configs {
		m[c.Key] = c.MaybeValue()
	}
	return m
}

func TestEnsureCreatesIdempotently(t *testing.T) {
	adm, _, ns := testAdmin(t)
	ctx := testContext(t)
	n := NewNames(ns)
	specs := Catalogue(n, 3, -1)

	// Several processes starting at once must all succeed.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = Ensure(ctx, adm, specs) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Ensure %d: %v", i, err)
		}
	}
	if err := Ensure(ctx, adm, specs); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}

	details, err := adm.ListTopics(ctx, n.All()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range n.All() {
		if got, want := len(details[name].Partitions), map[bool]int{true: 1, false: 3}[name == n.Trust]; got != want {
			t.Errorf("%s has %d partitions, want %d", name, got, want)
		}
		cfg := configsOf(t, ctx, adm, name)
		want := map[string]string{"cleanup.policy": "compact"}
		switch name {
		case n.Notifications, n.DeadLetters:
			want = map[string]string{"cleanup.policy": "delete", "retention.ms": "31536000000"}
		case n.History:
			want = map[string]string{"cleanup.policy": "compact,delete", "retention.ms": "31536000000"}
		case n.Workflows, n.Operations, n.Health:
			want["min.compaction.lag.ms"] = "86400000"
		case n.Inventory, n.Policies, n.Trust, n.Requests:
			want["message.timestamp.type"] = "LogAppendTime"
		}
		for k, v := range want {
			if cfg[k] != v {
				t.Errorf("%s: %s = %q, want %q", name, k, cfg[k], v)
			}
		}
	}
}

// TestEnsuredTopicsAreServed checks that topics can be used as soon as
// Ensure returns: every partition of every new topic takes a record at the
// first try. (Kafka lists a new partition in its metadata a moment before
// its leader serves it; a producer in between would be refused, and kgo
// would retry only after its metadata min age, 5s.)
func TestEnsuredTopicsAreServed(t *testing.T) {
	adm, _, ns := testAdmin(t)
	ctx := testContext(t)
	n := NewNames(ns)
	if err := Ensure(ctx, adm, Catalogue(n, 4, -1)); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokertest.Addrs(t)...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RecordRetries(0)) // no retry: the first try must do
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for _, topic := range n.All() {
		for p := range int32(4) {
			if topic == n.Trust && p > 0 {
				break // one partition
			}
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: []byte("k"), Value: []byte("v")})
		}
	}
	for _, r := range cl.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			t.Errorf("produce to %s partition %d right after Ensure: %v", r.Record.Topic, r.Record.Partition, r.Err)
		}
	}
}

func TestEnsureReportsMismatches(t *testing.T) {
	compact := map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
	type topic struct {
		name       string
		partitions int32
		configs    map[string]*string
	}
	for _, tc := range []struct {
		name    string
		precut  func(n Names) []topic
		wantErr string
	}{
		{
			name:    "co-partitioned counts differ",
			precut:  func(n Names) []topic { return []topic{{n.Requests, 6, compact}, {n.Commands, 3, compact}} },
			wantErr: "%[1]s.commands has 3 partitions but %[1]s.requests has 6: co-partitioned topics must match",
		},
		{
			name:    "cluster-keyed counts differ",
			precut:  func(n Names) []topic { return []topic{{n.Inventory, 6, compact}, {n.Health, 2, compact}} },
			wantErr: "%[1]s.health has 2 partitions but %[1]s.inventory has 6: co-partitioned topics must match",
		},
		{
			name: "state topic not compacted",
			precut: func(n Names) []topic {
				return []topic{{n.Workflows, 6, map[string]*string{"cleanup.policy": kadm.StringPtr("delete")}}}
			},
			wantErr: `%[1]s.workflows has cleanup.policy="delete" but must be compacted`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adm, _, ns := testAdmin(t)
			ctx := testContext(t)
			n := NewNames(ns)
			// Someone created topics differently before us.
			for _, tp := range tc.precut(n) {
				if _, err := adm.CreateTopic(ctx, tp.partitions, -1, tp.configs, tp.name); err != nil {
					t.Fatal(err)
				}
			}
			err := Ensure(ctx, adm, Catalogue(n, 6, -1))
			want := fmt.Sprintf(tc.wantErr, ns)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Ensure error = %v, want it to contain %q", err, want)
			}
		})
	}
}

// TestEnsureGivesANewTopicItsGroupsCount starts on an installation whose
// topics were created with 6 partitions, less one topic of each
// co-partitioning group (as a later Flotilla adds topics): Ensure, asked
// for 12, creates those with 6, so the groups stay co-partitioned; a topic
// of no group gets the 12 asked for.
func TestEnsureGivesANewTopicItsGroupsCount(t *testing.T) {
	adm, _, ns := testAdmin(t)
	ctx := testContext(t)
	n := NewNames(ns)
	missing := map[string]bool{n.Operations: true, n.Health: true, n.Leases: true}
	var older []Spec
	for _, s := range Catalogue(n, 6, -1) {
		if !missing[s.Name] {
			older = append(older, s)
		}
	}
	if err := Ensure(ctx, adm, older); err != nil {
		t.Fatal(err)
	}
	if err := Ensure(ctx, adm, Catalogue(n, 12, -1)); err != nil {
		t.Fatalf("Ensure with the new topics: %v", err)
	}
	details, err := adm.ListTopics(ctx, n.Operations, n.Health, n.Leases)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{n.Operations: 6, n.Health: 6, n.Leases: 12} {
		if got := len(details[name].Partitions); got != want {
			t.Errorf("%s created with %d partitions, want %d", name, got, want)
		}
	}
}

// TestEnsureRaisesMinCompactionLag starts on topics created by an older
// Flotilla, without min.compaction.lag.ms, and one an operator gave a
// longer lag: Ensure raises the missing lag to MinCompactionLag, keeps the
// longer one, and leaves the topics as they are when run again.
func TestEnsureRaisesMinCompactionLag(t *testing.T) {
	adm, _, ns := testAdmin(t)
	ctx := testContext(t)
	n := NewNames(ns)
	compact := map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
	for _, topic := range []string{n.Workflows, n.Health} {
		if _, err := adm.CreateTopic(ctx, 3, -1, compact, topic); err != nil {
			t.Fatal(err)
		}
	}
	const longer = "172800000" // two days
	if _, err := adm.CreateTopic(ctx, 3, -1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact"), "min.compaction.lag.ms": kadm.StringPtr(longer)}, n.Operations); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := Ensure(ctx, adm, Catalogue(n, 3, -1)); err != nil {
			t.Fatalf("Ensure: %v", err)
		}
		for topic, want := range map[string]string{n.Workflows: "86400000", n.Health: "86400000", n.Operations: longer} {
			// Kafka applies an altered config to the broker that describes
			// it shortly after answering the change.
			cfg := configsOf(t, ctx, adm, topic)
			for deadline := time.Now().Add(10 * time.Second); cfg["min.compaction.lag.ms"] != want && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
				cfg = configsOf(t, ctx, adm, topic)
			}
			if got := cfg["min.compaction.lag.ms"]; got != want {
				t.Errorf("%s: min.compaction.lag.ms = %q, want %q", topic, got, want)
			}
			if got := cfg["cleanup.policy"]; got != "compact" {
				t.Errorf("%s: cleanup.policy = %q after raising its lag, want compact", topic, got)
			}
		}
	}
}

// Kafka's reference murmur2 values (Apache Kafka's UtilsTest.testMurmur2).
var kafkaMurmur2 = map[string]int32{
	"21":                       -973932308,
	"foobar":                   -790332482,
	"a-little-bit-long-string": -985981536,
	"abc":                      479470107,
}

func TestPartitioner(t *testing.T) {
	const n = 7
	p := Partitioner().ForTopic("fleet.workflows")
	part := func(key string) int { return p.Partition(&kgo.Record{Key: []byte(key)}, n) }

	for key, hash := range kafkaMurmur2 {
		want := int(uint32(hash)&0x7fffffff) % n
		if got := part(key); got != want {
			t.Errorf("key %q: partition %d, want Kafka's %d", key, got, want)
		}
		if got := part(key + "/cluster-1"); got != want {
			t.Errorf("key %q: partition %d, want the prefix's %d", key+"/cluster-1", got, want)
		}
		if got := PartitionOf(key+"/cluster-1", n); got != int32(want) {
			t.Errorf("PartitionOf(%q) = %d, want %d", key+"/cluster-1", got, want)
		}
	}
	// Many workflows: every row of one workflow lands together, and the
	// whole key matches kgo's default partitioner.
	def := kgo.StickyKeyPartitioner(nil).ForTopic("fleet.workflows")
	spread := map[int]bool{}
	for i := range 100 {
		w := fmt.Sprintf("wf-%d", i)
		want := def.Partition(&kgo.Record{Key: []byte(w)}, n)
		spread[want] = true
		for _, key := range []string{w, TargetKey(w, "x"), TargetKey(w, "y/z")} {
			if got := part(key); got != want {
				t.Fatalf("key %q: partition %d, want %d", key, got, want)
			}
		}
	}
	if len(spread) != n {
		t.Errorf("100 workflows used %d of %d partitions", len(spread), n)
	}
	if !p.RequiresConsistency(&kgo.Record{Key: []byte("k")}) {
		t.Error("keyed records must be partitioned consistently")
	}
}

// A request produced by a plain client (kgo's default partitioner) lands on
// the partition Flotilla's partitioner picks for that workflow's rows.
func TestPartitionerMatchesDefaultClient(t *testing.T) {
	adm, cl, ns := testAdmin(t)
	ctx := testContext(t)
	n := NewNames(ns)
	if err := Ensure(ctx, adm, Catalogue(n, 5, -1)); err != nil {
		t.Fatal(err)
	}
	ours, err := kgo.NewClient(kgo.SeedBrokers(cl.OptValue(kgo.SeedBrokers).([]string)...), kgo.RecordPartitioner(Partitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	for i := range 20 {
		id := fmt.Sprintf("request-%d", i)
		plain, err := cl.ProduceSync(ctx, &kgo.Record{Topic: n.Requests, Key: []byte(id)}).First()
		if err != nil {
			t.Fatal(err)
		}
		row, err := ours.ProduceSync(ctx, &kgo.Record{Topic: n.Commands, Key: []byte(TargetKey(id, "c1"))}).First()
		if err != nil {
			t.Fatal(err)
		}
		if plain.Partition != row.Partition {
			t.Fatalf("request %s on partition %d, its command on %d", id, plain.Partition, row.Partition)
		}
	}
}
