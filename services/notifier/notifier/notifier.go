// Package notifier is the notifier service: it turns workflow decisions,
// operation events and health changes into human-readable notifications on
// the notifications topic.
//
// It consumes and produces in one Kafka transaction per batch that makes a
// notification, with a stable transactional ID, so every source record
// yields its notification exactly once across crashes: no duplicates and
// no gaps. Each notification also carries an ID derived from its source
// record, for readers that consume without read-committed isolation.
package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
)

// Config configures a notifier.
type Config struct {
	Backbone backbone.Config
	// InstanceID makes the transactional ID of this copy of the notifier;
	// it must be stable across restarts of the copy and differ between copies.
	InstanceID string
	// StaticMembership makes InstanceID this copy's identity in its
	// consumer group too (backbone.StaticMember).
	StaticMembership bool
	// Clock tells when consumed records that made no notification are
	// due a commit of their own (a real clock if nil).
	Clock clockwork.Clock
	// IdleCommit is how long the offsets of consumed records that made no
	// notification (heartbeats, progress rows) wait to be committed with
	// the next transaction that writes one, before they are committed in
	// a transaction of their own (default 5s). See Run.
	IdleCommit time.Duration
	// Metrics, if set, records the notifier's metrics and its Kafka
	// clients' (package metrics); nil records none. Its Deliveries are
	// for the sinks.
	Metrics *metrics.Notifier
	// Trust is passed to the sinks, which verify the inventory records
	// they route by (package trust).
	Trust trust.Config

	// ending, if set, is called before a transaction ends, and ended
	// after, with how it ended (tests count aborts).
	ending func()
	ended  func(committed bool, err error)
}

const (
	// endTimeout bounds the end of a transaction while the notifier runs
	// (an end that takes longer is fatal: see backbone.FatalTxnError).
	endTimeout = backbone.EndTimeout
	// stopGrace is how long a stopping notifier gives the broker to abort
	// its open transaction and to take its leave of the group, in real
	// time, before it cuts its client off: a broker that does not answer
	// does not hold up the stop.
	stopGrace = backbone.StopGrace
)

