package simfleet_test

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
)

func TestGenerateClustersIsDeterministic(t *testing.T) {
	a, b := simfleet.GenerateClusters(200), simfleet.GenerateClusters(200)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two calls generated different fleets")
	}
	if small := simfleet.GenerateClusters(10); !reflect.DeepEqual(small, a[:10]) {
		t.Fatal("GenerateClusters(10) is not the first ten of GenerateClusters(200)")
	}
	if got := simfleet.GenerateClusters(0); len(got) != 0 {
		t.Fatalf("GenerateClusters(0) = %d clusters", len(got))
	}
}

func TestGenerateClustersShape(t *testing.T) {
	regions := map[string][]string{
		"aws":   {"us-east-1", "eu-west-1"},
		"gcp":   {"us-central1", "europe-west1"},
		"azure": {"eastus", "westeurope"},
	}
	versions := map[string]string{"kafka": "3.8.0", "ksqldb": "0.29.0", "connect": "3.8.0", "schema-registry": "7.7.0"}
	allowed := map[string][]string{
		"env":  {"prod", "staging", "dev"},
		"tier": {"internal", "standard", "critical"},
	}

	const n = 200
	clusters := simfleet.GenerateClusters(n)
	if len(clusters) != n {
		t.Fatalf("got %d clusters, want %d", len(clusters), n)
	}
	seen := map[string]map[string]int{} // label -> value -> count
	for i, c := range clusters {
		wantID := fmt.Sprintf("sim-%04d", i+1)
		if c.ID != wantID || c.Driver != "sim" || c.Address != "sim://"+wantID {
			t.Fatalf("cluster %d = %s %s %s, want %s sim sim://%s", i, c.ID, c.Driver, c.Address, wantID, wantID)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"cloud", "region", "env", "tier", "kind"} {
			if c.Labels[k] == "" {
				t.Fatalf("%s has no %s label: %v", c.ID, k, c.Labels)
			}
			if seen[k] == nil {
				seen[k] = map[string]int{}
			}
			seen[k][c.Labels[k]]++
		}
		if !slices.Contains(regions[c.Labels["cloud"]], c.Labels["region"]) {
			t.Fatalf("%s: region %s is not a region of %s", c.ID, c.Labels["region"], c.Labels["cloud"])
		}
		if want, ok := versions[c.Labels["kind"]]; !ok || c.Version != want {
			t.Fatalf("%s: kind %s runs %s, want %s", c.ID, c.Labels["kind"], c.Version, want)
		}
		for k, vs := range allowed {
			if !slices.Contains(vs, c.Labels[k]) {
				t.Fatalf("%s: %s=%s, want one of %v", c.ID, k, c.Labels[k], vs)
			}
		}
	}

	// Every value occurs, in about the promised shares.
	shares := []struct {
		label, value string
		min, max     int // percent of the fleet
	}{
		{"kind", "kafka", 60, 80},
		{"tier", "internal", 10, 20},
	}
	for _, s := range shares {
		if got := seen[s.label][s.value] * 100 / n; got < s.min || got > s.max {
			t.Errorf("%s=%s on %d%% of the fleet, want %d-%d%%", s.label, s.value, got, s.min, s.max)
		}
	}
	wantValues := map[string][]string{
		"cloud":  slices.Sorted(maps.Keys(regions)),
		"region": {"eastus", "eu-west-1", "europe-west1", "us-central1", "us-east-1", "westeurope"},
		"env":    {"dev", "prod", "staging"},
		"tier":   {"critical", "internal", "standard"},
		"kind":   slices.Sorted(maps.Keys(versions)),
	}
	for label, want := range wantValues {
		if got := slices.Sorted(maps.Keys(seen[label])); !slices.Equal(got, want) {
			t.Errorf("%s values %v, want %v", label, got, want)
		}
	}
}

// A dev fleet of a dozen clusters must still be able to show a phased
// rollout: internal clusters first, then a cloud, then the rest.
func TestSmallFleetIsVaried(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range simfleet.GenerateClusters(12) {
		for k, v := range c.Labels {
			seen[k+"="+v] = true
		}
	}
	for _, want := range []string{"tier=internal", "cloud=aws", "cloud=gcp", "cloud=azure", "kind=kafka", "env=prod", "env=staging"} {
		if !seen[want] {
			t.Errorf("12 generated clusters have no %s", want)
		}
	}
	kinds := 0
	for k := range seen {
		if strings.HasPrefix(k, "kind=") {
			kinds++
		}
	}
	if kinds < 3 {
		t.Errorf("12 generated clusters have %d kinds, want at least 3", kinds)
	}
}
