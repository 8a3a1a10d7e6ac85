// Package faults runs whole rollouts through the four services while the
// broker misbehaves: produce requests failing or cut off, transactions
// whose end fails or is slow, slow offset commits and fetches, group and
// transaction coordinators moving, partition leaders moving. Each test
// checks what a user relies on: the rollout ends as it would without the
// fault, every cluster is changed exactly once, no cluster runs two
// operations at once, every notification is written once, and no service
// exits unless the fault is one that must end it.
//
// The faults need the embedded broker's hooks (kfake's faults and
// controls), so this package always runs on an embedded broker of three
// nodes of its own, started in TestMain, whatever FLOTILLA_TEST_BROKERS
// says: it hands that broker to fleettest through that variable.
//
// Which requests fail is drawn from a seeded random source, one per test:
// FLOTILLA_FAULT_SEED sets the seed, and every test logs the one it used.
// The schedule of requests is not deterministic, so a seed makes a failure
// likelier to come back, not certain.
package faults

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
)

// broker is the embedded broker every test of the package runs on.
var broker *kfake.Cluster

// nodes are the IDs of broker's nodes; tests that remove one put another
// in its place.
var (
	nodesMu sync.Mutex
	nodes   []int32
)

func TestMain(m *testing.M) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.ClusterID("flotilla-faults"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the embedded broker:", err)
		os.Exit(1)
	}
	broker = c
	nodes = []int32{0, 1, 2}
	c.ControlKey(int16(kmsg.OffsetForLeaderEpoch), answerOffsetForLeaderEpoch)
	// brokertest reads it once, on first use: fleettest then runs every
	// fleet of this package on this broker.
	os.Setenv(brokertest.Env, strings.Join(c.ListenAddrs(), ","))
	code := m.Run()
	c.Close()
	os.Exit(code)
}

// answerOffsetForLeaderEpoch answers OffsetForLeaderEpoch as Kafka does,
// in place of kfake. This version of kfake answers a request for an
// epoch older than the partition's current one, when no batch was written
// in a later epoch (the leader moved, nothing was produced since), with an
// end offset of -1 (unknown) rather than the log's end: a consumer that
// validates its position after a leader moved (kgo does, KIP-320) then
// takes the records it read as lost and reads the partition again from
// the start, which no leader move does on Kafka. kfake never truncates a
// log, so the end offset of any epoch up to the current one is at most
// its high watermark, and answering that tells a consumer that nothing it
// read was lost.
func answerOffsetForLeaderEpoch(kreq kmsg.Request) (kmsg.Response, error, bool) {
	broker.KeepControl()
	req := kreq.(*kmsg.OffsetForLeaderEpochRequest)
	if req.ReplicaID >= 0 {
		return nil, nil, false // a follower's: kfake answers
	}
	node := broker.CurrentNode()
	resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewOffsetForLeaderEpochResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.LeaderEpoch, sp.EndOffset = -1, -1
			info := broker.PartitionInfo(rt.Topic, rp.Partition)
			switch {
			case info == nil:
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case info.Leader != node:
				sp.ErrorCode = kerr.NotLeaderForPartition.Code
			case rp.CurrentLeaderEpoch != -1 && rp.CurrentLeaderEpoch < info.Epoch:
				sp.ErrorCode = kerr.FencedLeaderEpoch.Code
			case rp.CurrentLeaderEpoch > info.Epoch:
				sp.ErrorCode = kerr.UnknownLeaderEpoch.Code
			case rp.LeaderEpoch <= info.Epoch:
				sp.LeaderEpoch, sp.EndOffset = rp.LeaderEpoch, info.HighWatermark
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil, true
}

// currentNodes returns the broker's node IDs now.
func currentNodes() []int32 {
	nodesMu.Lock()
	defer nodesMu.Unlock()
	return append([]int32(nil), nodes...)
}

// controllerID asks the broker which node is its controller.
func controllerID(t *testing.T) int32 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	return resp.ControllerID
}

// dice is a seeded random source, safe for concurrent use: kfake calls a
// fault's When on its own goroutine, a control function on another.
type dice struct {
	seed uint64
	mu   sync.Mutex
	r    *rand.Rand
}

// newDice returns the test's random source: seeded by FLOTILLA_FAULT_SEED,
// or else by the test's name, so that each test has its own and keeps it.
func newDice(t *testing.T) *dice {
	t.Helper()
	var seed uint64
	if s := os.Getenv("FLOTILLA_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FLOTILLA_FAULT_SEED=%q: %v", s, err)
		}
		seed = v
	} else {
		h := fnv.New64a()
		h.Write([]byte(t.Name()))
		seed = h.Sum64() % 1_000_000
	}
	t.Logf("fault seed %d (set FLOTILLA_FAULT_SEED=%d to draw the same faults)", seed, seed)
	return &dice{seed: seed, r: rand.New(rand.NewPCG(seed, 0x666c6f74696c6c61))}
}

