package backbone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrTopicLost is matched (errors.Is) by the error of a topic that a
// service depends on and that is gone, or was deleted and created again:
// what it held is lost. It is fatal: a service that sees it stops, saying
// which topic, rather than idle on a topic that will never fill again or
// act on state rebuilt from an empty log.
var ErrTopicLost = errors.New("topic lost")

// TopicLostError says which topic was lost, and how.
type TopicLostError struct {
	Topic string
	// Was is the topic's ID when it was known (zero: it never was, it
	// did not exist when first looked at); Now is its ID now (zero: the
	// topic does not exist).
	Was, Now kadm.TopicID
}

func (e *TopicLostError) Error() string {
	var zero kadm.TopicID
	switch {
	case e.Was == zero && e.Now == zero:
		return fmt.Sprintf("topic %s does not exist", e.Topic)
	case e.Now == zero:
		return fmt.Sprintf("topic %s (ID %s) was deleted: what it held is lost", e.Topic, e.Was)
	default:
		return fmt.Sprintf("topic %s was deleted and created again (ID %s, now %s): what it held is lost", e.Topic, e.Was, e.Now)
	}
}

// Is makes the error match ErrTopicLost.
func (e *TopicLostError) Is(target error) bool { return target == ErrTopicLost }

// DefaultWatchInterval is how often a TopicWatch looks at its topics.
const DefaultWatchInterval = 5 * time.Second

// TopicWatch watches the topics a service depends on: it knows each
// one's topic ID (Kafka 2.8+) from when it started, and reports a topic
// that is gone (UNKNOWN_TOPIC_OR_PARTITION) or whose ID changed (deleted
// and created again, empty) as a *TopicLostError.
type TopicWatch struct {
	cl       *kgo.Client
	topics   []string
	ids      map[string]kadm.TopicID
	interval time.Duration
	log      *slog.Logger
}

// WatchOpt configures a TopicWatch.
type WatchOpt func(*TopicWatch)

// WatchInterval sets how often the watch looks (default DefaultWatchInterval).
func WatchInterval(d time.Duration) WatchOpt {
	return func(w *TopicWatch) {
		if d > 0 {
			w.interval = d
		}
	}
}

// WatchLogger sets the logger of the watch's retries (default slog.Default()).
func WatchLogger(l *slog.Logger) WatchOpt {
	return func(w *TopicWatch) {
		if l != nil {
			w.log = l
		}
	}
}

// NewTopicWatch starts watching topics through cl: it records each one's
// topic ID now, trying again every interval while the broker cannot say
// (unreachable, a partition without a leader). It fails with a
// *TopicLostError if a topic does not exist, with an authorization error
// (kerr) if the client may not describe one, and with ctx's error if ctx
// ends first. A broker too old for topic IDs (before 2.8) gives them all
// zero: the watch then sees deletions, not re-creations.
func NewTopicWatch(ctx context.Context, cl *kgo.Client, topics []string, opts ...WatchOpt) (*TopicWatch, error) {
	w := &TopicWatch{cl: cl, topics: slices.Clone(topics), interval: DefaultWatchInterval, log: slog.Default()}
	for _, o := range opts {
		o(w)
	}
	for {
		ids, err := w.look(ctx)
		if err == nil {
			var lost []error
			for _, t := range w.topics {
				if _, ok := ids[t]; !ok {
					lost = append(lost, &TopicLostError{Topic: t})
				}
			}
			if len(lost) > 0 {
				return nil, errors.Join(lost...)
			}
			w.ids = ids
			return w, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if fatal(err) {
			return nil, err
		}
		w.log.Warn("cannot read the topics' IDs yet; trying again", "topics", w.topics, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(w.interval):
		}
	}
}

// IDs returns the topic IDs the watch holds the topics to.
func (w *TopicWatch) IDs() map[string]kadm.TopicID { return maps.Clone(w.ids) }

// Check looks at the topics once. It returns a *TopicLostError (joined,
// if several) for each topic gone or created again, nil if all are as
// they were, and any other error when the broker could not tell: those
// are retriable unless they are authorization errors.
func (w *TopicWatch) Check(ctx context.Context) error {
	ids, err := w.look(ctx)
	if err != nil {
		return err
	}
	var lost []error
	for _, t := range w.topics {
		now, ok := ids[t]
		switch was := w.ids[t]; {
		case !ok:
			lost = append(lost, &TopicLostError{Topic: t, Was: was})
		case now != was:
			lost = append(lost, &TopicLostError{Topic: t, Was: was, Now: now})
		}
	}
	return errors.Join(lost...)
}

// Run checks the topics every interval until one is lost, returning its
// *TopicLostError, or until ctx ends, returning nil. A broker that cannot
// answer does not make a topic lost: Run logs it and keeps trying. An
// authorization error ends it, as it would not pass by itself.
func (w *TopicWatch) Run(ctx context.Context) error {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := w.Check(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			if failing {
				w.log.Info("topics can be checked again", "topics", w.topics)
			}
			failing = false
		case errors.Is(err, ErrTopicLost), fatal(err):
			return err
		case !failing:
			failing = true
			w.log.Warn("cannot check the topics; trying again", "topics", w.topics, "err", err)
		default:
			w.log.Debug("cannot check the topics; trying again", "topics", w.topics, "err", err)
		}
	}
}

// WatchTopics watches the topics a service depends on, through a client
// of cfg, every DefaultWatchInterval. It blocks until ctx ends, returning
// nil, or until a topic is lost (gone, or created again since WatchTopics
// started), returning an error that matches ErrTopicLost and names it;
// it also returns an authorization error. Call it when the service starts,
// before it reads its topics, so that the IDs it holds are those of the
// logs the service read.
func WatchTopics(ctx context.Context, cfg Config, topics ...string) error {
	cl, err := cfg.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	w, err := NewTopicWatch(ctx, cl, topics, WatchLogger(cfg.Log()))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch topics: %w", err)
	}
	return w.Run(ctx)
}

// look asks a broker for the topics' IDs, bypassing the client's metadata
// cache: the IDs of the topics that exist. A topic-level error other than
// UNKNOWN_TOPIC_OR_PARTITION (a leader election, say) is returned, as the
// broker could not say.
func (w *TopicWatch) look(ctx context.Context) (map[string]kadm.TopicID, error) {
	return topicIDs(ctx, w.cl, w.topics, max(w.interval, 10*time.Second))
}

func topicIDs(ctx context.Context, cl *kgo.Client, topics []string, timeout time.Duration) (map[string]kadm.TopicID, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	ids := map[string]kadm.TopicID{}
	answered := map[string]bool{}
	for _, rt := range resp.Topics {
		if rt.Topic == nil {
			continue
		}
		answered[*rt.Topic] = true
		err := kerr.ErrorForCode(rt.ErrorCode)
		switch {
		case err == nil:
			ids[*rt.Topic] = rt.TopicID
		case errors.Is(err, kerr.UnknownTopicOrPartition):
		default:
			return nil, fmt.Errorf("metadata of topic %s: %w", *rt.Topic, err)
		}
	}
	for _, t := range topics {
		if !answered[t] {
			return nil, fmt.Errorf("metadata: no answer for topic %s", t)
		}
	}
	return ids, nil
}

// fatal reports an error that trying again will not cure.
func fatal(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.ClusterAuthorizationFailed) ||
		errors.Is(err, kerr.SaslAuthenticationFailed)
}
