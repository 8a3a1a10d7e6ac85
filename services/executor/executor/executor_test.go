package executor_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/claims"
	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/services/executor/executor"
)

// fakeDriver records the calls made to it, and what the operations topic
// held when Apply was called.
type fakeDriver struct {
	bb      backbone.Config
	snap    drivers.Snapshot
	snapErr error

	mu      sync.Mutex
	calls   []string                 // "snapshot <command>", "apply <command>"
	atApply []records.OperationEvent // the operations log as Apply found it
}

func (d *fakeDriver) Snapshot(_ context.Context, req drivers.Request) (drivers.Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, "snapshot "+req.CommandID)
	return d.snap, d.snapErr
}

func (d *fakeDriver) Apply(ctx context.Context, req drivers.Request) (drivers.Result, error) {
	if req.ConfirmOnly { // it never carried anything out before
		d.mu.Lock()
		defer d.mu.Unlock()
		d.calls = append(d.calls, "confirm "+req.CommandID)
		return drivers.Result{}, fmt.Errorf("test driver: %w", drivers.ErrNotConfirmed)
	}
	evs, err := readOperations(ctx, d.bb)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, "apply "+req.CommandID)
	d.atApply = evs
	if err != nil {
		return drivers.Result{}, fmt.Errorf("test driver: read the operations log: %w", err)
	}
	return drivers.Result{PreviousVersion: req.Cluster.Version, Version: req.Cluster.Version, Output: "done"}, nil
}

func (d *fakeDriver) seen() ([]string, []records.OperationEvent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls), slices.Clone(d.atApply)
}

var cluster = inventory.Cluster{ID: "kafka-1", Driver: "fake", Version: "3.8.0"}

func command(op rollout.Operation) records.Command {
	return records.Command{
		Envelope:   records.Envelope{ID: uuid.NewString(), Time: time.Now().UTC(), Principal: "planner"},
		ID:         "wf-1/kafka-1#1",
		WorkflowID: "wf-1",
		ClusterID:  cluster.ID,
		Attempt:    1,
		Operation:  op,
		Cluster:    cluster,
	}
}

var configChange = rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "2"}, Reset: []string{"b"}}

// newBackbone makes a namespace of the test broker with its topics.
func newBackbone(t *testing.T) backbone.Config {
	t.Helper()
	bb := backbone.Config{
		Brokers:   brokertest.Addrs(t),
		Namespace: "exectest-" + uuid.NewString()[:8],
		Logger:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bb.EnsureTopics(ctx, 1, 1); err != nil {
		t.Fatalf("create topics: %v", err)
	}
	return bb
}

// runExecutor runs an executor with d registered as "fake" until the test
// ends.
func runExecutor(t *testing.T, bb backbone.Config, d drivers.Driver) *clockwork.FakeClock {
	t.Helper()
	return runExecutorWith(t, bb, d, nil)
}

// runExecutorWith is runExecutor with the config changed by edit.
func runExecutorWith(t *testing.T, bb backbone.Config, d drivers.Driver, edit func(*executor.Config)) *clockwork.FakeClock {
	t.Helper()
	clock := clockwork.NewFakeClock()
	done := startExecutor(t, bb, d, clock, edit)
	t.Cleanup(func() {
		if err := done(); err != nil {
			t.Errorf("executor: %v", err)
		}
	})
	return clock
}

// startExecutor starts an executor and returns the function that stops it
// and returns what Run returned.
func startExecutor(t *testing.T, bb backbone.Config, d drivers.Driver, clock clockwork.Clock, edit func(*executor.Config)) (stop func() error) {
	stop, _ = startExecutorExited(t, bb, d, clock, edit)
	return stop
}

// startExecutorExited is startExecutor, and also returns a channel closed
// once Run has returned by itself or been stopped; stop returns its error.
func startExecutorExited(t *testing.T, bb backbone.Config, d drivers.Driver, clock clockwork.Clock, edit func(*executor.Config)) (stop func() error, exited <-chan struct{}) {
	t.Helper()
	reg := drivers.NewRegistry()
	reg.Register("fake", d, nil)
	cfg := executor.Config{Backbone: bb, Drivers: reg, Clock: clock, LeaseClock: clock}
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() {
		err = executor.Run(ctx, cfg)
		close(done)
	}()
	return sync.OnceValue(func() error {
		cancel()
		select {
		case <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("executor did not stop within 30s")
		}
	}), done
}

func produce(t *testing.T, bb backbone.Config, topic string, v any) {
	t.Helper()
	value, err := records.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	var key string
	switch v := v.(type) {
	case records.Command:
		key = topics.TargetKey(v.WorkflowID, v.ClusterID)
	case records.OperationEvent:
		key = topics.TargetKey(v.WorkflowID, v.ClusterID)
	case records.ClaimRecord:
		key = records.ClaimKey(v.ClusterID, v.CommandID)
	}
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: value}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func readOperations(ctx context.Context, bb backbone.Config) ([]records.OperationEvent, error) {
	var evs []records.OperationEvent
	var decodeErr error
	err := logtable.ReadToEnd(ctx, bb.Opts(), bb.Names().Operations, nil, func(r *kgo.Record) {
		ev, err := records.DecodeOperationEvent(r.Value)
		decodeErr = errors.Join(decodeErr, err)
		evs = append(evs, ev)
	})
	return evs, errors.Join(err, decodeErr)
}

// awaitFinished waits until the operations log holds a terminal event, and
// returns the whole log.
func awaitFinished(t *testing.T, bb backbone.Config) []records.OperationEvent {
	t.Helper()
	return awaitLog(t, bb, "an operation finishing", func(evs []records.OperationEvent) bool {
		return slices.ContainsFunc(evs, func(ev records.OperationEvent) bool { return ev.Status.Terminal() })
	})
}

// awaitLog waits until the operations log, of the records that decode,
// satisfies done, and returns it.
func awaitLog(t *testing.T, bb backbone.Config, what string, done func([]records.OperationEvent) bool) []records.OperationEvent {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var evs []records.OperationEvent
		err := logtable.ReadToEnd(ctx, bb.Opts(), bb.Names().Operations, nil, func(r *kgo.Record) {
			if ev, err := records.DecodeOperationEvent(r.Value); err == nil {
				evs = append(evs, ev)
			}
		})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if done(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s; the log holds %+v", what, evs)
		}
		time.Sleep(20 * time.Millisecond) // the executor works in real time
	}
}

