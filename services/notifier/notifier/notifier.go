// Package notifier is the notifier service: it turns workflow decisions,
// operation events and health changes into human-readable notifications on
// the notifications topic.
//
// It consumes and produces in one Kafka transaction per batch, with a
// stable transactional ID, so every source record yields its notification
// exactly once across crashes: no duplicates and no gaps. Each notification
// also carries an ID derived from its source record, for readers that
// consume without read-committed isolation.
package notifier

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// Config configures a notifier.
type Config struct {
	Backbone backbone.Config
	// InstanceID makes the transactional ID of this copy of the notifier;
	// it must be stable across restarts of the copy and differ between copies.
	InstanceID string
}

// Run runs the notifier until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	names := cfg.Backbone.Names()
	log := cfg.Backbone.Log().With("service", "notifier")
	sess, err := kgo.NewGroupTransactSession(cfg.Backbone.Opts(
		kgo.ConsumerGroup(names.Group("notifier")),
		kgo.ConsumeTopics(names.Workflows, names.Operations, names.Health),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.TransactionalID(names.Group("notifier")+"-"+cfg.InstanceID),
		kgo.RequireStableFetchOffsets(),
	)...)
	if err != nil {
		return fmt.Errorf("notifier: %w", err)
	}
	defer sess.Close()
	log.Info("notifier started")
	for {
		fetches := sess.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			log.Warn("fetch", "topic", topic, "partition", p, "err", err)
		})
		if fetches.NumRecords() == 0 {
			continue
		}
		var out []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			n, ok, err := fromRecord(names, r)
			if err != nil {
				log.Error("skipping a record that cannot be decoded", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
				n, ok = Undecodable(r.Topic, r.Partition, r.Offset, string(r.Key), r.Timestamp, err), true
			}
			if !ok {
				return
			}
			value, err := records.Encode(n)
			if err != nil {
				log.Error("encode notification", "kind", n.Kind, "err", err)
				return
			}
			key := n.WorkflowID
			if key == "" {
				key = n.ClusterID
			}
			out = append(out, &kgo.Record{Topic: names.Notifications, Key: []byte(key), Value: value})
		})
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("notifier: begin transaction: %w", err)
		}
		promise := kgo.AbortingFirstErrPromise(sess.Client())
		for _, r := range out {
			sess.Produce(ctx, r, promise.Promise())
		}
		committed, err := backbone.EndTransaction(ctx, sess, promise.Err() == nil)
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("transaction failed; the batch is consumed again", "err", err)
		}
		if !committed {
			log.Info("transaction aborted; the batch is consumed again", "records", fetches.NumRecords())
		}
	}
}

// fromRecord renders one source record, if it is worth a notification.
func fromRecord(names topics.Names, r *kgo.Record) (records.Notification, bool, error) {
	if r.Value == nil {
		return records.Notification{}, false, nil
	}
	switch r.Topic {
	case names.Workflows:
		rec, err := records.DecodeWorkflowRecord(r.Value)
		if err != nil {
			return records.Notification{}, false, err
		}
		n, ok := FromWorkflow(rec)
		return n, ok, nil
	case names.Operations:
		ev, err := records.DecodeOperationEvent(r.Value)
		if err != nil {
			return records.Notification{}, false, err
		}
		n, ok := FromOperation(ev)
		return n, ok, nil
	case names.Health:
		h, err := records.DecodeHealth(r.Value)
		if err != nil {
			return records.Notification{}, false, err
		}
		n, ok := FromHealth(h)
		return n, ok, nil
	}
	return records.Notification{}, false, nil
}
