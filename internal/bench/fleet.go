package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// namespace returns the backbone configuration of a namespace of its own
// for one stage, and creates its topics.
func (b *bench) namespace(ctx context.Context, stage string) (backbone.Config, error) {
	cfg := backbone.Config{Brokers: b.brokers, Namespace: fmt.Sprintf("bench-%s-%d-%s", b.runID, b.stages.Add(1), stage), Logger: b.o.Log}
	if err := cfg.EnsureTopics(ctx, b.o.Partitions, b.replication); err != nil {
		return cfg, fmt.Errorf("create topics: %w", err)
	}
	return cfg, nil
}

// dropNamespace deletes a stage's topics, so that the broker does not
// keep them (the embedded one holds them in memory).
func dropNamespace(cfg backbone.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := cfg.Client()
	if err != nil {
		return
	}
	defer cl.Close()
	_, _ = kadm.NewClient(cl).DeleteTopics(ctx, cfg.Names().All()...) // best effort
}

// writer produces the bench's own records, each marked with benchHeader.
type writer struct {
	cl     *kgo.Client
	failed firstErr
	count  atomic.Int64
}

func newWriter(cfg backbone.Config) (*writer, error) {
	cl, err := cfg.Client(kgo.ProducerLinger(5 * time.Millisecond))
	if err != nil {
		return nil, err
	}
	return &writer{cl: cl}, nil
}

// add encodes v and produces it under key, without waiting.
func (w *writer) add(ctx context.Context, topic, key string, v any) error {
	value, err := records.Encode(v)
	if err != nil {
		return fmt.Errorf("encode %s record %s: %w", topic, key, err)
	}
	r := &kgo.Record{Topic: topic, Key: []byte(key), Value: value, Headers: []kgo.RecordHeader{{Key: benchHeader}}}
	w.cl.Produce(ctx, r, w.failed.promise)
	w.count.Add(1)
	return nil
}

// flush waits for every record added to be written, and says whether all were.
func (w *writer) flush(ctx context.Context) error {
	if err := w.cl.Flush(ctx); err != nil {
		return err
	}
	if err := w.failed.get(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	return nil
}

func (w *writer) close() { w.cl.Close() }

// envelope returns the envelope of a record the bench writes.
func envelope() records.Envelope {
	return records.Envelope{ID: uuid.NewString(), Time: time.Now().UTC(), Principal: "flotilla-bench"}
}

// register adds simulated clusters to the inventory.
func register(ctx context.Context, cfg backbone.Config, clusters []inventory.Cluster) error {
	w, err := newWriter(cfg)
	if err != nil {
		return err
	}
	defer w.close()
	for _, c := range clusters {
		if err := w.add(ctx, cfg.Names().Inventory, c.ID, records.ClusterRecord{Envelope: envelope(), Cluster: c}); err != nil {
			return err
		}
	}
	return w.flush(ctx)
}

// submit asks for a rollout, as `flotilla rollout submit` does, and
// returns its workflow ID.
func submit(ctx context.Context, cfg backbone.Config, spec rollout.Spec) (string, error) {
	w, err := newWriter(cfg)
	if err != nil {
		return "", err
	}
	defer w.close()
	env := envelope()
	if err := w.add(ctx, cfg.Names().Requests, env.ID, records.Request{Envelope: env, Submit: &records.SubmitRollout{Spec: spec}}); err != nil {
		return "", err
	}
	return env.ID, w.flush(ctx)
}

// control asks the planner to act on a workflow, as the CLI's controls do.
func control(ctx context.Context, cfg backbone.Config, workflowID string, action records.ControlAction) error {
	w, err := newWriter(cfg)
	if err != nil {
		return err
	}
	defer w.close()
	env := envelope()
	req := records.Request{Envelope: env, Control: &records.ControlWorkflow{WorkflowID: workflowID, Action: action, Reason: "flotilla bench"}}
	if err := w.add(ctx, cfg.Names().Requests, records.ControlKey(workflowID, env.ID), req); err != nil {
		return err
	}
	return w.flush(ctx)
}

// healthSignal returns a health signal for cluster c, as the monitor writes.
func healthSignal(c inventory.Cluster, status, previous records.HealthStatus) records.Health {
	now := time.Now().UTC()
	h := records.Health{Envelope: envelope(), ClusterID: c.ID, Status: status, PreviousStatus: previous, ObservedVersion: c.Version, ObservedAt: now}
	if status != records.HealthHealthy {
		h.Reasons = []string{"flotilla bench: a signal written by the bench"}
	}
	return h
}

// upgradeAll is the rollout of the bench: every kafka cluster (70% of a
// simulated fleet) upgraded, in one phase of one wave with inFlight
// operations at most at once.
func upgradeAll(name string, inFlight int) rollout.Spec {
	return rollout.Spec{
		Name:      name,
		Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"},
		Selector:  "kind=kafka",
		Phases:    []rollout.Phase{{Name: "all", MaxInFlight: inFlight}},
	}
}

// kafkaTargets returns how many clusters of a simulated fleet of n upgradeAll picks.
func kafkaTargets(clusters []inventory.Cluster) int {
	n := 0
	for _, c := range clusters {
		if c.Labels["kind"] == "kafka" {
			n++
		}
	}
	return n
}
