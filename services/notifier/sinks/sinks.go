package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
	"github.com/flotilla-fleet/flotilla/services/notifier/notifier"
)

// KindDeliveryFailed is the kind of the notification a final failure of a
// delivery writes (notifier.DeliveryFailed).
const KindDeliveryFailed = "sink.delivery-failed"

// Observer is told of every notification delivered to a destination, and
// of every one that finally failed (after its attempts, or on 410 Gone),
// to count them. Its methods must be safe for concurrent use and return
// quickly.
type Observer interface {
	Delivered(destination string)
	Failed(destination string)
}

// Config configures the sinks of a notifier.
type Config struct {
	// Backbone is the notifier's: its namespace names the topics, the
	// groups and the source of the failure notifications.
	Backbone backbone.Config
	// Routing is what Load read.
	Routing Routing
	// Trust says whether the inventory records a rule selects clusters by
	// must be signed by a principal allowed to write them; one that is
	// not is skipped (package trust).
	Trust trust.Config
	// Clock times the waits between attempts and stamps the webhooks'
	// timestamps and the failure notifications (a real clock if nil).
	Clock clockwork.Clock
	// Observer, if set, counts deliveries and failures.
	Observer Observer
	// HTTPClient makes the requests (nil: one of its own that follows no
	// redirects). Its Timeout, if any, bounds a request beside each
	// destination's timeout.
	HTTPClient *http.Client
}

// Group returns the consumer group of destination name in the namespace
// of names: <namespace>.notifier.sink.<name>. Its committed offsets are the
// destination's delivery progress.
func Group(names topics.Names, name string) string { return names.Group("notifier.sink." + name) }

