package backbone_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
)

func deleteTopic(t *testing.T, ctx context.Context, adm *kadm.Client, topic string) {
	t.Helper()
	resp, err := adm.DeleteTopic(ctx, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("delete topic %s: %v", topic, err)
	}
}

// recreateTopic creates topic again after it was deleted: a broker may
// refuse for a moment while it forgets the old one.
func recreateTopic(t *testing.T, ctx context.Context, adm *kadm.Client, topic string, n int32) kadm.TopicID {
	t.Helper()
	for {
		resp, err := adm.CreateTopic(ctx, n, 1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		if err == nil {
			awaitTopic(t, ctx, adm, topic, resp.ID)
			return resp.ID
		}
		if !errors.Is(err, kerr.TopicAlreadyExists) || ctx.Err() != nil {
			t.Fatalf("create topic %s again: %v", topic, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func wantLost(t *testing.T, err error, topic string, recreated bool) {
	t.Helper()
	if !errors.Is(err, backbone.ErrTopicLost) {
		t.Fatalf("error %v, want one matching ErrTopicLost", err)
	}
	var lost *backbone.TopicLostError
	if !errors.As(err, &lost) || lost.Topic != topic {
		t.Fatalf("error %v, want a TopicLostError of %s", err, topic)
	}
	var zero kadm.TopicID
	if gotRecreated := lost.Now != zero; gotRecreated != recreated {
		t.Errorf("%v: recreated = %v, want %v", err, gotRecreated, recreated)
	}
	t.Logf("%v", err)
}

func testClient(t *testing.T, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(brokertest.Opts(t), extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// runWatch runs w.Run and returns the channel of its result.
func runWatch(ctx context.Context, w *backbone.TopicWatch) <-chan error {
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return done
}

func TestTopicWatchSeesADeletedTopic(t *testing.T) {
	ctx := testContext(t, time.Minute)
	adm := testAdmin(t)
	kept, doomed := testName(t, "kept"), testName(t, "doomed")
	createTopic(t, ctx, adm, kept, 2)
	createTopic(t, ctx, adm, doomed, 2)
	w, err := backbone.NewTopicWatch(ctx, testClient(t), []string{kept, doomed}, backbone.WatchInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	done := runWatch(ctx, w)
	select {
	case err := <-done:
		t.Fatalf("the watch ended with %v while both topics are there", err)
	case <-time.After(500 * time.Millisecond):
	}
	deleteTopic(t, ctx, adm, doomed)
	select {
	case err := <-done:
		wantLost(t, err, doomed, false)
	case <-time.After(20 * time.Second):
		t.Fatal("the watch did not see the deleted topic in 20s")
	}
}

func TestTopicWatchSeesARecreatedTopic(t *testing.T) {
	ctx := testContext(t, time.Minute)
	adm := testAdmin(t)
	topic := testName(t, "topic")
	was := createTopic(t, ctx, adm, topic, 2)
	w, err := backbone.NewTopicWatch(ctx, testClient(t), []string{topic})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.IDs()[topic]; got != was {
		t.Fatalf("the watch holds ID %v, the topic was created with %v", got, was)
	}
	if err := w.Check(ctx); err != nil {
		t.Fatalf("check before the topic was touched: %v", err)
	}
	deleteTopic(t, ctx, adm, topic)
	now := recreateTopic(t, ctx, adm, topic, 2)
	if now == was {
		t.Fatalf("the broker gave the new topic its old ID %v", was)
	}
	err = w.Check(ctx)
	wantLost(t, err, topic, true)
	var lost *backbone.TopicLostError
	errors.As(err, &lost)
	if lost.Was != was || lost.Now != now {
		t.Errorf("lost %v → %v, want %v → %v", lost.Was, lost.Now, was, now)
	}
}

// switchDialer is a dialer that can take the broker away: it closes the
// connections it made and refuses new ones while down.
type switchDialer struct {
	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

func (d *switchDialer) dial(ctx context.Context, network, host string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		return nil, errors.New("test: broker unreachable")
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, host)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *switchDialer) set(down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = down
	if down {
		for _, c := range d.conns {
			c.Close()
		}
		d.conns = nil
	}
}

// An unreachable broker is not a lost topic: the watch keeps trying, and
// still sees a topic deleted once the broker is back.
func TestTopicWatchRidesOutAnUnreachableBroker(t *testing.T) {
	ctx := testContext(t, time.Minute)
	adm := testAdmin(t)
	topic := testName(t, "topic")
	createTopic(t, ctx, adm, topic, 1)
	d := &switchDialer{}
	cl := testClient(t, kgo.Dialer(d.dial))
	w, err := backbone.NewTopicWatch(ctx, cl, []string{topic}, backbone.WatchInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	d.set(true)
	checkCtx, cancel := context.WithTimeout(ctx, time.Second)
	err = w.Check(checkCtx)
	cancel()
	if err == nil || errors.Is(err, backbone.ErrTopicLost) {
		t.Fatalf("check with the broker unreachable: %v, want an error that is not ErrTopicLost", err)
	}
	done := runWatch(ctx, w)
	select {
	case err := <-done:
		t.Fatalf("the watch ended with %v while the broker was unreachable", err)
	case <-time.After(2 * time.Second):
	}
	d.set(false)
	deleteTopic(t, ctx, adm, topic)
	select {
	case err := <-done:
		wantLost(t, err, topic, false)
	case <-time.After(30 * time.Second):
		t.Fatal("the watch did not see the deleted topic in 30s once the broker was back")
	}
}

// WatchTopics, the one call a service makes: it ends with nil when its
// context does, refuses a topic that does not exist, and reports one
// deleted within its default interval.
func TestWatchTopics(t *testing.T) {
	ctx := testContext(t, time.Minute)
	adm := testAdmin(t)
	topic := testName(t, "topic")
	createTopic(t, ctx, adm, topic, 1)
	cfg := backbone.Config{Brokers: brokertest.Addrs(t), ClientOpts: brokertest.Opts(t)}

	missing := testName(t, "missing")
	err := backbone.WatchTopics(ctx, cfg, topic, missing)
	wantLost(t, err, missing, false)

	stopCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- backbone.WatchTopics(stopCtx, cfg, topic) }()
	time.Sleep(200 * time.Millisecond)
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WatchTopics ended with %v when its context did, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WatchTopics did not end with its context")
	}

	done = make(chan error, 1)
	go func() { done <- backbone.WatchTopics(ctx, cfg, topic) }()
	time.Sleep(500 * time.Millisecond) // it holds the topic's ID
	deleteTopic(t, ctx, adm, topic)
	select {
	case err := <-done:
		wantLost(t, err, topic, false)
	case <-time.After(3 * backbone.DefaultWatchInterval):
		t.Fatalf("WatchTopics did not see the deleted topic in %v", 3*backbone.DefaultWatchInterval)
	}
}
