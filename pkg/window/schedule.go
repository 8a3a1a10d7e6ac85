package window

import (
	"errors"
	"fmt"
	"time"
)

// Horizon is how far ahead NextOpen and NextClose look. A schedule that
// does not open (or close) within Horizon of the instant asked about is
// reported as never opening (or closing).
const Horizon = 400 * 24 * time.Hour

// Schedule says when work may start: at instants inside at least one Allow
// window (or anywhere, when there are none) and inside no Deny window. A
// deny wins over an allow, so an absolute freeze in Deny overrides the
// recurring maintenance windows in Allow.
//
// The zero Schedule is always open. A Schedule is a value; its methods do
// not change it and are safe for concurrent use.
type Schedule struct {
	Allow []Window
	Deny  []Window
}

// NewSchedule parses the allowed and denied windows of a schedule, as
// written in a spec's lists (see Parse for the text form).
//
// It returns every problem found, joined with errors.Join, each naming the
// list and index of the window at fault and wrapping Parse's *ParseError:
//
//	windows.allow[1]: window "25:00-04:00 UTC": hour 25 out of range (00-23, or 24 in the end time 24:00)
func NewSchedule(allow, deny []string) (Schedule, error) {
	var errs []error
	parseAll := func(list string, texts []string) []Window {
		var ws []Window
		for i, text := range texts {
			w, err := Parse(text)
			if err != nil {
				errs = append(errs, fmt.Errorf("windows.%s[%d]: %w", list, i, err))
				continue
			}
			ws = append(ws, w)
		}
		return ws
	}
	s := Schedule{Allow: parseAll("allow", allow), Deny: parseAll("deny", deny)}
	if len(errs) > 0 {
		return Schedule{}, errors.Join(errs...)
	}
	return s, nil
}

// Strings writes the schedule's windows in canonical text form, the lists
// NewSchedule reads back to an equal Schedule.
func (s Schedule) Strings() (allow, deny []string) {
	for _, w := range s.Allow {
		allow = append(allow, w.String())
	}
	for _, w := range s.Deny {
		deny = append(deny, w.String())
	}
	return allow, deny
}

// IsZero reports whether the schedule has no windows, and so is always open.
func (s Schedule) IsZero() bool { return len(s.Allow) == 0 && len(s.Deny) == 0 }

// Open reports whether work may start at t: t is inside an Allow window
// (or there are none) and inside no Deny window.
func (s Schedule) Open(t time.Time) bool {
	for _, w := range s.Deny {
		if w.Contains(t) {
			return false
		}
	}
	if len(s.Allow) == 0 {
		return true
	}
	for _, w := range s.Allow {
		if w.Contains(t) {
			return true
		}
	}
	return false
}

// NextOpen returns the earliest instant at or after t at which the
// schedule is open: t itself if it is open at t. It returns false if the
// schedule does not open within Horizon of t, for example when a deny
// window covers every allowed one. The instant is in t's location.
func (s Schedule) NextOpen(t time.Time) (time.Time, bool) { return scan(s, t, true) }

// NextClose returns the earliest instant at or after t at which the
// schedule is closed: t itself if it is closed at t. It returns false if
// the schedule stays open for Horizon after t, as a schedule without
// windows does. The instant is in t's location.
func (s Schedule) NextClose(t time.Time) (time.Time, bool) { return scan(s, t, false) }

func (s Schedule) nextEdge(t time.Time) (time.Time, bool) {
	var next time.Time
	found := false
	for _, ws := range [][]Window{s.Allow, s.Deny} {
		for _, w := range ws {
			if e, ok := w.nextEdge(t); ok && (!found || e.Before(next)) {
				next, found = e, true
			}
		}
	}
	return next, found
}

// All is open when every one of its schedules is open. It combines the
// schedule of a rollout with those of the label selector rules a cluster
// matches. An empty All is always open.
type All []Schedule

// Open reports whether every schedule is open at t.
func (a All) Open(t time.Time) bool {
	for _, s := range a {
		if !s.Open(t) {
			return false
		}
	}
	return true
}

// NextOpen returns the earliest instant at or after t at which every
// schedule is open at once, with the same rules as Schedule.NextOpen.
func (a All) NextOpen(t time.Time) (time.Time, bool) { return scan(a, t, true) }

// NextClose returns the earliest instant at or after t at which some
// schedule is closed, with the same rules as Schedule.NextClose.
func (a All) NextClose(t time.Time) (time.Time, bool) { return scan(a, t, false) }

func (a All) nextEdge(t time.Time) (time.Time, bool) {
	var next time.Time
	found := false
	for _, s := range a {
		if e, ok := s.nextEdge(t); ok && (!found || e.Before(next)) {
			next, found = e, true
		}
	}
	return next, found
}

// timeline is what scan walks: a state that changes only at edges.
type timeline interface {
	Open(t time.Time) bool
	nextEdge(t time.Time) (time.Time, bool)
}

// scan returns the first instant at or after t at which tl.Open(t) is
// want. Every window's state is constant between its edges, so the
// timeline's is constant between the edges of all its windows: checking t
// and then each next edge in turn finds the first change.
func scan(tl timeline, t time.Time, want bool) (time.Time, bool) {
	limit := t.Add(Horizon)
	for at := t; ; {
		if tl.Open(at) == want {
			return at.In(t.Location()), true
		}
		next, ok := tl.nextEdge(at)
		if !ok || next.After(limit) {
			return time.Time{}, false
		}
		at = next
	}
}
