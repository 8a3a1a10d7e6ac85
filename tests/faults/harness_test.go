package faults

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/selector"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/services/notifier/notifier"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// The rollout every test runs: an upgrade of the kafka clusters of a fleet
// of fleetSize, internal ones first, in waves with a bake, on a fleet
// where a share of the operations fail and are retried.
const (
	fleetSize   = 40
	failureRate = 0.15
	toVersion   = "3.9.1"
	// rolloutTimeout is the real time a rollout gets; one without faults
	// takes a few seconds.
	rolloutTimeout = 3 * time.Minute
	// step is how far the fake clock moves on every check of a wait
	// (fleettest checks every 10ms of real time): the services' time runs
	// some 25 times faster than real time, while the executor's leases
	// (15s) and kgo's timeouts run in real time. Faster, an executor
	// waiting out a lease after a restart would see the operations it
	// resumes time out (30 minutes of fake time) meanwhile.
	step = 250 * time.Millisecond
)

func upgradeSpec() rollout.Spec {
	return rollout.Spec{
		Name:      "kafka-" + toVersion,
		Operation: rollout.Operation{Kind: rollout.Upgrade, Version: toVersion},
		Selector:  "kind=kafka",
		Phases: []rollout.Phase{
			{Name: "internal", Selector: "tier=internal", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}, Bake: 10 * time.Second},
			{Name: "rest", Waves: rollout.Waves{Mode: rollout.WaveExponential, Value: 3}, MaxInFlight: 10, Bake: 10 * time.Second},
		},
		// With ten retries a cluster fails for good with odds of 0.15^11.
		FailureThreshold: rollout.Threshold{Count: 2},
		Retries:          10,
		RetryBackoff:     time.Second,
	}
}

// exit is a service that returned by itself during a run.
type exit struct {
	service string
	err     error
}

// run is one rollout under a fault.
type run struct {
	t *testing.T
	f *fleettest.Fleet
	// mayEnd says whether the fault may end service with err (the fault
	// is one that must end it); an exit it does not allow fails the test.
	// nil allows none.
	mayEnd func(service string, err error) bool
	// scope tells the requests of this fleet from those of others.
	scope *scope
	// tick, if set, is called on every check while the rollout runs,
	// with the workflow as it is: faults that change the broker as the
	// rollout goes on (a leader moving, a node removed) act there.
	tick func(w *decide.Workflow)

	exits []exit
}

// start starts a fleet for a test run; with, if given, changes its options.
func start(t *testing.T, with ...func(*fleettest.Options)) *run {
	t.Helper()
	o := fleettest.Options{Clusters: fleetSize, FailureRate: failureRate}
	for _, fn := range with {
		fn(&o)
	}
	f := fleettest.Start(t, o)
	return &run{t: t, f: f, scope: newScope(f.Backbone.Namespace, f.Backbone.Names().All())}
}

// ns is the fleet's namespace: every topic, group and transactional ID of
// its services starts with ns + ".".
func (r *run) ns() string { return r.f.Backbone.Namespace }

// supervise restarts the services that exited, as a supervisor would,
// failing the test for each exit the fault does not allow.
func (r *run) supervise() {
	for name, err := range r.f.Exited() {
		r.exits = append(r.exits, exit{name, err})
		switch {
		case err != nil && r.mayEnd != nil && r.mayEnd(name, err):
			r.t.Logf("%s ended, as the fault may make it (restarting it): %v", name, err)
		case err == nil:
			r.t.Errorf("%s returned without an error, and without being asked to stop", name)
		default:
			r.t.Errorf("%s exited with: %v", name, err)
		}
		if len(r.exits) > 30 {
			r.t.Fatalf("services exited %d times; giving up", len(r.exits))
		}
		r.f.StartService(name)
	}
}

// every makes fault happen while the rollout runs, at most once per
// interval of real time (checked on each of the rollout's checks), and
// returns the count of times it happened.
func (r *run) every(interval time.Duration, fault func()) *int {
	count := 0
	last := time.Now()
	r.tick = func(*decide.Workflow) {
		if time.Since(last) > interval {
			fault()
			count++
			last = time.Now()
		}
	}
	return &count
}

