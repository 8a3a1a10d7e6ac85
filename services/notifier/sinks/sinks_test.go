package sinks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/selector"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/services/notifier/notifier"
)

var nsCounter atomic.Int64

// testBackbone returns a backbone of a namespace of its own on the test
// broker (FLOTILLA_TEST_BROKERS, or the embedded one), with its topics.
func testBackbone(t testing.TB) backbone.Config {
	t.Helper()
	ns := fmt.Sprintf("stest%d-%d-%s", time.Now().UnixNano(), nsCounter.Add(1), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	cfg := backbone.Config{Brokers: brokertest.Addrs(t), Namespace: ns,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := cfg.EnsureTopics(ctx, 3, 1); err != nil {
		t.Fatalf("create topics on %s: %v", brokertest.Name(), err)
	}
	return cfg
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// delivery is one request a receiver got.
type delivery struct {
	id     string    // webhook-id
	at     time.Time // the receiver's clock
	stamp  string    // webhook-timestamp
	event  map[string]any
	note   records.Notification // the event's data
	header http.Header
	body   []byte
}

// receiver is a webhook receiver that checks every request as a receiver
// should: each signature of webhook-signature is valid under one of its
// secrets, within the tolerance, the body a CloudEvent whose id is the
// webhook-id. It records every request, and answers what respond says.
type receiver struct {
	t       testing.TB
	secrets []Secret
	clock   clockwork.Clock
	slack   bool // a Slack receiver: nothing signed, a Block Kit body
	srv     *httptest.Server

	mu      sync.Mutex
	got     []delivery
	changed chan struct{}
	// respond, if set, answers request i (from 0); nil answers 200.
	respond func(i int, d delivery, w http.ResponseWriter, r *http.Request)
}

func newReceiver(t testing.TB, clock clockwork.Clock, secrets ...Secret) *receiver {
	rc := &receiver{t: t, secrets: secrets, clock: clock, changed: make(chan struct{})}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		rc.t.Errorf("receiver: read the body: %v", err)
		return
	}
	d := delivery{id: r.Header.Get(HeaderID), stamp: r.Header.Get(HeaderTimestamp), at: rc.clock.Now(), header: r.Header.Clone(), body: body}
	if rc.slack {
		if r.Header.Get("Content-Type") != "application/json" || r.Header.Get(HeaderSignature) != "" || !json.Valid(body) {
			rc.t.Errorf("slack receiver: content type %q, signature %q, body %s", r.Header.Get("Content-Type"), r.Header.Get(HeaderSignature), body)
		}
	} else {
		// Every secret the sender signs with gives a valid signature:
		// a receiver holding either, mid-rotation, accepts the request.
		if sigs := strings.Fields(r.Header.Get(HeaderSignature)); len(sigs) != len(rc.secrets) {
			rc.t.Errorf("receiver: %d signatures %q, want one per secret (%d)", len(sigs), sigs, len(rc.secrets))
		}
		for i, s := range rc.secrets {
			if err := Verify([]Secret{s}, r.Header, body, rc.clock.Now(), 0); err != nil {
				rc.t.Errorf("receiver: request %s does not verify under secret %d: %v", d.id, i, err)
			}
		}
		if ct := r.Header.Get("Content-Type"); ct != CloudEventContentType {
			rc.t.Errorf("receiver: content type %q", ct)
		}
		if err := json.Unmarshal(body, &d.event); err != nil {
			rc.t.Errorf("receiver: body %s: %v", body, err)
		}
		raw, _ := json.Marshal(d.event["data"])
		if err := json.Unmarshal(raw, &d.note); err != nil {
			rc.t.Errorf("receiver: data %s: %v", raw, err)
		}
		if d.event["id"] != d.id || d.note.Envelope.ID != d.id {
			rc.t.Errorf("receiver: webhook-id %q, CloudEvent id %v, notification %q: want one ID", d.id, d.event["id"], d.note.Envelope.ID)
		}
	}
	rc.mu.Lock()
	i := len(rc.got)
	rc.got = append(rc.got, d)
	respond := rc.respond
	close(rc.changed)
	rc.changed = make(chan struct{})
	rc.mu.Unlock()
	if respond != nil {
		respond(i, d, w, r)
	}
}

// deliveries returns what the receiver got so far.
func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

// ids returns the webhook-ids received, in order, repeats included.
func (rc *receiver) ids() []string {
	var out []string
	for _, d := range rc.deliveries() {
		out = append(out, d.id)
	}
	return out
}

// await waits until cond holds of what the receiver got.
func (rc *receiver) await(cond func([]delivery) bool) {
	rc.t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		rc.mu.Lock()
		got, changed := slices.Clone(rc.got), rc.changed
		rc.mu.Unlock()
		if cond(got) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			rc.t.Fatalf("the receiver got %d requests in 60s, not what the test waits for: %v", len(got), rc.ids())
		}
	}
}

