//go:build unix

package chaos

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
)

// txnObs is one look at a transactional ID's state on the broker.
type txnObs struct {
	at         time.Time
	producerID int64
	epoch      int16
	state      string
}

// txnWatch looks at the planners' and notifiers' transactional IDs every
// 250ms, to learn the producer epoch of each incarnation: the records it
// wrote carry it. (The notifier logs nothing when it acts.)
type txnWatch struct {
	cfg backbone.Config
	ids map[string]string // instance → transactional ID

	mu  sync.Mutex
	obs map[string][]txnObs // by instance
	// members are the looks at the instances' static members in their
	// consumer groups.
	members map[string][]memberObs // by instance
}

// memberObs is one look at a static member of a consumer group.
type memberObs struct {
	at       time.Time
	memberID string
	parts    int  // partitions assigned to it
	stable   bool // the group is Stable
}

func newTxnWatch(cfg backbone.Config, ns string) *txnWatch {
	w := &txnWatch{cfg: cfg, ids: map[string]string{}, obs: map[string][]txnObs{}, members: map[string][]memberObs{}}
	for _, svc := range []string{"planner", "notifier"} {
		for i := range copies {
			instance := fmt.Sprintf("%s-%d", svc, i)
			w.ids[instance] = cfg.Names().Group(svc) + "-" + instance
		}
	}
	return w
}

