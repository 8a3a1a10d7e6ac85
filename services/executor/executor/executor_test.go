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
	reg := drivers.NewRegistry()
	reg.Register("fake", d, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	clock := clockwork.NewFakeClock()
	go func() {
		done <- executor.Run(ctx, executor.Config{Backbone: bb, Drivers: reg, Clock: clock})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("executor: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("executor did not stop within 30s")
		}
	})
	return clock
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
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		evs, err := readOperations(ctx, bb)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(evs, func(ev records.OperationEvent) bool { return ev.Status.Terminal() }) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("no operation finished within 30s; the log holds %+v", evs)
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
		t.Fatalf("log %v, want the first attempt's started, then succeeded", got)
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
	if calls, _ := d.seen(); len(calls) != 0 {
		t.Fatalf("driver calls %q, want none: the attempt's time had run out", calls)
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

// Claims of operations that have ended are released even when their
// executor did not: at the partition's assignment, and every minute.
func TestClaimsLeftBehindAreReleased(t *testing.T) {
	bb := newBackbone(t)
	names := bb.Names()
	ended := func(id string) records.Command {
		cmd := command(rollout.Operation{Kind: rollout.Restart})
		cmd.ID, cmd.WorkflowID = id, "wf-"+id
		produce(t, bb, names.Operations, startedEvent(cmd))
		done := startedEvent(cmd)
		done.Status = records.OperationSucceeded
		produce(t, bb, names.Operations, done)
		return cmd
	}
	claim := func(cmd records.Command) {
		produce(t, bb, names.Claims, records.ClaimRecord{Envelope: records.Envelope{ID: uuid.NewString(), Time: time.Now()},
			ClusterID: cmd.ClusterID, CommandID: cmd.ID, WorkflowID: cmd.WorkflowID})
	}
	before, after := ended("before"), ended("after")
	running := command(rollout.Operation{Kind: rollout.Restart})
	running.ID, running.WorkflowID = "running", "wf-running"
	produce(t, bb, names.Operations, startedEvent(running)) // its executor died; its command is not sent again here
	claim(before)
	claim(running)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	live := followClaims(t, ctx, bb)
	clock := runExecutor(t, bb, &fakeDriver{bb: bb})
	waitLive(t, live, running.ID) // released at assignment: before's claim

	claim(after) // as if its release had failed
	waitLive(t, live, running.ID, after.ID)
	if err := clock.BlockUntilContext(ctx, 1); err != nil { // the sweep's ticker
		t.Fatal(err)
	}
	// A minute passes at a time until a sweep releases it: the first
	// sweep may come before the executor has read the claim.
	for minutes := 1; ; minutes++ {
		clock.Advance(time.Minute)
		if eventually(2*time.Second, func() bool { return liveAre(live, running.ID) }) {
			return
		}
		if minutes == 10 {
			t.Fatalf("the claim left behind is still live after %d sweeps", minutes)
		}
	}
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
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	c := claims.New(bb.Names().Claims, bb.Opts(), cl, bb.Log())
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
