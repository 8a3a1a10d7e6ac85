package main

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

const (
	azureFirst    = "../../examples/policies/azure-first.yaml"
	internalFirst = "../../examples/policies/internal-first.yaml"
)

// readPolicyFile parses a policy file as policy apply does.
func readPolicyFile(t *testing.T, file string) rollout.Policy {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := rollout.ParsePolicyYAML(data)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return p
}

// TestPolicyCommands applies, lists, shows, replaces and removes
// deployment policies, and checks what reaches the policies topic.
func TestPolicyCommands(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 5})
	now = f.Clock.Now
	t.Cleanup(func() { now = time.Now })
	t.Setenv("FLOTILLA_PRINCIPAL", "alice")

	if out, err := run(t, f, "policy", "list"); err != nil || !strings.Contains(out, "no deployment policies") {
		t.Fatalf("policy list with none: %v\n%s", err, out)
	}
	out, err := run(t, f, "policy", "apply", "-f", azureFirst)
	if want := "policy azure-first applied: azure-westeurope (cloud=azure,region=westeurope), azure-eastus (cloud=azure,region=eastus), rest (the rest)"; err != nil || !strings.Contains(out, want) {
		t.Fatalf("policy apply: %v\n%s\nwant %q", err, out, want)
	}
	if out, err := run(t, f, "policy", "apply", "-f", internalFirst); err != nil {
		t.Fatalf("policy apply: %v\n%s", err, out)
	}

	// The record: keyed by name, with who applied it and when.
	recs := f.ReadAll(f.Backbone.Names().Policies)
	if len(recs) != 2 {
		t.Fatalf("%d records on the policies topic, want 2", len(recs))
	}
	for _, r := range recs {
		rec, err := records.DecodePolicyRecord(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		env := rec.Envelope
		if string(r.Key) != rec.Policy.Name || env.Principal != "alice" || !env.Time.Equal(f.Clock.Now()) || uuid.Validate(env.ID) != nil {
			t.Errorf("record keyed %q: policy %q, envelope %+v; want keyed by name, by alice, at %v, with a UUID", r.Key, rec.Policy.Name, env, f.Clock.Now())
		}
	}

	// The audit trail says who applied what.
	if out, err := run(t, f, "audit"); err != nil || !regexp.MustCompile(`alice\s+policy\s+applied deployment policy azure-first: phases azure-westeurope, azure-eastus, rest`).MatchString(out) {
		t.Fatalf("audit: %v\n%s", err, out)
	}

	out, err = run(t, f, "policy", "list")
	if err != nil {
		t.Fatalf("policy list: %v\n%s", err, out)
	}
	for _, want := range []string{
		"azure-first", "Azure first, West Europe before East US, then everything else",
		"internal-first", "internal (tier=internal), non-prod (env in (dev,staging)), prod-standard (env=prod,tier=standard), prod-critical (the rest)",
		"2 policies",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("policy list does not say %q:\n%s", want, out)
		}
	}
	out, err = run(t, f, "policy", "list", "-o", "json")
	var listed []struct {
		Name   string           `json:"name"`
		Phases []map[string]any `json:"phases"`
	}
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil {
		t.Fatalf("policy list -o json: %v\n%s", err, out)
	}
	if len(listed) != 2 || listed[0].Name != "azure-first" || len(listed[0].Phases) != 3 || listed[0].Phases[0]["bake"] != "10m" {
		t.Errorf("policy list -o json = %+v, want azure-first (3 phases, the first baking 10m) and internal-first", listed)
	}

	// show prints a policy file that gives the same policy back.
	out, err = run(t, f, "policy", "show", "internal-first")
	if err != nil {
		t.Fatalf("policy show: %v\n%s", err, out)
	}
	if !strings.HasPrefix(out, "# applied by alice at 2026-11-22T12:00:00Z\n") {
		t.Errorf("policy show does not say who applied it and when:\n%s", out)
	}
	shown, err := rollout.ParsePolicyYAML([]byte(out))
	if want := readPolicyFile(t, internalFirst); err != nil || !reflect.DeepEqual(shown, want) {
		t.Errorf("policy show gives back %+v (%v), want %+v:\n%s", shown, err, want, out)
	}

	// apply replaces a policy of the same name.
	changed := writeSpec(t, "name: azure-first\ndescription: only Azure\nphases:\n  - name: azure\n    selector: cloud=azure\n")
	if out, err := run(t, f, "policy", "apply", "-f", changed); err != nil {
		t.Fatalf("policy apply: %v\n%s", err, out)
	}
	if out, err := run(t, f, "policy", "show", "azure-first"); err != nil || !strings.Contains(out, "description: only Azure") || strings.Contains(out, "westeurope") {
		t.Errorf("policy show after replacing azure-first: %v\n%s", err, out)
	}

	if out, err := run(t, f, "policy", "remove", "internal-first"); err != nil || !strings.Contains(out, "policy internal-first removed") {
		t.Fatalf("policy remove: %v\n%s", err, out)
	}
	if recs := f.ReadAll(f.Backbone.Names().Policies); recs[len(recs)-1].Value != nil || string(recs[len(recs)-1].Key) != "internal-first" {
		t.Errorf("policy remove did not write a tombstone keyed internal-first")
	}
	if out, err := run(t, f, "policy", "list"); err != nil || strings.Contains(out, "internal-first") || !strings.Contains(out, "1 policy") {
		t.Errorf("policy list after removing internal-first: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"policy", "show", "internal-first"}, {"policy", "remove", "internal-first"}} {
		_, err := run(t, f, args...)
		if want := `no deployment policy "internal-first" (have: azure-first)`; err == nil || err.Error() != want {
			t.Errorf("%v: error %v, want %q", args, err, want)
		}
	}

	// A record no client of ours wrote is ignored, as the planner ignores it.
	f.Produce(&kgo.Record{Topic: f.Backbone.Names().Policies, Key: []byte("junk"), Value: []byte("not a policy")})
	out, err = run(t, f, "policy", "list")
	if err != nil || !strings.Contains(out, `(key "junk") is ignored by the planner: decode`) || !strings.Contains(out, "1 policy") {
		t.Errorf("policy list with a bad record: %v\n%s", err, out)
	}
}

