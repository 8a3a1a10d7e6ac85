package window

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// isAbsolute matches the start of an absolute window: a date.
var isAbsolute = regexp.MustCompile(`^\s*\d{4}-\d\d-\d\d`)

// aroundPunct matches the spaces people put around commas and dashes
// ("Mon, Wed", "22:00 - 04:00"), which the parser drops.
var aroundPunct = regexp.MustCompile(`\s*([,-])\s*`)

func parse(s string) (Window, error) {
	if strings.TrimSpace(s) == "" {
		return Window{}, errors.New(`empty; want a window like "Mon-Fri 22:00-04:00 Europe/Paris"`)
	}
	if isAbsolute.MatchString(s) {
		return parseAbsolute(s)
	}
	return parseRecurring(s)
}

const absoluteExample = "2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"

func parseAbsolute(s string) (Window, error) {
	fromText, toText, ok := strings.Cut(s, "/")
	if !ok {
		return Window{}, fmt.Errorf("an absolute window is two RFC 3339 times separated by a slash, like %s", absoluteExample)
	}
	from, err := parseInstant("start", fromText)
	if err != nil {
		return Window{}, err
	}
	to, err := parseInstant("end", toText)
	if err != nil {
		return Window{}, err
	}
	if !to.After(from) {
		return Window{}, fmt.Errorf("end %s is not after start %s", to.Format(time.RFC3339Nano), from.Format(time.RFC3339Nano))
	}
	return Window{absolute: true, from: from, to: to}, nil
}

func parseInstant(which, s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is not an RFC 3339 time like 2026-12-20T00:00:00Z or 2026-12-20T00:00:00+01:00: %w", which, s, err)
	}
	// String writes absolute windows in UTC, and RFC 3339 has four-digit
	// years: an offset must not carry a time past them.
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return time.Time{}, fmt.Errorf("%s %q is in the year %d in UTC; want a time in the years 0000 to 9999", which, s, y)
	}
	return t.UTC(), nil
}

func parseRecurring(s string) (Window, error) {
	s = strings.NewReplacer("–", "-", "—", "-").Replace(s) // en and em dashes, as in "22:00–04:00"
	words := strings.Fields(aroundPunct.ReplaceAllString(s, "$1"))
	w := Window{days: everyDay, end: 24 * time.Hour, loc: time.UTC}
	i := 0
	hasDays := false
	if !startsWithDigit(words[i]) {
		days, err := parseDays(words[i])
		if err != nil {
			return Window{}, err
		}
		w.days, hasDays = days, true
		i++
	}
	if i < len(words) && startsWithDigit(words[i]) {
		start, end, err := parseRange(words[i])
		if err != nil {
			return Window{}, err
		}
		w.start, w.end = start, end
		i++
	} else if !hasDays {
		return Window{}, errors.New("want days like Mon-Fri or a time range like 22:00-04:00")
	}
	if i < len(words) {
		loc, err := parseZone(words[i])
		if err != nil {
			return Window{}, err
		}
		w.loc = loc
		i++
	}
	if i < len(words) {
		return Window{}, fmt.Errorf("unexpected %q after the time zone", strings.Join(words[i:], " "))
	}
	return w, nil
}

func startsWithDigit(s string) bool { return s != "" && s[0] >= '0' && s[0] <= '9' }

func parseDays(s string) (weekdays, error) {
	var days weekdays
	for part := range strings.SplitSeq(s, ",") {
		if part == "" {
			return 0, fmt.Errorf("empty day in %q", s)
		}
		first, last, isRange := strings.Cut(part, "-")
		a, err := parseDay(first)
		if err != nil {
			return 0, err
		}
		b := a
		if isRange {
			if b, err = parseDay(last); err != nil {
				return 0, err
			}
		}
		for d := a; ; d = (d + 1) % 7 { // ranges may wrap past Sunday: Fri-Mon
			days |= 1 << d
			if d == b {
				break
			}
		}
	}
	return days, nil
}

func parseDay(s string) (time.Weekday, error) {
	for d := time.Sunday; d <= time.Saturday; d++ {
		if strings.EqualFold(s, dayNames[d]) || strings.EqualFold(s, d.String()) {
			return d, nil
		}
	}
	if strings.Contains(s, "/") || strings.EqualFold(s, "UTC") {
		return 0, fmt.Errorf("%q: the time zone comes last, after the time range", s)
	}
	return 0, fmt.Errorf("unknown weekday %q; want Mon, Tue, Wed, Thu, Fri, Sat or Sun", s)
}

func parseRange(s string) (start, end time.Duration, err error) {
	startText, endText, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not a time range like 22:00-04:00", s)
	}
	if start, err = parseClock(startText); err != nil {
		return 0, 0, err
	}
	if start == 24*time.Hour {
		return 0, 0, errors.New("24:00 is only an end time; a window starting at midnight starts at 00:00")
	}
	if end, err = parseClock(endText); err != nil {
		return 0, 0, err
	}
	if start == end {
		return 0, 0, fmt.Errorf("start and end are both %s; for a whole day write 00:00-24:00", clock(start))
	}
	if end == 0 {
		end = 24 * time.Hour // midnight at the end of the day: "22:00-00:00" is "22:00-24:00"
	}
	return start, end, nil
}

// parseClock reads a time of day, H:MM or HH:MM, 00:00 to 24:00.
func parseClock(s string) (time.Duration, error) {
	hText, mText, ok := strings.Cut(s, ":")
	if !ok || len(hText) < 1 || len(hText) > 2 || len(mText) != 2 || !allDigits(hText) || !allDigits(mText) {
		return 0, fmt.Errorf("%q is not a time of day like 09:30", s)
	}
	h, _ := strconv.Atoi(hText)
	m, _ := strconv.Atoi(mText)
	switch {
	case h > 24:
		return 0, fmt.Errorf("hour %d out of range (00-23, or 24 in the end time 24:00)", h)
	case m > 59:
		return 0, fmt.Errorf("minute %d out of range (00-59)", m)
	case h == 24 && m != 0:
		return 0, fmt.Errorf("%s is past the end of the day (24:00)", s)
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, nil
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func parseZone(name string) (*time.Location, error) {
	if startsWithDigit(name) {
		return nil, fmt.Errorf("%q: one time range per window; write each range as a window of its own", name)
	}
	if name == "Local" {
		return nil, errors.New(`time zone "Local" means different zones on different machines; name one, like Europe/Paris or UTC`)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q; want an IANA name like Europe/Paris, America/New_York or UTC", name)
	}
	return loc, nil
}
