package drift

import (
	"reflect"
	"testing"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

func target(state records.TargetState, op rollout.Operation) records.Target {
	return records.Target{State: state, Operation: op}
}

func TestBaselineKeepsWhatSuccessfulRolloutsLeft(t *testing.T) {
	var b Baseline
	steps := []struct {
		t       records.Target
		changed bool
	}{
		{target(records.TargetSucceeded, rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}), true},
		{target(records.TargetFailed, rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.2"}), false},
		{target(records.TargetSkipped, rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "9"}}), false},
		{target(records.TargetSucceeded, rollout.Operation{Kind: rollout.Restart}), false},
		{target(records.TargetSucceeded, rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "1", "b": "2"}}), true},
		{target(records.TargetSucceeded, rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "1"}}), false},
		// A rollback's entry: the inverse, b back to its default.
		{target(records.TargetSucceeded, rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "3"}, Reset: []string{"b"}}), true},
	}
	for i, s := range steps {
		if got := b.Apply(s.t); got != s.changed {
			t.Errorf("step %d: changed %t, want %t", i, got, s.changed)
		}
	}
	want := Baseline{Version: "3.9.1", Config: map[string]string{"a": "3"}}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("baseline %+v, want %+v", b, want)
	}
}

func TestCompare(t *testing.T) {
	declared := inventory.Cluster{ID: "c-1", Desired: inventory.Desired{Version: "3.9.1", Config: map[string]string{"log.retention.ms": "200"}}}
	baseline := Baseline{Version: "3.8.0", Config: map[string]string{"log.retention.ms": "999", "num.io.threads": "8"}}
	for _, tc := range []struct {
		name     string
		c        inventory.Cluster
		b        Baseline
		obs      drivers.Observation
		want     []records.DriftItem
		wantLine []string
	}{
		{name: "nothing declared, no history: nothing to compare",
			c:   inventory.Cluster{ID: "c-1"},
			obs: drivers.Observation{Version: "3.8.0", Config: map[string]string{"x": "1"}, ConfigComplete: true}},
		{name: "as declared",
			c:   declared,
			obs: drivers.Observation{Version: "3.9.1", Config: map[string]string{"log.retention.ms": "200", "other": "x"}, ConfigComplete: true}},
		{name: "declared keys only: an undeclared key's value is not drift",
			c:        declared,
			obs:      drivers.Observation{Version: "3.8.0", Config: map[string]string{"log.retention.ms": "100", "other": "x"}},
			want:     []records.DriftItem{{Key: "version", Observed: "3.8.0", Desired: "3.9.1"}, {Key: "log.retention.ms", Observed: "100", Desired: "200"}},
			wantLine: []string{"version 3.8.0, desired 3.9.1", "config log.retention.ms=100, desired 200"}},
		{name: "the inventory wins over the history, which fills what it leaves out",
			c:    declared,
			b:    baseline,
			obs:  drivers.Observation{Version: "3.8.0", Config: map[string]string{"log.retention.ms": "200", "num.io.threads": "16"}},
			want: []records.DriftItem{{Key: "version", Observed: "3.8.0", Desired: "3.9.1"}, {Key: "num.io.threads", Observed: "16", Desired: "8"}}},
		{name: "desired from the history when the inventory declares none",
			c:        inventory.Cluster{ID: "c-1"},
			b:        baseline,
			obs:      drivers.Observation{Version: "3.9.1", Config: map[string]string{"log.retention.ms": "999"}, ConfigComplete: true},
			want:     []records.DriftItem{{Key: "version", Observed: "3.9.1", Desired: "3.8.0"}, {Key: "num.io.threads", Desired: "8"}},
			wantLine: []string{"version 3.9.1, desired 3.8.0", "config num.io.threads unset, desired 8"}},
		{name: "a key not read is not compared, unless the probe reads the whole config",
			c:   declared,
			obs: drivers.Observation{Version: "3.9.1", Config: map[string]string{"other": "1"}}},
		{name: "a version not seen is not compared",
			c:   declared,
			obs: drivers.Observation{Config: map[string]string{"log.retention.ms": "200"}}},
		{name: "the ignore list",
			c:    inventory.Cluster{ID: "c-1", Desired: declared.Desired, DriftIgnore: []string{"version", "num.io.threads"}},
			b:    baseline,
			obs:  drivers.Observation{Version: "3.8.0", Config: map[string]string{"log.retention.ms": "1", "num.io.threads": "16"}},
			want: []records.DriftItem{{Key: "log.retention.ms", Observed: "1", Desired: "200"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Compare(tc.c, tc.b, tc.obs)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("drift %+v, want %+v", got, tc.want)
			}
			if tc.wantLine != nil && !reflect.DeepEqual(Lines(got), tc.wantLine) {
				t.Errorf("lines %q, want %q", Lines(got), tc.wantLine)
			}
		})
	}
}

func TestDesiredDoesNotChangeTheBaseline(t *testing.T) {
	b := Baseline{Config: map[string]string{"a": "1"}}
	d := Desired(inventory.Cluster{Desired: inventory.Desired{Config: map[string]string{"a": "2"}}}, b)
	if d.Config["a"] != "2" || b.Config["a"] != "1" {
		t.Errorf("desired %v, baseline %v", d.Config, b.Config)
	}
}