// rollout submits the upgrade and waits for it to finish, supervising the
// services meanwhile; it checks it ended as it would without faults.
func (r *run) rollout() *decide.Workflow {
	r.t.Helper()
	start := time.Now()
	id := r.f.Submit(upgradeSpec())
	w := r.f.Await(id, step, rolloutTimeout, "the rollout finishing", func(w *decide.Workflow) bool {
		r.supervise()
		if r.tick != nil {
			r.tick(w)
		}
		return w.State.Terminal()
	})
	r.t.Logf("rollout %s %s in %v of real time", id, w.State, time.Since(start).Round(time.Millisecond))
	if w.State != records.WorkflowSucceeded {
		r.t.Fatalf("rollout %s, want succeeded: %s", w.State, w.Reason)
	}
	want := map[string]bool{}
	sel := selector.MustParse("kind=kafka")
	for _, c := range r.f.Clusters {
		if sel.Matches(c.Labels) {
			want[c.ID] = true
		}
	}
	if len(w.Targets) != len(want) {
		r.t.Errorf("%d targets, want the %d kafka clusters", len(w.Targets), len(want))
	}
	retried := 0
	for cid, tg := range w.Targets {
		if !want[cid] {
			r.t.Errorf("%s is a target but not a kafka cluster", cid)
		}
		if tg.State != records.TargetSucceeded || tg.Version != toVersion {
			r.t.Errorf("%s: %s at version %q (%s), want succeeded at %s", cid, tg.State, tg.Version, tg.Reason, toVersion)
		}
		if tg.Attempt > 1 {
			retried++
		}
	}
	r.t.Logf("%d targets, %d of them retried", len(w.Targets), retried)
	return w
}

// check checks what a user relies on after the rollout w: every cluster
// changed exactly once (the targets, by their last command) and no other;
// no cluster in two operations at once, no operation ending twice; every
// notification written once, none lost; and no service exited but as the
// fault allows.
func (r *run) check(w *decide.Workflow) {
	r.t.Helper()
	r.checkClusters(w)
	r.checkOperations(w)
	r.checkNotifications(w)
	r.supervise()
	// A fault may still end a service after the rollout (a lease renewal
	// whose end was dropped): judge how each ended, as supervise does.
	for name, err := range r.f.StopAll() {
		if r.mayEnd == nil || !r.mayEnd(name, err) {
			r.t.Errorf("%s ended with: %v", name, err)
		} else {
			r.t.Logf("%s ended after the rollout, as the fault may make it: %v", name, err)
		}
	}
}

func (r *run) checkClusters(w *decide.Workflow) {
	r.t.Helper()
	for _, c := range r.f.Clusters {
		st, _ := r.f.Sim.Cluster(c.ID)
		tg, target := w.Targets[c.ID]
		switch {
		case target && (st.Applies != 1 || st.Version != toVersion || !slices.Equal(st.AppliedCommands, []string{tg.CommandID})):
			r.t.Errorf("%s: version %s after %d changes by commands %v; want %s after one change, by its last command %s; its operations:\n%s",
				c.ID, st.Version, st.Applies, st.AppliedCommands, toVersion, tg.CommandID, r.history(c.ID))
		case !target && (st.Applies != 0 || len(st.AppliedCommands) != 0):
			r.t.Errorf("%s is not a target but was changed %d times, by %v", c.ID, st.Applies, st.AppliedCommands)
		}
	}
}

// history describes the operation events of a cluster, for messages.
func (r *run) history(clusterID string) string {
	var lines []string
	for _, ev := range r.f.Operations() {
		if ev.ClusterID == clusterID {
			lines = append(lines, fmt.Sprintf("\t%v attempt %d %s %s: %s (event %s, executor %q, token %d) %s",
				ev.Envelope.Time.Format("15:04:05.000"), ev.Attempt, ev.CommandID, ev.Status, ev.Reason, ev.Envelope.ID, ev.Executor, ev.FencingToken, ev.Output))
		}
	}
	return strings.Join(lines, "\n")
}

// checkOperations checks the operations topic: no cluster ran two
// operations at once (from "started" to its outcome), every operation
// ended once, and each target's last command succeeded.
func (r *run) checkOperations(w *decide.Workflow) {
	r.t.Helper()
	type span struct {
		cmd      string
		from, to time.Time
	}
	spans := map[string][]span{}
	started := map[string]time.Time{}
	outcomes := map[string][]records.OperationEvent{}
	for _, ev := range r.f.Operations() {
		switch {
		case ev.Status == records.OperationStarted:
			if _, ok := started[ev.CommandID]; !ok {
				started[ev.CommandID] = ev.Envelope.Time
			}
		case ev.Status.Terminal():
			outcomes[ev.CommandID] = append(outcomes[ev.CommandID], ev)
			from, ok := started[ev.CommandID]
			if !ok {
				r.t.Errorf("operation %s on %s %s without having started", ev.CommandID, ev.ClusterID, ev.Status)
			}
			spans[ev.ClusterID] = append(spans[ev.ClusterID], span{ev.CommandID, from, ev.Envelope.Time})
		}
	}
	for cid, ss := range spans {
		for i := range ss {
			for j := i + 1; j < len(ss); j++ {
				if ss[i].from.Before(ss[j].to) && ss[j].from.Before(ss[i].to) {
					r.t.Errorf("%s ran two operations at once: %s %v-%v and %s %v-%v", cid,
						ss[i].cmd, ss[i].from, ss[i].to, ss[j].cmd, ss[j].from, ss[j].to)
				}
			}
		}
	}
	for cmd, evs := range outcomes {
		if len(evs) > 1 {
			var desc []string
			for _, ev := range evs {
				desc = append(desc, fmt.Sprintf("%s (id %s, at %v)", ev.Status, ev.Envelope.ID, ev.Envelope.Time))
			}
			r.t.Errorf("operation %s on %s ended %d times: %s", cmd, evs[0].ClusterID, len(evs), strings.Join(desc, ", "))
		}
	}
	for cid, tg := range w.Targets {
		evs := outcomes[tg.CommandID]
		if len(evs) == 0 || evs[len(evs)-1].Status != records.OperationSucceeded {
			r.t.Errorf("%s: its last command %s has no succeeded outcome on the operations topic", cid, tg.CommandID)
		}
	}
}