func statuses(evs []records.OperationEvent) []records.OperationStatus {
	out := make([]records.OperationStatus, len(evs))
	for i, ev := range evs {
		out[i] = ev.Status
	}
	return out
}

func wantPrevious(t *testing.T, what string, ev records.OperationEvent, config map[string]string, unset ...string) {
	t.Helper()
	if !maps.Equal(ev.PreviousConfig, config) || !slices.Equal(ev.PreviousUnset, unset) {
		t.Errorf("%s event: previous config %v, unset %v; want %v, %v", what, ev.PreviousConfig, ev.PreviousUnset, config, unset)
	}
}

// What a config operation's keys were is in the log, in the "started"
// event, before the driver changes anything.
func TestRecordsPreviousConfigBeforeApplying(t *testing.T) {
	bb := newBackbone(t)
	d := &fakeDriver{bb: bb, snap: drivers.Snapshot{Version: "3.8.1", Config: map[string]string{"a": "1"}, Unset: []string{"b"}}}
	runExecutor(t, bb, d)
	cmd := command(configChange)
	produce(t, bb, bb.Names().Commands, cmd)

	evs := awaitFinished(t, bb)
	calls, atApply := d.seen()
	if want := []string{"snapshot " + cmd.ID, "apply " + cmd.ID}; !slices.Equal(calls, want) {
		t.Fatalf("driver calls %q, want %q", calls, want)
	}
	if got := statuses(atApply); !slices.Equal(got, []records.OperationStatus{records.OperationStarted}) {
		t.Fatalf("when Apply was called, the log held %v, want the started event alone", got)
	}
	wantPrevious(t, "started (as Apply found it)", atApply[0], map[string]string{"a": "1"}, "b")
	if atApply[0].PreviousVersion != "3.8.1" {
		t.Errorf("started event: previous version %q, want the snapshot's 3.8.1", atApply[0].PreviousVersion)
	}
	if got := statuses(evs); !slices.Equal(got, []records.OperationStatus{records.OperationStarted, records.OperationSucceeded}) {
		t.Fatalf("log %v, want started, succeeded", got)
	}
	wantPrevious(t, "succeeded", evs[1], map[string]string{"a": "1"}, "b")
}

