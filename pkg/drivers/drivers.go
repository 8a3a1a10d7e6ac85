// Package drivers defines how Flotilla acts on a cluster and how it watches
// one: the executor converges a cluster to an operation's desired state
// through a [Driver], and the monitor observes it through a [Prober]. A
// [Registry] maps the driver name an inventory entry carries
// ([inventory.Cluster.Driver], e.g. "sim") to both.
//
// Drivers live outside Kafka, so they cannot take part in its transactions.
// Flotilla makes up for that with idempotence: the executor records that an
// attempt started before it calls [Driver.Apply], and after a crash it calls
// Apply again with the same command ID. A driver must make that second call
// harmless: it checks the cluster first and completes or confirms the
// operation, never changing the cluster a second time.
package drivers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// Request asks a driver to converge one cluster to the state an operation
// describes.
type Request struct {
	// CommandID identifies the command being carried out. It is stable
	// across redeliveries and executor restarts, so a driver can tell "I
	// already did this" from "this is new".
	CommandID string
	// Attempt numbers the attempts at one target of a workflow, from 1: a
	// retry is a new command (a new CommandID) with a higher Attempt. A
	// driver needs it only to report it (the simulated fleet's call log
	// records it); 0 means unknown.
	Attempt int
	// Cluster is the inventory entry of the target, as the planner saw it
	// when it decided; Cluster.Address tells the driver how to reach it.
	Cluster inventory.Cluster
	// Operation is the desired state ("version = 3.9.1"), never a step.
	Operation rollout.Operation
	// ConfirmOnly asks the driver only whether this command was carried
	// out already, acting on nothing: Apply returns its Result if so, and
	// an error wrapping ErrNotConfirmed if not (or if the driver cannot
	// tell without acting). The executor asks it of an attempt resumed
	// after its time ran out: the previous owner may have completed it.
	ConfirmOnly bool
	// FencingToken grows with every grant of the cluster to an operation
	// (it is the offset of the grant on the claims topic): an attempt
	// acting under a lower token than one the cluster has seen was
	// superseded, and a driver that can keep the highest token it saw at
	// the cluster should refuse it. 0 means none (a dry run, a test).
	FencingToken int64
	// Fence, when set, reports whether the executor still holds the
	// cluster for this attempt; a driver calls it right before each step
	// that changes the cluster and stops, changing nothing more, when it
	// returns an error. An executor that was frozen past its lease, or
	// lost its partition, must not act: the cluster's next holder may be
	// acting already. Its error wraps ErrFenced.
	Fence func() error
}

// ErrFenced is wrapped by the error of an Apply that stopped because the
// executor no longer holds the cluster (Request.Fence) or because the
// cluster has seen a higher fencing token.
var ErrFenced = errors.New("fenced")

// ErrNotConfirmed is wrapped by the error of a ConfirmOnly Apply for a
// command the driver did not carry out, or cannot tell about.
var ErrNotConfirmed = errors.New("not confirmed")

// CheckFence calls req.Fence, if set.
func (req Request) CheckFence() error {
	if req.Fence == nil {
		return nil
	}
	return req.Fence()
}

// Result is what a driver reports after a successful Apply. The executor
// copies it into the operation's history entry (records.OperationEvent).
type Result struct {
	// PreviousVersion is the version the cluster ran before the operation.
	// When Apply only confirms an operation done earlier, it is still the
	// version from before that operation, if the driver knows it.
	PreviousVersion string
	// Version is the version the cluster runs now.
	Version string
	// Output is a short, human-readable account of what the driver did (the
	// tail of what it printed, for drivers that run commands).
	Output string
}

// Driver converges a cluster to the state an operation describes.
//
// Apply must be idempotent: called again for the same CommandID (after a
// crash of the executor, or a redelivered command), it checks the cluster
// first and completes or confirms, never changing the cluster a second time.
// Apply must honour ctx: when ctx is cancelled it returns promptly, having
// changed the cluster either fully or not at all where the driver can
// ensure it.
//
// Any error from Apply means the operation failed; err.Error() becomes the
// failure reason people read, so it should say what went wrong on which
// cluster. There is deliberately no distinction between "the cluster
// refused" and "the driver could not reach it": either way the operation
// did not happen, and the planner's failure threshold decides what follows.
type Driver interface {
	Apply(ctx context.Context, req Request) (Result, error)
}

