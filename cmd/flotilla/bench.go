package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flotilla-fleet/flotilla/internal/bench"
	"github.com/flotilla-fleet/flotilla/internal/servicecmd"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
)

// benchFlags are the flags of `flotilla bench`.
type benchFlags struct {
	clusters []int
	inFlight int
	brokers  string
	quick    bool
	output   string
	stages   []string
	timeout  time.Duration
	logLevel string
}

func benchCommand() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Flotilla at scale on one broker: limits, rollout, reaction, recovery, memory",
		Long: `bench measures, in one run on an embedded broker (or on the Kafka at
--brokers), what issue 9 sets goals for:

  limits    raw franz-go produce and consume of Flotilla-sized records, and a raw
            transactional consume→produce loop like the planner's
  rollout   a rollout upgrading every kafka cluster of a simulated fleet of each
            --clusters size, with instant operations and --in-flight at most at
            once: operations per second, as a ratio of the transactional limit,
            and the most operations seen in flight
  reaction  with --in-flight operations in flight, from an unhealthy health
            signal written to the pause committed (p50, p99), and no command
            sent while paused
  recovery  each service's time from process start to its first output over a
            fleet with a long history, its catch-up rate beside a raw consume,
            then the idle fleet's CPU

The services run as processes of their own (this binary's planner, executor,
monitor and notifier subcommands); their peak RSS is reported per stage. Each
figure is printed beside its goal; a goal missed does not fail the command.
A stage that does not finish within --timeout reports how far it got.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := f.options()
			if err != nil {
				return err
			}
			r, err := bench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), r)
			}
			return r.WriteTable(cmd.OutOrStdout())
		},
	}
	f.bind(cmd.Flags())
	return cmd
}

func (f *benchFlags) bind(fs *pflag.FlagSet) {
	fs.IntSliceVar(&f.clusters, "clusters", nil, "fleet sizes of the rollout and recovery stages, repeatable or comma-separated (default 10000,100000; --quick 2000)")
	fs.IntVar(&f.inFlight, "in-flight", 0, "the rollout's maxInFlight (default 10000; --quick 1000)")
	fs.StringVar(&f.brokers, "brokers", "", "Kafka bootstrap servers to measure, comma-separated (default: an embedded broker)")
	fs.BoolVar(&f.quick, "quick", false, "a small run: 2,000 clusters, 1,000 in flight, short windows")
	fs.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	fs.StringSliceVar(&f.stages, "stage", nil, fmt.Sprintf("stages to run, repeatable or comma-separated, of %v (default all)", bench.Stages))
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "longest each stage may take")
	fs.StringVar(&f.logLevel, "log-level", "info", "level of the progress log on stderr: debug, info, warn or error")
}

// options returns the bench's options the flags describe.
func (f *benchFlags) options() (bench.Options, error) {
	if f.output != "table" && f.output != "json" {
		return bench.Options{}, fmt.Errorf("--output %q: want table or json", f.output)
	}
	log, err := servicecmd.NewLogger(f.logLevel, "text")
	if err != nil {
		return bench.Options{}, err
	}
	exe, err := os.Executable()
	if err != nil {
		return bench.Options{}, fmt.Errorf("find the flotilla binary to run the services with: %w", err)
	}
	o := bench.Options{
		Brokers: backbone.SplitBrokers(f.brokers), Clusters: f.clusters, InFlight: f.inFlight,
		Stages: f.stages, Timeout: f.timeout, Quick: f.quick, Exe: exe, Log: log,
	}
	return o, o.Check()
}
