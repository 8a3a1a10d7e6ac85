package window

import (
	"testing"
	"time"
)

func loc(t testing.TB, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func utc(y int, m time.Month, d, h, min int) time.Time {
	return time.Date(y, m, d, h, min, 0, 0, time.UTC)
}

func sched(t testing.TB, allow, deny []string) Schedule {
	t.Helper()
	s, err := NewSchedule(allow, deny)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// 2026-06-01 is a Monday.
func TestContains(t *testing.T) {
	paris := loc(t, "Europe/Paris") // UTC+2 in June
	tests := []struct {
		window string
		at     time.Time
		want   bool
	}{
		// Start inclusive, end exclusive.
		{"09:00-17:00", utc(2026, 6, 1, 8, 59), false},
		{"09:00-17:00", utc(2026, 6, 1, 9, 0), true},
		{"09:00-17:00", utc(2026, 6, 1, 16, 59).Add(59*time.Second + 999999999), true},
		{"09:00-17:00", utc(2026, 6, 1, 17, 0), false},
		{"00:00-24:00", utc(2026, 6, 1, 0, 0), true},
		{"00:00-24:00", utc(2026, 6, 1, 23, 59), true},
		{"22:00-24:00", utc(2026, 6, 2, 0, 0), false},

		// Crossing midnight: open late on the day and early on the next.
		{"22:00-04:00", utc(2026, 6, 1, 21, 59), false},
		{"22:00-04:00", utc(2026, 6, 1, 22, 0), true},
		{"22:00-04:00", utc(2026, 6, 2, 0, 0), true},
		{"22:00-04:00", utc(2026, 6, 2, 3, 59), true},
		{"22:00-04:00", utc(2026, 6, 2, 4, 0), false},
		{"22:00-04:00", utc(2026, 6, 2, 12, 0), false},

		// Days are the days a window starts on.
		{"Mon 22:00-04:00", utc(2026, 6, 1, 23, 0), true},  // Monday night
		{"Mon 22:00-04:00", utc(2026, 6, 2, 3, 0), true},   // Tuesday morning, still Monday's window
		{"Mon 22:00-04:00", utc(2026, 6, 2, 23, 0), false}, // Tuesday night
		{"Mon 22:00-04:00", utc(2026, 6, 1, 3, 0), false},  // Monday morning: Sunday's window
		{"Mon-Fri 09:00-17:00", utc(2026, 6, 5, 12, 0), true},
		{"Mon-Fri 09:00-17:00", utc(2026, 6, 6, 12, 0), false},
		{"Mon-Fri 09:00-17:00", utc(2026, 6, 7, 12, 0), false},

		// Across the week's end: Sunday's window runs into Monday.
		{"Sun 22:00-02:00", utc(2026, 6, 7, 23, 30), true},
		{"Sun 22:00-02:00", utc(2026, 6, 8, 1, 59), true},
		{"Sun 22:00-02:00", utc(2026, 6, 8, 2, 0), false},
		{"Sat,Sun", utc(2026, 6, 5, 23, 59), false},
		{"Sat,Sun", utc(2026, 6, 6, 0, 0), true},
		{"Sat,Sun", utc(2026, 6, 7, 23, 59), true},
		{"Sat,Sun", utc(2026, 6, 8, 0, 0), false},

		// The zone's clocks decide, whatever t's location.
		{"22:00-04:00 Europe/Paris", utc(2026, 6, 1, 19, 59), false},
		{"22:00-04:00 Europe/Paris", utc(2026, 6, 1, 20, 0), true},
		{"22:00-04:00 Europe/Paris", time.Date(2026, 6, 1, 22, 0, 0, 0, paris), true},
		{"22:00-04:00 Europe/Paris", utc(2026, 6, 2, 1, 59), true},
		{"22:00-04:00 Europe/Paris", utc(2026, 6, 2, 2, 0), false},
		{"Mon 00:00-01:00 Europe/Paris", utc(2026, 5, 31, 22, 30), true}, // Sunday in UTC

		// Absolute windows: start inclusive, end exclusive.
		{"2026-12-20T00:00:00Z/2027-01-04T00:00:00Z", utc(2026, 12, 19, 23, 59), false},
		{"2026-12-20T00:00:00Z/2027-01-04T00:00:00Z", utc(2026, 12, 20, 0, 0), true},
		{"2026-12-20T00:00:00Z/2027-01-04T00:00:00Z", utc(2027, 1, 3, 23, 59), true},
		{"2026-12-20T00:00:00Z/2027-01-04T00:00:00Z", utc(2027, 1, 4, 0, 0), false},
		{"2026-12-20T00:00:00+01:00/2027-01-04T00:00:00+01:00", utc(2026, 12, 19, 23, 0), true},
	}
	for _, tt := range tests {
		if got := MustParse(tt.window).Contains(tt.at); got != tt.want {
			t.Errorf("%q.Contains(%s) = %v, want %v", tt.window, tt.at.Format(time.RFC3339Nano), got, tt.want)
		}
	}
}

// Zones far from UTC: the local weekday is not the UTC one.
func TestFarZones(t *testing.T) {
	tests := []struct {
		window   string
		at       time.Time
		weekday  time.Weekday // t's weekday in UTC, to show the shift
		contains bool
	}{
		// Kiritimati is UTC+14: its Monday 09:00 is Sunday 19:00 UTC.
		{"Mon 09:00-10:00 Pacific/Kiritimati", utc(2026, 6, 7, 19, 0), time.Sunday, true},
		{"Mon 09:00-10:00 Pacific/Kiritimati", utc(2026, 6, 8, 9, 30), time.Monday, false},
		{"Sat,Sun Pacific/Kiritimati", utc(2026, 6, 5, 10, 0), time.Friday, true},
		{"Sat,Sun Pacific/Kiritimati", utc(2026, 6, 5, 9, 59), time.Friday, false},
		{"Sat,Sun Pacific/Kiritimati", utc(2026, 6, 7, 9, 59), time.Sunday, true},
		{"Sat,Sun Pacific/Kiritimati", utc(2026, 6, 7, 10, 0), time.Sunday, false},
		// Pago Pago is UTC-11: its Monday 09:00 is Monday 20:00 UTC, and its
		// Sunday night window is Monday daytime in UTC.
		{"Mon 09:00-10:00 Pacific/Pago_Pago", utc(2026, 6, 8, 20, 0), time.Monday, true},
		{"Mon 09:00-10:00 Pacific/Pago_Pago", utc(2026, 6, 8, 9, 30), time.Monday, false},
		{"Sun 22:00-02:00 Pacific/Pago_Pago", utc(2026, 6, 8, 9, 0), time.Monday, true},
		{"Sun 22:00-02:00 Pacific/Pago_Pago", utc(2026, 6, 8, 12, 59), time.Monday, true},
		{"Sun 22:00-02:00 Pacific/Pago_Pago", utc(2026, 6, 8, 13, 0), time.Monday, false},
		{"Sun 22:00-02:00 Pacific/Pago_Pago", utc(2026, 6, 7, 23, 0), time.Sunday, false},
	}
	for _, tt := range tests {
		if tt.at.Weekday() != tt.weekday {
			t.Fatalf("test bug: %s is a %s", tt.at, tt.at.Weekday())
		}
		if got := MustParse(tt.window).Contains(tt.at); got != tt.contains {
			t.Errorf("%q.Contains(%s) = %v, want %v", tt.window, tt.at.Format(time.RFC3339), got, tt.contains)
		}
	}
	// The two zones are 25 hours apart: the same local window on the same
	// date opens a day and an hour apart.
	k, _ := Schedule{Allow: []Window{MustParse("10:00-11:00 Pacific/Kiritimati")}}.NextOpen(utc(2026, 6, 1, 0, 0))
	p, _ := Schedule{Allow: []Window{MustParse("10:00-11:00 Pacific/Pago_Pago")}}.NextOpen(utc(2026, 6, 1, 0, 0))
	if k != utc(2026, 6, 1, 20, 0) || p != utc(2026, 6, 1, 21, 0) {
		t.Errorf("next opens: Kiritimati %s, Pago Pago %s", k, p)
	}
}

// The occurrences of windows around daylight saving changes, as instants.
// Europe/Paris springs forward on 2026-03-29 at 01:00 UTC (02:00 CET
// becomes 03:00 CEST) and falls back on 2026-10-25 at 01:00 UTC (03:00
// CEST becomes 02:00 CET). America/New_York springs forward on 2026-03-08
// at 07:00 UTC (02:00 EST becomes 03:00 EDT) and falls back on 2026-11-01
// at 06:00 UTC (02:00 EDT becomes 01:00 EST).
func TestDaylightSaving(t *testing.T) {
	tests := []struct {
		name       string
		window     string
		day        time.Time // the local date an occurrence starts on
		start, end time.Time // zero: no occurrence that day
	}{
		{"Paris, the skipped hour", "02:00-03:00 Europe/Paris", utc(2026, 3, 29, 0, 0), time.Time{}, time.Time{}},
		{"Paris, the day before", "02:00-03:00 Europe/Paris", utc(2026, 3, 28, 0, 0), utc(2026, 3, 28, 1, 0), utc(2026, 3, 28, 2, 0)},
		{"Paris, the day after", "02:00-03:00 Europe/Paris", utc(2026, 3, 30, 0, 0), utc(2026, 3, 30, 0, 0), utc(2026, 3, 30, 1, 0)},
		{"Paris, into the skipped hour", "01:30-02:30 Europe/Paris", utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0)},
		{"Paris, out of the skipped hour", "02:30-05:00 Europe/Paris", utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 3, 0)},
		{"Paris, across the skipped hour", "01:00-04:00 Europe/Paris", utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0)},
		{"Paris, the hour shown twice", "02:00-03:00 Europe/Paris", utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 2, 0)},
		{"Paris, into the hour shown twice", "01:00-02:30 Europe/Paris", utc(2026, 10, 25, 0, 0), utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 0, 30)},
		{"Paris, out of the hour shown twice", "02:30-04:00 Europe/Paris", utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 3, 0)},
		{"Paris, a short night in spring", "22:00-04:00 Europe/Paris", utc(2026, 3, 28, 0, 0), utc(2026, 3, 28, 21, 0), utc(2026, 3, 29, 2, 0)},
		{"Paris, a long night in autumn", "22:00-04:00 Europe/Paris", utc(2026, 10, 24, 0, 0), utc(2026, 10, 24, 20, 0), utc(2026, 10, 25, 3, 0)},
		{"Paris, a whole short day", "Sun Europe/Paris", utc(2026, 3, 29, 0, 0), utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 22, 0)},
		{"Paris, a whole long day", "Sun Europe/Paris", utc(2026, 10, 25, 0, 0), utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 23, 0)},

		{"New York, the skipped hour", "02:00-03:00 America/New_York", utc(2026, 3, 8, 0, 0), time.Time{}, time.Time{}},
		{"New York, into the skipped hour", "01:30-02:30 America/New_York", utc(2026, 3, 8, 0, 0), utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 0)},
		{"New York, the hour shown twice", "01:00-02:00 America/New_York", utc(2026, 11, 1, 0, 0), utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 7, 0)},
		{"New York, inside the hour shown twice", "01:15-01:45 America/New_York", utc(2026, 11, 1, 0, 0), utc(2026, 11, 1, 5, 15), utc(2026, 11, 1, 5, 45)},
		{"New York, a short night", "Sat 23:00-05:00 America/New_York", utc(2026, 3, 7, 0, 0), utc(2026, 3, 8, 4, 0), utc(2026, 3, 8, 9, 0)},
		{"New York, a long night", "Sat 23:00-05:00 America/New_York", utc(2026, 10, 31, 0, 0), utc(2026, 11, 1, 3, 0), utc(2026, 11, 1, 10, 0)},

		// Lord Howe Island moves its clocks by half an hour (02:00 to 02:30
		// on 2026-10-04, 15:30 UTC the day before).
		{"Lord Howe, the skipped half hour", "02:00-02:30 Australia/Lord_Howe", utc(2026, 10, 4, 0, 0), time.Time{}, time.Time{}},
		{"Lord Howe, across it", "01:45-02:45 Australia/Lord_Howe", utc(2026, 10, 4, 0, 0), utc(2026, 10, 3, 15, 15), utc(2026, 10, 3, 15, 45)},

		// Samoa skipped Friday 2011-12-30 whole, moving from UTC-10 to UTC+14
		// at 10:00 UTC.
		{"Samoa, the skipped day", "Fri 10:00-12:00 Pacific/Apia", utc(2011, 12, 30, 0, 0), time.Time{}, time.Time{}},
		{"Samoa, the night before it", "Thu 22:00-04:00 Pacific/Apia", utc(2011, 12, 29, 0, 0), utc(2011, 12, 30, 8, 0), utc(2011, 12, 30, 10, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := MustParse(tt.window)
			start, end, ok := w.occurrence(tt.day)
			if tt.start.IsZero() {
				if ok {
					t.Fatalf("occurrence on %s = [%s, %s), want none", tt.day.Format(time.DateOnly), start, end)
				}
				// Nothing of that day's window is open.
				for at := tt.day.Add(-14 * time.Hour); at.Before(tt.day.Add(38 * time.Hour)); at = at.Add(time.Minute) {
					if w.Contains(at) && w.localDate(at).Equal(tt.day) {
						t.Fatalf("open at %s, a local time of %s", at, tt.day.Format(time.DateOnly))
					}
				}
				return
			}
			if !ok || !start.Equal(tt.start) || !end.Equal(tt.end) {
				t.Fatalf("occurrence on %s = [%s, %s) (%v), want [%s, %s)", tt.day.Format(time.DateOnly), start, end, ok, tt.start, tt.end)
			}
			// Contains and the schedule methods agree with the occurrence.
			s := Schedule{Allow: []Window{w}}
			if !w.Contains(tt.start) || w.Contains(tt.start.Add(-time.Nanosecond)) || !w.Contains(tt.end.Add(-time.Nanosecond)) || w.Contains(tt.end) {
				t.Errorf("Contains disagrees with the occurrence at its edges")
			}
			if got, ok := s.NextOpen(tt.start.Add(-time.Minute)); !ok || !got.Equal(tt.start) {
				t.Errorf("NextOpen a minute before = %s, %v; want %s", got, ok, tt.start)
			}
			if got, ok := s.NextClose(tt.start); !ok || !got.Equal(tt.end) {
				t.Errorf("NextClose at the start = %s, %v; want %s", got, ok, tt.end)
			}
		})
	}
}