// chance reports true with probability p.
func (d *dice) chance(p float64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.r.Float64() < p
}

// intN returns a number in [0, n).
func (d *dice) intN(n int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.r.IntN(n)
}

// scope tells the requests that concern one fleet: those naming a topic,
// group or transactional ID under its namespace. Requests of other tests'
// fleets, and requests naming nothing, are left alone.
type scope struct {
	ns  string
	ids map[[16]byte]bool // the IDs of the namespace's topics (fetches name topics by ID)
}

// newScope returns the scope of namespace ns, whose topics exist.
func newScope(ns string, topics []string) *scope {
	s := &scope{ns: ns, ids: map[[16]byte]bool{}}
	for _, t := range topics {
		if info := broker.TopicInfo(t); info != nil {
			s.ids[info.TopicID] = true
		}
	}
	return s
}

func (s *scope) in(name string) bool { return strings.HasPrefix(name, s.ns+".") }

// has reports whether req concerns the scope's fleet.
func (s *scope) has(req kmsg.Request) bool {
	switch r := req.(type) {
	case *kmsg.ProduceRequest:
		if r.TransactionID != nil && s.in(*r.TransactionID) {
			return true
		}
		for _, t := range r.Topics {
			if s.in(t.Topic) || s.ids[t.TopicID] {
				return true
			}
		}
	case *kmsg.FetchRequest:
		for _, t := range r.Topics {
			if s.in(t.Topic) || s.ids[t.TopicID] {
				return true
			}
		}
	case *kmsg.EndTxnRequest:
		return s.in(r.TransactionalID)
	case *kmsg.AddOffsetsToTxnRequest:
		return s.in(r.TransactionalID)
	case *kmsg.AddPartitionsToTxnRequest:
		if s.in(r.TransactionalID) {
			return true
		}
		for _, tx := range r.Transactions {
			if s.in(tx.TransactionalID) {
				return true
			}
		}
	case *kmsg.TxnOffsetCommitRequest:
		return s.in(r.TransactionalID) || s.in(r.Group)
	case *kmsg.OffsetCommitRequest:
		return s.in(r.Group)
	case *kmsg.InitProducerIDRequest:
		return r.TransactionalID != nil && s.in(*r.TransactionalID)
	}
	return false
}

// serviceOf names the service a request comes from, when it says: by its
// transactional ID (planner, notifier, executor) or its group; "other"
// for the rest (the monitor's produce requests, fetches, the test's own).
func serviceOf(req kmsg.Request) string {
	var name string
	switch r := req.(type) {
	case *kmsg.EndTxnRequest:
		name = r.TransactionalID
	case *kmsg.TxnOffsetCommitRequest:
		name = r.TransactionalID
	case *kmsg.ProduceRequest:
		if r.TransactionID != nil {
			name = *r.TransactionID
		}
	}
	for _, s := range []string{"planner", "notifier", "executor"} {
		if strings.Contains(name, "."+s+"-") {
			return s
		}
	}
	return "other"
}

// tally counts the requests a fault hit, by the service they came from.
type tally struct {
	mu sync.Mutex
	n  map[string]int
}

func (t *tally) add(req kmsg.Request) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]int{}
	}
	t.n[serviceOf(req)]++
}

func (t *tally) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, v := range t.n {
		n += v
	}
	return n
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(t.n)) {
		parts = append(parts, fmt.Sprintf("%s %d", s, t.n[s]))
	}
	return strings.Join(parts, ", ")
}

// control installs fn as a control function of the broker for requests of
// key until the test ends; fn says whether it handled the request (kept
// for the next one) or left it to the broker. It returns nothing: the
// control removes itself on the first request after the test.
func control(t *testing.T, key kmsg.Key, fn func(kmsg.Request) (kmsg.Response, error, bool)) {
	t.Helper()
	var mu sync.Mutex
	ended := false
	t.Cleanup(func() {
		mu.Lock()
		ended = true
		mu.Unlock()
	})
	broker.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		over := ended
		mu.Unlock()
		if over {
			broker.DropControl()
			return nil, nil, false
		}
		resp, err, handled := fn(req)
		if handled {
			broker.KeepControl()
		}
		return resp, err, handled
	})
}
