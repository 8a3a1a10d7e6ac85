package rollout

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"github.com/flotilla-fleet/flotilla/internal/fuzzcorpus"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// The fuzz targets below feed ParseYAML and ParsePolicyYAML any document.
// Beyond never panicking, each checks that:
//
//   - a document that does not parse fails with a message, and every
//     *FieldError in it names a line of the document, and a field unless
//     the problem is with the document as a whole;
//   - a document that parses formats (FormatYAML) to a document that
//     parses to the same spec, up to what the format writes alike (empty
//     lists and maps, an action with the default limit), and formats
//     again to the same bytes;
//   - Validate reports *FieldErrors naming fields, the same for the spec
//     and its formatted copy; a spec that validates compiles its windows
//     and plans over a small inventory as Plan promises (see checkPlan);
//   - parsing allocates memory in proportion to the document, however it
//     nests and whatever its aliases refer to.
//
// The seed corpora are under testdata/fuzz/<target>/: the examples/*.yaml
// specs and policies, the documents of the package tests, and truncated and
// corrupt variants of them. Rewrite them with
//
//	go test ./pkg/rollout -run TestWriteFuzzCorpus -write-fuzz-corpus

var writeFuzzCorpus = flag.Bool("write-fuzz-corpus", false, "rewrite the seed corpora under testdata/fuzz")

func FuzzParseYAML(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			s   Spec
			err error
		)
		if n, limit := allocated(func() { s, err = ParseYAML(data) }), allocLimit(len(data)); n > limit {
			t.Fatalf("parsing %d bytes allocated %d bytes, more than %d (err = %.300v)", len(data), n, limit, err)
		}
		if err != nil {
			if !reflect.DeepEqual(s, Spec{}) {
				t.Errorf("returned %+v with the error, want the zero Spec", s)
			}
			checkParseError(t, data, err)
			return
		}
		out, err := FormatYAML(s)
		if err != nil {
			t.Fatalf("parsed %+v, which does not format: %v", s, err)
		}
		s2, err := ParseYAML(out)
		if err != nil {
			t.Fatalf("parsed %+v, formatted as\n%s\nwhich does not parse: %v", s, out, err)
		}
		if want := normalSpec(s); !reflect.DeepEqual(s2, want) {
			t.Fatalf("formatted as\n%s\nwhich parses to\n%#v\nwant\n%#v", out, s2, want)
		}
		if out2, err := FormatYAML(s2); err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("formatting again gives another document (%v):\n%s\n%s", err, out, out2)
		}

		verr := s.Validate()
		checkValidateError(t, verr)
		if verr2 := s2.Validate(); fmt.Sprint(verr) != fmt.Sprint(verr2) {
			t.Fatalf("Validate differs after formatting:\n%v\n%v", verr, verr2)
		}
		if verr != nil {
			return
		}
		if _, err := s.CompileWindows(); err != nil {
			t.Fatalf("the spec validates, but CompileWindows fails: %v", err)
		}
		if s.Policy == "" || len(s.Phases) > 0 {
			inv := fleet(12)
			plan, err := s.Plan(inv)
			checkPlan(t, "fuzzed spec", s, inv, plan, err)
		}
	})
}

func FuzzParsePolicyYAML(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			p   Policy
			err error
		)
		if n, limit := allocated(func() { p, err = ParsePolicyYAML(data) }), allocLimit(len(data)); n > limit {
			t.Fatalf("parsing %d bytes allocated %d bytes, more than %d (err = %.300v)", len(data), n, limit, err)
		}
		if err != nil {
			if !reflect.DeepEqual(p, Policy{}) {
				t.Errorf("returned %+v with the error, want the zero Policy", p)
			}
			checkParseError(t, data, err)
			return
		}
		out, err := FormatPolicyYAML(p)
		if err != nil {
			t.Fatalf("parsed %+v, which does not format: %v", p, err)
		}
		p2, err := ParsePolicyYAML(out)
		if err != nil {
			t.Fatalf("parsed %+v, formatted as\n%s\nwhich does not parse: %v", p, out, err)
		}
		want := p
		want.Phases = normalPhases(p.Phases)
		if !reflect.DeepEqual(p2, want) {
			t.Fatalf("formatted as\n%s\nwhich parses to\n%#v\nwant\n%#v", out, p2, want)
		}
		if out2, err := FormatPolicyYAML(p2); err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("formatting again gives another document (%v):\n%s\n%s", err, out, out2)
		}
		verr := p.Validate()
		checkValidateError(t, verr)
		if verr2 := p2.Validate(); fmt.Sprint(verr) != fmt.Sprint(verr2) {
			t.Fatalf("Validate differs after formatting:\n%v\n%v", verr, verr2)
		}
	})
}

