package window

import (
	"errors"
	"flag"
	"fmt"
	"github.com/flotilla-fleet/flotilla/internal/fuzzcorpus"
	"go/ast"
	goparser "go/parser"
	gotoken "go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The fuzz targets below feed Parse any text. Beyond never panicking,
// they check that:
//
//   - FuzzParse: text Parse refuses fails with a *ParseError naming the
//     text, whose message is `window "<text>": <what is wrong>`; text it
//     accepts has a canonical String that parses to an Equal window with
//     the same String (and MarshalText/UnmarshalText agree), which contains
//     the same instants;
//   - FuzzWindowEdges: around any instant, NextOpen and NextClose of a
//     schedule allowing (or denying) the window land on an instant where
//     it is open (closed) and was not a nanosecond before, as Contains
//     tells.
//
// The seed corpora, under testdata/fuzz/<target>/, hold the windows of
// the package tests, and truncated variants of them. Rewrite them with
//
//	go test ./pkg/window -run TestWriteFuzzCorpus -write-fuzz-corpus

var writeFuzzCorpus = flag.Bool("write-fuzz-corpus", false, "rewrite the seed corpora under testdata/fuzz")

func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string) {
		w, err := Parse(text)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Window != text || pe.Err == nil || pe.Err.Error() == "" {
				t.Fatalf("Parse(%q): %v is not a *ParseError naming the window and the problem", text, err)
			}
			if want := fmt.Sprintf("window %q: %s", text, pe.Err); err.Error() != want {
				t.Fatalf("Parse(%q): message %q, want %q", text, err, want)
			}
			if !w.Equal(Window{}) {
				t.Fatalf("Parse(%q) returned %q with the error", text, w)
			}
			return
		}
		canon := w.String()
		if canon == "" {
			t.Fatalf("Parse(%q) gave a window with an empty String", text)
		}
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q, which does not parse: %v", text, canon, err)
		}
		if !again.Equal(w) || again.String() != canon {
			t.Fatalf("Parse(%q) = %q, which parses to %q", text, canon, again)
		}
		var un Window
		if b, err := w.MarshalText(); err != nil || string(b) != canon || un.UnmarshalText(b) != nil || !un.Equal(w) {
			t.Fatalf("MarshalText of %q = %q, %v; UnmarshalText gives %q", text, b, err, un)
		}
		for _, at := range probeInstants(w) {
			if w.Contains(at) != again.Contains(at) {
				t.Fatalf("%q and its canonical form %q disagree on %s", text, canon, at)
			}
		}
	})
}

// probeInstants returns instants around w's edges: its start and end for
// an absolute window, its start and end on days of 2026 (in and out of
// daylight saving time) for a recurring one.
func probeInstants(w Window) []time.Time {
	if w.absolute {
		return []time.Time{w.from, w.from.Add(-1), w.to, w.to.Add(-1), w.from.Add(w.to.Sub(w.from) / 2)}
	}
	var out []time.Time
	for _, day := range []time.Time{time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC), time.Date(2026, 7, 4, 0, 0, 0, 0, time.UTC), time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC)} {
		for _, tod := range []time.Duration{w.start, w.end, w.start - 1, w.end - 1, w.start + 30*time.Minute} {
			wall := day.Add(tod)
			local := time.Date(wall.Year(), wall.Month(), wall.Day(), wall.Hour(), wall.Minute(), wall.Second(), wall.Nanosecond(), w.loc)
			out = append(out, local, local.Add(time.Hour), local.Add(-time.Hour))
		}
	}
	return out
}

// FuzzWindowEdges parses text and looks, from an instant offset ns after
// a reference (the window's start, for an absolute window; 2026-01-01
// otherwise), for the next opening and closing of the schedules that
// allow and deny the window.
func FuzzWindowEdges(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string, offset int64) {
		w, err := Parse(text)
		if err != nil {
			return
		}
		base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		if w.absolute {
			base = w.from
		}
		const span = int64(2 * 366 * 24 * time.Hour)
		at := base.Add(time.Duration(offset % span))
		for _, s := range []Schedule{{Allow: []Window{w}}, {Deny: []Window{w}}} {
			if got, want := s.Open(at), w.Contains(at) == (len(s.Allow) > 0); got != want {
				allow, deny := s.Strings()
				t.Fatalf("schedule allow %q deny %q: Open(%s) = %v, but Contains is %v", allow, deny, at, got, w.Contains(at))
			}
			for _, open := range []bool{true, false} {
				checkEdge(t, text, s, at, open)
			}
		}
	})
}

