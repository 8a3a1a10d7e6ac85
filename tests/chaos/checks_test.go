//go:build unix

package chaos

import (
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// The checks must fail on the histories they exist to catch: each test
// below breaks one property of a clean history.

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func sec(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Second))) }

// scenario is a small history: one rollout "w1" to 4.0.0 over c1 and c2,
// each succeeding at its first attempt, each changed once, by executor
// processes 101 and 102.
type scenario struct {
	r *runner
	h *history
}

func call(pid int, cluster, workflow string, attempt int, token int64, begin, end float64, outcome string) simfleet.ApplyCall {
	cmd := decide.CommandID(workflow, cluster, attempt)
	b := simfleet.Call{Event: simfleet.CallBegin, Time: sec(begin), Proc: "p" + string(rune('0'+pid%10)), PID: pid, Cluster: cluster, Command: cmd, Attempt: attempt, Token: token}
	if outcome == "" {
		return simfleet.ApplyCall{Begin: b}
	}
	e := b
	e.Event, e.Time, e.Began, e.Outcome, e.Before, e.After = simfleet.CallEnd, sec(end), b.Time, outcome, "3.8.0", "3.8.0"
	if outcome == simfleet.OutcomeChanged {
		e.After = "4.0.0"
	}
	return simfleet.ApplyCall{Begin: b, End: e, Ended: true}
}

func targetRow(p int32, off int64, workflow, cluster string, state records.TargetState, attempt int) rowRec {
	t := &records.Target{WorkflowID: workflow, ClusterID: cluster, State: state, Attempt: attempt, CommandID: decide.CommandID(workflow, cluster, attempt)}
	if state == records.TargetSucceeded {
		t.Version = "4.0.0"
	}
	return rowRec{at{partition: p, offset: off}, records.WorkflowRecord{Envelope: records.Envelope{ID: workflow + "/" + cluster + "/" + string(state)}, Target: t}}
}

func newScenario() *scenario {
	r := &runner{o: Options{Retries: 2}, report: &Report{Ended: sec(100)}}
	r.report.Rollouts = []RolloutResult{{ID: "w1", Name: "r1", Version: "4.0.0", Submitted: sec(0), Finished: sec(50), State: records.WorkflowSucceeded}}
	h := &history{
		clusters: []inventory.Cluster{{ID: "c1", Version: "3.8.0"}, {ID: "c2", Version: "3.8.0"}},
		sims:     map[string]simfleet.State{"c1": {ID: "c1", Version: "4.0.0"}, "c2": {ID: "c2", Version: "4.0.0"}},
		calls: []simfleet.ApplyCall{
			call(101, "c1", "w1", 1, 10, 1, 2, simfleet.OutcomeChanged),
			call(102, "c2", "w1", 1, 11, 1, 2, simfleet.OutcomeChanged),
		},
		rows: []rowRec{
			targetRow(0, 1, "w1", "c1", records.TargetSucceeded, 1),
			targetRow(0, 2, "w1", "c2", records.TargetSucceeded, 1),
		},
		commands: map[string]records.Command{},
	}
	return &scenario{r: r, h: h}
}

func (s *scenario) facts() *facts { return s.r.facts(s.h) }

func mustPass(t *testing.T, c Check) {
	t.Helper()
	if !c.Passed() {
		t.Errorf("%s failed on a clean history: %s", c.Name, strings.Join(c.Violations, "; "))
	}
}

func mustFail(t *testing.T, c Check, want string) {
	t.Helper()
	if c.Passed() {
		t.Fatalf("%s passed; want a violation about %q", c.Name, want)
	}
	if !strings.Contains(strings.Join(c.Violations, "\n"), want) {
		t.Errorf("%s: violations %q do not mention %q", c.Name, c.Violations, want)
	}
}

