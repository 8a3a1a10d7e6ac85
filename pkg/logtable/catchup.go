// Package logtable materialises tables from compacted Kafka topics: the
// pattern of Kafka Streams state stores and goka tables. A service keeps its
// state in memory, rebuilt from the log start on every start, and acts only
// once every table it needs has caught up with the end of the log as it was
// when the service started.
//
// "Caught up" is measured against end offsets captured once, at the start:
// the last stable offsets (read-committed), so a transaction still open at
// that moment is neither waited for nor read — unless ReadToEnd is told to
// wait for it (AwaitOpenTransactions), as a new owner of partitions must. Transaction markers occupy
// offsets too, so reading counts them: a partition whose log ends in a
// marker is caught up once the marker is read.
package logtable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// stallCheck is how long catching up may go without progress on a pending
// partition before the partition leader is asked directly where a reader
// stands (see catchUp.probe).
const stallCheck = 250 * time.Millisecond

// readerPartitionBytes is the most a reader fetches of one partition at a
// time.
const readerPartitionBytes = 256 << 10

// readerOpts are the consumer options every reader of a table uses, after
// the caller's own options.
func readerOpts(clientOpts []kgo.Opt, extra ...kgo.Opt) []kgo.Opt {
	opts := slices.Clone(clientOpts)
	opts = append(opts,
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // markers occupy offsets: count them
		// A service runs many readers (the executor two per partition it
		// owns), each holding its last fetch: small fetches keep that
		// small, and cost little on catching up (a fetch is a local round
		// trip; the broker still returns a batch larger than this whole).
		kgo.FetchMaxPartitionBytes(readerPartitionBytes),
	)
	return append(opts, extra...)
}

// catchUp tracks how far each partition of one topic is from the end offsets
// captured when reading began.
type catchUp struct {
	topic      string
	clientOpts []kgo.Opt
	ends       map[int32]int64 // every captured partition → its end offset
	next       map[int32]int64 // pending partitions → next offset expected
	progress   time.Time       // when a pending partition last moved
	prober     *kgo.Client     // made on the first probe, closed when done
}

// capture lists the end offsets (last stable offsets) and then the start
// offsets of partitions of topic (nil: all). A partition whose end is not past
// its start has nothing to read and is not pending.
func capture(ctx context.Context, cl *kgo.Client, clientOpts []kgo.Opt, topic string, partitions []int32) (*catchUp, error) {
	return captureWith(ctx, cl, clientOpts, topic, partitions, readConfig{})
}

// captureWith is capture with ReadToEnd's options.
func captureWith(ctx context.Context, cl *kgo.Client, clientOpts []kgo.Opt, topic string, partitions []int32, rc readConfig) (*catchUp, error) {
	adm := kadm.NewClient(cl)
	// Ends first: if retention moves the start in between, start >= end
	// and the partition is rightly seen as empty.
	ends, err := endsOf(ctx, adm, topic, partitions, rc.awaitOpen)
	if err != nil {
		return nil, err
	}
	if rc.onEnds != nil {
		rc.onEnds(maps.Clone(ends))
	}
	if rc.awaitOpen {
		if err := awaitStable(ctx, adm, topic, ends); err != nil {
			return nil, err
		}
	}
	starts, err := listOffsets(ctx, topic, adm.ListStartOffsets)
	if err != nil {
		return nil, fmt.Errorf("list start offsets of %s: %w", topic, err)
	}
	if !rc.since.IsZero() {
		after, err := listOffsets(ctx, topic, func(ctx context.Context, topics ...string) (kadm.ListedOffsets, error) {
			return adm.ListOffsetsAfterMilli(ctx, rc.since.UnixMilli(), topics...)
		})
		if err != nil {
			return nil, fmt.Errorf("list offsets of %s after %s: %w", topic, rc.since.Format(time.RFC3339), err)
		}
		for p, o := range after {
			if o >= 0 {
				starts[p] = max(starts[p], o)
			}
		}
	}
	c := &catchUp{
		topic:      topic,
		clientOpts: clientOpts,
		ends:       ends,
		next:       make(map[int32]int64),
		progress:   time.Now(),
	}
	for p, end := range ends {
		if start := starts[p]; start < end {
			c.next[p] = start
		}
	}
	return c, nil
}