// An upgrade is undone to the version recorded before it; its driver is
// not asked for a snapshot.
func TestNoSnapshotForOtherOperations(t *testing.T) {
	bb := newBackbone(t)
	d := &fakeDriver{bb: bb, snapErr: errors.New("must not be called")}
	runExecutor(t, bb, d)
	cmd := command(rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"})
	produce(t, bb, bb.Names().Commands, cmd)

	evs := awaitFinished(t, bb)
	if calls, _ := d.seen(); !slices.Equal(calls, []string{"apply " + cmd.ID}) {
		t.Fatalf("driver calls %q, want Apply alone", calls)
	}
	if got := statuses(evs); !slices.Equal(got, []records.OperationStatus{records.OperationStarted, records.OperationSucceeded}) {
		t.Fatalf("log %v, want started, succeeded", got)
	}
	if evs[0].PreviousVersion != "3.8.0" || evs[0].PreviousConfig != nil || evs[0].PreviousUnset != nil {
		t.Errorf("started event %+v, want previous version 3.8.0 and no previous config", evs[0])
	}
}

// startedEvent is the "started" event an executor that stopped in the
// middle of cmd left behind.
func startedEvent(cmd records.Command) records.OperationEvent {
	return records.OperationEvent{
		Envelope:   records.Envelope{ID: uuid.NewString(), Time: time.Now().UTC(), Principal: executor.Principal, CausationID: cmd.Envelope.ID},
		CommandID:  cmd.ID,
		WorkflowID: cmd.WorkflowID,
		ClusterID:  cmd.ClusterID,
		Attempt:    cmd.Attempt,
		Status:     records.OperationStarted,
	}
}

// A resumed attempt may find the cluster changed already: it keeps what
// the first attempt recorded and reads nothing again.
func TestResumeKeepsRecordedConfig(t *testing.T) {
	bb := newBackbone(t)
	cmd := command(configChange)
	started := startedEvent(cmd)
	started.PreviousConfig, started.PreviousUnset = map[string]string{"a": "0"}, []string{"b"}
	produce(t, bb, bb.Names().Operations, started)
	// What the cluster has now, after the first attempt changed it.
	d := &fakeDriver{bb: bb, snap: drivers.Snapshot{Config: map[string]string{"a": "2"}, Unset: []string{"b"}}}
	runExecutor(t, bb, d)
	produce(t, bb, bb.Names().Commands, cmd)

	evs := awaitFinished(t, bb)
	if calls, _ := d.seen(); !slices.Equal(calls, []string{"apply " + cmd.ID}) {
		t.Fatalf("driver calls %q, want Apply alone", calls)
	}
	if got := statuses(evs); !slices.Equal(got, []records.OperationStatus{records.OperationStarted, records.OperationSucceeded}) {
		t.Fatalf("log %v (last: %q), want the first attempt's started, then succeeded", got, evs[len(evs)-1].Reason)
	}
	wantPrevious(t, "succeeded", evs[1], map[string]string{"a": "0"}, "b")
}

// When what the keys were cannot be recorded, the operation fails without
// touching the cluster: it could not be undone.
func TestSnapshotFailureFailsWithoutActing(t *testing.T) {
	for _, tt := range []struct {
		name       string
		snap       drivers.Snapshot
		snapErr    error
		wantReason string
	}{
		{name: "driver error", snapErr: errors.New("cluster kafka-1: connection refused"),
			wantReason: "could not record the config of kafka-1 before changing it, so left it alone: cluster kafka-1: connection refused"},
		{name: "incomplete snapshot", snap: drivers.Snapshot{Config: map[string]string{"a": "1"}},
			wantReason: "could not record the config of kafka-1 before changing it, so left it alone: incomplete snapshot: b is missing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bb := newBackbone(t)
			d := &fakeDriver{bb: bb, snap: tt.snap, snapErr: tt.snapErr}
			runExecutor(t, bb, d)
			cmd := command(configChange)
			produce(t, bb, bb.Names().Commands, cmd)

			evs := awaitFinished(t, bb)
			if calls, _ := d.seen(); slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "apply") }) {
				t.Fatalf("driver calls %q: Apply was called", calls)
			}
			if got := statuses(evs); !slices.Equal(got, []records.OperationStatus{records.OperationFailed}) {
				t.Fatalf("log %v, want failed alone", got)
			}
			if evs[0].Reason != tt.wantReason || evs[0].CommandID != cmd.ID {
				t.Errorf("failed event for %s, reason %q; want for %s, %q", evs[0].CommandID, evs[0].Reason, cmd.ID, tt.wantReason)
			}
		})
	}
}