// checkEdge checks NextOpen (open) or NextClose (!open) of s at t: the
// answer is at or after t, s is open (closed) there, and, if it is after
// t, it was not a nanosecond before.
func checkEdge(t *testing.T, text string, s Schedule, at time.Time, open bool) {
	t.Helper()
	next, name := s.NextClose, "NextClose"
	if open {
		next, name = s.NextOpen, "NextOpen"
	}
	r, ok := next(at)
	if !ok {
		if s.Open(at) == open {
			t.Fatalf("%q: %s(%s) found nothing, but Open is %v there", text, name, at, open)
		}
		return
	}
	switch {
	case r.Before(at):
		t.Fatalf("%q: %s(%s) = %s, before it", text, name, at, r)
	case r.After(at.Add(Horizon)):
		t.Fatalf("%q: %s(%s) = %s, beyond the horizon", text, name, at, r)
	case s.Open(r) != open:
		t.Fatalf("%q: %s(%s) = %s, where Open is %v", text, name, at, r, !open)
	case r.After(at) && s.Open(r.Add(-1)) == open:
		t.Fatalf("%q: %s(%s) = %s, but Open is already %v a nanosecond before", text, name, at, r, open)
	case r.Location() != at.Location():
		t.Fatalf("%q: %s(%s) = %s, not in the instant's location", text, name, at, r)
	}
}

// testStrings returns the string literals of the package's tests that
// parse as windows, or look like they mean to.
func testStrings(t *testing.T) []string {
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := gotoken.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "fuzz_test.go") {
			continue
		}
		f, err := goparser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == gotoken.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil && !strings.HasPrefix(s, "window ") && !strings.ContainsAny(s, "%\n") && len(s) < 80 {
					out = append(out, s)
				}
			}
			return true
		})
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// windowRegressions are windows that the fuzz targets found to break
// Parse, and the error each must now give. They are in the FuzzParse
// corpus as regression-<name>.
var windowRegressions = []struct{ name, text, err string }{
	// An offset carried an absolute window's start or end out of the
	// four-digit years in UTC: String wrote "-0001-12-31T23:30:00Z" or
	// "10000-01-01T04:00:00Z", which Parse refuses.
	{"utc-year-before-0000", "0000-01-01T00:30:00+01:00/0000-01-02T00:00:00Z",
		`window "0000-01-01T00:30:00+01:00/0000-01-02T00:00:00Z": start "0000-01-01T00:30:00+01:00" is in the year -1 in UTC; want a time in the years 0000 to 9999`},
	{"utc-year-after-9999", "9999-12-31T22:00:00Z/9999-12-31T23:00:00-05:00",
		`window "9999-12-31T22:00:00Z/9999-12-31T23:00:00-05:00": end "9999-12-31T23:00:00-05:00" is in the year 10000 in UTC; want a time in the years 0000 to 9999`},
}

func TestParseRegressions(t *testing.T) {
	for _, tt := range windowRegressions {
		if w, err := Parse(tt.text); err == nil || err.Error() != tt.err {
			t.Errorf("Parse(%q) = %q, %v\nwant the error %s", tt.text, w, err, tt.err)
		}
	}
	// The extremes that stay in range still read back.
	for _, text := range []string{"0000-01-01T00:00:00Z/0000-01-01T00:00:01Z", "9999-12-31T23:59:59Z/9999-12-31T23:59:59.999999999Z", "0000-01-01T01:30:00+01:00/9999-12-31T18:00:00-05:00"} {
		if w, err := Parse(text); err != nil || !MustParse(w.String()).Equal(w) {
			t.Errorf("Parse(%q) = %q, %v", text, w, err)
		}
	}
}

func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeFuzzCorpus {
		t.Skip("run with -write-fuzz-corpus to rewrite the seed corpora")
	}
	strs := append(testStrings(t),
		"Mon-Fri 22:00-04:00 Europe/Paris", "Sun 02:00-03:00 Europe/Paris", "02:30-05:00 Europe/Paris",
		"Mon 09:00-10:00 Pacific/Kiritimati", "00:00-24:00 Australia/Lord_Howe", "23:59-00:01 America/Santiago",
		"0000-01-01T00:00:00Z/0000-01-02T00:00:00Z", "9999-12-31T00:00:00Z/9999-12-31T23:59:59.999999999Z",
		"2026-12-20T00:00:00,5Z/2026-12-21T00:00:00Z", "Mon,Mon-Mon", "fri-MON", "Saturday,SUNDAY 6:00-7:00",
		"10:00-11:00 Etc/GMT-14", "10:00-11:00 posixrules", "10:00-11:00 Europe//Paris", "\u00a0Mon")
	var texts []string
	for _, s := range strs {
		texts = append(texts, s)
		if len(s) > 3 {
			texts = append(texts, s[:len(s)/2])
		}
	}
	slices.Sort(texts)
	texts = slices.Compact(texts)
	n := 0
	for i, s := range texts {
		fuzzcorpus.Write(t, "FuzzParse", fmt.Sprintf("seed-%03d", i), fmt.Sprintf("string(%q)", s))
		if _, err := Parse(s); err != nil {
			continue
		}
		for _, offset := range []time.Duration{-1, 86*24*time.Hour + 90*time.Minute} {
			fuzzcorpus.Write(t, "FuzzWindowEdges", fmt.Sprintf("seed-%03d", n), fmt.Sprintf("string(%q)", s), fmt.Sprintf("int64(%d)", int64(offset)))
			n++
		}
	}
	for _, tt := range windowRegressions {
		fuzzcorpus.Write(t, "FuzzParse", "regression-"+tt.name, fmt.Sprintf("string(%q)", tt.text))
	}
}
