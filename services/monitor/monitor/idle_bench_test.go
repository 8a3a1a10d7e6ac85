package monitor_test

// The idle benchmark uses only the monitor's public API, so that the same
// file runs against an older monitor (issue 9's baseline) and the two can
// be compared on one machine, in one run:
//
//	git worktree add /tmp/mon-base 95cadbf
//	services/monitor/monitor/testdata/idlebench.sh /tmp/mon-base

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/services/monitor/monitor"
)

// BenchmarkIdleFleet measures the CPU the monitor costs, broker included,
// idling over a simulated fleet whose health is already known (and old
// enough that every cluster is due a heartbeat): cores used over a window,
// against the embedded broker alone over the same time, and the health
// records written per second. It runs once whatever b.N (-benchtime=1x).
//
// FLOTILLA_IDLE_CLUSTERS (default 100000), FLOTILLA_IDLE_WINDOW (default
// 20s) and FLOTILLA_IDLE_INTERVAL / FLOTILLA_IDLE_HEARTBEAT (default 2s and
// 5s, those of `flotilla dev`) change it; FLOTILLA_IDLE_PROFILE names a
// file for a CPU profile of the window.
func BenchmarkIdleFleet(b *testing.B) {
	n := envInt(b, "FLOTILLA_IDLE_CLUSTERS", 100_000)
	window := envDuration(b, "FLOTILLA_IDLE_WINDOW", 20*time.Second)
	interval := envDuration(b, "FLOTILLA_IDLE_INTERVAL", 2*time.Second)
	heartbeat := envDuration(b, "FLOTILLA_IDLE_HEARTBEAT", 5*time.Second)

	broker, err := backbone.StartEmbedded("127.0.0.1:0", b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer broker.Close()
	cfg := backbone.Config{Brokers: broker.Addrs(), Namespace: "idle", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := cfg.SetUpTopics(ctx, 6, 1); err != nil {
		b.Fatal(err)
	}
	cl, err := cfg.Client(kgo.ProducerBatchMaxBytes(1 << 20))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	seed(b, ctx, cl, cfg, n)

	sim, err := simfleet.New(simfleet.Options{})
	if err != nil {
		b.Fatal(err)
	}
	reg := drivers.NewRegistry()
	sim.Register(reg)

	b.ResetTimer()
	brokerOnly := cpuOver(window / 4)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- monitor.Run(runCtx, monitor.Config{Backbone: cfg, Probers: reg, InstanceID: "bench", Interval: interval, Heartbeat: heartbeat})
	}()
	time.Sleep(window / 2) // warm up: the group forms, the health is read back; a benchmark's window, not a condition
	before := healthEnd(b, ctx, cl, cfg)
	stopProfile := profile(b)
	cores := cpuOver(window)
	stopProfile()
	written := healthEnd(b, ctx, cl, cfg) - before
	lat := opLatencies(b, ctx, cl, cfg, 5)
	stop()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(cores, "cores")
	b.ReportMetric(brokerOnly, "broker-only-cores")
	b.ReportMetric(float64(written)/window.Seconds(), "records/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "op-probe-p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "op-probe-max-ms")
	b.Logf("%d clusters, interval %s, heartbeat %s: %.3f cores with the monitor (%.3f broker alone), %.0f health records/s, operation end to its probe's signal %s median, %s max",
		n, interval, heartbeat, cores, brokerOnly, float64(written)/window.Seconds(), lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond))
}

// opLatencies ends an operation on n clusters, one after the other, and
// measures each time from the operation's record to the health signal of
// the probe that follows it: what the planner's wave gate waits for. They
// are returned sorted.
func opLatencies(b *testing.B, ctx context.Context, cl *kgo.Client, cfg backbone.Config, n int) []time.Duration {
	names := cfg.Names()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, names.Health)
	if err != nil {
		b.Fatal(err)
	}
	from := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { from[o.Partition] = kgo.NewOffset().At(o.Offset) })
	health, err := cfg.Client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{names.Health: from}))
	if err != nil {
		b.Fatal(err)
	}
	defer health.Close()
	var out []time.Duration
	for i := range n {
		id := fmt.Sprintf("sim-%04d", 1+i*997)
		ended := time.Now().UTC()
		v, err := records.Encode(records.OperationEvent{Envelope: records.Envelope{ID: uuid.NewString(), Time: ended, Principal: "executor"},
			CommandID: uuid.NewString(), WorkflowID: "bench", ClusterID: id, Attempt: 1, Status: records.OperationSucceeded})
		if err != nil {
			b.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: names.Operations, Key: []byte(topics.TargetKey("bench", id)), Value: v}).FirstErr(); err != nil {
			b.Fatal(err)
		}
		waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
		for seen := false; !seen; {
			fs := health.PollFetches(waitCtx)
			if waitCtx.Err() != nil {
				b.Fatalf("no signal of %s's probe after its operation ended, after a minute", id)
			}
			fs.EachRecord(func(r *kgo.Record) {
				if string(r.Key) != id || r.Value == nil {
					return
				}
				if h, err := records.DecodeHealth(r.Value); err == nil && !h.ObservedAt.Before(ended.Truncate(time.Millisecond)) {
					seen = true
				}
			})
		}
		cancel()
		out = append(out, time.Since(ended))
	}
	slices.Sort(out)
	return out
}

// seed registers n simulated clusters and, for each, the health its probe
// will see, observed an hour ago.
func seed(b *testing.B, ctx context.Context, cl *kgo.Client, cfg backbone.Config, n int) {
	names := cfg.Names()
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	var recs []*kgo.Record
	flush := func() {
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		recs = recs[:0]
	}
	for _, c := range simfleet.GenerateClusters(n) {
		inv, err := records.Encode(records.ClusterRecord{Envelope: records.Envelope{ID: uuid.NewString(), Time: at, Principal: "bench"}, Cluster: c})
		if err != nil {
			b.Fatal(err)
		}
		h, err := records.Encode(records.Health{Envelope: records.Envelope{ID: uuid.NewString(), Time: at, Principal: monitor.Principal},
			ClusterID: c.ID, Status: records.HealthHealthy, PreviousStatus: records.HealthUnknown, ObservedVersion: c.Version, ObservedAt: at})
		if err != nil {
			b.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: names.Inventory, Key: []byte(c.ID), Value: inv}, &kgo.Record{Topic: names.Health, Key: []byte(c.ID), Value: h})
		if len(recs) >= 10_000 {
			flush()
		}
	}
	flush()
}

// healthEnd is the sum of the health topic's end offsets.
func healthEnd(b *testing.B, ctx context.Context, cl *kgo.Client, cfg backbone.Config) int64 {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, cfg.Names().Health)
	if err != nil {
		b.Fatal(err)
	}
	var sum int64
	ends.Each(func(o kadm.ListedOffset) { sum += o.Offset })
	return sum
}

// profile writes a CPU profile of the window to FLOTILLA_IDLE_PROFILE, if
// set; it returns the function that ends it.
func profile(b *testing.B) func() {
	path := os.Getenv("FLOTILLA_IDLE_PROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// cpuOver returns the cores this process used, on average, over d.
func cpuOver(d time.Duration) float64 {
	start, t0 := cpuTime(), time.Now()
	time.Sleep(d) // the measuring window
	return (cpuTime() - start).Seconds() / time.Since(t0).Seconds()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return n
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatal(fmt.Errorf("%s: %w", name, err))
	}
	return d
}