// Run delivers notifications to every destination of cfg.Routing until ctx
// ends, and returns nil then. It returns an error only at its start, on
// what is wrong with the configuration or the backbone: a destination
// that fails at run time is logged, counted and announced, and never
// stops Run nor the others.
//
// Each destination is a consumer group of its own (Group) on the
// notifications topic, read committed, so copies of the notifier share a
// destination's partitions and a destination that is slow or backing off
// holds only its own. Within a partition, notifications are delivered in
// order, one at a time; the partitions a copy owns are delivered side by
// side, so one backing off holds up only itself. A notification's offset
// is committed once it was
// delivered (a 2xx answer), or once it finally failed and its
// sink.delivery-failed notification was written; so after a restart each
// destination resumes after the last notification it finished. The one
// in flight in a partition when the notifier stops or crashes may have reached the
// receiver without its offset being committed: it is delivered again,
// with the same webhook-id (the notification's ID), for the receiver to
// drop. Nothing more of a partition is delivered until the last delivery's
// commit has landed (see commit), so a copy that lost its partitions
// unawares repeats no more than that one either.
//
// Attempts: a 2xx is delivered; a 5xx, a 429, a timeout or a network error
// is tried again after an exponential backoff with jitter (a 429 after its
// Retry-After, capped at MaxBackoff), up to MaxAttempts; a 410 Gone
// disables the destination until the notifier restarts (its current
// notification stays uncommitted, so delivery resumes there); any other
// answer fails at once. A final failure is written as a notification of
// kind sink.delivery-failed, except the failure of a sink.delivery-failed
// notification itself, which is only logged and counted: failures never
// feed on each other.
func Run(ctx context.Context, cfg Config) error {
	if len(cfg.Routing.Destinations) == 0 {
		return errors.New("sinks: no destinations")
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	started := time.Now() // real time, as the notifications' record timestamps are
	names := cfg.Backbone.Names()
	log := cfg.Backbone.Log().With("service", "notifier", "component", "sinks")

	// Clients outlive ctx by StopGrace at most: long enough to leave their
	// groups, not so long as to hang on a silent broker.
	clientCtx, cutOff := context.WithCancel(context.WithoutCancel(ctx))
	defer cutOff()
	defer context.AfterFunc(ctx, func() { time.AfterFunc(backbone.StopGrace, cutOff) })()

	producer, err := cfg.Backbone.Client(kgo.WithContext(clientCtx))
	if err != nil {
		return fmt.Errorf("sinks: %w", err)
	}
	defer producer.Close()
	var labels func(string) (map[string]string, bool)
	var inv *logtable.Table[map[string]string]
	if cfg.Routing.NeedsInventory() {
		tt := trust.NewTable(names.Trust, cfg.Backbone.Opts(), cfg.Trust, trust.WithLogger(log))
		go tt.Run(ctx)
		inv = logtable.New(names.Inventory, cfg.Backbone.Opts(), func(r *kgo.Record) (map[string]string, error) {
			rec, err := tt.DecodeCluster(r)
			return rec.Cluster.Labels, err
		}, logtable.WithLogger[map[string]string](log))
		labels = inv.Get
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runners := make([]*runner, 0, len(cfg.Routing.Destinations))
	for _, d := range cfg.Routing.Destinations {
		r := &runner{cfg: &cfg, d: d, names: names, log: log.With("destination", d.Name), labels: labels,
			producer: producer, owned: map[int32]*partition{}, dashboard: cfg.Routing.Dashboard}
		r.base, r.disable = context.WithCancelCause(ctx)
		reset := kgo.NewOffset().AtStart()
		if d.StartAtEnd {
			// From this start on, by the records' timestamps, not from
			// the end at the group's first assignment: what is written
			// while the group forms is not skipped.
			reset = kgo.NewOffset().AfterMilli(started.UnixMilli())
		}
		r.cl, err = cfg.Backbone.Client(
			kgo.WithContext(clientCtx),
			kgo.ConsumerGroup(Group(names, d.Name)),
			kgo.ConsumeTopics(names.Notifications),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.ConsumeResetOffset(reset),
			kgo.DisableAutoCommit(), // offsets are committed once delivered
			kgo.Balancers(kgo.CooperativeStickyBalancer()),
			kgo.OnPartitionsAssigned(r.assigned),
			kgo.OnPartitionsRevoked(r.revoked),
			kgo.OnPartitionsLost(r.revoked),
		)
		if err != nil {
			for _, r := range runners {
				r.cl.Close()
			}
			return fmt.Errorf("sinks: destination %s: %w", d.Name, err)
		}
		runners = append(runners, r)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	if inv != nil {
		wg.Go(func() {
			if err := inv.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("the inventory can no longer be read: rules selecting clusters see the labels as they were", "err", err)
			}
		})
		if err := inv.WaitReady(ctx); err != nil {
			for _, r := range runners {
				r.cl.Close()
			}
			if ctx.Err() != nil {
				return nil
			}
			cancel()
			return fmt.Errorf("sinks: the inventory, for the rules that select clusters: %w", err)
		}
	}
	for _, r := range runners {
		wg.Go(func() {
			defer r.cl.Close() // leaves the group: a disabled destination's partitions go to the other copies
			r.run()
			r.stopWorkers()
		})
	}
	log.Info("sinks started", "destinations", len(runners))
	<-ctx.Done()
	return nil
}

// runner delivers to one destination.
type runner struct {
	cfg       *Config
	d         Destination
	names     topics.Names
	log       *slog.Logger
	labels    func(string) (map[string]string, bool)
	producer  *kgo.Client
	cl        *kgo.Client
	dashboard string

	mu    sync.Mutex
	owned map[int32]*partition
	// base is the context of the partitions' contexts: the run's, until
	// disable ends it (410 Gone).
	base    context.Context
	disable context.CancelCauseFunc
	// workers run the partitions; once stopping is set no more start.
	workers  sync.WaitGroup
	stopping bool
}

// partition is a partition of the notifications topic the destination's
// group gave this copy, and its worker, which delivers its records in
// order, one at a time: partitions go on side by side, so a receiver's
// latency or a partition backing off does not hold the others up. Its
// context ends when the group takes it away, which stops a delivery to it
// (the next owner takes over from its last commit).
type partition struct {
	id     int32
	ctx    context.Context
	cancel context.CancelFunc
	// work queues the partition's records for the worker, a fetch at a
	// time. When a fetch comes while one waits there, it is held, and the
	// client stops fetching the partition (kgo keeps its position) until
	// the worker takes it: a destination behind holds one fetch of
	// memory, not its whole lag.
	work chan []*kgo.Record
	held []*kgo.Record // under runner.mu
}

func (r *runner) assigned(_ context.Context, cl *kgo.Client, gained map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return
	}
	ps := gained[r.names.Notifications]
	for _, p := range ps {
		if old := r.owned[p]; old != nil {
			old.cancel()
		}
		ctx, cancel := context.WithCancel(r.base)
		part := &partition{id: p, ctx: ctx, cancel: cancel, work: make(chan []*kgo.Record, 1)}
		r.owned[p] = part
		r.workers.Go(func() { r.work(part) })
	}
	// A partition taken away while its worker had it is still paused.
	cl.ResumeFetchPartitions(map[string][]int32{r.names.Notifications: ps})
}

func (r *runner) revoked(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range lost[r.names.Notifications] {
		if part := r.owned[p]; part != nil {
			part.cancel()
			delete(r.owned, p)
		}
	}
}

// owner returns this copy's ownership of partition p, nil if it has none.
func (r *runner) owner(p int32) *partition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.owned[p]
}

