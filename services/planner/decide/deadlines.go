package decide

import (
	"container/heap"
	"time"
)

// deadlines is the queue of workflows by the time at which the passing of
// time alone can move them, so that a tick looks only at those that are
// due. An entry is live while its workflow's queuedAt is the entry's time;
// a workflow whose deadline changes gets a new entry and the old one is
// dropped when it comes up.
type deadlines []deadlineEntry

type deadlineEntry struct {
	at time.Time
	id string
}

func (q deadlines) Len() int           { return len(q) }
func (q deadlines) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q deadlines) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *deadlines) Push(x any)        { *q = append(*q, x.(deadlineEntry)) }
func (q *deadlines) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// schedule queues workflow w for its deadline, if it has one after now;
// or, for a finished workflow, if it has one at all (its compaction may be
// due already, once its last operation in flight ended).
func (s *State) schedule(w *Workflow, now time.Time) {
	if w.Unplanned > 0 && !w.State.Terminal() {
		s.queue(w, time.Time{}) // the next tick writes more of its plan
		return
	}
	at, ok := s.deadline(w)
	if !ok || (!at.After(now) && !w.State.Terminal()) {
		return
	}
	s.queue(w, at)
}

func (s *State) queue(w *Workflow, at time.Time) {
	if w.queued && w.queuedAt.Equal(at) {
		return
	}
	w.queued, w.queuedAt = true, at
	heap.Push(&s.deadlines, deadlineEntry{at, w.ID})
	if len(s.deadlines) > 1024 && len(s.deadlines) > 4*len(s.Workflows) {
		s.compactDeadlines()
	}
}

// compactDeadlines drops the entries that were superseded, so that the
// queue holds about one entry per workflow whatever their deadlines did.
func (s *State) compactDeadlines() {
	live := s.deadlines[:0]
	for _, e := range s.deadlines {
		if w, ok := s.Workflows[e.id]; ok && w.queued && w.queuedAt.Equal(e.at) {
			live = append(live, e)
		}
	}
	s.deadlines = live
	heap.Init(&s.deadlines)
}

// due takes the workflows whose deadline has come by now off the queue.
func (s *State) due(now time.Time) []*Workflow {
	var out []*Workflow
	for len(s.deadlines) > 0 && !s.deadlines[0].at.After(now) {
		e := heap.Pop(&s.deadlines).(deadlineEntry)
		w, ok := s.Workflows[e.id]
		if !ok || !w.queued || !w.queuedAt.Equal(e.at) {
			continue // superseded, or the workflow was forgotten
		}
		w.queued = false
		out = append(out, w)
	}
	return out
}
