// Package window decides when rollouts may start work: maintenance windows
// that allow it and blackouts that deny it, recurring in a time zone
// ("Mon-Fri 22:00-04:00 Europe/Paris") or absolute ("the freeze from
// 2026-12-20 to 2027-01-04").
//
// A Window is one such range of time, parsed from the compact text people
// write in a rollout spec; a Schedule combines allowed and denied Windows;
// All intersects Schedules (a rollout's with those of the label selectors a
// cluster matches). They answer three questions about an instant that the
// caller passes in (from an injected clock; the package never reads the
// time itself): is it open now (Open), when does it next open (NextOpen)
// and when does it next close (NextClose). Everything here is pure, and
// safe for concurrent use.
//
// # Text format
//
// A recurring window is written
//
//	[DAYS] [START-END] [ZONE]
//
// DAYS are the days of the week a window starts on: names (Mon, Tue, Wed,
// Thu, Fri, Sat, Sun, or in full; any case) and ranges of them, separated
// by commas: "Mon-Fri", "Sat,Sun", "Mon,Wed-Fri", "Fri-Mon" (ranges may
// wrap past Sunday). Absent, a window recurs every day.
//
// START-END are times of day, HH:MM on a 24-hour clock. START is 00:00 to
// 23:59; END is 00:00 to 24:00. An END at or before START crosses midnight
// and ends on the next day: "22:00-04:00" runs from 22:00 on each of DAYS
// to 04:00 the morning after. "00:00-24:00" is a whole day; absent, the
// range is a whole day (so "Sat,Sun" alone means the whole weekend), but a
// window names at least DAYS or a range. START and END may not be equal.
//
// ZONE is an IANA time zone name, such as "Europe/Paris" or
// "America/New_York"; absent, it is UTC. DAYS and times are read on the
// clocks of that zone, so "Mon 09:00-10:00 Pacific/Kiritimati" is open on
// Sunday 19:00-20:00 UTC.
//
// An absolute window is two RFC 3339 times separated by a slash, as in
// ISO 8601 intervals:
//
//	2026-12-20T00:00:00Z/2027-01-04T00:00:00+01:00
//
// Every window includes its start and excludes its end. Spaces around
// commas and dashes are ignored, and an en dash ("22:00–04:00") may stand
// for the dash.
//
// Examples:
//
//	22:00-04:00 Europe/Paris
//	Mon-Fri 09:00-17:00 America/New_York
//	Sat,Sun 00:00-24:00 UTC
//	Sat,Sun
//	2026-12-20T00:00:00Z/2027-01-04T00:00:00Z
//
// # Daylight saving time
//
// A local date and time of day names the first instant at which the
// zone's clocks show that date and time, or a later one. So:
//
//   - a time that clocks skip when they spring forward names the instant
//     they jump; a window lying wholly inside the skipped hour, such as
//     "02:00-03:00 Europe/Paris" on the last Sunday of March, is empty that
//     day, and "02:30-05:00" opens at the jump (03:00 summer time);
//   - a time that clocks show twice when they fall back names its first
//     occurrence; "02:00-03:00 Europe/Paris" on the last Sunday of October
//     runs from the first 02:00 (summer time) to 03:00 (winter time), two
//     hours during which the clocks read 02:00-03:00, while "02:15-02:45"
//     runs once, at the first 02:15-02:45 (summer time).
//
// This is deliberate and not Go's time.Date, which does not promise which
// of the two instants it picks: as of Go 1.26 it picks the second for
// Europe/Paris and the first for America/New_York.
package window

import (
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // so that zone names load in minimal containers without a zoneinfo database
)

// Window is one range of time that a Schedule allows or denies: either
// recurring (days of the week, a time of day range and a time zone) or
// absolute (from one instant to another). See the package documentation
// for the text form Parse reads and String writes.
//
// Build Windows with Parse. The zero Window is never open and its String
// is empty. A Window holds a *time.Location, so compare Windows with Equal,
// not ==.
type Window struct {
	absolute bool
	from, to time.Time // absolute: [from, to), in UTC

	days       weekdays      // recurring: the days an occurrence starts on
	start, end time.Duration // recurring: times of day; start in [0, 24h), end in (0, 24h]; end <= start crosses midnight
	loc        *time.Location
}