// outcome of handling one notification.
type outcome int

const (
	handled     outcome = iota // nothing sent: not wanted, or not a notification
	finished                   // delivered, or failed and announced: commit now
	interrupted                // the partition was taken away, or the run ends: do not commit
	disabled                   // 410 Gone: stop the destination
)

func (r *runner) run() {
	r.log.Info("sink started", "type", r.d.Type, "group", Group(r.names, r.d.Name))
	ctx := r.base
	for {
		fetches := r.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			if context.Cause(ctx) == errGone {
				r.log.Error("destination disabled until the notifier restarts: it answered 410 Gone")
			}
			return
		}
		closed := false
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, kgo.ErrClientClosed) {
				closed = true
				return
			}
			if !errors.Is(err, context.Canceled) {
				r.log.Warn("fetch", "topic", topic, "partition", p, "err", err)
			}
		})
		if closed {
			return
		}
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) > 0 {
				r.queue(p.Partition, p.Records)
			}
		})
	}
}

// queue gives recs, a fetch of partition p, to its worker; a partition
// this copy no longer owns is left to its next owner, which reads it from
// the last commit.
func (r *runner) queue(p int32, recs []*kgo.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	part := r.owned[p]
	if part == nil {
		return
	}
	if part.held == nil {
		select {
		case part.work <- recs:
			return
		default: // a fetch waits already: hold this one, fetch no more
		}
	}
	// Behind what is held, even if the worker has emptied its queue
	// meanwhile: a fetch that came before the pause took effect keeps
	// its place in the partition's order.
	part.held = append(part.held, recs...)
	r.cl.PauseFetchPartitions(map[string][]int32{r.names.Notifications: {p}})
}

// next moves the fetch held for part, if any, into its queue once the
// queue is empty, and lets the client fetch the partition again.
func (r *runner) next(part *partition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owned[part.id] != part || part.held == nil || len(part.work) > 0 {
		return
	}
	part.work <- part.held
	part.held = nil
	r.cl.ResumeFetchPartitions(map[string][]int32{r.names.Notifications: {part.id}})
}

// errGone ends a destination's run: it answered 410 Gone.
var errGone = errors.New("the destination answered 410 Gone")

// stopWorkers waits for the partitions' workers, which end with the run
// (base), having committed what they delivered: before the client leaves
// the group, so that those commits land.
func (r *runner) stopWorkers() {
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
	r.workers.Wait()
}

// work delivers the records of part, a fetch at a time, until the
// partition is taken away or the run ends.
func (r *runner) work(part *partition) {
	for {
		select {
		case <-part.ctx.Done():
			return
		case recs := <-part.work:
			if !r.deliverAll(part, recs) {
				return
			}
			r.next(part)
		}
	}
}

// deliverAll handles recs, records of part in order, and commits the
// progress: at once after each notification delivered (or failed for
// good), and at the end for those the destination does not want. It
// returns false if the partition was taken away, the run ended, or the
// destination is gone.
func (r *runner) deliverAll(part *partition, recs []*kgo.Record) bool {
	var last *kgo.Record // handled, not committed yet
	for _, rec := range recs {
		switch r.handle(part.ctx, rec) {
		case handled:
			last = rec
		case finished:
			r.commit(part, rec)
			last = nil
		case interrupted:
			// What was handled before it may still be committed.
			if last != nil {
				r.commit(part, last)
			}
			return false
		case disabled:
			r.disable(errGone)
			return false
		}
	}
	if last != nil {
		r.commit(part, last)
	}
	return true
}

