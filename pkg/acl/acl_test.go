package acl

import (
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// TestEveryTopicHasAWriterAndAReader: a topic added to the catalogue
// without its rights in the plan would fail its service under ACLs; so
// would a user that may write a service's topic. Each topic but the dead
// letters and the checkpoints (the planner's and the executor's chains)
// has exactly one writing service.
func TestEveryTopicHasAWriterAndAReader(t *testing.T) {
	n := topics.NewNames("fleet")
	p := DefaultPrincipals()
	p.Operators, p.FleetAdmins, p.TrustAdmins = []string{"User:op"}, []string{"User:fa"}, []string{"User:ta"}
	plan, err := Plan(n, p)
	if err != nil {
		t.Fatal(err)
	}
	services := []string{p.Planner, p.Executor, p.Monitor, p.Notifier}
	rights := func(topic string, op kmsg.ACLOperation) (who []string) {
		for _, b := range plan {
			if b.Resource == kmsg.ACLResourceTypeTopic && b.Pattern == kmsg.ACLResourcePatternTypeLiteral && b.Name == topic && b.Operation == op {
				who = append(who, b.Principal)
			}
		}
		return who
	}
	userWritten := map[string]bool{n.Requests: true, n.Inventory: true, n.Policies: true, n.Trust: true}
	for _, topic := range n.All() {
		writers, readers := rights(topic, kmsg.ACLOperationWrite), rights(topic, kmsg.ACLOperationRead)
		var serviceWriters []string
		for _, w := range writers {
			if slices.Contains(services, w) {
				serviceWriters = append(serviceWriters, w)
			}
		}
		switch {
		case userWritten[topic]:
			if len(serviceWriters) > 0 || len(writers) == 0 {
				t.Errorf("%s: written by %v, want users only", topic, writers)
			}
		case topic == n.DeadLetters:
			if len(serviceWriters) < 3 || len(serviceWriters) != len(writers) {
				t.Errorf("%s: written by %v, want the services that set records aside, and no user", topic, writers)
			}
		case topic == n.Checkpoints:
			if !slices.Equal(writers, []string{p.Executor, p.Planner}) {
				t.Errorf("%s: written by %v, want the executor and the planner, the two writers of chains", topic, writers)
			}
		case len(serviceWriters) != 1 || len(writers) != 1:
			t.Errorf("%s: written by %v, want one service", topic, writers)
		}
		if !slices.ContainsFunc(readers, func(r string) bool { return slices.Contains(services, r) }) {
			t.Errorf("%s: read by no service (%v)", topic, readers)
		}
	}
	for _, b := range plan {
		if b.Resource == kmsg.ACLResourceTypeCluster || b.Name == "" || b.Pattern == kmsg.ACLResourcePatternTypePrefixed && b.Resource == kmsg.ACLResourceTypeTopic && b.Operation != kmsg.ACLOperationDescribe && b.Operation != kmsg.ACLOperationDescribeConfigs {
			t.Errorf("%s: broader than the plan means to grant", b)
		}
	}
}
