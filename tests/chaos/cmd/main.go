//go:build unix

// Command cmd makes a chaos run of Flotilla (package chaos) and prints its
// figures: the faults injected, each service's recovery time, and what the
// checks of the history found. It exits 1 if a check failed.
//
//	go run ./tests/chaos/cmd                  # the short run: 200 clusters, 10 kills, a zombie, a broker restart
//	go run ./tests/chaos/cmd -long            # 1,000 clusters, 60 kills, 4 zombies, 3 broker restarts
//	go run ./tests/chaos/cmd -brokers 127.0.0.1:39092   # on a real Kafka (no broker restarts)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/flotilla-fleet/flotilla/tests/chaos"
)

func main() {
	var (
		seed                                      = flag.Uint64("seed", 1, "seed of every random choice")
		long                                      = flag.Bool("long", false, "the long run's defaults (1,000 clusters, 60 kills, 4 zombies, 3 broker restarts)")
		brokers                                   = flag.String("brokers", "", "a real Kafka (host:port,...); empty: the embedded broker of flotilla dev --broker-only")
		dir                                       = flag.String("dir", "", "directory of the run's files (default: a new temporary one)")
		clusters, rollouts, kills, zombies, bouts = flag.Int("clusters", 0, "simulated clusters"), flag.Int("rollouts", 0, "least number of rollouts"),
			flag.Int("kills", -1, "SIGKILLs"), flag.Int("zombies", -1, "processes frozen past their session timeout"), flag.Int("broker-restarts", -1, "restarts of the embedded broker")
		failureRate = flag.Float64("failure-rate", -1, "share of simulated operations that fail")
		zombieFor   = flag.Duration("zombie-for", 0, "how long a zombie stays frozen (at least the session timeout and 5s)")
		session     = flag.Duration("session-timeout", -1, "the services' --session-timeout (0: theirs, 45s)")
		zombieSvcs  = flag.String("zombie-services", "", "services the zombies are taken from, in turn (default executor,planner,notifier,monitor)")
		timeout     = flag.Duration("rollout-timeout", 0, "longest a rollout may take before it counts as stalled")
		jsonOut     = flag.String("json", "", "also write the report as JSON to this file")
		quiet       = flag.Bool("q", false, "no progress lines")
	)
	flag.Parse()
	o := chaos.Short(*seed)
	if *long {
		o = chaos.Long(*seed)
	}
	o.Brokers, o.Dir = *brokers, *dir
	if *clusters > 0 {
		o.Clusters = *clusters
	}
	if *rollouts > 0 {
		o.Rollouts = *rollouts
		o.MaxRollouts = max(o.MaxRollouts, o.Rollouts)
	}
	if *kills >= 0 {
		o.Kills = *kills
	}
	if *zombies >= 0 {
		o.Zombies = *zombies
	}
	if *bouts >= 0 {
		o.BrokerRestarts = *bouts
	}
	if *failureRate >= 0 {
		o.FailureRate = *failureRate
	}
	if *session >= 0 {
		o.SessionTimeout = *session
	}
	if *zombieFor > 0 {
		o.ZombieFor = *zombieFor
	}
	if *zombieSvcs != "" {
		o.ZombieServices = strings.Split(*zombieSvcs, ",")
	}
	if *timeout > 0 {
		o.RolloutTimeout = *timeout
	}
	if !*quiet {
		o.Progress = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rep, err := chaos.Run(ctx, o)
	if rep != nil {
		rep.Print(os.Stdout)
		if *jsonOut != "" {
			if b, err := json.MarshalIndent(rep, "", "  "); err == nil {
				_ = os.WriteFile(*jsonOut, b, 0o644)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos run failed after %s: %v\n", time.Since(start).Round(time.Second), err)
		os.Exit(2)
	}
	if len(rep.Failed()) > 0 || len(rep.HarnessErrors) > 0 {
		fmt.Fprintf(os.Stderr, "%d checks failed; the run's files are in %s\n", len(rep.Failed()), filepath.Clean(rep.Dir))
		os.Exit(1)
	}
}