// commit commits rec, the last record part's worker handled. A commit
// that fails is tried again until it lands or this copy no longer has the
// partition under that ownership (a partition taken away and given back
// is another, whose progress may have moved on in another copy
// meanwhile): nothing more of a partition is delivered before its
// progress is recorded, so a copy that lost its partitions without
// knowing it yet (it was frozen, or cut off) delivers at most the one
// notification it had in flight, not those still in its buffers. It
// outlives the partition's context briefly: what was delivered before a
// stop is committed once more, not delivered again.
func (r *runner) commit(part *partition, rec *kgo.Record) {
	wait := commitRetryMin
	for r.owner(part.id) == part {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(part.ctx), 5*time.Second)
		err := r.cl.CommitRecords(cctx, rec)
		cancel()
		if err == nil {
			return
		}
		if part.ctx.Err() != nil {
			// A restart delivers it again, for the receiver to drop.
			r.log.Warn("commit delivery progress at the stop", "partition", part.id, "err", err)
			return
		}
		r.log.Warn("commit delivery progress; trying again", "partition", part.id, "err", err, "in", wait)
		// Real time, not cfg.Clock: this waits on the broker, not on the
		// destination's schedule.
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-part.ctx.Done():
		}
		t.Stop()
		wait = min(2*wait, commitRetryMax)
	}
}

// The waits between two commits of the delivery progress that failed.
const (
	commitRetryMin = 100 * time.Millisecond
	commitRetryMax = 5 * time.Second
)

// handle delivers one record of the notifications topic, if the
// destination wants it.
func (r *runner) handle(ctx context.Context, rec *kgo.Record) outcome {
	if rec.Value == nil {
		return handled
	}
	n, err := records.DecodeNotification(rec.Value)
	if err != nil {
		r.log.Warn("skipping a notification that cannot be decoded", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return handled
	}
	if !r.d.Wants(n, r.labels) {
		return handled
	}
	f := r.deliver(ctx, n)
	switch {
	case f == nil:
		r.log.Debug("delivered", "notification", n.Envelope.ID, "type", notifier.TypePrefix+n.Kind)
		if r.cfg.Observer != nil {
			r.cfg.Observer.Delivered(r.d.Name)
		}
		return finished
	case ctx.Err() != nil:
		return interrupted
	}
	if r.cfg.Observer != nil {
		r.cfg.Observer.Failed(r.d.Name)
	}
	r.log.Error("delivery failed", "notification", n.Envelope.ID, "type", notifier.TypePrefix+n.Kind, "status", f.status, "reason", f.reason)
	if n.Kind == KindDeliveryFailed {
		// Announcing it would make a notification that may fail in turn,
		// here or elsewhere, and so on: failures do not feed on failures.
		r.log.Warn("not announcing the failure to deliver a failure notification", "notification", n.Envelope.ID)
	} else if !r.announce(ctx, notifier.DeliveryFailed(n, r.d.Name, f.status, f.reason, r.cfg.Clock.Now())) {
		return interrupted
	}
	if f.gone {
		return disabled
	}
	return finished
}

// announce writes a failure notification, trying until it is written or
// ctx ends; it reports whether it was written. The offset of the
// notification that failed is committed only after: a restart before
// tries that notification, and announces its failure, again (under the
// same ID).
func (r *runner) announce(ctx context.Context, note records.Notification) bool {
	rec, err := notifier.Record(r.names, note)
	if err != nil {
		r.log.Error("encode the failure notification", "err", err)
		return true // never encodable: waiting would hold the partition for ever
	}
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := r.producer.ProduceSync(pctx, rec).FirstErr()
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		r.log.Warn("write the failure notification; trying again", "attempt", attempt, "err", err)
		select {
		case <-r.cfg.Clock.After(r.backoff(attempt)):
		case <-ctx.Done():
			return false
		}
	}
}

// failure is why a delivery finally failed.
type failure struct {
	status int // the last HTTP status; 0: no answer
	reason string
	gone   bool // 410: the destination is disabled
}

// attemptResult is what one request got.
type attemptResult struct {
	status     int
	retryAfter time.Duration // from a 429's Retry-After; 0: none
	retry      bool
	err        string // what went wrong, for the logs and the failure
}

