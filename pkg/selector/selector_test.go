package selector

import (
	"errors"
	"math/rand/v2"
	"path"
	"reflect"
	"strings"
	"testing"
)

func TestParseCanonical(t *testing.T) {
	tests := []struct {
		in   string
		want string // canonical form
	}{
		{"", ""},
		{"   \t\n", ""},
		{"env=prod", "env=prod"},
		{"env==prod", "env=prod"},
		{" env = prod ", "env=prod"},
		{"env!=prod", "env!=prod"},
		{"env=", "env="},
		{"env==", "env="},
		{"env=,a", "a,env="},
		{"env!=", "env!="},
		{"env", "env"},
		{"!env", "!env"},
		{"! env", "!env"},
		{"cloud in (aws,azure)", "cloud in (aws,azure)"},
		{"cloud in ( azure , aws , aws )", "cloud in (aws,azure)"},
		{"cloud in(aws)", "cloud in (aws)"},
		{"cloud notin (gcp)", "cloud notin (gcp)"},
		{"region=eu-*", "region=eu-*"},
		{"region in (eu-*,*-1)", "region in (*-1,eu-*)"},
		{"tier=internal,env=prod,!legacy", "env=prod,!legacy,tier=internal"},
		{"env=prod,env=prod", "env=prod"},
		{"flotilla.io/team=core", "flotilla.io/team=core"},
		{"in=x", "in=x"},
		{"in", "in"},
		{"notin in (in)", "notin in (in)"},
		{"a.b_c-d=A.b_C-9", "a.b_c-d=A.b_C-9"},
		{strings.Repeat("k", 63) + "=" + strings.Repeat("v", 63), strings.Repeat("k", 63) + "=" + strings.Repeat("v", 63)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			sel, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got := sel.String(); got != tt.want {
				t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.want)
			}
			if sel.Empty() != (tt.want == "") {
				t.Errorf("Parse(%q).Empty() = %v", tt.in, sel.Empty())
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"env=prod,cloud in (aws", `selector "env=prod,cloud in (aws": at column 23: expected ',' or ')', found end of input`},
		{"env=prod,", `selector "env=prod,": at column 10: expected a key, found end of input`},
		{",env=prod", `selector ",env=prod": at column 1: expected a key, found ","`},
		{"env=prod,,a", `selector "env=prod,,a": at column 10: expected a key, found ","`},
		{"env prod", `selector "env prod": at column 5: expected '=', '==', '!=', 'in', 'notin', ',' or end of input after key "env", found "prod"`},
		{"env=prod x", `selector "env=prod x": at column 10: expected ',' or end of input, found "x"`},
		{"env===x", `selector "env===x": at column 6: expected a value, found "="`},
		{"env=(x)", `selector "env=(x)": at column 5: expected a value, found "("`},
		{"!", `selector "!": at column 2: expected a key, found end of input`},
		{"!env=x", `selector "!env=x": at column 5: expected ',' or end of input, found "="`},
		{"=x", `selector "=x": at column 1: expected a key, found "="`},
		{"cloud in aws", `selector "cloud in aws": at column 10: expected '(', found "aws"`},
		{"cloud in ()", `selector "cloud in ()": at column 11: expected a value, found ")"`},
		{"cloud in (aws,)", `selector "cloud in (aws,)": at column 15: expected a value, found ")"`},
		{"cloud in (aws azure)", `selector "cloud in (aws azure)": at column 15: expected ',' or ')', found "azure"`},
		{"cloud notin (a),", `selector "cloud notin (a),": at column 17: expected a key, found end of input`},
		{"en$v=x", `selector "en$v=x": at column 1: invalid key "en$v": name may hold only letters, digits, '.', '_' and '-'`},
		{"-env=x", `selector "-env=x": at column 1: invalid key "-env": name must start and end with a letter or digit`},
		{"a,Flotilla.io/team=x", `selector "a,Flotilla.io/team=x": at column 3: invalid key "Flotilla.io/team": prefix "Flotilla.io" is not a lowercase DNS subdomain (labels of a-z, 0-9 and '-', separated by '.')`},
		{"a/b/c", `selector "a/b/c": at column 1: invalid key "a/b/c": more than one '/'`},
		{"/b", `selector "/b": at column 1: invalid key "/b": empty prefix before '/'`},
		{"a/", `selector "a/": at column 1: invalid key "a/": empty name after '/'`},
		{strings.Repeat("k", 64), `selector "` + strings.Repeat("k", 64) + `": at column 1: invalid key "` + strings.Repeat("k", 64) + `": name longer than 63 characters`},
		{"env=pr$d", `selector "env=pr$d": at column 5: invalid value "pr$d": may hold only letters, digits, '.', '_', '-' and '*'`},
		{"env in (a,b?)", `selector "env in (a,b?)": at column 11: invalid value "b?": may hold only letters, digits, '.', '_', '-' and '*'`},
		{"k=" + strings.Repeat("v", 64), `selector "k=` + strings.Repeat("v", 64) + `": at column 3: invalid value "` + strings.Repeat("v", 64) + `": longer than 63 characters`},
		{"a,é=1", `selector "a,é=1": at column 3: invalid key "é": name may hold only letters, digits, '.', '_' and '-'`},
		{"env=(", `selector "env=(": at column 5: expected a value, found "("`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want error", tt.in)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse(%q) error\n got: %s\nwant: %s", tt.in, err, tt.want)
			}
			var se *SyntaxError
			if !errors.As(err, &se) || se.Selector != tt.in {
				t.Errorf("Parse(%q) error is not a *SyntaxError for the input: %#v", tt.in, err)
			}
		})
	}
}

