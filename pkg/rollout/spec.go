// Package rollout holds the rollout spec people write (as YAML) and the
// planner carries (as Avro): what to do, to which clusters, in which order
// and at which pace; its validation; and the plan of phases and waves it
// yields over a given inventory.
package rollout

import (
	"maps"
	"slices"
	"strings"
	"time"
)

// OperationKind names what a rollout does to each cluster.
type OperationKind string

const (
	// Upgrade sets the cluster's software version to Operation.Version.
	Upgrade OperationKind = "upgrade"
	// Restart restarts the cluster's processes one by one, changing nothing.
	Restart OperationKind = "restart"
	// Config sets the key/values of Operation.Config on the cluster.
	Config OperationKind = "config"
)

// Operation is the desired state a driver converges a cluster to. It is
// stated as a target ("version = 3.9.1"), never as a step ("upgrade one
// version"), so that applying it twice changes nothing the second time.
type Operation struct {
	Kind    OperationKind     `json:"kind"`
	Version string            `json:"version,omitempty"` // for Upgrade: the version to run
	Config  map[string]string `json:"config,omitempty"`  // for Config: the key/values to set
	// Reset, for Config, names keys returned to the cluster's default:
	// their override is removed. A rollback of a config change resets the
	// keys that had no value before it.
	Reset []string `json:"reset,omitempty"`
	// ExpectVersion and ExpectConfig are preconditions: the operation acts
	// only on a cluster that runs this version, and whose keys have these
	// values, now (empty: any). A rollback expects what the change it
	// undoes left, so that it never undoes a later change.
	ExpectVersion string            `json:"expectVersion,omitempty"`
	ExpectConfig  map[string]string `json:"expectConfig,omitempty"`
}

// String says in a few words what the operation does: "upgrade to
// 3.9.1", "config log.retention.ms=100,x=1 reset y", "restart".
func (o Operation) String() string {
	s := string(o.Kind)
	if o.Version != "" {
		s += " to " + o.Version
	}
	if len(o.Config) > 0 {
		keys := slices.Sorted(maps.Keys(o.Config))
		for i, k := range keys {
			keys[i] = k + "=" + o.Config[k]
		}
		s += " " + strings.Join(keys, ",")
	}
	if len(o.Reset) > 0 {
		s += " reset " + strings.Join(o.Reset, ",")
	}
	return s
}

// WaveMode says how a phase's targets are cut into waves.
type WaveMode string

const (
	// WaveCount cuts waves of Value clusters each.
	WaveCount WaveMode = "count"
	// WavePercent cuts waves of Value percent of the phase (rounded up, at least one cluster).
	WavePercent WaveMode = "percent"
	// WaveExponential cuts waves of Value, 2*Value, 4*Value, ... clusters (Value defaults to 1).
	WaveExponential WaveMode = "exponential"
)

// Waves is a phase's wave sizing. The zero value means one wave holding the whole phase.
type Waves struct {
	Mode  WaveMode
	Value int
}

// Phase is one step of a rollout's strategy. Its selector picks among the
// targets not taken by an earlier phase; an empty selector takes them all.
type Phase struct {
	Name        string
	Selector    string
	Waves       Waves
	MaxInFlight int           // most clusters of the phase changing at once; 0 = a whole wave
	Bake        time.Duration // how long a finished wave must stay healthy before the next starts
	// Approve puts manual approval gates before the phase starts, after it
	// ends (before the next phase), or both.
	Approve Approval
	// ApprovalTimeout is how long a gate of the phase waits for approval
	// before the rollout pauses; 0 waits forever.
	ApprovalTimeout time.Duration
	// FailureThreshold, if set, limits the failed or unhealthy clusters of
	// this phase (a count, or a percent of the phase's targets) and says
	// what reaching it does. The zero value sets no phase limit: only the
	// rollout's own threshold applies.
	FailureThreshold Threshold
}

// Approval says where a phase has manual approval gates.
type Approval string

const (
	ApproveNone   Approval = ""
	ApproveBefore Approval = "before"
	ApproveAfter  Approval = "after"
	ApproveBoth   Approval = "both"
)

// Before reports whether the phase waits for approval before it starts.
func (a Approval) Before() bool { return a == ApproveBefore || a == ApproveBoth }

// After reports whether the phase waits for approval after it ends.
func (a Approval) After() bool { return a == ApproveAfter || a == ApproveBoth }

// Threshold is the number of failed or unhealthy clusters at which a
// rollout (or one of its phases) stops, and how: either a Count, or a
// Percent of its targets (rounded up, at least one). For a rollout the
// zero value means a count of 1 and ThresholdPause: the first failure
// pauses it.
type Threshold struct {
	Count   int
	Percent int
	Action  ThresholdAction
}