// awaitStable waits until the last stable offset of every partition in ends
// has reached its end there (a high watermark): until every transaction
// that wrote below those ends has committed or aborted. It polls with
// backoff, and fails when ctx ends first.
func awaitStable(ctx context.Context, adm *kadm.Client, topic string, ends map[int32]int64) error {
	began := time.Now()
	warned := false
	for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, 250*time.Millisecond) {
		stable, err := listOffsets(ctx, topic, adm.ListCommittedOffsets)
		if err != nil {
			return fmt.Errorf("list last stable offsets of %s: %w", topic, err)
		}
		var open []int32
		for p, end := range ends {
			if stable[p] < end {
				open = append(open, p)
			}
		}
		if len(open) == 0 {
			return nil
		}
		slices.Sort(open)
		if !warned && time.Since(began) >= openWarning {
			warned = true
			slog.Default().Warn("still waiting for transactions open on table partitions to end; a producer that stopped without ending its transaction holds them until the transaction times out",
				"topic", topic, "partitions", open, "waited", time.Since(began).Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the transactions open on %s partitions %v to end: %w", topic, open, ctx.Err())
		case <-time.After(backoff):
		}
	}
}

// openWarning is how long AwaitOpenTransactions waits before it says so.
const openWarning = 5 * time.Second

// listOffsets lists offsets of topic with list, retrying while the broker
// answers with a retriable error (such as a leader election in progress).
func listOffsets(ctx context.Context, topic string, list func(context.Context, ...string) (kadm.ListedOffsets, error)) (map[int32]int64, error) {
	for backoff := 20 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		listed, err := list(ctx, topic)
		if ctx.Err() != nil {
			return nil, ctx.Err() // whatever failed, this is why
		}
		if err == nil {
			offsets := make(map[int32]int64)
			for p, o := range listed[topic] {
				if o.Err != nil {
					err = o.Err
					break
				}
				offsets[p] = o.Offset
			}
			if err == nil {
				return offsets, nil
			}
		}
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("topic %s does not exist: %w", topic, err)
		}
		if !kerr.IsRetriable(err) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
	}
}

func (c *catchUp) done() bool { return len(c.next) == 0 }

// close releases the prober, if any.
func (c *catchUp) close() {
	if c.prober != nil {
		c.prober.Close()
		c.prober = nil
	}
}

func (c *catchUp) pending() []int32 { return slices.Sorted(maps.Keys(c.next)) }

// advance records that partition p has been read up to (not including) next.
func (c *catchUp) advance(p int32, next int64) {
	cur, ok := c.next[p]
	if !ok || next <= cur {
		return
	}
	c.progress = time.Now()
	if next >= c.ends[p] {
		delete(c.next, p)
		return
	}
	c.next[p] = next
}

// poll waits for the next fetch from cl and hands each data record to apply,
// in offset order per partition, with caughtUp telling whether every
// partition had reached its captured end before that record. Control records
// count towards progress but are not applied; aborted records never arrive
// (read-committed). While catching up, poll returns at least every
// stallCheck so that a stalled partition gets probed. It fails when ctx ends
// or a partition cannot be fetched anymore.
func (c *catchUp) poll(ctx context.Context, cl *kgo.Client, log *slog.Logger, apply func(r *kgo.Record, caughtUp bool)) error {
	pollCtx := ctx
	if !c.done() {
		var cancel context.CancelFunc
		pollCtx, cancel = context.WithDeadline(ctx, c.progress.Add(stallCheck))
		defer cancel()
	}
	fetches := cl.PollFetches(pollCtx)
	if err := ctx.Err(); err != nil {
		return err
	}
	if fetches.IsClientClosed() {
		return kgo.ErrClientClosed
	}
	if err := fetchErrors(fetches, log); err != nil {
		return err
	}
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		for _, r := range fp.Records {
			if !r.Attrs.IsControl() {
				apply(r, c.done())
			}
			c.advance(r.Partition, r.Offset+1)
		}
	})
	if !c.done() && time.Since(c.progress) >= stallCheck {
		c.progress = time.Now()
		if err := c.probe(ctx); err != nil && ctx.Err() == nil {
			log.Debug("probing stalled table partitions", "topic", c.topic, "partitions", c.pending(), "err", err)
		}
	}
	if c.done() {
		c.close()
	}
	return nil
}