// Run runs the notifier until ctx ends, and returns nil then.
//
// A batch of source records that makes no notification is not a
// transaction of its own: its offsets are committed with the next
// transaction that writes a notification, or after IdleCommit without
// one. Kafka completes a transaction (writes its markers) after it has
// answered EndTxn, and answers a TxnOffsetCommit of the next transaction
// that comes meanwhile CONCURRENT_TRANSACTIONS, on which kgo's
// GroupTransactSession aborts; a produce in the transaction waits that
// out first. So a transaction that only commits offsets, right after
// another, was aborted and its batch consumed again, again and again in a
// fleet that mostly sends heartbeats.
//
// When ctx ends, Run aborts the transaction under way, if any, and leaves
// the group, giving the broker backbone.StopGrace for both, after which it
// cuts its client off (which also ends a flush or a produce waiting on the
// broker): with a broker that does
// not answer, it returns all the same, and the transaction left open is
// aborted by the next notifier of the same instance ID as it starts (or
// by Kafka's transaction timeout).
//
// Run ends with an error on a fatal Kafka error (backbone.FatalTxnError):
// the transactional ID was taken by another producer (a second copy
// running with the same instance ID fences this one), the producer ID is
// no longer known, the notifier is not authorised, or a transaction's end
// timed out. Any other error aborts the batch, which is consumed again.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.IdleCommit <= 0 {
		cfg.IdleCommit = 5 * time.Second
	}
	// Every client of the notifier counts in its Kafka metrics.
	cfg.Backbone.ClientOpts = slices.Concat(cfg.Backbone.ClientOpts, cfg.Metrics.ClientOpts())
	names := cfg.Backbone.Names()
	// A watch on the topics it reads and writes ends it, with the cause,
	// when one is lost: announcing a log recreated empty would be wrong.
	parent := ctx
	ctx, stopWith := context.WithCancelCause(ctx)
	defer stopWith(nil)
	go func() {
		if err := backbone.WatchTopics(ctx, cfg.Backbone, names.Workflows, names.Operations, names.Health, names.DeadLetters, names.Notifications); err != nil {
			stopWith(fmt.Errorf("notifier: %w", err))
		}
	}()
	n := &notifier{cfg: cfg, names: names, log: cfg.Backbone.Log().With("service", "notifier"),
		txnID: names.Group("notifier") + "-" + cfg.InstanceID}

	// The client outlives ctx by stopGrace at most: long enough to abort
	// and leave the group, not so long as to hang on a silent broker.
	clientCtx, cutOff := context.WithCancel(context.WithoutCancel(ctx))
	defer cutOff()
	defer context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, cutOff) })()
	var member []kgo.Opt
	if cfg.StaticMembership {
		member = cfg.Backbone.StaticMember(names.Group("notifier"), cfg.InstanceID, func(err error) { stopWith(fmt.Errorf("notifier: %w", err)) })
	}
	sess, err := kgo.NewGroupTransactSession(cfg.Backbone.Opts(append(member,
		kgo.WithContext(clientCtx),
		kgo.ConsumerGroup(names.Group("notifier")),
		kgo.ConsumeTopics(names.Workflows, names.Operations, names.Health, names.DeadLetters),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.TransactionalID(n.txnID),
	)...)...)
	if err != nil {
		return fmt.Errorf("notifier: %w", err)
	}
	defer func() {
		if ctx.Err() == nil { // ending on an error: the same grace to leave
			time.AfterFunc(stopGrace, cutOff)
		}
		sess.Close()
	}()
	n.sess, n.clientCtx = sess, clientCtx
	n.log.Info("notifier started", "transactional_id", n.txnID)

	// idleSince is when records that made no notification were first
	// left uncommitted (zero: none are).
	var idleSince time.Time
	for {
		fetches := n.poll(ctx, idleSince)
		if ctx.Err() != nil {
			if parent.Err() == nil {
				return context.Cause(ctx) // a topic was lost, or the identity taken
			}
			return nil // no transaction is open between batches
		}
		if err := n.fetchError(fetches); err != nil {
			return err
		}
		out, notes := n.render(fetches)
		if len(out) == 0 {
			if fetches.NumRecords() > 0 && idleSince.IsZero() {
				idleSince = cfg.Clock.Now()
			}
			if idleSince.IsZero() || cfg.Clock.Since(idleSince) < cfg.IdleCommit {
				continue
			}
		}
		if err := sess.Begin(); err != nil { // the producer is in a state kgo cannot recover from
			if backbone.FatalTxnError(err) {
				return n.fatalError(err)
			}
			return fmt.Errorf("notifier: begin transaction: %w", err)
		}
		committed, err := n.transact(ctx, out)
		// Committed, every offset consumed is; aborted, the session has
		// rewound to the last commit and reads the records again.
		idleSince = time.Time{}
		if committed {
			for _, note := range notes {
				cfg.Metrics.Written(note.Kind, string(note.Severity))
			}
		}
		switch {
		case err != nil && backbone.FatalTxnError(err):
			return n.fatalError(err)
		case err != nil && ctx.Err() == nil:
			n.log.Warn("transaction failed; the batch is consumed again", "err", err)
		case !committed && ctx.Err() == nil:
			n.log.Info("transaction aborted; the batch is consumed again", "records", fetches.NumRecords())
		}
	}
}

type notifier struct {
	cfg       Config
	names     topics.Names
	log       *slog.Logger
	txnID     string
	sess      *kgo.GroupTransactSession
	clientCtx context.Context
}

// poll returns the next fetches, or none once records left uncommitted
// since idleSince are due a commit of their own.
func (n *notifier) poll(ctx context.Context, idleSince time.Time) kgo.Fetches {
	if idleSince.IsZero() {
		return n.sess.PollFetches(ctx)
	}
	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	due := n.cfg.Clock.AfterFunc(n.cfg.IdleCommit-n.cfg.Clock.Since(idleSince), cancel)
	defer due.Stop()
	return n.sess.PollFetches(pollCtx)
}

// fetchError logs the fetch errors of fetches, and returns the first that
// ends the notifier, if any.
func (n *notifier) fetchError(fetches kgo.Fetches) error {
	var end error
	fetches.EachError(func(topic string, p int32, err error) {
		switch {
		case end != nil:
		case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			// the poll was cut short: records are due a commit
		case errors.Is(err, kgo.ErrClientClosed):
			end = fmt.Errorf("notifier: %w", err)
		case backbone.FatalTxnError(err):
			end = n.fatalError(fmt.Errorf("fetch %s partition %d: %w", topic, p, err))
		default:
			n.log.Warn("fetch", "topic", topic, "partition", p, "err", err)
		}
	})
	return end
}