// IsZero reports whether the threshold sets no limit of its own.
func (t Threshold) IsZero() bool { return t.Count == 0 && t.Percent == 0 }

// ThresholdAction is what a rollout does on reaching a failure threshold.
type ThresholdAction string

const (
	// ThresholdPause stops starting anything new and waits for a person
	// (or for automatic resume). The default.
	ThresholdPause ThresholdAction = ""
	// ThresholdAbort ends the rollout as failed: nothing new starts,
	// operations in flight finish, and nothing is undone.
	ThresholdAbort ThresholdAction = "abort"
	// ThresholdRollback ends the rollout and undoes it: once its operations
	// in flight finish, the clusters it changed get the inverse operation,
	// newest first, under the rollout's own pacing.
	ThresholdRollback ThresholdAction = "rollback"
)

// Policy is a named deployment policy: an ordered list of phases, kept on
// the policies topic beside the inventory, that rollouts name instead of
// writing out their own strategy ("azure-first", "internal-first").
type Policy struct {
	Name        string
	Description string
	Phases      []Phase
	// DriftCorrection, when enabled, lets the planner correct drifted
	// clusters by itself, under this policy's phases.
	DriftCorrection DriftCorrection
}

// DriftCorrection lets the planner correct drift by itself: a cluster the
// selector picks whose health signal reports drift, and that no
// unfinished workflow targets, gets a workflow of its own that brings it
// back (an upgrade to the desired version first, then a config change),
// planned with the policy's phases, so that every safety control applies.
// At most MaxPerHour such workflows start under the policy in any hour.
type DriftCorrection struct {
	Enabled bool
	// Selector picks the clusters whose drift is corrected; empty: all.
	Selector string
	// MaxPerHour is the most corrections started in any hour; 0 means 1.
	MaxPerHour int
}

// PerHour is the most corrections started in any hour.
func (c DriftCorrection) PerHour() int { return max(c.MaxPerHour, 1) }

// Spec is a rollout as requested.
type Spec struct {
	Name      string
	Operation Operation
	// Selector picks the targets from the inventory (Kubernetes label selector syntax).
	Selector string
	// Clusters names targets explicitly, in addition to those the selector picks.
	// A name that is not in the inventory rejects the request.
	Clusters []string
	// Phases are taken in order. None means one phase over every target,
	// unless Policy names a deployment policy whose phases the planner
	// takes when it accepts the rollout.
	Phases           []Phase
	Policy           string
	FailureThreshold Threshold
	// Windows limit when targets may be started (see WindowRule). None:
	// any time.
	Windows []WindowRule
	// OnConflict says what happens when a target is already in another
	// unfinished rollout: it waits for that rollout's operation on it
	// (ConflictWait, the default), or the request is rejected.
	OnConflict Conflict
	// OperationTimeout bounds one attempt at the operation on a cluster
	// (0: the executor's own limit, which also caps this one).
	OperationTimeout time.Duration
	// Retries is how many times a failed operation is tried again before
	// the cluster counts as failed; RetryBackoff is the wait before the
	// first retry, doubled for each further one.
	Retries      int
	RetryBackoff time.Duration
	// AutoResume lets a rollout paused because clusters turned unhealthy
	// resume by itself once all of them have been healthy again for this
	// long; 0 leaves it to a person. A pause with any failed operation, or
	// by a person, always waits for a person.
	AutoResume time.Duration
	// UnhealthyTargets says what happens to a target that is unhealthy
	// when its turn comes: it is held until it recovers (HoldUnhealthy,
	// the default), or skipped and reported.
	UnhealthyTargets UnhealthyPolicy
}

// Conflict is a rollout's policy towards targets in other rollouts.
type Conflict string

const (
	ConflictWait   Conflict = ""
	ConflictReject Conflict = "reject"
)

// UnhealthyPolicy is a rollout's policy towards targets unhealthy before
// their operation.
type UnhealthyPolicy string

const (
	HoldUnhealthy UnhealthyPolicy = ""
	SkipUnhealthy UnhealthyPolicy = "skip"
)

// WindowRule limits when the clusters its Selector picks (every target, if
// empty) may be started: inside one of Allow, if any, and inside none of
// Deny. A cluster several rules pick must satisfy them all. Windows are
// written as pkg/window parses them ("Mon-Fri 22:00-04:00 Europe/Paris",
// or an absolute "2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"). Outside
// its windows a cluster is not started; operations in flight finish.
type WindowRule struct {
	Selector string
	Allow    []string
	Deny     []string
}
