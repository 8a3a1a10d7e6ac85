//go:build unix

package chaos

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/services/notifier/notifier"
)

// at is where a record is in the log.
type at struct {
	partition  int32
	offset     int64
	producerID int64
	epoch      int16
	timestamp  time.Time // the record's, set by its producer when it produced it
}

func where(r *kgo.Record) at {
	return at{partition: r.Partition, offset: r.Offset, producerID: r.ProducerID, epoch: r.ProducerEpoch, timestamp: r.Timestamp}
}

func (a at) String() string { return fmt.Sprintf("%d@%d", a.partition, a.offset) }

// writer describes who wrote a record: its producer, epoch and time.
func (a at) writer() string {
	return fmt.Sprintf("%s, producer %d epoch %d, %s", a, a.producerID, a.epoch, a.timestamp.Format("15:04:05.000"))
}

// describeRow says what a workflow row is.
func describeRow(rec records.WorkflowRecord) string {
	switch {
	case rec.Workflow != nil:
		w := rec.Workflow
		return fmt.Sprintf("header seq %d %s (%s, wave %d)", w.Seq, w.Event, w.State, w.Wave+1)
	case rec.Target != nil:
		t := rec.Target
		return fmt.Sprintf("target %s %s attempt %d", t.ClusterID, t.State, t.Attempt)
	case rec.Spec != nil:
		return "spec"
	}
	return "empty row"
}

type opRec struct {
	at
	ev records.OperationEvent
}

type rowRec struct {
	at
	rec records.WorkflowRecord
}

type leaseRec struct {
	at
	lease records.LeaseRecord
}

type cmdRec struct {
	at
	c records.Command
}

type noteRec struct {
	at
	n records.Notification
}

type healthRec struct {
	at
	h records.Health
}

// history is everything the run recorded, read back once the services
// stopped: the topics (read-committed, in log order per partition), the
// sim's call log and the simulated clusters' final state.
type history struct {
	calls    []simfleet.ApplyCall
	callErr  error
	ops      []opRec
	rows     []rowRec
	commands map[string]records.Command // by command ID
	// cmdRecs are the command records, in log order.
	cmdRecs []cmdRec
	leases  []leaseRec
	notes   []noteRec
	health  []healthRec
	// undecodable counts records of each topic that could not be decoded.
	undecodable map[string]int
	clusters    []inventory.Cluster
	sims        map[string]simfleet.State
}

func byLog[T interface{ pos() at }](s []T) {
	slices.SortStableFunc(s, func(a, b T) int {
		pa, pb := a.pos(), b.pos()
		return cmp.Or(cmp.Compare(pa.partition, pb.partition), cmp.Compare(pa.offset, pb.offset))
	})
}

func (a at) pos() at { return a }

// readTopic reads a topic from its start to its end, read-committed.
func (r *runner) readTopic(ctx context.Context, topic string, fn func(*kgo.Record)) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return logtable.ReadToEnd(ctx, r.cfg.Opts(), topic, nil, func(rec *kgo.Record) {
		if rec.Value != nil {
			fn(rec)
		}
	})
}

func (r *runner) readHistory(ctx context.Context) (*history, error) {
	h := &history{commands: map[string]records.Command{}, undecodable: map[string]int{}, sims: map[string]simfleet.State{}}
	names := r.cfg.Names()
	bad := func(topic string) { h.undecodable[topic]++ }
	steps := []struct {
		topic string
		fn    func(*kgo.Record)
	}{
		{names.Operations, func(rec *kgo.Record) {
			ev, err := records.DecodeOperationEvent(rec.Value)
			if err != nil {
				bad(rec.Topic)
				return
			}
			h.ops = append(h.ops, opRec{where(rec), ev})
		}},
		{names.Workflows, func(rec *kgo.Record) {
			row, err := records.DecodeWorkflowRecord(rec.Value)
			if err != nil {
				bad(rec.Topic)
				return
			}
			h.rows = append(h.rows, rowRec{where(rec), row})
		}},
		{names.Commands, func(rec *kgo.Record) {
			c, err := records.DecodeCommand(rec.Value)
			if err != nil {
				bad(rec.Topic)
				return
			}
			h.commands[c.ID] = c
			h.cmdRecs = append(h.cmdRecs, cmdRec{where(rec), c})
		}},
		{names.Leases, func(rec *kgo.Record) {
			l, err := records.DecodeLeaseRecord(rec.Value)
			if err != nil {
				bad(rec.Topic)
				return
			}
			h.leases = append(h.leases, leaseRec{where(rec), l})
		}},
		{names.Health, func(rec *kgo.Record) {
			hr, err := records.DecodeHealth(rec.Value)
			if err != nil {
				bad(rec.Topic)
				return
			}
			if _, ok := notifier.FromHealth(hr); ok { // only changes matter here
				h.health = append(h.health, healthRec{where(rec), hr})
			}
		}},
	}
	for _, s := range steps {
		if err := r.readTopic(ctx, s.topic, s.fn); err != nil {
			return nil, fmt.Errorf("read %s: %w", s.topic, err)
		}
	}
	byLog(h.ops)
	byLog(h.rows)
	byLog(h.leases)
	byLog(h.cmdRecs)
	byLog(h.health)
	if err := r.readNotifications(ctx, h); err != nil {
		return nil, err
	}
	h.calls, h.callErr = simfleet.ReadCallLog(r.callLog)
	h.clusters = simfleet.GenerateClusters(r.o.Clusters)
	sim, err := simfleet.New(simfleet.Options{Dir: r.simDir})
	if err != nil {
		return nil, err
	}
	for _, c := range h.clusters {
		if st, ok := sim.Cluster(c.ID); ok {
			h.sims[c.ID] = st
		}
	}
	return h, nil
}

