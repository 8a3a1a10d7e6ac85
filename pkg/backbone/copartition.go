package backbone

import (
	"maps"
	"slices"
	"sort"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// CoPartitionedBalancer is a cooperative, sticky group balancer for a
// consumer of co-partitioned topics (the planner's requests and
// operations): it shares out partition numbers, not partitions, so a member
// gets the same numbers of every topic it reads, as the range balancer
// does; and, unlike range, a member keeps the numbers it had, so a copy
// joining or leaving moves only the numbers that must change owner, and
// the others are never revoked (cooperative rebalancing: their work goes
// on through the rebalance).
//
// Every member of a group must use it once one does (a cooperative group
// cannot take an eager member). Its topics must have the same partition
// count (topics.Ensure checks the co-partitioned ones); numbers past the
// smallest count are left unassigned.
func CoPartitionedBalancer() kgo.GroupBalancer { return coPartitioned{} }

type coPartitioned struct{}

func (coPartitioned) ProtocolName() string { return "flotilla-copartitioned" }
func (coPartitioned) IsCooperative() bool  { return true }

func (coPartitioned) JoinGroupMetadata(interests []string, owned map[string][]int32, generation int32) []byte {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 3
	meta.Topics = interests
	meta.Generation = generation
	for _, topic := range slices.Sorted(maps.Keys(owned)) {
		p := kmsg.NewConsumerMemberMetadataOwnedPartition()
		p.Topic = topic
		p.Partitions = owned[topic]
		meta.OwnedPartitions = append(meta.OwnedPartitions, p)
	}
	return meta.AppendTo(nil)
}

func (coPartitioned) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	return kgo.ParseConsumerSyncAssignment(assignment)
}

func (c coPartitioned) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	b, err := kgo.NewConsumerBalancer(c, members)
	if err != nil {
		return nil, nil, err
	}
	return b, b.MemberTopics(), nil
}

func (coPartitioned) Balance(b *kgo.ConsumerBalancer, topics map[string]int32) kgo.IntoSyncAssignment {
	n := int32(-1)
	for _, count := range topics {
		if n < 0 || count < n {
			n = count
		}
	}
	var members []string
	owned := map[string][]int32{}
	b.EachMember(func(m *kmsg.JoinGroupResponseMember, meta *kmsg.ConsumerMemberMetadata) {
		members = append(members, m.MemberID)
		for _, p := range meta.OwnedPartitions {
			owned[m.MemberID] = append(owned[m.MemberID], p.Partitions...)
		}
	})
	numbers := shareNumbers(max(n, 0), members, owned)
	plan := b.NewPlan()
	for i := range b.Members() {
		m, meta := b.MemberAt(i)
		for _, topic := range meta.Topics {
			if _, ok := topics[topic]; ok {
				plan.AddPartitions(m, topic, numbers[m.MemberID])
			}
		}
	}
	// A number that changes owner is first revoked from the old owner and
	// given to the new one in the next round, so no two members ever
	// hold it at once.
	plan.AdjustCooperative(b)
	return plan
}

// shareNumbers shares the partition numbers 0..n-1 out among members (in
// the group's order), each getting n/len(members) or one more, keeping as
// many as possible of those it owned. A number two members claim goes to
// the first.
func shareNumbers(n int32, members []string, owned map[string][]int32) map[string][]int32 {
	out := map[string][]int32{}
	if len(members) == 0 {
		return out
	}
	// What each member keeps of what it owned, with no number twice.
	taken := map[int32]bool{}
	kept := map[string][]int32{}
	for _, m := range members {
		seen := map[int32]bool{}
		for _, p := range owned[m] {
			if p >= 0 && p < n && !taken[p] && !seen[p] {
				seen[p] = true
				kept[m] = append(kept[m], p)
			}
		}
		for p := range seen {
			taken[p] = true
		}
		slices.Sort(kept[m])
	}
	// The members that owned the most get the larger quotas, so that
	// fewer numbers move.
	base, extra := int(n)/len(members), int(n)%len(members)
	order := slices.Clone(members)
	sort.SliceStable(order, func(i, j int) bool { return len(kept[order[i]]) > len(kept[order[j]]) })
	quota := map[string]int{}
	for i, m := range order {
		quota[m] = base
		if i < extra {
			quota[m]++
		}
	}
	var free []int32
	for _, m := range members {
		if len(kept[m]) > quota[m] {
			free = append(free, kept[m][quota[m]:]...)
			kept[m] = kept[m][:quota[m]]
		}
	}
	for p := int32(0); p < n; p++ {
		if !taken[p] {
			free = append(free, p)
		}
	}
	slices.Sort(free)
	for _, m := range members {
		for len(kept[m]) < quota[m] {
			kept[m] = append(kept[m], free[0])
			free = free[1:]
		}
		slices.Sort(kept[m])
		out[m] = kept[m]
	}
	return out
}
