package trust

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// DefaultWindow is how far a signed record's envelope time may be from
// when it was appended.
const DefaultWindow = 5 * time.Minute

// Config says what a service requires of the records users write.
type Config struct {
	// Require turns verification on: unsigned, forged, replayed,
	// expired-key and revoked-key records are refused, and requests are
	// authorised by the roles of the store. Off (the default), every
	// record is taken as it says, as before signing existed.
	Require bool
	// Root is the trust root's public key: the first admin key, given at
	// install; it signs the first records of the trust topic.
	Root ed25519.PublicKey
	// Window bounds how far a record's envelope time may be from its
	// append time (DefaultWindow if 0).
	Window time.Duration
}

// Table is the trust store of a service, kept from the trust topic: a
// log table of its records, and the Store they build, rebuilt whole on
// every change (the store is small; a check is O(1)).
type Table struct {
	cfg        Config
	topic      string
	clientOpts []kgo.Opt
	log        *slog.Logger
	table      *logtable.Table[Entry]
	store      atomic.Pointer[Store]
	onIgnored  func(r *kgo.Record, err error)

	mu        sync.Mutex
	reported  map[int64]bool // offsets of ignored records told to onIgnored
	refreshed time.Time      // when the last Refresh started
	read      int64          // the last offset of the topic the store was built from
	decoded   int64          // the last offset the table read (tombstones aside)
	ctx       context.Context
}

// TableOption configures a Table.
type TableOption func(*Table)

// OnIgnored sets fn to be told, once per process, of each record of the
// trust topic the store ignores (not signed by an admin, malformed), so
// that it is set aside with the reason.
func OnIgnored(fn func(r *kgo.Record, err error)) TableOption {
	return func(t *Table) { t.onIgnored = fn }
}

// WithLogger sets the table's logger.
func WithLogger(l *slog.Logger) TableOption { return func(t *Table) { t.log = l } }

// NewTable returns the table of the trust topic. It does nothing until
// Run; with cfg.Require off it reads nothing at all, and Check accepts
// every record.
func NewTable(topic string, clientOpts []kgo.Opt, cfg Config, opts ...TableOption) *Table {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	t := &Table{cfg: cfg, topic: topic, clientOpts: clientOpts, log: slog.Default(), reported: map[int64]bool{}, ctx: context.Background(), read: -1, decoded: -1}
	for _, o := range opts {
		o(t)
	}
	empty, _ := Build(cfg.Root, nil)
	t.store.Store(empty)
	t.table = logtable.New(topic, clientOpts, func(r *kgo.Record) (Entry, error) {
		t.mu.Lock()
		t.decoded = max(t.decoded, r.Offset)
		t.mu.Unlock()
		return decodeEntry(r)
	},
		logtable.WithLogger[Entry](t.log),
		logtable.OnDecodeError[Entry](func(r *kgo.Record, err error) { t.ignored(r, err) }),
		logtable.OnChange(func(string, Entry, bool) { t.rebuildFromTable() }))
	return t
}

// Required reports whether the service verifies records.
func (t *Table) Required() bool { return t != nil && t.cfg.Require }

// decodeEntry decodes a record of the trust topic.
func decodeEntry(r *kgo.Record) (Entry, error) {
	rec, err := records.DecodeTrustRecord(r.Value)
	if err != nil {
		return Entry{}, err
	}
	canonical, _ := records.CanonicalBytes(r.Value, rec.Signature)
	return Entry{Key: string(r.Key), Record: rec, Source: r, Claim: Claim{
		Principal: rec.Envelope.Principal, Signature: rec.Signature, Canonical: canonical, Appended: r.Timestamp,
	}}, nil
}

// Run reads the topic and follows it until ctx ends. Without Require it
// returns when ctx ends, having read nothing.
func (t *Table) Run(ctx context.Context) error {
	if !t.Required() {
		<-ctx.Done()
		return nil
	}
	t.mu.Lock()
	t.ctx = ctx
	t.mu.Unlock()
	errc := make(chan error, 1)
	go func() { errc <- t.table.Run(ctx) }()
	if err := t.table.WaitReady(ctx); err != nil {
		return errors.Join(err, <-errc)
	}
	t.rebuildFromTable()
	return <-errc
}

// WaitReady blocks until the table has read the topic to the end it had
// when Run started (at once without Require).
func (t *Table) WaitReady(ctx context.Context) error {
	if !t.Required() {
		return nil
	}
	return t.table.WaitReady(ctx)
}

func (t *Table) rebuildFromTable() {
	t.mu.Lock()
	read := t.decoded
	t.mu.Unlock()
	t.rebuild(t.table.Snapshot(), read)
}

// Store returns the trust store as it is now.
func (t *Table) Store() *Store { return t.store.Load() }

// rebuild builds the store from snapshot, the topic read up to offset
// read. A refresh and the table's own rebuild may race: the store never
// goes back to a shorter read of the topic.
func (t *Table) rebuild(snapshot map[string]Entry, read int64) {
	entries := make([]Entry, 0, len(snapshot))
	for _, e := range snapshot {
		entries = append(entries, e)
	}
	s, ignored := Build(t.cfg.Root, entries)
	t.mu.Lock()
	if read < t.read {
		t.mu.Unlock()
		return
	}
	t.read = read
	t.store.Store(s)
	t.mu.Unlock()
	for _, ig := range ignored {
		if r, ok := ig.Entry.Source.(*kgo.Record); ok {
			t.ignored(r, ig.Err)
		}
	}
}

