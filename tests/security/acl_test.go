// Package security runs Flotilla on a broker that authenticates every
// client (SASL/SCRAM) and authorizes every request (ACLs), with the ACLs
// `flotilla acl apply` creates: the embedded broker with SASL and ACLs on,
// or a real Kafka's SASL listener with the standard authorizer
// (FLOTILLA_TEST_SECURE_BROKERS, set by .ci/kafka.sh).
package security

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/acl"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/kafkaauth"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// securedFleet is a fleet whose services and users sign in as principals
// of their own, under the ACLs of the plan.
type securedFleet struct {
	*fleettest.Fleet
	broker    brokertest.SecureBroker
	passwords map[string]string // by user
}

// users: the four services, an operator, a fleet admin and a trust
// admin; each has a
// password of its own (the run's, so that a real broker kept between
// runs is not left with known passwords).
var users = []string{"flotilla-planner", "flotilla-executor", "flotilla-monitor", "flotilla-notifier", "alice", "carol", "trent"}

func startSecured(t *testing.T) *securedFleet {
	t.Helper()
	return startSecuredWith(t, fleettest.Options{Clusters: 30})
}

// startSecuredWith starts the fleet of o on a secure broker.
func startSecuredWith(t *testing.T, o fleettest.Options) *securedFleet {
	t.Helper()
	sf := &securedFleet{broker: brokertest.Secure(t), passwords: map[string]string{}}
	run := uuid.NewString()[:8]
	for _, u := range users {
		sf.passwords[u] = u + "-" + run
	}
	admin := sf.client(t, sf.broker.AdminUser, sf.broker.AdminPass)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := acl.CreateSCRAMUsers(ctx, kadm.NewClient(admin), sf.broker.Mechanism, sf.passwords); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	o.Brokers = sf.broker.Addrs
	o.ClientOpts = func(who string) []kgo.Opt {
		if who == "harness" {
			return sf.opts(t, sf.broker.AdminUser, sf.broker.AdminPass)
		}
		return sf.opts(t, "flotilla-"+who, sf.passwords["flotilla-"+who])
	}
	o.Setup = func(f *fleettest.Fleet) {
		plan, err := acl.Plan(f.Backbone.Names(), sf.principals())
		if err != nil {
			t.Fatal(err)
		}
		cl, err := f.Backbone.Client() // the harness's: the super user
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		res, err := acl.Apply(ctx, kadm.NewClient(cl), plan, false)
		if err != nil {
			t.Fatalf("apply the ACL plan: %v", err)
		}
		if len(res.Created) != len(plan) {
			t.Fatalf("created %d of the plan's %d ACLs", len(res.Created), len(plan))
		}
		// Each service starts as its command does: it finds the
		// topics (created by the admin), checks their shape and
		// records their IDs, with no more rights than the plan's.
		for _, svc := range fleettest.Services {
			cfg := f.Backbone
			cfg.ClientOpts = sf.opts(t, "flotilla-"+svc, sf.passwords["flotilla-"+svc])
			if _, err := cfg.SetUpTopics(ctx, 3, 1); err != nil {
				t.Fatalf("the %s sets up its topics under the plan's ACLs: %v", svc, err)
			}
		}
	}
	sf.Fleet = fleettest.Start(t, o)
	return sf
}

func finished(w *decide.Workflow) bool { return w.State.Terminal() }

