package window

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want string // canonical form
	}{
		{"22:00-04:00 Europe/Paris", "22:00-04:00 Europe/Paris"},
		{"Mon-Fri 09:00-17:00 America/New_York", "Mon-Fri 09:00-17:00 America/New_York"},
		{"Sat,Sun 00:00-24:00 UTC", "Sat,Sun 00:00-24:00 UTC"},
		{"2026-12-20T00:00:00Z/2027-01-04T00:00:00Z", "2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"},

		// Defaults: UTC, every day, the whole day.
		{"09:00-17:00", "09:00-17:00 UTC"},
		{"Sat,Sun", "Sat,Sun 00:00-24:00 UTC"},
		{"Sat Europe/Paris", "Sat 00:00-24:00 Europe/Paris"},
		{"Mon-Sun 01:00-02:00", "01:00-02:00 UTC"},

		// Days: any case, full names, ranges, wrapping ranges, repeats.
		{"mon-FRI 09:00-17:00", "Mon-Fri 09:00-17:00 UTC"},
		{"Monday,Wednesday 09:00-17:00", "Mon,Wed 09:00-17:00 UTC"},
		{"Mon,Wed-Fri 09:00-17:00", "Mon,Wed-Fri 09:00-17:00 UTC"},
		{"Fri-Mon 22:00-04:00", "Mon,Fri-Sun 22:00-04:00 UTC"},
		{"Sun-Sat 10:00-11:00", "10:00-11:00 UTC"},
		{"Tue,Mon,Tue 10:00-11:00", "Mon,Tue 10:00-11:00 UTC"},
		{"Sun,Sat,Fri 10:00-11:00", "Fri-Sun 10:00-11:00 UTC"},

		// Times: one-digit hours, midnight as an end, crossing midnight.
		{"9:05-17:30", "09:05-17:30 UTC"},
		{"22:00-00:00", "22:00-24:00 UTC"},
		{"22:00-24:00", "22:00-24:00 UTC"},
		{"00:00-24:00", "00:00-24:00 UTC"},
		{"23:59-00:01", "23:59-00:01 UTC"},

		// Spacing and the dashes people paste.
		{"  Mon , Wed   22:00 - 04:00   Europe/Paris ", "Mon,Wed 22:00-04:00 Europe/Paris"},
		{"22:00–04:00 Europe/Paris", "22:00-04:00 Europe/Paris"},
		{"Mon—Fri 09:00-17:00", "Mon-Fri 09:00-17:00 UTC"},

		// Zones with dashes, signs and underscores in their names.
		{"10:00-11:00 America/Port-au-Prince", "10:00-11:00 America/Port-au-Prince"},
		{"10:00-11:00 Etc/GMT+5", "10:00-11:00 Etc/GMT+5"},
		{"10:00-11:00 Pacific/Pago_Pago", "10:00-11:00 Pacific/Pago_Pago"},

		// Absolute windows: offsets are converted to UTC, fractions kept.
		{"2026-12-20T00:00:00+01:00/2027-01-04T00:00:00-05:00", "2026-12-19T23:00:00Z/2027-01-04T05:00:00Z"},
		{"2026-12-20T00:00:00.5Z / 2026-12-20T00:00:01Z", "2026-12-20T00:00:00.5Z/2026-12-20T00:00:01Z"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			w, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := w.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			again, err := Parse(w.String())
			if err != nil {
				t.Fatalf("Parse(String()): %v", err)
			}
			if !again.Equal(w) {
				t.Errorf("Parse(%q) = %q, not equal to %q", w.String(), again, w)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string // the whole message
	}{
		{"25:00-04:00 UTC", `window "25:00-04:00 UTC": hour 25 out of range (00-23, or 24 in the end time 24:00)`},
		{"22:00-04:60 UTC", `window "22:00-04:60 UTC": minute 60 out of range (00-59)`},
		{"22:00-24:30", `window "22:00-24:30": 24:30 is past the end of the day (24:00)`},
		{"24:00-04:00", `window "24:00-04:00": 24:00 is only an end time; a window starting at midnight starts at 00:00`},
		{"2200-0400", `window "2200-0400": "2200" is not a time of day like 09:30`},
		{"22:00:00-04:00", `window "22:00:00-04:00": "22:00:00" is not a time of day like 09:30`},
		{"9:5-10:00", `window "9:5-10:00": "9:5" is not a time of day like 09:30`},
		{"22:00", `window "22:00": "22:00" is not a time range like 22:00-04:00`},
		{"22:00-", `window "22:00-": "" is not a time of day like 09:30`},
		{"09:00-09:00", `window "09:00-09:00": start and end are both 09:00; for a whole day write 00:00-24:00`},
		{"00:00-00:00", `window "00:00-00:00": start and end are both 00:00; for a whole day write 00:00-24:00`},
		{"Mnday 09:00-17:00", `window "Mnday 09:00-17:00": unknown weekday "Mnday"; want Mon, Tue, Wed, Thu, Fri, Sat or Sun`},
		{"Mon-Fir 09:00-17:00", `window "Mon-Fir 09:00-17:00": unknown weekday "Fir"; want Mon, Tue, Wed, Thu, Fri, Sat or Sun`},
		{"Mon,,Tue 09:00-17:00", `window "Mon,,Tue 09:00-17:00": empty day in "Mon,,Tue"`},
		{"Europe/Paris 22:00-04:00", `window "Europe/Paris 22:00-04:00": "Europe/Paris": the time zone comes last, after the time range`},
		{"22:00-04:00 Europe/Pariss", `window "22:00-04:00 Europe/Pariss": unknown time zone "Europe/Pariss"; want an IANA name like Europe/Paris, America/New_York or UTC`},
		{"22:00-04:00 europe/paris", `window "22:00-04:00 europe/paris": unknown time zone "europe/paris"; want an IANA name like Europe/Paris, America/New_York or UTC`},
		{"22:00-04:00 Local", `window "22:00-04:00 Local": time zone "Local" means different zones on different machines; name one, like Europe/Paris or UTC`},
		{"22:00-04:00 UTC on weekdays", `window "22:00-04:00 UTC on weekdays": unexpected "on weekdays" after the time zone`},
		{"Mon 22:00-04:00 23:00-01:00", `window "Mon 22:00-04:00 23:00-01:00": "23:00-01:00": one time range per window; write each range as a window of its own`},
		{"", `window "": empty; want a window like "Mon-Fri 22:00-04:00 Europe/Paris"`},
		{"   ", `window "   ": empty; want a window like "Mon-Fri 22:00-04:00 Europe/Paris"`},

		{"2026-12-20T00:00:00Z", `window "2026-12-20T00:00:00Z": an absolute window is two RFC 3339 times separated by a slash, like 2026-12-20T00:00:00Z/2027-01-04T00:00:00Z`},
		{"2027-01-04T00:00:00Z/2026-12-20T00:00:00Z", `window "2027-01-04T00:00:00Z/2026-12-20T00:00:00Z": end 2026-12-20T00:00:00Z is not after start 2027-01-04T00:00:00Z`},
		{"2026-12-20T00:00:00Z/2026-12-20T01:00:00+01:00", `window "2026-12-20T00:00:00Z/2026-12-20T01:00:00+01:00": end 2026-12-20T00:00:00Z is not after start 2026-12-20T00:00:00Z`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			w, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse succeeded with %q, want error %q", w, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %s\nwant %s", err, tt.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Window != tt.in {
				t.Errorf("error %v is not a *ParseError naming the window", err)
			}
		})
	}
}