func TestChecksPassACleanHistory(t *testing.T) {
	f := newScenario().facts()
	for _, c := range []Check{f.exactlyOnce(), f.noOverlap(), f.noSuperseded(), f.finalVersions(), f.asUndisturbed(), f.notifications(), f.fencing(), f.liveness()} {
		mustPass(t, c)
	}
}

func TestExactlyOnceCatchesADoubleApply(t *testing.T) {
	s := newScenario()
	// A resume that changes the cluster again, after the first change.
	s.h.calls = append(s.h.calls, call(102, "c1", "w1", 1, 12, 5, 6, simfleet.OutcomeChanged))
	f := s.facts()
	mustFail(t, f.exactlyOnce(), "c1, rollout r1: changed 2 times, want 1")
	if s.r.report.DoubleApplies != 1 {
		t.Errorf("%d double applies, want 1", s.r.report.DoubleApplies)
	}
	mustPass(t, f.noOverlap()) // one after the other
}

func TestExactlyOnceCatchesAChangeOfAFailedTarget(t *testing.T) {
	s := newScenario()
	s.h.rows = append(s.h.rows, targetRow(0, 3, "w1", "c2", records.TargetFailed, 3))
	mustFail(t, s.facts().exactlyOnce(), "c2, rollout r1: changed 1 times, want 0")
}

func TestNoOverlapCatchesTwoChangesAtOnce(t *testing.T) {
	s := newScenario()
	s.h.calls = append(s.h.calls, call(102, "c1", "w1", 1, 12, 1.5, 2.5, simfleet.OutcomeChanged))
	mustFail(t, s.facts().noOverlap(), "c1:")

	// A zombie's call, frozen while the new owner changes the cluster,
	// then fenced: noted, not a violation.
	s = newScenario()
	s.h.calls = append([]simfleet.ApplyCall{call(103, "c1", "w1", 1, 9, 0.5, 60, simfleet.OutcomeFenced)}, s.h.calls...)
	f := s.facts()
	c := f.noOverlap()
	mustPass(t, c)
	if !strings.Contains(strings.Join(c.Notes, " "), "changed+fenced") {
		t.Errorf("notes %q do not count the fenced overlap", c.Notes)
	}

	// A call whose process died inside it, overlapping a change: it may
	// have changed the cluster too.
	s = newScenario()
	s.h.calls = append(s.h.calls, call(103, "c1", "w1", 1, 12, 1.2, 0, ""))
	mustFail(t, s.facts().noOverlap(), "unended")
}

func TestNoSupersededCatchesAnOldAttemptRunAgain(t *testing.T) {
	s := newScenario()
	// c2: attempt 1 failed, attempt 2 changed it, then attempt 1 ran
	// again (hole 1 of issue 8: an executor restart re-ran it).
	s.r.o.FailureRate = 0
	s.h.calls = []simfleet.ApplyCall{
		call(101, "c1", "w1", 1, 10, 1, 2, simfleet.OutcomeChanged),
		call(102, "c2", "w1", 1, 11, 1, 2, simfleet.OutcomeFailed),
		call(102, "c2", "w1", 2, 13, 3, 4, simfleet.OutcomeChanged),
		call(101, "c2", "w1", 1, 14, 5, 6, simfleet.OutcomeConfirmed),
	}
	mustFail(t, s.facts().noSuperseded(), "began after")

	// Refused at once by the cluster: noted.
	s.h.calls[3] = call(101, "c2", "w1", 1, 11, 5, 5.1, simfleet.OutcomeFenced)
	c := s.facts().noSuperseded()
	mustPass(t, c)
	if len(c.Notes) == 0 {
		t.Error("a refused superseded call is not noted")
	}
}

func TestNoSupersededCatchesAnEarlierRolloutAfterALaterOne(t *testing.T) {
	s := newScenario()
	s.r.report.Rollouts = append(s.r.report.Rollouts, RolloutResult{ID: "w2", Name: "r2", Version: "4.0.1", Finished: sec(90), State: records.WorkflowSucceeded})
	s.h.calls = append(s.h.calls,
		call(101, "c1", "w2", 1, 20, 60, 61, simfleet.OutcomeChanged),
		call(102, "c1", "w1", 1, 21, 70, 71, simfleet.OutcomeAlreadyApplied)) // the sim hides it; a real cluster goes back to 4.0.0
	mustFail(t, s.facts().noSuperseded(), "(rollout 1) began after")
}

