package trust

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func signer(t testing.TB) keys.Signer {
	t.Helper()
	_, priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return keys.NewSigner(priv)
}

// entry signs a trust record as principal with s, appended at t0.
func entry(t testing.TB, key string, rec records.TrustRecord, principal string, s keys.Signer) Entry {
	t.Helper()
	rec.Envelope = records.Envelope{ID: key, Time: t0, Principal: principal}
	value, err := records.EncodeSigned(rec, s.ID, s.Sign)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := records.DecodeTrustRecord(value)
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := records.CanonicalBytes(value, dec.Signature)
	if err != nil {
		t.Fatal(err)
	}
	return Entry{Key: key, Record: dec, Claim: Claim{Principal: principal, Signature: dec.Signature, Canonical: canonical, Appended: t0}}
}

func principalRec(name string, roles []string, ks ...records.TrustKey) records.TrustRecord {
	return records.TrustRecord{Principal: &records.TrustPrincipal{Name: name, Roles: roles, Keys: ks}}
}

func trustKey(s keys.Signer) records.TrustKey {
	return records.TrustKey{ID: s.ID, Public: s.Public()}
}

// claim signs a request as principal with s, appended at `at`.
func claim(t *testing.T, principal string, s keys.Signer, at time.Time) Claim {
	t.Helper()
	req := records.Request{Envelope: records.Envelope{ID: "r1", Time: at, Principal: principal},
		Control: &records.ControlWorkflow{WorkflowID: "w1", Action: records.ActionPause}}
	value, err := records.EncodeSigned(req, s.ID, s.Sign)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := records.DecodeRequest(value)
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := records.CanonicalBytes(value, dec.Signature)
	if err != nil {
		t.Fatal(err)
	}
	return Claim{Principal: principal, Signature: dec.Signature, Canonical: canonical, Appended: at}
}

func TestVerifyRefusesWithTheReason(t *testing.T) {
	root, admin, alice, bob, old, gone := signer(t), signer(t), signer(t), signer(t), signer(t), signer(t)
	expired, revoked := trustKey(old), trustKey(gone)
	expired.Expires = t0.Add(time.Hour)
	revoked.Revoked = t0.Add(time.Hour)
	s, ignored := Build(root.Public(), []Entry{
		// Signed by admin, whose own record comes after it: the order does not matter.
		entry(t, "principal/alice", principalRec("alice", []string{"dev"}, trustKey(alice), expired, revoked), "admin", admin),
		entry(t, "principal/admin", principalRec("admin", []string{authz.AdminRole}, trustKey(admin)), RootPrincipal, root),
		entry(t, "principal/bob", principalRec("bob", nil, trustKey(bob)), "admin", admin),
	})
	if len(ignored) != 0 {
		t.Fatalf("ignored %v", ignored[0].Err)
	}
	later := t0.Add(2 * time.Hour)
	tampered := claim(t, "alice", alice, t0)
	tampered.Canonical = append([]byte{}, tampered.Canonical...)
	tampered.Canonical[len(tampered.Canonical)-3] ^= 1
	for _, tc := range []struct {
		name  string
		claim Claim
		kind  error
		msg   string
	}{
		{"signed", claim(t, "alice", alice, t0), nil, ""},
		{"unsigned", Claim{Principal: "alice", Appended: t0}, ErrUnsigned, "not signed"},
		{"unknown key", claim(t, "alice", signer(t), t0), ErrUnknownKey, "which the trust store does not know"},
		{"another's key", claim(t, "alice", bob, t0), ErrForged, "forged: signed with key " + bob.ID + " of bob, but names principal \"alice\""},
		{"altered", tampered, ErrForged, "forged or altered: its signature does not verify with key " + alice.ID + " of alice"},
		{"before expiry", claim(t, "alice", old, t0), nil, ""},
		{"expired", claim(t, "alice", old, later), ErrExpired, "signed with key " + old.ID + " of alice, which expired at 2026-11-22T13:00:00Z (the record was appended at 2026-11-22T14:00:00Z)"},
		{"revoked", claim(t, "alice", gone, later), ErrRevoked, "signed with key " + gone.ID + " of alice, revoked at 2026-11-22T13:00:00Z"},
	} {
		err := s.Verify(tc.claim)
		switch {
		case tc.kind == nil && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.kind != nil && (!errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg)):
			t.Errorf("%s: err = %v, want %v saying %q", tc.name, err, tc.kind, tc.msg)
		}
	}
}

func TestCheckWindow(t *testing.T) {
	if err := CheckWindow(t0, t0.Add(4*time.Minute), DefaultWindow); err != nil {
		t.Error(err)
	}
	err := CheckWindow(t0, t0.Add(10*time.Minute), DefaultWindow)
	if !errors.Is(err, ErrStale) || !strings.Contains(err.Error(), "is 10m0s from when it was appended") {
		t.Errorf("err = %v", err)
	}
}

func TestTrustRecordsNeedAnAdminKey(t *testing.T) {
	root, admin, mallory := signer(t), signer(t), signer(t)
	s, ignored := Build(root.Public(), []Entry{
		entry(t, "principal/admin", principalRec("admin", []string{authz.AdminRole}, trustKey(admin)), RootPrincipal, root),
		entry(t, "principal/mallory", principalRec("mallory", []string{authz.AdminRole}, trustKey(mallory)), "mallory", mallory),
		entry(t, "principal/eve", principalRec("eve", nil), "admin", root), // the root's key, another name
		entry(t, "role/dev", records.TrustRecord{Role: &authz.Role{Name: "dev", Rules: []authz.Rule{{Name: "any", Actions: []string{"submit"}}}}}, "admin", admin),
	})
	if _, ok := s.Principal("mallory"); ok {
		t.Error("a principal that signed its own admin record is in the store")
	}
	if len(s.Roles()) != 1 {
		t.Errorf("roles %v, want dev", s.Roles())
	}
	var msgs []string
	for _, ig := range ignored {
		msgs = append(msgs, ig.Err.Error())
	}
	want := []string{
		"trust record principal/mallory is signed with key " + mallory.ID + ", which is neither the trust root nor a key of an admin",
		`trust record principal/eve is signed with the trust root ` + root.ID + ` but names principal "admin", not "root"`,
	}
	if strings.Join(msgs, "\n") != strings.Join(want, "\n") {
		t.Errorf("ignored:\n%s\nwant:\n%s", strings.Join(msgs, "\n"), strings.Join(want, "\n"))
	}
	if _, ignored := Build(nil, []Entry{entry(t, "principal/admin", principalRec("admin", []string{authz.AdminRole}, trustKey(admin)), RootPrincipal, root)}); len(ignored) != 1 {
		t.Error("without a root, a record signed by some key counts")
	}
	_ = ed25519.PublicKeySize
}