func TestMatches(t *testing.T) {
	prodAWS := map[string]string{"env": "prod", "cloud": "aws", "region": "eu-west-1"}
	stagingGCP := map[string]string{"env": "staging", "cloud": "gcp", "region": "us-east-1", "legacy": "true"}
	emptyEnv := map[string]string{"env": ""}
	tests := []struct {
		sel    string
		labels map[string]string
		want   bool
	}{
		{"", nil, true},
		{"", prodAWS, true},
		{"env=prod", prodAWS, true},
		{"env==prod", prodAWS, true},
		{"env=prod", stagingGCP, false},
		{"env=prod", nil, false},
		{"env!=prod", prodAWS, false},
		{"env!=prod", stagingGCP, true},
		{"env!=prod", nil, true}, // absent satisfies != as in Kubernetes
		{"env=", emptyEnv, true},
		{"env=", nil, false},
		{"env=", prodAWS, false},
		{"env!=", emptyEnv, false},
		{"env!=", prodAWS, true},
		{"cloud in (aws,azure)", prodAWS, true},
		{"cloud in (aws,azure)", stagingGCP, false},
		{"cloud in (aws,azure)", nil, false},
		{"cloud notin (aws,azure)", prodAWS, false},
		{"cloud notin (aws,azure)", stagingGCP, true},
		{"cloud notin (aws,azure)", nil, true},
		{"legacy", stagingGCP, true},
		{"legacy", prodAWS, false},
		{"!legacy", stagingGCP, false},
		{"!legacy", prodAWS, true},
		{"env", emptyEnv, true},
		{"region=eu-*", prodAWS, true},
		{"region=eu-*", stagingGCP, false},
		{"region=*-1", prodAWS, true},
		{"region=*-1", stagingGCP, true},
		{"region=*", prodAWS, true},
		{"region=*", nil, false},
		{"region=e*w*1", prodAWS, true},
		{"region=eu*eu", prodAWS, false},
		{"region!=eu-*", prodAWS, false},
		{"region!=eu-*", stagingGCP, true},
		{"region in (us-*,ap-*)", stagingGCP, true},
		{"region notin (us-*,ap-*)", stagingGCP, false},
		{"region=eu-west-*", map[string]string{"region": "eu-west-1/a"}, true}, // '*' crosses '/'
		{"env=prod,cloud=aws,!legacy", prodAWS, true},
		{"env=prod,cloud=aws,legacy", prodAWS, false},
		{"env=Prod", prodAWS, false}, // values are case-sensitive
	}
	for _, tt := range tests {
		sel := MustParse(tt.sel)
		if got := sel.Matches(tt.labels); got != tt.want {
			t.Errorf("MustParse(%q).Matches(%v) = %v, want %v", tt.sel, tt.labels, got, tt.want)
		}
	}
}