func saslOpt(t *testing.T, mechanism, user, pass string) kgo.Opt {
	t.Helper()
	m, err := kafkaauth.Password(mechanism, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	return kgo.SASL(m)
}

func (sf *securedFleet) principals() acl.Principals {
	p := acl.DefaultPrincipals()
	p.Operators = []string{"User:alice"}
	p.FleetAdmins = []string{"User:carol"}
	p.TrustAdmins = []string{"User:trent"}
	return p
}

func (sf *securedFleet) opts(t *testing.T, user, pass string) []kgo.Opt {
	t.Helper()
	return []kgo.Opt{saslOpt(t, sf.broker.Mechanism, user, pass)}
}

// client returns a client signed in as user.
func (sf *securedFleet) client(t *testing.T, user, pass string, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	cfg := backbone.Config{Brokers: sf.broker.Addrs, ClientOpts: sf.opts(t, user, pass)}
	cl, err := cfg.Client(append([]kgo.Opt{kgo.RecordRetries(2), kgo.RetryTimeout(10 * time.Second)}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func (sf *securedFleet) as(t *testing.T, user string, extra ...kgo.Opt) *kgo.Client {
	return sf.client(t, user, sf.passwords[user], extra...)
}

// TestRolloutUnderLeastPrivilegeACLs: with only the plan's rights, the
// services run a rollout that alice, an operator, asked for, and carol, a
// fleet admin, registers a cluster.
func TestRolloutUnderLeastPrivilegeACLs(t *testing.T) {
	sf := startSecured(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := sf.Backbone.Names()

	extra := simfleet.GenerateClusters(31)[30]
	err := sf.as(t, "carol").ProduceSync(ctx, sf.Record(names.Inventory, extra.ID, records.ClusterRecord{
		Envelope: records.Envelope{ID: uuid.NewString(), Time: sf.Clock.Now(), Principal: "carol"}, Cluster: extra,
	})).FirstErr()
	if err != nil {
		t.Fatalf("carol, a fleet admin, registers a cluster: %v", err)
	}
	if !sf.Eventually(time.Second, time.Minute, func() bool { _, ok := sf.Health(extra.ID); return ok }) {
		t.Fatalf("the monitor never probed %s, the cluster carol registered", extra.ID)
	}

	id := uuid.NewString()
	spec := rollout.Spec{
		Name:      "secure",
		Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"},
		Selector:  "kind=kafka",
		Phases:    []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}}},
	}
	err = sf.as(t, "alice").ProduceSync(ctx, sf.Record(names.Requests, id, records.Request{
		Envelope: records.Envelope{ID: id, Time: sf.Clock.Now(), Principal: "alice"},
		Submit:   &records.SubmitRollout{Spec: spec},
	})).FirstErr()
	if err != nil {
		t.Fatalf("alice, an operator, submits a rollout: %v", err)
	}
	w := sf.Await(id, time.Second, 3*time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("the rollout ended %s (%s), want succeeded", w.State, w.Reason)
	}
	// The notifier writes it after reading the row the rollout ended with.
	var notes []records.Notification
	if !sf.Eventually(0, 30*time.Second, func() bool {
		notes = sf.Notifications()
		return slices.ContainsFunc(notes, func(n records.Notification) bool { return n.WorkflowID == id && n.Kind == "workflow.succeeded" })
	}) {
		t.Errorf("no workflow.succeeded notification for the rollout among %d", len(notes))
	}
}

// TestACLMatrix: every principal's writes outside the plan are refused by
// the broker with an authorization error: users cannot write commands,
// operations or any service's topic; a service cannot write another's;
// nobody joins another's consumer group or takes its transactional IDs.
func TestACLMatrix(t *testing.T) {
	sf := startSecured(t)
	n := sf.Backbone.Names()
	// Who may write each topic, written out here rather than read from the
	// plan, so that a plan that grants too much fails the test.
	writers := map[string][]string{
		n.Requests:      {"alice", "carol", "trent"},
		n.Inventory:     {"carol"},
		n.Policies:      {"carol"},
		n.Trust:         {"trent"},
		n.Workflows:     {"flotilla-planner"},
		n.Commands:      {"flotilla-planner"},
		n.History:       {"flotilla-planner"},
		n.Operations:    {"flotilla-executor"},
		n.Claims:        {"flotilla-executor"},
		n.Leases:        {"flotilla-executor"},
		n.Health:        {"flotilla-monitor"},
		n.Notifications: {"flotilla-notifier"},
		n.DeadLetters:   {"flotilla-planner", "flotilla-executor", "flotilla-monitor"},
		n.Checkpoints:   {"flotilla-planner", "flotilla-executor"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	denied := 0
	for _, user := range users {
		cl := sf.as(t, user)
		for _, topic := range n.All() {
			if slices.Contains(writers[topic], user) {
				continue // proved by the rollout of TestRolloutUnderLeastPrivilegeACLs
			}
			err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("forged"), Value: []byte("{}")}).FirstErr()
			if !errors.Is(err, kerr.TopicAuthorizationFailed) {
				t.Errorf("%s writes to %s: err %v, want %v", user, topic, err, kerr.TopicAuthorizationFailed)
				continue
			}
			denied++
		}
	}
	// Consumer groups and transactional IDs are the services' own.
	for _, c := range []struct{ user, group string }{
		{"alice", n.Group("planner")},
		{"flotilla-monitor", n.Group("executor")},
		{"flotilla-executor", n.Group("notifier")},
	} {
		adm := kadm.NewClient(sf.as(t, c.user))
		_, err := adm.CommitOffsets(ctx, c.group, kadm.OffsetsFromRecords(kgo.Record{Topic: n.Health, Partition: 0, Offset: 1}))
		if !errors.Is(err, kerr.GroupAuthorizationFailed) {
			t.Errorf("%s commits offsets as group %s: err %v, want %v", c.user, c.group, err, kerr.GroupAuthorizationFailed)
		}
	}
	for _, c := range []struct{ user, txnID string }{
		{"alice", n.Group("planner") + "-p0"},
		{"flotilla-executor", n.Group("planner") + "-p0"},
		{"flotilla-planner", n.Group("executor") + "-0"},
	} {
		cl := sf.as(t, c.user, kgo.TransactionalID(c.txnID))
		_, _, err := cl.ProducerID(ctx)
		if !errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
			t.Errorf("%s takes transactional ID %s: err %v, want %v", c.user, c.txnID, err, kerr.TransactionalIDAuthorizationFailed)
		}
	}
	// A wrong password is refused at sign-in.
	// (kfake closes the connection; Kafka says why first.)
	wrong := sf.client(t, "alice", "not-alices-password")
	err := wrong.ProduceSync(ctx, &kgo.Record{Topic: n.Requests, Key: []byte("x"), Value: []byte("{}")}).FirstErr()
	if err == nil || brokertest.Real() && !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Errorf("alice with a wrong password writes a request: err %v, want %v", err, kerr.SaslAuthenticationFailed)
	}
	t.Logf("%d writes outside the plan refused", denied)
	if want := len(users)*len(n.All()) - countWrites(writers); denied != want {
		t.Errorf("%d writes refused, want %d", denied, want)
	}
}