// A weekly window emptied by a daylight saving change opens a week later.
func TestNextOpenSkipsEmptiedOccurrence(t *testing.T) {
	paris := loc(t, "Europe/Paris")
	s := sched(t, []string{"Sun 02:00-03:00 Europe/Paris"}, nil)
	got, ok := s.NextOpen(utc(2026, 3, 28, 12, 0))
	if want := time.Date(2026, 4, 5, 2, 0, 0, 0, paris); !ok || !got.Equal(want) {
		t.Errorf("NextOpen = %s, %v; want %s", got, ok, want)
	}

	apia := loc(t, "Pacific/Apia")
	s = sched(t, []string{"Fri 10:00-12:00 Pacific/Apia"}, nil)
	got, ok = s.NextOpen(time.Date(2011, 12, 29, 12, 0, 0, 0, apia))
	if want := time.Date(2012, 1, 6, 10, 0, 0, 0, apia); !ok || !got.Equal(want) {
		t.Errorf("NextOpen over Samoa's skipped Friday = %s, %v; want %s", got, ok, want)
	}
}

// 2026-06-01 is a Monday.
func TestNextOpenNextClose(t *testing.T) {
	const freeze = "2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"
	var never time.Time
	tests := []struct {
		name        string
		allow, deny []string
		at          time.Time
		open, close time.Time // NextOpen and NextClose; zero for never
	}{
		{"no windows: always open", nil, nil, utc(2026, 6, 1, 12, 0), utc(2026, 6, 1, 12, 0), never},
		{"inside a window", []string{"09:00-17:00"}, nil, utc(2026, 6, 1, 12, 0), utc(2026, 6, 1, 12, 0), utc(2026, 6, 1, 17, 0)},
		{"at a window's start", []string{"09:00-17:00"}, nil, utc(2026, 6, 1, 9, 0), utc(2026, 6, 1, 9, 0), utc(2026, 6, 1, 17, 0)},
		{"at a window's end", []string{"09:00-17:00"}, nil, utc(2026, 6, 1, 17, 0), utc(2026, 6, 2, 9, 0), utc(2026, 6, 1, 17, 0)},
		{"before a window", []string{"09:00-17:00"}, nil, utc(2026, 6, 1, 3, 0), utc(2026, 6, 1, 9, 0), utc(2026, 6, 1, 3, 0)},
		{"across midnight, before", []string{"22:00-04:00 Europe/Paris"}, nil, utc(2026, 6, 1, 12, 0), utc(2026, 6, 1, 20, 0), utc(2026, 6, 1, 12, 0)},
		{"across midnight, after midnight", []string{"22:00-04:00 Europe/Paris"}, nil, utc(2026, 6, 1, 23, 0), utc(2026, 6, 1, 23, 0), utc(2026, 6, 2, 2, 0)},
		{"weekdays, from Friday evening", []string{"Mon-Fri 09:00-17:00"}, nil, utc(2026, 6, 5, 18, 0), utc(2026, 6, 8, 9, 0), utc(2026, 6, 5, 18, 0)},
		{"weekend, from Monday", []string{"Sat,Sun"}, nil, utc(2026, 6, 1, 0, 0), utc(2026, 6, 6, 0, 0), utc(2026, 6, 1, 0, 0)},
		{"weekend, closes on Monday", []string{"Sat,Sun"}, nil, utc(2026, 6, 6, 12, 0), utc(2026, 6, 6, 12, 0), utc(2026, 6, 8, 0, 0)},
		{"Sunday night into Monday", []string{"Sun 22:00-02:00"}, nil, utc(2026, 6, 7, 23, 0), utc(2026, 6, 7, 23, 0), utc(2026, 6, 8, 2, 0)},
		{"Sunday night, from Monday", []string{"Sun 22:00-02:00"}, nil, utc(2026, 6, 8, 2, 0), utc(2026, 6, 14, 22, 0), utc(2026, 6, 8, 2, 0)},
		{"touching windows merge", []string{"20:00-22:00", "22:00-23:00"}, nil, utc(2026, 6, 1, 21, 0), utc(2026, 6, 1, 21, 0), utc(2026, 6, 1, 23, 0)},
		{"overlapping windows merge", []string{"20:00-22:30", "22:00-23:00", "Mon 22:45-01:00"}, nil, utc(2026, 6, 1, 21, 0), utc(2026, 6, 1, 21, 0), utc(2026, 6, 2, 1, 0)},
		{"the earliest of two", []string{"Wed 10:00-11:00", "Tue 15:00-16:00 America/New_York"}, nil, utc(2026, 6, 1, 0, 0), utc(2026, 6, 2, 19, 0), utc(2026, 6, 1, 0, 0)},
		{"a whole week closes never", []string{"Mon-Sun 00:00-24:00 Asia/Tokyo"}, nil, utc(2026, 6, 1, 0, 0), utc(2026, 6, 1, 0, 0), never},

		{"deny only", nil, []string{"Mon-Fri 09:00-17:00"}, utc(2026, 6, 1, 12, 0), utc(2026, 6, 1, 17, 0), utc(2026, 6, 1, 12, 0)},
		{"deny only, outside it", nil, []string{"Mon-Fri 09:00-17:00"}, utc(2026, 6, 1, 8, 0), utc(2026, 6, 1, 8, 0), utc(2026, 6, 1, 9, 0)},
		{"deny cuts an allow", []string{"08:00-18:00"}, []string{"12:00-13:00"}, utc(2026, 6, 1, 12, 30), utc(2026, 6, 1, 13, 0), utc(2026, 6, 1, 12, 30)},
		{"deny cuts an allow, before the cut", []string{"08:00-18:00"}, []string{"12:00-13:00"}, utc(2026, 6, 1, 9, 0), utc(2026, 6, 1, 9, 0), utc(2026, 6, 1, 12, 0)},
		{"deny covers an allow's start", []string{"08:00-18:00"}, []string{"07:00-09:00"}, utc(2026, 6, 1, 6, 0), utc(2026, 6, 1, 9, 0), utc(2026, 6, 1, 6, 0)},
		{"deny covers a whole allow", []string{"Mon 08:00-09:00", "Tue 08:00-09:00"}, []string{"Mon"}, utc(2026, 6, 1, 0, 0), utc(2026, 6, 2, 8, 0), utc(2026, 6, 1, 0, 0)},

		{"a freeze overrides recurring allows", []string{"22:00-04:00 Europe/Paris"}, []string{freeze}, utc(2026, 12, 19, 12, 0), utc(2026, 12, 19, 21, 0), utc(2026, 12, 19, 12, 0)},
		{"the freeze closes an open window", []string{"22:00-04:00 Europe/Paris"}, []string{freeze}, utc(2026, 12, 19, 22, 0), utc(2026, 12, 19, 22, 0), utc(2026, 12, 20, 0, 0)},
		{"after the freeze, mid-window", []string{"22:00-04:00 Europe/Paris"}, []string{freeze}, utc(2026, 12, 25, 12, 0), utc(2027, 1, 4, 0, 0), utc(2026, 12, 25, 12, 0)},
		{"after the freeze, next window", []string{"Mon-Fri 09:00-17:00 Europe/Paris"}, []string{freeze}, utc(2026, 12, 21, 9, 0), utc(2027, 1, 4, 8, 0), utc(2026, 12, 21, 9, 0)},
		{"an absolute allow", []string{"2026-07-01T10:00:00Z/2026-07-01T12:00:00Z"}, nil, utc(2026, 6, 1, 0, 0), utc(2026, 7, 1, 10, 0), utc(2026, 6, 1, 0, 0)},
		{"an absolute allow, past", []string{"2026-07-01T10:00:00Z/2026-07-01T12:00:00Z"}, nil, utc(2026, 7, 1, 12, 0), never, utc(2026, 7, 1, 12, 0)},
		{"an absolute allow, open", []string{"2026-07-01T10:00:00Z/2026-07-01T12:00:00Z"}, nil, utc(2026, 7, 1, 11, 0), utc(2026, 7, 1, 11, 0), utc(2026, 7, 1, 12, 0)},

		{"denied for ever", nil, []string{"00:00-24:00"}, utc(2026, 6, 1, 0, 0), never, utc(2026, 6, 1, 0, 0)},
		{"every allow denied", []string{"Mon-Fri 09:00-17:00"}, []string{"Mon-Fri"}, utc(2026, 6, 1, 0, 0), never, utc(2026, 6, 1, 0, 0)},
		{"denied beyond the horizon", nil, []string{"2026-01-01T00:00:00Z/2027-06-01T00:00:00Z"}, utc(2026, 1, 2, 0, 0), never, utc(2026, 1, 2, 0, 0)},
		{"denied up to the horizon", nil, []string{"2026-01-01T00:00:00Z/2027-02-05T00:00:00Z"}, utc(2026, 1, 1, 0, 0), utc(2027, 2, 5, 0, 0), utc(2026, 1, 1, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sched(t, tt.allow, tt.deny)
			if got := s.Open(tt.at); got != tt.open.Equal(tt.at) {
				t.Errorf("Open = %v, want %v", got, !got)
			}
			got, ok := s.NextOpen(tt.at)
			if ok != !tt.open.IsZero() || !got.Equal(tt.open) {
				t.Errorf("NextOpen = %s, %v; want %s", got, ok, tt.open)
			}
			got, ok = s.NextClose(tt.at)
			if ok != !tt.close.IsZero() || !got.Equal(tt.close) {
				t.Errorf("NextClose = %s, %v; want %s", got, ok, tt.close)
			}
		})
	}
}

