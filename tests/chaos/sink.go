//go:build unix

package chaos

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-fleet/flotilla/services/notifier/sinks"
)

// webhookSink is the run's webhook receiver: every notifier copy has it
// as a destination (--sinks) from the first notification on, so the
// faults hit its deliveries too. It checks each request's signature as a
// receiver should, and counts the requests of each webhook-id.
type webhookSink struct {
	secret  sinks.Secret
	routing string // the routing file
	srv     *http.Server

	mu       sync.Mutex
	got      map[string]int // webhook-id → requests
	first    []string       // webhook-ids in the order of their first request
	requests int
	bad      []string // requests that did not verify
}

// startSink starts the receiver on a port of its own and writes the
// routing file and the secret the notifiers are given.
func (r *runner) startSink() error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	s := &webhookSink{secret: sinks.NewSecret(key), got: map[string]int{}, routing: filepath.Join(r.dir, "sinks.yaml")}
	if err := os.WriteFile(filepath.Join(r.dir, "sink-secret"), []byte(s.secret.Encode()+"\n"), 0o600); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("the webhook receiver: %w", err)
	}
	// Attempts without end, soon after a failure: a delivery the run's
	// faults interrupt is tried again, never given up.
	routing := fmt.Sprintf(`destinations:
  - name: chaos
    type: webhook
    url: http://%s/hook
    secretFile: sink-secret
    start: start
    timeout: 5s
    maxAttempts: 1000
    minBackoff: 100ms
    maxBackoff: 1s
`, ln.Addr())
	if err := os.WriteFile(s.routing, []byte(routing), 0o644); err != nil {
		ln.Close()
		return err
	}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	r.sink = s
	return nil
}

func (s *webhookSink) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}

func (s *webhookSink) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return // the sender went away: it tries again
	}
	id := req.Header.Get(sinks.HeaderID)
	verr := sinks.Verify([]sinks.Secret{s.secret}, req.Header, body, time.Now(), 0)
	s.mu.Lock()
	s.requests++
	if s.got[id] == 0 {
		s.first = append(s.first, id)
	}
	s.got[id]++
	if verr != nil {
		s.bad = append(s.bad, fmt.Sprintf("request for %q: %v", id, verr))
	}
	s.mu.Unlock()
	// A receiver takes a moment: a fault can then land between the
	// request's arrival and the sink's commit, the repeat it allows.
	time.Sleep(5 * time.Millisecond)
	w.WriteHeader(http.StatusNoContent)
}

// delivered returns the requests of each webhook-id so far, the order of
// their first requests, their total, and the requests that did not
// verify.
func (s *webhookSink) delivered() (got map[string]int, first []string, requests int, bad []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.got), slices.Clone(s.first), s.requests, slices.Clone(s.bad)
}

// awaitDeliveries waits until the receiver has had every notification of
// the topic, reading it again as it goes (a delivery that failed for good
// would add one), or until timeout.
func (r *runner) awaitDeliveries(ctx context.Context, h *history, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		err := r.readNotifications(ctx, h)
		got, _, _, _ := r.sink.delivered()
		missing := 0
		for _, n := range h.notes {
			if got[n.n.Envelope.ID] == 0 {
				missing++
			}
		}
		switch {
		case err == nil && missing == 0:
			r.progress("the webhook receiver has every notification")
			return
		case time.Now().After(deadline) || ctx.Err() != nil:
			r.progress("%d notifications not delivered to the webhook after %s (%v)", missing, timeout, err)
			return
		}
		time.Sleep(time.Second)
	}
}

// repeatsAllowed is how many repeated deliveries the faults of the run
// explain. A sink delivers one notification at a time per partition and
// records its progress before the next, so a notifier copy that is
// killed, exits, or is frozen past its session may have one delivery not
// recorded in each partition it owns, which its successor repeats, and so
// may the copy that gives partitions up to it when it is back (twice the
// partitions each); a broker restart, one per partition.
func (r *runner) repeatsAllowed() (int, string) {
	disruptions, restarts := 0, 0
	for _, f := range r.faults() {
		switch {
		case f.Kind == "broker restart":
			restarts++
		case (f.Kind == "SIGKILL" || f.Kind == "SIGSTOP") && strings.HasPrefix(f.Target, "notifier-"):
			disruptions++
		}
	}
	for _, e := range r.exits() {
		if strings.HasPrefix(e.Instance, "notifier-") {
			disruptions++
		}
	}
	return 2*partitions*disruptions + partitions*restarts, fmt.Sprintf("%d kills, freezes and exits of notifier copies, %d broker restarts, %d partitions", disruptions, restarts, partitions)
}

// sinkDeliveries: every notification of the topic reached the webhook,
// each partition's in order, each request signed with the destination's
// secret, nothing delivered that the topic does not hold, and no more
// repeats than the faults on the notifiers explain.
func (f *facts) sinkDeliveries() Check {
	c := Check{Name: "every notification delivered to the webhook once and in order, but for the repeats faults explain"}
	if f.r.sink == nil {
		c.violation("no webhook receiver ran")
		return c
	}
	got, first, requests, bad := f.r.sink.delivered()
	// A partition is delivered in order, and a copy that takes it over
	// goes on from its last recorded progress: so the first requests of
	// its notifications come in its order, whatever the repeats.
	arrived := make(map[string]int, len(first))
	for i, id := range first {
		arrived[id] = i
	}
	latest := map[int32]noteRec{} // per partition, the notification that first arrived latest so far
	onTopic := map[string]bool{}
	for _, n := range f.h.notes {
		id := n.n.Envelope.ID
		if onTopic[id] {
			continue // a duplicate on the topic is the notifications check's
		}
		onTopic[id] = true
		i, ok := arrived[id]
		if !ok {
			c.violation("not delivered: %s %s %s (notifications %s)", n.n.Kind, n.n.WorkflowID, n.n.ClusterID, n.at)
			continue
		}
		if prev, ok := latest[n.partition]; ok && i < arrived[prev.n.Envelope.ID] {
			c.violation("out of order: %q (notifications %s) first arrived before %q (notifications %s), which is ahead of it in its partition", id, n.at, prev.n.Envelope.ID, prev.at)
			continue
		}
		latest[n.partition] = n
	}
	for _, id := range slices.Sorted(maps.Keys(got)) {
		if !onTopic[id] {
			c.violation("delivered, but not on the notifications topic: %q (%d requests)", id, got[id])
		}
	}
	for _, b := range bad {
		c.violation("%s", b)
	}
	repeats := requests - len(got)
	allowed, why := f.r.repeatsAllowed()
	most := 0
	for _, n := range got {
		most = max(most, n)
	}
	if repeats > allowed {
		c.violation("%d repeated deliveries, more than the %d the faults explain (%s)", repeats, allowed, why)
	}
	c.note("%d requests for %d notifications: %d repeats (the faults allow %d: %s); at most %d requests for one", requests, len(got), repeats, allowed, why, most)
	return c
}
