// Package bench measures Flotilla at scale on one broker (`flotilla
// bench`): the limits of raw Kafka clients, a rollout over a large
// simulated fleet, the planner's reaction to an unhealthy cluster while
// many operations are in flight, each service's recovery from a long
// history, and the services' memory and idle CPU. Each stage is a function
// returning its result; Run runs those asked for and gathers them in a
// Report, which the goals of issue 9 are checked against.
//
// The services run as processes of their own (the flotilla binary's
// service subcommands, re-executed), so that their memory and CPU time
// are their own; the bench observes them only through the topics, as any
// Kafka client can.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
)

// Stages are the stages of a run, in the order they run.
var Stages = []string{"limits", "rollout", "reaction", "recovery"}

// Options configure a run. The zero value (with Exe) is the default run;
// Quick gives a small one for tests.
type Options struct {
	// Brokers of a Kafka to measure; none starts an embedded broker.
	Brokers []string
	// Clusters are the fleet sizes the rollout and recovery stages run at
	// (default 10,000 and 100,000).
	Clusters []int
	// InFlight is the rollout's maxInFlight (default 10,000).
	InFlight int
	// Stages to run (default all of Stages).
	Stages []string
	// Timeout bounds each stage (default 2 minutes); a stage cut short
	// reports how far it got.
	Timeout time.Duration
	// Quick makes a small run: 2,000 clusters, 1,000 in flight, short windows.
	Quick bool
	// Exe is the flotilla binary whose service subcommands (planner,
	// executor, monitor, notifier) run the services; Env is added to
	// their environment.
	Exe string
	Env []string
	// Log tells the progress of the run (default: discarded).
	Log *slog.Logger

	// The sizes of the stages, set from Quick when zero.
	Partitions      int32         // of each topic (default 6, as the services create them)
	RawRecords      int           // records of each raw measure (default 500,000)
	Trials          int           // of the reaction stage (default 5)
	ReactionOpTime  time.Duration // of a simulated operation in the reaction stage (default 10s)
	HistoryRollouts int           // finished rollouts in the recovery stage's history (default 10)
	IdleWindow      time.Duration // over which idle CPU is measured (default 20s)
}

func (o Options) withDefaults() Options {
	quick := func(q, full int) int {
		if o.Quick {
			return q
		}
		return full
	}
	if len(o.Clusters) == 0 {
		o.Clusters = []int{10_000, 100_000}
		if o.Quick {
			o.Clusters = []int{2_000}
		}
	}
	setInt(&o.InFlight, quick(1_000, 10_000))
	setInt(&o.RawRecords, quick(20_000, 500_000))
	setInt(&o.Trials, quick(3, 5))
	setInt(&o.HistoryRollouts, quick(5, 10))
	if len(o.Stages) == 0 {
		o.Stages = Stages
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Partitions == 0 {
		o.Partitions = 6
	}
	if o.ReactionOpTime == 0 {
		o.ReactionOpTime = time.Duration(quick(2, 10)) * time.Second
	}
	if o.IdleWindow == 0 {
		o.IdleWindow = time.Duration(quick(3, 20)) * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

func setInt(v *int, def int) {
	if *v == 0 {
		*v = def
	}
}

// Check validates the options.
func (o Options) Check() error {
	for _, s := range o.Stages {
		if !slices.Contains(Stages, s) {
			return fmt.Errorf("unknown stage %q: want one of %v", s, Stages)
		}
	}
	for _, n := range o.Clusters {
		if n < 10 {
			return fmt.Errorf("--clusters %d: want at least 10", n)
		}
	}
	if o.InFlight < 0 || o.Timeout < 0 {
		return fmt.Errorf("--in-flight and --timeout must not be negative")
	}
	if o.Exe == "" {
		return fmt.Errorf("no flotilla binary to run the services with")
	}
	return nil
}

// bench is one run.
type bench struct {
	o           Options
	brokers     []string
	replication int16
	runID       string
	stages      atomic.Int64 // numbers the stages' namespaces
	dir         string       // the services' logs and simulated fleets
}

// Run runs the stages o asks for and reports what they measured. It fails
// only when it cannot run at all (no broker); a stage that fails or is cut
// short by its timeout says so in its result.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	if err := o.Check(); err != nil {
		return nil, err
	}
	b := &bench{o: o, brokers: o.Brokers, replication: -1, runID: uuid.NewString()[:6]}
	r := &Report{Broker: "embedded (kfake)", Clusters: o.Clusters, InFlight: o.InFlight, Quick: o.Quick, Started: time.Now().UTC()}
	if len(b.brokers) == 0 {
		broker, err := backbone.StartEmbedded("127.0.0.1:0", "")
		if err != nil {
			return nil, err
		}
		defer broker.Close()
		b.brokers, b.replication = broker.Addrs(), 1
	} else {
		r.Broker = strings.Join(b.brokers, ",")
	}
	dir, err := os.MkdirTemp("", "flotilla-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	b.dir = dir

	if b.runs("limits") {
		r.Limits = b.limits(ctx)
	}
	for _, n := range o.Clusters {
		if b.runs("rollout") {
			r.Rollouts = append(r.Rollouts, b.rollout(ctx, n))
		}
	}
	if b.runs("reaction") {
		r.Reaction = b.reaction(ctx)
	}
	for _, n := range o.Clusters {
		if b.runs("recovery") {
			r.Recoveries = append(r.Recoveries, b.recovery(ctx, n))
		}
	}
	r.Elapsed = seconds(time.Since(r.Started))
	r.check()
	return r, ctx.Err()
}

func (b *bench) runs(stage string) bool { return slices.Contains(b.o.Stages, stage) }

// stage returns the context of one stage, bounded by the stage timeout.
func (b *bench) stage(ctx context.Context, what string) (context.Context, context.CancelFunc) {
	b.o.Log.Info("bench: " + what)
	return context.WithTimeout(ctx, b.o.Timeout)
}

// seconds is a duration in seconds, as the report holds them.
func seconds(d time.Duration) float64 { return d.Seconds() }
