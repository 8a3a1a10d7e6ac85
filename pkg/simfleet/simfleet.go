// Package simfleet is a simulated fleet of clusters: a [drivers.Driver] and
// [drivers.Prober] that need no real Kafka. `flotilla dev`, the README tour
// and the integration tests run rollouts against it.
//
// The simulation is small but honest about what matters to Flotilla:
// operations take time (on an injectable clock) and can be cancelled, a
// configurable share of them fail, and a cluster running a "bad" version
// probes unhealthy. Above all it is idempotent the way a real driver must
// be: it remembers the command IDs each cluster has applied, so re-applying
// a command after an executor crash confirms it instead of acting twice, and
// [Fleet.Applies] counts only real changes, which is how tests prove that
// each cluster was upgraded exactly once.
package simfleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// DriverName is the name under which [Fleet.Register] registers the fleet,
// and the Driver of every cluster [GenerateClusters] makes.
const DriverName = "sim"

// Options configure a [Fleet]. The zero value is a usable in-memory fleet
// whose operations succeed at once.
type Options struct {
	// Dir, if set, persists each cluster's state as <Dir>/<id>.json
	// (written atomically: a temporary file, then a rename). The fleet then
	// survives a restart of `flotilla dev`, and two processes on one
	// machine (an executor and a monitor) share it: Probe and Cluster read
	// the file each time, so they see the other process's changes.
	//
	// Two processes must not Apply to the same cluster at once: Apply
	// serialises per cluster only within one process. Flotilla's executor
	// never applies two operations to one cluster at once, so this holds.
	Dir string
	// OpDuration is how long an operation takes, measured on Clock.
	OpDuration time.Duration
	// FailureRate, from 0 to 1, is the share of operations that fail. Which
	// ones fail is decided from a hash of the command ID, so an operation
	// resumed after a crash gets the same answer as its first attempt.
	FailureRate float64
	// BadVersions are versions a cluster probes unhealthy on. They can be
	// changed at run time with [Fleet.SetBadVersions].
	BadVersions []string
	// Clock measures OpDuration; nil means the real clock. Tests use
	// clockwork.NewFakeClock.
	Clock clockwork.Clock
	// CallLog, if set, is a file to which every Apply call appends a
	// "begin" line when it starts and an "end" line with its outcome (see
	// [Call] and [ReadCallLog]). Several processes may share it. Unlike
	// [Fleet.Applies], it misses nothing: a re-apply that only confirms,
	// two processes applying at once, a call cut short by a crash.
	CallLog string
}

// State is what the simulation knows of one cluster. It is also the JSON
// content of a cluster's file when [Options.Dir] is set.
type State struct {
	ID       string            `json:"id"`
	Version  string            `json:"version"`
	Config   map[string]string `json:"config,omitempty"`
	Restarts int               `json:"restarts"`
	// Applies counts the operations that really changed the cluster.
	Applies int `json:"applies"`
	// AppliedCommands lists, oldest first, every command ID Apply
	// succeeded for, whether or not it changed anything; applying one of
	// them again only confirms it.
	AppliedCommands []string `json:"appliedCommands,omitempty"`
	// PreviousVersions holds, by command ID, the version the cluster ran
	// before that command, so that confirming a command reports the same
	// PreviousVersion as applying it did.
	PreviousVersions map[string]string `json:"previousVersions,omitempty"`
	// FencingToken is the highest fencing token an Apply came with: one
	// with a lower token was superseded and is refused.
	FencingToken int64 `json:"fencingToken,omitempty"`
}

func (s State) clone() State {
	s.Config = maps.Clone(s.Config)
	s.AppliedCommands = slices.Clone(s.AppliedCommands)
	s.PreviousVersions = maps.Clone(s.PreviousVersions)
	return s
}

func (s State) applied(commandID string) bool {
	return slices.Contains(s.AppliedCommands, commandID)
}

