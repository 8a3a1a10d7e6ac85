package simfleet_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
)

var kafka1 = inventory.Cluster{ID: "kafka-1", Driver: "sim", Address: "sim://kafka-1", Version: "3.8.0"}

func upgrade(v string) rollout.Operation { return rollout.Operation{Kind: rollout.Upgrade, Version: v} }

func newFleet(t *testing.T, opts simfleet.Options) *simfleet.Fleet {
	t.Helper()
	f, err := simfleet.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return f
}

func apply(t *testing.T, f *simfleet.Fleet, cmd string, c inventory.Cluster, op rollout.Operation) drivers.Result {
	t.Helper()
	res, err := f.Apply(context.Background(), drivers.Request{CommandID: cmd, Cluster: c, Operation: op})
	if err != nil {
		t.Fatalf("Apply %s: %v", cmd, err)
	}
	return res
}

func mustCluster(t *testing.T, f *simfleet.Fleet, id string) simfleet.State {
	t.Helper()
	st, ok := f.Cluster(id)
	if !ok {
		t.Fatalf("Cluster(%q): not found", id)
	}
	return st
}

func TestApplyConverges(t *testing.T) {
	tests := []struct {
		name         string
		ops          []rollout.Operation // applied in order, each under its own command ID
		wantVersion  string
		wantPrev     string // PreviousVersion of the last result
		wantConfig   map[string]string
		wantRestarts int
		wantApplies  int
	}{
		{
			name:        "upgrade sets the version",
			ops:         []rollout.Operation{upgrade("3.9.1")},
			wantVersion: "3.9.1", wantPrev: "3.8.0", wantApplies: 1,
		},
		{
			name:        "second upgrade starts from the first's version",
			ops:         []rollout.Operation{upgrade("3.9.0"), upgrade("3.9.1")},
			wantVersion: "3.9.1", wantPrev: "3.9.0", wantApplies: 2,
		},
		{
			name: "config merges keys",
			ops: []rollout.Operation{
				{Kind: rollout.Config, Config: map[string]string{"a": "1", "b": "2"}},
				{Kind: rollout.Config, Config: map[string]string{"b": "3", "c": "4"}},
			},
			wantVersion: "3.8.0", wantPrev: "3.8.0",
			wantConfig:  map[string]string{"a": "1", "b": "3", "c": "4"},
			wantApplies: 2,
		},
		{
			name:        "config already set is not an apply",
			ops:         []rollout.Operation{{Kind: rollout.Config, Config: map[string]string{"a": "1"}}, {Kind: rollout.Config, Config: map[string]string{"a": "1"}}},
			wantVersion: "3.8.0", wantPrev: "3.8.0",
			wantConfig:  map[string]string{"a": "1"},
			wantApplies: 1,
		},
		{
			name: "reset removes keys and leaves the others",
			ops: []rollout.Operation{
				{Kind: rollout.Config, Config: map[string]string{"a": "1", "b": "2", "c": "3"}},
				{Kind: rollout.Config, Config: map[string]string{"a": "4"}, Reset: []string{"b", "c"}},
			},
			wantVersion: "3.8.0", wantPrev: "3.8.0",
			wantConfig:  map[string]string{"a": "4"},
			wantApplies: 2,
		},
		{
			name: "reset of absent keys is not an apply",
			ops: []rollout.Operation{
				{Kind: rollout.Config, Config: map[string]string{"a": "1"}},
				{Kind: rollout.Config, Config: map[string]string{"a": "1"}, Reset: []string{"b"}},
			},
			wantVersion: "3.8.0", wantPrev: "3.8.0",
			wantConfig:  map[string]string{"a": "1"},
			wantApplies: 1,
		},
		{
			name:        "upgrade to the running version is not an apply",
			ops:         []rollout.Operation{upgrade("3.8.0")},
			wantVersion: "3.8.0", wantPrev: "3.8.0", wantApplies: 0,
		},
		{
			name:        "every restart command restarts",
			ops:         []rollout.Operation{{Kind: rollout.Restart}, {Kind: rollout.Restart}},
			wantVersion: "3.8.0", wantPrev: "3.8.0", wantRestarts: 2, wantApplies: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFleet(t, simfleet.Options{})
			var res drivers.Result
			for i, op := range tt.ops {
				res = apply(t, f, fmt.Sprintf("cmd-%d", i), kafka1, op)
			}
			if res.Version != tt.wantVersion || res.PreviousVersion != tt.wantPrev {
				t.Errorf("result: %s -> %s, want %s -> %s", res.PreviousVersion, res.Version, tt.wantPrev, tt.wantVersion)
			}
			st := mustCluster(t, f, kafka1.ID)
			if st.Version != tt.wantVersion {
				t.Errorf("state version %q, want %q", st.Version, tt.wantVersion)
			}
			if len(st.Config)+len(tt.wantConfig) > 0 && !maps.Equal(st.Config, tt.wantConfig) {
				t.Errorf("config %v, want %v", st.Config, tt.wantConfig)
			}
			if st.Restarts != tt.wantRestarts {
				t.Errorf("restarts %d, want %d", st.Restarts, tt.wantRestarts)
			}
			if got := f.Applies(kafka1.ID); got != tt.wantApplies || st.Applies != got {
				t.Errorf("Applies = %d (state %d), want %d", got, st.Applies, tt.wantApplies)
			}
			if got, want := len(st.AppliedCommands), len(tt.ops); got != want {
				t.Errorf("%d applied commands recorded, want %d", got, want)
			}
		})
	}
}