// Snapshot is what a cluster has now for the keys a config operation
// touches: the keys it sets (Operation.Config) and those it resets
// (Operation.Reset). Each of those keys is in exactly one of Config and
// Unset.
type Snapshot struct {
	// Version is the version the cluster runs ("" if the driver cannot
	// tell).
	Version string
	// Config holds the keys that have a value of their own (an override),
	// with that value.
	Config map[string]string
	// Unset lists, in ascending order, the keys that have no value of
	// their own: they are at the cluster's default.
	Unset []string
}

// Snapshotter is implemented by a [Driver] that can read the current
// values of config keys, which is what makes a config operation undoable.
//
// For a new attempt at a config operation, the executor calls Snapshot
// before it records "started", and records what it returns in that event
// (records.OperationEvent.PreviousConfig and PreviousUnset): what a
// rollback needs is in the log before the cluster changes. A resumed
// attempt is not snapshotted again, since the cluster may already have
// changed; it keeps what its "started" event recorded. The executor does
// not call Snapshot for other operation kinds.
//
// Snapshot must not change the cluster. An error means the previous state
// could not be read (err.Error() names the cluster and the key): the
// executor then fails the operation without acting, since it could not be
// undone. A driver that does not implement Snapshotter records no previous
// config, and its clusters' config changes cannot be rolled back.
type Snapshotter interface {
	Snapshot(ctx context.Context, req Request) (Snapshot, error)
}

// ConfigKeys returns the keys a config operation touches: those it sets and
// those it resets, in ascending order. (Keys it expects values of are
// among them: see rollout.Spec.Validate.)
func ConfigKeys(op rollout.Operation) []string {
	keys := slices.Collect(maps.Keys(op.Config))
	keys = append(keys, op.Reset...)
	slices.Sort(keys)
	return slices.Compact(keys)
}