// Fleet is a simulated fleet. Clusters come into being the first time Apply
// or Probe meets them, from their inventory entry. A Fleet is safe for
// concurrent use: Apply may run from many goroutines at once, for
// different clusters or even twice for the same command.
type Fleet struct {
	clock       clockwork.Clock
	opDuration  time.Duration
	failureRate float64
	store       store
	calls       *callLog // nil without Options.CallLog

	mu    sync.Mutex
	bad   map[string]bool
	locks map[string]chan struct{} // per-cluster Apply lock, a channel so that waiting honours ctx
}

var (
	_ drivers.Driver      = (*Fleet)(nil)
	_ drivers.Prober      = (*Fleet)(nil)
	_ drivers.Snapshotter = (*Fleet)(nil)
)

// New returns a fleet configured by opts. It fails if FailureRate is not
// within 0..1, if OpDuration is negative, or if Dir cannot be created.
func New(opts Options) (*Fleet, error) {
	if math.IsNaN(opts.FailureRate) || opts.FailureRate < 0 || opts.FailureRate > 1 {
		return nil, fmt.Errorf("simfleet: failure rate %v is not within 0..1", opts.FailureRate)
	}
	if opts.OpDuration < 0 {
		return nil, fmt.Errorf("simfleet: operation duration %v is negative", opts.OpDuration)
	}
	f := &Fleet{
		clock:       opts.Clock,
		opDuration:  opts.OpDuration,
		failureRate: opts.FailureRate,
		locks:       map[string]chan struct{}{},
	}
	if f.clock == nil {
		f.clock = clockwork.NewRealClock()
	}
	if opts.Dir == "" {
		f.store = newMemStore()
	} else {
		s, err := newDirStore(opts.Dir)
		if err != nil {
			return nil, err
		}
		f.store = s
	}
	if opts.CallLog != "" {
		l, err := openCallLog(opts.CallLog)
		if err != nil {
			return nil, err
		}
		f.calls = l
	}
	f.SetBadVersions(opts.BadVersions...)
	return f, nil
}

// Register registers the fleet as both driver and prober under
// [DriverName] ("sim").
func (f *Fleet) Register(r *drivers.Registry) { r.Register(DriverName, f, f) }

// SetBadVersions replaces the versions a cluster probes unhealthy on. Tests
// call it while a rollout runs to make the clusters already upgraded turn
// unhealthy.
func (f *Fleet) SetBadVersions(v ...string) {
	bad := make(map[string]bool, len(v))
	for _, s := range v {
		bad[s] = true
	}
	f.mu.Lock()
	f.bad = bad
	f.mu.Unlock()
}

func (f *Fleet) isBad(version string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bad[version]
}