func TestApplyRejectsMalformedRequests(t *testing.T) {
	tests := []struct {
		name    string
		req     drivers.Request
		wantErr string
	}{
		{"no command id", drivers.Request{Cluster: kafka1, Operation: upgrade("3.9.1")}, "no command id"},
		{"upgrade without version", drivers.Request{CommandID: "c", Cluster: kafka1, Operation: upgrade("")}, "upgrade names no version"},
		{"unknown kind", drivers.Request{CommandID: "c", Cluster: kafka1, Operation: rollout.Operation{Kind: "reboot"}}, `unsupported operation kind "reboot"`},
		{"id unsafe as a file name", drivers.Request{CommandID: "c", Cluster: inventory.Cluster{ID: "../etc"}, Operation: upgrade("3.9.1")}, `sim cluster id "../etc"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFleet(t, simfleet.Options{Dir: t.TempDir()})
			_, err := f.Apply(context.Background(), tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
			}
			if f.TotalApplies() != 0 {
				t.Fatalf("a rejected request changed the fleet")
			}
		})
	}
}

func TestApplySameCommandTwiceChangesOnce(t *testing.T) {
	for _, op := range []rollout.Operation{upgrade("3.9.1"), {Kind: rollout.Restart}} {
		t.Run(string(op.Kind), func(t *testing.T) {
			f := newFleet(t, simfleet.Options{})
			first := apply(t, f, "wf-1/kafka-1#1", kafka1, op)
			again := apply(t, f, "wf-1/kafka-1#1", kafka1, op)
			if again.PreviousVersion != first.PreviousVersion || again.Version != first.Version {
				t.Errorf("confirming reported %s -> %s, first apply %s -> %s",
					again.PreviousVersion, again.Version, first.PreviousVersion, first.Version)
			}
			if got := f.Applies(kafka1.ID); got != 1 {
				t.Errorf("Applies = %d after the same command twice, want 1", got)
			}
			if st := mustCluster(t, f, kafka1.ID); st.Restarts > 1 {
				t.Errorf("restarted %d times for one command", st.Restarts)
			}
		})
	}
}

// A command that resets a key, applied again after a later command set
// that key anew (a redelivery, an executor resuming late), confirms: it
// does not reset the key a second time.
func TestApplySameResetTwiceChangesOnce(t *testing.T) {
	f := newFleet(t, simfleet.Options{})
	apply(t, f, "wf-1/kafka-1#1", kafka1, rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "1", "b": "2"}})
	reset := rollout.Operation{Kind: rollout.Config, Reset: []string{"b"}}
	apply(t, f, "wf-2/kafka-1#1", kafka1, reset)
	if st := mustCluster(t, f, kafka1.ID); !maps.Equal(st.Config, map[string]string{"a": "1"}) {
		t.Fatalf("after the reset, config %v, want only a=1", st.Config)
	}
	apply(t, f, "wf-3/kafka-1#1", kafka1, rollout.Operation{Kind: rollout.Config, Config: map[string]string{"b": "5"}})

	res := apply(t, f, "wf-2/kafka-1#1", kafka1, reset)
	if !strings.Contains(res.Output, "already applied") {
		t.Errorf("re-applying the reset said %q, want that it was already applied", res.Output)
	}
	st := mustCluster(t, f, kafka1.ID)
	if want := map[string]string{"a": "1", "b": "5"}; !maps.Equal(st.Config, want) {
		t.Errorf("config %v after re-applying the reset, want %v", st.Config, want)
	}
	if st.Applies != 3 {
		t.Errorf("Applies = %d, want 3", st.Applies)
	}
}

func TestSnapshot(t *testing.T) {
	f := newFleet(t, simfleet.Options{Dir: t.TempDir()})
	op := rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "9", "c": "9"}, Reset: []string{"b", "d"}}
	req := drivers.Request{CommandID: "wf-2/kafka-1#1", Cluster: kafka1, Operation: op}

	// A cluster not met yet: its registered version, no config.
	snap, err := f.Snapshot(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Version != "3.8.0" || len(snap.Config) != 0 || !slices.Equal(snap.Unset, []string{"a", "b", "c", "d"}) {
		t.Errorf("snapshot of a new cluster = %+v, want version 3.8.0 and every key unset", snap)
	}
	if _, ok := f.Cluster(kafka1.ID); ok {
		t.Error("Snapshot created the cluster")
	}

	apply(t, f, "wf-1/kafka-1#1", kafka1, rollout.Operation{Kind: rollout.Config, Config: map[string]string{"a": "1", "b": "2", "e": "5"}})
	snap, err = f.Snapshot(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"a": "1", "b": "2"}; !maps.Equal(snap.Config, want) || !slices.Equal(snap.Unset, []string{"c", "d"}) {
		t.Errorf("snapshot = %+v, want config %v (not e: the operation does not touch it), unset [c d]", snap, want)
	}
	if err := snap.Check(op); err != nil {
		t.Error(err)
	}
	if st := mustCluster(t, f, kafka1.ID); st.Applies != 1 || len(st.AppliedCommands) != 1 {
		t.Errorf("Snapshot changed the cluster: %+v", st)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Snapshot(ctx, req); !errors.Is(err, context.Canceled) {
		t.Errorf("snapshot with a cancelled context: %v", err)
	}
	if _, err := f.Snapshot(context.Background(), drivers.Request{Cluster: inventory.Cluster{ID: "../x"}, Operation: op}); err == nil || !strings.Contains(err.Error(), `sim cluster id "../x"`) {
		t.Errorf("snapshot of a bad id: %v", err)
	}
}

// A redelivered command racing its first delivery, and two commands racing
// to the same version, must each change the cluster once — even while the
// first is still inside its OpDuration.
func TestConcurrentAppliesChangeOnce(t *testing.T) {
	tests := []struct {
		name    string
		command func(i int) string
		// samePrev: every call reports the upgrade from 3.8.0, as the same
		// command; distinct commands after the first find 3.9.1 already.
		samePrev bool
	}{
		{"same command", func(int) string { return "wf-1/kafka-1#1" }, true},
		{"different commands, same version", func(i int) string { return fmt.Sprintf("wf-%d/kafka-1#1", i) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := clockwork.NewFakeClock()
			f := newFleet(t, simfleet.Options{OpDuration: time.Minute, Clock: clock})
			const n = 8
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					res, err := f.Apply(context.Background(), drivers.Request{CommandID: tt.command(i), Cluster: kafka1, Operation: upgrade("3.9.1")})
					if err == nil && (res.Version != "3.9.1" || tt.samePrev && res.PreviousVersion != "3.8.0") {
						err = fmt.Errorf("result %s -> %s, want 3.8.0 -> 3.9.1", res.PreviousVersion, res.Version)
					}
					errs <- err
				})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := clock.BlockUntilContext(ctx, 1); err != nil {
				t.Fatalf("no Apply started waiting: %v", err)
			}
			clock.Advance(time.Minute)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			if got := f.Applies(kafka1.ID); got != 1 {
				t.Fatalf("Applies = %d, want 1", got)
			}
		})
	}
}

func TestConcurrentAppliesAcrossTheFleet(t *testing.T) {
	for _, dir := range []string{"", "dir"} {
		t.Run("store="+cmp(dir, "memory"), func(t *testing.T) {
			opts := simfleet.Options{}
			if dir != "" {
				opts.Dir = t.TempDir()
			}
			f := newFleet(t, opts)
			clusters := simfleet.GenerateClusters(40)
			var wg sync.WaitGroup
			for _, c := range clusters {
				for range 2 { // each command delivered twice, concurrently
					wg.Go(func() {
						if _, err := f.Apply(context.Background(), drivers.Request{CommandID: "wf/" + c.ID, Cluster: c, Operation: upgrade("9.9.9")}); err != nil {
							t.Error(err)
						}
					})
				}
				wg.Go(func() {
					if _, err := f.Probe(context.Background(), c); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			for _, c := range clusters {
				if got := f.Applies(c.ID); got != 1 {
					t.Errorf("%s: Applies = %d, want 1", c.ID, got)
				}
			}
			if got := f.TotalApplies(); got != len(clusters) {
				t.Errorf("TotalApplies = %d, want %d", got, len(clusters))
			}
		})
	}
}

func cmp(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

func TestFailuresAreDecidedByCommandID(t *testing.T) {
	const rate = 0.3
	a := newFleet(t, simfleet.Options{FailureRate: rate})
	b := newFleet(t, simfleet.Options{FailureRate: rate})
	failed := 0
	for i := range 1000 {
		cmd := fmt.Sprintf("wf-%d/kafka-1#1", i)
		c := kafka1
		c.ID = fmt.Sprintf("c-%d", i)
		req := drivers.Request{CommandID: cmd, Cluster: c, Operation: upgrade("3.9.1")}
		_, errA := a.Apply(context.Background(), req)
		_, errB := b.Apply(context.Background(), req)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("%s: fleet a says %v, fleet b says %v", cmd, errA, errB)
		}
		if errA == nil {
			continue
		}
		failed++
		if want := "simulated failure applying upgrade to 3.9.1"; errA.Error() != want {
			t.Fatalf("%s: error %q, want %q", cmd, errA, want)
		}
		// Resumed, it fails again; and a failure changes nothing.
		if _, err := a.Apply(context.Background(), req); err == nil {
			t.Fatalf("%s failed, then succeeded when applied again", cmd)
		}
		if st, ok := a.Cluster(c.ID); ok && (st.Version != "3.8.0" || st.Applies != 0 || len(st.AppliedCommands) != 0) {
			t.Fatalf("%s: failed operation changed the cluster: %+v", cmd, st)
		}
	}
	if failed < 250 || failed > 350 {
		t.Errorf("%d of 1000 operations failed at rate %v, want about 300", failed, rate)
	}
}

func TestFailureRateBounds(t *testing.T) {
	tests := []struct {
		rate     float64
		wantFail bool
	}{{0, false}, {1, true}}
	for _, tt := range tests {
		f := newFleet(t, simfleet.Options{FailureRate: tt.rate})
		for i := range 100 {
			_, err := f.Apply(context.Background(), drivers.Request{CommandID: fmt.Sprint(i), Cluster: kafka1, Operation: rollout.Operation{Kind: rollout.Restart}})
			if (err != nil) != tt.wantFail {
				t.Fatalf("rate %v, command %d: error %v", tt.rate, i, err)
			}
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    simfleet.Options
		wantErr string
	}{
		{"negative rate", simfleet.Options{FailureRate: -0.1}, "failure rate -0.1 is not within 0..1"},
		{"rate above one", simfleet.Options{FailureRate: 1.5}, "failure rate 1.5 is not within 0..1"},
		{"negative duration", simfleet.Options{OpDuration: -time.Second}, "operation duration -1s is negative"},
		{"dir is a file", simfleet.Options{Dir: filepath.Join(file, "sub")}, "create state directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := simfleet.New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name        string
		badAtStart  []string
		upgradeTo   string   // applied before probing, if set
		badLater    []string // SetBadVersions before probing, if set
		wantStatus  records.HealthStatus
		wantReasons []string
		wantVersion string
	}{
		{name: "healthy", wantStatus: records.HealthHealthy, wantVersion: "3.8.0"},
		{name: "registered on a bad version", badAtStart: []string{"3.8.0"},
			wantStatus: records.HealthUnhealthy, wantReasons: []string{"runs bad version 3.8.0"}, wantVersion: "3.8.0"},
		{name: "upgraded to a bad version", badAtStart: []string{"3.9.2"}, upgradeTo: "3.9.2",
			wantStatus: records.HealthUnhealthy, wantReasons: []string{"runs bad version 3.9.2"}, wantVersion: "3.9.2"},
		{name: "version turns bad at run time", upgradeTo: "3.9.2", badLater: []string{"3.9.2"},
			wantStatus: records.HealthUnhealthy, wantReasons: []string{"runs bad version 3.9.2"}, wantVersion: "3.9.2"},
		{name: "version cleared at run time", badAtStart: []string{"3.9.2"}, upgradeTo: "3.9.2", badLater: []string{"0.0.1"},
			wantStatus: records.HealthHealthy, wantVersion: "3.9.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFleet(t, simfleet.Options{BadVersions: tt.badAtStart})
			if tt.upgradeTo != "" {
				apply(t, f, "cmd", kafka1, upgrade(tt.upgradeTo))
			}
			if tt.badLater != nil {
				f.SetBadVersions(tt.badLater...)
			}
			obs, err := f.Probe(context.Background(), kafka1)
			if err != nil {
				t.Fatal(err)
			}
			if obs.Status != tt.wantStatus || obs.Version != tt.wantVersion || !slices.Equal(obs.Reasons, tt.wantReasons) {
				t.Fatalf("probe = %+v, want status %s, version %s, reasons %v", obs, tt.wantStatus, tt.wantVersion, tt.wantReasons)
			}
		})
	}
}

func TestProbeCreatesUnknownCluster(t *testing.T) {
	f := newFleet(t, simfleet.Options{})
	if _, ok := f.Cluster(kafka1.ID); ok {
		t.Fatal("cluster known before anything met it")
	}
	if _, err := f.Probe(context.Background(), kafka1); err != nil {
		t.Fatal(err)
	}
	if st := mustCluster(t, f, kafka1.ID); st.Version != "3.8.0" || st.Applies != 0 {
		t.Fatalf("probed cluster = %+v, want version 3.8.0 and no applies", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Probe(ctx, kafka1); !errors.Is(err, context.Canceled) {
		t.Fatalf("probe with a cancelled context: %v", err)
	}
}

func TestStatePersistsInDir(t *testing.T) {
	dir := t.TempDir()
	executor := newFleet(t, simfleet.Options{Dir: dir})
	monitor := newFleet(t, simfleet.Options{Dir: dir, BadVersions: []string{"3.9.2"}})

	// The monitor meets the cluster first, as registered.
	if obs, err := monitor.Probe(context.Background(), kafka1); err != nil || obs.Version != "3.8.0" {
		t.Fatalf("first probe = %+v, %v", obs, err)
	}
	apply(t, executor, "wf-1/kafka-1#1", kafka1, upgrade("3.9.2"))
	apply(t, executor, "wf-2/kafka-1#1", kafka1, rollout.Operation{Kind: rollout.Config, Config: map[string]string{"retention.ms": "1000"}})

	// Another process sees the change; probing with the stale inventory
	// entry does not reset it.
	obs, err := monitor.Probe(context.Background(), kafka1)
	if err != nil {
		t.Fatal(err)
	}
	if obs.Version != "3.9.2" || obs.Status != records.HealthUnhealthy {
		t.Fatalf("probe from the other process = %+v, want unhealthy on 3.9.2", obs)
	}

	// A restarted executor resumes the first command: it confirms.
	restarted := newFleet(t, simfleet.Options{Dir: dir})
	res := apply(t, restarted, "wf-1/kafka-1#1", kafka1, upgrade("3.9.2"))
	if res.PreviousVersion != "3.8.0" || res.Version != "3.9.2" {
		t.Errorf("resumed command reported %s -> %s, want 3.8.0 -> 3.9.2", res.PreviousVersion, res.Version)
	}
	st := mustCluster(t, restarted, kafka1.ID)
	if st.Applies != 2 || st.Config["retention.ms"] != "1000" || !slices.Equal(st.AppliedCommands, []string{"wf-1/kafka-1#1", "wf-2/kafka-1#1"}) {
		t.Errorf("state after restart = %+v", st)
	}
	if got := restarted.TotalApplies(); got != 2 {
		t.Errorf("TotalApplies = %d, want 2", got)
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "kafka-1.json" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("state directory holds %v, want only kafka-1.json", names)
	}
}

func TestCorruptStateFileIsReported(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kafka-1.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFleet(t, simfleet.Options{Dir: dir})
	if _, err := f.Probe(context.Background(), kafka1); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("probe of a corrupt state: %v, want an error naming %s", err, path)
	}
	if _, err := f.Apply(context.Background(), drivers.Request{CommandID: "c", Cluster: kafka1, Operation: upgrade("3.9.1")}); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("apply to a corrupt state: %v, want an error naming %s", err, path)
	}
	if _, ok := f.Cluster(kafka1.ID); ok {
		t.Fatal("Cluster reported a corrupt state as found")
	}
}

func TestCancelDuringOperationChangesNothing(t *testing.T) {
	clock := clockwork.NewFakeClock()
	f := newFleet(t, simfleet.Options{OpDuration: time.Minute, Clock: clock, Dir: t.TempDir()})
	wait, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	req := drivers.Request{CommandID: "wf-1/kafka-1#1", Cluster: kafka1, Operation: upgrade("3.9.1")}
	go func() {
		_, err := f.Apply(ctx, req)
		done <- err
	}()
	if err := clock.BlockUntilContext(wait, 1); err != nil {
		t.Fatalf("Apply never started waiting: %v", err)
	}
	// A second Apply to the same cluster queues behind the first; cancelling
	// its context frees it too.
	queued := make(chan error, 1)
	go func() {
		_, err := f.Apply(ctx, drivers.Request{CommandID: "wf-2/kafka-1#1", Cluster: kafka1, Operation: rollout.Operation{Kind: rollout.Restart}})
		queued <- err
	}()
	cancel()
	for _, ch := range []chan error{done, queued} {
		if err := <-ch; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Apply returned %v, want context.Canceled", err)
		}
	}
	if st, ok := f.Cluster(kafka1.ID); ok && (st.Version != "3.8.0" || st.Applies != 0 || len(st.AppliedCommands) != 0) {
		t.Fatalf("cancelled operation changed the cluster: %+v", st)
	}

	// Retried, the same command does run.
	go func() {
		_, err := f.Apply(context.Background(), req)
		done <- err
	}()
	if err := clock.BlockUntilContext(wait, 1); err != nil {
		t.Fatalf("retry never started waiting: %v", err)
	}
	clock.Advance(time.Minute)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := f.Applies(kafka1.ID); got != 1 {
		t.Fatalf("Applies = %d after the retry, want 1", got)
	}
}

func TestRegister(t *testing.T) {
	f := newFleet(t, simfleet.Options{})
	r := drivers.NewRegistry()
	f.Register(r)
	d, err := r.Driver("sim")
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Prober("sim")
	if err != nil {
		t.Fatal(err)
	}
	if d != drivers.Driver(f) || p != drivers.Prober(f) {
		t.Fatal("registry does not hold the fleet under \"sim\"")
	}
}

func TestProbeReportsConfigHash(t *testing.T) {
	f, err := simfleet.New(simfleet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := simfleet.GenerateClusters(1)[0]
	before, _ := f.Probe(context.Background(), c)
	if before.ConfigHash != "" {
		t.Fatalf("hash %q before any config was set, want empty", before.ConfigHash)
	}
	if _, err := f.Apply(context.Background(), drivers.Request{CommandID: "c1", Cluster: c,
		Operation: rollout.Operation{Kind: rollout.Config, Config: map[string]string{"log.retention.ms": "86400000"}}}); err != nil {
		t.Fatal(err)
	}
	after, _ := f.Probe(context.Background(), c)
	again, _ := f.Probe(context.Background(), c)
	if after.ConfigHash == "" || after.ConfigHash != again.ConfigHash {
		t.Fatalf("hash after a config change %q, again %q: want a stable non-empty hash", after.ConfigHash, again.ConfigHash)
	}
}

// TestApplyIsFenced: an attempt that comes with an older fencing token than
// the cluster has seen, or whose executor lost its hold while it waited,
// changes nothing.
func TestApplyIsFenced(t *testing.T) {
	f := newFleet(t, simfleet.Options{})
	ctx := context.Background()
	if _, err := f.Apply(ctx, drivers.Request{CommandID: "cmd-2", Cluster: kafka1, Operation: upgrade("3.9.1"), FencingToken: 10}); err != nil {
		t.Fatal(err)
	}
	_, err := f.Apply(ctx, drivers.Request{CommandID: "cmd-1", Cluster: kafka1, Operation: upgrade("3.8.5"), FencingToken: 5})
	if !errors.Is(err, drivers.ErrFenced) {
		t.Fatalf("an older token: %v; want ErrFenced", err)
	}
	lost := func() error { return fmt.Errorf("lease lapsed: %w", drivers.ErrFenced) }
	_, err = f.Apply(ctx, drivers.Request{CommandID: "cmd-3", Cluster: kafka1, Operation: upgrade("4.0.0"), FencingToken: 11, Fence: lost})
	if !errors.Is(err, drivers.ErrFenced) {
		t.Fatalf("a lost hold: %v; want ErrFenced", err)
	}
	if st, _ := f.Cluster(kafka1.ID); st.Version != "3.9.1" || st.Applies != 1 {
		t.Fatalf("cluster %+v; want 3.9.1 from the one attempt that held it", st)
	}
}

// TestChangeBehindTheBack: Change edits a cluster as a person would, with
// no operation recorded, and the next probe sees it, its config values
// included (the whole config: a key it lacks is unset).
func TestChangeBehindTheBack(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		f := newFleet(t, simfleet.Options{Dir: dir})
		ctx := context.Background()
		if err := f.Change(ctx, kafka1.ID, func(*simfleet.State) {}); err == nil {
			t.Fatal("Change of a cluster not met yet: no error")
		}
		if _, err := f.Probe(ctx, kafka1); err != nil {
			t.Fatal(err)
		}
		if err := f.Change(ctx, kafka1.ID, func(s *simfleet.State) {
			s.Version, s.Config = "3.8.5", map[string]string{"log.retention.ms": "100"}
		}); err != nil {
			t.Fatal(err)
		}
		obs, err := f.Probe(ctx, kafka1)
		if err != nil || obs.Version != "3.8.5" || !obs.ConfigComplete || !maps.Equal(obs.Config, map[string]string{"log.retention.ms": "100"}) || obs.ConfigHash == "" {
			t.Fatalf("probe after the change: %+v, %v", obs, err)
		}
		if st := mustCluster(t, f, kafka1.ID); st.Applies != 0 || len(st.AppliedCommands) != 0 {
			t.Errorf("the change was recorded as an operation: %+v", st)
		}
	}
}
