// Package drift tells how a cluster differs from its desired state: what
// the inventory declares for it (a version, values of managed config keys)
// and, where it declares nothing, what the last successful rollouts left.
// The monitor compares each probe's observation with it; the comparison
// is pure, so that it is tested here without a broker.
package drift

import (
	"maps"
	"slices"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// Baseline is what the successful rollouts left on a cluster: the version
// of the last upgrade, and the config keys they set (a later value
// replacing an earlier one, a reset key forgotten, since its value is the
// cluster's default). It is all the monitor keeps of a cluster's history:
// a version and a few keys, whatever the number of rollouts.
type Baseline struct {
	Version string
	Config  map[string]string
}

// Apply folds one history entry into b, in the order the history holds
// them, and reports whether b changed. Only a succeeded target counts: a
// failed or skipped one changed nothing (drivers change a cluster fully or
// not at all). A restart leaves nothing to compare; a rollback's entry
// carries its own operation, the inverse, and so puts b back.
func (b *Baseline) Apply(t records.Target) bool {
	if t.State != records.TargetSucceeded {
		return false
	}
	changed := false
	switch t.Operation.Kind {
	case rollout.Upgrade:
		v := t.Operation.Version
		if v == "" {
			v = t.Version
		}
		if v != "" && v != b.Version {
			b.Version, changed = v, true
		}
	case rollout.Config:
		for k, v := range t.Operation.Config {
			if cur, ok := b.Config[k]; !ok || cur != v {
				if b.Config == nil {
					b.Config = map[string]string{}
				}
				b.Config[k], changed = v, true
			}
		}
		for _, k := range t.Operation.Reset {
			if _, ok := b.Config[k]; ok {
				delete(b.Config, k)
				changed = true
			}
		}
	}
	return changed
}

// IsZero reports whether b holds nothing.
func (b Baseline) IsZero() bool { return b.Version == "" && len(b.Config) == 0 }

// Desired is the state a cluster should be in: the inventory's declared
// version and config keys, and for what it leaves out, the baseline's.
// The inventory is the source of truth: a key it declares is compared
// with its value even after a rollout changed it (change the inventory to
// move it, then `flotilla drift fix`).
func Desired(c inventory.Cluster, b Baseline) inventory.Desired {
	d := inventory.Desired{Version: c.Desired.Version}
	if d.Version == "" {
		d.Version = b.Version
	}
	if len(b.Config) > 0 || len(c.Desired.Config) > 0 {
		d.Config = maps.Clone(b.Config)
		if d.Config == nil {
			d.Config = map[string]string{}
		}
		maps.Copy(d.Config, c.Desired.Config)
	}
	return d
}

// Compare returns how obs differs from the desired state of c (Desired,
// with baseline b), sorted by key with the version first: only the keys
// desired, none of c's DriftIgnore list. A version the probe did not see
// (empty) and a config key it did not read cannot be told to drift and are
// left out; with obs.ConfigComplete, a key it did not report has no value.
func Compare(c inventory.Cluster, b Baseline, obs drivers.Observation) []records.DriftItem {
	want := Desired(c, b)
	var out []records.DriftItem
	if want.Version != "" && obs.Version != "" && obs.Version != want.Version && !slices.Contains(c.DriftIgnore, inventory.DriftVersionKey) {
		out = append(out, records.DriftItem{Key: inventory.DriftVersionKey, Observed: obs.Version, Desired: want.Version})
	}
	for _, k := range slices.Sorted(maps.Keys(want.Config)) {
		if slices.Contains(c.DriftIgnore, k) {
			continue
		}
		seen, read := obs.Config[k]
		if !read && !obs.ConfigComplete {
			continue
		}
		if seen != want.Config[k] {
			out = append(out, records.DriftItem{Key: k, Observed: seen, Desired: want.Config[k]})
		}
	}
	return out
}

// Lines are the items as one line each, as in a health signal's reasons.
func Lines(items []records.DriftItem) []string {
	out := make([]string, len(items))
	for i, d := range items {
		out[i] = d.String()
	}
	return out
}
