package faults

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// TestNoFaults is the reference: the rollout and the checks every other
// test makes, on a broker that behaves.
func TestNoFaults(t *testing.T) {
	r := start(t)
	w := r.rollout()
	r.check(w)
}

// fault installs a kfake fault for the run's fleet until the test ends:
// it answers a share p of the requests of keys that concern the fleet
// (drawn per partition, for requests that carry partitions) with err. The
// tally counts what it answered.
func (r *run) fault(d *dice, p float64, err *kerr.Error, keys ...kmsg.Key) *tally {
	sc := r.scope
	var hits tally
	h := broker.Fault(kfake.Fault{
		Keys:  keys,
		Err:   err,
		Count: -1,
		When: func(req kmsg.Request) bool {
			if sc.has(req) && d.chance(p) {
				hits.add(req)
				return true
			}
			return false
		},
	})
	r.t.Cleanup(h.Remove)
	return &hits
}

// slow makes a share p of the requests of key that concern the run's
// fleet wait, each for a time drawn up to most, before the broker handles
// them. The tally counts the requests slowed.
func (r *run) slow(d *dice, p float64, most time.Duration, key kmsg.Key) *tally {
	sc := r.scope
	var slowed tally
	control(r.t, key, func(req kmsg.Request) (kmsg.Response, error, bool) {
		if sc.has(req) && d.chance(p) {
			slowed.add(req)
			wait := time.Duration(d.intN(int(most/time.Millisecond))+1) * time.Millisecond
			broker.SleepControl(func() { time.Sleep(wait) }) // the fault itself: the broker is slow
		}
		return nil, nil, false
	})
	return &slowed
}

// progress counts the targets of w that succeeded.
func progress(w *decide.Workflow) int {
	n := 0
	for _, tg := range w.Targets {
		if tg.State == records.TargetSucceeded {
			n++
		}
	}
	return n
}

// TestProduceErrors fails a share of the services' produce requests after
// the broker wrote them: kgo retries them (the producers are idempotent,
// so a batch written before its answer was lost is not written twice),
// and nothing a user sees changes.
//
// Produce requests answered NOT_LEADER_FOR_PARTITION, or whose connection
// is cut, end the executor: see leasewrite_test.go.failing.
func TestProduceErrors(t *testing.T) {
	t.Run("timed out after the write", func(t *testing.T) {
		// kfake writes the batch and then answers REQUEST_TIMED_OUT, as
		// a broker whose replication timed out does: the retry must be
		// recognised as a duplicate.
		r := start(t)
		hits := r.fault(newDice(t), 0.2, kerr.RequestTimedOut, kmsg.Produce)
		w := r.rollout()
		t.Logf("%d partitions of produce requests written and answered REQUEST_TIMED_OUT (%v)", hits.total(), hits)
		r.check(w)
	})
}

// endsTransaction reports whether err is a service ending because a
// transaction could not end: the executor (its writer's transaction), the
// planner (any transaction error ends it) and the notifier (an end that
// failed for good or timed out) must stop then, and their restart
// initialises the transactional ID again, aborting what was left open.
func endsTransaction(err error) bool {
	return err != nil && strings.Contains(err.Error(), "end transaction") ||
		errors.Is(err, context.DeadlineExceeded) && strings.Contains(err.Error(), "did not end within")
}

