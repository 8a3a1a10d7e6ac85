package brokertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCompactingLeavesTheSharedBrokerAlone writes a key twice to a
// compacted topic on the shared broker and on one of ForCompaction, and
// compacts the latter: the shared broker still has both values, for the
// tests reading it beside this one; the compacted one keeps the latest.
// On a real Kafka (FLOTILLA_TEST_BROKERS) both are the same broker, whose
// cleaner leaves the active segment alone: nothing is removed.
func TestCompactingLeavesTheSharedBrokerAlone(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("brokertest-compaction-%d", time.Now().UnixNano())
	shared, own := Addrs(t), ForCompaction(t)
	write(ctx, t, shared, name+"-shared")
	write(ctx, t, own, name+"-own")
	Compact(t, own)

	if got := values(ctx, t, shared, name+"-shared"); fmt.Sprint(got) != "[v1 v2 filler]" {
		t.Errorf("the shared broker holds %v after another was compacted, want every record: [v1 v2 filler]", got)
	}
	want := "[v2 filler]" // the last batch (filler) is never compacted
	if Real() {
		want = "[v1 v2 filler]" // Compact leaves it to the cleaner, which waits for the segment to roll
	}
	if got := values(ctx, t, own, name+"-own"); fmt.Sprint(got) != want {
		t.Errorf("the compacted broker holds %v, want %s", got, want)
	}
}

// write creates a compacted topic at addrs and writes "k" twice and a
// filler key, one batch each.
func write(ctx context.Context, t *testing.T, addrs []string, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(OptsAt(addrs)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, topic); err != nil {
		t.Fatalf("create %s: %v", topic, err)
	}
	for _, kv := range [][2]string{{"k", "v1"}, {"k", "v2"}, {"filler", "filler"}} {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(kv[0]), Value: []byte(kv[1])}).FirstErr(); err != nil {
			t.Fatalf("produce to %s: %v", topic, err)
		}
	}
}

// values reads the topic at addrs from its start to its end.
func values(ctx context.Context, t *testing.T, addrs []string, topic string) []string {
	t.Helper()
	cl, err := kgo.NewClient(append(OptsAt(addrs), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	end, _ := ends.Lookup(topic, 0)
	var out []string
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("read %s: %v", topic, err)
		}
		for _, r := range fs.Records() {
			out = append(out, string(r.Value))
			if r.Offset+1 >= end.Offset {
				return out
			}
		}
	}
}