// expectedNotifications renders, as the notifier does, every record of the
// topics it announces: the notifications that must be written, by ID.
func (r *run) expectedNotifications() map[string]records.Notification {
	names := r.f.Backbone.Names()
	out := map[string]records.Notification{}
	for _, topic := range []string{names.Workflows, names.Operations, names.Health, names.DeadLetters} {
		for _, rec := range r.f.ReadAll(topic) {
			if n, ok := render(names, rec); ok {
				out[n.Envelope.ID] = n
			}
		}
	}
	return out
}

// render is the notifier's rendering of one record of the topics it reads.
func render(names topics.Names, r *kgo.Record) (records.Notification, bool) {
	if r.Value == nil {
		return records.Notification{}, false
	}
	undecodable := func(err error) (records.Notification, bool) {
		return notifier.Undecodable(r.Topic, r.Partition, r.Offset, string(r.Key), r.Timestamp, err), true
	}
	switch r.Topic {
	case names.Workflows:
		rec, err := records.DecodeWorkflowRecord(r.Value)
		if err != nil {
			return undecodable(err)
		}
		return notifier.FromWorkflow(rec)
	case names.Operations:
		ev, err := records.DecodeOperationEvent(r.Value)
		if err != nil {
			return undecodable(err)
		}
		return notifier.FromOperation(ev)
	case names.Health:
		h, err := records.DecodeHealth(r.Value)
		if err != nil {
			return undecodable(err)
		}
		return notifier.FromHealth(h)
	case names.DeadLetters:
		d, err := records.DecodeDeadLetter(r.Value)
		if err != nil {
			return undecodable(err)
		}
		return notifier.FromDeadLetter(d), true
	}
	return records.Notification{}, false
}

// checkNotifications waits until the notifier has announced every record
// it must, then checks that none was written twice (by ID), none lacks a
// source, and the user heard of the rollout's end and of each target's
// outcome once.
func (r *run) checkNotifications(w *decide.Workflow) {
	r.t.Helper()
	var missing []string
	ok := r.f.Eventually(0, 30*time.Second, func() bool {
		r.supervise()
		have := map[string]bool{}
		for _, n := range r.f.Notifications() {
			have[n.Envelope.ID] = true
		}
		missing = missing[:0]
		for id, n := range r.expectedNotifications() {
			if !have[id] {
				missing = append(missing, fmt.Sprintf("%s %q (cause %s)", n.Kind, n.Message, n.Envelope.CausationID))
			}
		}
		return len(missing) == 0
	})
	if !ok {
		slices.Sort(missing)
		r.t.Errorf("%d notifications lost (not written within 30s): %s", len(missing), strings.Join(missing, "; "))
	}
	notes := r.f.Notifications()
	expected := r.expectedNotifications() // read after: every source of notes is in it
	count := map[string]int{}
	kinds := map[string]int{}
	for _, n := range notes {
		count[n.Envelope.ID]++
		if count[n.Envelope.ID] == 2 {
			r.t.Errorf("notification %s written twice: %s %q (cause %s)", n.Envelope.ID, n.Kind, n.Message, n.Envelope.CausationID)
		}
		if _, ok := expected[n.Envelope.ID]; !ok && count[n.Envelope.ID] == 1 {
			r.t.Errorf("notification %s has no source record: %s %q (cause %s)", n.Envelope.ID, n.Kind, n.Message, n.Envelope.CausationID)
		}
		if n.WorkflowID == w.ID {
			kinds[n.Kind]++
		}
	}
	if kinds["workflow.succeeded"] != 1 {
		r.t.Errorf("%d workflow.succeeded notifications, want 1 (kinds: %v)", kinds["workflow.succeeded"], kinds)
	}
	if got := kinds["operation.succeeded"]; got != len(w.Targets) {
		r.t.Errorf("%d operation.succeeded notifications, want one per target (%d); kinds: %v", got, len(w.Targets), kinds)
	}
	r.t.Logf("%d notifications, by kind for the rollout: %v", len(notes), sortedKinds(kinds))
}

func sortedKinds(kinds map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, kinds[k]))
	}
	return strings.Join(parts, " ")
}
