//go:build unix

// Package chaos is Flotilla's chaos suite: it runs the four services as
// separate processes, two copies of each, against a broker (the embedded
// one of `flotilla dev --broker-only`, or a real Kafka), submits rollouts
// over a simulated fleet with retries and a failure rate, and while they
// run, driven by a seeded random number generator, SIGKILLs service
// processes and restarts them, freezes one past its session timeout
// (SIGSTOP) and resumes it (a zombie), and restarts the broker. Processes
// that exit by themselves are restarted, as a supervisor would.
//
// Then it checks the recorded history, the way Jepsen or etcd's robustness
// tests do: the simulated fleet's call log (every Apply call, from every
// process, with its outcome), the topics read back read-committed, the
// audit timeline of every rollout, and the simulated clusters' final state.
// See [Run] for the checks, and the README's reliability section.
//
// The test (chaos_test.go) runs a short seeded run when FLOTILLA_CHAOS is
// set; `go run ./tests/chaos/cmd` runs one with any options and prints its
// figures.
package chaos

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
)

// Options shape a chaos run. The zero value of a field takes the default
// of [Short].
type Options struct {
	// Seed drives every random choice of the run: the faults' times and
	// targets, and the rollouts' IDs (so the sim's failures, decided by
	// command ID, are the same in every run of one seed).
	Seed uint64
	// Clusters is the size of the simulated fleet; every cluster is a
	// target of every rollout.
	Clusters int
	// Rollouts is the least number of rollouts run one after the other;
	// more are started while faults remain to be injected (up to
	// MaxRollouts).
	Rollouts    int
	MaxRollouts int
	// WaveSize is the number of clusters of a wave; Bake the bake of each.
	WaveSize int
	Bake     time.Duration
	// Retries and RetryBackoff of each rollout; FailureRate is the
	// executors' --sim-failure-rate, OpDuration their --sim-op-duration.
	Retries      int
	RetryBackoff time.Duration
	FailureRate  float64
	OpDuration   time.Duration
	// Lease is the executors' --lease; ProbeInterval and Heartbeat the
	// monitors' --interval and --heartbeat.
	Lease         time.Duration
	ProbeInterval time.Duration
	Heartbeat     time.Duration

	// Kills is the number of SIGKILLs; the time between two is drawn
	// from KillEvery ([min, max]), and a killed process is started again
	// after a time drawn from RestartAfter.
	Kills        int
	KillEvery    [2]time.Duration
	RestartAfter [2]time.Duration
	// SessionTimeout is every service's --session-timeout (0: theirs,
	// 45 s): how long a frozen or killed copy keeps its partitions.
	SessionTimeout time.Duration
	// Zombies is the number of processes frozen (SIGSTOP) for ZombieFor,
	// longer than the session timeout, then resumed; ZombieServices are
	// the services they are taken from, in turn (default: the executor,
	// then the planner, the notifier, the monitor).
	Zombies        int
	ZombieFor      time.Duration
	ZombieServices []string
	// BrokerRestarts is the number of restarts of the embedded broker
	// (none on a real Kafka).
	BrokerRestarts int

	// Brokers names a real Kafka ("host:port,..."); empty runs the
	// embedded broker of `flotilla dev --broker-only`.
	Brokers string
	// Namespace prefixes the run's topics and groups (default: chaos-
	// plus the seed and a random suffix, unique on a shared Kafka).
	Namespace string
	// Dir holds the run's files: logs, the call log, the sim's state, the
	// broker's data (default: a new temporary directory, kept).
	Dir string
	// Binary is a flotilla binary to run; empty builds one from this
	// module into Dir.
	Binary string
	// RolloutTimeout bounds each rollout: one not finished by then is a
	// stall, reported, and the run moves on to its checks.
	RolloutTimeout time.Duration
	// Progress, if set, receives a line for each step and fault.
	Progress io.Writer
}