// An attempt resumed after a restart has what is left of its time, as its
// start recorded it, not a whole timeout again: here, nothing.
func TestResumedAttemptKeepsItsDeadline(t *testing.T) {
	bb := newBackbone(t)
	cmd := command(rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"})
	started := startedEvent(cmd)
	started.Deadline = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC) // long before the executor's (fake) now
	produce(t, bb, bb.Names().Operations, started)
	d := &fakeDriver{bb: bb}
	runExecutor(t, bb, d)
	produce(t, bb, bb.Names().Commands, cmd)

	evs := awaitFinished(t, bb)
	if calls, _ := d.seen(); !slices.Equal(calls, []string{"confirm " + cmd.ID}) {
		t.Fatalf("driver calls %q, want only a confirmation: the attempt's time had run out", calls)
	}
	if last := evs[len(evs)-1]; last.Status != records.OperationFailed || !strings.Contains(last.Reason, "timed out") {
		t.Fatalf("outcome %s (%q), want failed, timed out", last.Status, last.Reason)
	}
}

// A new attempt records its deadline when it starts.
func TestStartRecordsTheDeadline(t *testing.T) {
	bb := newBackbone(t)
	cmd := command(rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"})
	cmd.Timeout = 5 * time.Minute
	runExecutor(t, bb, &fakeDriver{bb: bb})
	produce(t, bb, bb.Names().Commands, cmd)
	evs := awaitFinished(t, bb)
	if started := evs[0]; started.Status != records.OperationStarted || started.Deadline.Sub(started.Envelope.Time) != 5*time.Minute {
		t.Fatalf("started event %+v: want a deadline 5m after its start", started)
	}
}

// Claims of commands of the partition that no operation of the executor
// carries out are released: at the partition's assignment, and every
// minute. Those of operations in progress, or waiting for their cluster,
// are kept.
func TestClaimsLeftBehindAreReleased(t *testing.T) {
	bb := newBackbone(t)
	names := bb.Names()
	ended := func(id string) records.Command {
		cmd := command(rollout.Operation{Kind: rollout.Restart})
		cmd.ID, cmd.WorkflowID = id, "wf-"+id
		produce(t, bb, names.Commands, cmd)
		produce(t, bb, names.Operations, startedEvent(cmd))
		done := startedEvent(cmd)
		done.Status = records.OperationSucceeded
		produce(t, bb, names.Operations, done)
		return cmd
	}
	before, after := ended("before"), ended("after")
	gone := command(rollout.Operation{Kind: rollout.Restart}) // its command was never sent
	gone.ID, gone.WorkflowID = "gone", "wf-gone"
	claim(t, bb, before.ClusterID, before.ID, 0)
	claim(t, bb, gone.ClusterID, gone.ID, 0)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	live := followClaims(t, ctx, bb)
	d := newRecordingDriver()
	d.block = make(chan struct{})
	clock := runExecutorWith(t, bb, d, func(c *executor.Config) { c.Lease = time.Hour }) // minutes pass below
	waitLive(t, live)                                                                    // released at assignment

	inProgress := command(rollout.Operation{Kind: rollout.Restart})
	inProgress.ID, inProgress.WorkflowID, inProgress.ClusterID, inProgress.Cluster.ID = "in-progress", "wf-in-progress", "kafka-2", "kafka-2"
	produce(t, bb, names.Commands, inProgress)
	d.waitCalled(t, "in-progress")
	claim(t, bb, after.ClusterID, after.ID, 0) // as if its release had failed
	waitLive(t, live, inProgress.ID, after.ID)
	// A minute passes at a time until a sweep releases it: the first
	// sweep may come before the executor has read the claim.
	for minutes := 1; ; minutes++ {
		clock.Advance(time.Minute)
		if eventually(2*time.Second, func() bool { return liveAre(live, inProgress.ID) }) {
			break
		}
		if minutes == 10 {
			t.Fatalf("the claim left behind is still live after %d sweeps: %v", minutes, live.Live())
		}
	}
	close(d.block)
	waitLive(t, live)
}

// eventually reports whether cond holds within d of real time.
func eventually(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// liveAre reports whether the live claims are those of the given commands.
func liveAre(c *claims.Claims, commands ...string) bool {
	var got []string
	for _, r := range c.Live() {
		got = append(got, r.CommandID)
	}
	slices.Sort(got)
	return slices.Equal(got, slices.Sorted(slices.Values(commands)))
}

// followClaims follows the claims topic, as an executor does.
func followClaims(t *testing.T, ctx context.Context, bb backbone.Config) *claims.Claims {
	t.Helper()
	c := claims.New(bb.Names().Claims, bb.Opts(), bb.Log())
	go c.Run(ctx)
	return c
}

// waitLive waits until the live claims are those of the given commands.
func waitLive(t *testing.T, c *claims.Claims, commands ...string) {
	t.Helper()
	if !eventually(20*time.Second, func() bool { return liveAre(c, commands...) }) {
		t.Fatalf("live claims %v, want those of %v", c.Live(), commands)
	}
}

// An operation that expects the cluster as a change left it (a rollback)
// leaves alone a cluster changed since, and acts on one as expected.
func TestExpectationsGuardTheCluster(t *testing.T) {
	for _, tt := range []struct {
		name   string
		op     rollout.Operation
		snap   drivers.Snapshot
		reason string // "" = it acts
	}{
		{"version changed since", rollout.Operation{Kind: rollout.Upgrade, Version: "3.8.0", ExpectVersion: "3.9.1"},
			drivers.Snapshot{Version: "3.10.0"}, "kafka-1 runs 3.10.0, not 3.9.1 as expected: it was changed since, so it was left alone"},
		{"version as expected", rollout.Operation{Kind: rollout.Upgrade, Version: "3.8.0", ExpectVersion: "3.9.1"},
			drivers.Snapshot{Version: "3.9.1"}, ""},
		{"config changed since", rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "0"}, ExpectConfig: map[string]string{"a": "1"}},
			drivers.Snapshot{Config: map[string]string{"a": "7"}}, `kafka-1 has a="7", not "1" as expected: it was changed since, so it was left alone`},
		{"config as expected", rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "0"}, ExpectConfig: map[string]string{"a": "1"}},
			drivers.Snapshot{Config: map[string]string{"a": "1"}}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bb := newBackbone(t)
			d := &fakeDriver{bb: bb, snap: tt.snap}
			runExecutor(t, bb, d)
			cmd := command(tt.op)
			produce(t, bb, bb.Names().Commands, cmd)
			evs := awaitFinished(t, bb)
			last := evs[len(evs)-1]
			calls, _ := d.seen()
			applied := slices.Contains(calls, "apply "+cmd.ID)
			switch {
			case tt.reason == "" && (last.Status != records.OperationSucceeded || !slices.Equal(calls, []string{"snapshot " + cmd.ID, "apply " + cmd.ID})):
				t.Fatalf("outcome %s (%q), driver calls %q: want it to read the cluster once, then act", last.Status, last.Reason, calls)
			case tt.reason != "" && (last.Status != records.OperationFailed || last.Reason != tt.reason || applied):
				t.Fatalf("outcome %s (%q), applied %v: want it left alone, failed with %q", last.Status, last.Reason, applied, tt.reason)
			}
		})
	}
}

