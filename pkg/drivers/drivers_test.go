package drivers_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
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