// Short returns the options of the seeded short run CI makes: 200
// clusters, two rollouts, 10 kills, a zombie executor and then a zombie
// planner, one broker restart; about two minutes. The services' session
// timeout is 15 s rather than 45 s, so that a zombie takes 20 s.
func Short(seed uint64) Options {
	return Options{
		Seed: seed, Clusters: 200, Rollouts: 2, MaxRollouts: 3,
		WaveSize: 50, Bake: time.Second,
		Retries: 2, RetryBackoff: time.Second, FailureRate: 0.2, OpDuration: 500 * time.Millisecond,
		Lease: 9 * time.Second, ProbeInterval: 2 * time.Second, Heartbeat: 30 * time.Second,
		Kills: 10, KillEvery: [2]time.Duration{2 * time.Second, 6 * time.Second}, RestartAfter: [2]time.Duration{time.Second, 2 * time.Second},
		SessionTimeout: 15 * time.Second,
		Zombies:        2, ZombieFor: 20 * time.Second, ZombieServices: []string{"executor", "planner"},
		BrokerRestarts: 1,
		RolloutTimeout: 6 * time.Minute,
	}
}

// Long returns the options of the long run: 1,000 clusters, at least 50
// kills (and as many rollouts as they take), a zombie of each service,
// three broker restarts, and the services' own session timeout (45 s).
func Long(seed uint64) Options {
	o := Short(seed)
	o.Clusters, o.Rollouts, o.MaxRollouts, o.WaveSize = 1000, 3, 12, 100
	o.Kills, o.KillEvery = 60, [2]time.Duration{4 * time.Second, 16 * time.Second}
	o.Zombies, o.ZombieServices, o.BrokerRestarts = 4, nil, 3
	o.SessionTimeout, o.ZombieFor = 0, 55*time.Second
	o.RolloutTimeout = 15 * time.Minute
	return o
}

func (o *Options) defaults() {
	d := Short(o.Seed)
	o.Clusters = cmp.Or(o.Clusters, d.Clusters)
	o.Rollouts = cmp.Or(o.Rollouts, d.Rollouts)
	o.MaxRollouts = max(o.MaxRollouts, o.Rollouts)
	o.WaveSize = cmp.Or(o.WaveSize, d.WaveSize)
	o.Bake = cmp.Or(o.Bake, d.Bake)
	o.RetryBackoff = cmp.Or(o.RetryBackoff, d.RetryBackoff)
	o.OpDuration = cmp.Or(o.OpDuration, d.OpDuration)
	o.Lease = cmp.Or(o.Lease, d.Lease)
	o.ProbeInterval = cmp.Or(o.ProbeInterval, d.ProbeInterval)
	o.Heartbeat = cmp.Or(o.Heartbeat, d.Heartbeat)
	if o.KillEvery[1] == 0 {
		o.KillEvery = d.KillEvery
	}
	o.KillEvery[1] = max(o.KillEvery[0], o.KillEvery[1])
	if o.RestartAfter[1] == 0 {
		o.RestartAfter = d.RestartAfter
	}
	o.RestartAfter[1] = max(o.RestartAfter[0], o.RestartAfter[1])
	// A zombie must stay frozen past its session, so that its twin takes over.
	if session := cmp.Or(o.SessionTimeout, 45*time.Second); o.ZombieFor <= session {
		o.ZombieFor = session + 5*time.Second
	}
	if len(o.ZombieServices) == 0 {
		o.ZombieServices = []string{"executor", "planner", "notifier", "monitor"}
	}
	o.RolloutTimeout = cmp.Or(o.RolloutTimeout, d.RolloutTimeout)
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Services are the four services, each run as two copies.
var Services = []string{"planner", "executor", "monitor", "notifier"}

// copies is the number of processes of each service.
const copies = 2

// runner is one chaos run.
type runner struct {
	o       Options
	rng     *rand.Rand
	dir     string
	bin     string
	ns      string
	real    bool
	cfg     backbone.Config
	simDir  string
	callLog string
	started time.Time

	broker *brokerProc  // nil on a real Kafka
	sink   *webhookSink // every notifier delivers to it
	slots  []*slot      // planner-0, planner-1, executor-0, ...
	txns   *txnWatch

	mu     sync.Mutex
	report *Report
	// busy names the service a zombie of which is frozen: its twin is
	// not killed meanwhile, nor is the broker restarted.
	busy string
	// current is the ID of the rollout under way.
	current string
}

// Run makes a chaos run and returns its report. It returns an error only
// when the run itself could not be made (the binary does not build, the
// broker does not start); what the checks found is in the report
// ([Report.Failed]).
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	r := &runner{o: o, rng: rand.New(rand.NewPCG(o.Seed, 0x5eed)), real: o.Brokers != ""}
	r.report = &Report{Seed: o.Seed, Clusters: o.Clusters, Options: o}
	var err error
	if r.dir = o.Dir; r.dir == "" {
		if r.dir, err = os.MkdirTemp("", fmt.Sprintf("flotilla-chaos-%d-", o.Seed)); err != nil {
			return nil, err
		}
	}
	if r.dir, err = filepath.Abs(r.dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"logs", "sim"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	r.report.Dir = r.dir
	r.simDir, r.callLog = filepath.Join(r.dir, "sim"), filepath.Join(r.dir, "calls.jsonl")
	r.ns = o.Namespace
	if r.ns == "" {
		r.ns = fmt.Sprintf("chaos-%d-%06x", o.Seed, rand.Uint32()&0xffffff)
	}
	r.report.Namespace = r.ns
	r.bin = o.Binary
	if r.bin == "" {
		r.progress("building flotilla into %s", r.dir)
		if r.bin, err = Build(ctx, r.dir); err != nil {
			return nil, err
		}
	}
	if err := r.run(ctx); err != nil {
		return r.report, err
	}
	return r.report, nil
}

// Build builds the flotilla binary of this module into dir and returns
// its path.
func Build(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	if root == "." || root == "" {
		return "", errors.New("find the module: not inside a Go module")
	}
	bin := filepath.Join(dir, "flotilla")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/flotilla")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/flotilla: %w\n%s", err, out)
	}
	return bin, nil
}

