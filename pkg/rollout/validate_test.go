package rollout

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func validSpec() Spec {
	return Spec{
		Name:      "kafka-3.9.1",
		Operation: Operation{Kind: Upgrade, Version: "3.9.1"},
		Selector:  "env=prod",
		Phases: []Phase{
			{Name: "internal", Selector: "tier=internal", Waves: Waves{WaveCount, 2}, MaxInFlight: 1, Bake: time.Minute},
			{Name: "rest", Waves: Waves{WaveExponential, 0}}, // 0 = the default start of 1
		},
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := map[string]func(*Spec){
		"as is":                    func(*Spec) {},
		"restart":                  func(s *Spec) { s.Operation = Operation{Kind: Restart} },
		"config":                   func(s *Spec) { s.Operation = Operation{Kind: Config, Config: map[string]string{"a": ""}} },
		"clusters only":            func(s *Spec) { s.Selector, s.Clusters = "", []string{"c-1"} },
		"no phases":                func(s *Spec) { s.Phases = nil },
		"threshold count":          func(s *Spec) { s.FailureThreshold = Threshold{Count: 3} },
		"threshold zero count":     func(s *Spec) { s.FailureThreshold = Threshold{} },
		"threshold percent bounds": func(s *Spec) { s.FailureThreshold = Threshold{Percent: 100} },
		"percent waves bounds": func(s *Spec) {
			s.Phases[0].Waves = Waves{WavePercent, 1}
			s.Phases[1].Waves = Waves{WavePercent, 100}
		},
	}
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			s := validSpec()
			edit(&s)
			if err := s.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Spec)
		want string
	}{
		{"no name", func(s *Spec) { s.Name = "" }, "name: required"},
		{"unknown operation", func(s *Spec) { s.Operation = Operation{Kind: "reboot"} },
			`operation.type: unknown operation "reboot": want upgrade, restart or config`},
		{"no operation", func(s *Spec) { s.Operation = Operation{} }, "operation.type: required: want upgrade, restart or config"},
		{"upgrade without version", func(s *Spec) { s.Operation.Version = "" }, "operation.version: required for an upgrade"},
		{"restart with version", func(s *Spec) { s.Operation.Kind = Restart },
			`operation.version: only an upgrade takes a version, not a restart (got "3.9.1")`},
		{"config without keys", func(s *Spec) { s.Operation = Operation{Kind: Config, Config: map[string]string{}} },
			"operation.config: required for a config operation: at least one key to set or reset"},
		{"upgrade with config", func(s *Spec) { s.Operation.Config = map[string]string{"a": "b"} },
			"operation.config: only a config operation takes config, not an upgrade"},
		{"empty config key", func(s *Spec) { s.Operation = Operation{Kind: Config, Config: map[string]string{"": "x"}} },
			"operation.config: empty key"},
		{"reset and set", func(s *Spec) {
			s.Operation = Operation{Kind: Config, Config: map[string]string{"a": "1"}, Reset: []string{"a"}}
		}, `operation.reset[0]: key "a" is both set and reset`},
		{"reset on an upgrade", func(s *Spec) { s.Operation.Reset = []string{"a"} }, "operation.reset: only a config operation resets keys, not an upgrade"},
		{"expecting a key the operation leaves alone", func(s *Spec) {
			s.Operation = Operation{Kind: Config, Config: map[string]string{"a": "1"}, ExpectConfig: map[string]string{"b": "2"}}
		}, `operation.expect.config: key "b" is neither set nor reset by the operation`},
		{"no targets", func(s *Spec) { s.Selector = " " }, "selector: a selector or explicit clusters are required"},
		{"bad selector", func(s *Spec) { s.Selector = "env in (a" },
			`selector: selector "env in (a": at column 10: expected ',' or ')', found end of input`},
		{"empty cluster", func(s *Spec) { s.Clusters = []string{"c-1", ""} }, "clusters[1]: empty cluster ID"},
		{"phase without name", func(s *Spec) { s.Phases[1].Name = "" }, "strategy.phases[1].name: required"},
		{"duplicate phase", func(s *Spec) { s.Phases[1].Name = "internal" },
			`strategy.phases[1].name: duplicate phase name "internal" (also strategy.phases[0])`},
		{"bad phase selector", func(s *Spec) { s.Phases[0].Selector = "tier=" + "internal!" },
			`strategy.phases[0].selector: selector "tier=internal!": at column 14: expected ',' or end of input, found "!"`},
		{"zero count", func(s *Spec) { s.Phases[0].Waves = Waves{WaveCount, 0} },
			"strategy.phases[0].waves: a count must be at least 1, got 0"},
		{"zero percent", func(s *Spec) { s.Phases[0].Waves = Waves{WavePercent, 0} },
			"strategy.phases[0].waves: a percentage must be in 1..100, got 0"},
		{"over 100 percent", func(s *Spec) { s.Phases[0].Waves = Waves{WavePercent, 101} },
			"strategy.phases[0].waves: a percentage must be in 1..100, got 101"},
		{"negative exponential", func(s *Spec) { s.Phases[0].Waves = Waves{WaveExponential, -1} },
			"strategy.phases[0].waves: an exponential start must be at least 1, got -1"},
		{"unknown mode", func(s *Spec) { s.Phases[0].Waves = Waves{"linear", 1} },
			`strategy.phases[0].waves: unknown wave mode "linear": want count, percent or exponential`},
		{"value without mode", func(s *Spec) { s.Phases[0].Waves = Waves{"", 3} },
			"strategy.phases[0].waves: value 3 without a mode"},
		{"negative maxInFlight", func(s *Spec) { s.Phases[0].MaxInFlight = -1 },
			"strategy.phases[0].maxInFlight: must not be negative, got -1"},
		{"negative bake", func(s *Spec) { s.Phases[0].Bake = -time.Minute },
			"strategy.phases[0].bake: must not be negative, got -1m0s"},
		{"both thresholds", func(s *Spec) { s.FailureThreshold = Threshold{Count: 1, Percent: 10} },
			"failureThreshold: both a count (1) and a percentage (10%) are set: set one"},
		{"negative count", func(s *Spec) { s.FailureThreshold = Threshold{Count: -1} },
			"failureThreshold: a count must not be negative, got -1"},
		{"percent over 100", func(s *Spec) { s.FailureThreshold = Threshold{Percent: 101} },
			"failureThreshold: a percentage must be in 0..100, got 101"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			tt.edit(&s)
			err := s.Validate()
			if err == nil {
				t.Fatalf("Validate succeeded, want %s", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Validate:\n got %s\nwant %s", err, tt.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.HasPrefix(tt.want, fe.Field+": ") {
				t.Errorf("Validate error is not a *FieldError for the field: %#v", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	s := Spec{
		Operation: Operation{Kind: Upgrade},
		Phases: []Phase{
			{Name: "a", Waves: Waves{WaveCount, 0}},
			{Name: "a", MaxInFlight: -2},
		},
	}
	want := []string{
		"name: required",
		"operation.version: required for an upgrade",
		"selector: a selector or explicit clusters are required",
		"strategy.phases[0].waves: a count must be at least 1, got 0",
		`strategy.phases[1].name: duplicate phase name "a" (also strategy.phases[0])`,
		"strategy.phases[1].maxInFlight: must not be negative, got -2",
	}
	err := s.Validate()
	if err == nil {
		t.Fatal("Validate succeeded")
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("Validate:\n got %q\nwant %q", got, want)
	}
}

func TestThresholdLimit(t *testing.T) {
	tests := []struct {
		th      Threshold
		targets int
		want    int
	}{
		{Threshold{}, 0, 1},
		{Threshold{}, 100, 1}, // the first failure pauses
		{Threshold{Count: 3}, 100, 3},
		{Threshold{Count: 3}, 2, 3},
		{Threshold{Percent: 10}, 100, 10},
		{Threshold{Percent: 10}, 101, 11}, // rounded up
		{Threshold{Percent: 10}, 5, 1},
		{Threshold{Percent: 1}, 1, 1},
		{Threshold{Percent: 100}, 7, 7},
		{Threshold{Percent: 50}, 0, 1},             // at least 1
		{Threshold{Count: 2, Percent: 50}, 100, 2}, // invalid, but Count wins
		{Threshold{Count: -1}, 10, 1},
	}
	for _, tt := range tests {
		if got := tt.th.Limit(tt.targets); got != tt.want {
			t.Errorf("%+v.Limit(%d) = %d, want %d", tt.th, tt.targets, got, tt.want)
		}
	}
}

func TestOperationSaysWhatItDoes(t *testing.T) {
	for _, c := range []struct {
		op   Operation
		want string
	}{
		{Operation{Kind: Upgrade, Version: "3.9.1"}, "upgrade to 3.9.1"},
		{Operation{Kind: Restart}, "restart"},
		{Operation{Kind: Config, Config: map[string]string{"x": "1", "log.retention.ms": "100"}, Reset: []string{"y", "z"}}, "config log.retention.ms=100,x=1 reset y,z"},
	} {
		if got := c.op.String(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.op, got, c.want)
		}
	}
}