func (t *Table) ignored(r *kgo.Record, err error) {
	t.mu.Lock()
	seen := t.reported[r.Offset]
	t.reported[r.Offset] = true
	t.mu.Unlock()
	if seen {
		return
	}
	t.log.Warn("ignoring a trust store record", "offset", r.Offset, "key", string(r.Key), "err", err)
	if t.onIgnored != nil {
		t.onIgnored(r, err)
	}
}

// Refresh reads the trust topic to its end now and rebuilds the store
// from it, unless a refresh started after since already did: a record
// signed with a key added just before it may reach a service before the
// table has followed the topic that far.
func (t *Table) Refresh(ctx context.Context, since time.Time) error {
	t.mu.Lock()
	if !t.refreshed.IsZero() && t.refreshed.After(since.Add(time.Second)) { // a second of clock skew
		t.mu.Unlock()
		return nil
	}
	t.refreshed = time.Now()
	t.mu.Unlock()
	fresh := map[string]Entry{}
	read := int64(-1)
	err := logtable.ReadToEnd(ctx, t.clientOpts, t.topic, nil, func(r *kgo.Record) {
		read = max(read, r.Offset)
		if r.Value == nil {
			delete(fresh, string(r.Key))
			return
		}
		if e, err := decodeEntry(r); err == nil {
			fresh[string(r.Key)] = e
		}
	})
	if err != nil {
		return err
	}
	t.rebuild(fresh, read)
	return nil
}

// Check verifies a record a user wrote, r, whose decoded envelope and
// signature are env and sig: signed by a current key of the principal it
// names (Store.Verify), within the window of its append time
// (CheckWindow). It returns nil without Require. A key the store does not
// know makes it read the trust topic to its end first (Refresh).
func (t *Table) Check(r *kgo.Record, env records.Envelope, sig records.Signature) error {
	if !t.Required() {
		return nil
	}
	canonical, err := records.CanonicalBytes(r.Value, sig)
	if err != nil {
		canonical = nil
	}
	c := Claim{Principal: env.Principal, Signature: sig, Canonical: canonical, Appended: r.Timestamp}
	err = t.Store().Verify(c)
	if errors.Is(err, ErrUnknownKey) {
		t.mu.Lock()
		ctx := t.ctx
		t.mu.Unlock()
		if rerr := t.Refresh(ctx, r.Timestamp); rerr == nil {
			err = t.Store().Verify(c)
		}
	}
	if err != nil {
		return err
	}
	return CheckWindow(env.Time, r.Timestamp, t.cfg.Window)
}

// Policy returns the roles of the store as it is now, or nil without
// Require (nothing is authorised by role then).
func (t *Table) Policy() *authz.Policy {
	if !t.Required() {
		return nil
	}
	return t.Store().Policy()
}

// DecodeCluster decodes an inventory record r and, with Require,
// verifies it and that its principal may write the inventory record of
// that cluster: how every service that reads the inventory reads it.
func (t *Table) DecodeCluster(r *kgo.Record) (records.ClusterRecord, error) {
	rec, err := records.DecodeClusterRecord(r.Value)
	if err == nil {
		err = t.checkCluster(r, rec)
	}
	return rec, err
}

// checkCluster verifies an inventory record r, decoded as rec. Nil
// without Require.
func (t *Table) checkCluster(r *kgo.Record, rec records.ClusterRecord) error {
	if !t.Required() {
		return nil
	}
	if err := t.Check(r, rec.Envelope, rec.Signature); err != nil {
		return fmt.Errorf("inventory record of cluster %s by %s refused: %w", rec.Cluster.ID, orSomeone(rec.Envelope.Principal), err)
	}
	err := t.Store().Policy().Check(authz.Request{Principal: rec.Envelope.Principal, Action: authz.ActionInventory,
		Clusters: []authz.Cluster{{ID: rec.Cluster.ID, Labels: rec.Cluster.Labels}}})
	if err != nil {
		return fmt.Errorf("inventory record of cluster %s refused: %w", rec.Cluster.ID, err)
	}
	return nil
}

// CheckPolicy verifies a deployment policy record r (decoded as rec),
// and that its principal may write policies. Nil without Require.
func (t *Table) CheckPolicy(r *kgo.Record, rec records.PolicyRecord) error {
	if !t.Required() {
		return nil
	}
	if err := t.Check(r, rec.Envelope, rec.Signature); err != nil {
		return fmt.Errorf("deployment policy %s by %s refused: %w", rec.Policy.Name, orSomeone(rec.Envelope.Principal), err)
	}
	if err := t.Store().Policy().Check(authz.Request{Principal: rec.Envelope.Principal, Action: authz.ActionPolicy}); err != nil {
		return fmt.Errorf("deployment policy %s refused: %w", rec.Policy.Name, err)
	}
	return nil
}

func orSomeone(p string) string {
	if p == "" {
		return "no principal"
	}
	return p
}
