package drivers_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

func TestRegistryLookup(t *testing.T) {
	sim := drivers.DriverFunc(func(context.Context, drivers.Request) (drivers.Result, error) {
		return drivers.Result{Version: "sim"}, nil
	})
	probe := drivers.ProberFunc(func(context.Context, inventory.Cluster) (drivers.Observation, error) {
		return drivers.Observation{Status: records.HealthHealthy}, nil
	})
	r := drivers.NewRegistry()
	r.Register("sim", sim, probe)
	r.Register("exec", sim, nil) // drives, cannot probe

	tests := []struct {
		name    string
		lookup  func(string) error // finds the named value and checks it is the registered one
		driver  string
		wantErr string
	}{
		{name: "driver found", lookup: driverLookup(r), driver: "sim"},
		{name: "prober found", lookup: proberLookup(r), driver: "sim"},
		{name: "unknown driver", lookup: driverLookup(r), driver: "kafka", wantErr: `no driver named "kafka" (have: exec, sim)`},
		{name: "unknown prober", lookup: proberLookup(r), driver: "kafka", wantErr: `no prober named "kafka" (have: sim)`},
		{name: "registered without prober", lookup: proberLookup(r), driver: "exec", wantErr: `no prober named "exec" (have: sim)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.lookup(tt.driver)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("lookup %q: %v", tt.driver, err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("lookup %q: got error %v, want %q", tt.driver, err, tt.wantErr)
			}
			if !errors.Is(err, drivers.ErrUnknownDriver) {
				t.Fatalf("error %v does not wrap ErrUnknownDriver", err)
			}
		})
	}
	if got, want := r.Names(), []string{"exec", "sim"}; !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
}

func driverLookup(r *drivers.Registry) func(string) error {
	return func(name string) error {
		d, err := r.Driver(name)
		if err != nil {
			return err
		}
		res, err := d.Apply(context.Background(), drivers.Request{})
		if err != nil || res.Version != "sim" {
			return errors.New("wrong driver returned")
		}
		return nil
	}
}

func proberLookup(r *drivers.Registry) func(string) error {
	return func(name string) error {
		p, err := r.Prober(name)
		if err != nil {
			return err
		}
		obs, err := p.Probe(context.Background(), inventory.Cluster{})
		if err != nil || obs.Status != records.HealthHealthy {
			return errors.New("wrong prober returned")
		}
		return nil
	}
}

func TestRegistryEmptyAndReplace(t *testing.T) {
	r := drivers.NewRegistry()
	if _, err := r.Driver("sim"); err == nil || err.Error() != `no driver named "sim" (have: none)` {
		t.Fatalf("empty registry: got %v", err)
	}

	first := drivers.DriverFunc(func(context.Context, drivers.Request) (drivers.Result, error) {
		return drivers.Result{Output: "first"}, nil
	})
	second := drivers.DriverFunc(func(context.Context, drivers.Request) (drivers.Result, error) {
		return drivers.Result{Output: "second"}, nil
	})
	probe := drivers.ProberFunc(func(context.Context, inventory.Cluster) (drivers.Observation, error) {
		return drivers.Observation{}, nil
	})
	r.Register("sim", first, probe)
	r.Register("sim", second, nil) // replaces both sides
	d, err := r.Driver("sim")
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := d.Apply(context.Background(), drivers.Request{}); res.Output != "second" {
		t.Fatalf("after re-register, driver says %q, want the replacement", res.Output)
	}
	if _, err := r.Prober("sim"); !errors.Is(err, drivers.ErrUnknownDriver) {
		t.Fatalf("re-register without prober: got %v, want ErrUnknownDriver", err)
	}
}

func TestRegisterEmptyNamePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Register with an empty name did not panic")
		}
	}()
	drivers.NewRegistry().Register("", nil, nil)
}

func TestConfigKeys(t *testing.T) {
	op := rollout.Operation{Kind: rollout.Config, Config: map[string]string{"b": "1", "a": "2"}, Reset: []string{"d", "c"}}
	if got, want := drivers.ConfigKeys(op), []string{"a", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("ConfigKeys = %v, want %v", got, want)
	}
	if got := drivers.ConfigKeys(rollout.Operation{Kind: rollout.Upgrade, Version: "4.1.0"}); len(got) != 0 {
		t.Fatalf("ConfigKeys of an upgrade = %v, want none", got)
	}
}

func TestSnapshotCheck(t *testing.T) {
	op := rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "2"}, Reset: []string{"b"}}
	tests := []struct {
		name    string
		snap    drivers.Snapshot
		wantErr string
	}{
		{name: "every key once", snap: drivers.Snapshot{Config: map[string]string{"a": "1"}, Unset: []string{"b"}}},
		{name: "every key unset", snap: drivers.Snapshot{Unset: []string{"a", "b"}}},
		{name: "key missing", snap: drivers.Snapshot{Config: map[string]string{"a": "1"}},
			wantErr: "incomplete snapshot: b is missing"},
		{name: "key both set and unset", snap: drivers.Snapshot{Config: map[string]string{"a": "1", "b": "1"}, Unset: []string{"b"}},
			wantErr: "incomplete snapshot: b is both set and unset"},
		{name: "foreign key", snap: drivers.Snapshot{Config: map[string]string{"a": "1", "z": "1"}, Unset: []string{"b", "y"}},
			wantErr: "incomplete snapshot: z is not a key of the operation; y is not a key of the operation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.snap.Check(op)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
				t.Fatalf("Check = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