func TestFinalVersionsCatchAClusterPutBack(t *testing.T) {
	s := newScenario()
	s.h.sims["c1"] = simfleet.State{ID: "c1", Version: "3.8.0"}
	mustFail(t, s.facts().finalVersions(), "c1 runs 3.8.0, want 4.0.0")
}

func TestAsUndisturbedCatchesAnOutcomeTheSeedDoesNotGive(t *testing.T) {
	s := newScenario()
	s.h.rows = append(s.h.rows, targetRow(0, 3, "w1", "c2", records.TargetSucceeded, 2)) // with no failure, attempt 1 succeeds
	mustFail(t, s.facts().asUndisturbed(), "c2 succeeded after 2 attempts, want succeeded after 1")

	s = newScenario()
	s.r.o.FailureRate = 1 // every attempt fails: the rollout must fail
	mustFail(t, s.facts().asUndisturbed(), "want failed")
}

func opEvent(p int32, off int64, id, workflow, cluster string, status records.OperationStatus, executor string, token int64, when time.Time) opRec {
	return opRec{at{partition: p, offset: off, producerID: 7, epoch: 1}, records.OperationEvent{
		Envelope:  records.Envelope{ID: id, Time: when},
		CommandID: decide.CommandID(workflow, cluster, 1), WorkflowID: workflow, ClusterID: cluster, Attempt: 1,
		Status: status, Executor: executor, FencingToken: token,
	}}
}

func TestNotificationsCatchLostAndDuplicated(t *testing.T) {
	s := newScenario()
	s.h.ops = []opRec{
		opEvent(0, 1, "e1", "w1", "c1", records.OperationStarted, "executor-0", 10, sec(1)),
		opEvent(0, 2, "e2", "w1", "c1", records.OperationSucceeded, "executor-0", 10, sec(2)),
	}
	expected := s.h.expectedNotifications()
	if len(expected) != 2 {
		t.Fatalf("%d notifications expected from 2 operation events", len(expected))
	}
	var ids []string
	for id := range expected {
		ids = append(ids, id)
	}
	note := func(id string) noteRec {
		return noteRec{n: records.Notification{Envelope: records.Envelope{ID: id}, Kind: "operation.started", Fields: map[string]string{"command": "x"}}}
	}
	s.h.notes = []noteRec{note(ids[0]), note(ids[0])}
	c := s.facts().notifications()
	mustFail(t, c, "lost")
	mustFail(t, c, "duplicated 2 times")
}

func TestFencingCatchesAZombiesWrites(t *testing.T) {
	s := newScenario()
	s.h.leases = []leaseRec{
		{at{partition: 3, offset: 1}, records.LeaseRecord{Partition: 0, Holder: "executor-0", RenewedAt: sec(0)}},
		{at{partition: 3, offset: 2}, records.LeaseRecord{Partition: 0, Holder: "executor-1", RenewedAt: sec(10)}},
	}
	s.h.ops = []opRec{
		opEvent(0, 1, "e1", "w1", "c1", records.OperationStarted, "executor-0", 10, sec(1)),
		opEvent(0, 2, "e2", "w1", "c1", records.OperationSucceeded, "executor-1", 12, sec(11)),
	}
	s.h.ops[1].epoch = 2 // it initialised the partition's transactional ID
	mustPass(t, s.facts().fencing())

	// The replaced executor's outcome, after the lease passed on, with
	// an older token and an older epoch.
	late := opEvent(0, 3, "e3", "w1", "c1", records.OperationSucceeded, "executor-0", 10, sec(12))
	late.epoch = 0
	s.h.ops = append(s.h.ops, late)
	c := s.facts().fencing()
	mustFail(t, c, "when executor-1 held the lease of partition 0")
	mustFail(t, c, "token 10")
	mustFail(t, c, "epoch 0 after epoch 2")
	mustFail(t, c, "recorded twice")
}