// ParseError is the error Parse returns: the window as written and what is
// wrong with it.
type ParseError struct {
	Window string // the window as given
	Err    error  // what is wrong
}

func (e *ParseError) Error() string { return fmt.Sprintf("window %q: %v", e.Window, e.Err) }

func (e *ParseError) Unwrap() error { return e.Err }

// Parse reads a window in the text form described in the package
// documentation, such as "Mon-Fri 22:00-04:00 Europe/Paris" or
// "2026-12-20T00:00:00Z/2027-01-04T00:00:00Z".
//
// It fails with a *ParseError naming the window and saying what is wrong:
// an hour or minute out of range, a malformed time, an unknown weekday or
// time zone, equal start and end, an absolute window that does not end
// after it starts, or extra words. For example:
//
//	window "25:00-04:00 UTC": hour 25 out of range (00-23, or 24 in the end time 24:00)
//
// The zone "Local" is refused, since it would mean different times on
// different machines.
func Parse(s string) (Window, error) {
	w, err := parse(s)
	if err != nil {
		return Window{}, &ParseError{Window: s, Err: err}
	}
	return w, nil
}

// MustParse is like Parse but panics if s is not a valid window. It is
// meant for windows written in the code, such as in tests.
func MustParse(s string) Window {
	w, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return w
}

// String writes w in canonical text form, which Parse reads back to an
// equal Window: days Monday first, with runs of three or more days as
// ranges and left out when every day; times as HH:MM, an end at midnight
// as 24:00; the zone always; absolute times in UTC.
func (w Window) String() string {
	if w.absolute {
		return w.from.Format(time.RFC3339Nano) + "/" + w.to.Format(time.RFC3339Nano)
	}
	if w.days == 0 {
		return ""
	}
	var b strings.Builder
	if w.days != everyDay {
		b.WriteString(w.days.String())
		b.WriteByte(' ')
	}
	fmt.Fprintf(&b, "%s-%s %s", clock(w.start), clock(w.end), w.loc)
	return b.String()
}

// MarshalText writes w's String, so that a Window can sit in JSON or YAML
// documents as a string.
func (w Window) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

// UnmarshalText parses text with Parse.
func (w *Window) UnmarshalText(text []byte) error {
	v, err := Parse(string(text))
	if err != nil {
		return err
	}
	*w = v
	return nil
}

// Equal reports whether w and o are the same window: the same instants for
// absolute windows, the same days, times and zone name for recurring ones.
// (Two zone names that are aliases of each other, such as "Europe/Paris"
// and "Europe/Monaco", are different zones here.)
func (w Window) Equal(o Window) bool {
	if w.absolute || o.absolute {
		return w.absolute == o.absolute && w.from.Equal(o.from) && w.to.Equal(o.to)
	}
	if w.days == 0 || o.days == 0 {
		return w.days == o.days
	}
	return w.days == o.days && w.start == o.start && w.end == o.end && w.loc.String() == o.loc.String()
}

// Contains reports whether t lies inside the window: at or after the start
// of one of its occurrences and before that occurrence's end.
func (w Window) Contains(t time.Time) bool {
	if w.absolute {
		return !t.Before(w.from) && t.Before(w.to)
	}
	if w.days == 0 {
		return false
	}
	// An occurrence containing t starts on t's local date, or one or two
	// days before (crossing midnight, or a clock turned back), or even the
	// next day (a clock turned back across midnight).
	day := w.localDate(t).Add(-2 * aDay)
	for range 4 {
		if s, e, ok := w.occurrence(day); ok && !t.Before(s) && t.Before(e) {
			return true
		}
		day = day.Add(aDay) // days are UTC midnights: no daylight saving
	}
	return false
}

