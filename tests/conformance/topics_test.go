package conformance

import (
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
)

// TestEnsureTopics starts several services at once on an empty namespace,
// then one more: each creates what is missing and finds the topics as
// Flotilla needs them, and a table can read every topic as soon as
// EnsureTopics has returned (a service starts its tables right after it).
func TestEnsureTopics(t *testing.T) {
	e := setup(t, time.Minute)
	cfg := backbone.Config{Brokers: e.seeds, Namespace: e.name}
	names := cfg.Names()

	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = cfg.EnsureTopics(e.ctx, 3, 1) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("EnsureTopics %d of %d starting at once on %s: %v", i+1, len(errs), brokertest.Name(), err)
		}
	}
	if err := cfg.EnsureTopics(e.ctx, 3, 1); err != nil {
		t.Fatalf("EnsureTopics on existing topics: %v", err)
	}
	// A service started with another partition count leaves them alone.
	if err := cfg.EnsureTopics(e.ctx, 6, 1); err != nil {
		t.Fatalf("EnsureTopics asking for 6 partitions of existing topics: %v", err)
	}

	for _, topic := range names.All() {
		// Read at once, with a new client: no "unknown topic".
		var n int
		if err := logtable.ReadToEnd(e.ctx, cfg.Opts(), topic, nil, func(*kgo.Record) { n++ }); err != nil || n != 0 {
			t.Errorf("read new topic %s: %d records, %v", topic, n, err)
		}
	}

	details, err := e.adm.ListTopics(e.ctx, names.All()...)
	if err != nil {
		t.Fatal(err)
	}
	rcs, err := e.adm.DescribeTopicConfigs(e.ctx, names.All()...)
	if err != nil {
		t.Fatal(err)
	}
	compact := map[string]string{"cleanup.policy": "compact"}
	// What the notifier reads keeps every record for a day before
	// compaction may drop it (topics.MinCompactionLag).
	lagged := map[string]string{"cleanup.policy": "compact", "min.compaction.lag.ms": "86400000"}
	want := map[string]map[string]string{
		names.Inventory:     compact,
		names.Requests:      compact,
		names.Workflows:     lagged,
		names.Commands:      compact,
		names.Operations:    lagged,
		names.Health:        lagged,
		names.Notifications: {"cleanup.policy": "delete", "retention.ms": "31536000000"}, // 365 days
	}
	for topic, configs := range want {
		if got := len(details[topic].Partitions); got != 3 {
			t.Errorf("%s has %d partitions, want 3", topic, got)
		}
		rc, err := rcs.On(topic, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			t.Errorf("describe configs of %s: %v", topic, err)
			continue
		}
		got := map[string]string{}
		for _, c := range rc.Configs {
			if _, ok := configs[c.Key]; ok {
				got[c.Key] = c.MaybeValue()
			}
		}
		if !maps.Equal(got, configs) {
			t.Errorf("%s has %v, want %v", topic, got, configs)
		}
	}
}