// recordingDriver is a driver that really changes (in memory) and really
// fails: it keeps each cluster's version and records every Apply call,
// repeats included. Commands in fail fail; while block is open, Apply
// waits for it to close, then checks its fence before changing anything.
type recordingDriver struct {
	mu      sync.Mutex
	calls   []drivers.Request
	version map[string]string
	fail    map[string]bool
	block   chan struct{}
	called  chan struct{} // closed and replaced on every call
}

func newRecordingDriver() *recordingDriver {
	return &recordingDriver{version: map[string]string{}, fail: map[string]bool{}, called: make(chan struct{})}
}

func (d *recordingDriver) Apply(ctx context.Context, req drivers.Request) (drivers.Result, error) {
	d.mu.Lock()
	d.calls = append(d.calls, req)
	close(d.called)
	d.called = make(chan struct{})
	block, fail := d.block, d.fail[req.CommandID]
	d.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return drivers.Result{}, ctx.Err()
		}
	}
	if err := req.CheckFence(); err != nil {
		return drivers.Result{}, err
	}
	if fail {
		return drivers.Result{}, fmt.Errorf("applying %s to %s failed", req.Operation.Version, req.Cluster.ID)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	prev := d.version[req.Cluster.ID]
	if req.Operation.Kind == rollout.Upgrade {
		d.version[req.Cluster.ID] = req.Operation.Version
	}
	return drivers.Result{PreviousVersion: prev, Version: d.version[req.Cluster.ID]}, nil
}

// applied returns the command IDs of every Apply call so far, in order.
func (d *recordingDriver) applied() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, r := range d.calls {
		out = append(out, r.CommandID)
	}
	return out
}

// waitCalled waits until Apply has been called for command.
func (d *recordingDriver) waitCalled(t *testing.T, command string) drivers.Request {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		d.mu.Lock()
		called := d.called
		for _, r := range d.calls {
			if r.CommandID == command {
				d.mu.Unlock()
				return r
			}
		}
		d.mu.Unlock()
		select {
		case <-called:
		case <-deadline:
			t.Fatalf("Apply not called for %s within 20s; calls %v", command, d.applied())
		}
	}
}