// normalSpec returns s as FormatYAML writes it and ParseYAML reads it back:
// empty lists and maps are absent, and a failure threshold with an action
// but no limit has the default limit, 1, written out.
func normalSpec(s Spec) Spec {
	s.Clusters = nilIfEmpty(s.Clusters)
	s.Operation.Config = nilIfEmptyMap(s.Operation.Config)
	s.Operation.Reset = nilIfEmpty(s.Operation.Reset)
	s.Operation.ExpectConfig = nilIfEmptyMap(s.Operation.ExpectConfig)
	s.FailureThreshold = normalThreshold(s.FailureThreshold)
	s.Phases = normalPhases(s.Phases)
	var windows []WindowRule
	for _, w := range s.Windows {
		windows = append(windows, WindowRule{Selector: w.Selector, Allow: nilIfEmpty(w.Allow), Deny: nilIfEmpty(w.Deny)})
	}
	s.Windows = windows
	return s
}

func normalPhases(phases []Phase) []Phase {
	var out []Phase
	for _, p := range phases {
		p.FailureThreshold = normalThreshold(p.FailureThreshold)
		out = append(out, p)
	}
	return out
}

func normalThreshold(t Threshold) Threshold {
	if t.IsZero() && t.Action != ThresholdPause {
		t.Count = 1
	}
	return t
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func nilIfEmptyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

// leafErrors unwraps errors.Join trees into their leaves.
func leafErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leafErrors(e)...)
		}
		return out
	}
	return []error{err}
}

var (
	yamlLine  = regexp.MustCompile(`\bline \d+\b`)
	yamlBreak = regexp.MustCompile("\r\n|[\r\n\u0085\u2028\u2029]")
)

// checkParseError checks that a parse error says what and where: each
// *FieldError names a field and a line of data; any other error (from
// the YAML parser, or about the document as a whole) names a line or says
// the document is empty.
func checkParseError(t *testing.T, data []byte, err error) {
	t.Helper()
	if err.Error() == "" {
		t.Fatal("an error with an empty message")
	}
	lines := len(yamlBreak.FindAll(data, -1)) + 1
	for _, e := range leafErrors(err) {
		var fe *FieldError
		switch {
		case errors.As(e, &fe):
			if fe.Err == nil || fe.Err.Error() == "" {
				t.Errorf("field error %q lacks a reason", e)
			}
			// A problem with the document as a whole names no field.
			if want := fmt.Sprintf("%s: line %d: ", fe.Field, fe.Line); fe.Field == "" && !strings.HasPrefix(e.Error(), want[2:]) || fe.Field != "" && !strings.HasPrefix(e.Error(), want) {
				t.Errorf("field error %q does not start with %q", e, want)
			}
			if fe.Line < 1 || fe.Line > lines {
				t.Errorf("field error %q: line %d, but the document has %d lines", e, fe.Line, lines)
			}
		case strings.HasPrefix(e.Error(), "empty "):
		case !yamlLine.MatchString(e.Error()):
			t.Errorf("error %q names no line", e)
		}
	}
}

// checkValidateError checks that Validate's problems are *FieldErrors
// naming a field, without a line (the spec did not come from YAML).
func checkValidateError(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, e := range leafErrors(err) {
		var fe *FieldError
		if !errors.As(e, &fe) || fe.Field == "" || fe.Line != 0 || fe.Err == nil || fe.Err.Error() == "" {
			t.Errorf("Validate: %q is not a *FieldError naming a field", e)
		}
	}
}

// allocLimit is the most memory parsing n bytes may allocate: the YAML
// parser's nodes and the decoder's errors, in proportion to the document.
func allocLimit(n int) uint64 { return 1<<20 + 2048*uint64(n) }

