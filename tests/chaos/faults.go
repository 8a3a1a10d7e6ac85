//go:build unix

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// Fault is one fault injected, or one the runner meant to inject and
// could not.
type Fault struct {
	Time   time.Time
	Kind   string // "SIGKILL", "SIGSTOP", "SIGCONT", "broker restart", or "skipped"
	Target string // the slot ("executor-1") or "broker"
	PID    int
	Detail string
}

// Zombie is one process frozen past its session timeout and resumed.
type Zombie struct {
	Instance, Service string
	PID               int
	Stopped, Resumed  time.Time
	// OpenCalls are the Apply calls it was inside when it was frozen
	// (from the call log).
	OpenCalls []simfleet.ApplyCall
	// Exited says whether it ended by itself within 30s of being resumed
	// (fenced, its lease lapsed), how long after, and why.
	Exited     bool
	ExitAfter  time.Duration
	ExitReason string
	// Until is when it exited, or 30s after it resumed.
	Until time.Time
}

// plan is the seeded schedule of faults, as offsets from the start of
// the fault phase.
type plan struct {
	kills   []plannedKill
	zombies []plannedKill
	brokers []plannedBroker
}

type plannedKill struct {
	at, restartAfter time.Duration
	pick             int
}

type plannedBroker struct{ at, downFor time.Duration }

func (r *runner) between(d [2]time.Duration) time.Duration {
	if d[1] <= d[0] {
		return d[0]
	}
	return d[0] + time.Duration(r.rng.Int64N(int64(d[1]-d[0])))
}

// makePlan draws the faults' schedule from the seed: kills at intervals
// drawn from KillEvery; zombies and broker restarts at times drawn within
// the span of the kills.
func (r *runner) makePlan() plan {
	var p plan
	at := 3 * time.Second
	for range r.o.Kills {
		at += r.between(r.o.KillEvery)
		p.kills = append(p.kills, plannedKill{at: at, restartAfter: r.between(r.o.RestartAfter), pick: r.rng.IntN(len(r.slots))})
	}
	span := max(at, 30*time.Second)
	for range r.o.Zombies {
		p.zombies = append(p.zombies, plannedKill{at: span/10 + time.Duration(r.rng.Int64N(int64(span*6/10))), pick: r.rng.IntN(copies)})
	}
	slices.SortFunc(p.zombies, func(a, b plannedKill) int { return int(a.at - b.at) })
	if !r.real {
		for range r.o.BrokerRestarts {
			p.brokers = append(p.brokers, plannedBroker{
				at: span/10 + time.Duration(r.rng.Int64N(int64(span*8/10))), downFor: r.between(r.o.RestartAfter),
			})
		}
		slices.SortFunc(p.brokers, func(a, b plannedBroker) int { return int(a.at - b.at) })
	}
	return p
}

func (r *runner) recordFault(f Fault) {
	f.Time = time.Now()
	r.mu.Lock()
	r.report.faults = append(r.report.faults, f)
	r.mu.Unlock()
	detail := f.Detail
	if f.PID != 0 {
		detail = fmt.Sprintf("pid %d %s", f.PID, detail)
	}
	r.progress("fault: %s %s %s", f.Kind, f.Target, detail)
}

func (r *runner) faults() []Fault {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.report.faults)
	slices.SortStableFunc(out, func(a, b Fault) int { return a.Time.Compare(b.Time) })
	return out
}

// sleepUntil waits until t, or until ctx ends (false).
func sleepUntil(ctx context.Context, t time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Until(t)):
		return true
	}
}

// injectFaults carries out the seeded plan until it is done or ctx ends.
// Kills, zombies and broker restarts run side by side; while a zombie is
// frozen, its twin is not killed and the broker is not restarted, so that
// the twin takes over.
func (r *runner) injectFaults(ctx context.Context) {
	p := r.makePlan()
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, k := range p.kills {
			if !sleepUntil(ctx, start.Add(k.at)) {
				return
			}
			r.kill(k)
		}
	})
	wg.Go(func() {
		for i, z := range p.zombies {
			if !sleepUntil(ctx, start.Add(z.at)) {
				return
			}
			r.zombie(ctx, r.o.ZombieServices[i%len(r.o.ZombieServices)], z.pick)
		}
	})
	wg.Go(func() {
		var last time.Time
		for _, b := range p.brokers {
			// Restarts kept apart, so that each is one fault: one may
			// have waited for a zombie.
			if !sleepUntil(ctx, start.Add(b.at)) || !sleepUntil(ctx, last.Add(20*time.Second)) {
				return
			}
			for r.zombieBusy() != "" && ctx.Err() == nil {
				time.Sleep(time.Second)
			}
			if ctx.Err() != nil {
				return
			}
			detail, err := r.restartBroker(ctx, b.downFor)
			last = time.Now()
			if err != nil {
				r.recordFault(Fault{Kind: "broker restart", Target: "broker", Detail: "FAILED: " + err.Error()})
				r.setHarnessError(fmt.Errorf("restart the broker: %w", err))
				continue
			}
			r.recordFault(Fault{Kind: "broker restart", Target: "broker", Detail: detail})
		}
	})
	wg.Wait()
}

func (r *runner) zombieBusy() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.busy
}

func (r *runner) setHarnessError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.report.HarnessErrors = append(r.report.HarnessErrors, err.Error())
}

