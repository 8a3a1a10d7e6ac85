package records

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Signed records (Request, ClusterRecord, PolicyRecord, TrustRecord) end
// with two fields: key_id, then signature, which every version of their
// schemas keeps last. Their canonical bytes, what the signature signs, are
// the record's single-object encoding (header, fingerprint, body) with the
// signature empty: the value as written, its encoded signature (a varint
// length and the bytes) replaced by the one byte of empty bytes, 0x00. So
// a reader takes them from the bytes it read, whatever schema version
// they were written with and in whatever order their maps' entries are,
// and a client of any language signs by encoding the record once with an
// empty signature (see schemas/README.md).

// ErrNotSigned is returned by CanonicalBytes for a value that does not
// end with the signature its decoded record holds.
var ErrNotSigned = errors.New("value does not end with its signature")

// EncodeSigned encodes v (a Request, ClusterRecord, PolicyRecord or
// TrustRecord) signed with key keyID by sign: it encodes the record with
// that key ID and an empty signature, signs those bytes (the canonical
// bytes) and puts the signature in place of the empty one.
func EncodeSigned(v any, keyID string, sign func(canonical []byte) []byte) ([]byte, error) {
	switch x := v.(type) {
	case Request:
		x.Signature = Signature{KeyID: keyID}
		v = x
	case ClusterRecord:
		x.Signature = Signature{KeyID: keyID}
		v = x
	case PolicyRecord:
		x.Signature = Signature{KeyID: keyID}
		v = x
	case TrustRecord:
		x.Signature = Signature{KeyID: keyID}
		v = x
	default:
		return nil, fmt.Errorf("sign: %T is not a signed record type", v)
	}
	canonical, err := Encode(v)
	if err != nil {
		return nil, err
	}
	sig := sign(canonical)
	out := canonical[:len(canonical)-1] // the empty signature's 0x00
	out = binary.AppendVarint(out, int64(len(sig)))
	return append(out, sig...), nil
}

// CanonicalBytes returns the canonical bytes of value, a record whose
// decoded signature is sig: the value with its signature emptied. It
// fails with ErrNotSigned if the value does not end with sig's encoding
// (it is JSON, or not what sig was decoded from).
func CanonicalBytes(value []byte, sig Signature) ([]byte, error) {
	tail := append(binary.AppendVarint(nil, int64(len(sig.Value))), sig.Value...)
	if len(value) < headerLen+len(tail) || !bytes.HasSuffix(value, tail) {
		return nil, ErrNotSigned
	}
	rest := len(value) - len(tail)
	return append(value[:rest:rest], 0), nil
}