// Apply implements [drivers.Driver]: it converges the cluster named by
// req.Cluster.ID to req.Operation. An upgrade sets the version, a config
// operation merges its Config keys into the cluster's config and deletes
// its Reset keys from it, a restart bumps the restart counter. A cluster the simulation has not met yet is created from
// req.Cluster, running req.Cluster.Version.
//
// Like a real driver, Apply checks the cluster before it acts, and confirms
// at once, without waiting and without changing anything, when the command
// was already applied (a redelivery, or a resume after an executor crash)
// or when the cluster is already in the desired state (an upgrade to the
// version it runs, a config it already has, with the keys to reset already
// absent). Otherwise it waits OpDuration
// on the clock and then changes the cluster, or fails. Applies to one cluster are
// serialised, so two racing calls for one command change it once.
//
// Apply fails, changing nothing, when ctx is cancelled before the change
// (while waiting for another Apply to the same cluster, or during
// OpDuration), when the operation is malformed, when the command is one of
// the FailureRate share chosen to fail ("simulated failure applying upgrade
// to 3.9.1"), or when the state file cannot be read or written.
//
// With Options.CallLog set, it records the call there before anything
// else, and fails without acting if it cannot.
func (f *Fleet) Apply(ctx context.Context, req drivers.Request) (res drivers.Result, err error) {
	call, err := f.calls.begin(req)
	if err != nil {
		return drivers.Result{}, err
	}
	defer func() { call.end(res, err) }()
	id := req.Cluster.ID
	if err := checkID(id); err != nil {
		return drivers.Result{}, err
	}
	if req.CommandID == "" {
		return drivers.Result{}, fmt.Errorf("apply %s to %s: no command id", req.Operation.Kind, id)
	}
	if err := checkOperation(req.Operation); err != nil {
		return drivers.Result{}, fmt.Errorf("apply to %s: %w", id, err)
	}

	unlock, err := f.lock(ctx, id)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("apply %s to %s: %w", req.Operation.Kind, id, err)
	}
	defer unlock()

	st, found, err := f.store.load(id)
	if err != nil {
		return drivers.Result{}, err
	}
	if !found {
		st = State{ID: id, Version: req.Cluster.Version}
	}
	call.read(st)
	if req.FencingToken != 0 && req.FencingToken < st.FencingToken {
		return drivers.Result{}, fmt.Errorf("%s refused command %s: fencing token %d is older than %d, which it has seen: %w",
			id, req.CommandID, req.FencingToken, st.FencingToken, drivers.ErrFenced)
	}
	if req.FencingToken > st.FencingToken {
		st.FencingToken = req.FencingToken
		if err := f.store.save(st); err != nil {
			return drivers.Result{}, err
		}
	}

	if st.applied(req.CommandID) {
		call.settle(OutcomeAlreadyApplied)
		prev, ok := st.PreviousVersions[req.CommandID]
		if !ok {
			prev = st.Version
		}
		return drivers.Result{
			PreviousVersion: prev,
			Version:         st.Version,
			Output:          fmt.Sprintf("command %s was already applied to %s; it runs %s", req.CommandID, id, st.Version),
		}, nil
	}

	if req.ConfirmOnly {
		return drivers.Result{}, fmt.Errorf("command %s was not applied to %s: %w", req.CommandID, id, drivers.ErrNotConfirmed)
	}
	prev := st.Version
	if out, done := converged(st, req.Operation); done {
		call.settle(OutcomeConfirmed)
		return f.record(st, req.CommandID, prev, false, out)
	}

	if err := f.sleep(ctx); err != nil {
		return drivers.Result{}, fmt.Errorf("%s of %s interrupted: %w", req.Operation.Kind, id, err)
	}
	// The wait may have outlived the executor's hold on the cluster (it
	// was frozen, or lost its partition): check before changing anything.
	if err := req.CheckFence(); err != nil {
		return drivers.Result{}, fmt.Errorf("%s of %s stopped before changing it: %w", req.Operation.Kind, id, err)
	}
	if f.fails(req.CommandID) {
		return drivers.Result{}, errors.New(failureMessage(req.Operation))
	}

	var out string
	switch op := req.Operation; op.Kind {
	case rollout.Upgrade:
		st.Version = op.Version
		out = fmt.Sprintf("upgraded %s from %s to %s", id, prev, op.Version)
	case rollout.Config:
		if st.Config == nil {
			st.Config = map[string]string{}
		}
		maps.Copy(st.Config, op.Config)
		for _, k := range op.Reset {
			delete(st.Config, k)
		}
		out = fmt.Sprintf("%s on %s", configSummary(op), id)
	case rollout.Restart:
		st.Restarts++
		out = fmt.Sprintf("restarted %s (restart %d)", id, st.Restarts)
	}
	call.settle(OutcomeChanged)
	return f.record(st, req.CommandID, prev, true, out)
}