// Check reports whether s accounts for every key op touches exactly once,
// in Config or in Unset, and for no other key: a rollback built from an
// incomplete snapshot would leave keys changed.
func (s Snapshot) Check(op rollout.Operation) error {
	want := ConfigKeys(op)
	var problems []string
	for _, k := range want {
		_, set := s.Config[k]
		switch unset := slices.Contains(s.Unset, k); {
		case set && unset:
			problems = append(problems, fmt.Sprintf("%s is both set and unset", k))
		case !set && !unset:
			problems = append(problems, fmt.Sprintf("%s is missing", k))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Config)) {
		if !slices.Contains(want, k) {
			problems = append(problems, fmt.Sprintf("%s is not a key of the operation", k))
		}
	}
	for _, k := range s.Unset {
		if !slices.Contains(want, k) {
			problems = append(problems, fmt.Sprintf("%s is not a key of the operation", k))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("incomplete snapshot: %s", strings.Join(problems, "; "))
	}
	return nil
}

// Observation is what a probe saw of a cluster at one moment.
type Observation struct {
	// Status is the cluster's health.
	Status records.HealthStatus
	// Reasons explain a status other than healthy, one short line each
	// (e.g. "runs bad version 3.9.2").
	Reasons []string
	// Version is the software version the cluster was seen to run.
	Version string
	// ConfigHash is a hash of the configs Flotilla manages on the cluster,
	// as read ("" when the prober reads no configs).
	ConfigHash string
	// Config holds the values of the config keys the prober read, for
	// drift detection: a key read that has no value maps to "". A key
	// missing was not read, and cannot be told to drift, unless
	// ConfigComplete is set.
	Config map[string]string
	// ConfigComplete says Config holds every key the cluster has a value
	// for, so that a key missing from it has no value (the simulated
	// fleet reads its whole config; the kafka prober only managed keys).
	ConfigComplete bool
	// Details are what the probe measured, for people.
	Details map[string]string
}

// Prober observes a cluster's health and version for the monitor.
//
// Probe returns an error only when it could not observe the cluster at all
// (unreachable, malformed state); the monitor then reports the cluster's
// health as unknown or unhealthy with the error as the reason. A cluster
// that was observed and found wanting is not an error: it is an Observation
// with an unhealthy Status.
type Prober interface {
	Probe(ctx context.Context, c inventory.Cluster) (Observation, error)
}

// DriverFunc adapts a function to a [Driver], for tests and small drivers.
type DriverFunc func(ctx context.Context, req Request) (Result, error)

// Apply calls fn(ctx, req).
func (fn DriverFunc) Apply(ctx context.Context, req Request) (Result, error) { return fn(ctx, req) }

// ProberFunc adapts a function to a [Prober], for tests and small probes.
type ProberFunc func(ctx context.Context, c inventory.Cluster) (Observation, error)

// Probe calls fn(ctx, c).
func (fn ProberFunc) Probe(ctx context.Context, c inventory.Cluster) (Observation, error) {
	return fn(ctx, c)
}

// ErrUnknownDriver is wrapped by the errors of [Registry.Driver] and
// [Registry.Prober] when nothing is registered under the asked name: the
// inventory names a driver this process was not built or configured with.
// Check for it with errors.Is.
var ErrUnknownDriver = errors.New("unknown driver")

// unknownError says which name was asked for and which exist, while
// matching ErrUnknownDriver with errors.Is.
type unknownError struct {
	what string // "driver" or "prober"
	name string
	have []string
}

func (e *unknownError) Error() string {
	have := "none"
	if len(e.have) > 0 {
		have = strings.Join(e.have, ", ")
	}
	return fmt.Sprintf("no %s named %q (have: %s)", e.what, e.name, have)
}

func (e *unknownError) Unwrap() error { return ErrUnknownDriver }

// Registry maps driver names, as inventory entries carry them, to the
// [Driver] that applies operations and the [Prober] that watches clusters.
// It is safe for concurrent use; the usual pattern is to fill it at start-up
// and only read it afterwards.
type Registry struct {
	mu      sync.RWMutex
	drivers map[string]Driver
	probers map[string]Prober
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{drivers: map[string]Driver{}, probers: map[string]Prober{}}
}

// Register makes d and p available under name. Either may be nil when a
// process needs only one side (the executor only drives, the monitor only
// probes); asking for the missing side then fails like an unknown name.
// Registering a name again replaces what was registered before, which lets
// tests swap in a fake.
//
// Register panics if name is empty, since that is a programming error no
// inventory entry could ever match.
func (r *Registry) Register(name string, d Driver, p Prober) {
	if name == "" {
		panic("drivers: Register with an empty name")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.drivers, name)
	delete(r.probers, name)
	if d != nil {
		r.drivers[name] = d
	}
	if p != nil {
		r.probers[name] = p
	}
}

// Driver returns the driver registered under name. If there is none, the
// error names the registered ones (`no driver named "x" (have: sim)`) and
// wraps [ErrUnknownDriver].
func (r *Registry) Driver(name string) (Driver, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if d, ok := r.drivers[name]; ok {
		return d, nil
	}
	return nil, &unknownError{what: "driver", name: name, have: slices.Sorted(maps.Keys(r.drivers))}
}

// Prober returns the prober registered under name. If there is none, the
// error names the registered ones (`no prober named "x" (have: sim)`) and
// wraps [ErrUnknownDriver].
func (r *Registry) Prober(name string) (Prober, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if p, ok := r.probers[name]; ok {
		return p, nil
	}
	return nil, &unknownError{what: "prober", name: name, have: slices.Sorted(maps.Keys(r.probers))}
}

// Names returns every registered name, with a driver or a prober or both,
// in ascending order.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	set := map[string]bool{}
	for n := range r.drivers {
		set[n] = true
	}
	for n := range r.probers {
		set[n] = true
	}
	return slices.Sorted(maps.Keys(set))
}
