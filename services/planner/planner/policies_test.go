package planner

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// TestPoliciesAreReadAfreshForARolloutNamingAnUnknownOne stands for a
// policies table that has not caught up yet (it knows no policy) when a
// rollout naming a policy arrives: the planner reads the policies to the
// end of the log, finds it, and drops one removed since.
func TestPoliciesAreReadAfreshForARolloutNamingAnUnknownOne(t *testing.T) {
	bb := backbone.Config{Brokers: brokertest.Addrs(t), Namespace: fmt.Sprintf("policies-%d", time.Now().UnixNano())}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bb.EnsureTopics(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	names := bb.Names()
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	canary := rollout.Policy{Name: "canary-first", Phases: []rollout.Phase{{Name: "canary", Selector: "tier=internal"}, {Name: "rest"}}}
	value, err := records.Encode(records.PolicyRecord{Envelope: records.Envelope{ID: "p1", Time: time.Now()}, Policy: canary})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx,
		&kgo.Record{Topic: names.Policies, Key: []byte(canary.Name), Value: value},
		&kgo.Record{Topic: names.Policies, Key: []byte("gone")}, // a tombstone
	).FirstErr(); err != nil {
		t.Fatal(err)
	}

	request := func(policy string) kgo.Fetches {
		value, err := records.Encode(records.Request{Envelope: records.Envelope{ID: "r-" + policy, Time: time.Now()},
			Submit: &records.SubmitRollout{Spec: rollout.Spec{Name: "x", Operation: rollout.Operation{Kind: rollout.Restart}, Selector: "kind=kafka", Policy: policy}}})
		if err != nil {
			t.Fatal(err)
		}
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: names.Requests, Partitions: []kgo.FetchPartition{{
			Partition: 0, Records: []*kgo.Record{{Topic: names.Requests, Partition: 0, Key: []byte("r-" + policy), Value: value}},
		}}}}}}
	}
	p := &planner{cfg: Config{Backbone: bb}, names: names, owned: map[int32]bool{0: true}, state: decide.NewState(nil, nil)}
	p.state.Policies["gone"] = rollout.Policy{Name: "gone", Phases: []rollout.Phase{{Name: "all"}}}

	fresh, err := p.policiesFor(ctx, p.decodeRequests(request("gone")))
	if err != nil || fresh != nil {
		t.Fatalf("a rollout naming a known policy: %v, %v; want the table as it is", fresh, err)
	}
	fresh, err = p.policiesFor(ctx, p.decodeRequests(request(canary.Name)))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fresh[canary.Name]; !ok || len(fresh) != 1 {
		t.Fatalf("policies read afresh: %v, want %s alone", fresh, canary.Name)
	}
}
