package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// sse is one server-sent event as a client reads it.
type sse struct {
	id, event, data string
}

// stream is a client of /events, reading events in the background.
type stream struct {
	events chan sse
	body   io.Closer
}

func openStream(t *testing.T, url, lastEventID string) *stream {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: %s %s: %s", url, resp.Status, resp.Header.Get("Content-Type"), body)
	}
	s := &stream{events: make(chan sse, 1000), body: resp.Body}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" || ev.data != "" {
					s.events <- ev
				}
				ev = sse{}
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return s
}

// next returns the next event of a kind, skipping others ("changed").
func (s *stream) next(t *testing.T, kind string) sse {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("the stream ended before a %s event", kind)
			}
			if ev.event == kind {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event within 30s", kind)
		}
	}
}

// notifications reads n notification events, returning their
// notification IDs and the event ID of the last.
func (s *stream) notifications(t *testing.T, n int) (ids []string, lastID string) {
	t.Helper()
	for range n {
		ev := s.next(t, "notification")
		var e Event
		if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
			t.Fatalf("notification event %q: %v", ev.data, err)
		}
		if e.Type != "io.flotilla."+e.Kind {
			t.Fatalf("event type %q for kind %q", e.Type, e.Kind)
		}
		ids, lastID = append(ids, e.ID), ev.id
	}
	return ids, lastID
}

// eventsHarness is a dashboard on its own namespace of the test broker,
// with no service running: the test writes the notifications itself.
type eventsHarness struct {
	cfg backbone.Config
	url string
	cl  *kgo.Client
}

func newEventsHarness(t *testing.T) *eventsHarness {
	t.Helper()
	cfg := backbone.Config{Brokers: brokertest.Addrs(t), Namespace: "dash" + uuid.NewString()[:8],
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := cfg.EnsureTopics(ctx, 3, 1); err != nil {
		t.Fatal(err)
	}
	srv := serveDashboard(t, cfg)
	cl, err := cfg.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &eventsHarness{cfg: cfg, url: srv.URL, cl: cl}
}

// notification returns a notification record about workflow.
func (h *eventsHarness) notification(t *testing.T, workflow string, i int) *kgo.Record {
	t.Helper()
	n := records.Notification{Envelope: records.Envelope{ID: fmt.Sprintf("%s-n%02d", workflow, i), Time: time.Now(), Principal: "notifier"},
		Kind: "workflow.progress", Severity: records.SeverityInfo, WorkflowID: workflow, Message: fmt.Sprintf("step %d", i)}
	v, err := records.Encode(n)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: h.cfg.Names().Notifications, Key: []byte(workflow), Value: v}
}

func (h *eventsHarness) produce(t *testing.T, recs ...*kgo.Record) {
	t.Helper()
	if err := h.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestAReconnectingBrowserMissesNothing: a stream cut after some
// notifications and opened again with the last event ID it got, as a
// browser's EventSource does, gets every later notification once, in
// order, including those written while it was away.
func TestAReconnectingBrowserMissesNothing(t *testing.T) {
	h := newEventsHarness(t)
	first := openStream(t, h.url+"/events", "")
	first.next(t, "position")
	var want []string
	var recs []*kgo.Record
	for i := range 12 { // over several workflows, so over several partitions
		r := h.notification(t, fmt.Sprintf("w%d", i%4), i)
		recs = append(recs, r)
	}
	h.produce(t, recs...)
	for _, r := range recs {
		n, _ := records.DecodeNotification(r.Value)
		want = append(want, n.Envelope.ID)
	}
	seen, lastID := first.notifications(t, 5)
	first.body.Close() // the connection drops after the fifth

	var later []*kgo.Record
	for i := 12; i < 20; i++ {
		later = append(later, h.notification(t, fmt.Sprintf("w%d", i%4), i))
	}
	h.produce(t, later...)
	for _, r := range later {
		n, _ := records.DecodeNotification(r.Value)
		want = append(want, n.Envelope.ID)
	}
	again := openStream(t, h.url+"/events", lastID)
	rest, _ := again.notifications(t, len(want)-len(seen))
	got := append(seen, rest...)
	if !sameSet(got, want) {
		t.Fatalf("across the reconnect the browser got\n%v\nwant each of\n%v\nonce", got, want)
	}
	// Per workflow (one partition each), in the order written.
	for _, w := range []string{"w0", "w1", "w2", "w3"} {
		if a, b := only(got, w), only(want, w); strings.Join(a, " ") != strings.Join(b, " ") {
			t.Fatalf("workflow %s: got %v, want %v in that order", w, a, b)
		}
	}
	// Nothing else is told before the next one written: no repeat.
	h.produce(t, h.notification(t, "w0", 99))
	if next, _ := again.notifications(t, 1); next[0] != "w0-n99" {
		t.Fatalf("after every notification, %s was told, not the next one written (w0-n99)", next[0])
	}
}

// TestAStreamOpenedDuringATransactionTellsItsNotifications: a stream that
// starts while the notifier's transaction is open starts below it (the
// last stable offset), so the notifications the transaction commits
// after are told, and an aborted one never is.
func TestAStreamOpenedDuringATransactionTellsItsNotifications(t *testing.T) {
	h := newEventsHarness(t)
	txn, err := h.cfg.Client(kgo.TransactionalID("dash-test-" + uuid.NewString()[:8]))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	ctx := context.Background()
	write := func(commit kgo.TransactionEndTry, recs ...*kgo.Record) func() {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := txn.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		return func() {
			if err := txn.EndTransaction(ctx, commit); err != nil {
				t.Fatal(err)
			}
		}
	}
	end := write(kgo.TryAbort, h.notification(t, "w1", 1))
	s := openStream(t, h.url+"/events", "")
	s.next(t, "position")
	end()
	end = write(kgo.TryCommit, h.notification(t, "w1", 2), h.notification(t, "w1", 3))
	s2 := openStream(t, h.url+"/events?workflow=w1", "") // opened while it is open
	s2.next(t, "position")
	end()
	for _, st := range []*stream{s, s2} {
		ids, _ := st.notifications(t, 2)
		if strings.Join(ids, " ") != "w1-n02 w1-n03" {
			t.Fatalf("told %v; want the committed w1-n02 w1-n03 and not the aborted w1-n01", ids)
		}
	}
}

func TestTheStreamKeepsWhatThePageIsAbout(t *testing.T) {
	h := newEventsHarness(t)
	s := openStream(t, h.url+"/events?workflow=w1", "")
	s.next(t, "position")
	rb := h.notification(t, "w1/rollback", 3)
	h.produce(t, h.notification(t, "w2", 1), h.notification(t, "w1", 2), rb, h.notification(t, "w10", 4))
	ids, _ := s.notifications(t, 2)
	if strings.Join(ids, " ") != "w1-n02 w1/rollback-n03" {
		t.Fatalf("the stream of w1 told %v; want its own and its rollback's only", ids)
	}
	resp, err := http.Get(h.url + "/events?cluster=x") // any filter, a bad event ID
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("GET", h.url+"/events", nil)
	req.Header.Set("Last-Event-ID", "not-a-position")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "partition:offset") {
		t.Fatalf("a bad Last-Event-ID: %s %q; want 400 saying what an event ID is", resp.Status, body)
	}
}