func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(r.o.Progress, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func (r *runner) run(ctx context.Context) error {
	r.started = time.Now()
	r.report.Started = r.started
	defer func() {
		if r.report.Ended.IsZero() {
			r.report.Ended = time.Now()
		}
	}()

	brokers, err := r.startBroker(ctx)
	if err != nil {
		return err
	}
	defer r.stopBroker()
	r.cfg = backbone.Config{Brokers: brokers, Namespace: r.ns, Logger: discardLogger()}
	r.report.Broker = strings.Join(brokers, ",")
	if r.real {
		r.report.BrokerKind = "Kafka at " + r.report.Broker
	} else {
		r.report.BrokerKind = "embedded (flotilla dev --broker-only)"
	}

	r.txns = newTxnWatch(r.cfg, r.ns)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go r.txns.run(watchCtx)

	if err := r.startSink(); err != nil {
		return err
	}
	defer r.sink.stop()
	r.startServices(ctx, brokers)
	defer r.stopServices()
	if err := r.awaitServices(ctx, 2*time.Minute); err != nil {
		return err
	}

	faultsCtx, stopFaults := context.WithCancel(ctx)
	faultsDone := make(chan struct{})
	go func() {
		defer close(faultsDone)
		r.injectFaults(faultsCtx)
	}()
	r.runWorkload(ctx, faultsDone)
	stopFaults()
	<-faultsDone
	r.progress("faults done; waiting for every process to run again")
	r.awaitAllRunning(ctx, time.Minute)

	// The monitors stop first: once the rollouts ended, the rest of the
	// log stays as it is, and the notifier can catch up with it.
	r.stopServicesOf("monitor")
	r.progress("reading the history; waiting for the notifier to catch up")
	h, err := r.readHistory(ctx)
	if err != nil {
		return fmt.Errorf("read the history: %w", err)
	}
	r.awaitNotifications(ctx, h, 2*time.Minute)
	r.awaitDeliveries(ctx, h, 2*time.Minute)
	stopWatch()
	r.stopServices()
	if err := r.readNotifications(ctx, h); err != nil {
		return err
	}
	r.report.Ended = time.Now()
	r.report.Stops = r.stopRecords()
	r.report.Recoveries = r.recoveries(h)
	r.report.Faults = r.faults()
	r.report.Exits = r.exits()
	r.report.Aborts = r.aborts()
	r.progress("checking the history")
	r.check(ctx, h)
	return nil
}
