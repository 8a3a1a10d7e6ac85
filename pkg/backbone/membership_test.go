package backbone_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
)

// The member process (TestMemberProcess) reads what to join from these.
const (
	memberEnv        = "FLOTILLA_TEST_MEMBER" // the group; set only in the member process
	memberBrokersEnv = "FLOTILLA_TEST_MEMBER_BROKERS"
	memberTopicEnv   = "FLOTILLA_TEST_MEMBER_TOPIC"
	memberIDEnv      = "FLOTILLA_TEST_MEMBER_INSTANCE"
	memberSessionEnv = "FLOTILLA_TEST_MEMBER_SESSION"
)

// A long session, so that "before the session timeout" is unmistakable,
// and the deadline by which a static member must have its partitions back.
const (
	testSession = 30 * time.Second
	backWithin  = 10 * time.Second
	partitions  = 3
)

var nameCounter atomic.Int64

// testName returns a name of this test's own on the shared broker.
func testName(t *testing.T, what string) string {
	r := strings.NewReplacer("/", "-", "_", "-")
	return fmt.Sprintf("backbone-%s-%d-%d-%s", what, os.Getpid(), nameCounter.Add(1), strings.ToLower(r.Replace(t.Name())))
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func createTopic(t *testing.T, ctx context.Context, adm *kadm.Client, topic string, n int32) kadm.TopicID {
	t.Helper()
	resp, err := adm.CreateTopic(ctx, n, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	awaitTopic(t, ctx, adm, topic, resp.ID)
	return resp.ID
}

// awaitTopic waits until the broker's metadata has topic, with ID id:
// Kafka answers CreateTopics before every broker's metadata has it.
func awaitTopic(t *testing.T, ctx context.Context, adm *kadm.Client, topic string, id kadm.TopicID) {
	t.Helper()
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			if td, ok := md.Topics[topic]; ok && td.Err == nil && td.ID == id {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %s (ID %v) is not in the broker's metadata: %v", topic, id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func testAdmin(t *testing.T) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(brokertest.Opts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// memberOpts are the options of a group member of the tests, static when
// instance is not "".
func memberOpts(group, topic, instance string, session time.Duration) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
	}
	opts = append(opts, backbone.Config{}.StaticMember(group, instance, nil)...)
	return append(opts, kgo.SessionTimeout(session)) // the last one wins
}

// TestMemberProcess is the group member that the tests below start as a
// process of its own and kill: it joins, prints each assignment and waits.
// It does nothing in an ordinary test run.
func TestMemberProcess(t *testing.T) {
	group := os.Getenv(memberEnv)
	if group == "" {
		t.Skip("runs only as the member process of the static membership tests")
	}
	session, err := time.ParseDuration(os.Getenv(memberSessionEnv))
	if err != nil {
		t.Fatal(err)
	}
	opts := append([]kgo.Opt{kgo.SeedBrokers(strings.Split(os.Getenv(memberBrokersEnv), ",")...)},
		memberOpts(group, os.Getenv(memberTopicEnv), os.Getenv(memberIDEnv), session)...)
	opts = append(opts, kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
		for _, ps := range m {
			fmt.Println("assigned", len(ps))
		}
	}))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	for {
		cl.PollFetches(context.Background()) // until killed
	}
}

// startMember starts a member process and waits until it owns every
// partition of topic.
func startMember(t *testing.T, group, topic, instance string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemberProcess$", "-test.v")
	cmd.Env = append(os.Environ(),
		memberEnv+"="+group,
		memberBrokersEnv+"="+strings.Join(brokertest.Addrs(t), ","),
		memberTopicEnv+"="+topic,
		memberIDEnv+"="+instance,
		memberSessionEnv+"="+testSession.String(),
	)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	owns := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "assigned "+strconv.Itoa(partitions) {
				close(owns)
				break
			}
		}
		for sc.Scan() { // drain
		}
	}()
	select {
	case <-owns:
	case <-time.After(30 * time.Second):
		t.Fatalf("the member process did not get the %d partitions of %s in 30s", partitions, topic)
	}
	return cmd
}

// restartMember starts a member in this process and returns a channel
// that receives once it owns every partition of topic.
func restartMember(t *testing.T, group, topic, instance string) <-chan struct{} {
	t.Helper()
	owns := make(chan struct{}, 1)
	opts := append(brokertest.Opts(t), memberOpts(group, topic, instance, testSession)...)
	opts = append(opts, kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
		if len(m[topic]) == partitions {
			select {
			case owns <- struct{}{}:
			default:
			}
		}
	}))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			cl.PollFetches(ctx)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		cl.Close()
	})
	return owns
}

// kill ends a member process at once, as a crash does: it sends nothing,
// and its session lives on in the group until the session timeout.
func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