// probe asks the leader of each pending partition what a read-committed
// reader at the partition's next offset would read up to the captured end.
//
// The consumer's own position is not exposed by kgo, and record offsets alone
// do not always show it: records that are filtered out — an aborted
// transaction whose abort marker lies past the captured end (because another
// transaction was open at capture time), or records removed by compaction
// right below it — advance the consumer's position without being delivered.
// Without the probe such a partition would wait for the open transaction or
// for new data. When the probe finds no data record before the end, the
// partition is caught up; when it finds only markers, progress moves past them.
//
// The probe uses a client of its own: on the consumer's connection it would
// queue behind the consumer's long-polling fetch.
func (c *catchUp) probe(ctx context.Context) error {
	if c.prober == nil {
		cl, err := kgo.NewClient(c.clientOpts...)
		if err != nil {
			return err
		}
		c.prober = cl
	}
	cl := c.prober
	md, err := kadm.NewClient(cl).Metadata(ctx, c.topic)
	if err != nil {
		return err
	}
	td, ok := md.Topics[c.topic]
	if !ok || td.Err != nil {
		return fmt.Errorf("no metadata for %s: %v", c.topic, td.Err)
	}
	for _, p := range c.pending() {
		pd, ok := td.Partitions[p]
		if !ok {
			continue
		}
		from, end := c.next[p], c.ends[p]
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis = 0
		req.IsolationLevel = 1 // read committed
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = c.topic, td.ID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, from, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		kresp, err := cl.Broker(int(pd.Leader)).Request(ctx, req)
		if err != nil {
			return err
		}
		resp := kresp.(*kmsg.FetchResponse)
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
			continue // leader moved or similar: the next probe will do
		}
		rpr := &resp.Topics[0].Partitions[0]
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
			KeepControlRecords: true,
			Offset:             from,
			IsolationLevel:     kgo.ReadCommitted(),
			Topic:              c.topic,
			Partition:          p,
		}, rpr, kgo.DefaultDecompressor(), nil)
		if slices.ContainsFunc(fp.Records, func(r *kgo.Record) bool { return !r.Attrs.IsControl() && r.Offset < end }) {
			continue // data still to come: the consumer will deliver it
		}
		if len(rpr.RecordBatches) == 0 && rpr.LastStableOffset >= end {
			next = end // nothing readable at all in [from, end)
		}
		c.advance(p, next)
	}
	return nil
}

// ReadToEnd reads partitions (nil: every partition) of topic from the log
// start up to the end offsets captured when it is called — the last stable
// offsets, so a transaction open at that moment is not waited for — with
// read-committed isolation, and calls apply for every data record before
// those ends, in offset order per partition. Tombstones are applied too
// (Value == nil); transaction markers are counted but not applied, and
// records of aborted transactions never are.
//
// With AwaitOpenTransactions it waits for the transactions open when it is
// called to end, and reads what they committed (see there); OnEnds tells
// the caller the ends captured.
//
// clientOpts carry the connection settings (kgo.SeedBrokers, TLS, SASL...);
// they must not configure consuming. ReadToEnd creates its own client and
// closes it before returning. It returns nil once every partition has reached
// its captured end (at once for empty partitions or an empty topic), and an
// error if topic or a requested partition does not exist, if a partition
// cannot be fetched, or if ctx ends first.
func ReadToEnd(ctx context.Context, clientOpts []kgo.Opt, topic string, partitions []int32, apply func(*kgo.Record), opts ...ReadOption) error {
	var rc readConfig
	for _, o := range opts {
		o(&rc)
	}
	cl, err := kgo.NewClient(readerOpts(clientOpts)...)
	if err != nil {
		return fmt.Errorf("read %s: %w", topic, err)
	}
	defer cl.Close()
	c, err := captureWith(ctx, cl, clientOpts, topic, partitions, rc)
	if err != nil {
		return fmt.Errorf("read %s: %w", topic, err)
	}
	defer c.close()
	if c.done() {
		return nil
	}
	start := make(map[int32]kgo.Offset)
	for p, from := range c.next {
		start[p] = kgo.NewOffset().At(from)
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: start})
	log := slog.Default()
	for !c.done() {
		err := c.poll(ctx, cl, log, func(r *kgo.Record, _ bool) {
			if r.Offset < c.ends[r.Partition] {
				apply(r)
			}
		})
		if err != nil {
			return fmt.Errorf("read %s to its end offsets: %w", topic, err)
		}
	}
	return nil
}

// ReadOption configures ReadToEnd.
type ReadOption func(*readConfig)

