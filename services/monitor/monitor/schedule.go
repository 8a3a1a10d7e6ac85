package monitor

import (
	"container/heap"
	"time"
)

// item is one cluster of the schedule. It is in one place at a time: the
// heap (waiting for its due time), the urgent queue (its operation ended),
// or busy (a worker or the publisher has it); so one cluster is never
// probed twice at once, and a probe always compares with what the previous
// one published.
type item struct {
	id        string
	partition int32
	due       time.Time
	index     int  // in the heap, or -1
	urgent    bool // in the urgent queue
	busy      bool // dispatched; back in the schedule once settled
	fresh     bool // it changed (see hurry): publish what the next probe sees
	soon      bool // its inventory entry changed while busy: due at once when settled
}

// schedule holds the clusters of the owned partitions in order of when
// each is next due, and those whose operation just ended ahead of them all.
// Every operation is O(log n) in the number of clusters, or O(1). It is
// not safe for concurrent use: the monitor guards it with its mutex.
type schedule struct {
	due         dueHeap
	urgent      []*item // FIFO; an item taken out meanwhile is skipped
	items       map[string]*item
	byPartition map[int32]map[string]*item
}

func newSchedule() *schedule {
	return &schedule{items: map[string]*item{}, byPartition: map[int32]map[string]*item{}}
}

// Len is the number of clusters scheduled.
func (s *schedule) Len() int { return len(s.items) }

// add schedules cluster id at due, or moves it to due if it is scheduled
// (at once if it is busy). It reports whether the item is now the next due.
func (s *schedule) add(id string, partition int32, due time.Time) bool {
	it := s.items[id]
	if it == nil {
		it = &item{id: id, partition: partition, index: -1}
		s.items[id] = it
		if s.byPartition[partition] == nil {
			s.byPartition[partition] = map[string]*item{}
		}
		s.byPartition[partition][id] = it
	}
	switch {
	case it.busy:
		it.soon = true
		return false
	case it.urgent:
		return false // already ahead of everything
	}
	return s.setDue(it, due)
}

// setDue puts an item that is not busy nor urgent in the heap at due.
func (s *schedule) setDue(it *item, due time.Time) bool {
	it.due = due
	if it.index < 0 {
		heap.Push(&s.due, it)
	} else {
		heap.Fix(&s.due, it.index)
	}
	return it.index == 0
}

// hurry marks cluster id as changed (an operation on it ended, or its
// inventory record changed): it is probed before any cluster merely due,
// and what is seen published. It reports whether it was put in the urgent
// queue.
func (s *schedule) hurry(id string) bool {
	it := s.items[id]
	if it == nil {
		return false
	}
	it.fresh = true
	if it.busy {
		return false // settle puts it in the queue
	}
	s.pushUrgent(it)
	return true
}

func (s *schedule) pushUrgent(it *item) {
	if it.urgent {
		return
	}
	if it.index >= 0 {
		heap.Remove(&s.due, it.index)
	}
	it.urgent = true
	s.urgent = append(s.urgent, it)
}

// remove takes cluster id out of the schedule; a busy item's result is then
// dropped (see current).
func (s *schedule) remove(id string) {
	it := s.items[id]
	if it == nil {
		return
	}
	delete(s.items, id)
	delete(s.byPartition[it.partition], id)
	if it.index >= 0 {
		heap.Remove(&s.due, it.index)
	}
	it.urgent = false // skipped when the queue reaches it
}

// removePartition takes the clusters of partition p out: O(k log n) for
// its k clusters.
func (s *schedule) removePartition(p int32) {
	for id := range s.byPartition[p] {
		s.remove(id)
	}
	delete(s.byPartition, p)
}

// current reports whether it is still what the schedule holds for its
// cluster: false once the cluster was removed (or its partition lost, and
// perhaps gained again since, under a new item).
func (s *schedule) current(it *item) bool { return s.items[it.id] == it }

// nextUrgent takes the next item of the urgent queue, if any, and marks it
// busy.
func (s *schedule) nextUrgent() *item {
	for len(s.urgent) > 0 {
		it := s.urgent[0]
		s.urgent[0] = nil
		s.urgent = s.urgent[1:]
		if !it.urgent || !s.current(it) {
			continue
		}
		it.urgent, it.busy = false, true
		return it
	}
	s.urgent = nil // let the backing array go
	return nil
}

// peek returns the next item due, or nil.
func (s *schedule) peek() *item {
	if len(s.due) == 0 {
		return nil
	}
	return s.due[0]
}

// take takes the next item due out of the heap and marks it busy.
func (s *schedule) take() *item {
	it := heap.Pop(&s.due).(*item)
	it.busy = true
	return it
}

// settle puts a busy item back: in the urgent queue if its operation ended
// meanwhile, due at once if its inventory entry changed, else at next. It
// reports whether the item is now the first to go.
func (s *schedule) settle(it *item, next time.Time, now time.Time) bool {
	if !it.busy || !s.current(it) {
		return false
	}
	it.busy = false
	switch {
	case it.fresh:
		s.pushUrgent(it)
		return true
	case it.soon:
		it.soon = false
		return s.setDue(it, now)
	default:
		return s.setDue(it, next)
	}
}

// retry puts a busy item whose record failed back at next, whatever
// happened meanwhile (that is seen to at its following settle): a failing
// produce is not retried in a loop.
func (s *schedule) retry(it *item, next time.Time) bool {
	if !it.busy || !s.current(it) {
		return false
	}
	it.busy = false
	return s.setDue(it, next)
}

// takeFresh reports whether a probe of it must publish what it sees, and
// clears the mark: an operation that ends during the probe marks it again.
func (it *item) takeFresh() bool {
	f := it.fresh
	it.fresh = false
	return f
}

// dueHeap is a min-heap of items by due time (container/heap).
type dueHeap []*item

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *dueHeap) Push(x any) {
	it := x.(*item)
	it.index = len(*h)
	*h = append(*h, it)
}

func (h *dueHeap) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	it.index = -1
	*h = old[:n-1]
	return it
}
