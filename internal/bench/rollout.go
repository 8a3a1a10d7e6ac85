package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
)

// RolloutResult is one rollout over a simulated fleet whose operations
// take no time: how fast the services complete operations, and how many
// they keep in flight.
type RolloutResult struct {
	Clusters      int    `json:"clusters"`
	InFlightLimit int    `json:"inFlightLimit"`
	Targets       int    `json:"targets"`
	Completed     int    `json:"completed"` // operations succeeded
	Finished      bool   `json:"finished"`  // the workflow ended in time
	State         string `json:"state"`     // its last state committed
	// Seconds runs from the first command to the last operation finished
	// (or to the timeout); TotalSeconds from the submit to the end
	// committed (or the timeout).
	Seconds      float64 `json:"seconds"`
	TotalSeconds float64 `json:"totalSeconds"`
	OpsPerSecond float64 `json:"opsPerSecond"`
	// TxnRatio is OpsPerSecond over the raw transactional loop's records
	// per second (0 without the limits stage).
	TxnRatio float64 `json:"txnRatio"`
	// MaxInFlight is the most operations in flight at once: commands sent
	// and not finished, swept over the commands' and the operation
	// results' timestamps in the topics.
	MaxInFlight int              `json:"maxInFlight"`
	PeakRSS     map[string]int64 `json:"peakRSS,omitempty"`
	Note        string           `json:"note,omitempty"`
	Error       string           `json:"error,omitempty"`
}

func (b *bench) rollout(ctx context.Context, n int) (res RolloutResult) {
	ctx, cancel := b.stage(ctx, fmt.Sprintf("rollout over %d clusters, %d in flight", n, b.o.InFlight))
	defer cancel()
	res = RolloutResult{Clusters: n, InFlightLimit: b.o.InFlight}
	f, err := b.startFleet(ctx, "rollout", simfleet.GenerateClusters(n), simulation{opDuration: 0, inMemory: true})
	if f != nil {
		defer func() { res.PeakRSS = f.close() }()
	}
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Targets = kafkaTargets(f.clusters)
	submitted := time.Now()
	wf, err := submit(ctx, f.cfg, upgradeAll(fmt.Sprintf("bench-%d", n), b.o.InFlight))
	if err == nil {
		err = f.obs.wait(ctx, f.svc, func() bool {
			h, ok := f.obs.last(wf)
			return ok && h.state.Terminal()
		})
	}
	ended := time.Now()
	res.TotalSeconds = seconds(ended.Sub(submitted))
	f.obs.mu.Lock()
	if h, ok := f.obs.last(wf); ok {
		res.State, res.Targets = string(h.state), h.targets
	}
	f.obs.mu.Unlock()
	res.Finished = err == nil && res.State == string(records.WorkflowSucceeded)
	b.sweepRollout(f.cfg, wf, &res, ended)
	if !res.Finished {
		res.Note = fmt.Sprintf("did not finish: %d of %d done after %s (%v, state %q)", res.Completed, res.Targets, time.Since(submitted).Round(time.Second), err, res.State)
	}
	return res
}

// sweepRollout reads the workflow's commands and operation results from
// the topics and counts what they show. Its rate runs from the first
// command to the last operation finished, or to ended for a rollout that
// did not finish.
func (b *bench) sweepRollout(cfg backbone.Config, wf string, res *RolloutResult, ended time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := readLog(ctx, cfg, wf)
	if err != nil {
		res.Error = err.Error()
		return
	}
	res.Completed = l.succeeded
	res.MaxInFlight = l.maxInFlight()
	if first, last, ok := l.span(); ok {
		if !res.Finished {
			last = ended
		}
		res.Seconds = seconds(last.Sub(first))
		res.OpsPerSecond = rate(l.finished(), last.Sub(first))
	}
}

// workflowLog is what the topics hold of one workflow's operations.
type workflowLog struct {
	commands  map[string]time.Time // command ID → when the planner sent it
	ends      map[string]time.Time // command ID → when its operation finished
	succeeded int
}

