package planner

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

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
	if s.at == nil {
		s.at = map[string]seenAt{}
	}
	span := 2 * p.cfg.Trust.Window
	if span <= 0 {
		span = 2 * trust.DefaultWindow
	}
	for len(s.order) > 0 && r.Timestamp.Sub(s.at[s.order[0]].appended) > span {
		delete(s.at, s.order[0])
		s.order = s.order[1:]
	}
	if first, ok := s.at[id]; ok && (first.partition != r.Partition || first.offset != r.Offset) {
		return &trust.Error{Kind: trust.ErrReplayed, Msg: "request " + id + " by " + req.Envelope.Principal +
			" replayed: its ID was first read at " + records.DeadLetterKey(r.Topic, first.partition, first.offset) + "; a request is acted on once"}
	}
	if _, ok := s.at[id]; !ok {
		s.at[id] = seenAt{r.Partition, r.Offset, r.Timestamp}
		s.order = append(s.order, id)
	}
	if w, ok := p.state.Workflows[id]; ok && req.Submit != nil && w.State != "" {
		// Read before this planner's start: the workflow says so.
		return &trust.Error{Kind: trust.ErrReplayed, Msg: "request " + id + " by " + req.Envelope.Principal +
			" replayed: workflow " + id + " was already decided (" + string(w.State) + "); a request is acted on once"}
	}
	return nil
}
