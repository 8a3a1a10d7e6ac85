package selector

import (
	"errors"
	"flag"
	"fmt"
	"github.com/flotilla-fleet/flotilla/internal/fuzzcorpus"
	"go/ast"
	goparser "go/parser"
	gotoken "go/token"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse (in selector_test.go) checks that what Parse accepts
// re-renders to a canonical form that parses the same. The targets below
// check the rest of what the package promises:
//
//   - FuzzSyntaxError: a selector Parse refuses fails with a *SyntaxError
//     whose message is exactly "selector %q: at column %d: %s", and whose
//     column is in the selector and points at where a token starts (or at
//     its end), not into spaces;
//   - FuzzMatches: Matches (of the selector and of its canonical form)
//     agrees with the requirements as the package documentation states
//     them, evaluated independently with regular expressions for '*';
//   - FuzzGlob: glob agrees with a regular expression in which '*' is ".*".
//
// The seed corpora, under testdata/fuzz/<target>/, hold the selectors of
// the package tests, and truncated variants of them. Rewrite them with
//
//	go test ./pkg/selector -run TestWriteFuzzCorpus -write-fuzz-corpus

var writeFuzzCorpus = flag.Bool("write-fuzz-corpus", false, "rewrite the seed corpora under testdata/fuzz")

func FuzzSyntaxError(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		sel, err := Parse(in)
		if err == nil {
			if !sel.Empty() && strings.TrimSpace(in) == "" {
				t.Fatalf("Parse(%q) = %q, want the empty selector", in, sel)
			}
			return
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Fatalf("Parse(%q): %v is not a *SyntaxError", in, err)
		}
		if se.Selector != in || se.Msg == "" {
			t.Fatalf("Parse(%q): %#v does not name the selector or the problem", in, se)
		}
		if want := fmt.Sprintf("selector %q: at column %d: %s", in, se.Column, se.Msg); err.Error() != want {
			t.Fatalf("Parse(%q): message %q, want %q", in, err, want)
		}
		runes := []rune(in)
		if se.Column < 1 || se.Column > len(runes)+1 {
			t.Fatalf("Parse(%q): column %d outside the selector (%d characters)", in, se.Column, len(runes))
		}
		if se.Column <= len(runes) && runes[se.Column-1] < utf8.RuneSelf && isSpace(byte(runes[se.Column-1])) {
			t.Fatalf("Parse(%q): column %d points at a space: %s", in, se.Column, se.Msg)
		}
		if se.Column == len(runes)+1 && !strings.Contains(se.Msg, "end of input") {
			t.Fatalf("Parse(%q): column %d is the end of input, but the message says %q", in, se.Column, se.Msg)
		}
	})
}

// FuzzMatches parses sel and checks Matches against the documented
// semantics on the label set that labels describes ("k=v,k2=v2", a
// key without '=' having the empty value), on that set with each key of
// the selector added or removed, and on sets built from the selector's
// own values.
func FuzzMatches(f *testing.F) {
	f.Fuzz(func(t *testing.T, sel, labels string) {
		s, err := Parse(sel)
		if err != nil {
			return
		}
		canon, err := Parse(s.String())
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q, which does not parse: %v", sel, s, err)
		}
		given := map[string]string{}
		for kv := range strings.SplitSeq(labels, ",") {
			if kv == "" {
				continue
			}
			k, v, _ := strings.Cut(kv, "=")
			given[k] = v
		}
		sets := []map[string]string{given}
		for _, r := range s.reqs {
			without := clone(given)
			delete(without, r.key)
			sets = append(sets, without)
			for _, v := range append([]string{"", "zz"}, r.values...) {
				with := clone(given)
				with[r.key] = strings.ReplaceAll(v, "*", "-x-")
				sets = append(sets, with)
				if strings.Contains(v, "*") {
					with = clone(given)
					with[r.key] = strings.ReplaceAll(v, "*", "")
					sets = append(sets, with)
				}
			}
		}
		for _, set := range sets {
			want := true
			for _, r := range s.reqs {
				if !reference(r, set) {
					want = false
				}
			}
			if got := s.Matches(set); got != want {
				t.Fatalf("Parse(%q).Matches(%v) = %v, want %v", sel, set, got, want)
			}
			if got := canon.Matches(set); got != want {
				t.Fatalf("Parse(%q) (canonical %q).Matches(%v) = %v, want %v", sel, canon, set, got, want)
			}
		}
	})
}