// A member with a stable identity that is killed and restarted with the
// same identity gets its partitions back at once, while its dead session
// is still alive (the session timeout is 30 s; it must take them back
// within 10 s); a dynamic one waits for the dead member's session to time
// out. Without static membership the first case fails.
func TestStaticMemberTakesItsPartitionsBack(t *testing.T) {
	brokertest.Addrs(t)
	t.Logf("broker: %s", brokertest.Name())
	for _, tc := range []struct {
		name     string
		instance string
	}{
		{"static", "a"},
		{"dynamic", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t, 2*time.Minute)
			adm := testAdmin(t)
			topic, group := testName(t, "topic"), testName(t, "group")
			createTopic(t, ctx, adm, topic, partitions)

			member := startMember(t, group, topic, tc.instance)
			kill(t, member)
			killed := time.Now()
			owns := restartMember(t, group, topic, tc.instance)

			if tc.instance != "" {
				select {
				case <-owns:
					t.Logf("the restarted static member had its partitions back %v after the kill (session timeout %v)", time.Since(killed).Round(time.Millisecond), testSession)
				case <-time.After(backWithin - time.Since(killed)):
					t.Fatalf("the restarted static member did not get its partitions back within %v of the kill: it waits for the dead session (timeout %v)", backWithin, testSession)
				}
				// The dead member was replaced, not kept beside it.
				described, err := adm.DescribeGroups(ctx, group)
				if err != nil {
					t.Fatal(err)
				}
				g := described[group]
				if g.Err != nil {
					t.Fatal(g.Err)
				}
				var ids []string
				for _, m := range g.Members {
					if m.InstanceID != nil {
						ids = append(ids, *m.InstanceID)
					} else {
						ids = append(ids, "dynamic "+m.MemberID)
					}
				}
				if want := []string{backbone.InstanceID(group, tc.instance)}; !slices.Equal(ids, want) {
					t.Errorf("group members = %v, want only %v", ids, want)
				}
				return
			}
			select {
			case <-owns:
				t.Fatalf("a dynamic member restarted got the partitions %v after the kill, before the dead member's session (timeout %v) ended: the test cannot tell static from dynamic", time.Since(killed), testSession)
			case <-time.After(backWithin - time.Since(killed)):
			}
			select {
			case <-owns:
				t.Logf("the restarted dynamic member got the partitions %v after the kill (session timeout %v)", time.Since(killed).Round(time.Millisecond), testSession)
			case <-time.After(testSession + 30*time.Second - time.Since(killed)):
				t.Fatalf("the restarted dynamic member had no partitions %v after the kill: the dead member's session (timeout %v) should have ended", time.Since(killed), testSession)
			}
		})
	}
}

// A second running copy with the same identity takes the first one's
// place, and the first is told so: fenced gets kerr.FencedInstanceID.
func TestStaticMemberFencedByATwin(t *testing.T) {
	ctx := testContext(t, time.Minute)
	adm := testAdmin(t)
	topic, group := testName(t, "topic"), testName(t, "group")
	createTopic(t, ctx, adm, topic, partitions)

	fenced := make(chan error, 10)
	first := append(brokertest.Opts(t), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit())
	first = append(first, backbone.Config{}.StaticMember(group, "twin", func(err error) {
		select {
		case fenced <- err:
		default:
		}
	})...)
	assigned := make(chan struct{}, 1)
	first = append(first, kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
		select {
		case assigned <- struct{}{}:
		default:
		}
	}))
	cl, err := kgo.NewClient(first...)
	if err != nil {
		t.Fatal(err)
	}
	pollCtx, stopPolling := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for pollCtx.Err() == nil {
			cl.PollFetches(pollCtx)
		}
	}()
	defer func() { stopPolling(); <-polled; cl.Close() }()
	select {
	case <-assigned:
	case <-ctx.Done():
		t.Fatal("the first copy never got its partitions")
	}
	_ = restartMember(t, group, topic, "twin")
	select {
	case err := <-fenced:
		if !errors.Is(err, kerr.FencedInstanceID) {
			t.Fatalf("fenced with %v, want kerr.FencedInstanceID", err)
		}
		if !strings.Contains(err.Error(), backbone.InstanceID(group, "twin")) {
			t.Errorf("the error %q does not name the instance ID", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the first copy was not told that a twin took its identity")
	}
}

func TestStaticMemberOptions(t *testing.T) {
	if opts := (backbone.Config{}).StaticMember("fleet.executor", "", nil); opts != nil {
		t.Errorf("no instance: %d options, want none (a dynamic member)", len(opts))
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1"), kgo.ConsumerGroup("fleet.executor"), kgo.ConsumeTopics("t")},
		backbone.Config{}.StaticMember("fleet.executor", "host1", nil)...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got := cl.OptValue(kgo.InstanceID); got != "fleet.executor-host1" {
		t.Errorf("instance ID %v, want fleet.executor-host1", got)
	}
	if got := cl.OptValue(kgo.SessionTimeout); got != backbone.StaticSessionTimeout {
		t.Errorf("session timeout %v, want %v", got, backbone.StaticSessionTimeout)
	}
}
