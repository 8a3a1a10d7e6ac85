package integration

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// TestThreeCopiesOfEachServiceShareARollout runs a rollout while copies of
// every service join (three of each) and a planner leaves. The planners
// share the partitions by number, the same numbers of requests and
// operations to each (co-partitioned); a planner leaving moves only its
// own partitions; and the rollout finishes with every cluster operated on
// exactly once.
func TestThreeCopiesOfEachServiceShareARollout(t *testing.T) {
	t.Parallel()
	f := fleettest.Start(t, fleettest.Options{Clusters: 24, OpDuration: 5 * time.Second, Partitions: 6})
	var ids []string
	for _, c := range f.Clusters {
		ids = append(ids, c.ID)
	}
	id := f.Submit(rollout.Spec{Name: "restart everything", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: ids,
		Phases: []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 6}, MaxInFlight: 2}}})
	f.Await(id, time.Second, time.Minute, "the first clusters done", func(w *decide.Workflow) bool { return w.Progress().Succeeded >= 4 })

	for _, name := range []string{"planner#2", "planner#3", "executor#2", "executor#3", "monitor#2", "monitor#3"} {
		f.StartService(name)
	}
	group := f.Backbone.Names().Group("planner")
	three := awaitAssignment(t, f, group, 3)
	f.Await(id, time.Second, time.Minute, "more clusters done with three of each", func(w *decide.Workflow) bool { return w.Progress().Succeeded >= 12 })

	f.StopService("planner#3")
	two := awaitAssignment(t, f, group, 2)
	for member, parts := range three {
		if kept, ok := two[member]; ok && !isSubset(parts, kept) {
			t.Errorf("planner %s had %v and has %v once another left: it lost partitions it did not have to", member, parts, kept)
		}
	}

	w := f.Await(id, time.Second, 2*time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("rollout %s: %s (%s)", id, w.State, w.Reason)
	}
	checkOneOperationAtATime(t, f, 1)
	commands := map[string]int{}
	for _, r := range f.ReadAll(f.Backbone.Names().Commands) {
		commands[string(r.Key)]++
	}
	for key, n := range commands {
		if n != 1 {
			t.Errorf("command %s written %d times", key, n)
		}
	}
	if len(commands) != len(ids) {
		t.Errorf("%d commands for %d clusters", len(commands), len(ids))
	}
}

// awaitAssignment waits until the planners' group has members members,
// each holding the same partition numbers of requests and operations, all
// numbers held once; and returns each member's numbers, by instance.
func awaitAssignment(t *testing.T, f *fleettest.Fleet, group string, members int) map[string][]int32 {
	t.Helper()
	cl, err := f.Backbone.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	names := f.Backbone.Names()
	var last string
	var out map[string][]int32
	ok := f.Eventually(0, time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		described, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			last = err.Error()
			return false
		}
		g := described[group]
		if g.State != "Stable" || len(g.Members) != members {
			last = fmt.Sprintf("%s with %d members", g.State, len(g.Members))
			return false
		}
		out = map[string][]int32{}
		held := map[int32]bool{}
		for _, m := range g.Members {
			a, ok := m.Assigned.AsConsumer()
			if !ok {
				last = "an assignment that is not a consumer's"
				return false
			}
			byTopic := map[string][]int32{}
			for _, tp := range a.Topics {
				byTopic[tp.Topic] = slices.Sorted(slices.Values(tp.Partitions))
			}
			req, ops := byTopic[names.Requests], byTopic[names.Operations]
			if !slices.Equal(req, ops) {
				t.Fatalf("planner %s holds requests %v and operations %v: not co-partitioned", m.MemberID, req, ops)
			}
			for _, p := range req {
				if held[p] {
					last = fmt.Sprintf("partition %d held twice", p)
					return false
				}
				held[p] = true
			}
			instance := m.MemberID
			if m.InstanceID != nil {
				instance = *m.InstanceID
			}
			out[instance] = req
		}
		if len(held) != 6 {
			last = fmt.Sprintf("%d of 6 partitions held: %v", len(held), out)
			return false
		}
		return true
	})
	if !ok {
		t.Fatalf("the planners' group never settled with %d members: last %s", members, last)
	}
	t.Logf("planners with %d members: %v", members, slices.Collect(maps.Values(out)))
	return out
}

func isSubset(sub, of []int32) bool {
	for _, p := range sub {
		if !slices.Contains(of, p) {
			return false
		}
	}
	return true
}
