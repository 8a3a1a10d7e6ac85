package monitor

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// drain takes every item of s due by now, in the order the dispatcher
// would, settling none.
func drain(s *schedule, now time.Time) []string {
	var out []string
	for {
		if it := s.nextUrgent(); it != nil {
			out = append(out, it.id)
			continue
		}
		top := s.peek()
		if top == nil || top.due.After(now) {
			return out
		}
		out = append(out, s.take().id)
	}
}

func TestScheduleOrdersByDueTime(t *testing.T) {
	s := newSchedule()
	s.add("c", 0, t0.Add(3*time.Second))
	s.add("a", 0, t0.Add(time.Second))
	s.add("b", 1, t0.Add(2*time.Second))
	s.add("d", 1, t0.Add(time.Hour))
	if got := fmt.Sprint(drain(s, t0.Add(2*time.Second))); got != "[a b]" {
		t.Fatalf("due by 2s: %s, want [a b]", got)
	}
	if got := fmt.Sprint(drain(s, t0.Add(3*time.Second))); got != "[c]" {
		t.Fatalf("due by 3s: %s, want [c] (a and b are busy until settled)", got)
	}
	if s.Len() != 4 {
		t.Fatalf("%d scheduled, want 4: busy items stay scheduled", s.Len())
	}
}

func TestScheduleHurriedItemsGoFirst(t *testing.T) {
	s := newSchedule()
	s.add("due", 0, t0)
	s.add("late", 0, t0.Add(time.Hour))
	if !s.hurry("late") {
		t.Fatal("a scheduled idle cluster was not queued ahead")
	}
	if s.hurry("unknown") {
		t.Fatal("a cluster not scheduled was queued")
	}
	if got := fmt.Sprint(drain(s, t0)); got != "[late due]" {
		t.Fatalf("%s, want [late due]: the hurried cluster first", got)
	}
}

// TestScheduleBusyItemsComeBackOnce checks what happens to a cluster whose
// operation ends, or whose inventory entry changes, while it is probed: it
// is not probed twice at once, and is probed again once settled.
func TestScheduleBusyItemsComeBackOnce(t *testing.T) {
	s := newSchedule()
	s.add("a", 0, t0)
	s.add("b", 0, t0)
	a, b := s.take(), s.take()
	if s.hurry("a") {
		t.Fatal("a busy cluster was queued: it would be probed twice at once")
	}
	if s.add("b", 0, t0) {
		t.Fatal("a busy cluster was put back in the heap")
	}
	if got := drain(s, t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("%v handed out while busy", got)
	}
	if !a.fresh || !b.soon {
		t.Fatal("the change while busy was not noted")
	}
	next := t0.Add(10 * time.Second)
	s.settle(a, next, t0)
	s.settle(b, next, t0)
	if got := fmt.Sprint(drain(s, t0)); got != "[a b]" {
		t.Fatalf("%s, want [a b]: a queued ahead (its operation ended), b due at once", got)
	}
	if !a.takeFresh() || a.takeFresh() {
		t.Fatal("the probe after the operation was not marked to publish, or not only once")
	}
	s.settle(a, next, t0)
	s.settle(b, next, t0)
	if got := drain(s, next.Add(-time.Millisecond)); len(got) != 0 {
		t.Fatalf("%v handed out before they are due", got)
	}
	if got := fmt.Sprint(drain(s, next)); got != "[a b]" {
		t.Fatalf("%s, want [a b] at their next due time", got)
	}
}

// TestScheduleRetryWaits: a cluster whose record failed waits for its
// retry even if its operation ended meanwhile (a produce that keeps
// failing is not retried in a loop), and is hurried once the retry is
// done.
func TestScheduleRetryWaits(t *testing.T) {
	s := newSchedule()
	s.add("a", 0, t0)
	a := s.take()
	s.hurry("a")
	retryAt := t0.Add(5 * time.Second)
	s.retry(a, retryAt)
	if got := drain(s, retryAt.Add(-time.Millisecond)); len(got) != 0 {
		t.Fatalf("%v handed out before the retry is due", got)
	}
	if got := fmt.Sprint(drain(s, retryAt)); got != "[a]" {
		t.Fatalf("%s at the retry, want [a]", got)
	}
	s.settle(a, retryAt.Add(time.Hour), retryAt)
	if got := fmt.Sprint(drain(s, retryAt)); got != "[a]" {
		t.Fatalf("%s after the retry, want [a] at once: its operation ended", got)
	}
}

func TestScheduleRemovesOnlyWhatLeaves(t *testing.T) {
	s := newSchedule()
	for i := range 6 {
		s.add(fmt.Sprint("c", i), int32(i%2), t0.Add(time.Duration(i)*time.Second))
	}
	busy := s.take() // c0, on partition 0
	s.hurry("c2")
	s.removePartition(0)
	if s.Len() != 3 {
		t.Fatalf("%d scheduled after partition 0 left, want 3", s.Len())
	}
	if s.current(busy) {
		t.Fatal("a busy item of a lost partition is still current: its result would be published")
	}
	if s.settle(busy, t0, t0) || s.Len() != 3 {
		t.Fatal("settling an item of a lost partition put it back")
	}
	s.remove("c3")
	if got := fmt.Sprint(drain(s, t0.Add(time.Hour))); got != "[c1 c5]" {
		t.Fatalf("%s, want [c1 c5]", got)
	}
	// Gained again: a new item, whatever the old one's fate.
	s.add("c0", 0, t0)
	if s.current(busy) {
		t.Fatal("the old item of a partition gained again is current")
	}
}

func TestPace(t *testing.T) {
	cfg := Config{}.withDefaults()
	for _, tc := range []struct {
		clusters            int
		interval, heartbeat time.Duration
		stretched           bool
	}{
		{0, 10 * time.Second, time.Minute, false},
		{5_000, 10 * time.Second, time.Minute, false},
		{12_000, 24 * time.Second, time.Minute, true},
		{100_000, 200 * time.Second, 500 * time.Second, true},
	} {
		p := cfg.pace(tc.clusters)
		if p.Interval != tc.interval || p.Heartbeat != tc.heartbeat || p.Stretched != tc.stretched {
			t.Errorf("%d clusters: %+v, want interval %s (stretched %v), heartbeat %s", tc.clusters, p, tc.interval, tc.stretched, tc.heartbeat)
		}
		if hb := float64(tc.clusters) / p.Heartbeat.Seconds(); hb > cfg.HeartbeatBudget {
			t.Errorf("%d clusters: %.0f heartbeats/s, over the budget of %.0f", tc.clusters, hb, cfg.HeartbeatBudget)
		}
	}
}

func TestBucket(t *testing.T) {
	b := newBucket(10) // a token every 100ms, a second's worth held
	now := t0
	n := 0
	for b.allow(now) {
		n++
	}
	if n != 10 {
		t.Fatalf("%d tokens at once after a pause, want 10 (one second's worth)", n)
	}
	if at := b.ready(now); at != now.Add(100*time.Millisecond) {
		t.Fatalf("next token at %s, want 100ms later", at.Sub(now))
	}
	now = now.Add(time.Hour)
	n = 0
	for b.allow(now) {
		n++
	}
	if n != 10 {
		t.Fatalf("%d tokens after an hour, want 10: a pause is not saved up", n)
	}
}
