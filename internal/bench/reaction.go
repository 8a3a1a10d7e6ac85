package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
)

// ReactionResult is how fast the planner pauses a rollout that has many
// operations in flight when a cluster it changed turns unhealthy: from the
// health signal written to the health topic to the paused header row
// committed and read back (read committed).
//
// In flight counts the planner's commands not finished: the executor
// acts on ExecutorConcurrency at a time, each for OpSeconds (finishing
// reactionFinishRate operations a second, the others queued), so that
// operations finish all along the trials and the planner has cause to
// send commands (which it must not once paused) without having to keep
// up with more than that.
type ReactionResult struct {
	Clusters            int     `json:"clusters"`
	Targets             int     `json:"targets"`
	InFlightLimit       int     `json:"inFlightLimit"`
	OpSeconds           float64 `json:"opSeconds"`
	ExecutorConcurrency int     `json:"executorConcurrency"`
	Trials              []Trial `json:"trials"`
	P50Millis           float64 `json:"p50Millis"`
	P99Millis           float64 `json:"p99Millis"`
	// CommandsAfterPause counts commands sent while a trial's pause held,
	// between the paused row and the resumed one.
	CommandsAfterPause int              `json:"commandsAfterPause"`
	PeakRSS            map[string]int64 `json:"peakRSS,omitempty"`
	Note               string           `json:"note,omitempty"`
	Error              string           `json:"error,omitempty"`
}

// Trial is one unhealthy signal and the pause it caused.
type Trial struct {
	Cluster  string  `json:"cluster"`
	Millis   float64 `json:"millis"`
	InFlight int     `json:"inFlight"` // when the signal was written
	// FinishedInPause counts operations that finished while paused.
	FinishedInPause    int       `json:"finishedInPause"`
	CommandsAfterPause int       `json:"commandsAfterPause"`
	paused, resumed    time.Time // the paused and resumed rows' timestamps
}

// reactionFinishRate is how many operations a second finish in the
// reaction stage.
const reactionFinishRate = 50

func (b *bench) reaction(ctx context.Context) *ReactionResult {
	limit := b.o.InFlight
	ctx, cancel := b.stage(ctx, fmt.Sprintf("reaction with %d in flight", limit))
	defer cancel()
	// Twice the limit in targets (a kafka cluster is 70% of the fleet):
	// enough pending targets to keep the limit in flight through the trials.
	clusters := simfleet.GenerateClusters(2*limit*10/7 + 10)
	concurrency := max(1, int(reactionFinishRate*b.o.ReactionOpTime.Seconds()))
	res := &ReactionResult{InFlightLimit: limit, OpSeconds: seconds(b.o.ReactionOpTime), ExecutorConcurrency: concurrency, Clusters: len(clusters)}
	f, err := b.startFleet(ctx, "reaction", clusters, simulation{opDuration: b.o.ReactionOpTime, concurrency: res.ExecutorConcurrency})
	if f != nil {
		defer func() { res.PeakRSS = f.close() }()
	}
	if err == nil {
		err = b.trials(ctx, f, res)
	}
	if err != nil {
		res.Error = err.Error()
		res.Note = fmt.Sprintf("did not finish: %d of %d trials done", len(res.Trials), b.o.Trials)
	}
	var ms []float64
	for _, t := range res.Trials {
		ms = append(ms, t.Millis)
	}
	res.P50Millis, res.P99Millis = percentile(ms, 50), percentile(ms, 99)
	return res
}

// trials submits the rollout and runs the trials on it, one after the other.
func (b *bench) trials(ctx context.Context, f *liveFleet, res *ReactionResult) error {
	res.Targets = kafkaTargets(f.clusters)
	wf, err := submit(ctx, f.cfg, upgradeAll("bench-reaction", res.InFlightLimit))
	if err != nil {
		return err
	}
	byID := map[string]inventory.Cluster{}
	for _, c := range f.clusters {
		byID[c.ID] = c
	}
	w, err := newWriter(f.cfg) // made before the trials: a signal's time holds no connection setup
	if err != nil {
		return err
	}
	defer w.close()
	used := map[string]bool{}
	for range b.o.Trials {
		t, err := b.trial(ctx, f, w, wf, byID, used)
		if err != nil {
			return err
		}
		res.Trials = append(res.Trials, t)
	}
	return countCommandsInPauses(f, wf, res)
}