// deliver makes up to MaxAttempts requests for n. It returns nil once one
// succeeded, or why it finally failed; when ctx ends first it returns a
// failure that the caller ignores (ctx tells).
func (r *runner) deliver(ctx context.Context, n records.Notification) *failure {
	body, contentType, err := r.body(n)
	if err != nil {
		return &failure{reason: fmt.Sprintf("encode the request: %v", err)}
	}
	for attempt := 1; ; attempt++ {
		res := r.attempt(ctx, n.Envelope.ID, body, contentType)
		switch {
		case ctx.Err() != nil:
			return &failure{reason: ctx.Err().Error()}
		case res.status/100 == 2:
			return nil
		case res.status == http.StatusGone:
			return &failure{status: res.status, gone: true,
				reason: "the destination answered 410 Gone: it is disabled until the notifier restarts, and delivery resumes from this notification then"}
		case !res.retry:
			return &failure{status: res.status, reason: res.err}
		case attempt >= r.d.MaxAttempts:
			return &failure{status: res.status, reason: fmt.Sprintf("gave up after %d attempts, the last: %s", attempt, res.err)}
		}
		wait := r.backoff(attempt)
		if res.retryAfter > 0 {
			wait = min(res.retryAfter, r.d.MaxBackoff)
		}
		r.log.Warn("delivery attempt failed; trying again", "notification", n.Envelope.ID, "attempt", attempt, "status", res.status, "err", res.err, "wait", wait)
		select {
		case <-r.cfg.Clock.After(wait):
		case <-ctx.Done():
			return &failure{reason: ctx.Err().Error()}
		}
	}
}

// body returns the request body of n for the destination's type.
func (r *runner) body(n records.Notification) ([]byte, string, error) {
	if r.d.Type == TypeSlack {
		b, err := SlackMessage(n, r.dashboard)
		return b, "application/json", err
	}
	b, err := CloudEventJSON(n, notifier.Source(r.names.Namespace))
	return b, CloudEventContentType, err
}

// attempt makes one request, within the destination's timeout.
func (r *runner) attempt(ctx context.Context, id string, body []byte, contentType string) attemptResult {
	rctx, cancel := context.WithTimeout(ctx, r.d.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, r.d.URL, bytes.NewReader(body))
	if err != nil {
		return attemptResult{err: "build the request: " + redact(err, r.d.URL)}
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", "flotilla-notifier")
	if r.d.Type == TypeWebhook {
		SignHeaders(req.Header, r.d.Secrets, id, r.cfg.Clock.Now(), body)
	}
	resp, err := r.cfg.HTTPClient.Do(req)
	if err != nil {
		if ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
			return attemptResult{retry: true, err: fmt.Sprintf("no answer within the timeout of %v", r.d.Timeout)}
		}
		return attemptResult{retry: true, err: redact(err, r.d.URL)}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // so the connection is reused
	res := attemptResult{status: resp.StatusCode}
	if resp.StatusCode/100 == 2 {
		return res
	}
	res.err = "HTTP " + resp.Status
	if s := strings.TrimSpace(string(snippet)); s != "" {
		res.err += ": " + strings.ToValidUTF8(s, "?")
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		res.retry = true
		res.retryAfter = retryAfter(resp.Header.Get("Retry-After"), r.cfg.Clock.Now())
	case resp.StatusCode/100 == 5:
		res.retry = true
	case resp.StatusCode/100 == 3:
		res.err += " (redirects are not followed: give the final URL)"
	}
	return res
}

// backoff is the wait after the attempt-th failure: MinBackoff doubling
// with each attempt up to MaxBackoff, of which a random half is taken off
// ("equal jitter"), so that copies failing together do not retry together.
func (r *runner) backoff(attempt int) time.Duration {
	d := r.d.MinBackoff
	for i := 1; i < attempt && d < r.d.MaxBackoff; i++ {
		d *= 2 // doubling, not shifting by attempt: no overflow
	}
	d = min(d, r.d.MaxBackoff)
	half := d / 2
	return half + rand.N(half+1)
}

// retryAfter reads a Retry-After header, seconds or an HTTP date; 0 when
// there is none or it cannot be read.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if at, err := http.ParseTime(v); err == nil && at.After(now) {
		return at.Sub(now)
	}
	return 0
}

// redact removes the destination's URL from an error: a Slack URL is a
// secret, and net/http's errors repeat it.
func redact(err error, url string) string {
	return strings.ReplaceAll(err.Error(), url, "<the destination's URL>")
}
