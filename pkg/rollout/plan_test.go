package rollout

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/selector"
)

// fleet generates n clusters c-00, c-01, ... whose labels follow their
// number: env=staging for every fourth (i%4 == 3), else prod; tier=internal
// for i%5 == 0, else external; cloud=azure for i%3 == 0, else aws; and
// kind=kafka for all.
func fleet(n int) map[string]inventory.Cluster {
	out := map[string]inventory.Cluster{}
	for i := range n {
		labels := map[string]string{"env": "prod", "tier": "external", "cloud": "aws", "kind": "kafka"}
		if i%4 == 3 {
			labels["env"] = "staging"
		}
		if i%5 == 0 {
			labels["tier"] = "internal"
		}
		if i%3 == 0 {
			labels["cloud"] = "azure"
		}
		id := fmt.Sprintf("c-%02d", i)
		out[id] = inventory.Cluster{ID: id, Labels: labels, Driver: "sim"}
	}
	return out
}

func restartSpec(sel string, phases ...Phase) Spec {
	return Spec{Name: "r", Operation: Operation{Kind: Restart}, Selector: sel, Phases: phases}
}

func TestPlanThreePhases(t *testing.T) {
	// Targets: env=prod (c-00,01,02,04,05,06,08,09,10) plus c-03 named explicitly.
	s := restartSpec("env=prod",
		Phase{Name: "internal", Selector: "tier=internal", Waves: Waves{WaveCount, 2}, MaxInFlight: 1, Bake: 5 * time.Minute},
		Phase{Name: "azure", Selector: "cloud=azure", Waves: Waves{WavePercent, 50}, Bake: time.Hour},
		Phase{Name: "rest", Waves: Waves{WaveExponential, 1}},
	)
	s.Clusters = []string{"c-03"}
	got, err := s.Plan(fleet(12))
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	want := Plan{
		Targets: 10,
		Phases: []PlannedPhase{
			{Name: "internal", Selector: "tier=internal", MaxInFlight: 1, Bake: 5 * time.Minute,
				Waves: [][]string{{"c-00", "c-05"}, {"c-10"}}},
			{Name: "azure", Selector: "cloud=azure", Bake: time.Hour,
				Waves: [][]string{{"c-03", "c-06"}, {"c-09"}}}, // 50% of 3, rounded up
			{Name: "rest",
				Waves: [][]string{{"c-01"}, {"c-02", "c-04"}, {"c-08"}}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Plan:\n got %+v\nwant %+v", got, want)
	}
}

func TestPlanWithoutPhases(t *testing.T) {
	got, err := restartSpec("cloud=azure").Plan(fleet(10))
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	want := Plan{Targets: 4, Phases: []PlannedPhase{{Name: "all", Waves: [][]string{{"c-00", "c-03", "c-06", "c-09"}}}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Plan:\n got %+v\nwant %+v", got, want)
	}
}

func TestPlanExplicitClustersOnly(t *testing.T) {
	s := restartSpec("")
	s.Clusters = []string{"c-07", "c-02", "c-07"}
	got, err := s.Plan(fleet(10))
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	want := Plan{Targets: 2, Phases: []PlannedPhase{{Name: "all", Waves: [][]string{{"c-02", "c-07"}}}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Plan:\n got %+v\nwant %+v", got, want)
	}
}

func TestPlanEmptyPhase(t *testing.T) {
	s := restartSpec("kind=kafka",
		Phase{Name: "gcp", Selector: "cloud=gcp", Waves: Waves{WaveCount, 1}},
		Phase{Name: "rest"},
	)
	got, err := s.Plan(fleet(3))
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	want := Plan{Targets: 3, Phases: []PlannedPhase{
		{Name: "gcp", Selector: "cloud=gcp"},
		{Name: "rest", Waves: [][]string{{"c-00", "c-01", "c-02"}}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Plan:\n got %+v\nwant %+v", got, want)
	}
}

func TestPlanWaveModes(t *testing.T) {
	tests := []struct {
		waves Waves
		n     int
		sizes []int
	}{
		{Waves{}, 10, []int{10}},
		{Waves{WaveCount, 3}, 10, []int{3, 3, 3, 1}},
		{Waves{WaveCount, 5}, 10, []int{5, 5}},
		{Waves{WaveCount, 20}, 10, []int{10}},
		{Waves{WaveCount, 1}, 3, []int{1, 1, 1}},
		{Waves{WavePercent, 25}, 10, []int{3, 3, 3, 1}}, // 2.5 rounds up to 3
		{Waves{WavePercent, 50}, 10, []int{5, 5}},
		{Waves{WavePercent, 100}, 10, []int{10}},
		{Waves{WavePercent, 1}, 5, []int{1, 1, 1, 1, 1}}, // at least one cluster
		{Waves{WavePercent, 34}, 3, []int{2, 1}},
		{Waves{WaveExponential, 1}, 10, []int{1, 2, 4, 3}},
		{Waves{WaveExponential, 1}, 15, []int{1, 2, 4, 8}},
		{Waves{WaveExponential, 2}, 10, []int{2, 4, 4}},
		{Waves{WaveExponential, 0}, 7, []int{1, 2, 4}}, // 0 is the default start, 1
		{Waves{WaveExponential, 5}, 3, []int{3}},
		{Waves{WaveExponential, 1}, 1, []int{1}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s:%d/%d", tt.waves.Mode, tt.waves.Value, tt.n), func(t *testing.T) {
			inv := fleet(tt.n)
			plan, err := restartSpec("kind=kafka", Phase{Name: "p", Waves: tt.waves}).Plan(inv)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			var sizes []int
			var all []string
			for _, w := range plan.Phases[0].Waves {
				sizes = append(sizes, len(w))
				all = append(all, w...)
			}
			if !reflect.DeepEqual(sizes, tt.sizes) {
				t.Errorf("wave sizes = %v, want %v", sizes, tt.sizes)
			}
			if want := slices.Sorted(maps.Keys(inv)); !reflect.DeepEqual(all, want) {
				t.Errorf("waves hold %v, want %v in order", all, want)
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	withClusters := func(s Spec, ids ...string) Spec { s.Clusters = ids; return s }
	tests := []struct {
		name string
		spec Spec
		inv  map[string]inventory.Cluster
		want string
	}{
		{"invalid spec", Spec{Operation: Operation{Kind: Restart}, Selector: "env"}, fleet(3),
			"invalid rollout spec: name: required"},
		{"unknown clusters", withClusters(restartSpec("env=prod"), "zz", "c-01", "aa", "zz"), fleet(3),
			"unknown clusters: aa, zz"},
		{"unknown clusters, empty inventory", withClusters(restartSpec(""), "c-01"), nil,
			"unknown clusters: c-01"},
		{"no match", restartSpec("env=dev"), fleet(10),
			`no cluster matches selector "env=dev"`},
		{"empty inventory", restartSpec("env=prod"), nil,
			`no cluster matches selector "env=prod"`},
		{"targets left over", restartSpec("env=prod", Phase{Name: "internal", Selector: "tier=internal"}), fleet(12),
			"6 of 9 targets match no phase (c-01, c-02, c-04, c-06, c-08, ...); add a final phase without a selector to take the rest"},
		{"few targets left over", restartSpec("env=prod", Phase{Name: "aws", Selector: "cloud=aws"}), fleet(4),
			"1 of 3 targets match no phase (c-00); add a final phase without a selector to take the rest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := tt.spec.Plan(tt.inv)
			if err == nil {
				t.Fatalf("Plan succeeded with %+v, want %s", plan, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Plan:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

// TestPlanProperties plans random specs over random inventories and checks
// what a user relies on: every target lands in exactly one wave of exactly
// one phase, the first phase whose selector matches it; waves are never
// empty, sorted within a phase, and sized as their mode says; and Plan
// fails exactly when it should.
func TestPlanProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 1))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	selectors := []string{"", "env=prod", "cloud in (aws,azure)", "tier=internal", "region=eu-*", "!tier", "cloud!=gcp", "env=staging,cloud"}

	for iter := range 2000 {
		inv := map[string]inventory.Cluster{}
		for i := range rng.IntN(40) {
			labels := map[string]string{"env": pick("prod", "staging")}
			if c := pick("aws", "azure", "gcp", ""); c != "" {
				labels["cloud"] = c
			}
			if rng.IntN(3) > 0 {
				labels["tier"] = pick("internal", "external")
			}
			labels["region"] = pick("eu-west-1", "eu-central-1", "us-east-1")
			id := fmt.Sprintf("k%d-%d", rng.IntN(1000), i)
			inv[id] = inventory.Cluster{ID: id, Labels: labels, Driver: "sim"}
		}
		ids := slices.Sorted(maps.Keys(inv))

		s := restartSpec(pick(selectors...))
		for range rng.IntN(3) {
			if len(ids) > 0 && rng.IntN(8) > 0 {
				s.Clusters = append(s.Clusters, ids[rng.IntN(len(ids))])
			} else {
				s.Clusters = append(s.Clusters, "missing-"+fmt.Sprint(rng.IntN(3)))
			}
		}
		if s.Selector == "" && len(s.Clusters) == 0 {
			s.Selector = "env"
		}
		for p := range rng.IntN(5) {
			waves := []Waves{{}, {WaveCount, 1 + rng.IntN(6)}, {WavePercent, 1 + rng.IntN(100)}, {WaveExponential, rng.IntN(4)}}[rng.IntN(4)]
			s.Phases = append(s.Phases, Phase{Name: fmt.Sprintf("p%d", p), Selector: pick(selectors...), Waves: waves})
		}
		if len(s.Phases) > 0 && rng.IntN(4) > 0 {
			s.Phases[len(s.Phases)-1].Selector = ""
		}

		plan, err := s.Plan(inv)
		where := fmt.Sprintf("iteration %d: spec %+v", iter, s)
		checkPlan(t, where, s, inv, plan, err)
		if t.Failed() {
			return
		}
	}
}

func checkPlan(t *testing.T, where string, s Spec, inv map[string]inventory.Cluster, plan Plan, err error) {
	t.Helper()
	// What the plan must be, worked out independently of Plan.
	targets := map[string]bool{}
	unknown := false
	if s.Selector != "" {
		sel := selector.MustParse(s.Selector)
		for id, c := range inv {
			if sel.Matches(c.Labels) {
				targets[id] = true
			}
		}
	}
	for _, id := range s.Clusters {
		if _, ok := inv[id]; ok {
			targets[id] = true
		} else {
			unknown = true
		}
	}
	phases := s.Phases
	if len(phases) == 0 {
		phases = []Phase{{Name: "all"}}
	}
	firstPhase := map[string]int{} // target → index of the first phase matching it
	for id := range targets {
		for i, ph := range phases {
			if selector.MustParse(ph.Selector).Matches(inv[id].Labels) {
				firstPhase[id] = i
				break
			}
		}
	}

	switch {
	case unknown:
		if err == nil || !strings.HasPrefix(err.Error(), "unknown clusters: ") {
			t.Errorf("%s: unknown explicit clusters, got err %v", where, err)
		}
		return
	case len(targets) == 0:
		if err == nil || !strings.HasPrefix(err.Error(), "no cluster matches selector") {
			t.Errorf("%s: no targets, got err %v", where, err)
		}
		return
	case len(firstPhase) < len(targets):
		if err == nil || !strings.Contains(err.Error(), "match no phase") {
			t.Errorf("%s: %d targets in no phase, got err %v", where, len(targets)-len(firstPhase), err)
		}
		return
	case err != nil:
		t.Errorf("%s: Plan: %v", where, err)
		return
	}

	if plan.Targets != len(targets) {
		t.Errorf("%s: Targets = %d, want %d", where, plan.Targets, len(targets))
	}
	if len(plan.Phases) != len(phases) {
		t.Fatalf("%s: %d phases, want %d", where, len(plan.Phases), len(phases))
	}
	seen := map[string]bool{}
	for i, pp := range plan.Phases {
		ph := phases[i]
		if pp.Name != ph.Name || pp.Selector != ph.Selector || pp.MaxInFlight != ph.MaxInFlight || pp.Bake != ph.Bake {
			t.Errorf("%s: phase %d is %+v, want it to carry %+v", where, i, pp, ph)
		}
		var all []string
		for _, w := range pp.Waves {
			if len(w) == 0 {
				t.Errorf("%s: phase %s has an empty wave", where, pp.Name)
			}
			all = append(all, w...)
		}
		if !slices.IsSorted(all) {
			t.Errorf("%s: phase %s is not sorted: %v", where, pp.Name, all)
		}
		for _, id := range all {
			if !targets[id] {
				t.Errorf("%s: %s is in phase %s but not a target", where, id, pp.Name)
			}
			if seen[id] {
				t.Errorf("%s: %s is in two waves", where, id)
			}
			seen[id] = true
			if firstPhase[id] != i {
				t.Errorf("%s: %s is in phase %d, but the first phase matching it is %d", where, id, i, firstPhase[id])
			}
		}
		checkWaveSizes(t, where+" phase "+pp.Name, ph.Waves, len(all), pp.Waves)
	}
	if len(seen) != len(targets) {
		t.Errorf("%s: %d targets planned, want %d", where, len(seen), len(targets))
	}
}

// checkWaveSizes checks that waves over n clusters are sized as w says:
// every wave but the last has exactly its mode's size, the last at most.
func checkWaveSizes(t *testing.T, where string, w Waves, n int, waves [][]string) {
	t.Helper()
	if n == 0 {
		if len(waves) != 0 {
			t.Errorf("%s: empty phase has %d waves", where, len(waves))
		}
		return
	}
	size := func(i int) int { return n } // the zero Waves: one wave
	switch w.Mode {
	case WaveCount:
		size = func(int) int { return w.Value }
	case WavePercent:
		s := max(1, (w.Value*n+99)/100)
		size = func(int) int { return s }
	case WaveExponential:
		size = func(i int) int { return max(1, w.Value) << i }
	}
	for i, wave := range waves {
		last := i == len(waves)-1
		if !last && len(wave) != size(i) || last && len(wave) > size(i) {
			t.Errorf("%s: wave %d of %d holds %d clusters, want %d (mode %+v, %d clusters)", where, i, len(waves), len(wave), size(i), w, n)
		}
	}
}