// trial waits for the limit to be (nearly) in flight, writes an unhealthy
// signal for a cluster the rollout upgraded, waits for the pause, lets
// operations finish meanwhile, and resumes the rollout.
func (b *bench) trial(ctx context.Context, f *liveFleet, w *writer, wf string, byID map[string]inventory.Cluster, used map[string]bool) (Trial, error) {
	t, before, err := b.awaitTarget(ctx, f, wf, used)
	if err != nil {
		return t, err
	}
	used[t.Cluster] = true
	signalled := time.Now()
	h := healthSignal(byID[t.Cluster], records.HealthUnhealthy, records.HealthHealthy)
	if err := w.add(ctx, f.cfg.Names().Health, h.ClusterID, h); err != nil {
		return t, err
	}
	if err := w.flush(ctx); err != nil {
		return t, err
	}
	paused, err := awaitState(ctx, f, wf, before.seq, records.WorkflowPaused)
	if err != nil {
		return t, fmt.Errorf("waiting for the pause: %w", err)
	}
	t.Millis = float64(paused.seen.Sub(signalled).Microseconds()) / 1000
	t.paused = paused.written
	t.FinishedInPause = awaitFinishes(ctx, f, wf, paused.written, b.o.ReactionOpTime)
	if err := control(ctx, f.cfg, wf, records.ActionResume); err != nil {
		return t, err
	}
	resumed, err := awaitState(ctx, f, wf, paused.seq, records.WorkflowRunning)
	if err != nil {
		return t, fmt.Errorf("waiting for the resume: %w", err)
	}
	t.resumed = resumed.written
	return t, nil
}

// awaitTarget waits until the running workflow has nearly its limit in
// flight and a target whose success the planner committed that no trial
// used yet, and returns the trial begun on it with the workflow's header.
func (b *bench) awaitTarget(ctx context.Context, f *liveFleet, wf string, used map[string]bool) (Trial, header, error) {
	var t Trial
	var last header
	o := f.obs
	err := o.wait(ctx, f.svc, func() bool {
		h, ok := o.last(wf)
		if !ok || h.state != records.WorkflowRunning || o.inFlight < nearLimit(b.o.InFlight) {
			return false
		}
		for _, id := range o.ready[wf] {
			if !used[id] {
				t.Cluster, t.InFlight, last = id, o.inFlight, h
				return true
			}
		}
		return false
	})
	if err != nil {
		o.mu.Lock()
		defer o.mu.Unlock()
		h, _ := o.last(wf)
		err = fmt.Errorf("waiting for %d operations in flight and one done (%d in flight, %d done, workflow %q): %w",
			nearLimit(b.o.InFlight), o.inFlight, len(o.ready[wf]), h.state, err)
	}
	return t, last, err
}

// nearLimit is 90% of the in-flight limit, which a trial waits for.
func nearLimit(limit int) int { return max(1, limit*9/10) }

// awaitState waits for a header row of workflow wf in state, newer than seq.
func awaitState(ctx context.Context, f *liveFleet, wf string, seq int64, state records.WorkflowState) (header, error) {
	var got header
	err := f.obs.wait(ctx, f.svc, func() bool {
		for _, h := range f.obs.headers[wf] {
			if h.seq > seq && h.state == state {
				got = h
				return true
			}
		}
		return false
	})
	return got, err
}

// awaitFinishes waits, for up to twice an operation's time, until ten
// operations of the workflow finished after since, and returns how many did.
func awaitFinishes(ctx context.Context, f *liveFleet, wf string, since time.Time, opTime time.Duration) int {
	ctx, cancel := context.WithTimeout(ctx, 2*opTime+time.Second)
	defer cancel()
	n := 0
	_ = f.obs.wait(ctx, f.svc, func() bool {
		n = 0
		for _, t := range f.obs.finishes[wf] {
			if t.After(since) {
				n++
			}
		}
		return n >= 10
	})
	return n // fewer than ten is no failure: the pause is checked all the same
}

// countCommandsInPauses reads the workflow's commands and counts, for
// each trial, those sent while it was paused.
func countCommandsInPauses(f *liveFleet, wf string, res *ReactionResult) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := readLog(ctx, f.cfg, wf)
	if err != nil {
		return err
	}
	for i := range res.Trials {
		t := &res.Trials[i]
		t.CommandsAfterPause = l.commandsBetween(t.paused, t.resumed)
		res.CommandsAfterPause += t.CommandsAfterPause
	}
	return nil
}

// percentile returns the p-th percentile of xs (nearest rank), 0 if empty.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	i := int(math.Ceil(float64(len(s))*p/100)) - 1
	return s[min(max(i, 0), len(s)-1)]
}