// record remembers commandID as applied to st, counts a real change, and
// saves st.
func (f *Fleet) record(st State, commandID, prev string, changed bool, out string) (drivers.Result, error) {
	if changed {
		st.Applies++
	}
	st.AppliedCommands = append(st.AppliedCommands, commandID)
	if st.PreviousVersions == nil {
		st.PreviousVersions = map[string]string{}
	}
	st.PreviousVersions[commandID] = prev
	if err := f.store.save(st); err != nil {
		return drivers.Result{}, err
	}
	return drivers.Result{PreviousVersion: prev, Version: st.Version, Output: out}, nil
}

// converged reports whether st already is in the state op describes, with
// a line saying so. A restart is never converged: it is an act, not a state.
func converged(st State, op rollout.Operation) (string, bool) {
	switch op.Kind {
	case rollout.Upgrade:
		if st.Version == op.Version {
			return fmt.Sprintf("%s already runs %s", st.ID, op.Version), true
		}
	case rollout.Config:
		for k, v := range op.Config {
			if cur, ok := st.Config[k]; !ok || cur != v {
				return "", false
			}
		}
		for _, k := range op.Reset {
			if _, ok := st.Config[k]; ok {
				return "", false
			}
		}
		if len(op.Config) == 0 && len(op.Reset) == 0 {
			return fmt.Sprintf("no config to set on %s", st.ID), true
		}
		return fmt.Sprintf("%s already has the desired config (%s)", st.ID, configSummary(op)), true
	}
	return "", false
}

func checkOperation(op rollout.Operation) error {
	switch op.Kind {
	case rollout.Upgrade:
		if op.Version == "" {
			return errors.New("upgrade names no version")
		}
	case rollout.Config, rollout.Restart:
	default:
		return fmt.Errorf("unsupported operation kind %q", op.Kind)
	}
	return nil
}

func failureMessage(op rollout.Operation) string {
	switch op.Kind {
	case rollout.Upgrade:
		return "simulated failure applying upgrade to " + op.Version
	case rollout.Config:
		return "simulated failure applying config: " + configSummary(op)
	}
	return "simulated failure applying " + string(op.Kind)
}

// configSummary names what a config operation does: "set a, b; reset c".
func configSummary(op rollout.Operation) string {
	var parts []string
	if len(op.Config) > 0 {
		parts = append(parts, "set "+strings.Join(slices.Sorted(maps.Keys(op.Config)), ", "))
	}
	if len(op.Reset) > 0 {
		parts = append(parts, "reset "+strings.Join(slices.Sorted(slices.Values(op.Reset)), ", "))
	}
	return strings.Join(parts, "; ")
}