// readLog reads a workflow's commands and operation results, every one
// committed until now.
func readLog(ctx context.Context, cfg backbone.Config, wf string) (*workflowLog, error) {
	l := &workflowLog{commands: map[string]time.Time{}, ends: map[string]time.Time{}}
	names := cfg.Names()
	err := logtable.ReadToEnd(ctx, cfg.Opts(), names.Commands, nil, func(r *kgo.Record) {
		if c, err := records.DecodeCommand(r.Value); err == nil && c.WorkflowID == wf {
			if _, seen := l.commands[c.ID]; !seen {
				l.commands[c.ID] = r.Timestamp
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read commands: %w", err)
	}
	err = logtable.ReadToEnd(ctx, cfg.Opts(), names.Operations, nil, func(r *kgo.Record) {
		ev, err := records.DecodeOperationEvent(r.Value)
		if err != nil || ev.WorkflowID != wf || !ev.Status.Terminal() {
			return
		}
		if _, seen := l.ends[ev.CommandID]; !seen {
			l.ends[ev.CommandID] = r.Timestamp
			if ev.Status == records.OperationSucceeded {
				l.succeeded++
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read operations: %w", err)
	}
	return l, nil
}

func (l *workflowLog) finished() int { return len(l.ends) }

// span returns the time of the first command and of the last operation finished.
func (l *workflowLog) span() (first, last time.Time, ok bool) {
	for _, t := range l.commands {
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	for _, t := range l.ends {
		if t.After(last) {
			last = t
		}
	}
	return first, last, !first.IsZero() && !last.IsZero()
}

// maxInFlight sweeps the commands and the ends of their operations in
// time order and returns the most commands outstanding at once. At equal
// timestamps (milliseconds) ends go first: a command sent in the
// millisecond another finished is not counted beside it.
func (l *workflowLog) maxInFlight() int {
	type step struct {
		at    time.Time
		delta int
	}
	var steps []step
	for id, t := range l.commands {
		steps = append(steps, step{t, +1})
		if end, ok := l.ends[id]; ok {
			steps = append(steps, step{end, -1})
		}
	}
	slices.SortFunc(steps, func(a, b step) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta
	})
	cur, most := 0, 0
	for _, s := range steps {
		cur += s.delta
		most = max(most, cur)
	}
	return most
}

// commandsBetween counts the commands sent strictly after from and before to.
func (l *workflowLog) commandsBetween(from, to time.Time) int {
	n := 0
	for _, t := range l.commands {
		if t.After(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// liveFleet is a namespace with a simulated fleet registered, its four
// services running and an observer following its topics.
type liveFleet struct {
	cfg      backbone.Config
	clusters []inventory.Cluster
	svc      *services
	obs      *observer
}

// startFleet registers clusters in a namespace of its own, starts the
// services and waits until the monitor is probing the fleet (its first
// thousand signals; it goes round 100,000 clusters at its probe budget in
// a few minutes, and a rollout needs no signal before it starts a cluster):
// the fleet as it stands before a rollout.
func (b *bench) startFleet(ctx context.Context, stage string, clusters []inventory.Cluster, sim simulation) (*liveFleet, error) {
	cfg, err := b.namespace(ctx, stage)
	if err != nil {
		return nil, err
	}
	f := &liveFleet{cfg: cfg, clusters: clusters}
	if err := register(ctx, cfg, clusters); err != nil {
		return f, fmt.Errorf("register the fleet: %w", err)
	}
	names := cfg.Names()
	if f.obs, err = observe(ctx, cfg, false, names.Commands, names.Operations, names.Workflows, names.Health); err != nil {
		return f, err
	}
	if f.svc, err = startServices(b.o, cfg, filepath.Join(b.dir, cfg.Namespace), sim); err != nil {
		return f, err
	}
	started := time.Now()
	probing := min(len(clusters), 1000)
	err = f.obs.wait(ctx, f.svc, func() bool { return len(f.obs.health) >= probing })
	b.o.Log.Info("bench: fleet ready", "clusters", len(clusters), "probed_after", time.Since(started).Round(time.Millisecond), "err", err)
	if err != nil {
		f.obs.mu.Lock()
		seen := len(f.obs.health)
		f.obs.mu.Unlock()
		return f, fmt.Errorf("waiting for the monitor to probe the fleet (%d of %d clusters seen): %w", seen, probing, err)
	}
	return f, nil
}

// close stops the services and deletes the namespace's topics; it
// returns the services' peak memory.
func (f *liveFleet) close() map[string]int64 {
	var rss map[string]int64
	if f.svc != nil {
		rss = f.svc.peakRSS()
		f.svc.stop()
	}
	dropNamespace(f.cfg)
	return rss
}