// kill SIGKILLs the planned slot, or the next one that runs and whose
// service has no zombie frozen.
func (r *runner) kill(k plannedKill) {
	busy := r.zombieBusy()
	for i := range r.slots {
		s := r.slots[(k.pick+i)%len(r.slots)]
		if s.service == busy {
			continue
		}
		p, err := s.kill(k.restartAfter)
		if err != nil {
			continue
		}
		r.recordFault(Fault{Kind: "SIGKILL", Target: s.instance, PID: p.pid,
			Detail: fmt.Sprintf("(up %s), restarted after %s", time.Since(p.started).Round(time.Millisecond), k.restartAfter.Round(time.Millisecond))})
		return
	}
	r.recordFault(Fault{Kind: "skipped", Target: "SIGKILL", Detail: "no process to kill"})
}

// zombie freezes a process of service past its session timeout, then
// resumes it and watches what it does. For the executor it picks the copy
// with the most Apply calls in flight.
func (r *runner) zombie(ctx context.Context, service string, pick int) {
	var candidates []*slot
	deadline := time.Now().Add(30 * time.Second)
	for {
		candidates = candidates[:0]
		for _, s := range r.slots {
			if s.service == service && s.running() != nil {
				candidates = append(candidates, s)
			}
		}
		if len(candidates) == copies || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond) // the twin must run to take over
	}
	if len(candidates) < copies {
		r.recordFault(Fault{Kind: "skipped", Target: "SIGSTOP", Detail: fmt.Sprintf("%s: %d of %d copies running", service, len(candidates), copies)})
		return
	}
	target := candidates[pick%len(candidates)]
	if service == "planner" {
		// The planner that owns the running rollout's workflow: the
		// zombie that matters is one with decisions to take.
		if p, ok := r.currentPartition(); ok {
			for _, s := range candidates {
				if q := s.running(); q != nil && slices.Contains(lastAssigned(q.log), p) {
					target = s
				}
			}
		}
	}
	var open map[int][]simfleet.ApplyCall
	if service == "executor" {
		// Freeze it inside Apply calls, if it gets any within 30s: the
		// zombie that matters is one that was acting.
		for wait := time.Now().Add(30 * time.Second); ; {
			open = r.openCalls()
			for _, s := range candidates {
				if p, q := s.running(), target.running(); p != nil && (q == nil || len(open[p.pid]) > len(open[q.pid])) {
					target = s
				}
			}
			if q := target.running(); (q != nil && len(open[q.pid]) > 0) || time.Now().After(wait) || ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	r.mu.Lock()
	r.busy = service
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.busy = ""
		r.mu.Unlock()
	}()
	p, err := target.freeze()
	if err != nil {
		r.recordFault(Fault{Kind: "skipped", Target: "SIGSTOP", Detail: target.instance + ": " + err.Error()})
		return
	}
	z := Zombie{Instance: target.instance, Service: service, PID: p.pid, Stopped: time.Now(), OpenCalls: open[p.pid]}
	r.recordFault(Fault{Kind: "SIGSTOP", Target: target.instance, PID: p.pid,
		Detail: fmt.Sprintf("for %s, inside %d Apply calls", r.o.ZombieFor, len(z.OpenCalls))})
	select {
	case <-ctx.Done():
	case <-time.After(r.o.ZombieFor):
	}
	z.Resumed = time.Now() // before it can act again
	if err := target.thaw(p); err != nil {
		r.recordFault(Fault{Kind: "SIGCONT", Target: target.instance, PID: p.pid, Detail: "FAILED: " + err.Error()})
	}
	r.recordFault(Fault{Kind: "SIGCONT", Target: target.instance, PID: p.pid, Detail: fmt.Sprintf("after %s", z.Resumed.Sub(z.Stopped).Round(time.Millisecond))})
	select {
	case <-p.done:
		z.Exited, z.ExitAfter, z.ExitReason = true, p.exited.Sub(z.Resumed), lastError(p.log)
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	z.Until = z.Resumed.Add(30 * time.Second)
	if z.Exited {
		z.Until = p.exited
	}
	r.mu.Lock()
	r.report.Zombies = append(r.report.Zombies, z)
	r.mu.Unlock()
}

// openCalls returns the Apply calls begun and not ended, by pid.
func (r *runner) openCalls() map[int][]simfleet.ApplyCall {
	calls, _ := simfleet.ReadCallLog(r.callLog)
	out := map[int][]simfleet.ApplyCall{}
	for _, c := range calls {
		if !c.Ended {
			out[c.Begin.PID] = append(out[c.Begin.PID], c)
		}
	}
	return out
}

// currentPartition returns the partition of the workflows topic that the
// rollout under way lives on.
func (r *runner) currentPartition() (int32, bool) {
	r.mu.Lock()
	id := r.current
	r.mu.Unlock()
	if id == "" {
		return 0, false
	}
	p := topics.Partitioner().ForTopic(r.cfg.Names().Workflows).Partition(&kgo.Record{Key: []byte(id)}, partitions)
	return int32(p), true
}

// lastAssigned returns the partitions of the last "partitions assigned"
// line of a JSON log.
func lastAssigned(path string) []int32 {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var last []int32
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, `"partitions assigned"`) {
			continue
		}
		var l struct {
			Partitions []int32 `json:"partitions"`
		}
		if json.Unmarshal([]byte(line), &l) == nil {
			last = l.Partitions
		}
	}
	return last
}