// attempt is the command of attempt n at cluster in workflow wf.
func attempt(wf, cluster string, n int, version string) records.Command {
	return records.Command{
		Envelope:   records.Envelope{ID: uuid.NewString(), Time: time.Now().UTC(), Principal: "planner"},
		ID:         fmt.Sprintf("%s:%s#%d", wf, cluster, n), // no "/": command IDs are UUIDs
		WorkflowID: wf,
		ClusterID:  cluster,
		Attempt:    n,
		Operation:  rollout.Operation{Kind: rollout.Upgrade, Version: version},
		Cluster:    inventory.Cluster{ID: cluster, Driver: "fake", Version: "3.8.0"},
	}
}

// awaitOutcome waits until the operations log holds the outcome of a
// command, and returns it. Records that do not decode are passed over.
func awaitOutcome(t *testing.T, bb backbone.Config, commandID string) records.OperationEvent {
	t.Helper()
	var outcome records.OperationEvent
	awaitLog(t, bb, "outcome of "+commandID, func(evs []records.OperationEvent) bool {
		i := slices.IndexFunc(evs, func(ev records.OperationEvent) bool { return ev.CommandID == commandID && ev.Status.Terminal() })
		if i >= 0 {
			outcome = evs[i]
		}
		return i >= 0
	})
	return outcome
}

// claim writes a claim on cluster for command, as the executor owning
// partition partition of commands would.
func claim(t *testing.T, bb backbone.Config, cluster, command string, partition int32) {
	t.Helper()
	produce(t, bb, bb.Names().Claims, records.ClaimRecord{Envelope: records.Envelope{ID: uuid.NewString(), Time: time.Now()},
		ClusterID: cluster, CommandID: command, WorkflowID: "wf-" + command, CommandPartition: partition, QueuedOffset: -1})
}

