package trust

import (
	"testing"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
)

// BenchmarkVerifyInventoryRecord measures what signatures add to reading
// an inventory record: its decode alone (the baseline, measured in the
// same run), and its decode, canonical bytes and Verify.
//
//	go test -run '^$' -bench VerifyInventoryRecord ./pkg/trust
func BenchmarkVerifyInventoryRecord(b *testing.B) {
	ops, root := signer(b), signer(b)
	store, ignored := Build(root.Public(), []Entry{
		entry(b, records.TrustPrincipalKey("ops"), principalRec("ops", []string{"ops"}, trustKey(ops)), RootPrincipal, root),
	})
	if len(ignored) > 0 {
		b.Fatal(ignored[0].Err)
	}
	rec := records.ClusterRecord{Envelope: records.Envelope{ID: "e1", Time: t0, Principal: "ops"}, Cluster: simfleet.GenerateClusters(1)[0]}
	value, err := records.EncodeSigned(rec, ops.ID, ops.Sign)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			if _, err := records.DecodeClusterRecord(value); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode+verify", func(b *testing.B) {
		for b.Loop() {
			dec, err := records.DecodeClusterRecord(value)
			if err != nil {
				b.Fatal(err)
			}
			canonical, err := records.CanonicalBytes(value, dec.Signature)
			if err != nil {
				b.Fatal(err)
			}
			if err := store.Verify(Claim{Principal: "ops", Signature: dec.Signature, Canonical: canonical, Appended: t0}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
