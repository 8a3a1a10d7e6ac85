package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// benchHeader marks the records the bench writes itself, so that the
// observer tells them from the services' output.
const benchHeader = "flotilla-bench"

// observer follows a namespace's topics from outside the services, as any
// read-committed consumer can: the commands sent, the operations finished,
// the planner's workflow rows, the clusters with a health signal, and
// when each topic first showed a record of a service. Waits on it are
// conditions over what it has seen.
type observer struct {
	names topics.Names
	cl    *kgo.Client

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced whenever records were applied
	err      error         // why following stopped
	sent     map[string]bool
	finished map[string]bool
	inFlight int                    // commands seen and not finished
	done     map[string]int         // workflow → operations succeeded
	headers  map[string][]header    // workflow → its header rows, in log order
	ready    map[string][]string    // workflow → clusters whose target row says succeeded
	health   map[string]bool        // clusters with a health signal
	first    map[string]time.Time   // topic → when its first service record was seen
	finishes map[string][]time.Time // workflow → times of its operations' ends
}

// header is one header row of a workflow, as the planner committed it.
type header struct {
	state   records.WorkflowState
	seq     int64
	targets int
	written time.Time // the record's timestamp
	seen    time.Time // when the observer read it
}

// observe starts following topics of cfg's namespace: from their start,
// or from their end now when fromEnd is set. It runs until ctx ends.
func observe(ctx context.Context, cfg backbone.Config, fromEnd bool, topicNames ...string) (*observer, error) {
	o := &observer{
		names: cfg.Names(), changed: make(chan struct{}),
		sent: map[string]bool{}, finished: map[string]bool{}, done: map[string]int{},
		headers: map[string][]header{}, ready: map[string][]string{}, health: map[string]bool{},
		first: map[string]time.Time{}, finishes: map[string][]time.Time{},
	}
	opts := []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadCommitted())}
	if fromEnd {
		ends, err := listEnds(ctx, cfg, topicNames...)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.ConsumePartitions(ends.KOffsets()))
	} else {
		opts = append(opts, kgo.ConsumeTopics(topicNames...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	}
	cl, err := cfg.Client(opts...)
	if err != nil {
		return nil, err
	}
	o.cl = cl
	go o.run(ctx)
	return o, nil
}

// listEnds returns the offsets at which each partition of the topics ends now.
func listEnds(ctx context.Context, cfg backbone.Config, topicNames ...string) (kadm.ListedOffsets, error) {
	cl, err := cfg.Client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	listed, err := kadm.NewClient(cl).ListEndOffsets(ctx, topicNames...)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("end offsets: %w", err)
	}
	return listed, nil
}

func (o *observer) run(ctx context.Context) {
	defer o.cl.Close()
	for {
		fetches := o.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			o.stop(ctx.Err())
			return
		}
		now := time.Now()
		o.mu.Lock()
		fetches.EachError(func(t string, p int32, err error) {
			if o.err == nil {
				o.err = fmt.Errorf("observe %s/%d: %w", t, p, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) { o.apply(r, now) })
		close(o.changed)
		o.changed = make(chan struct{})
		o.mu.Unlock()
	}
}

func (o *observer) stop(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
	close(o.changed)
	o.changed = make(chan struct{})
}

// apply takes one record in; o.mu is held.
func (o *observer) apply(r *kgo.Record, now time.Time) {
	if r.Value == nil || fromBench(r) {
		return
	}
	if _, ok := o.first[r.Topic]; !ok {
		o.first[r.Topic] = now
	}
	switch r.Topic {
	case o.names.Commands:
		if c, err := records.DecodeCommand(r.Value); err == nil && !o.sent[c.ID] {
			o.sent[c.ID] = true
			if !o.finished[c.ID] {
				o.inFlight++
			}
		}
	case o.names.Operations:
		ev, err := records.DecodeOperationEvent(r.Value)
		if err != nil || !ev.Status.Terminal() || o.finished[ev.CommandID] {
			return
		}
		o.finished[ev.CommandID] = true
		if o.sent[ev.CommandID] {
			o.inFlight--
		}
		o.finishes[ev.WorkflowID] = append(o.finishes[ev.WorkflowID], r.Timestamp)
		if ev.Status == records.OperationSucceeded {
			o.done[ev.WorkflowID]++
		}
	case o.names.Workflows:
		o.applyWorkflow(r, now)
	case o.names.Health:
		o.health[string(r.Key)] = true
	}
}

func (o *observer) applyWorkflow(r *kgo.Record, now time.Time) {
	wr, err := records.DecodeWorkflowRecord(r.Value)
	if err != nil {
		return
	}
	switch {
	case wr.Workflow != nil && !strings.Contains(string(r.Key), "/"):
		w := wr.Workflow
		o.headers[w.ID] = append(o.headers[w.ID], header{state: w.State, seq: w.Seq, targets: w.Targets, written: r.Timestamp, seen: now})
	case wr.Target != nil && wr.Target.State == records.TargetSucceeded:
		o.ready[wr.Target.WorkflowID] = append(o.ready[wr.Target.WorkflowID], wr.Target.ClusterID)
	}
}

func fromBench(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == benchHeader {
			return true
		}
	}
	return false
}

// last returns the latest header row of workflow id.
func (o *observer) last(id string) (header, bool) {
	hs := o.headers[id]
	if len(hs) == 0 {
		return header{}, false
	}
	return hs[len(hs)-1], true
}

// wait waits until cond holds (called with o.mu held, so that it reads
// the observer's fields), ctx ends, following fails, or a service of svc
// (if not nil) exits.
func (o *observer) wait(ctx context.Context, svc *services, cond func() bool) error {
	for {
		o.mu.Lock()
		ok, ch, err := cond(), o.changed, o.err
		o.mu.Unlock()
		if ok {
			return nil
		}
		if err != nil {
			return err
		}
		var down <-chan struct{}
		if svc != nil {
			down = svc.down
		}
		select {
		case <-ch:
		case <-down:
			return svc.exited()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
