package backbone_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
)

// testConfig returns a Config of a namespace of the test's own.
func testConfig(t *testing.T) backbone.Config {
	t.Helper()
	return backbone.Config{Brokers: brokertest.Addrs(t), Namespace: testName(t, "ns"), ClientOpts: brokertest.Opts(t)}
}

func setUp(ctx context.Context, cfg backbone.Config) (backbone.TopicIDs, error) {
	return cfg.SetUpTopics(ctx, 1, 1)
}

func existing(t *testing.T, ctx context.Context, adm *kadm.Client, topics ...string) map[string]bool {
	t.Helper()
	listed, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, topic := range topics {
		out[topic] = listed.Has(topic)
	}
	return out
}

// A fresh namespace gets its topics; a start after that keeps them.
func TestSetUpTopicsCreatesThenKeeps(t *testing.T) {
	ctx := testContext(t, time.Minute)
	cfg := testConfig(t)
	ids, err := setUp(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var zero kadm.TopicID
	for _, topic := range cfg.Names().All() {
		if ids[topic] == zero {
			t.Errorf("no ID for topic %s", topic)
		}
	}
	again, err := setUp(ctx, cfg)
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	if !maps.Equal(ids, again) {
		t.Errorf("second start: IDs %v, want %v", again, ids)
	}
}

// A topic deleted, or deleted and created again, is lost: the start fails
// naming it and creates nothing; once the register is deleted, the next
// start creates it empty. Without the register, the start would create the
// deleted topic again and carry on over lost state.
func TestSetUpTopicsRefusesLostTopics(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cfg := testConfig(t)
	adm := testAdmin(t)
	names := cfg.Names()
	ids, err := setUp(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}

	deleteTopic(t, ctx, adm, names.Commands)
	_, err = setUp(ctx, cfg)
	wantLost(t, err, names.Commands, false)
	if !strings.Contains(err.Error(), cfg.RegisterGroup()) {
		t.Errorf("the error does not say which group to delete to go on: %v", err)
	}
	if existing(t, ctx, adm, names.Commands)[names.Commands] {
		t.Fatalf("the start created %s again over lost state", names.Commands)
	}

	recreateTopic(t, ctx, adm, names.Commands, 1)
	_, err = setUp(ctx, cfg)
	wantLost(t, err, names.Commands, true)
	var lost *backbone.TopicLostError
	errors.As(err, &lost)
	if lost.Was != ids[names.Commands] {
		t.Errorf("lost ID %v, want %v", lost.Was, ids[names.Commands])
	}

	// The operator chooses to go on without what it held.
	deleteTopic(t, ctx, adm, names.Commands)
	if _, err := adm.DeleteGroup(ctx, cfg.RegisterGroup()); err != nil {
		t.Fatal(err)
	}
	after, err := setUp(ctx, cfg)
	if err != nil {
		t.Fatalf("start after the register was deleted: %v", err)
	}
	if after[names.Commands] == ids[names.Commands] {
		t.Errorf("%s kept its old ID", names.Commands)
	}
	if after[names.Inventory] != ids[names.Inventory] {
		t.Errorf("%s changed ID: %v, want %v", names.Inventory, after[names.Inventory], ids[names.Inventory])
	}
	if _, err := setUp(ctx, cfg); err != nil {
		t.Fatalf("start after that: %v", err)
	}
}

// A topic the register never knew (one a new version adds) is created.
func TestSetUpTopicsCreatesANewTopic(t *testing.T) {
	ctx := testContext(t, time.Minute)
	cfg := testConfig(t)
	adm := testAdmin(t)
	names := cfg.Names()
	ids, err := setUp(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// As an older version would have recorded them, without claims.
	deleteTopic(t, ctx, adm, names.Claims)
	older := maps.Clone(ids)
	delete(older, names.Claims)
	if err := cfg.RecordTopicIDs(ctx, older); err != nil {
		t.Fatal(err)
	}
	after, err := setUp(ctx, cfg)
	if err != nil {
		t.Fatalf("start with a new topic: %v", err)
	}
	if !existing(t, ctx, adm, names.Claims)[names.Claims] || after[names.Claims] == ids[names.Claims] {
		t.Errorf("%s was not created anew", names.Claims)
	}
}

// Every topic of the namespace deleted is a namespace started afresh:
// Kafka drops the deleted topics' offsets, and the register with them.
func TestSetUpTopicsAfterTheWholeNamespaceWasDeleted(t *testing.T) {
	ctx := testContext(t, time.Minute)
	cfg := testConfig(t)
	adm := testAdmin(t)
	if _, err := setUp(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.DeleteTopics(ctx, cfg.Names().All()...); err != nil {
		t.Fatal(err)
	}
	// The broker drops the offsets of deleted topics soon after, not in
	// the same breath on every broker: try until it has.
	for {
		_, err := setUp(ctx, cfg)
		if err == nil {
			break
		}
		if !errors.Is(err, backbone.ErrTopicLost) || ctx.Err() != nil {
			t.Fatalf("start after every topic was deleted: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for topic, ok := range existing(t, ctx, adm, cfg.Names().All()...) {
		if !ok {
			t.Errorf("topic %s was not created", topic)
		}
	}
}