// TestEndTxnFaults fails, slows down or drops the EndTxn requests of the
// three transactional producers: the planner's, the notifier's and the
// executor's per-partition writers.
func TestEndTxnFaults(t *testing.T) {
	t.Run("retriable errors", func(t *testing.T) {
		// Errors a transaction coordinator answers while it moves or
		// loads, or while the previous transaction's markers are being
		// written: kgo retries them, and no service notices.
		r := start(t)
		d := newDice(t)
		var ts []*tally
		for _, err := range []*kerr.Error{kerr.NotCoordinator, kerr.CoordinatorNotAvailable, kerr.CoordinatorLoadInProgress, kerr.ConcurrentTransactions} {
			ts = append(ts, r.fault(d, 0.06, err, kmsg.EndTxn))
		}
		w := r.rollout()
		t.Logf("EndTxn answered NOT_COORDINATOR: %v; COORDINATOR_NOT_AVAILABLE: %v; COORDINATOR_LOAD_IN_PROGRESS: %v; CONCURRENT_TRANSACTIONS: %v",
			ts[0], ts[1], ts[2], ts[3])
		r.check(w)
	})
	t.Run("slow", func(t *testing.T) {
		// A quarter of the ends take up to 1.5s: under every bound
		// the services set (15s for an end, a third of the executor's
		// 15s lease for its renewal), so nothing may fail.
		r := start(t)
		slowed := r.slow(newDice(t), 0.25, 1500*time.Millisecond, kmsg.EndTxn)
		w := r.rollout()
		t.Logf("%d EndTxn requests slowed (%v)", slowed.total(), slowed)
		r.check(w)
	})
	t.Run("unknown server error", func(t *testing.T) {
		// An error kgo does not retry: the end fails, its outcome unknown
		// to the client (kfake did not end the transaction). The
		// executor's writer and the planner must end (a transaction that
		// cannot be ended leaves the producer unusable); the notifier
		// carries on or ends. Restarted, each initialises its
		// transactional ID again, which aborts what was open, and the
		// rollout finishes as without the fault.
		r := start(t)
		r.mayEnd = func(_ string, err error) bool { return endsTransaction(err) && errors.Is(err, kerr.UnknownServerError) }
		sc := r.scope
		d := newDice(t)
		h := broker.Fault(kfake.Fault{
			Keys:  []kmsg.Key{kmsg.EndTxn},
			Err:   kerr.UnknownServerError,
			Count: 6,
			When:  func(req kmsg.Request) bool { return sc.has(req) && d.chance(0.1) },
		})
		t.Cleanup(h.Remove)
		w := r.rollout()
		t.Logf("%d EndTxn requests answered UNKNOWN_SERVER_ERROR; %d exits", h.Hits(), len(r.exits))
		r.check(w)
	})
	t.Run("no answer", func(t *testing.T) {
		// Three EndTxn requests are never answered: the client times the
		// request out (10s) and the end fails or is retried. A service
		// whose end fails or outlasts its bound (15s) must end. So must
		// an executor whose writer is held that long: its lease renewals
		// (every 5s, each given 5s) queue behind the stuck end on the
		// partition's one transactional producer, and a lease of 15s
		// that could not be renewed ends the executor, by design (it can
		// no longer show that it still owns the partition).
		r := start(t)
		r.mayEnd = func(service string, err error) bool {
			return endsTransaction(err) || service == "executor" && strings.Contains(err.Error(), "could not renew the lease before it ended")
		}
		sc := r.scope
		d := newDice(t)
		var dropped tally
		control(t, kmsg.EndTxn, func(req kmsg.Request) (kmsg.Response, error, bool) {
			if sc.has(req) && dropped.total() < 3 && d.chance(0.1) {
				dropped.add(req)
				return nil, nil, true // no answer, ever
			}
			return nil, nil, false
		})
		w := r.rollout()
		t.Logf("%d EndTxn requests never answered (%v); %d exits", dropped.total(), &dropped, len(r.exits))
		r.check(w)
	})
}

// TestSlowCommitsAndFetches slows down a quarter of the services' offset
// commits and of their fetches, up to 1.5s each: the services wait,
// nothing fails. The planner and the notifier commit offsets in their
// transactions (TxnOffsetCommit; kgo sends no AddOffsetsToTxn to a broker
// of KIP-890's second part, as kfake is); the executor and the monitor
// commit none.
func TestSlowCommitsAndFetches(t *testing.T) {
	r := start(t)
	d := newDice(t)
	commits := r.slow(d, 0.25, 1500*time.Millisecond, kmsg.TxnOffsetCommit)
	fetches := r.slow(d, 0.25, 1500*time.Millisecond, kmsg.Fetch)
	w := r.rollout()
	t.Logf("slowed %d TxnOffsetCommit (%v) and %d Fetch requests", commits.total(), commits, fetches.total())
	r.check(w)
}