func TestHorizon(t *testing.T) {
	at := utc(2026, 1, 1, 0, 0)
	end := at.Add(Horizon)
	// Opening exactly at the horizon is found; a nanosecond later is not.
	deny := Window{absolute: true, from: at, to: end}
	if got, ok := (Schedule{Deny: []Window{deny}}).NextOpen(at); !ok || !got.Equal(end) {
		t.Errorf("NextOpen = %s, %v; want %s", got, ok, end)
	}
	deny.to = end.Add(time.Nanosecond)
	if got, ok := (Schedule{Deny: []Window{deny}}).NextOpen(at); ok {
		t.Errorf("NextOpen = %s, want none within the horizon", got)
	}
}

// The instants returned are in the caller's location, and t itself comes
// back when the answer is now.
func TestResultLocation(t *testing.T) {
	ny := loc(t, "America/New_York")
	s := sched(t, []string{"22:00-04:00 Europe/Paris"}, nil)
	at := time.Date(2026, 6, 1, 8, 0, 0, 0, ny)
	got, _ := s.NextOpen(at)
	if got.Location() != ny || got.Hour() != 16 {
		t.Errorf("NextOpen = %s, want 16:00 in New York", got)
	}
	got, _ = s.NextClose(at)
	if got != at.Round(0) {
		t.Errorf("NextClose while closed = %s, want %s", got, at)
	}
}