// nextEdge returns the first instant after t at which the window opens or
// closes, or false if it never does again.
func (w Window) nextEdge(t time.Time) (time.Time, bool) {
	if w.absolute {
		switch {
		case t.Before(w.from):
			return w.from, true
		case t.Before(w.to):
			return w.to, true
		}
		return time.Time{}, false
	}
	if w.days == 0 {
		return time.Time{}, false
	}
	// Occurrences follow one another without overlapping, so the first
	// that ends after t holds the next edge: its start, or its end if it
	// has started. Any week holds one of each day, so 7 days past t's date
	// would do, but a spring-forward change can empty an occurrence.
	day := w.localDate(t).Add(-2 * aDay)
	for range 40 {
		if s, e, ok := w.occurrence(day); ok && e.After(t) {
			if s.After(t) {
				return s, true
			}
			return e, true
		}
		day = day.Add(aDay) // days are UTC midnights: no daylight saving
	}
	return time.Time{}, false
}

// localDate returns t's date on w's clocks, as midnight UTC of that date.
func (w Window) localDate(t time.Time) time.Time {
	y, m, d := t.In(w.loc).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// occurrence returns the occurrence of a recurring window that starts on
// day (midnight UTC of a date on w's clocks), if it has one and it is not
// emptied by a daylight saving change.
func (w Window) occurrence(day time.Time) (start, end time.Time, ok bool) {
	if !w.days.has(day.Weekday()) {
		return time.Time{}, time.Time{}, false
	}
	endOffset := w.end
	if w.end <= w.start {
		endOffset += aDay
	}
	start, end = firstShowing(w.loc, day.Add(w.start)), firstShowing(w.loc, day.Add(endOffset))
	return start, end, start.Before(end)
}

// firstShowing returns the first instant at which the clocks of loc show
// wall (a date and time of day, written as if in UTC) or a later time: the
// instant itself when the clocks show wall once, the first of two when
// they show it twice, and the instant they jump past it when they skip it.
func firstShowing(loc *time.Location, wall time.Time) time.Time {
	// Zones are less than 26 hours from UTC, so no earlier instant shows
	// wall. From there, walk the zone's periods of constant offset: in each,
	// the clocks run steadily, so the first instant showing wall or later
	// is easy to compute.
	t := wall.Add(-26 * time.Hour).In(loc)
	for range 16 {
		_, offset := t.Zone()
		c := wall.Add(-time.Duration(offset) * time.Second)
		if c.Before(t) {
			c = t // the period begins after the clocks jumped past wall
		}
		_, next := t.ZoneBounds()
		if next.IsZero() || c.Before(next) {
			return c.UTC()
		}
		t = next.In(loc)
	}
	// Unreachable with real zone data: no zone changes 16 times in 2 days.
	y, m, d := wall.Date()
	return time.Date(y, m, d, wall.Hour(), wall.Minute(), 0, 0, loc).UTC()
}

// clock writes a time of day as HH:MM.
func clock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// weekdays is a set of days of the week, bit i standing for time.Weekday(i).
type weekdays uint8

const everyDay weekdays = 1<<7 - 1

// aDay steps between dates written as UTC midnights.
const aDay = 24 * time.Hour

func (s weekdays) has(d time.Weekday) bool { return s&(1<<d) != 0 }

var dayNames = [7]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

// String writes the days Monday first, with runs of three or more as ranges.
func (s weekdays) String() string {
	var parts []string
	for i := 0; i < 7; {
		if !s.has(isoDay(i)) {
			i++
			continue
		}
		j := i
		for j+1 < 7 && s.has(isoDay(j+1)) {
			j++
		}
		switch {
		case j-i >= 2:
			parts = append(parts, dayNames[isoDay(i)]+"-"+dayNames[isoDay(j)])
		case j > i:
			parts = append(parts, dayNames[isoDay(i)], dayNames[isoDay(j)])
		default:
			parts = append(parts, dayNames[isoDay(i)])
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// isoDay returns the i-th day of a week starting on Monday.
func isoDay(i int) time.Weekday { return time.Weekday((i + 1) % 7) }