// Snapshot implements [drivers.Snapshotter]: it reports the cluster's
// version and, for each key req.Operation sets or resets, its value, or
// that it has none. A cluster the simulation has not met yet is described
// from req.Cluster, with no config. Snapshot changes nothing.
//
// Snapshot fails when ctx is already done, when the cluster ID cannot name
// a sim cluster, or when its state file cannot be read.
func (f *Fleet) Snapshot(ctx context.Context, req drivers.Request) (drivers.Snapshot, error) {
	id := req.Cluster.ID
	if err := ctx.Err(); err != nil {
		return drivers.Snapshot{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	if err := checkID(id); err != nil {
		return drivers.Snapshot{}, err
	}
	st, found, err := f.store.load(id)
	if err != nil {
		return drivers.Snapshot{}, err
	}
	if !found {
		st = State{ID: id, Version: req.Cluster.Version}
	}
	snap := drivers.Snapshot{Version: st.Version}
	for _, k := range drivers.ConfigKeys(req.Operation) {
		v, ok := st.Config[k]
		if !ok {
			snap.Unset = append(snap.Unset, k)
			continue
		}
		if snap.Config == nil {
			snap.Config = map[string]string{}
		}
		snap.Config[k] = v
	}
	return snap, nil
}

// fails decides from the command ID alone whether an operation fails, so
// that every attempt at the same command gets the same answer.
func (f *Fleet) fails(commandID string) bool { return WouldFail(f.failureRate, commandID) }

func (f *Fleet) sleep(ctx context.Context) error {
	if f.opDuration <= 0 {
		return ctx.Err()
	}
	t := f.clock.NewTimer(f.opDuration)
	defer t.Stop()
	select {
	case <-t.Chan():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lock takes the Apply lock of cluster id, or gives up when ctx is done.
func (f *Fleet) lock(ctx context.Context, id string) (unlock func(), err error) {
	f.mu.Lock()
	l, ok := f.locks[id]
	if !ok {
		l = make(chan struct{}, 1)
		f.locks[id] = l
	}
	f.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Probe implements [drivers.Prober]: it reports the cluster healthy, or
// unhealthy with the reason "runs bad version 3.9.2" when it runs one of
// the bad versions. A cluster the simulation has not met yet is created
// from c, running c.Version.
//
// Probe fails when ctx is already done, when c.ID cannot name a sim
// cluster, or when the cluster's state file cannot be read.
func (f *Fleet) Probe(ctx context.Context, c inventory.Cluster) (drivers.Observation, error) {
	if err := ctx.Err(); err != nil {
		return drivers.Observation{}, fmt.Errorf("probe %s: %w", c.ID, err)
	}
	if err := checkID(c.ID); err != nil {
		return drivers.Observation{}, err
	}
	st, err := f.store.loadOrCreate(State{ID: c.ID, Version: c.Version})
	if err != nil {
		return drivers.Observation{}, err
	}
	obs := drivers.Observation{Status: records.HealthHealthy, Version: st.Version, ConfigHash: configHash(st.Config),
		Config: maps.Clone(st.Config), ConfigComplete: true}
	if f.isBad(st.Version) {
		obs.Status = records.HealthUnhealthy
		obs.Reasons = []string{"runs bad version " + st.Version}
	}
	return obs, nil
}

// Change changes the simulated cluster id behind Flotilla's back, as a
// person or another tool would (a version installed by hand, a config
// edited on a broker): change gets the cluster's state to edit, and what
// it leaves is saved. No operation is recorded; the next probe sees it.
// It fails if the simulation has not met the cluster or cannot save it.
func (f *Fleet) Change(ctx context.Context, id string, change func(*State)) error {
	if err := checkID(id); err != nil {
		return err
	}
	unlock, err := f.lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	st, found, err := f.store.load(id)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("sim cluster %s: not met yet (no operation or probe has created it)", id)
	}
	change(&st)
	return f.store.save(st)
}

// configHash hashes a simulated cluster's config, so that the monitor sees
// a config operation land ("" for a cluster with no config set).
func configHash(config map[string]string) string {
	if len(config) == 0 {
		return ""
	}
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(config)) {
		fmt.Fprintf(h, "%s=%s\n", k, config[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Cluster returns the state of the cluster id, and false if the simulation
// has not met it (or, with Dir set, its file cannot be read). The State is a
// copy: changing it changes nothing in the fleet.
func (f *Fleet) Cluster(id string) (State, bool) {
	if checkID(id) != nil {
		return State{}, false
	}
	st, found, err := f.store.load(id)
	if err != nil || !found {
		return State{}, false
	}
	return st, true
}

// Applies returns how many operations really changed the cluster id:
// confirmed re-applies, upgrades to the version it already ran and failed
// or cancelled operations do not count.
func (f *Fleet) Applies(clusterID string) int {
	st, _ := f.Cluster(clusterID)
	return st.Applies
}

// TotalApplies returns the sum of [Fleet.Applies] over every cluster of the
// fleet (with Dir set, every cluster file in Dir; unreadable ones count 0).
func (f *Fleet) TotalApplies() int {
	total := 0
	for _, st := range f.store.all() {
		total += st.Applies
	}
	return total
}

// idPattern matches inventory cluster IDs; it also keeps IDs safe to use as
// file names (no separators, no leading dot).
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func checkID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("sim cluster id %q: must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}