func TestZeroSelectorMatchesEverything(t *testing.T) {
	var sel Selector
	if !sel.Empty() || sel.String() != "" || !sel.Matches(map[string]string{"a": "b"}) {
		t.Errorf("zero Selector: Empty=%v String=%q", sel.Empty(), sel.String())
	}
}

func TestMustParsePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustParse of an invalid selector did not panic")
		}
	}()
	MustParse("env in (")
}

// TestGlobAgreesWithPathMatch checks that glob is path.Match limited to '*'
// for the characters values may hold.
func TestGlobAgreesWithPathMatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(alphabet string) string {
		b := make([]byte, rng.IntN(7))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 20000 {
		pattern, s := word("ab*-"), word("ab-")
		want, err := path.Match(pattern, s)
		if err != nil {
			t.Fatalf("path.Match(%q): %v", pattern, err)
		}
		if got := glob(pattern, s); got != want {
			t.Fatalf("glob(%q, %q) = %v, path.Match says %v", pattern, s, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "env=prod", "env==prod,cloud in (aws,azure)", "!legacy,tier", "region=eu-*",
		"a notin (x,y*)", "k!=", "flotilla.io/team=core", "env=prod,cloud in (aws", "é=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sel, err := Parse(in)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Column < 1 || se.Column > len([]rune(in))+1 {
				t.Fatalf("Parse(%q): bad error %v", in, err)
			}
			return
		}
		canon := sel.String()
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but its String %q does not re-parse: %v", in, canon, err)
		}
		if again.String() != canon {
			t.Fatalf("canonical form not stable: %q -> %q -> %q", in, canon, again.String())
		}
		// Equivalent: the two agree on label sets built from the selector's own keys and values.
		for _, labels := range probeLabels(sel) {
			if sel.Matches(labels) != again.Matches(labels) {
				t.Fatalf("%q and %q disagree on %v", in, canon, labels)
			}
		}
	})
}

// probeLabels returns label sets that exercise each requirement of sel:
// every key absent, present with each of its values (with '*' replaced), and
// present with an unrelated value.
func probeLabels(sel Selector) []map[string]string {
	out := []map[string]string{nil}
	all := map[string]string{}
	for _, r := range sel.reqs {
		vals := append([]string{"zz-unrelated"}, r.values...)
		for _, v := range vals {
			v = strings.ReplaceAll(v, "*", "x")
			out = append(out, map[string]string{r.key: v})
			all[r.key] = v
		}
	}
	return append(out, all)
}

func TestRequiredNamesTheKeysAMatchMustHold(t *testing.T) {
	s := MustParse("env=prod,region in (eu-*,us-east-1),tier!=gold,!legacy,kind")
	got := map[string][]bool{}
	s.Required(func(key string, matches func(string) bool) bool {
		got[key] = []bool{matches("prod"), matches("eu-west-1"), matches("us-east-1"), matches("ap-south-1")}
		return true
	})
	want := map[string][]bool{
		"env":    {true, false, false, false},
		"region": {false, true, true, false},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Required: got %v, want %v (only = and in narrow)", got, want)
	}
	// Every labels set that matches holds one of the required values.
	for _, labels := range []map[string]string{{"env": "prod", "region": "eu-west-1", "kind": "kafka"}, {"env": "dev"}} {
		if !s.Matches(labels) {
			continue
		}
		s.Required(func(key string, matches func(string) bool) bool {
			if v, ok := labels[key]; !ok || !matches(v) {
				t.Errorf("%v matches %s but fails its requirement on %s", labels, s, key)
			}
			return true
		})
	}
}
