package monitor

import (
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// registerCluster puts c, of the "test" driver, in the inventory.
func (h *harness) registerCluster(c inventory.Cluster) {
	h.t.Helper()
	c.Driver = "test"
	v, err := records.Encode(records.ClusterRecord{Envelope: records.Envelope{ID: uuid.NewString(), Time: time.Now(), Principal: "test"}, Cluster: c})
	if err != nil {
		h.t.Fatal(err)
	}
	h.produce(&kgo.Record{Topic: h.names.Inventory, Key: []byte(c.ID), Value: v})
}

// operation writes an operation event of workflow wf on cluster id.
func (h *harness) operation(wf, id string, status records.OperationStatus) {
	h.t.Helper()
	v, err := records.Encode(records.OperationEvent{Envelope: records.Envelope{ID: uuid.NewString(), Time: time.Now(), Principal: "executor"},
		CommandID: wf + "/" + id + "/1", WorkflowID: wf, ClusterID: id, Attempt: 1, Status: status})
	if err != nil {
		h.t.Fatal(err)
	}
	h.produce(&kgo.Record{Topic: h.names.Operations, Key: []byte(topics.TargetKey(wf, id)), Value: v})
}

// history writes the history row of workflow wf's operation op on id.
func (h *harness) history(wf, id string, state records.TargetState, op rollout.Operation) {
	h.t.Helper()
	v, err := records.Encode(records.WorkflowRecord{Envelope: records.Envelope{ID: uuid.NewString(), Time: time.Now(), Principal: "planner"},
		Target: &records.Target{WorkflowID: wf, ClusterID: id, State: state, Operation: op, Version: op.Version}})
	if err != nil {
		h.t.Fatal(err)
	}
	h.produce(&kgo.Record{Topic: h.names.History, Key: []byte(topics.HistoryKey(id, wf)), Value: v})
}

// lastSignal waits for a signal of id observed at or after at that
// satisfies cond, and returns it.
func (h *harness) lastSignal(what, id string, at time.Time, cond func(*records.Health) bool) *records.Health {
	h.t.Helper()
	hs := h.awaitHealth(what, func(hs map[string][]*records.Health) bool {
		s := hs[id]
		return len(s) > 0 && s[len(s)-1] != nil && !s[len(s)-1].ObservedAt.Before(at) && cond(s[len(s)-1])
	})
	return hs[id][len(hs[id])-1]
}

func noDrift(s *records.Health) bool { return len(s.Drift) == 0 }

// TestDriftFromTheInventory: a cluster that runs another version than the
// inventory declares, or another value of a declared config key, is
// reported drifted at once, with the reason, its status left as the probe
// found it; back as declared, the drift is resolved. Undeclared keys never
// drift.
func TestDriftFromTheInventory(t *testing.T) {
	h := newHarness(t, nil)
	h.fleet.set("c0", drivers.Observation{Status: records.HealthHealthy, Version: "3.8.0",
		Config: map[string]string{"log.retention.ms": "100", "other": "x"}, ConfigComplete: true})
	h.registerCluster(inventory.Cluster{ID: "c0", Version: "3.8.0",
		Desired: inventory.Desired{Version: "3.9.1", Config: map[string]string{"log.retention.ms": "200"}}})
	h.run("a", Config{Interval: time.Second, Heartbeat: time.Hour})

	s := h.lastSignal("a drifted signal", "c0", t0, func(s *records.Health) bool { return len(s.Drift) > 0 })
	want := []records.DriftItem{{Key: "version", Observed: "3.8.0", Desired: "3.9.1"}, {Key: "log.retention.ms", Observed: "100", Desired: "200"}}
	if !reflect.DeepEqual(s.Drift, want) || !s.DriftChanged || s.Status != records.HealthHealthy {
		t.Errorf("signal %+v, want drift %+v, drift changed, healthy", s, want)
	}
	if wantReasons := []string{"version 3.8.0, desired 3.9.1", "config log.retention.ms=100, desired 200"}; !reflect.DeepEqual(s.Reasons, wantReasons) {
		t.Errorf("reasons %q, want %q", s.Reasons, wantReasons)
	}

	// A probe that fails sees nothing: the drift stays as it was, not
	// resolved.
	h.fleet.fail("c0", errors.New("connection refused"))
	h.clock.Advance(time.Second)
	s = h.lastSignal("the failed probe", "c0", t0.Add(time.Second), func(s *records.Health) bool { return s.Status == records.HealthUnhealthy })
	if !reflect.DeepEqual(s.Drift, want) || s.DriftChanged {
		t.Errorf("after a failed probe: drift %+v (changed %t), want it kept", s.Drift, s.DriftChanged)
	}
	h.fleet.fail("c0", nil)

	h.fleet.set("c0", drivers.Observation{Status: records.HealthHealthy, Version: "3.9.1",
		Config: map[string]string{"log.retention.ms": "200", "other": "y"}, ConfigComplete: true})
	h.clock.Advance(time.Second)
	s = h.lastSignal("the drift resolved", "c0", t0.Add(2*time.Second), noDrift)
	if !s.DriftChanged || s.Heartbeat || len(s.Reasons) != 0 {
		t.Errorf("resolved: %+v, want drift changed, no reasons", s)
	}
}

// TestDriftFromTheHistory: where the inventory declares nothing, the
// desired state is what the last successful rollout left. While an
// operation is in flight on the cluster its drift is not evaluated (the
// rollout is changing it); its history row moves the desired state, and
// a change made behind Flotilla's back after it is drift.
func TestDriftFromTheHistory(t *testing.T) {
	h := newHarness(t, nil)
	obs := func(v string) drivers.Observation {
		return drivers.Observation{Status: records.HealthHealthy, Version: v, ConfigComplete: true}
	}
	h.fleet.set("c0", obs("3.9.0"))
	h.registerCluster(inventory.Cluster{ID: "c0", Version: "3.8.0"})
	// Read back when the partition is assigned: a failed rollout leaves
	// nothing, a successful one its version.
	h.history("wf-0", "c0", records.TargetSucceeded, rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.0"})
	h.history("wf-1", "c0", records.TargetFailed, rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.2"})
	busy := newBusyLog()
	h.run("a", Config{Interval: time.Second, Heartbeat: time.Hour, tracked: busy.tracked})
	h.lastSignal("a first signal", "c0", t0, func(*records.Health) bool { return true })

	// A rollout's operation starts, and the cluster changes under it.
	h.operation("wf-2", "c0", records.OperationStarted)
	h.fleet.set("c0", obs("3.9.5"))
	busy.await(t, "c0", true)
	h.clock.Advance(time.Second)
	s := h.lastSignal("the version change while in flight", "c0", t0.Add(time.Second), func(s *records.Health) bool { return s.ObservedVersion == "3.9.5" })
	if len(s.Drift) != 0 {
		t.Errorf("in flight: drift %+v, want none", s.Drift)
	}
	h.operation("wf-2", "c0", records.OperationSucceeded)
	h.history("wf-2", "c0", records.TargetSucceeded, rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.5"})
	busy.await(t, "c0", false)

	// Behind Flotilla's back.
	h.fleet.set("c0", obs("3.9.9"))
	h.clock.Advance(time.Second)
	s = h.lastSignal("drift from what the rollout left", "c0", t0.Add(2*time.Second), func(s *records.Health) bool { return len(s.Drift) > 0 })
	if want := []records.DriftItem{{Key: "version", Observed: "3.9.9", Desired: "3.9.5"}}; !reflect.DeepEqual(s.Drift, want) {
		t.Errorf("drift %+v, want %+v", s.Drift, want)
	}
}

// busyLog follows what the monitor knows of the operations in flight.
type busyLog struct {
	mu   sync.Mutex
	busy map[string]bool
	more chan struct{}
}

func newBusyLog() *busyLog { return &busyLog{busy: map[string]bool{}, more: make(chan struct{})} }

func (b *busyLog) tracked(id string, inFlight bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.busy[id] = inFlight
	close(b.more)
	b.more = make(chan struct{})
}

// await waits until the monitor knows cluster id in flight, or not.
func (b *busyLog) await(t *testing.T, id string, inFlight bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		b.mu.Lock()
		got, more := b.busy[id], b.more
		b.mu.Unlock()
		if got == inFlight {
			return
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("cluster %s in flight %t after 30s, want %t", id, got, inFlight)
		}
	}
}
