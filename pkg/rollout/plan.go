package rollout

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/selector"
)

// Plan is a spec laid over an inventory: every target placed in exactly one
// wave of exactly one phase, in the order the rollout will take them.
type Plan struct {
	// Targets is the number of clusters the rollout changes.
	Targets int
	// Phases are in the order of the spec's phases, one for each.
	Phases []PlannedPhase
}

// PlannedPhase is one phase of a Plan.
type PlannedPhase struct {
	Name string
	// Selector is the phase's selector as written in the spec; "" takes the
	// targets that earlier phases left.
	Selector string
	// Waves hold cluster IDs, sorted within the phase. No wave is empty;
	// a phase whose selector matched no remaining target has no waves.
	Waves       [][]string
	MaxInFlight int
	Bake        time.Duration
	// FailureThreshold is the phase's own limit; zero if it has none.
	FailureThreshold Threshold
}

// maxListed is how many cluster IDs an error lists before eliding the rest.
const maxListed = 5

// Plan lays the spec over an inventory (cluster ID → cluster) and returns
// its phases and waves.
//
// The targets are the clusters whose labels match Selector (when one is
// given) together with the Clusters named explicitly. Phases then take, in
// order, the targets not taken by an earlier phase that match their own
// selector, sorted by cluster ID, and cut them into waves: chunks of N for a
// count; chunks of max(1, ceil(pct × phase size / 100)) for a percentage;
// start, 2×start, 4×start, ... for exponential, the last wave holding what
// remains; and one wave for the zero Waves. A spec without phases gets one
// phase named "all" with one wave of every target.
//
// Plan fails when the spec does not Validate (returning those errors), when
// an explicit cluster is not in the inventory ("unknown clusters: x, y"),
// when there is no target at all ("no cluster matches selector ..."), and
// when some targets match no phase, naming how many and the first few and
// suggesting a final phase without a selector. A phase that matches nothing
// is not an error: it has no waves.
//
// Plan is deterministic: the same spec and inventory give the same plan.
func (s Spec) Plan(clusters map[string]inventory.Cluster) (Plan, error) {
	if err := s.Validate(); err != nil {
		return Plan{}, fmt.Errorf("invalid rollout spec: %w", err)
	}
	if s.Policy != "" && len(s.Phases) == 0 {
		return Plan{}, fmt.Errorf("policy %q is not resolved: call WithPolicy first", s.Policy)
	}

	targets := map[string]bool{}
	if strings.TrimSpace(s.Selector) != "" {
		sel, err := selector.Parse(s.Selector)
		if err != nil {
			return Plan{}, fmt.Errorf("selector: %w", err) // Validate checked it; kept for safety
		}
		for id, c := range clusters {
			if sel.Matches(c.Labels) {
				targets[id] = true
			}
		}
	}
	var unknown []string
	for _, id := range s.Clusters {
		if _, ok := clusters[id]; ok {
			targets[id] = true
		} else {
			unknown = append(unknown, id)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return Plan{}, fmt.Errorf("unknown clusters: %s", strings.Join(slices.Compact(unknown), ", "))
	}
	if len(targets) == 0 {
		return Plan{}, fmt.Errorf("no cluster matches selector %q", s.Selector)
	}
	ids := make([]string, 0, len(targets))
	for id := range targets {
		ids = append(ids, id)
	}
	slices.Sort(ids)

	phases := s.Phases
	if len(phases) == 0 {
		phases = []Phase{{Name: "all"}}
	}
	plan := Plan{Targets: len(ids)}
	taken := make(map[string]bool, len(ids))
	for i, ph := range phases {
		sel, err := selector.Parse(ph.Selector)
		if err != nil {
			return Plan{}, fmt.Errorf("strategy.phases[%d].selector: %w", i, err)
		}
		var mine []string
		for _, id := range ids {
			if !taken[id] && sel.Matches(clusters[id].Labels) {
				mine = append(mine, id)
				taken[id] = true
			}
		}
		plan.Phases = append(plan.Phases, PlannedPhase{
			Name:             ph.Name,
			Selector:         ph.Selector,
			Waves:            cutWaves(mine, ph.Waves),
			MaxInFlight:      ph.MaxInFlight,
			Bake:             ph.Bake,
			FailureThreshold: ph.FailureThreshold,
		})
	}

	var left []string
	for _, id := range ids {
		if !taken[id] {
			left = append(left, id)
		}
	}
	if len(left) > 0 {
		listed := strings.Join(left[:min(len(left), maxListed)], ", ")
		if len(left) > maxListed {
			listed += ", ..."
		}
		return Plan{}, fmt.Errorf("%d of %d targets match no phase (%s); add a final phase without a selector to take the rest",
			len(left), len(ids), listed)
	}
	return plan, nil
}

// cutWaves cuts a phase's targets into waves. Each wave is its own slice.
func cutWaves(ids []string, w Waves) [][]string {
	if len(ids) == 0 {
		return nil
	}
	n := len(ids)
	size := n // the zero Waves: one wave
	grow := false
	switch w.Mode {
	case WaveCount:
		size = w.Value
	case WavePercent:
		size = max(1, ceilPercent(w.Value, n))
	case WaveExponential:
		size, grow = max(1, w.Value), true
	}
	size = max(1, size) // Validate rules out anything smaller; never loop forever
	var waves [][]string
	for len(ids) > 0 {
		k := min(size, len(ids))
		waves = append(waves, slices.Clone(ids[:k]))
		ids = ids[k:]
		if grow && size < n {
			size *= 2
		}
	}
	return waves
}

// WithPolicy returns the spec with the phases of the deployment policy it
// names, taken from policies (by name); a spec that names none is returned
// as it is. A spec that names a policy and has phases of its own is an
// error. The planner resolves the policy once, when it accepts the
// rollout, and keeps the phases in the workflow: a later change to the
// policy does not change a rollout already under way.
func (s Spec) WithPolicy(policies map[string]Policy) (Spec, error) {
	switch {
	case s.Policy == "":
		return s, nil
	case len(s.Phases) > 0:
		return s, fmt.Errorf("policy: the rollout names policy %q and has strategy.phases of its own: give one or the other", s.Policy)
	}
	p, ok := policies[s.Policy]
	if !ok {
		have := slices.Sorted(maps.Keys(policies))
		if len(have) == 0 {
			return s, fmt.Errorf("policy: unknown deployment policy %q (none is defined; see flotilla policy apply)", s.Policy)
		}
		return s, fmt.Errorf("policy: unknown deployment policy %q (have: %s)", s.Policy, strings.Join(have, ", "))
	}
	s.Phases = slices.Clone(p.Phases)
	return s, nil
}
