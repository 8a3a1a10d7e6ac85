package main

import (
	"cmp"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// devRun is a `flotilla dev` that a test runs in the background.
type devRun struct {
	brokers []string
	done    chan error
	cancel  context.CancelFunc
	ended   bool
}

// startDev runs `flotilla dev` with o until the test ends (or stop), and
// returns once everything runs, failing the test if dev stops first or
// takes more than 30 s. What o leaves unset is what suits a test: a broker
// on a free port, namespace "fleet", the simulated fleet in
// DataDir/sim with 50 ms operations, probes every 100 ms, a heartbeat a
// second, warnings only in the log.
func startDev(t *testing.T, o devOptions) *devRun {
	t.Helper()
	d, err := tryDev(t, o)
	if err != nil {
		t.Fatalf("dev did not start: %v", err)
	}
	return d
}

// tryDev is startDev for a test that expects dev to refuse to start: it
// returns dev's error if dev stopped before it was running.
func tryDev(t *testing.T, o devOptions) (*devRun, error) {
	t.Helper()
	o.DataDir = cmp.Or(o.DataDir, t.TempDir())
	o.Addr = cmp.Or(o.Addr, "127.0.0.1:0")
	o.Namespace = cmp.Or(o.Namespace, "fleet")
	o.Drivers.Sim.Dir = cmp.Or(o.Drivers.Sim.Dir, filepath.Join(o.DataDir, "sim"))
	o.Drivers.Sim.OpDuration = cmp.Or(o.Drivers.Sim.OpDuration, 50*time.Millisecond)
	o.ProbeInterval = cmp.Or(o.ProbeInterval, 100*time.Millisecond)
	o.Heartbeat = cmp.Or(o.Heartbeat, time.Second)
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ready := make(chan []string, 1)
	o.OnReady = func(b []string) { ready <- b }
	ctx, cancel := context.WithCancel(context.Background())
	d := &devRun{done: make(chan error, 1), cancel: cancel}
	go func() { d.done <- runDev(ctx, o) }()
	t.Cleanup(func() { d.stop(t) })
	select {
	case d.brokers = <-ready:
		return d, nil
	case err := <-d.done:
		d.ended = true
		cancel()
		return nil, err
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not start in 30s")
		return nil, nil
	}
}

// stop ends the run, and checks that dev stopped without an error.
func (d *devRun) stop(t *testing.T) {
	t.Helper()
	if d.ended {
		return
	}
	d.ended = true
	d.cancel()
	if err := <-d.done; err != nil {
		t.Errorf("dev stopped with: %v", err)
	}
}

// awaitDev returns what dev tells ch, failing the test if dev stops first
// or 30 s pass.
func awaitDev[T any](t *testing.T, d *devRun, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case err := <-d.done:
		d.ended = true
		d.cancel()
		t.Fatalf("waiting for %s: dev stopped: %v", what, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("waiting for %s: nothing in 30s", what)
	}
	var zero T
	return zero
}