func TestAll(t *testing.T) {
	rollout := sched(t, []string{"Mon-Fri 20:00-06:00 UTC"}, []string{"2026-06-03T00:00:00Z/2026-06-04T00:00:00Z"})
	eu := sched(t, []string{"22:00-04:00 Europe/Paris"}, nil)     // 20:00-02:00 UTC in summer
	us := sched(t, []string{"01:00-05:00 America/New_York"}, nil) // 05:00-09:00 UTC in summer
	tests := []struct {
		name        string
		all         All
		at          time.Time
		open, close time.Time
	}{
		{"none: always open", All{}, utc(2026, 6, 1, 12, 0), utc(2026, 6, 1, 12, 0), time.Time{}},
		{"one", All{eu}, utc(2026, 6, 1, 12, 0), utc(2026, 6, 1, 20, 0), utc(2026, 6, 1, 12, 0)},
		{"both open at once", All{rollout, eu}, utc(2026, 6, 1, 12, 0), utc(2026, 6, 1, 20, 0), utc(2026, 6, 1, 12, 0)},
		{"both, closes with the earlier", All{rollout, eu}, utc(2026, 6, 1, 21, 0), utc(2026, 6, 1, 21, 0), utc(2026, 6, 2, 2, 0)},
		{"overlap at the end of one", All{rollout, us}, utc(2026, 6, 1, 12, 0), utc(2026, 6, 2, 5, 0), utc(2026, 6, 1, 12, 0)},
		{"overlap closes with the rollout", All{rollout, us}, utc(2026, 6, 2, 5, 0), utc(2026, 6, 2, 5, 0), utc(2026, 6, 2, 6, 0)},
		{"the rollout's deny skips a day", All{rollout, us}, utc(2026, 6, 2, 6, 0), utc(2026, 6, 4, 5, 0), utc(2026, 6, 2, 6, 0)},
		{"no overlap ever", All{eu, us}, utc(2026, 6, 1, 12, 0), time.Time{}, utc(2026, 6, 1, 12, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.all.Open(tt.at); got != tt.open.Equal(tt.at) {
				t.Errorf("Open = %v, want %v", got, !got)
			}
			got, ok := tt.all.NextOpen(tt.at)
			if ok != !tt.open.IsZero() || !got.Equal(tt.open) {
				t.Errorf("NextOpen = %s, %v; want %s", got, ok, tt.open)
			}
			got, ok = tt.all.NextClose(tt.at)
			if ok != !tt.close.IsZero() || !got.Equal(tt.close) {
				t.Errorf("NextClose = %s, %v; want %s", got, ok, tt.close)
			}
		})
	}
}

// A window wholly inside the hour that clocks show twice runs once.
func TestRepeatedHourRunsOnce(t *testing.T) {
	s := sched(t, []string{"02:15-02:45 Europe/Paris"}, nil)
	if !s.Open(utc(2026, 10, 25, 0, 30)) || s.Open(utc(2026, 10, 25, 1, 30)) {
		t.Error("want open during the first 02:15-02:45 and not the second")
	}
}
