package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

var statusBench struct {
	once sync.Once
	cfg  backbone.Config
	id   string
}

// BenchmarkRolloutStatus measures what `rollout status` reads a workflow
// of 100 targets with: its one partition of the workflows topic, against
// the whole topic as it did before, when 200,000 rows of other workflows
// are in the topic (6 partitions). Both run in each iteration; the
// figures are ms per read of each, and their ratio:
//
//	go test -run '^$' -bench BenchmarkRolloutStatus ./cmd/flotilla/
func BenchmarkRolloutStatus(b *testing.B) {
	statusBench.once.Do(func() {
		cfg := newBackbone(b, 6)
		history(b, cfg, 200_000, 100)
		id := uuid.NewString()
		var recs []*kgo.Record
		for _, row := range workflowRows(id, records.WorkflowRunning, 101) {
			recs = append(recs, workflowRecord(b, cfg, row))
		}
		cl, err := cfg.Client()
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		statusBench.cfg, statusBench.id = cfg, id
	})
	cfg, id := statusBench.cfg, statusBench.id
	ctx := context.Background()
	var partition, whole time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		w, err := readWorkflow(ctx, cfg, id)
		if err != nil || w == nil || w.Progress().Targets != 100 {
			b.Fatalf("status read: %v, %v", w, err)
		}
		partition += time.Since(start)
		start = time.Now()
		s, err := readWorkflows(ctx, cfg)
		if err != nil || s.Workflows[id].Progress().Targets != 100 {
			b.Fatalf("whole-topic read: %v", err)
		}
		whole += time.Since(start)
	}
	b.ReportMetric(float64(partition)/1e6/float64(b.N), "partition-ms/op")
	b.ReportMetric(float64(whole)/1e6/float64(b.N), "whole-topic-ms/op")
	b.ReportMetric(float64(whole)/float64(partition), "speedup")
}
