package decide

import (
	"container/heap"
	"slices"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// waveIndex is what advance needs to know of a workflow's current wave
// without looking at each of its targets: the pending targets not looked
// at yet, in start order; those looked at and held back, and why; how many
// are running; and which succeeded ones the monitor has not seen since
// their operation finished. So an operation result or a health signal
// costs the same in a wave of ten clusters or of a hundred thousand.
//
// It is derived from the target rows and never written: built when the
// workflow reaches the wave (or after a load), dropped by a change it does
// not follow (a retry, an automatic resume), and kept current by the paths
// that run once per target (dispatch, operation results, health signals).
type waveIndex struct {
	phase, wave int
	place       map[string]int // cluster ID → its place in the wave's start order
	order       []string       // place → cluster ID
	queue       places         // pending targets to look at: a min-heap of places
	held        map[string]holdReason
	holds       [holdReasons]int // how many are held, per reason
	windowOpens time.Time        // earliest window opening among those held for one
	retryAt     time.Time        // earliest retry among those held for one
	// recheck is when the targets held for a time (a window, a retry)
	// are looked at again; zero when none is.
	recheck time.Time
	running int
	// unseen marks, by place, the succeeded targets not probed since their
	// operation finished; unseenN counts them. (A slice, not a map: it does
	// not grow, or make garbage, with each operation.)
	unseen  []bool
	unseenN int
}

// holdReason is why dispatch held back a pending target; what ends the
// hold (the cluster freed, its health, the time) puts it back in the queue.
type holdReason int

const (
	heldBusy      holdReason = iota // another workflow's operation runs on the cluster
	heldRetry                       // its retry's backoff has not passed
	heldUnhealthy                   // the cluster is unhealthy: its next health signal
	heldWindow                      // outside its maintenance windows
	holdReasons
)

// timed reports whether a hold ends with the passing of time.
func (r holdReason) timed() bool { return r == heldRetry || r == heldWindow }

// windowRecheck is how soon a cluster whose windows do not open within the
// window horizon is looked at again.
const windowRecheck = 24 * time.Hour

// index returns the index of the workflow's current wave, built from the
// rows if it is missing or of another wave. It is nil past the last wave.
func (d *decision) index(w *Workflow) *waveIndex {
	if ix := w.cur; ix != nil && ix.phase == w.Phase && ix.wave == w.Wave {
		return ix
	}
	w.cur = nil
	if w.Phase >= len(w.waves) || w.Wave >= len(w.waves[w.Phase]) {
		return nil
	}
	wave := w.waves[w.Phase][w.Wave]
	ix := &waveIndex{
		phase: w.Phase, wave: w.Wave,
		place: make(map[string]int, len(wave)), order: wave,
		held: map[string]holdReason{}, unseen: make([]bool, len(wave)),
	}
	for i, id := range wave {
		ix.place[id] = i
		switch t := w.Targets[id]; t.State {
		case records.TargetPending:
			ix.queue = append(ix.queue, i) // in order: a valid heap
		case records.TargetRunning:
			ix.running++
		case records.TargetSucceeded:
			if !d.seenSince(t) {
				ix.markUnseen(id, true)
			}
		}
	}
	w.cur = ix
	return ix
}

// seenSince reports whether target t's cluster was probed since its
// operation finished.
func (d *decision) seenSince(t *records.Target) bool {
	h, ok := d.s.HealthOf(t.ClusterID)
	return ok && !h.ObservedAt.Before(t.FinishedAt)
}

// markUnseen marks a succeeded target of the wave as not probed since its
// operation finished (unseen), or as probed.
func (ix *waveIndex) markUnseen(id string, unseen bool) {
	i, ok := ix.place[id]
	if !ok || ix.unseen[i] == unseen {
		return
	}
	ix.unseen[i] = unseen
	if unseen {
		ix.unseenN++
	} else {
		ix.unseenN--
	}
}

// of returns the index if target t is in its wave.
func (ix *waveIndex) of(t *records.Target) bool {
	return ix != nil && ix.phase == t.Phase && ix.wave == t.Wave
}

// next takes the first pending target to look at from the queue.
func (ix *waveIndex) next() string { return ix.order[heap.Pop(&ix.queue).(int)] }

// requeue puts a pending target back in line, at its place.
func (ix *waveIndex) requeue(id string) {
	if i, ok := ix.place[id]; ok {
		heap.Push(&ix.queue, i)
	}
}

// hold holds a pending target back for reason, until at for a timed one
// (zero: it does not come due within the window horizon).
func (ix *waveIndex) hold(id string, reason holdReason, at, now time.Time) {
	ix.held[id] = reason
	ix.holds[reason]++
	switch reason {
	case heldRetry:
		ix.retryAt = earliest(ix.retryAt, at)
	case heldWindow:
		ix.windowOpens = earliest(ix.windowOpens, at)
		if at.IsZero() {
			at = now.Add(windowRecheck)
		}
	}
	if reason.timed() {
		ix.recheck = earliest(ix.recheck, at)
	}
}

// release puts a held target back in the queue, if it is held for one of
// reasons (any, if none is given). A target held for a time takes every
// other one held for a time with it, so that the earliest of their times
// is known again when they are looked at.
func (ix *waveIndex) release(id string, reasons ...holdReason) {
	reason, ok := ix.held[id]
	if !ok || (len(reasons) > 0 && !slices.Contains(reasons, reason)) {
		return
	}
	if reason.timed() {
		ix.releaseTimed()
		return
	}
	delete(ix.held, id)
	ix.holds[reason]--
	ix.requeue(id)
}

// releaseTimed puts every target held for a time back in the queue.
func (ix *waveIndex) releaseTimed() {
	for id, reason := range ix.held {
		if reason.timed() {
			delete(ix.held, id)
			ix.holds[reason]--
			ix.requeue(id)
		}
	}
	ix.windowOpens, ix.retryAt, ix.recheck = time.Time{}, time.Time{}, time.Time{}
}

// waits are why pending clusters of the wave are held back.
func (ix *waveIndex) waits() waits {
	return waits{
		outsideWindow: ix.holds[heldWindow], windowOpens: ix.windowOpens,
		unhealthy: ix.holds[heldUnhealthy],
		retrying:  ix.holds[heldRetry], retryAt: ix.retryAt,
	}
}

// done reports whether no target of the wave is pending or running.
func (ix *waveIndex) done() bool {
	return len(ix.queue) == 0 && len(ix.held) == 0 && ix.running == 0
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// places is a min-heap of places in a wave's start order.
type places []int

func (p places) Len() int           { return len(p) }
func (p places) Less(i, j int) bool { return p[i] < p[j] }
func (p places) Swap(i, j int)      { p[i], p[j] = p[j], p[i] }
func (p *places) Push(x any)        { *p = append(*p, x.(int)) }
func (p *places) Pop() any {
	old := *p
	x := old[len(old)-1]
	*p = old[:len(old)-1]
	return x
}
