// Package backbone is the Kafka that Flotilla's services run on: how to
// reach it (Config), and an embedded broker for `flotilla dev` and tests.
package backbone

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// DefaultBrokers is where clients look for Kafka when neither a flag nor
// FLOTILLA_BROKERS says otherwise.
const DefaultBrokers = "127.0.0.1:9092"

// BrokersFromEnv returns FLOTILLA_BROKERS, or DefaultBrokers.
func BrokersFromEnv() string {
	if b := os.Getenv("FLOTILLA_BROKERS"); b != "" {
		return b
	}
	return DefaultBrokers
}

// SplitBrokers turns "a:9092, b:9092" into its addresses.
func SplitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Config says how a service or the CLI reaches the backbone.
type Config struct {
	Brokers []string
	// Namespace prefixes every topic and group name ("fleet" by default),
	// so that several Flotillas, or tests, can share one Kafka.
	Namespace string
	Logger    *slog.Logger
	// ClientOpts are added to every client made from this Config (TLS, SASL, ...).
	ClientOpts []kgo.Opt
	// User is the SASL user the clients authenticate as, "" without SASL:
	// the CLI's principal unless FLOTILLA_PRINCIPAL says otherwise.
	User string
	// SessionTimeout is how long a service's copy with a stable identity
	// may be away before its group gives its partitions to others
	// (StaticMember); 0 means StaticSessionTimeout.
	SessionTimeout time.Duration
}

// Names returns the topic names of the Config's namespace.
func (c Config) Names() topics.Names { return topics.NewNames(c.Namespace) }

// Log returns the Config's logger, or the default one.
func (c Config) Log() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// Opts returns the options of a client of the backbone: its brokers, the
// partitioner that keeps a workflow's rows together, and extra options.
func (c Config) Opts(extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.RecordPartitioner(topics.Partitioner()),
		// A write told its partition's leader moved waits for fresh
		// metadata, by default at least 5s after the last: longer than a
		// service may wait to renew a lease.
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
	opts = append(opts, c.ClientOpts...)
	return append(opts, extra...)
}

// Client returns a new client of the backbone.
func (c Config) Client(extra ...kgo.Opt) (*kgo.Client, error) {
	if len(c.Brokers) == 0 {
		return nil, fmt.Errorf("no brokers given")
	}
	cl, err := kgo.NewClient(c.Opts(extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client for %s: %w", strings.Join(c.Brokers, ","), err)
	}
	return cl, nil
}

// EnsureTopics creates the namespace's topics if they are missing and
// checks that the existing ones have the shape Flotilla relies on.
func (c Config) EnsureTopics(ctx context.Context, partitions int32, replicationFactor int16) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	return topics.Ensure(ctx, kadm.NewClient(cl), topics.Catalogue(c.Names(), partitions, replicationFactor))
}

// OwnPartitions returns the group options that tell a service which
// partitions of topic its group member gained (before fetching them
// begins) and lost (revoked, or lost with the membership).
func OwnPartitions(topic string, gained, lost func(partitions []int32)) []kgo.Opt {
	drop := func(_ context.Context, _ *kgo.Client, m map[string][]int32) { lost(m[topic]) }
	return []kgo.Opt{
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { gained(m[topic]) }),
		kgo.OnPartitionsRevoked(drop),
		kgo.OnPartitionsLost(drop),
	}
}