func webhook(name, url string, rules ...Rule) Destination {
	return Destination{Name: name, Type: TypeWebhook, URL: url, Secrets: []Secret{secretA, secretB}, Rules: rules,
		Timeout: 5 * time.Second, MaxAttempts: DefaultMaxAttempts, MinBackoff: time.Second, MaxBackoff: time.Minute}
}

// note returns a notification of the tests.
func note(id, kind string, sev records.Severity, workflow, cluster string) records.Notification {
	return records.Notification{Envelope: records.Envelope{ID: id, Time: at, Principal: notifier.Principal}, Kind: kind, Severity: sev,
		WorkflowID: workflow, ClusterID: cluster, Message: kind + " " + id, Fields: map[string]string{"cluster": cluster}}
}

func produce(t testing.TB, bb backbone.Config, recs ...*kgo.Record) {
	t.Helper()
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// produceNotes writes notifications as the notifier does.
func produceNotes(t testing.TB, bb backbone.Config, notes ...records.Notification) {
	t.Helper()
	var recs []*kgo.Record
	for _, n := range notes {
		r, err := notifier.Record(bb.Names(), n)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	produce(t, bb, recs...)
}

// running is a Run started by a test.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, run func(context.Context) error) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop ends the run and returns what it returned.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of its context's end")
		return nil
	}
}

func startSinks(t testing.TB, cfg Config) *running {
	t.Helper()
	return start(t, func(ctx context.Context) error { return Run(ctx, cfg) })
}

