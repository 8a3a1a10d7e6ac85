package rollout

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

const exampleYAML = `# A rollout as people write it.
name: kafka-3.9.1
operation:
  type: upgrade
  version: 3.9.1
selector: "env=prod,kind=kafka"
clusters: [c-1, c-2]
strategy:
  phases:
    - name: internal
      selector: tier=internal
      waves: 5
      maxInFlight: 3
      bake: 10m
    - name: azure
      selector: cloud=azure
      waves: "25%"
      bake: 1h30m
    - name: canary
      waves: exponential
    - name: rest
      waves: exponential:2
failureThreshold: 10%
`

var exampleSpec = Spec{
	Name:      "kafka-3.9.1",
	Operation: Operation{Kind: Upgrade, Version: "3.9.1"},
	Selector:  "env=prod,kind=kafka",
	Clusters:  []string{"c-1", "c-2"},
	Phases: []Phase{
		{Name: "internal", Selector: "tier=internal", Waves: Waves{WaveCount, 5}, MaxInFlight: 3, Bake: 10 * time.Minute},
		{Name: "azure", Selector: "cloud=azure", Waves: Waves{WavePercent, 25}, Bake: 90 * time.Minute},
		{Name: "canary", Waves: Waves{WaveExponential, 1}},
		{Name: "rest", Waves: Waves{WaveExponential, 2}},
	},
	FailureThreshold: Threshold{Percent: 10},
}

func TestParseYAML(t *testing.T) {
	got, err := ParseYAML([]byte(exampleYAML))
	if err != nil {
		t.Fatalf("ParseYAML: %v", err)
	}
	if !reflect.DeepEqual(got, exampleSpec) {
		t.Errorf("ParseYAML:\n got %+v\nwant %+v", got, exampleSpec)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate of the example: %v", err)
	}
}