func TestFencingCatchesAPlannerRowWrittenTwice(t *testing.T) {
	s := newScenario()
	w := func(off int64, seq int64) rowRec {
		return rowRec{at{partition: 0, offset: off}, records.WorkflowRecord{
			Envelope: records.Envelope{ID: "row-" + string(rune('0'+seq))},
			Workflow: &records.Workflow{ID: "w1", Seq: seq, Event: "wave-started"},
		}}
	}
	s.h.rows = append(s.h.rows, w(10, 3), w(11, 4), w(12, 4))
	cmd := records.Command{ID: "cmd-1", WorkflowID: "w1", ClusterID: "c1", Attempt: 2}
	s.h.cmdRecs = []cmdRec{
		{at{partition: 0, offset: 5, producerID: 1}, cmd},
		{at{partition: 0, offset: 6, producerID: 1}, cmd}, // the same planner deciding again: fine
		{at{partition: 0, offset: 7, producerID: 2}, cmd},
	}
	c := s.facts().fencing()
	mustFail(t, c, "written twice")
	mustFail(t, c, "header row 4")
	mustFail(t, c, "written by two planners")
	if c.Count != 3 {
		t.Errorf("%d violations, want 3: %q", c.Count, c.Violations)
	}
}

func TestSinkDeliveriesCatchLostUnknownForgedRepeatedAndReordered(t *testing.T) {
	s := newScenario()
	note := func(id string, partition int32, offset int64) noteRec {
		return noteRec{at: at{partition: partition, offset: offset}, n: records.Notification{Envelope: records.Envelope{ID: id}, Kind: "workflow.paused"}}
	}
	s.h.notes = []noteRec{note("n1", 0, 0), note("n2", 0, 1), note("n3", 1, 0)}
	// Partitions side by side: n3 may come between n1 and n2.
	s.r.sink = &webhookSink{got: map[string]int{"n1": 1, "n2": 1, "n3": 1}, first: []string{"n1", "n3", "n2"}, requests: 3}
	mustPass(t, s.facts().sinkDeliveries())
	s.r.sink = &webhookSink{got: map[string]int{"n1": 1, "n2": 1, "n3": 1}, first: []string{"n3", "n2", "n1"}, requests: 3}
	mustFail(t, s.facts().sinkDeliveries(), `out of order: "n2" (notifications 0@1) first arrived before "n1"`)

	s.r.sink = &webhookSink{got: map[string]int{"n1": 2, "n2": 1, "x": 1}, first: []string{"n1", "n2", "x"}, requests: 4, bad: []string{`request for "n2": no valid signature`}}
	c := s.facts().sinkDeliveries()
	mustFail(t, c, "not delivered: workflow.paused")
	mustFail(t, c, `delivered, but not on the notifications topic: "x"`)
	mustFail(t, c, "no valid signature")
	mustFail(t, c, "1 repeated deliveries, more than the 0 the faults explain")

	// A kill of a notifier copy explains a repeat in each partition, on
	// each side of the hand-over.
	s.r.report.faults = []Fault{{Time: sec(5), Kind: "SIGKILL", Target: "notifier-1"}}
	s.r.sink = &webhookSink{got: map[string]int{"n1": 2, "n2": 2, "n3": 1}, first: []string{"n1", "n2", "n3"}, requests: 5}
	mustPass(t, s.facts().sinkDeliveries())
	s.r.sink = &webhookSink{got: map[string]int{"n1": 2 * partitions, "n2": 2, "n3": 2}, first: []string{"n1", "n2", "n3"}, requests: 2*partitions + 4}
	mustFail(t, s.facts().sinkDeliveries(), "repeated deliveries, more than the 12 the faults explain")
}