// Time parse failures keep Go's reason, which says which part is wrong.
func TestParseAbsoluteBadTimes(t *testing.T) {
	tests := []struct{ in, want string }{
		{"2026-13-20T00:00:00Z/2027-01-04T00:00:00Z", `start "2026-13-20T00:00:00Z" is not an RFC 3339 time`},
		{"2026-12-20T00:00:00Z/2027-01-04", `end "2027-01-04" is not an RFC 3339 time`},
		{"2026-12-20T00:00:00/2027-01-04T00:00:00Z", `start "2026-12-20T00:00:00" is not an RFC 3339 time`},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		var te *time.ParseError
		if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.As(err, &te) {
			t.Errorf("Parse(%q) = %v, want an error containing %q wrapping a *time.ParseError", tt.in, err, tt.want)
		}
	}
}

func TestZeroWindow(t *testing.T) {
	var w Window
	if w.String() != "" {
		t.Errorf("String() = %q, want empty", w)
	}
	if w.Contains(time.Now()) {
		t.Error("the zero Window contains now")
	}
	if !w.Equal(Window{}) || w.Equal(MustParse("Mon")) || MustParse("Mon").Equal(w) {
		t.Error("Equal on zero Windows is wrong")
	}
}

func TestEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"22:00-00:00 Europe/Paris", "22:00-24:00 Europe/Paris", true},
		{"Sat,Sun", "Sat-Sun 00:00-24:00 UTC", true},
		{"2026-12-20T01:00:00+01:00/2027-01-04T00:00:00Z", "2026-12-20T00:00:00Z/2027-01-04T00:00:00Z", true},
		{"22:00-04:00 Europe/Paris", "22:00-04:00 Europe/Berlin", false},
		{"22:00-04:00", "22:00-05:00", false},
		{"21:00-04:00", "22:00-04:00", false},
		{"Mon 22:00-04:00", "Tue 22:00-04:00", false},
		{"2026-12-20T00:00:00Z/2027-01-04T00:00:00Z", "2026-12-20T00:00:00Z/2027-01-05T00:00:00Z", false},
		{"2026-12-20T00:00:00Z/2027-01-04T00:00:00Z", "00:00-24:00", false},
	}
	for _, tt := range tests {
		if got := MustParse(tt.a).Equal(MustParse(tt.b)); got != tt.want {
			t.Errorf("%q.Equal(%q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := MustParse(tt.b).Equal(MustParse(tt.a)); got != tt.want {
			t.Errorf("%q.Equal(%q) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestTextMarshaling(t *testing.T) {
	in := struct{ W []Window }{W: []Window{MustParse("mon-fri 9:00-17:00 America/New_York"), MustParse("2026-12-20T00:00:00Z/2027-01-04T00:00:00Z")}}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"W":["Mon-Fri 09:00-17:00 America/New_York","2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"]}`
	if string(data) != want {
		t.Errorf("json = %s, want %s", data, want)
	}
	var out struct{ W []Window }
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.W) != 2 || !out.W[0].Equal(in.W[0]) || !out.W[1].Equal(in.W[1]) {
		t.Errorf("round trip gave %v, want %v", out.W, in.W)
	}
	err = json.Unmarshal([]byte(`{"W":["25:00-04:00"]}`), &out)
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Errorf("unmarshaling a bad window: %v, want a *ParseError", err)
	}
}

func TestMustParsePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustParse of a bad window did not panic")
		}
	}()
	MustParse("25:00-04:00")
}

func TestNewSchedule(t *testing.T) {
	s, err := NewSchedule([]string{"Mon-Fri 22:00-04:00 Europe/Paris", "sat,sun"}, []string{"2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"})
	if err != nil {
		t.Fatal(err)
	}
	allow, deny := s.Strings()
	if got, want := strings.Join(allow, "|"), "Mon-Fri 22:00-04:00 Europe/Paris|Sat,Sun 00:00-24:00 UTC"; got != want {
		t.Errorf("allow = %q, want %q", got, want)
	}
	if got, want := strings.Join(deny, "|"), "2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"; got != want {
		t.Errorf("deny = %q, want %q", got, want)
	}

	empty, err := NewSchedule(nil, nil)
	if err != nil || !empty.IsZero() || s.IsZero() {
		t.Errorf("NewSchedule(nil, nil) = %v, %v; want a zero schedule", empty, err)
	}

	_, err = NewSchedule([]string{"22:00-04:00", "25:00-04:00 UTC", "Mon"}, []string{"Mnday", "2026-12-20T00:00:00Z/2027-01-04T00:00:00Z", "1:00-2:00 Mars/Olympus"})
	want := `windows.allow[1]: window "25:00-04:00 UTC": hour 25 out of range (00-23, or 24 in the end time 24:00)
windows.deny[0]: window "Mnday": unknown weekday "Mnday"; want Mon, Tue, Wed, Thu, Fri, Sat or Sun
windows.deny[2]: window "1:00-2:00 Mars/Olympus": unknown time zone "Mars/Olympus"; want an IANA name like Europe/Paris, America/New_York or UTC`
	if err == nil || err.Error() != want {
		t.Fatalf("error\n got %v\nwant %s", err, want)
	}
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Window != "25:00-04:00 UTC" {
		t.Errorf("errors.As found %v, want the first *ParseError", pe)
	}
}
