package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/services/notifier/notifier"
)

// The event stream (GET /events) is how pages update without a reload.
// It carries two kinds of server-sent event:
//
//   - "notification": one record of the notifications topic, with an
//     event ID that is the stream's position in that topic after it
//     ("0:12,1:7,2:0": the next offset of every partition). A browser
//     that loses the connection reconnects with that ID as Last-Event-ID,
//     and the stream goes on from exactly there: nothing is missed and
//     nothing told twice. Without one, it starts at the topic's last
//     stable offsets, so a notification whose transaction is open as the
//     stream starts is still told once it commits.
//   - "changed": the model changed (no ID, so it does not move the
//     position); a page fetches its view again, at most once a second.
//     ?since=VERSION is the model's version the page was made from: if
//     the model moved on from it before the stream (re)opened, the first
//     "changed" comes at once.
//
// ?workflow=ID and ?cluster=ID keep the notifications about one rollout
// (and its rollback) or one cluster.

// Position is a place in the notifications topic: the next offset to read
// of each partition.
type Position map[int32]int64

// String encodes p as an event ID: "partition:offset" pairs, by partition.
func (p Position) String() string {
	parts := make([]string, 0, len(p))
	for _, partition := range slices.Sorted(maps.Keys(p)) {
		parts = append(parts, strconv.Itoa(int(partition))+":"+strconv.FormatInt(p[partition], 10))
	}
	return strings.Join(parts, ",")
}

// ParsePosition decodes an event ID made by Position.String.
func ParsePosition(s string) (Position, error) {
	p := Position{}
	for _, pair := range strings.Split(s, ",") {
		ps, os, ok := strings.Cut(pair, ":")
		partition, err1 := strconv.ParseInt(ps, 10, 32)
		offset, err2 := strconv.ParseInt(os, 10, 64)
		if !ok || err1 != nil || err2 != nil || partition < 0 || offset < 0 {
			return nil, fmt.Errorf("event ID %q: want partition:offset pairs separated by commas, found %q", s, pair)
		}
		p[int32(partition)] = offset
	}
	return p, nil
}

// Event is a notification as the event stream carries it.
type Event struct {
	ID         string            `json:"id"`
	Type       string            `json:"type"` // the CloudEvents type, io.flotilla.<kind>
	Kind       string            `json:"kind"`
	Severity   records.Severity  `json:"severity"`
	Time       time.Time         `json:"time"`
	WorkflowID string            `json:"workflowId,omitempty"`
	ClusterID  string            `json:"clusterId,omitempty"`
	Message    string            `json:"message"`
	Fields     map[string]string `json:"fields,omitempty"`
}

// changedEvery is the most often a stream tells a page to fetch its view
// again: often enough to look live, rarely enough that a fleet changing
// thousands of times a second costs each browser one fetch a second.
const changedEvery = time.Second

// keepAliveEvery is how often an idle stream sends a comment, so that
// proxies do not cut it.
const keepAliveEvery = 15 * time.Second

func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	names := d.cfg.Backbone.Names()
	rc := http.NewResponseController(w)
	keep := eventFilter(r.URL.Query().Get("workflow"), r.URL.Query().Get("cluster"))

	var since *uint64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			http.Error(w, fmt.Sprintf("since=%q: want the model version a page was made from, a whole number", v), http.StatusBadRequest)
			return
		}
		since = &n
	}
	var from Position
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		p, err := ParsePosition(id)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		from = p
	}
	if from == nil {
		ends, err := logtable.LastStableOffsets(ctx, d.cfg.Backbone.Opts(), names.Notifications, nil)
		if err != nil {
			http.Error(w, "notifications topic: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		from = ends
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var mu sync.Mutex // one writer at a time: the follower and the ticker
	write := func(s string) error {
		mu.Lock()
		defer mu.Unlock()
		if _, err := fmt.Fprint(w, s); err != nil {
			return err
		}
		return rc.Flush()
	}
	// The retry hint, and the position now, so that a client that
	// reconnects before any notification came misses none either.
	if err := write("retry: 2000\nid: " + from.String() + "\nevent: position\ndata: {}\n\n"); err != nil {
		return
	}

	ctx, cancel := context.WithCancel(ctx)
	told := make(chan struct{})
	go func() {
		defer close(told)
		d.tell(ctx, since, write)
	}()
	defer func() { // no write may outlive the handler
		cancel()
		<-told
	}()

	pos := maps.Clone(from)
	offsets := make(map[int32]kgo.Offset, len(from))
	for p, o := range from {
		offsets[p] = kgo.NewOffset().At(o)
	}
	err := logtable.Follow(ctx, d.cfg.Backbone.Opts(), names.Notifications, offsets, func(rec *kgo.Record) bool {
		pos[rec.Partition] = rec.Offset + 1
		if rec.Value == nil {
			return false
		}
		n, err := records.DecodeNotification(rec.Value)
		if err != nil {
			d.log.Debug("event stream skips a notification it cannot read", "partition", rec.Partition, "offset", rec.Offset, "err", err)
			return false
		}
		if !keep(n) {
			return false
		}
		data, err := json.Marshal(Event{ID: n.Envelope.ID, Type: notifier.TypePrefix + n.Kind, Kind: n.Kind, Severity: n.Severity,
			Time: n.Envelope.Time, WorkflowID: n.WorkflowID, ClusterID: n.ClusterID, Message: n.Message, Fields: n.Fields})
		if err != nil {
			return false
		}
		return write("id: "+pos.String()+"\nevent: notification\ndata: "+string(data)+"\n\n") != nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		d.log.Warn("event stream ended", "err", err)
	}
}

// tell sends a "changed" event when the model changes, at most once every
// changedEvery, and a keep-alive comment when nothing happens. since, if
// given, is the version the client shows; a model already past it is a
// change to tell at once.
func (d *Dashboard) tell(ctx context.Context, since *uint64, write func(string) error) {
	changed, seen := d.model.Changed()
	if since != nil && *since != seen {
		seen = *since
		changed = closedChannel
	}
	keepAlive := time.NewTicker(keepAliveEvery)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-keepAlive.C:
			if write(": keep-alive\n\n") != nil {
				return
			}
		case <-changed:
			var now uint64
			changed, now = d.model.Changed()
			if now == seen {
				continue
			}
			seen = now
			if write("event: changed\ndata: {\"version\":"+strconv.FormatUint(now, 10)+"}\n\n") != nil {
				return
			}
			select { // let changes gather
			case <-ctx.Done():
				return
			case <-time.After(changedEvery):
			}
		}
	}
}

// closedChannel is ready at once: a change already to tell.
var closedChannel = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// eventFilter keeps the notifications about a workflow (and its
// rollback) and about a cluster, when given.
func eventFilter(workflow, cluster string) func(records.Notification) bool {
	return func(n records.Notification) bool {
		if workflow != "" && n.WorkflowID != workflow && !strings.HasPrefix(n.WorkflowID, workflow+"/") {
			return false
		}
		if cluster != "" && n.ClusterID != cluster {
			return false
		}
		return true
	}
}