func TestParseYAMLForms(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want Spec
	}{
		{
			name: "config with scalars read as written",
			yaml: "name: retention\noperation:\n  type: config\n  config:\n    log.retention.ms: 604800000\n    auto.create.topics.enable: false\n    ratio: 0.50\nclusters:\n  - c-1\n",
			want: Spec{
				Name: "retention",
				Operation: Operation{Kind: Config, Config: map[string]string{
					"log.retention.ms": "604800000", "auto.create.topics.enable": "false", "ratio": "0.50",
				}},
				Clusters: []string{"c-1"},
			},
		},
		{
			name: "a version that looks like a float",
			yaml: "name: up\noperation: {type: upgrade, version: 3.10}\nselector: env\n",
			want: Spec{Name: "up", Operation: Operation{Kind: Upgrade, Version: "3.10"}, Selector: "env"},
		},
		{
			name: "null fields are absent",
			yaml: "name: r\noperation:\n  type: restart\nselector: env\nstrategy:\nfailureThreshold:\n",
			want: Spec{Name: "r", Operation: Operation{Kind: Restart}, Selector: "env"},
		},
		{
			name: "threshold as a count, waves quoted",
			yaml: "name: r\noperation: {type: restart}\nselector: env\nstrategy:\n  phases:\n    - name: a\n      waves: \"3\"\nfailureThreshold: 2\n",
			want: Spec{
				Name: "r", Operation: Operation{Kind: Restart}, Selector: "env",
				Phases:           []Phase{{Name: "a", Waves: Waves{WaveCount, 3}}},
				FailureThreshold: Threshold{Count: 2},
			},
		},
		{
			name: "anchors and aliases",
			yaml: "name: r\noperation: {type: restart}\nselector: &s env=prod\nstrategy:\n  phases:\n    - name: a\n      selector: *s\n",
			want: Spec{
				Name: "r", Operation: Operation{Kind: Restart}, Selector: "env=prod",
				Phases: []Phase{{Name: "a", Selector: "env=prod"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseYAML([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("ParseYAML: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseYAML:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseYAMLErrors(t *testing.T) {
	const head = "name: r\noperation:\n  type: restart\nselector: env\n" // lines 1-4
	tests := []struct {
		name string
		yaml string
		want []string // every line of the error, in order
	}{
		{
			name: "unknown top-level field",
			yaml: head + "selectors: env=prod\n",
			want: []string{`selectors: line 5: unknown field; want name, operation, selector, clusters, policy, strategy, failureThreshold, windows, onConflict, unhealthyTargets, operationTimeout, retries, retryBackoff or autoResume`},
		},
		{
			name: "unknown phase field, wrong case",
			yaml: head + "strategy:\n  phases:\n    - name: a\n      maxinflight: 2\n",
			want: []string{`strategy.phases[0].maxinflight: line 8: unknown field (did you mean "maxInFlight"?); want name, selector, waves, maxInFlight, bake, approve, approvalTimeout or failureThreshold`},
		},
		{
			name: "bad waves text",
			yaml: head + "strategy:\n  phases:\n    - name: a\n    - name: b\n      waves: 25 percent\n",
			want: []string{`strategy.phases[1].waves: line 9: "25 percent" is not a count, a percentage like "25%" or "exponential"`},
		},
		{
			name: "bad exponential start",
			yaml: head + "strategy:\n  phases:\n    - name: a\n      waves: exponential:0\n",
			want: []string{`strategy.phases[0].waves: line 8: "exponential:0": the exponential start must be an integer of at least 1`},
		},
		{
			name: "waves as a list",
			yaml: head + "strategy:\n  phases:\n    - name: a\n      waves: [1, 2]\n",
			want: []string{`strategy.phases[0].waves: line 8: expected a count, a percentage like "25%" or "exponential", found a list`},
		},
		{
			name: "bake without a unit",
			yaml: head + "strategy:\n  phases:\n    - name: a\n      bake: 10\n",
			want: []string{`strategy.phases[0].bake: line 8: "10" is not a duration like "10m" or "1h30m"`},
		},
		{
			name: "maxInFlight not an integer",
			yaml: head + "strategy:\n  phases:\n    - name: a\n      maxInFlight: two\n",
			want: []string{`strategy.phases[0].maxInFlight: line 8: expected an integer, found "two"`},
		},
		{
			name: "bad threshold",
			yaml: head + "failureThreshold: ten percent\n",
			want: []string{`failureThreshold: line 5: "ten percent" is not a count, a percentage like "10%", or {limit, action}`},
		},
		{
			name: "name as a list",
			yaml: "name: [a, b]\noperation: {type: restart}\nselector: env\n",
			want: []string{`name: line 1: expected a string, found a list`},
		},
		{
			name: "clusters as a string",
			yaml: head + "clusters: c-1\n",
			want: []string{`clusters: line 5: expected a list of cluster IDs, found "c-1"`},
		},
		{
			name: "phases as a mapping",
			yaml: head + "strategy:\n  phases:\n    a: 1\n",
			want: []string{`strategy.phases: line 7: expected a list of phases, found a mapping`},
		},
		{
			name: "config as a list",
			yaml: "name: r\noperation:\n  type: config\n  config: [a]\nselector: env\n",
			want: []string{`operation.config: line 4: expected a mapping of keys to values, found a list`},
		},
		{
			name: "config value as a mapping",
			yaml: "name: r\noperation:\n  type: config\n  config:\n    a: {b: c}\nselector: env\n",
			want: []string{`operation.config.a: line 5: expected a string, found a mapping`},
		},
		{
			name: "field given twice",
			yaml: head + "name: again\n",
			want: []string{`name: line 5: given twice (first on line 1)`},
		},
		{
			name: "every problem is reported",
			yaml: "nam: r\noperation:\n  kind: restart\nselector: env\nstrategy:\n  phases:\n    - name: a\n      waves: lots\n      bake: soon\n",
			want: []string{
				`nam: line 1: unknown field; want name, operation, selector, clusters, policy, strategy, failureThreshold, windows, onConflict, unhealthyTargets, operationTimeout, retries, retryBackoff or autoResume`,
				`operation.kind: line 3: unknown field; want type, version, config, reset or expect`,
				`strategy.phases[0].waves: line 8: "lots" is not a count, a percentage like "25%" or "exponential"`,
				`strategy.phases[0].bake: line 9: "soon" is not a duration like "10m" or "1h30m"`,
			},
		},
		{name: "empty", yaml: "", want: []string{"empty rollout spec"}},
		{name: "only comments", yaml: "# nothing\n", want: []string{"empty rollout spec"}},
		{name: "null document", yaml: "~\n", want: []string{"empty rollout spec"}},
		{name: "not a mapping", yaml: "- a\n", want: []string{`line 1: a rollout spec is a mapping of fields (name, operation, ...), found a list`}},
		{name: "two documents", yaml: head + "---\n" + head, want: []string{`line 5: a second YAML document; want exactly one rollout spec`}},
		{name: "malformed", yaml: "name: [a\n", want: []string{"yaml: line 1: did not find expected ',' or ']'"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseYAML([]byte(tt.yaml))
			if err == nil {
				t.Fatal("ParseYAML succeeded, want an error")
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseYAML error:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestParseYAMLFieldErrors(t *testing.T) {
	_, err := ParseYAML([]byte("name: r\noperation: {type: restart}\nselector: env\nbogus: 1\n"))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "bogus" || fe.Line != 4 {
		t.Fatalf("want a *FieldError for bogus on line 4, got %#v", err)
	}
}

func TestFormatYAML(t *testing.T) {
	got, err := FormatYAML(exampleSpec)
	if err != nil {
		t.Fatalf("FormatYAML: %v", err)
	}
	const want = `name: kafka-3.9.1
operation:
  type: upgrade
  version: 3.9.1
selector: env=prod,kind=kafka
clusters: [c-1, c-2]
strategy:
  phases:
    - name: internal
      selector: tier=internal
      waves: 5
      maxInFlight: 3
      bake: 10m
    - name: azure
      selector: cloud=azure
      waves: 25%
      bake: 1h30m
    - name: canary
      waves: exponential
    - name: rest
      waves: exponential:2
failureThreshold: 10%
`
	if string(got) != want {
		t.Errorf("FormatYAML:\n%s\nwant:\n%s", got, want)
	}
	back, err := ParseYAML(got)
	if err != nil {
		t.Fatalf("ParseYAML(FormatYAML): %v", err)
	}
	if !reflect.DeepEqual(back, exampleSpec) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, exampleSpec)
	}
}

func TestFormatYAMLErrors(t *testing.T) {
	base := Spec{Name: "r", Operation: Operation{Kind: Restart}, Selector: "env"}
	both := base
	both.FailureThreshold = Threshold{Count: 1, Percent: 5}
	badMode := base
	badMode.Phases = []Phase{{Name: "a"}, {Name: "b", Waves: Waves{Mode: "linear", Value: 2}}}
	for _, tt := range []struct {
		spec Spec
		want string
	}{
		{both, "format rollout r: failureThreshold: both a count (1) and a percentage (5%) are set"},
		{badMode, `format rollout r: strategy.phases[1].waves: unknown wave mode "linear": want count, percent or exponential`},
	} {
		if _, err := FormatYAML(tt.spec); err == nil || err.Error() != tt.want {
			t.Errorf("FormatYAML error = %v, want %s", err, tt.want)
		}
	}
}

// TestYAMLRoundTrip formats random specs, including ones Validate rejects,
// and parses them back.
func TestYAMLRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	awkward := []string{"", "3.10", "true", "null", "~", "a: b", "- x", "#c", "'q'", `"dq"`, "x,y in (a)", " lead", "ünï", "10%", "*"}
	str := func() string {
		if rng.IntN(3) == 0 {
			return awkward[rng.IntN(len(awkward))]
		}
		return fmt.Sprintf("s-%d", rng.IntN(100))
	}
	for i := range 500 {
		s := Spec{
			Name:      str(),
			Operation: Operation{Kind: []OperationKind{Upgrade, Restart, Config, "", "reboot"}[rng.IntN(5)], Version: str()},
			Selector:  str(),
		}
		if rng.IntN(2) == 0 {
			s.Operation.Config = map[string]string{str(): str(), "k": str()}
		}
		for range rng.IntN(3) {
			s.Operation.Reset = append(s.Operation.Reset, str())
		}
		if rng.IntN(3) == 0 {
			s.Operation.ExpectVersion = str()
		}
		if rng.IntN(3) == 0 {
			s.Operation.ExpectConfig = map[string]string{str(): str()}
		}
		if rng.IntN(3) == 0 {
			s.Policy = str()
		}
		actions := []ThresholdAction{ThresholdPause, ThresholdAbort, ThresholdRollback, "explode"}
		threshold := func() Threshold {
			var t Threshold
			switch rng.IntN(3) {
			case 1:
				t.Count = rng.IntN(5) - 1
			case 2:
				t.Percent = rng.IntN(110)
			}
			if !t.IsZero() { // an action alone is written with the default limit, 1
				t.Action = actions[rng.IntN(len(actions))]
			}
			return t
		}
		for range rng.IntN(4) {
			s.Clusters = append(s.Clusters, str())
		}
		for range rng.IntN(4) {
			waves := []Waves{{}, {WaveCount, rng.IntN(10) - 1}, {WavePercent, rng.IntN(120)}, {WaveExponential, 1 + rng.IntN(5)}}[rng.IntN(4)]
			s.Phases = append(s.Phases, Phase{
				Name: str(), Selector: str(), Waves: waves,
				MaxInFlight:      rng.IntN(5) - 1,
				Bake:             time.Duration(rng.IntN(3)) * []time.Duration{time.Second, time.Minute, time.Hour, 1500 * time.Millisecond}[rng.IntN(4)],
				FailureThreshold: threshold(),
			})
		}
		s.FailureThreshold = threshold()
		data, err := FormatYAML(s)
		if err != nil {
			t.Fatalf("spec %d: FormatYAML(%+v): %v", i, s, err)
		}
		back, err := ParseYAML(data)
		if err != nil {
			t.Fatalf("spec %d: ParseYAML of\n%s: %v", i, data, err)
		}
		if !reflect.DeepEqual(back, s) {
			t.Fatalf("spec %d: round trip of\n%s\n got %+v\nwant %+v", i, data, back, s)
		}

		policy := Policy{Name: s.Name, Description: str(), Phases: s.Phases}
		if rng.IntN(2) == 0 {
			policy.DriftCorrection = DriftCorrection{Enabled: rng.IntN(2) == 0, Selector: str(), MaxPerHour: rng.IntN(10)}
		}
		if data, err = FormatPolicyYAML(policy); err != nil {
			t.Fatalf("policy %d: FormatPolicyYAML(%+v): %v", i, policy, err)
		}
		if back, err := ParsePolicyYAML(data); err != nil || !reflect.DeepEqual(back, policy) {
			t.Fatalf("policy %d: round trip of\n%s: %v\n got %+v\nwant %+v", i, data, err, back, policy)
		}
	}
}

func TestParseYAMLWindows(t *testing.T) {
	spec, err := ParseYAML([]byte(`name: w
operation: {type: restart}
selector: kind=kafka
windows:
  - allow: ["Mon-Fri 09:00-17:00 Europe/Paris"]
  - selector: region=eu-*
    allow: ["22:00-04:00 Europe/Paris"]
    deny: ["2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []WindowRule{
		{Allow: []string{"Mon-Fri 09:00-17:00 Europe/Paris"}},
		{Selector: "region=eu-*", Allow: []string{"22:00-04:00 Europe/Paris"}, Deny: []string{"2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"}},
	}
	if !reflect.DeepEqual(spec.Windows, want) {
		t.Fatalf("windows = %+v, want %+v", spec.Windows, want)
	}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	out, err := FormatYAML(spec)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseYAML(out)
	if err != nil || !reflect.DeepEqual(back.Windows, want) {
		t.Fatalf("round trip: %v, %+v", err, back.Windows)
	}

	_, err = ParseYAML([]byte("name: w\noperation: {type: restart}\nselector: kind=kafka\nwindows:\n  - allow: [\"25:00-04:00 UTC\"]\n"))
	if err == nil || !strings.Contains(err.Error(), "windows[0].allow[0]: line 5:") || !strings.Contains(err.Error(), "hour 25") {
		t.Fatalf("bad window: %v, want the field, its line and the reason", err)
	}
}

func TestWindowsFor(t *testing.T) {
	spec := Spec{Windows: []WindowRule{
		{Deny: []string{"2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"}},
		{Selector: "region=eu-*", Allow: []string{"22:00-04:00 UTC"}},
	}}
	w, err := spec.CompileWindows()
	if err != nil {
		t.Fatal(err)
	}
	noon := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	if !w.For(map[string]string{"region": "us-east-1"}).Open(noon) {
		t.Error("a US cluster is held at noon; only the freeze applies to it")
	}
	eu := w.For(map[string]string{"region": "eu-west-1"})
	if eu.Open(noon) {
		t.Error("an EU cluster may start at noon, outside 22:00-04:00")
	}
	if next, ok := eu.NextOpen(noon); !ok || !next.Equal(time.Date(2026, 11, 23, 22, 0, 0, 0, time.UTC)) {
		t.Errorf("EU next open = %v, want 22:00 the same day", next)
	}
	if w.For(nil).Open(time.Date(2026, 12, 25, 12, 0, 0, 0, time.UTC)) {
		t.Error("a cluster may start during the freeze")
	}
}

func TestParseYAMLApprovalGates(t *testing.T) {
	spec, err := ParseYAML([]byte("name: g\noperation: {type: restart}\nselector: kind=kafka\nstrategy:\n  phases:\n    - name: canary\n      approve: after\n      approvalTimeout: 24h\n    - name: rest\n      approve: before\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p := spec.Phases[0]; p.Approve != ApproveAfter || p.ApprovalTimeout != 24*time.Hour || !p.Approve.After() || p.Approve.Before() {
		t.Fatalf("canary = %+v", p)
	}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	out, _ := FormatYAML(spec)
	if back, err := ParseYAML(out); err != nil || !reflect.DeepEqual(back, spec) {
		t.Fatalf("round trip: %v\n%s", err, out)
	}
	spec.Phases[1].Approve = "sometimes"
	if err := spec.Validate(); err == nil || !strings.Contains(err.Error(), `strategy.phases[1].approve: unknown gate "sometimes"`) {
		t.Fatalf("Validate: %v", err)
	}
}

func TestParsePolicyYAMLDriftCorrection(t *testing.T) {
	p, err := ParsePolicyYAML([]byte(`name: heal-staging
phases: [{name: all, bake: 5m}]
driftCorrection: {enabled: true, selector: env=staging, maxPerHour: 4}
`))
	want := DriftCorrection{Enabled: true, Selector: "env=staging", MaxPerHour: 4}
	if err != nil || p.DriftCorrection != want || p.Validate() != nil {
		t.Fatalf("got %+v, %v (valid: %v), want %+v", p.DriftCorrection, err, p.Validate(), want)
	}
	if _, err := ParsePolicyYAML([]byte("name: x\nphases: [{name: all}]\ndriftCorrection: {enabled: yes please, maxPerHur: 2}\n")); err == nil ||
		!strings.Contains(err.Error(), "driftCorrection.enabled: line 3: expected true or false") || !strings.Contains(err.Error(), "maxPerHur") {
		t.Fatalf("bad driftCorrection: %v", err)
	}
	bad := Policy{Name: "x", Phases: []Phase{{Name: "all"}}, DriftCorrection: DriftCorrection{Enabled: true, Selector: "env in prod", MaxPerHour: -1}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "driftCorrection.selector") || !strings.Contains(err.Error(), "driftCorrection.maxPerHour") {
		t.Fatalf("Validate: %v", err)
	}
}
