//go:build unix

package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// idSpace scopes the run's rollout IDs: the same seed gives the same IDs,
// hence the same command IDs, hence the same simulated failures.
var idSpace = uuid.MustParse("4d0b7f4e-6c1a-4f7e-9f55-0c6b1d9e2a31")

// workflowID is the ID of the seed's i-th rollout (from 0).
func workflowID(seed uint64, i int) string {
	return uuid.NewSHA1(idSpace, fmt.Appendf(nil, "%d/%d", seed, i)).String()
}

// version is the version the i-th rollout upgrades to: a new one each
// time, so that every rollout changes every cluster it succeeds on.
func version(i int) string { return fmt.Sprintf("4.%d.%d", i/100, i%100) }

// spec is the i-th rollout: an upgrade of every cluster, in waves, with
// retries, and a failure threshold it never reaches (the failures are part
// of the plan: the run checks that each ends as an undisturbed run would).
func (r *runner) spec(i int) rollout.Spec {
	return rollout.Spec{
		Name:      fmt.Sprintf("chaos-%d-%d", r.o.Seed, i+1),
		Operation: rollout.Operation{Kind: rollout.Upgrade, Version: version(i)},
		Selector:  "kind",
		Phases: []rollout.Phase{{
			Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: r.o.WaveSize}, Bake: r.o.Bake,
		}},
		FailureThreshold: rollout.Threshold{Count: r.o.Clusters + 1},
		Retries:          r.o.Retries,
		RetryBackoff:     r.o.RetryBackoff,
	}
}

// RolloutResult is how one rollout of the run went.
type RolloutResult struct {
	ID, Name, Version string
	Submitted         time.Time
	Finished          time.Time // zero if it did not finish
	State             records.WorkflowState
	Reason            string
	// Stalled is set when it did not finish within Options.RolloutTimeout.
	Stalled bool
	// Targets counts its targets by state, as the planner has them last.
	Targets map[records.TargetState]int
}

// runWorkload submits rollouts one after the other and waits for each to
// end: at least Options.Rollouts, and more while faults remain to be
// injected (up to MaxRollouts). A rollout that does not end within
// RolloutTimeout ends the workload.
func (r *runner) runWorkload(ctx context.Context, faultsDone <-chan struct{}) {
	var table *logtable.Table[records.WorkflowRecord]
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// The table stops when the broker goes away for long: follow
		// the log again.
		for tctx.Err() == nil {
			t := logtable.New(r.cfg.Names().Workflows, r.cfg.Opts(), func(rec *kgo.Record) (records.WorkflowRecord, error) {
				return records.DecodeWorkflowRecord(rec.Value)
			}, logtable.WithLogger[records.WorkflowRecord](discardLogger()))
			r.mu.Lock()
			table = t
			r.mu.Unlock()
			_ = t.Run(tctx)
			time.Sleep(time.Second)
		}
	}()
	current := func() *logtable.Table[records.WorkflowRecord] {
		r.mu.Lock()
		defer r.mu.Unlock()
		return table
	}
	for i := 0; i < r.o.MaxRollouts && ctx.Err() == nil; i++ {
		if i >= r.o.Rollouts {
			select {
			case <-faultsDone:
				return
			default:
			}
		}
		spec := r.spec(i)
		res := RolloutResult{ID: workflowID(r.o.Seed, i), Name: spec.Name, Version: spec.Operation.Version, Submitted: time.Now()}
		if err := r.submit(ctx, res.ID, spec); err != nil {
			r.progress("rollout %d: cannot submit: %v", i+1, err)
			res.Reason = "not submitted: " + err.Error()
			r.addRollout(res)
			return
		}
		r.mu.Lock()
		r.current = res.ID
		r.mu.Unlock()
		r.progress("rollout %d (%s) submitted: upgrade of %d clusters to %s", i+1, res.ID, r.o.Clusters, res.Version)
		deadline := time.Now().Add(r.o.RolloutTimeout)
		lastLog := time.Now()
		for {
			t := current()
			var rec records.WorkflowRecord
			ok := false
			if t != nil {
				rec, ok = t.Get(res.ID)
			}
			if ok && rec.Workflow != nil {
				w := rec.Workflow
				res.State, res.Reason = w.State, w.Reason
				if w.State.Terminal() {
					res.Finished = time.Now()
					break
				}
				if time.Since(lastLog) > 15*time.Second {
					lastLog = time.Now()
					r.progress("rollout %d: %s, phase %d wave %d, %v", i+1, w.State, w.Phase, w.Wave+1, targetStates(t, res.ID))
				}
			}
			if time.Now().After(deadline) {
				res.Stalled = true
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
		if t := current(); t != nil {
			res.Targets = targetStates(t, res.ID)
		}
		r.addRollout(res)
		if res.Stalled {
			r.progress("rollout %d STALLED: not finished after %s (%s %s), targets %v", i+1, r.o.RolloutTimeout, res.State, res.Reason, res.Targets)
			return
		}
		r.progress("rollout %d %s after %s: %v %s", i+1, res.State, res.Finished.Sub(res.Submitted).Round(time.Millisecond), res.Targets, res.Reason)
	}
}

func targetStates(t *logtable.Table[records.WorkflowRecord], id string) map[records.TargetState]int {
	out := map[records.TargetState]int{}
	for _, rec := range t.Snapshot() {
		if rec.Target != nil && rec.Target.WorkflowID == id {
			out[rec.Target.State]++
		}
	}
	return out
}

func (r *runner) addRollout(res RolloutResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.report.Rollouts = append(r.report.Rollouts, res)
}

// submit produces the request of a rollout, as `flotilla rollout submit`
// does, under the ID given.
func (r *runner) submit(ctx context.Context, id string, spec rollout.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	value, err := records.Encode(records.Request{
		Envelope: records.Envelope{ID: id, Time: time.Now().UTC(), Principal: "flotilla-chaos"},
		Submit:   &records.SubmitRollout{Spec: spec},
	})
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = produce(pctx, r.cfg, &kgo.Record{Topic: r.cfg.Names().Requests, Key: []byte(id), Value: value})
		cancel()
		if err == nil || attempt == 5 || ctx.Err() != nil {
			return err
		}
		time.Sleep(2 * time.Second) // the broker may be restarting
	}
}