// TestPolicyApplyRejectsInvalidFiles checks that a policy file with
// problems is refused with errors naming the file, the field and, where
// the parser knows it, the line, and that nothing is written.
func TestPolicyApplyRejectsInvalidFiles(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 5})
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"unknown field", "name: p\nphase:\n  - name: a\n", []string{"phase: line 2: unknown field; want name, description, phases or driftCorrection"}},
		{"bad waves", "name: p\nphases:\n  - name: a\n    waves: 25 percent\n",
			[]string{`phases[0].waves: line 4: "25 percent" is not a count, a percentage like "25%" or "exponential"`}},
		{"bad name", "name: azure first\nphases:\n  - name: a\n", []string{`name: "azure first": a policy name has no spaces or '/'`}},
		{"no phases", "name: p\ndescription: nothing\n", []string{"phases: a policy needs at least one phase"}},
		{"phase problems", "name: p\nphases:\n  - name: a\n    selector: \"cloud in (aws\"\n  - name: a\n    waves: \"150%\"\n",
			[]string{"phases[0].selector", `phases[1].name: duplicate phase name "a"`, "phases[1].waves: a percentage must be in 1..100, got 150"}},
		{"a rollout spec", "name: r\noperation: {type: restart}\nselector: kind=kafka\n", []string{"operation: line 2: unknown field", "selector: line 3: unknown field"}},
		{"bad YAML", "name: p\nphases: [\n", []string{"yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeSpec(t, tc.text)
			out, err := run(t, f, "policy", "apply", "-f", file)
			if err == nil {
				t.Fatalf("policy apply succeeded:\n%s", out)
			}
			for _, want := range append(tc.want, file+":\n") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
	if recs := f.ReadAll(f.Backbone.Names().Policies); len(recs) != 0 {
		t.Errorf("invalid policies wrote %d records", len(recs))
	}
}