type readConfig struct {
	awaitOpen bool                  // AwaitOpenTransactions
	onEnds    func(map[int32]int64) // OnEnds
	since     time.Time             // Since
}

// Since makes ReadToEnd start each partition at its first record whose
// timestamp is at t or later, instead of at the log start: for a reader
// that needs only the recent part of a long log.
func Since(t time.Time) ReadOption {
	return func(rc *readConfig) { rc.since = t }
}

// AwaitOpenTransactions makes ReadToEnd read what transactions open when
// it is called will have written, once they end: it captures the high
// watermarks rather than the last stable offsets, waits (polling with
// backoff) until each partition's last stable offset has reached its high
// watermark — every transaction below it has committed or aborted — and
// then reads up to the high watermarks, committed records only.
//
// A service that takes over partitions needs it when it rebuilds its state
// of them: the previous owner's last transaction may still be open, and
// the consumed offsets it commits (which a consumer fetching offsets with
// kgo.RequireStableFetchOffsets waits for) would make the new owner start
// after a batch whose outputs its state lacks. The wait lasts until the
// open transactions end, or time out on the broker (a producer that died
// without ending one; initialising its transactional ID again aborts it at
// once), or ctx ends: bound ctx accordingly.
func AwaitOpenTransactions() ReadOption {
	return func(rc *readConfig) { rc.awaitOpen = true }
}

// OnEnds sets fn to be told the end offsets ReadToEnd captured, per
// requested partition, before it reads (and, with AwaitOpenTransactions,
// before it waits): the offsets it reads up to. fn gets a map of its own.
func OnEnds(fn func(ends map[int32]int64)) ReadOption {
	return func(rc *readConfig) { rc.onEnds = fn }
}

// EndOffsets returns the high watermarks of partitions of topic, now,
// whatever transactions are open below them.
func EndOffsets(ctx context.Context, clientOpts []kgo.Opt, topic string, partitions []int32) (map[int32]int64, error) {
	return ends(ctx, clientOpts, topic, partitions, false)
}

// LastStableOffsets returns the last stable offsets of partitions (nil:
// every one) of topic, now: where a reader that follows the topic from
// now with read-committed isolation starts so as to miss nothing, not
// even the records of a transaction open now, which sit below the high
// watermark and are delivered when it commits.
func LastStableOffsets(ctx context.Context, clientOpts []kgo.Opt, topic string, partitions []int32) (map[int32]int64, error) {
	cl, err := kgo.NewClient(readerOpts(clientOpts)...)
	if err != nil {
		return nil, fmt.Errorf("last stable offsets of %s: %w", topic, err)
	}
	defer cl.Close()
	return endsOf(ctx, kadm.NewClient(cl), topic, partitions, false)
}

// StableEnds returns the high watermarks of partitions of topic once every
// transaction open below them has ended: the ends ReadToEnd reads up to
// with AwaitOpenTransactions. Every write moves a high watermark, and so
// does the end of a transaction (its marker), so a partition whose
// StableEnds equals an earlier EndOffsets got nothing in between and had
// no transaction open then: what was read of it up to there is all of it.
func StableEnds(ctx context.Context, clientOpts []kgo.Opt, topic string, partitions []int32) (map[int32]int64, error) {
	return ends(ctx, clientOpts, topic, partitions, true)
}

func ends(ctx context.Context, clientOpts []kgo.Opt, topic string, partitions []int32, stable bool) (map[int32]int64, error) {
	cl, err := kgo.NewClient(readerOpts(clientOpts)...)
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	out, err := endsOf(ctx, adm, topic, partitions, true)
	if err != nil {
		return nil, err
	}
	if stable {
		if err := awaitStable(ctx, adm, topic, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// endsOf lists the end offsets of partitions (nil: every one) of topic:
// the high watermarks if hwm, else the last stable offsets.
func endsOf(ctx context.Context, adm *kadm.Client, topic string, partitions []int32, hwm bool) (map[int32]int64, error) {
	list := adm.ListCommittedOffsets // last stable offsets
	if hwm {
		list = adm.ListEndOffsets
	}
	all, err := listOffsets(ctx, topic, list)
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	if partitions == nil {
		return all, nil
	}
	ends := make(map[int32]int64, len(partitions))
	for _, p := range partitions {
		end, ok := all[p]
		if !ok {
			return nil, fmt.Errorf("topic %s has no partition %d (it has %d)", topic, p, len(all))
		}
		ends[p] = end
	}
	return ends, nil
}