// render turns the records of fetches into notifications: the records to
// write, and what each says.
func (n *notifier) render(fetches kgo.Fetches) ([]*kgo.Record, []records.Notification) {
	var out []*kgo.Record
	var notes []records.Notification
	fetches.EachRecord(func(r *kgo.Record) {
		made, err := fromRecord(n.names, r)
		if err != nil {
			n.log.Error("skipping a record that cannot be decoded", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
			made = []records.Notification{Undecodable(r.Topic, r.Partition, r.Offset, string(r.Key), r.Timestamp, err)}
		}
		for _, note := range made {
			rec, err := Record(n.names, note)
			if err != nil {
				n.log.Error("encode notification", "kind", note.Kind, "err", err)
				continue
			}
			out = append(out, rec)
			notes = append(notes, note)
		}
	})
	return out, notes
}

// transact writes out and commits the offsets consumed so far in the
// transaction begun. It commits only if every record was written and ctx
// is still live; else it aborts.
func (n *notifier) transact(ctx context.Context, out []*kgo.Record) (bool, error) {
	promise := kgo.AbortingFirstErrPromise(n.sess.Client())
	for _, r := range out {
		n.sess.Produce(ctx, r, promise.Promise())
	}
	if n.cfg.ending != nil {
		n.cfg.ending()
	}
	// Not ctx: a stopping notifier still aborts, within stopGrace.
	endCtx, cancel := context.WithTimeout(n.clientCtx, endTimeout)
	defer cancel()
	// Every record is written, or failed, before the choice: kgo would
	// commit the records written and drop the others.
	commit := kgo.TryCommit
	if err := n.sess.Client().Flush(endCtx); err != nil {
		commit = kgo.TryAbort
	} else if err := promise.Err(); err != nil {
		commit = kgo.TryAbort
		if ctx.Err() == nil {
			n.log.Warn("produce notifications; the batch is consumed again", "err", err)
		}
		if backbone.FatalTxnError(err) {
			_, _ = n.sess.End(endCtx, kgo.TryAbort)
			return false, fmt.Errorf("produce: %w", err)
		}
	}
	if ctx.Err() != nil {
		commit = kgo.TryAbort
	}
	committed, err := n.sess.End(endCtx, commit)
	if n.cfg.ended != nil {
		n.cfg.ended(committed, err)
	}
	if err != nil {
		return false, fmt.Errorf("end transaction: %w", err)
	}
	return committed, nil
}

// fatalError says what a fatal error means for the notifier.
func (n *notifier) fatalError(err error) error {
	switch {
	case backbone.FencedTxnError(err):
		return fmt.Errorf("notifier: fenced: another producer took transactional ID %s (a second copy with instance ID %q?); stopping: %w", n.txnID, n.cfg.InstanceID, err)
	case errors.Is(err, kerr.TransactionalIDAuthorizationFailed), errors.Is(err, kerr.GroupAuthorizationFailed),
		errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		return fmt.Errorf("notifier: not authorised (transactional ID %s, group %s); stopping: %w", n.txnID, n.names.Group("notifier"), err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("notifier: a transaction of %s did not end within %v, its outcome unknown; stopping (a restart aborts it): %w", n.txnID, endTimeout, err)
	default:
		return fmt.Errorf("notifier: transactional ID %s can no longer be used; stopping (a restart initialises it again): %w", n.txnID, err)
	}
}

// fromRecord renders one source record into the notifications it is
// worth: none, one, or for a health signal both a change of health and a
// change of drift.
func fromRecord(names topics.Names, r *kgo.Record) ([]records.Notification, error) {
	if r.Value == nil {
		return nil, nil
	}
	var out []records.Notification
	add := func(n records.Notification, ok bool) {
		if ok {
			out = append(out, n)
		}
	}
	switch r.Topic {
	case names.Workflows:
		rec, err := records.DecodeWorkflowRecord(r.Value)
		if err != nil {
			return nil, err
		}
		add(FromWorkflow(rec))
	case names.Operations:
		ev, err := records.DecodeOperationEvent(r.Value)
		if err != nil {
			return nil, err
		}
		add(FromOperation(ev))
	case names.Health:
		h, err := records.DecodeHealth(r.Value)
		if err != nil {
			return nil, err
		}
		add(FromHealth(h))
		add(FromDrift(h))
	case names.DeadLetters:
		d, err := records.DecodeDeadLetter(r.Value)
		if err != nil {
			return nil, err
		}
		add(FromDeadLetter(d), true)
	}
	return out, nil
}