func countWrites(writers map[string][]string) int {
	n := 0
	for _, w := range writers {
		n += len(w)
	}
	return n
}

// TestAServiceUnderACLsDoesNotCreateTopics: before an administrator
// created the topics, a service that starts under the plan's ACLs stops
// with a message that says who must create them.
func TestAServiceUnderACLsDoesNotCreateTopics(t *testing.T) {
	b := brokertest.Secure(t)
	pass := "planner-" + uuid.NewString()[:8]
	adminOpts := []kgo.Opt{saslOpt(t, b.Mechanism, b.AdminUser, b.AdminPass)}
	admin, err := backbone.Config{Brokers: b.Addrs, ClientOpts: adminOpts}.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := acl.CreateSCRAMUsers(ctx, kadm.NewClient(admin), b.Mechanism, map[string]string{"flotilla-planner": pass}); err != nil {
		t.Fatal(err)
	}
	ns := "untopicked-" + uuid.NewString()[:8]
	cfg := backbone.Config{Brokers: b.Addrs, Namespace: ns, ClientOpts: []kgo.Opt{saslOpt(t, b.Mechanism, "flotilla-planner", pass)}}
	plan, err := acl.Plan(cfg.Names(), acl.DefaultPrincipals())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acl.Apply(ctx, kadm.NewClient(admin), plan, false); err != nil {
		t.Fatal(err)
	}
	_, err = cfg.SetUpTopics(ctx, 3, 1)
	if !errors.Is(err, kerr.TopicAuthorizationFailed) || !strings.Contains(err.Error(), "flotilla acl apply") {
		t.Fatalf("the planner sets up topics nobody created: err %v, want an authorization error that says to run flotilla acl apply", err)
	}
}