// reference evaluates one requirement as the package documentation
// states it.
func reference(r requirement, labels map[string]string) bool {
	v, present := labels[r.key]
	matchesOne := false
	for _, pattern := range r.values {
		if globRegexp(pattern).MatchString(v) {
			matchesOne = true
		}
	}
	switch r.op {
	case opEquals, opIn:
		return present && matchesOne
	case opNotEquals, opNotIn:
		return !present || !matchesOne
	case opExists:
		return present
	case opNotExists:
		return !present
	}
	panic(fmt.Sprintf("unknown operator %d", r.op))
}

// globRegexp is the pattern as a regular expression: '*' matches any run
// of characters (including '/' and newlines), everything else itself.
func globRegexp(pattern string) *regexp.Regexp {
	parts := strings.Split(pattern, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(`^(?s:` + strings.Join(parts, ".*") + `)$`)
}

func FuzzGlob(f *testing.F) {
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if !utf8.ValidString(pattern) || !utf8.ValidString(s) {
			return // regular expressions read runes; glob reads bytes
		}
		if got, want := glob(pattern, s), globRegexp(pattern).MatchString(s); got != want {
			t.Fatalf("glob(%q, %q) = %v, want %v", pattern, s, got, want)
		}
	})
}

func clone(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// testStrings returns the string literals of the package's tests: the
// selectors (and label values) they try.
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
				if s, err := strconv.Unquote(lit.Value); err == nil && !strings.HasPrefix(s, "selector ") && !strings.Contains(s, "%") {
					out = append(out, s)
				}
			}
			return true
		})
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeFuzzCorpus {
		t.Skip("run with -write-fuzz-corpus to rewrite the seed corpora")
	}
	strs := testStrings(t)
	long := strings.Repeat("k", 63) + "=" + strings.Repeat("v", 63)
	strs = append(strs, long, long+"v", "a/"+strings.Repeat("b", 64)+"=x", " \t\n", "a=b,\u00a0c", "k in (a,,b)")
	var selectors []string
	for _, s := range strs {
		selectors = append(selectors, s)
		if len(s) > 3 {
			selectors = append(selectors, s[:len(s)/2], s[:len(s)-1])
		}
	}
	slices.Sort(selectors)
	selectors = slices.Compact(selectors)
	for i, s := range selectors {
		fuzzcorpus.Write(t, "FuzzParse", fmt.Sprintf("seed-%03d", i), fmt.Sprintf("string(%q)", s))
		fuzzcorpus.Write(t, "FuzzSyntaxError", fmt.Sprintf("seed-%03d", i), fmt.Sprintf("string(%q)", s))
	}
	labels := []string{"", "env=prod,cloud=aws,region=eu-west-1/a", "env=,cloud=gcp,region=us-east-1,legacy=true"}
	n := 0
	for _, s := range strs {
		if _, err := Parse(s); err != nil {
			continue
		}
		for _, l := range labels {
			fuzzcorpus.Write(t, "FuzzMatches", fmt.Sprintf("seed-%03d", n), fmt.Sprintf("string(%q)", s), fmt.Sprintf("string(%q)", l))
			n++
		}
	}
	n = 0
	for _, p := range []string{"", "*", "**", "eu-*", "*-1", "e*w*1", "eu*eu", "a*b*a", "*a*", "us-*", "x*y*z*", "ab*ba"} {
		for _, s := range []string{"", "a", "eu-west-1", "eu-west-1/a", "us-east-1", "aba", "ab", "ba", "xyz", "abba", "ewe1"} {
			fuzzcorpus.Write(t, "FuzzGlob", fmt.Sprintf("seed-%03d", n), fmt.Sprintf("string(%q)", p), fmt.Sprintf("string(%q)", s))
			n++
		}
	}
}
