// Package trust holds the trust store: the principals who sign records,
// their public keys and roles, kept in the compacted topic fleet.trust
// (Table), and the one check every service makes on a record a user wrote
// (a request, an inventory or a policy record): that it is signed by a
// current key of the principal it names (Store.Verify), recently
// (CheckWindow).
//
// The trust store's own records are signed by an admin key: the trust
// root, given to every service at install (--trust-root), or a key of a
// principal with role admin that such a record added. Which records count
// is a least fixpoint from the root over the records the topic holds (the
// last of each key), so that it is the same whatever order they were
// read in and whatever compaction removed.
package trust

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// RootPrincipal is the principal the trust root's key signs as.
const RootPrincipal = "root"

// The kinds of refusal. Each error Verify and CheckWindow return wraps
// one, and says in full what is wrong (the key, its owner, the times).
var (
	ErrUnsigned   = errors.New("unsigned")
	ErrUnknownKey = errors.New("unknown key")
	ErrForged     = errors.New("forged")
	ErrExpired    = errors.New("expired key")
	ErrRevoked    = errors.New("revoked key")
	ErrStale      = errors.New("outside the time window")
	ErrReplayed   = errors.New("replayed")
)

// Error is a refusal: Kind is one of the Err values above, the message
// says the rest.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

func refuse(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Claim is what a signed record says about itself, for Verify.
type Claim struct {
	Principal string // the record's envelope.principal
	Signature records.Signature
	// Canonical are the record's canonical bytes (records.CanonicalBytes);
	// nil when they could not be had (a JSON request).
	Canonical []byte
	// Appended is when the record was appended to its topic: its Kafka
	// timestamp, the broker's clock on topics with LogAppendTime.
	Appended time.Time
}

// Key is a public key of a principal, as the store holds it.
type Key struct {
	ID      string
	Owner   string
	Public  ed25519.PublicKey
	Expires time.Time // zero: never
	Revoked time.Time // zero: not revoked
}

// Principal is a principal of the store.
type Principal struct {
	Name  string
	Roles []string
	Keys  []Key
}

// Store is the trust store at one point of the log. It is never changed
// once built: a change to the topic builds a new one (Build).
type Store struct {
	root       Key
	keys       map[string]Key // by ID
	principals map[string]Principal
	roles      map[string]authz.Role
	policy     *authz.Policy
}

// Entry is one record of the trust topic, as Build takes it.
type Entry struct {
	Key    string // the record key
	Record records.TrustRecord
	Claim  Claim
	// Source identifies the record for whoever sets it aside (a
	// *kgo.Record); Build does not look at it.
	Source any
}

// Ignored is a record of the trust topic that Build did not count, and why.
type Ignored struct {
	Entry Entry
	Err   error
}

// NewKey returns the store's view of a public key of owner.
func NewKey(owner string, pub ed25519.PublicKey) Key {
	return Key{ID: keys.ID(pub), Owner: owner, Public: pub}
}

// Build returns the store the entries make with root as the trust root
// (nil: no root, so no record counts), and the entries it ignored.
func Build(root ed25519.PublicKey, entries []Entry) (*Store, []Ignored) {
	s := &Store{keys: map[string]Key{}, principals: map[string]Principal{}, roles: map[string]authz.Role{}}
	if root != nil {
		s.root = NewKey(RootPrincipal, root)
	}
	why := map[int]error{}
	accepted := make([]bool, len(entries))
	// Least fixpoint: accept, round after round, the entries signed by the
	// root or by an admin key accepted so far, until a round adds none.
	for changed := true; changed; {
		changed = false
		for i, e := range entries {
			if accepted[i] {
				continue
			}
			if err := s.checkAdmin(e); err != nil {
				why[i] = err
				continue
			}
			if err := s.add(e); err != nil {
				why[i] = err
				continue
			}
			accepted[i], changed = true, true
			delete(why, i)
		}
	}
	var ignored []Ignored
	for i, e := range entries {
		if !accepted[i] {
			ignored = append(ignored, Ignored{Entry: e, Err: why[i]})
		}
	}
	s.policy = authz.NewPolicy(s.roleList(), s.roleNames())
	return s, ignored
}

// checkAdmin reports why entry e is not signed by an admin key of s.
func (s *Store) checkAdmin(e Entry) error {
	c := e.Claim
	if c.Signature.KeyID == "" {
		return refuse(ErrUnsigned, "trust record %s is not signed: it must be signed by an admin key (flotilla trust --admin-key)", e.Key)
	}
	if s.root.Public != nil && c.Signature.KeyID == s.root.ID {
		if c.Principal != RootPrincipal {
			return refuse(ErrForged, "trust record %s is signed with the trust root %s but names principal %q, not %q", e.Key, s.root.ID, c.Principal, RootPrincipal)
		}
		return s.verifyWith(s.root, c)
	}
	k, ok := s.keys[c.Signature.KeyID]
	if !ok {
		return refuse(ErrUnknownKey, "trust record %s is signed with key %s, which is neither the trust root nor a key of an admin", e.Key, c.Signature.KeyID)
	}
	if !slices.Contains(s.principals[k.Owner].Roles, authz.AdminRole) {
		return refuse(ErrForged, "trust record %s is signed by %s (key %s), who does not have role %s", e.Key, k.Owner, k.ID, authz.AdminRole)
	}
	return s.verifyKey(k, c)
}

// add adds an accepted entry to the store.
func (s *Store) add(e Entry) error {
	switch rec := e.Record; {
	case rec.Principal != nil:
		p := rec.Principal
		if e.Key != records.TrustPrincipalKey(p.Name) {
			return fmt.Errorf("trust record keyed %q holds principal %q: want key %q", e.Key, p.Name, records.TrustPrincipalKey(p.Name))
		}
		out := Principal{Name: p.Name, Roles: p.Roles}
		for _, tk := range p.Keys {
			if len(tk.Public) != ed25519.PublicKeySize || keys.ID(tk.Public) != tk.ID {
				return fmt.Errorf("trust record %s: key %s is not a valid Ed25519 public key of that ID", e.Key, tk.ID)
			}
			if other, ok := s.keys[tk.ID]; ok && other.Owner != p.Name {
				return fmt.Errorf("trust record %s: key %s is already %s's", e.Key, tk.ID, other.Owner)
			}
		}
		for _, tk := range p.Keys {
			k := Key{ID: tk.ID, Owner: p.Name, Public: ed25519.PublicKey(tk.Public), Expires: tk.Expires, Revoked: tk.Revoked}
			s.keys[k.ID] = k
			out.Keys = append(out.Keys, k)
		}
		s.principals[p.Name] = out
	case rec.Role != nil:
		if e.Key != records.TrustRoleKey(rec.Role.Name) {
			return fmt.Errorf("trust record keyed %q holds role %q: want key %q", e.Key, rec.Role.Name, records.TrustRoleKey(rec.Role.Name))
		}
		if err := authz.CheckRole(*rec.Role); err != nil {
			return fmt.Errorf("trust record %s: %w", e.Key, err)
		}
		s.roles[rec.Role.Name] = *rec.Role
	}
	return nil
}

// Verify reports whether c is signed by a current key of the principal it
// names: nil, or an *Error saying what is wrong.
func (s *Store) Verify(c Claim) error {
	if c.Signature.KeyID == "" && len(c.Signature.Value) == 0 {
		return refuse(ErrUnsigned, "not signed, and signatures are required: sign it with the principal's key (flotilla --key, or FLOTILLA_KEY)")
	}
	k, ok := s.keys[c.Signature.KeyID]
	if !ok {
		return refuse(ErrUnknownKey, "signed with key %s, which the trust store does not know (flotilla trust add)", c.Signature.KeyID)
	}
	if k.Owner != c.Principal {
		return refuse(ErrForged, "forged: signed with key %s of %s, but names principal %q", k.ID, k.Owner, c.Principal)
	}
	return s.verifyKey(k, c)
}

// verifyKey checks c's signature with k, and that k was current when the
// record was appended.
func (s *Store) verifyKey(k Key, c Claim) error {
	if !k.Revoked.IsZero() && !c.Appended.Before(k.Revoked) {
		return refuse(ErrRevoked, "signed with key %s of %s, revoked at %s (the record was appended at %s)", k.ID, k.Owner, stamp(k.Revoked), stamp(c.Appended))
	}
	if !k.Expires.IsZero() && !c.Appended.Before(k.Expires) {
		return refuse(ErrExpired, "signed with key %s of %s, which expired at %s (the record was appended at %s)", k.ID, k.Owner, stamp(k.Expires), stamp(c.Appended))
	}
	return s.verifyWith(k, c)
}

func (s *Store) verifyWith(k Key, c Claim) error {
	if c.Canonical == nil {
		return refuse(ErrForged, "signed with key %s, but its signature is not where the schema puts it (a JSON record cannot be signed: produce the Avro binary)", k.ID)
	}
	if !ed25519.Verify(k.Public, c.Canonical, c.Signature.Value) {
		return refuse(ErrForged, "forged or altered: its signature does not verify with key %s of %s", k.ID, k.Owner)
	}
	return nil
}

// CheckWindow refuses a record whose envelope time is more than window
// away from when it was appended: a record produced again long after it
// was signed (a replay), or by a client whose clock is far off. Both
// times are in the record, so a planner deciding it again decides alike.
func CheckWindow(envelope, appended time.Time, window time.Duration) error {
	d := appended.Sub(envelope)
	if d > window || d < -window {
		return refuse(ErrStale, "its time %s is %s from when it was appended (%s); the window is %s: a replay, or a clock far off", stamp(envelope), d.Abs().Round(time.Second), stamp(appended), window)
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Principal returns a principal of the store.
func (s *Store) Principal(name string) (Principal, bool) {
	p, ok := s.principals[name]
	return p, ok
}

// Principals returns every principal, and Roles every role, sorted by name.
func (s *Store) Principals() []Principal {
	out := make([]Principal, 0, len(s.principals))
	for _, p := range s.principals {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Principal) int { return compare(a.Name, b.Name) })
	return out
}

// Roles returns every role, sorted by name.
func (s *Store) Roles() []authz.Role { return s.roleList() }

func (s *Store) roleList() []authz.Role {
	out := make([]authz.Role, 0, len(s.roles))
	for _, r := range s.roles {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b authz.Role) int { return compare(a.Name, b.Name) })
	return out
}

func (s *Store) roleNames() map[string][]string {
	out := make(map[string][]string, len(s.principals))
	for name, p := range s.principals {
		out[name] = p.Roles
	}
	return out
}

// Policy returns the store's roles as an authorization policy.
func (s *Store) Policy() *authz.Policy { return s.policy }

// KeyOwner returns the principal a key belongs to: the root's, or a
// principal's.
func (s *Store) KeyOwner(id string) (string, bool) {
	if s.root.Public != nil && id == s.root.ID {
		return RootPrincipal, true
	}
	k, ok := s.keys[id]
	return k.Owner, ok
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