// awaitCommittedToEnd waits until the group of destination name has
// committed past the last notification of every partition: it has handled
// every notification written so far. (Not the end offsets: a transaction's
// marker takes an offset after the notifier's last record, and a consumer
// commits the offset after the last record it had.)
func awaitCommittedToEnd(t testing.TB, bb backbone.Config, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for {
		last := map[int32]int64{}
		for _, w := range readNotes(t, bb) {
			last[w.partition] = w.offset
		}
		committed, err := committedOffsets(ctx, bb, name)
		if err == nil {
			caught := true
			for p, o := range last {
				if c, ok := committed[p]; !ok || c <= o {
					caught = false
				}
			}
			if caught {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("destination %s did not commit past the last notifications %v: %v", name, last, ctx.Err())
		case <-time.After(20 * time.Millisecond): // the broker cannot tell us: ask again
		}
	}
}

// writtenNote is a record of the notifications topic.
type writtenNote struct {
	records.Notification
	headers   []kgo.RecordHeader
	partition int32
	offset    int64
}

// readNotes reads the notifications topic.
func readNotes(t testing.TB, bb backbone.Config) []writtenNote {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out []writtenNote
	if err := logtable.ReadToEnd(ctx, bb.Opts(), bb.Names().Notifications, nil, func(r *kgo.Record) {
		n, err := records.DecodeNotification(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, writtenNote{n, r.Headers, r.Partition, r.Offset})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// recordingClock is a fake clock that records the waits asked of it and
// lets each one pass as soon as it is asked (autoAdvance): backoff tests
// check the waits rather than sleep through them.
type recordingClock struct {
	*clockwork.FakeClock
	mu    sync.Mutex
	waits []time.Duration
}

func (c *recordingClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	return c.FakeClock.After(d)
}

func (c *recordingClock) recorded() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.waits)
}

// autoAdvance returns a recording clock whose time jumps past each wait as
// soon as something waits on it.
func autoAdvance(t *testing.T) *recordingClock {
	c := &recordingClock{FakeClock: clockwork.NewFakeClockAt(time.Now())}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c.BlockUntilContext(ctx, 1) == nil {
			c.Advance(time.Hour)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// counts is an Observer.
type counts struct {
	mu                sync.Mutex
	delivered, failed map[string]int
}

func (c *counts) Delivered(d string) { c.add(&c.delivered, d) }
func (c *counts) Failed(d string)    { c.add(&c.failed, d) }
func (c *counts) add(m *map[string]int, d string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[d]++
}
func (c *counts) get() (delivered, failed map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.delivered), maps.Clone(c.failed)
}

func sel(s string) *selector.Selector {
	v := selector.MustParse(s)
	return &v
}

// TestDeliversWhatTheRulesMatch: a webhook and a Slack destination, each
// with its rules (types, severity, workflows, the cluster's labels from
// the inventory), get every notification their rules match, signed, once,
// and none of the others.
func TestDeliversWhatTheRulesMatch(t *testing.T) {
	bb := testBackbone(t)
	for id, labels := range map[string]map[string]string{"prod-1": {"env": "prod"}, "dev-1": {"env": "dev"}} {
		v, err := records.Encode(records.ClusterRecord{Envelope: records.Envelope{ID: "reg-" + id, Time: at, Principal: "test"},
			Cluster: inventory.Cluster{ID: id, Labels: labels, Driver: "sim", Version: "3.9.0"}})
		if err != nil {
			t.Fatal(err)
		}
		produce(t, bb, &kgo.Record{Topic: bb.Names().Inventory, Key: []byte(id), Value: v})
	}
	clock := clockwork.NewRealClock()
	hook := newReceiver(t, clock, secretA, secretB)
	chat := newReceiver(t, clock)
	chat.slack = true
	hookDest := webhook("hook", hook.srv.URL,
		Rule{Types: []string{"io.flotilla.workflow.*"}, MinSeverity: records.SeverityWarning},
		Rule{Workflows: []string{"wf-9"}},
		Rule{Clusters: sel("env=prod")})
	chatDest := Destination{Name: "chat", Type: TypeSlack, URL: chat.srv.URL, Rules: []Rule{{MinSeverity: records.SeverityError}},
		Timeout: 5 * time.Second, MaxAttempts: 3, MinBackoff: time.Second, MaxBackoff: time.Second}
	var obs counts
	startSinks(t, Config{Backbone: bb, Routing: Routing{Dashboard: "http://127.0.0.1:8080", Destinations: []Destination{hookDest, chatDest}}, Observer: &obs})

	notes := []records.Notification{
		note("n1", "workflow.paused", records.SeverityWarning, "wf-1", ""),
		note("n2", "workflow.submitted", records.SeverityInfo, "wf-1", ""),
		note("n3", "workflow.submitted", records.SeverityInfo, "wf-9", ""),
		note("n4", "operation.failed", records.SeverityError, "wf-1", "dev-1"),
		note("n5", "operation.started", records.SeverityInfo, "wf-2", "prod-1"),
		note("n6", "health.changed", records.SeverityError, "", "prod-1"),
		note("n7", "health.changed", records.SeverityWarning, "", "dev-1"),
		note("n8", "record.set-aside", records.SeverityError, "", ""),
		note("n9", "workflow.aborted", records.SeverityError, "wf-3", ""),
	}
	produceNotes(t, bb, notes...)
	awaitCommittedToEnd(t, bb, "hook")
	awaitCommittedToEnd(t, bb, "chat")

	if got, want := sortedIDs(hook.ids()), []string{"n1", "n3", "n5", "n6", "n9"}; !slices.Equal(got, want) {
		t.Errorf("the webhook got %v, want %v", got, want)
	}
	if got, want := sortedIDs(chatIDs(t, chat)), []string{"n4", "n6", "n8", "n9"}; !slices.Equal(got, want) {
		t.Errorf("slack got %v, want %v", got, want)
	}
	for _, d := range hook.deliveries() {
		if d.event["source"] != notifier.Source(bb.Names().Namespace) || d.event["type"] != notifier.TypePrefix+d.note.Kind {
			t.Errorf("event %v", d.event)
		}
	}
	if delivered, failed := obs.get(); delivered["hook"] != 5 || delivered["chat"] != 4 || len(failed) != 0 {
		t.Errorf("observed delivered %v, failed %v", delivered, failed)
	}
}

func sortedIDs(ids []string) []string {
	return slices.Sorted(slices.Values(ids))
}

// chatIDs returns the notification IDs of the Slack messages received,
// from their context line, checking the link to the dashboard.
func chatIDs(t *testing.T, rc *receiver) []string {
	var out []string
	for _, d := range rc.deliveries() {
		s := string(d.body)
		for _, id := range []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"} {
			if strings.Contains(s, " · "+id+" · ") {
				out = append(out, id)
			}
		}
		if strings.Contains(s, `"Workflow`) && !strings.Contains(s, "http://127.0.0.1:8080/rollouts/") {
			t.Errorf("a Slack message of a workflow without a link to the dashboard: %s", s)
		}
	}
	return out
}

// TestExactlyOnceAcrossARestart runs the notifier and its sinks while
// health changes arrive, stops both in the middle of a delivery (the
// receiver has it, the sink does not know: a crash between delivery and
// its record), and starts them again: the receiver gets every
// notification the notifier wrote, and a repeat of the one in flight only,
// which it drops by webhook-id.
func TestExactlyOnceAcrossARestart(t *testing.T) {
	bb := testBackbone(t)
	const changes = 24
	var health []*kgo.Record
	for i := range changes {
		status, prev := records.HealthUnhealthy, records.HealthHealthy
		if i/6%2 == 1 {
			status, prev = prev, status
		}
		h := records.Health{Envelope: records.Envelope{ID: fmt.Sprintf("h-%d", i), Time: at.Add(time.Duration(i) * time.Second), Principal: "monitor"},
			ClusterID: fmt.Sprintf("c%d", i%6), Status: status, PreviousStatus: prev, ObservedAt: at}
		v, err := records.Encode(h)
		if err != nil {
			t.Fatal(err)
		}
		health = append(health, &kgo.Record{Topic: bb.Names().Health, Key: []byte(h.ClusterID), Value: v})
	}
	hook := newReceiver(t, clockwork.NewRealClock(), secretA, secretB)
	dest := webhook("hook", hook.srv.URL)
	routing := Routing{Destinations: []Destination{dest}}
	both := func(ctx context.Context) error {
		var wg sync.WaitGroup
		var nerr, serr error
		wg.Go(func() { nerr = notifier.Run(ctx, notifier.Config{Backbone: bb, InstanceID: "n0"}) })
		wg.Go(func() { serr = Run(ctx, Config{Backbone: bb, Routing: routing}) })
		wg.Wait()
		if nerr != nil {
			return nerr
		}
		return serr
	}

	// The 9th request reaches the receiver, which stops the notifier and
	// holds its answer until the sink has given up on it. The partitions
	// are delivered side by side: each may have one in flight then.
	const inFlight = 8
	var first *running
	stopped := make(chan struct{})
	hook.respond = func(i int, d delivery, w http.ResponseWriter, r *http.Request) {
		if i == inFlight {
			go func() { first.cancel(); close(stopped) }()
			<-r.Context().Done()
		}
	}
	first = start(t, both)
	produce(t, bb, health[:changes/2]...)
	<-stopped
	if err := first.stop(t); err != nil {
		t.Fatalf("the first run: %v", err)
	}
	if got := len(hook.ids()); got < inFlight+1 {
		t.Fatalf("%d requests before the stop, want at least %d", got, inFlight+1)
	}
	// What the first run committed: nothing before it may come again.
	committed := fetchCommitted(t, bb, "hook")
	produce(t, bb, health[changes/2:]...)

	hook.mu.Lock()
	hook.respond = nil
	hook.mu.Unlock()
	second := start(t, both)
	hook.await(func(ds []delivery) bool {
		seen := map[string]bool{}
		for _, d := range ds {
			seen[d.id] = true
		}
		return len(seen) == changes
	})
	awaitCommittedToEnd(t, bb, "hook")
	if err := second.stop(t); err != nil {
		t.Fatalf("the second run: %v", err)
	}

	written := readNotes(t, bb)
	var want []string
	where := map[string]writtenNote{}
	for _, n := range written {
		want = append(want, n.Envelope.ID)
		where[n.Envelope.ID] = n
	}
	ids := hook.ids()
	counts := map[string]int{}
	for _, id := range ids {
		counts[id]++
	}
	if got := slices.Sorted(maps.Keys(counts)); !slices.Equal(got, sortedIDs(want)) || len(want) != changes {
		t.Errorf("the receiver got %d notifications %v,\nthe notifier wrote %d %v", len(got), got, len(want), sortedIDs(want))
	}
	repeated := map[int32]int{}
	for id, n := range counts {
		if n == 1 {
			continue
		}
		w := where[id]
		repeated[w.partition]++
		if c, ok := committed[w.partition]; n > 2 || (ok && w.offset < c) {
			t.Errorf("notification %s (partition %d offset %d, committed %d) received %d times; only one in flight at the stop may come twice", id, w.partition, w.offset, c, n)
		}
	}
	for p, n := range repeated {
		if n > 1 {
			t.Errorf("%d notifications of partition %d repeated: at most the one in flight may be", n, p)
		}
	}
	t.Logf("%d requests for %d notifications; repeated per partition: %v", len(ids), len(counts), repeated)
}

// fetchCommitted returns the offsets destination name's group committed,
// by partition of the notifications topic.
func fetchCommitted(t *testing.T, bb backbone.Config, name string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	committed, err := committedOffsets(ctx, bb, name)
	if err != nil {
		t.Fatal(err)
	}
	return committed
}

// committedOffsets asks the broker what destination name's group
// committed, by partition of the notifications topic.
func committedOffsets(ctx context.Context, bb backbone.Config, name string) (map[int32]int64, error) {
	cl, err := bb.Client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	committed, err := kadm.NewClient(cl).FetchOffsets(ctx, Group(bb.Names(), name))
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	committed.Each(func(o kadm.OffsetResponse) {
		if o.Topic == bb.Names().Notifications {
			out[o.Partition] = o.At
		}
	})
	return out, nil
}

// TestRetriesServerErrors: two 500s, then a 200: delivered, with waits
// doubling from minBackoff, jittered, and the same webhook-id each time.
func TestRetriesServerErrors(t *testing.T) {
	bb := testBackbone(t)
	clock := autoAdvance(t)
	hook := newReceiver(t, clock, secretA, secretB)
	hook.respond = func(i int, _ delivery, w http.ResponseWriter, _ *http.Request) {
		if i < 2 {
			http.Error(w, "try later", http.StatusInternalServerError)
		}
	}
	dest := webhook("hook", hook.srv.URL)
	dest.MinBackoff, dest.MaxBackoff = 2*time.Second, time.Minute
	var obs counts
	startSinks(t, Config{Backbone: bb, Routing: Routing{Destinations: []Destination{dest}}, Clock: clock, Observer: &obs})
	produceNotes(t, bb, note("n1", "workflow.paused", records.SeverityWarning, "wf-1", ""))
	awaitCommittedToEnd(t, bb, "hook")

	ds := hook.deliveries()
	if len(ds) != 3 {
		t.Fatalf("%d requests, want 3", len(ds))
	}
	for i, d := range ds {
		if d.id != "n1" || (i > 0 && d.stamp <= ds[i-1].stamp) {
			t.Errorf("request %d: id %s, timestamp %s: want n1, each attempt stamped anew", i, d.id, d.stamp)
		}
	}
	waits := clock.recorded()
	if len(waits) != 2 || waits[0] < time.Second || waits[0] > 2*time.Second || waits[1] < 2*time.Second || waits[1] > 4*time.Second {
		t.Errorf("waits %v, want one in [1s, 2s] then one in [2s, 4s]", waits)
	}
	if delivered, failed := obs.get(); delivered["hook"] != 1 || failed["hook"] != 0 {
		t.Errorf("observed delivered %v, failed %v", delivered, failed)
	}
}

// TestTooManyRequestsWaitsRetryAfter: a 429 with Retry-After is tried again
// after that long, not after the backoff.
func TestTooManyRequestsWaitsRetryAfter(t *testing.T) {
	bb := testBackbone(t)
	clock := autoAdvance(t)
	hook := newReceiver(t, clock, secretA, secretB)
	hook.respond = func(i int, _ delivery, w http.ResponseWriter, _ *http.Request) {
		switch i {
		case 0:
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
		case 1:
			w.Header().Set("Retry-After", clock.Now().Add(90*time.Second).UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}
	dest := webhook("hook", hook.srv.URL)
	dest.MinBackoff, dest.MaxBackoff = 100*time.Millisecond, 2*time.Minute
	startSinks(t, Config{Backbone: bb, Routing: Routing{Destinations: []Destination{dest}}, Clock: clock})
	produceNotes(t, bb, note("n1", "workflow.paused", records.SeverityWarning, "wf-1", ""))
	awaitCommittedToEnd(t, bb, "hook")
	if n := len(hook.ids()); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
	// The HTTP date has a resolution of a second.
	if waits := clock.recorded(); len(waits) != 2 || waits[0] != 7*time.Second || waits[1] <= 89*time.Second || waits[1] > 90*time.Second {
		t.Errorf("waits %v, want Retry-After's 7s, then about 90s", waits)
	}
}

// awaitFailure waits for the sink.delivery-failed notification about
// notification id, and returns it.
func awaitFailure(t *testing.T, bb backbone.Config, watch *receiver, id string) delivery {
	t.Helper()
	var f delivery
	watch.await(func(ds []delivery) bool {
		for _, d := range ds {
			if d.note.Kind == KindDeliveryFailed && d.note.Fields["notification"] == id {
				f = d
				return true
			}
		}
		return false
	})
	return f
}

// TestGoneDisablesTheDestination: a 410 disables the destination (no
// request after it) and is announced as sink.delivery-failed, which
// another destination gets; the other destination goes on.
func TestGoneDisablesTheDestination(t *testing.T) {
	bb := testBackbone(t)
	hook := newReceiver(t, clockwork.NewRealClock(), secretA, secretB)
	hook.respond = func(_ int, _ delivery, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) }
	watch := newReceiver(t, clockwork.NewRealClock(), secretA, secretB)
	var obs counts
	startSinks(t, Config{Backbone: bb, Observer: &obs, Routing: Routing{Destinations: []Destination{
		webhook("hook", hook.srv.URL),
		webhook("watch", watch.srv.URL, Rule{Types: []string{"io.flotilla.sink.*"}}),
	}}})
	produceNotes(t, bb,
		note("n1", "workflow.paused", records.SeverityWarning, "wf-1", ""),
		note("n2", "workflow.resumed", records.SeverityInfo, "wf-1", ""),
		note("n3", "workflow.succeeded", records.SeverityInfo, "wf-1", ""))

	f := awaitFailure(t, bb, watch, "n1")
	if f.note.Fields["destination"] != "hook" || f.note.Fields["status"] != "410" || !strings.Contains(f.note.Fields["reason"], "410 Gone") ||
		f.note.Severity != records.SeverityError || f.note.WorkflowID != "wf-1" || f.event["type"] != "io.flotilla.sink.delivery-failed" ||
		f.event["source"] != notifier.Source(bb.Names().Namespace) {
		t.Errorf("failure notification %+v, event %v", f.note, f.event)
	}
	if ids := hook.ids(); !slices.Equal(ids, []string{"n1"}) {
		t.Errorf("the destination that answered 410 got %v, want n1 and nothing after", ids)
	}
	if _, failed := obs.get(); failed["hook"] != 1 {
		t.Errorf("observed failures %v", failed)
	}
	// Its progress stays before n1: started again with the destination
	// back, it delivers from there.
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	committed, err := kadm.NewClient(cl).FetchOffsets(t.Context(), Group(bb.Names(), "hook"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range readNotes(t, bb) {
		if w.Kind == KindDeliveryFailed {
			checkHeaders(t, w.headers, w.Notification, bb)
		}
		if w.Envelope.ID == "n1" {
			if o, ok := committed.Lookup(bb.Names().Notifications, w.partition); ok && o.At > w.offset {
				t.Errorf("the disabled destination committed %d, past n1 at %d", o.At, w.offset)
			}
		}
	}
}

// checkHeaders checks a failure notification is written as the notifier
// writes notifications: its CloudEvents headers, of the notifier's source.
func checkHeaders(t *testing.T, hs []kgo.RecordHeader, n records.Notification, bb backbone.Config) {
	t.Helper()
	got := map[string]string{}
	for _, h := range hs {
		got[h.Key] = string(h.Value)
	}
	if got["ce_type"] != "io.flotilla.sink.delivery-failed" || got["ce_source"] != notifier.Source(bb.Names().Namespace) || got["ce_id"] != n.Envelope.ID ||
		got["content-type"] != notifier.ContentType || got["ce_severity"] != "error" {
		t.Errorf("failure notification headers %v", got)
	}
}

// TestFinalFailureIsAnnouncedOnce: a destination that answers 503 to every
// request gets maxAttempts requests per notification; the final failure
// is written as sink.delivery-failed with the reason, and the failure of
// that notification in turn (the destination gets every notification) is
// not announced: no loop.
func TestFinalFailureIsAnnouncedOnce(t *testing.T) {
	bb := testBackbone(t)
	clock := autoAdvance(t)
	hook := newReceiver(t, clock, secretA, secretB)
	hook.respond = func(_ int, _ delivery, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}
	dest := webhook("hook", hook.srv.URL)
	dest.MaxAttempts = 3
	var obs counts
	startSinks(t, Config{Backbone: bb, Routing: Routing{Destinations: []Destination{dest}}, Clock: clock, Observer: &obs})
	produceNotes(t, bb, note("n1", "operation.failed", records.SeverityError, "wf-1", "c-1"))
	hook.await(func(ds []delivery) bool { return len(ds) == 6 })
	awaitCommittedToEnd(t, bb, "hook")

	written := readNotes(t, bb)
	if len(written) != 2 || written[1].Kind != KindDeliveryFailed {
		t.Fatalf("notifications written: %+v; want n1 and one failure", written)
	}
	f := written[1].Notification
	checkHeaders(t, written[1].headers, f, bb)
	if f.Fields["notification"] != "n1" || f.Fields["status"] != "503" || f.Fields["destination"] != "hook" ||
		!strings.Contains(f.Fields["reason"], "gave up after 3 attempts") || !strings.Contains(f.Fields["reason"], "down for maintenance") ||
		f.ClusterID != "c-1" || f.Envelope.CausationID != "n1" {
		t.Errorf("failure %+v", f)
	}
	ids := hook.ids()
	if !slices.Equal(ids[:3], []string{"n1", "n1", "n1"}) || ids[3] != f.Envelope.ID || len(ids) != 6 {
		t.Errorf("requests %v: want n1 three times, then its failure three times", ids)
	}
	if delivered, failed := obs.get(); failed["hook"] != 2 || delivered["hook"] != 0 {
		t.Errorf("observed delivered %v, failed %v", delivered, failed)
	}
}

// TestPerRequestTimeout: a receiver that never answers is given up on
// after the destination's timeout, each attempt, and the failure says so.
func TestPerRequestTimeout(t *testing.T) {
	bb := testBackbone(t)
	clock := autoAdvance(t)
	hook := newReceiver(t, clock, secretA, secretB)
	hook.respond = func(_ int, d delivery, w http.ResponseWriter, r *http.Request) {
		if d.note.Kind != KindDeliveryFailed {
			<-r.Context().Done() // never answers
		}
	}
	dest := webhook("hook", hook.srv.URL)
	dest.MaxAttempts, dest.Timeout = 2, 200*time.Millisecond
	startSinks(t, Config{Backbone: bb, Routing: Routing{Destinations: []Destination{dest}}, Clock: clock})
	produceNotes(t, bb, note("n1", "workflow.paused", records.SeverityWarning, "wf-1", ""))
	f := awaitFailure(t, bb, hook, "n1")
	if r := f.note.Fields["reason"]; !strings.Contains(r, "gave up after 2 attempts") || !strings.Contains(r, "no answer within the timeout of 200ms") || f.note.Fields["status"] != "0" {
		t.Errorf("failure %+v", f.note.Fields)
	}
	if ids := hook.ids(); len(ids) != 3 || ids[0] != "n1" || ids[1] != "n1" {
		t.Errorf("requests %v: want n1 twice, then its failure", ids)
	}
}

// TestNothingIsDeliveredAheadOfItsRecordedProgress: the broker refuses
// the sink's first commits. The sink keeps trying to record the first
// delivery, and sends nothing more until it has: a copy that lost its
// partitions without knowing it yet (frozen, cut off) sends at most the
// notification it had in flight, not the rest of its buffers. Then every
// notification arrives once. (Its own embedded broker: the refusal is a
// kfake control.)
func TestNothingIsDeliveredAheadOfItsRecordedProgress(t *testing.T) {
	broker, bb := ownBroker(t, 1)
	const refusals = 4
	var refused atomic.Int32
	var landed atomic.Bool
	broker.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		broker.KeepControl()
		if refused.Load() >= refusals {
			landed.Store(true)
			return nil, nil, false // the broker commits it
		}
		refused.Add(1)
		commit := req.(*kmsg.OffsetCommitRequest)
		resp := commit.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, topic := range commit.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic = topic.Topic
			for _, p := range topic.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, kerr.OffsetMetadataTooLarge.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})

	hook := newReceiver(t, clockwork.NewRealClock(), secretA, secretB)
	hook.respond = func(i int, d delivery, _ http.ResponseWriter, _ *http.Request) {
		if d.id != "n1" && !landed.Load() {
			t.Errorf("%s was delivered while the progress of n1 was not recorded (%d commits refused)", d.id, refused.Load())
		}
	}
	startSinks(t, Config{Backbone: bb, Routing: Routing{Destinations: []Destination{webhook("hook", hook.srv.URL)}}})
	produceNotes(t, bb, note("n1", "workflow.paused", records.SeverityWarning, "wf-1", ""),
		note("n2", "workflow.resumed", records.SeverityInfo, "wf-1", ""),
		note("n3", "workflow.succeeded", records.SeverityInfo, "wf-1", ""))
	awaitCommittedToEnd(t, bb, "hook")
	if got := hook.ids(); !slices.Equal(got, []string{"n1", "n2", "n3"}) || refused.Load() != refusals {
		t.Errorf("received %v with %d commits refused, want n1, n2, n3 once each after %d", got, refused.Load(), refusals)
	}
}

// ownBroker starts an embedded broker of the test's own, for faults that
// are kfake controls, with the topics in partitions each.
func ownBroker(t *testing.T, partitions int32) (*kfake.Cluster, backbone.Config) {
	t.Helper()
	broker, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	bb := backbone.Config{Brokers: broker.ListenAddrs(), Namespace: "own",
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := bb.EnsureTopics(ctx, partitions, 1); err != nil {
		t.Fatal(err)
	}
	return broker, bb
}

// TestANewDestinationStartsFromTheNotifiersStart: a destination that
// starts at the end gets nothing written before the notifier started,
// and everything written since, those written while its group was still
// forming included (the broker holds the group's joins back until they
// are written).
func TestANewDestinationStartsFromTheNotifiersStart(t *testing.T) {
	broker, bb := ownBroker(t, 3)
	var written atomic.Bool
	var refusing sync.Once
	joining := make(chan struct{})
	broker.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		broker.KeepControl()
		if written.Load() {
			return nil, nil, false
		}
		refusing.Do(func() { close(joining) })
		resp := req.(*kmsg.JoinGroupRequest).ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		return resp, nil, true
	})
	before, err := notifier.Record(bb.Names(), note("before", "workflow.paused", records.SeverityWarning, "wf-1", ""))
	if err != nil {
		t.Fatal(err)
	}
	before.Timestamp = time.Now().Add(-time.Minute)
	produce(t, bb, before)
	hook := newReceiver(t, clockwork.NewRealClock(), secretA, secretB)
	dest := webhook("hook", hook.srv.URL)
	dest.StartAtEnd = true
	startSinks(t, Config{Backbone: bb, Routing: Routing{Destinations: []Destination{dest}}})
	<-joining // the group tries to form
	produceNotes(t, bb, note("since-1", "workflow.resumed", records.SeverityInfo, "wf-1", ""),
		note("since-2", "workflow.succeeded", records.SeverityInfo, "wf-2", ""))
	written.Store(true)
	awaitCommittedToEnd(t, bb, "hook")
	if got := sortedIDs(hook.ids()); !slices.Equal(got, []string{"since-1", "since-2"}) {
		t.Errorf("received %v, want since-1 and since-2, not what was written before the start", got)
	}
}

// TestAFetchHeldBackKeepsItsPlace: a partition's fetches reach its worker
// in the order they came, even when one more comes after its worker took
// the waiting fetch but before the one held back was handed over (the
// client may still return a fetch after it was told to pause).
func TestAFetchHeldBackKeepsItsPlace(t *testing.T) {
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1")) // never contacted: pausing is local
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	part := &partition{id: 0, ctx: context.Background(), work: make(chan []*kgo.Record, 1)}
	r := &runner{cl: cl, names: topics.NewNames("test"), owned: map[int32]*partition{0: part}}
	fetch := func(offsets ...int64) []*kgo.Record {
		recs := make([]*kgo.Record, len(offsets))
		for i, o := range offsets {
			recs[i] = &kgo.Record{Offset: o}
		}
		return recs
	}
	var got []int64
	take := func() {
		for _, rec := range <-part.work {
			got = append(got, rec.Offset)
		}
	}
	r.queue(0, fetch(0, 1))
	r.queue(0, fetch(2, 3)) // the queue is full: held, and the partition paused
	take()
	r.queue(0, fetch(4)) // came before the pause took effect
	r.next(part)         // the worker is done with its fetch: it gets what was held
	take()
	r.next(part) // and with that one: nothing is held any more
	if want := []int64{0, 1, 2, 3, 4}; !slices.Equal(got, want) {
		t.Fatalf("the worker got offsets %v, want %v", got, want)
	}
	if paused := cl.PauseFetchPartitions(nil); len(paused[r.names.Notifications]) != 0 {
		t.Fatalf("the partition is still paused once its worker has everything: %v", paused)
	}
}