func (w *txnWatch) run(ctx context.Context) {
	cl, err := w.cfg.Client()
	if err != nil {
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	byID := map[string]string{}
	var ids []string
	for inst, id := range w.ids {
		byID[id] = inst
		ids = append(ids, id)
	}
	// The group instance IDs (backbone.InstanceID) of every copy.
	byMember := map[string]string{}
	var groupNames []string
	for _, svc := range Services {
		group := w.cfg.Names().Group(svc)
		groupNames = append(groupNames, group)
		for i := range copies {
			instance := fmt.Sprintf("%s-%d", svc, i)
			byMember[backbone.InstanceID(group, instance)] = instance
		}
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		described, _ := adm.DescribeTransactions(qctx, ids...)
		groups, _ := adm.DescribeGroups(qctx, groupNames...)
		cancel()
		now := time.Now()
		w.mu.Lock()
		for _, g := range groups {
			for _, m := range g.Members {
				if m.InstanceID == nil {
					continue
				}
				inst, ok := byMember[*m.InstanceID]
				if !ok {
					continue
				}
				parts := 0
				if c, ok := m.Assigned.AsConsumer(); ok {
					for _, t := range c.Topics {
						parts += len(t.Partitions)
					}
				}
				w.members[inst] = append(w.members[inst], memberObs{at: now, memberID: m.MemberID, parts: parts, stable: g.State == "Stable"})
			}
		}
		for id, d := range described {
			if d.Err != nil {
				continue
			}
			inst := byID[id]
			w.obs[inst] = append(w.obs[inst], txnObs{at: now, producerID: d.ProducerID, epoch: d.ProducerEpoch, state: d.State})
		}
		w.mu.Unlock()
	}
}

// epochOf returns the producer ID and epoch the incarnation of instance
// started at started took: the first seen after it started that differs
// from the last seen before (a restarted copy initialises its
// transactional ID again, which bumps the epoch).
func (w *txnWatch) epochOf(instance string, started, until time.Time) (int64, int16, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var before *txnObs
	for i, o := range w.obs[instance] {
		if o.at.Before(started) {
			before = &w.obs[instance][i]
			continue
		}
		if !until.IsZero() && o.at.After(until) {
			break
		}
		if before != nil && o.producerID == before.producerID && o.epoch == before.epoch {
			continue
		}
		return o.producerID, o.epoch, true
	}
	return 0, 0, false
}

// assigned returns when the incarnation of instance started at started
// was first seen holding partitions in its group, as a static member of
// its own (a member ID other than the last one seen before it started),
// the group stable.
func (w *txnWatch) assigned(instance string, started, until time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	before := ""
	for _, o := range w.members[instance] {
		if o.at.Before(started) {
			before = o.memberID
			continue
		}
		if !until.IsZero() && o.at.After(until) {
			break
		}
		if o.memberID != before && o.stable && o.parts > 0 {
			return o.at, true
		}
	}
	return time.Time{}, false
}

// firstRecord returns the earliest timestamp of the records a producer
// wrote under an epoch.
func firstRecord(recs []at, producerID int64, epoch int16) (time.Time, bool) {
	var first time.Time
	for _, a := range recs {
		if a.producerID == producerID && a.epoch == epoch && (first.IsZero() || a.timestamp.Before(first)) {
			first = a.timestamp
		}
	}
	return first, !first.IsZero()
}

// Recovery is how long one incarnation of a service took from its start
// to its first action.
type Recovery struct {
	Instance, Service string
	PID               int
	Reason            string // why it was started
	Started           time.Time
	// Acted is when it first acted: "partitions assigned" in its log
	// (planner, executor, monitor), or, for the notifier, which logs
	// nothing when it acts, when its group was seen to give it partitions
	// (polled every 250ms); zero if it never did.
	Acted time.Time
	How   string
	// FirstRecord is when it wrote its first record (the planner a
	// workflow row, the notifier a notification), if known.
	FirstRecord time.Time
	// EndedFirst is set when it ended (killed, or exited) before it
	// acted.
	EndedFirst bool
}

// Took is the recovery time, or -1 if it never acted.
func (r Recovery) Took() time.Duration {
	if r.Acted.IsZero() {
		return -1
	}
	return r.Acted.Sub(r.Started)
}

// recoveries measures every incarnation.
func (r *runner) recoveries(h *history) []Recovery {
	var notes, rows []at
	for _, n := range h.notes {
		notes = append(notes, n.at)
	}
	for _, row := range h.rows {
		rows = append(rows, row.at)
	}
	var out []Recovery
	for _, s := range r.slots {
		s.mu.Lock()
		procs := slices.Clone(s.procs)
		s.mu.Unlock()
		for i, p := range procs {
			var until time.Time
			if i+1 < len(procs) {
				until = procs[i+1].started
			}
			rec := Recovery{Instance: s.instance, Service: s.service, PID: p.pid, Reason: p.reason, Started: p.started}
			pid, epoch, known := r.txns.epochOf(s.instance, p.started, until)
			switch s.service {
			case "notifier":
				rec.How = "assigned in its group"
				rec.Acted, _ = r.txns.assigned(s.instance, p.started, until)
				if known {
					rec.FirstRecord, _ = firstRecord(notes, pid, epoch)
				}
			default:
				rec.How = "partitions assigned"
				rec.Acted, _ = firstLog(p.log, "partitions assigned")
				if s.service == "planner" && known {
					rec.FirstRecord, _ = firstRecord(rows, pid, epoch)
				}
			}
			select {
			case <-p.done:
				rec.EndedFirst = rec.Acted.IsZero() || rec.Acted.After(p.exited)
				if rec.EndedFirst {
					rec.Acted = time.Time{}
				}
			default:
			}
			out = append(out, rec)
		}
	}
	return out
}

// Exit is a process that ended by itself (not killed by the runner, nor
// stopped at the end).
type Exit struct {
	Instance string
	PID      int
	Time     time.Time
	Status   string
	Reason   string
	Uptime   time.Duration
}

func (r *runner) exits() []Exit {
	var out []Exit
	for _, s := range r.slots {
		s.mu.Lock()
		procs := slices.Clone(s.procs)
		s.mu.Unlock()
		for _, p := range procs {
			select {
			case <-p.done:
			default:
				continue
			}
			if p.ours || !p.stopAsked.IsZero() {
				continue
			}
			out = append(out, Exit{Instance: s.instance, PID: p.pid, Time: p.exited, Status: p.status(), Reason: lastError(p.log), Uptime: p.exited.Sub(p.started)})
		}
	}
	slices.SortFunc(out, func(a, b Exit) int { return a.Time.Compare(b.Time) })
	return out
}

// Stop is how a process stopped when asked to (SIGTERM) at the end.
type Stop struct {
	Instance string
	PID      int
	Took     time.Duration
	Status   string
	Killed   bool // it had not stopped within 10s
}

func (r *runner) stopRecords() []Stop {
	var out []Stop
	for _, s := range r.slots {
		s.mu.Lock()
		procs := slices.Clone(s.procs)
		s.mu.Unlock()
		for _, p := range procs {
			if p.stopAsked.IsZero() {
				continue
			}
			<-p.done
			out = append(out, Stop{Instance: s.instance, PID: p.pid, Took: p.exited.Sub(p.stopAsked), Status: p.status(), Killed: p.signal == "killed"})
		}
	}
	return out
}

// aborts counts the aborted transactions the planners' and notifiers'
// logs report.
func (r *runner) aborts() map[string]int {
	out := map[string]int{}
	for _, s := range r.slots {
		if s.service != "planner" && s.service != "notifier" {
			continue
		}
		s.mu.Lock()
		procs := slices.Clone(s.procs)
		s.mu.Unlock()
		out[s.service] += 0
		for _, p := range procs {
			out[s.service] += countLog(p.log, "transaction aborted; rebuilding from the log", "transaction aborted; the batch is consumed again", "transaction failed; the batch is consumed again")
		}
	}
	return out
}
