package simfleet_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
)

func readCalls(t *testing.T, path string) []simfleet.ApplyCall {
	t.Helper()
	calls, err := simfleet.ReadCallLog(path)
	if err != nil {
		t.Fatalf("ReadCallLog: %v", err)
	}
	return calls
}

func TestCallLogRecordsEveryOutcome(t *testing.T) {
	path := filepath.Join(t.TempDir(), "calls.jsonl")
	clock := clockwork.NewFakeClock()
	f := newFleet(t, simfleet.Options{CallLog: path, OpDuration: time.Second, Clock: clock})
	defer f.Close()
	ctx := context.Background()
	// apply runs one Apply, passing the fake time the operation waits for.
	apply := func(req drivers.Request) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { _, err := f.Apply(ctx, req); done <- err }()
		for {
			select {
			case err := <-done:
				return err
			case <-time.After(time.Millisecond):
				clock.Advance(time.Second)
			}
		}
	}
	req := func(cmd string, attempt int, token int64, op rollout.Operation) drivers.Request {
		return drivers.Request{CommandID: cmd, Attempt: attempt, FencingToken: token, Cluster: kafka1, Operation: op}
	}
	if err := apply(req("c1", 1, 10, upgrade("3.9.1"))); err != nil {
		t.Fatal(err)
	}
	if err := apply(req("c1", 1, 10, upgrade("3.9.1"))); err != nil { // a resume
		t.Fatal(err)
	}
	if err := apply(req("c2", 1, 11, upgrade("3.9.1"))); err != nil { // the version it runs
		t.Fatal(err)
	}
	if err := apply(req("c3", 2, 5, upgrade("4.0.0"))); !errors.Is(err, drivers.ErrFenced) { // an older token
		t.Fatalf("old token: %v, want fenced", err)
	}
	fence := req("c4", 1, 12, upgrade("4.0.0"))
	fence.Fence = func() error { return fmt.Errorf("lease ended: %w", drivers.ErrFenced) }
	if err := apply(fence); !errors.Is(err, drivers.ErrFenced) {
		t.Fatalf("fence: %v, want fenced", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.Apply(cctx, req("c5", 1, 13, upgrade("4.0.0"))); err == nil {
		t.Fatal("cancelled Apply succeeded")
	}
	if err := apply(req("c6", 1, 14, rollout.Operation{Kind: "teleport"})); err == nil {
		t.Fatal("malformed operation succeeded")
	}
	failing := newFleet(t, simfleet.Options{CallLog: path, FailureRate: 1})
	defer failing.Close()
	if _, err := failing.Apply(ctx, req("c7", 3, 15, upgrade("4.0.0"))); err == nil {
		t.Fatal("failure rate 1: Apply succeeded")
	}

	calls := readCalls(t, path)
	want := []struct {
		cmd, outcome, before, after string
		attempt                     int
		token                       int64
	}{
		{"c1", simfleet.OutcomeChanged, "3.8.0", "3.9.1", 1, 10},
		{"c1", simfleet.OutcomeAlreadyApplied, "3.9.1", "3.9.1", 1, 10},
		{"c2", simfleet.OutcomeConfirmed, "3.9.1", "3.9.1", 1, 11},
		{"c3", simfleet.OutcomeFenced, "3.9.1", "3.9.1", 2, 5},
		{"c4", simfleet.OutcomeFenced, "3.9.1", "3.9.1", 1, 12},
		{"c5", simfleet.OutcomeInterrupted, "?", "?", 1, 13}, // before or after taking the lock
		{"c6", simfleet.OutcomeFailed, "", "", 1, 14},
		{"c7", simfleet.OutcomeFailed, "3.8.0", "3.8.0", 3, 15}, // another fleet, in memory
	}
	if len(calls) != len(want) {
		t.Fatalf("%d calls logged, want %d: %+v", len(calls), len(want), calls)
	}
	for i, w := range want {
		c := calls[i]
		if !c.Ended {
			t.Errorf("call %d (%s): no end line", i, w.cmd)
			continue
		}
		b, e := c.Begin, c.End
		if b.Command != w.cmd || e.Command != w.cmd || b.Attempt != w.attempt || b.Token != w.token || b.Cluster != kafka1.ID {
			t.Errorf("call %d: begin %+v, want command %s attempt %d token %d on %s", i, b, w.cmd, w.attempt, w.token, kafka1.ID)
		}
		if w.before == "?" {
			w.before, w.after = e.Before, e.After
		}
		if e.Outcome != w.outcome || e.Before != w.before || e.After != w.after {
			t.Errorf("call %d (%s): outcome %s, %q → %q, want %s, %q → %q", i, w.cmd, e.Outcome, e.Before, e.After, w.outcome, w.before, w.after)
		}
		if b.PID != os.Getpid() || b.Proc == "" || b.Proc != e.Proc || b.Seq != e.Seq || !e.Began.Equal(b.Time) || e.Time.Before(b.Time) {
			t.Errorf("call %d: begin %+v and end %+v do not match", i, b, e)
		}
		if (e.Error == "") != (w.outcome == simfleet.OutcomeChanged || w.outcome == simfleet.OutcomeConfirmed || w.outcome == simfleet.OutcomeAlreadyApplied) {
			t.Errorf("call %d (%s): error %q with outcome %s", i, w.cmd, e.Error, e.Outcome)
		}
	}
	if calls[0].Begin.Proc == calls[7].Begin.Proc {
		t.Errorf("two fleets log under one process name %s", calls[0].Begin.Proc)
	}
	if got := calls[4].End.SeenToken; got != 11 {
		t.Errorf("seen token %d, want 11 (c2's)", got)
	}
}

// A call whose process dies inside Apply leaves a begin without an end.
func TestCallLogKeepsUnfinishedCalls(t *testing.T) {
	path := filepath.Join(t.TempDir(), "calls.jsonl")
	f := newFleet(t, simfleet.Options{CallLog: path, OpDuration: time.Hour})
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Apply(ctx, drivers.Request{CommandID: "c1", Cluster: kafka1, Operation: upgrade("3.9.1")})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Count(string(b), "\n") == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no begin line written")
		}
		time.Sleep(time.Millisecond)
	}
	calls := readCalls(t, path)
	if len(calls) != 1 || calls[0].Ended || calls[0].Begin.Event != simfleet.CallBegin {
		t.Fatalf("calls %+v, want one begun and not ended", calls)
	}
	cancel()
	<-done
	calls = readCalls(t, path)
	if len(calls) != 1 || !calls[0].Ended || calls[0].End.Outcome != simfleet.OutcomeInterrupted {
		t.Fatalf("calls %+v, want one interrupted", calls)
	}
}

func TestCallLogCutsLongLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "calls.jsonl")
	f := newFleet(t, simfleet.Options{CallLog: path})
	defer f.Close()
	kind := rollout.OperationKind(strings.Repeat("x", 10000))
	if _, err := f.Apply(context.Background(), drivers.Request{CommandID: "c1", Cluster: kafka1, Operation: rollout.Operation{Kind: kind}}); err == nil {
		t.Fatal("a malformed operation succeeded")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want a begin and an end", len(lines))
	}
	for _, l := range lines {
		if len(l) >= 4096 {
			t.Errorf("a line of %d bytes: a write of it may not land whole", len(l))
		}
	}
	if calls := readCalls(t, path); len(calls) != 1 || calls[0].End.Outcome != simfleet.OutcomeFailed {
		t.Fatalf("calls %+v, want one failed", calls)
	}
}

func TestCallLogOpenFails(t *testing.T) {
	_, err := simfleet.New(simfleet.Options{CallLog: filepath.Join(t.TempDir(), "no", "such", "dir", "calls.jsonl")})
	if err == nil {
		t.Fatal("New with a call log that cannot be created succeeded")
	}
}

// helperEnv makes the test binary a process that applies to a shared
// call log (see TestCallLogSharedByProcesses).
const helperEnv = "SIMFLEET_CALL_LOG_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(callLogHelper(spec))
	}
	os.Exit(m.Run())
}

// callLogHelper applies n commands to clusters of its own on the state
// directory and call log named by spec ("dir|log|name|n"), from 8
// goroutines.
func callLogHelper(spec string) int {
	parts := strings.Split(spec, "|")
	n, _ := strconv.Atoi(parts[3])
	f, err := simfleet.New(simfleet.Options{Dir: parts[0], CallLog: parts[1], FailureRate: 0.3})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < n; i += 8 {
				c := kafka1
				c.ID = fmt.Sprintf("%s-%d", parts[2], i%5)
				f.Apply(context.Background(), drivers.Request{CommandID: fmt.Sprintf("%s-cmd-%d", parts[2], i), Attempt: 1, Cluster: c, Operation: upgrade(fmt.Sprintf("4.0.%d", i))})
			}
		})
	}
	wg.Wait()
	return 0
}

// Processes sharing a call log: every line lands whole, every call has its
// begin and its end, and the outcomes agree with the state.
func TestCallLogSharedByProcesses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "calls.jsonl")
	const procs, n = 4, 300
	var cmds []*exec.Cmd
	for p := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|p%d|%d", helperEnv, filepath.Join(dir, "sim"), path, p, n))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
	}
	calls := readCalls(t, path)
	if len(calls) != procs*n {
		t.Fatalf("%d calls, want %d", len(calls), procs*n)
	}
	f := newFleet(t, simfleet.Options{Dir: filepath.Join(dir, "sim")})
	changed := map[string]int{}
	pids := map[int]bool{}
	for _, c := range calls {
		if !c.Ended {
			t.Fatalf("call %+v has no end", c.Begin)
		}
		pids[c.Begin.PID] = true
		wantFail := simfleet.WouldFail(0.3, c.Begin.Command)
		if got := c.End.Outcome == simfleet.OutcomeFailed; got != wantFail {
			t.Errorf("%s: outcome %s, WouldFail %v", c.Begin.Command, c.End.Outcome, wantFail)
		}
		if c.End.Outcome == simfleet.OutcomeChanged {
			changed[c.Begin.Cluster]++
		}
	}
	if len(pids) != procs {
		t.Errorf("calls from %d processes, want %d", len(pids), procs)
	}
	for id, n := range changed {
		if got := f.Applies(id); got != n {
			t.Errorf("%s: %d changes logged, the state counts %d", id, n, got)
		}
	}
}
