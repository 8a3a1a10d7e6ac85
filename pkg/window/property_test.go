package window

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// Zones with daylight saving changes of an hour (Paris, New York) and of
// half an hour (Lord Howe), southern-hemisphere summers (Santiago), odd
// offsets (Kathmandu) and days far from UTC's (Kiritimati, Pago Pago).
var propertyZones = []string{
	"UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Santiago",
	"Asia/Kathmandu", "Pacific/Kiritimati", "Pacific/Pago_Pago",
}

// randomWindow writes a window in text, the way people might.
func randomWindow(r *rand.Rand, base time.Time) string {
	if r.IntN(5) == 0 {
		from := base.Add(time.Duration(r.IntN(60*24*60)-30*24*60) * time.Minute)
		to := from.Add(time.Duration(1+r.IntN(20*24*60)) * time.Minute)
		return from.Format(time.RFC3339) + "/" + to.Format(time.RFC3339)
	}
	var days []string
	for d := range 7 {
		if r.IntN(2) == 0 {
			days = append(days, dayNames[d])
		}
	}
	// Times on a quarter hour meet each other and the zones' changes often.
	start := r.IntN(96) * 15
	end := r.IntN(97) * 15
	if end == start {
		end = (start + 15*(1+r.IntN(95))) % (24 * 60)
	}
	text := fmt.Sprintf("%s %d:%02d-%02d:%02d %s", strings.Join(days, ","), start/60, start%60, end/60, end%60,
		propertyZones[r.IntN(len(propertyZones))])
	return strings.TrimSpace(text)
}

func randomSchedule(t *testing.T, r *rand.Rand, base time.Time) Schedule {
	var allow, deny []string
	for range r.IntN(4) {
		allow = append(allow, randomWindow(r, base))
	}
	for range r.IntN(3) {
		deny = append(deny, randomWindow(r, base))
	}
	s, err := NewSchedule(allow, deny)
	if err != nil {
		t.Fatal(err)
	}
	// Canonical forms read back to equal windows.
	a, d := s.Strings()
	again, err := NewSchedule(a, d)
	if err != nil {
		t.Fatalf("the canonical forms of %q %q do not parse: %v", allow, deny, err)
	}
	for i := range s.Allow {
		if !again.Allow[i].Equal(s.Allow[i]) {
			t.Fatalf("%q re-parses to %q", s.Allow[i], again.Allow[i])
		}
	}
	for i := range s.Deny {
		if !again.Deny[i].Equal(s.Deny[i]) {
			t.Fatalf("%q re-parses to %q", s.Deny[i], again.Deny[i])
		}
	}
	return s
}

// transitions are the instants in 2026 at which the property zones change
// their clocks, around which instants are picked more often.
func transitions(t *testing.T) []time.Time {
	var out []time.Time
	for _, name := range propertyZones {
		l := loc(t, name)
		at := utc(2026, 1, 1, 0, 0).In(l)
		for {
			_, next := at.ZoneBounds()
			if next.IsZero() || next.Year() > 2026 {
				break
			}
			out = append(out, next)
			at = next
		}
	}
	return out
}

// sampled is how far after t the properties look at every minute.
const sampled = 24 * time.Hour

type schedule interface {
	Open(t time.Time) bool
	NextOpen(t time.Time) (time.Time, bool)
	NextClose(t time.Time) (time.Time, bool)
}

// checkNext checks NextOpen (want true) or NextClose (want false) of s at
// t: the answer r is at or after t, s.Open(r) is want, and no instant in
// [t, r) is, looking at every minute up to sampled after t and at the
// instant just before r.
func checkNext(t *testing.T, desc string, s schedule, at time.Time, want bool) {
	t.Helper()
	next, name := s.NextClose, "NextClose"
	if want {
		next, name = s.NextOpen, "NextOpen"
	}
	r, ok := next(at)
	limit := at.Add(sampled)
	if ok {
		if r.Before(at) {
			t.Fatalf("%s: %s(%s) = %s, before it", desc, name, at, r)
		}
		if s.Open(r) != want {
			t.Fatalf("%s: %s(%s) = %s, where Open is %v", desc, name, at, r, !want)
		}
		if r.After(at) && s.Open(r.Add(-time.Nanosecond)) == want {
			t.Fatalf("%s: %s(%s) = %s, but Open is already %v a nanosecond before", desc, name, at, r, want)
		}
		if r.Before(limit) {
			limit = r
		}
	}
	for m := at; m.Before(limit); m = m.Add(time.Minute) {
		if s.Open(m) == want {
			t.Fatalf("%s: %s(%s) = %s, %v; but Open(%s) is %v", desc, name, at, r, ok, m, want)
		}
	}
}

func TestProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 2026))
	base := utc(2026, 1, 1, 0, 0)
	trans := transitions(t)
	instant := func() time.Time {
		if r.IntN(2) == 0 {
			return trans[r.IntN(len(trans))].Add(time.Duration(r.Int64N(int64(48*time.Hour))) - 24*time.Hour)
		}
		return base.Add(time.Duration(r.Int64N(int64(365 * 24 * time.Hour))))
	}
	for i := range 120 {
		s := randomSchedule(t, r, instant())
		allow, deny := s.Strings()
		desc := fmt.Sprintf("schedule %d allow %q deny %q", i, allow, deny)
		for range 3 {
			at := instant()
			checkNext(t, desc, s, at, true)
			checkNext(t, desc, s, at, false)
		}
	}
	for i := range 40 {
		a := All{randomSchedule(t, r, instant()), randomSchedule(t, r, instant())}
		desc := fmt.Sprintf("all %d %v", i, a)
		for range 3 {
			at := instant()
			checkNext(t, desc, a, at, true)
			checkNext(t, desc, a, at, false)
		}
	}
}

// Away from daylight saving changes, a recurring window is open exactly
// when its zone's clocks show one of its days and a time in its range (or,
// crossing midnight, the day after one of its days and a time before its
// end). This checks Contains against that simpler rule.
func TestContainsMatchesWallClock(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 2026))
	base := utc(2026, 1, 1, 0, 0)
	checked := 0
	for range 300 {
		text := randomWindow(r, base)
		w := MustParse(text)
		if w.absolute {
			continue
		}
		for range 40 {
			at := base.Add(time.Duration(r.Int64N(int64(365*24*time.Hour))) / time.Minute * time.Minute)
			local := at.In(w.loc)
			_, off := local.Zone()
			_, before := at.Add(-30 * time.Hour).In(w.loc).Zone()
			_, after := at.Add(30 * time.Hour).In(w.loc).Zone()
			if before != off || after != off {
				continue // near a change of the zone's clocks
			}
			checked++
			tod := time.Duration(local.Hour())*time.Hour + time.Duration(local.Minute())*time.Minute
			day, yesterday := local.Weekday(), (local.Weekday()+6)%7
			var want bool
			if w.end > w.start {
				want = w.days.has(day) && tod >= w.start && tod < w.end
			} else {
				want = w.days.has(day) && tod >= w.start || w.days.has(yesterday) && tod < w.end
			}
			if got := w.Contains(at); got != want {
				t.Fatalf("%q.Contains(%s) = %v; the clocks show %s, so want %v", text, at, got, local.Format("Mon 15:04"), want)
			}
		}
	}
	if checked < 5000 {
		t.Fatalf("only %d instants checked", checked)
	}
}