func (r *runner) readNotifications(ctx context.Context, h *history) error {
	h.notes = nil
	err := r.readTopic(ctx, r.cfg.Names().Notifications, func(rec *kgo.Record) {
		n, err := records.DecodeNotification(rec.Value)
		if err != nil {
			h.undecodable[rec.Topic]++
			return
		}
		h.notes = append(h.notes, noteRec{where(rec), n})
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", r.cfg.Names().Notifications, err)
	}
	byLog(h.notes)
	return nil
}

// expectedNotifications returns the notification each source record
// makes, by notification ID, with a description of its source.
func (h *history) expectedNotifications() map[string]string {
	out := map[string]string{}
	for _, row := range h.rows {
		if n, ok := notifier.FromWorkflow(row.rec); ok {
			out[n.Envelope.ID] = fmt.Sprintf("%s (workflow %s row %s)", n.Kind, n.WorkflowID, row.at)
		}
	}
	for _, op := range h.ops {
		if n, ok := notifier.FromOperation(op.ev); ok {
			out[n.Envelope.ID] = fmt.Sprintf("%s (%s, command %s, operations %s)", n.Kind, op.ev.ClusterID, op.ev.CommandID, op.at)
		}
	}
	for _, hr := range h.health {
		if n, ok := notifier.FromHealth(hr.h); ok {
			out[n.Envelope.ID] = fmt.Sprintf("%s (%s %s → %s, health %s)", n.Kind, hr.h.ClusterID, hr.h.PreviousStatus, hr.h.Status, hr.at)
		}
	}
	return out
}

// missingNotifications returns the expected notifications not in the
// notifications topic.
func (h *history) missingNotifications() []string {
	have := map[string]bool{}
	for _, n := range h.notes {
		have[n.n.Envelope.ID] = true
	}
	var missing []string
	for id, what := range h.expectedNotifications() {
		if !have[id] {
			missing = append(missing, what+" id "+id)
		}
	}
	slices.Sort(missing)
	return missing
}

// awaitNotifications re-reads the notifications until every expected one
// is there, or timeout.
func (r *runner) awaitNotifications(ctx context.Context, h *history, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		missing := h.missingNotifications()
		if len(missing) == 0 {
			r.progress("every notification is there")
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.progress("%d notifications still missing after %s", len(missing), timeout)
			return
		}
		time.Sleep(3 * time.Second)
		if err := r.readNotifications(ctx, h); err != nil {
			r.progress("%v", err)
		}
	}
}

// instanceOf names the process of a pid: "executor-1 (pid 123, run 2)".
func (r *runner) instanceOf(pid int) string {
	for _, s := range r.slots {
		s.mu.Lock()
		for _, p := range s.procs {
			if p.pid == pid {
				s.mu.Unlock()
				return s.instance + "#" + strconv.Itoa(p.n)
			}
		}
		s.mu.Unlock()
	}
	return "pid " + strconv.Itoa(pid)
}

// deathOf returns when the process of pid exited (zero if it had not by
// the end).
func (r *runner) deathOf(pid int) time.Time {
	for _, s := range r.slots {
		s.mu.Lock()
		for _, p := range s.procs {
			if p.pid == pid {
				s.mu.Unlock()
				select {
				case <-p.done:
					return p.exited
				default:
					return time.Time{}
				}
			}
		}
		s.mu.Unlock()
	}
	return time.Time{}
}

func describeCall(r *runner, c simfleet.ApplyCall) string {
	out := "unended"
	if c.Ended {
		out = c.End.Outcome
	}
	s := fmt.Sprintf("%s attempt %d token %d by %s %s–", shortID(c.Begin.Command), c.Begin.Attempt, c.Begin.Token,
		r.instanceOf(c.Begin.PID), c.Begin.Time.Format("15:04:05.000"))
	if c.Ended {
		s += c.End.Time.Format("15:04:05.000")
		if c.End.Before != c.End.After {
			out += fmt.Sprintf(" %s→%s", c.End.Before, c.End.After)
		}
	}
	return s + " " + out
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