// allocated returns how many bytes fn allocates. Fuzz workers run one
// input at a time, so nothing else allocates much meanwhile.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// yamlSeeds returns the seed documents, by name: the examples, the
// documents of the package tests, and variants of them.
func yamlSeeds(t *testing.T, policies bool) map[string][]byte {
	seeds := map[string][]byte{}
	glob := "../../examples/*.yaml"
	if policies {
		glob = "../../examples/policies/*.yaml"
	}
	files, err := filepath.Glob(glob)
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples in %s: %v", glob, err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		seeds["example-"+strings.TrimSuffix(filepath.Base(file), ".yaml")] = data
	}
	if !policies {
		seeds["test-example"] = []byte(exampleYAML)
		for i, tt := range parseYAMLFormSeeds {
			seeds[fmt.Sprintf("form-%d", i)] = []byte(tt)
		}
		seeds["flow-style"] = []byte(`{name: f, operation: {type: config, config: {a: "1", b: ~}, reset: [c], expect: {version: "3.8", config: {a: "0"}}}, selector: "x in (a,b)", clusters: [c-1], failureThreshold: {limit: "10%", action: rollback}, windows: [{selector: "r=eu-*", allow: ["Mon-Fri 22:00-04:00 Europe/Paris"], deny: ["2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"]}], onConflict: reject, unhealthyTargets: skip, operationTimeout: 30m, retries: 2, retryBackoff: 1m, autoResume: 10m}`)
	} else {
		seeds["flow-style"] = []byte(`{name: p, description: d, phases: [{name: a, selector: "cloud=azure", waves: "exponential:2", approve: both, approvalTimeout: 1h, failureThreshold: {limit: 1, action: abort}}, {name: rest}]}`)
	}
	// YAML features and abuses: anchors and aliases, merge keys, tags,
	// documents, odd scalars.
	seeds["aliases"] = []byte("name: a\noperation: {type: restart}\nselector: &s env=prod\nstrategy:\n  phases:\n    - &p {name: one, selector: *s, waves: 2}\n    - *p\nwindows: [{allow: &w [\"Sat,Sun\"]}, {deny: *w}]\n")
	seeds["alias-fanout"] = []byte("x: &p {a: 1, b: 2, c: 3, d: 4}\nstrategy: {phases: [*p, *p, *p, *p, *p, *p, *p, *p]}\nphases: [*p, *p, *p, *p]\n")
	seeds["merge-key"] = []byte("name: m\noperation: &o {type: upgrade}\nstrategy: {phases: [{<<: {name: a}, waves: 1}]}\n")
	seeds["tags"] = []byte("name: !!str 3.10\noperation: {type: !!binary dXBncmFkZQ==, version: !custom 1}\nretries: !!int 2\n")
	seeds["two-documents"] = []byte("name: a\n---\nname: b\n")
	seeds["scalars"] = []byte("name: \"tab\\there \\u2028 \\x00\"\noperation: {type: upgrade, version: '3.10'}\nselector: |\n  env=prod\n  \nclusters: [\"~\", null, '', ' lead', 'trail ', \"a\\nb\"]\n")
	seeds["empty"] = []byte{}
	seeds["null"] = []byte("~\n")
	seeds["list"] = []byte("- name: a\n")
	seeds["deep"] = []byte("name: " + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "\n")
	seeds["bom-crlf"] = []byte("\ufeffname: a\r\noperation:\r\n  type: restart\r\n")
	var variants = map[string][]byte{}
	for name, data := range seeds {
		if len(data) < 8 {
			continue
		}
		variants[name+"-cut-half"] = data[:len(data)/2]
		variants[name+"-no-newlines"] = bytes.ReplaceAll(data, []byte("\n"), []byte(" "))
		variants[name+"-tabs"] = bytes.ReplaceAll(data, []byte("  "), []byte("\t"))
		variants[name+"-bad-utf8"] = append(bytes.Clone(data[:len(data)/3]), append([]byte{0xff, 0xfe}, data[len(data)/3:]...)...)
	}
	for name, data := range variants {
		seeds[name] = data
	}
	return seeds
}