// TestAPageIsToldOfWhatChangedBeforeItsStreamOpened: a page made from
// one version of the model, whose event stream opens after the model
// moved on, is told "changed" at once, not at the next change, which may
// never come (the rollout it shows may have just ended).
func TestAPageIsToldOfWhatChangedBeforeItsStreamOpened(t *testing.T) {
	cfg := backbone.Config{Brokers: brokertest.Addrs(t), Namespace: "dash" + uuid.NewString()[:8],
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := cfg.EnsureTopics(context.Background(), 3, 1); err != nil {
		t.Fatal(err)
	}
	d := New(Config{Backbone: cfg})
	srv, _ := serve(t, d)
	m := d.Model()
	m.ApplyCluster("k-1", &inventory.Cluster{ID: "k-1", Driver: "kafka", Version: "4.1", Labels: map[string]string{"kind": "kafka"}})
	_, made := m.Changed()
	status, _, page := fetch(t, srv.URL+"/fleet")
	if want := fmt.Sprintf(`data-since="%d"`, made); status != http.StatusOK || !strings.Contains(page, want) {
		t.Fatalf("the fleet page: %d, and it lacks %s, the model's version it was made from", status, want)
	}
	m.ApplyCluster("k-2", &inventory.Cluster{ID: "k-2", Driver: "kafka", Version: "4.1", Labels: map[string]string{"kind": "kafka"}})
	_, now := m.Changed()

	s := openStream(t, fmt.Sprintf("%s/events?since=%d", srv.URL, made), "")
	if ev := s.next(t, "changed"); ev.data != fmt.Sprintf(`{"version":%d}`, now) {
		t.Fatalf("the stream of a page made at version %d told %q; want the model's version now, %d", made, ev.data, now)
	}
	// The notifier restarts and reads the same two clusters: a page of
	// the old run reconnecting is still told, however its versions count.
	restarted := New(Config{Backbone: cfg})
	again, _ := serve(t, restarted)
	for _, id := range []string{"k-1", "k-2"} {
		restarted.Model().ApplyCluster(id, &inventory.Cluster{ID: id, Driver: "kafka", Version: "4.1", Labels: map[string]string{"kind": "kafka"}})
	}
	s = openStream(t, fmt.Sprintf("%s/events?since=%d", again.URL, now), "")
	s.next(t, "changed")
	if status, _, body := fetch(t, srv.URL+"/events?since=yesterday"); status != http.StatusBadRequest || !strings.Contains(body, "since") {
		t.Fatalf("a bad since: %d %q; want 400 saying what it should be", status, body)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	count := map[string]int{}
	for _, s := range a {
		count[s]++
	}
	for _, s := range b {
		if count[s] != 1 {
			return false
		}
		count[s]--
	}
	return true
}

func only(ids []string, workflow string) []string {
	var out []string
	for _, id := range ids {
		if strings.HasPrefix(id, workflow+"-") {
			out = append(out, id)
		}
	}
	return out
}