// TestCoordinatorsMove moves the group and transaction coordinators while
// the rollout runs: clients are answered NOT_COORDINATOR, find the new one
// and go on.
func TestCoordinatorsMove(t *testing.T) {
	t.Run("rehashed", func(t *testing.T) {
		// Every coordinator of every group and transactional ID moves,
		// every half second of real time.
		r := start(t)
		moves := r.every(500*time.Millisecond, broker.RehashCoordinators)
		w := r.rollout()
		t.Logf("coordinators moved %d times", *moves)
		r.check(w)
	})
	t.Run("node removed", func(t *testing.T) {
		// The node coordinating the planner's group (or, if that node is
		// the controller, another of the fleet's groups or transactional
		// IDs) is removed once the rollout has made progress (its
		// partitions' leaders move to the other nodes), and a new node
		// joins once a third of the targets succeeded. kfake cannot lose
		// its controller: it keeps naming the removed node, and every
		// later CreateTopics fails NOT_CONTROLLER.
		r := start(t)
		names := r.f.Backbone.Names()
		controller := controllerID(t)
		var key string
		for _, k := range []string{names.Group("planner"), names.Group("planner") + "-p0", names.Group("notifier"), names.Group("notifier") + "-n0",
			names.Group("executor"), names.Group("executor") + "-0", names.Group("executor") + "-1", names.Group("executor") + "-2"} {
			if broker.CoordinatorFor(k) != controller {
				key = k
				break
			}
		}
		if key == "" {
			t.Fatalf("every group and transactional ID of the fleet is coordinated by the controller, node %d", controller)
		}
		removed, added := int32(-1), int32(-1)
		r.tick = func(w *decide.Workflow) {
			switch {
			case removed < 0 && progress(w) >= 1:
				removed = broker.CoordinatorFor(key)
				if err := broker.RemoveNode(removed); err != nil {
					t.Fatalf("remove node %d: %v", removed, err)
				}
				nodesMu.Lock()
				for i, n := range nodes {
					if n == removed {
						nodes = append(nodes[:i], nodes[i+1:]...)
						break
					}
				}
				nodesMu.Unlock()
				t.Logf("removed node %d, the coordinator of %s, after %d targets succeeded", removed, key, progress(w))
			case removed >= 0 && added < 0 && 3*progress(w) >= len(w.Targets):
				id, port, err := broker.AddNode(-1, 0)
				if err != nil {
					t.Fatalf("add a node: %v", err)
				}
				added = id
				nodesMu.Lock()
				nodes = append(nodes, id)
				nodesMu.Unlock()
				t.Logf("added node %d (port %d) after %d targets succeeded; %s is coordinated by node %d",
					id, port, progress(w), key, broker.CoordinatorFor(key))
			}
		}
		w := r.rollout()
		if removed < 0 {
			t.Fatal("no node was removed")
		}
		r.check(w)
	})
}

// TestPartitionLeadersMove moves the leaders of partitions while the
// rollout runs. (kfake's own answer to OffsetForLeaderEpoch after a move
// would make every consumer read its partitions again from the start:
// TestMain answers it as Kafka does; see answerOffsetForLeaderEpoch.)
func TestPartitionLeadersMove(t *testing.T) {
	t.Run("one at a time", func(t *testing.T) {
		// A partition of the fleet's topics, drawn at random, moves to
		// another node every half second of real time, as in a
		// reassignment.
		r := start(t)
		d := newDice(t)
		topics := r.f.Backbone.Names().All()
		moves := 0
		last := time.Now()
		r.tick = func(*decide.Workflow) {
			if time.Since(last) < 500*time.Millisecond {
				return
			}
			last = time.Now()
			topic, p := topics[d.intN(len(topics))], int32(d.intN(3))
			ns := currentNodes()
			to := ns[d.intN(len(ns))]
			if to == broker.LeaderFor(topic, p) {
				return
			}
			if err := broker.MoveTopicPartition(topic, p, to); err != nil {
				t.Fatalf("move %s/%d to node %d: %v", topic, p, to, err)
			}
			moves++
		}
		w := r.rollout()
		t.Logf("%d leaders moved", moves)
		r.check(w)
	})
	t.Run("all at once", func(t *testing.T) {
		// Every partition of the broker gets a new leader, as when a
		// broker restarts, every two seconds of real time.
		r := start(t)
		shuffles := r.every(2*time.Second, broker.ShufflePartitionLeaders)
		w := r.rollout()
		t.Logf("leaders shuffled %d times", *shuffles)
		r.check(w)
	})
}
