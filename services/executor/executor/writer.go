package executor

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/auditchain"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// errWriterClosed is returned by writes to a writer that has stopped.
var errWriterClosed = errors.New("partition writer stopped")

// writer writes everything the executor records for one partition of the
// commands topic (claims, operation events, its lease) through one
// transactional producer whose ID is the partition's, not the instance's:
// when another executor takes the partition over, initialising the same
// ID fences this one at the broker, so nothing a former owner writes
// after the hand-off becomes visible to read-committed readers, and a key
// never has two writers. Concurrent writes are committed together, one
// transaction at a time.
type writer struct {
	cl   *kgo.Client
	reqs chan *writeReq
	// chains are the hash chains of the partition's operation records
	// (package auditchain): the writer links each record it commits, and
	// checkpoints the chains every checkpointEvery. They are rebuilt from
	// the log (the operations table) before the first is written.
	chains          *auditchain.Chains
	operations      string // the topic of the chained records
	checkpoints     string // the topic of the checkpoints
	checkpointEvery time.Duration
	now             func() time.Time
	checkpointed    time.Time   // when the writer's loop last checkpointed
	linked          atomic.Bool // set once the chains are rebuilt: checkpoints may go
	// stopped is closed when run returns, with err set if the producer
	// could no longer be used (fenced, or a transaction not ended).
	stopped chan struct{}
	err     error
}

type writeReq struct {
	recs []*kgo.Record
	done chan error
}

// newWriter makes the writer of a partition and initialises its producer
// ID, which fences the partition's previous owner. It fails if the
// producer cannot be initialised by ctx's end.
func newWriter(ctx context.Context, bb backbone.Config, transactionalID string) (*writer, error) {
	cl, err := bb.Client(
		kgo.TransactionalID(transactionalID),
		kgo.TransactionTimeout(time.Minute),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
	if err != nil {
		return nil, err
	}
	if _, _, err := cl.ProducerID(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("initialise the transactional producer %s: %w", transactionalID, err)
	}
	return &writer{cl: cl, reqs: make(chan *writeReq), stopped: make(chan struct{})}, nil
}

// run commits the writes it is given until ctx ends, then closes the
// producer. It returns the error that made the producer unusable, if any.
func (w *writer) run(ctx context.Context) error {
	defer func() {
		w.cl.Close()
		close(w.stopped)
	}()
	tick := time.NewTicker(w.checkpointEvery)
	defer tick.Stop()
	for {
		var batch []*writeReq
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if !w.linked.Load() || !w.chains.Dirty(nil) {
				continue
			}
		case r := <-w.reqs:
			batch = append(batch, r)
		}
	more:
		for len(batch) < 256 {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		err, fatal := w.commit(ctx, batch)
		for _, r := range batch {
			r.done <- err
		}
		if fatal {
			w.err = err
			return err
		}
	}
}

// commit writes a batch in one transaction. A failed produce aborts it
// (the writes fail, the writer carries on); a fenced producer or a
// transaction that cannot be ended is fatal.
func (w *writer) commit(ctx context.Context, batch []*writeReq) (err error, fatal bool) {
	if err := w.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err), true
	}
	promise := kgo.AbortingFirstErrPromise(w.cl)
	tx := w.chains.Begin()
	for _, r := range batch {
		for _, rec := range r.recs {
			if wf, ok := auditchain.Tagged(rec); ok && rec.Topic == w.operations {
				tx.Append(wf, auditchain.Operations, rec)
			}
			w.cl.Produce(ctx, rec, promise.Promise())
		}
	}
	if w.linked.Load() && (len(batch) == 0 || time.Since(w.checkpointed) >= w.checkpointEvery) {
		for _, cp := range tx.Checkpoints(w.now(), nil) {
			value, err := records.Encode(cp)
			if err != nil {
				promise.Promise()(nil, fmt.Errorf("encode checkpoint: %w", err))
				continue
			}
			w.cl.Produce(ctx, &kgo.Record{Topic: w.checkpoints, Key: []byte(topics.CheckpointKey(cp.WorkflowID, cp.Writer, cp.Bucket)), Value: value}, promise.Promise())
		}
		w.checkpointed = time.Now()
	}
	produceErr := promise.Err()
	defer func() {
		if err != nil {
			tx.Abort() // nothing of it is visible: the chains stay where they were
		}
	}()
	// End the transaction even when ctx has ended: left open it would
	// hold back read-committed readers until Kafka times it out.
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	endErr := w.cl.EndTransaction(endCtx, kgo.TransactionEndTry(produceErr == nil))
	switch {
	case endErr != nil:
		return fmt.Errorf("end transaction: %w", errors.Join(produceErr, endErr)), true
	case produceErr != nil:
		return fmt.Errorf("transaction aborted: %w", produceErr), backbone.FatalTxnError(produceErr)
	}
	return nil, false
}

// write writes recs in one transaction and returns once it is committed,
// with the records' offsets set; or fails, having written nothing visible.
func (w *writer) write(ctx context.Context, recs ...*kgo.Record) error {
	r := &writeReq{recs: recs, done: make(chan error, 1)}
	select {
	case w.reqs <- r:
	case <-w.stopped:
		if w.err != nil {
			return fmt.Errorf("%w: %w", errWriterClosed, w.err)
		}
		return errWriterClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-w.stopped: // run answers a batch before it stops: r.done has it
		return <-r.done
	case <-ctx.Done():
		return ctx.Err() // it may yet commit: every write is idempotent
	}
}