// A superseded attempt is never applied again. R1's first attempt at c1
// fails, its second succeeds; then R2 upgrades c1 further. An executor
// restarted on that log must not re-run R1's first attempt (which would
// put c1 back on R1's version), nor anything else.
func TestSupersededAttemptNeverRunsAgain(t *testing.T) {
	bb := newBackbone(t)
	d := newRecordingDriver()
	first, second, later := attempt("r1", "c1", 1, "3.9.1"), attempt("r1", "c1", 2, "3.9.1"), attempt("r2", "c1", 1, "4.0.0")
	d.fail[first.ID] = true
	stop := startExecutor(t, bb, d, clockwork.NewFakeClock(), nil)
	for _, cmd := range []records.Command{first, second, later} {
		produce(t, bb, bb.Names().Commands, cmd)
		awaitOutcome(t, bb, cmd.ID)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := []string{first.ID, second.ID, later.ID}
	if got := d.applied(); !slices.Equal(got, want) {
		t.Fatalf("Apply calls %q before the restart, want %q", got, want)
	}

	// Restarted, it reads the same log; a new command shows when it has
	// read it all.
	marker := attempt("r3", "c2", 1, "3.9.1")
	runExecutor(t, bb, d)
	produce(t, bb, bb.Names().Commands, marker)
	awaitOutcome(t, bb, marker.ID)
	if got, want := d.applied(), append(want, marker.ID); !slices.Equal(got, want) {
		t.Fatalf("Apply calls %q after the restart, want %q: a command was run again", got, want)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if v := d.version["c1"]; v != "4.0.0" {
		t.Fatalf("c1 runs %s, want 4.0.0 from the later rollout", v)
	}
}

// A retry waiting for its cluster keeps its claim through the sweeps, and
// runs once the cluster is free.
func TestWaitingRetryKeepsItsClaim(t *testing.T) {
	bb := newBackbone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	live := followClaims(t, ctx, bb)
	d := newRecordingDriver()
	first, retry := attempt("r1", "c1", 1, "3.9.1"), attempt("r1", "c1", 2, "3.9.1")
	d.fail[first.ID] = true
	clock := runExecutorWith(t, bb, d, func(c *executor.Config) { c.Lease = time.Hour })
	produce(t, bb, bb.Names().Commands, first)
	awaitOutcome(t, bb, first.ID)

	claim(t, bb, "c1", "blocker", 7) // another planner's operation holds c1
	waitLive(t, live, "blocker")
	produce(t, bb, bb.Names().Commands, retry)
	waitLive(t, live, "blocker", retry.ID)
	for range 3 { // sweeps, a minute apart
		clock.Advance(time.Minute)
		if eventually(time.Second, func() bool { return !liveAre(live, "blocker", retry.ID) }) {
			t.Fatalf("a sweep changed the live claims to %v: the retry's claim was released while it waited", live.Live())
		}
	}
	releaseClaim(t, bb, "c1", "blocker")
	if ev := awaitOutcome(t, bb, retry.ID); ev.Status != records.OperationSucceeded {
		t.Fatalf("retry %s: %s (%s)", retry.ID, ev.Status, ev.Reason)
	}
}

// releaseClaim writes the release of a claim, as its executor would.
func releaseClaim(t *testing.T, bb backbone.Config, cluster, command string) {
	t.Helper()
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec := &kgo.Record{Topic: bb.Names().Claims, Key: []byte(records.ClaimKey(cluster, command))}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// Operations waiting for their cluster hold no slot: with one slot, an
// operation on a free cluster runs while one on a held cluster waits
// before it in the log.
func TestWaitingForAClusterHoldsNoSlot(t *testing.T) {
	bb := newBackbone(t)
	d := newRecordingDriver()
	claim(t, bb, "busy", "blocker", 7)
	runExecutorWith(t, bb, d, func(c *executor.Config) { c.Concurrency = 1 })
	waiting, free := attempt("r1", "busy", 1, "3.9.1"), attempt("r2", "free", 1, "3.9.1")
	produce(t, bb, bb.Names().Commands, waiting)
	produce(t, bb, bb.Names().Commands, free)
	if ev := awaitOutcome(t, bb, free.ID); ev.Status != records.OperationSucceeded {
		t.Fatalf("%s: %s (%s)", free.ID, ev.Status, ev.Reason)
	}
	releaseClaim(t, bb, "busy", "blocker")
	awaitOutcome(t, bb, waiting.ID)
	if got := d.applied(); !slices.Equal(got, []string{free.ID, waiting.ID}) {
		t.Fatalf("Apply calls %q, want the free cluster's first", got)
	}
}

// fence takes partition 0 of the commands topic over as its next owner
// does: it initialises the partition's transactional producer, which
// fences the executor that had it.
func fence(t *testing.T, bb backbone.Config) {
	t.Helper()
	cl, err := bb.Client(kgo.TransactionalID(bb.Names().Group("executor") + "-0"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := cl.ProducerID(ctx); err != nil {
		t.Fatal(err)
	}
}

// An executor whose partition was taken over while it was inside Apply
// stops: it changes nothing more, what it writes afterwards is not
// visible, and it exits with an error naming the fencing.
func TestFencedExecutorStopsActing(t *testing.T) {
	bb := newBackbone(t)
	d := newRecordingDriver()
	d.block = make(chan struct{})
	clock := clockwork.NewFakeClock()
	stop, exited := startExecutorExited(t, bb, d, clock, nil)
	cmd := attempt("r1", "c1", 1, "3.9.1")
	produce(t, bb, bb.Names().Commands, cmd)
	d.waitCalled(t, cmd.ID)

	fence(t, bb)
	clock.Advance(5 * time.Second) // the next renewal finds it fenced
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the fenced executor did not stop by itself within 30s")
	}
	close(d.block)
	if err := stop(); err == nil || !strings.Contains(err.Error(), "fenced") {
		t.Fatalf("Run returned %v; want an error saying it was fenced", err)
	}
	d.mu.Lock()
	changed := d.version["c1"]
	d.mu.Unlock()
	if changed != "" {
		t.Fatalf("c1 was changed to %s after the executor was fenced", changed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := readOperations(ctx, bb)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(evs); !slices.Equal(got, []records.OperationStatus{records.OperationStarted}) {
		t.Fatalf("operations log %v; want the start alone: nothing written after the fencing is visible", got)
	}
}

// The next owner of a partition resumes an operation its previous owner
// had in flight only once the previous owner's lease has lapsed, and acts
// under a higher fencing token.
func TestNextOwnerWaitsForTheLeaseToLapse(t *testing.T) {
	bb := newBackbone(t)
	clock := clockwork.NewFakeClock()
	cmd := attempt("r1", "c1", 1, "3.9.1")
	produce(t, bb, bb.Names().Commands, cmd)
	started := startedEvent(cmd)
	produce(t, bb, bb.Names().Operations, started)
	claim(t, bb, "c1", cmd.ID, 0) // at offset 0: the previous owner's grant
	value, err := records.Encode(records.LeaseRecord{Envelope: records.Envelope{ID: uuid.NewString(), Time: clock.Now()},
		Partition: 0, Holder: "previous", RenewedAt: clock.Now(), Duration: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: bb.Names().Leases, Key: []byte(records.LeaseKey(0)), Value: value}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	d := newRecordingDriver()
	stop := startExecutor(t, bb, d, clock, func(c *executor.Config) { c.Lease = time.Hour })
	defer stop()
	// The renewal ticker, the sweep ticker and the wait for the lapse.
	if err := clock.BlockUntilContext(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if calls := d.applied(); len(calls) != 0 {
		t.Fatalf("Apply called %q before the previous owner's lease lapsed", calls)
	}
	clock.Advance(15*time.Second + 2*time.Second) // the lease, and the clock skew allowed for
	req := d.waitCalled(t, cmd.ID)
	if req.FencingToken <= 0 {
		t.Fatalf("resumed under fencing token %d; want more than the previous owner's grant", req.FencingToken)
	}
	if ev := awaitOutcome(t, bb, cmd.ID); ev.Status != records.OperationSucceeded || ev.FencingToken != req.FencingToken {
		t.Fatalf("outcome %+v; want succeeded under token %d", ev, req.FencingToken)
	}
}

// Records on commands and operations that cannot be used are set aside on
// the dead-letter topic, saying where they were and why, and the
// commands after them are carried out.
func TestBadRecordsAreSetAside(t *testing.T) {
	bb := newBackbone(t)
	names := bb.Names()
	good := attempt("r1", "c1", 1, "3.9.1")
	goodValue, err := records.Encode(good)
	if err != nil {
		t.Fatal(err)
	}
	opValue, err := records.Encode(startedEvent(good))
	if err != nil {
		t.Fatal(err)
	}
	unknown := slices.Clone(goodValue)
	unknown[2] ^= 0xff // another schema fingerprint
	bad := []*kgo.Record{
		{Topic: names.Commands, Key: []byte("r0/c9"), Value: []byte("not avro")},
		{Topic: names.Commands, Key: []byte("r0/c9"), Value: unknown},
		{Topic: names.Commands, Key: []byte("r0/elsewhere"), Value: goodValue},
		{Topic: names.Operations, Key: []byte("r0/c9"), Value: opValue[:len(opValue)-3]},
	}
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, bad...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Kafka refuses a null key on a compacted topic itself; the embedded
	// broker takes it.
	nullKey := &kgo.Record{Topic: names.Commands, Value: goodValue}
	switch err := cl.ProduceSync(ctx, nullKey).FirstErr(); {
	case err == nil:
		bad = append(bad, nullKey)
	case !errors.Is(err, kerr.InvalidRecord):
		t.Fatal(err)
	}
	d := newRecordingDriver()
	runExecutor(t, bb, d)
	produce(t, bb, names.Commands, good)
	if ev := awaitOutcome(t, bb, good.ID); ev.Status != records.OperationSucceeded {
		t.Fatalf("the good command after the bad ones: %s (%s)", ev.Status, ev.Reason)
	}
	if got := d.applied(); !slices.Equal(got, []string{good.ID}) {
		t.Fatalf("Apply calls %q; want the good command alone", got)
	}
	var letters []records.DeadLetter
	deadline := time.Now().Add(20 * time.Second)
	for len(letters) < len(bad) {
		letters = nil
		err := logtable.ReadToEnd(ctx, bb.Opts(), names.DeadLetters, nil, func(r *kgo.Record) {
			dl, err := records.DecodeDeadLetter(r.Value)
			if err != nil {
				t.Errorf("dead letter at %d: %v", r.Offset, err)
			}
			letters = append(letters, dl)
		})
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters within 20s, want %d: %+v", len(letters), len(bad), letters)
		}
	}
	reasons := map[string]string{}
	for _, dl := range letters {
		if dl.Service != "executor" || dl.SourceTopic != names.Commands && dl.SourceTopic != names.Operations {
			t.Errorf("dead letter %+v: want one by the executor, of commands or operations", dl)
		}
		reasons[records.DeadLetterKey(dl.SourceTopic, dl.SourcePartition, dl.SourceOffset)] = dl.Reason
	}
	for i, want := range []string{"not an Avro single-object record", "unknown schema", `keyed "r0/elsewhere"`, "malformed record", "null key"}[:len(bad)] {
		where := records.DeadLetterKey(bad[i].Topic, bad[i].Partition, bad[i].Offset)
		if !strings.Contains(reasons[where], want) {
			t.Errorf("the dead letter of %s says %q; want it to say %q", where, reasons[where], want)
		}
	}
}
