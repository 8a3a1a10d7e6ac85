package planner

import (
	"context"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
)

// seenRequests remembers the requests read in the last two windows of
// log time, by request ID: a signed request produced again is refused by
// its ID within that span, and by its time (trust.CheckWindow) after it.
// A request read again at the same offset (after an aborted transaction)
// is not a replay of itself.
type seenRequests struct {
	at    map[string]seenAt
	order []string // IDs in the order seen, to forget the old ones
}

type seenAt struct {
	partition int32
	offset    int64
	appended  time.Time
}

// replayed returns why request req, read as r, is a replay, or nil. It
// is called with the state's lock held.
func (p *planner) replayed(r *kgo.Record, req records.Request) error {
	id := req.Envelope.ID
	if id == "" {
		return nil
	}
	s := &p.seen
	span := p.replaySpan()
	for len(s.order) > 0 && r.Timestamp.Sub(s.at[s.order[0]].appended) > span {
		delete(s.at, s.order[0])
		s.order = s.order[1:]
	}
	if first, ok := s.at[id]; ok && (first.partition != r.Partition || first.offset != r.Offset) {
		return &trust.Error{Kind: trust.ErrReplayed, Msg: "request " + id + " by " + req.Envelope.Principal +
			" replayed: its ID was first read at " + records.DeadLetterKey(r.Topic, first.partition, first.offset) + "; a request is acted on once"}
	}
	s.note(id, r)
	if w, ok := p.state.Workflows[id]; ok && req.Submit != nil && w.State != "" {
		// Read before this planner's start: the workflow says so.
		return &trust.Error{Kind: trust.ErrReplayed, Msg: "request " + id + " by " + req.Envelope.Principal +
			" replayed: workflow " + id + " was already decided (" + string(w.State) + "); a request is acted on once"}
	}
	return nil
}

// note remembers the first reading of request id, as r.
func (s *seenRequests) note(id string, r *kgo.Record) {
	if s.at == nil {
		s.at = map[string]seenAt{}
	}
	if _, ok := s.at[id]; !ok {
		s.at[id] = seenAt{r.Partition, r.Offset, r.Timestamp}
		s.order = append(s.order, id)
	}
}

// replaySpan is how far back the planner remembers requests by their ID:
// two windows, after which a replay is refused by its time.
func (p *planner) replaySpan() time.Duration {
	if w := p.cfg.Trust.Window; w > 0 {
		return 2 * w
	}
	return 2 * trust.DefaultWindow
}

// rememberRequests reads the requests of partitions appended within the
// replay span, so that a planner that just started, or took partitions
// over, refuses a replay of a request its predecessor read: it would
// otherwise know only those it reads itself. Callers hold p.mu.
func (p *planner) rememberRequests(ctx context.Context, partitions []int32) error {
	if len(partitions) == 0 || !p.trust.Required() {
		return nil
	}
	since := p.cfg.Clock.Now().Add(-p.replaySpan())
	var ids []string
	var at []*kgo.Record
	err := logtable.ReadToEnd(ctx, p.cfg.Backbone.Opts(), p.names.Requests, partitions, func(r *kgo.Record) {
		if r.Value == nil {
			return
		}
		if req, err := records.DecodeRequest(r.Value); err == nil && req.Envelope.ID != "" {
			ids, at = append(ids, req.Envelope.ID), append(at, r)
		}
	}, logtable.Since(since))
	if err != nil {
		return err
	}
	// In append order (the broker's clock), so that the oldest are
	// forgotten first.
	idx := make([]int, len(at))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return at[a].Timestamp.Compare(at[b].Timestamp) })
	for _, i := range idx {
		p.seen.note(ids[i], at[i])
	}
	return nil
}
