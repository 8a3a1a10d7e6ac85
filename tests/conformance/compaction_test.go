package conformance

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
)

// TestCompactionKeepsLatestPerKey writes several values for each key and
// deletes one key, then waits for the broker to compact: a reader from the
// start then finds exactly the latest value of every key and nothing of the
// deleted one. This is what lets a service rebuild its state from a
// compacted topic however long it has been running.
//
// The topic asks for compaction as soon as possible (segments roll after
// 100 ms, any dirty share is worth cleaning, tombstones go after 100 ms).
// Kafka never cleans the active segment, so the test keeps writing a filler
// key to roll segments while it waits; on the embedded broker, one of the
// test's own, it asks for compaction (brokertest.Compact), which keeps the
// last batch likewise.
func TestCompactionKeepsLatestPerKey(t *testing.T) {
	const wait = 90 * time.Second
	e := setupAt(t, wait+30*time.Second, brokertest.ForCompaction(t))
	topic := e.topic("compacted", map[string]*string{
		"cleanup.policy":            kadm.StringPtr("compact"),
		"segment.ms":                kadm.StringPtr("100"),
		"min.cleanable.dirty.ratio": kadm.StringPtr("0.01"),
		"delete.retention.ms":       kadm.StringPtr("100"),
		"min.compaction.lag.ms":     kadm.StringPtr("0"),
	})
	keys := []string{"a", "b", "c", "d"}
	latest := map[string]string{}
	for round := 1; round <= 3; round++ { // one batch per round
		var recs []*kgo.Record
		for _, k := range keys {
			v := fmt.Sprintf("%s-v%d", k, round)
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(k), Value: []byte(v)})
			latest[k] = v
		}
		e.produce(e.cl, recs...)
	}
	e.produce(e.cl, &kgo.Record{Topic: topic, Key: []byte("d")}) // delete d
	delete(latest, "d")

	var problems []string
	deadline := time.Now().Add(wait)
	for filler := 0; ; filler++ {
		// A write after segment.ms rolls the segment that holds the
		// keys, making it cleanable.
		e.produce(e.cl, &kgo.Record{Topic: topic, Key: []byte("filler"), Value: fmt.Appendf(nil, "%d", filler)})
		brokertest.Compact(t, e.seeds)
		problems = compactionProblems(e.readTable(topic), keys, latest)
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v of writing and waiting for %s to compact %s: %s", wait, brokertest.Name(), topic, strings.Join(problems, "; "))
		}
		time.Sleep(100 * time.Millisecond) // between looks at the log
	}
}

// compactionProblems lists how the log differs from a fully compacted one:
// one record per live key holding its latest value, none for deleted keys.
func compactionProblems(log map[string][]*kgo.Record, keys []string, latest map[string]string) []string {
	var out []string
	for _, k := range keys {
		var values []string
		for _, r := range log[k] {
			if r.Value == nil {
				values = append(values, "<tombstone>")
			} else {
				values = append(values, string(r.Value))
			}
		}
		want := []string{}
		if v, ok := latest[k]; ok {
			want = []string{v}
		}
		if !slices.Equal(values, want) {
			out = append(out, fmt.Sprintf("key %s holds %q, want %q", k, values, want))
		}
	}
	return out
}