// parseYAMLFormSeeds are documents with the other forms fields take.
var parseYAMLFormSeeds = []string{
	"name: c\noperation:\n  type: config\n  config:\n    log.retention.ms: 604800000\n    empty:\n  reset: [log.cleaner.threads]\nselector: kind=kafka\n",
	"name: w\noperation: {type: restart}\nclusters: [a]\nstrategy:\n  phases:\n    - name: p\n      waves: \"exponential:3\"\n      approve: before\n      approvalTimeout: 24h\n      failureThreshold: 50%\nfailureThreshold: {limit: 2, action: abort}\nonConflict: wait\nunhealthyTargets: hold\n",
	"name: t\noperation: {type: upgrade, version: 3.9.1}\nselector: env=prod\nfailureThreshold: {action: rollback, limit: 0}\nstrategy: {phases: [{name: a, failureThreshold: {limit: \"0%\", action: abort}}]}\n",
	"name: bad\noperation: {type: reboot, versoin: 1}\nstrategy: {phases: [{name: a, waves: 25 percent, bake: 10}, {name: a, maxInFlight: x}]}\nretries: 1.5\nfailureThreshold: [1]\nwindows: [{allow: [\"25:00-04:00\"]}]\nname: again\n",
}

// yamlRegressions are documents that the fuzz targets found (or that
// stand for what they found) to break ParseYAML, and how the error each
// must now give starts. They are in the FuzzParseYAML corpus as
// regression-<name>.
var yamlRegressions = []struct {
	name, doc, err string
}{
	// An alias to the mapping it is in made threshold recurse for ever,
	// its path growing: a stack overflow, after gigabytes of paths.
	{"alias-cycle", "name: x\nfailureThreshold: &t {limit: *t}\n", "line 2: alias *t refers to a node that holds it"},
	// A limit is a count or a percentage: nested limits made paths grow
	// with the nesting, quadratic memory.
	{"nested-limit", "failureThreshold: {limit: {limit: {limit: 2}}}\n", `failureThreshold.limit: line 1: expected a count or a percentage like "10%", found a mapping`},
	// Aliases of a large node made the decoder walk it, and report its
	// problems, once for each: 3 KB took 44 MB, 300 KB would take hours.
	{"alias-fanout", "x: &p {" + strings.Repeat("k: 1, ", 300) + "}\nstrategy: {phases: [" + strings.Repeat("*p, ", 300) + "]}\n", "line 2: too many aliases: they expand the document past"},
	// The YAML parser names no line for problems on the first line, for
	// bytes it cannot read, and for unknown anchors.
	{"first-line", "name: a b: c", "yaml: line 1: mapping values are not allowed in this context"},
	{"bad-utf8", "name: a\noperation:\n  type: \xff\n", "yaml: line 3: invalid leading UTF-8 octet"},
	{"control-character", "name: a\r\nselector: \x01\n", "yaml: line 2: control characters are not allowed"},
	{"unknown-anchor", "name: a\nselector: *nope\n", "yaml: line 2: unknown anchor 'nope' referenced"},
	// A key that is not a field name was reported with an empty field:
	// ": line 1: ...". Odd field names are quoted.
	{"key-not-a-field-name", "[0]: 1\n", "line 1: expected a field name, found a list"},
	{"odd-field-name", "\"a b\": 1\n", `"a b": line 1: unknown field`},
	{"empty-field-name", "&a : 0\n", `"": line 1: unknown field`},
}

func TestParseYAMLRegressions(t *testing.T) {
	for _, tt := range yamlRegressions {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			n := allocated(func() { _, err = ParseYAML([]byte(tt.doc)) })
			if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
				t.Errorf("ParseYAML: %.300v\nwant an error starting %q", err, tt.err)
			}
			if limit := allocLimit(len(tt.doc)); n > limit {
				t.Errorf("allocated %d bytes for %d, more than %d", n, len(tt.doc), limit)
			}
		})
	}
}

func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeFuzzCorpus {
		t.Skip("run with -write-fuzz-corpus to rewrite the seed corpora")
	}
	for target, policies := range map[string]bool{"FuzzParseYAML": false, "FuzzParsePolicyYAML": true} {
		for name, data := range yamlSeeds(t, policies) {
			fuzzcorpus.Write(t, target, "seed-"+name, fmt.Sprintf("[]byte(%q)", data))
		}
	}
	for _, tt := range yamlRegressions {
		fuzzcorpus.Write(t, "FuzzParseYAML", "regression-"+tt.name, fmt.Sprintf("[]byte(%q)", tt.doc))
	}
}
