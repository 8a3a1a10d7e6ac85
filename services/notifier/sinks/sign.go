package sinks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Webhook requests are signed per the Standard Webhooks specification
// (https://www.standardwebhooks.com): the headers
//
//	webhook-id:        the notification's ID (Envelope.ID), the same on every attempt
//	webhook-timestamp: the attempt's time, in Unix seconds
//	webhook-signature: "v1,<base64 HMAC-SHA256 of id.timestamp.body>", one per secret, space-separated
//
// so a receiver checks that a request comes from a holder of the secret,
// that it was not altered, and that it is recent (no replay), and drops a
// repeat by webhook-id.

// Header names of Standard Webhooks.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// DefaultTolerance is how far a request's timestamp may be from the
// receiver's clock, as the specification advises.
const DefaultTolerance = 5 * time.Minute

// secretPrefix starts a Standard Webhooks secret; the rest is the key in
// base64.
const secretPrefix = "whsec_"

// Secret is a key that signs webhook requests. It prints as a redaction,
// so logging a Destination does not leak it.
type Secret struct{ key []byte }

// String hides the key.
func (Secret) String() string { return "whsec_<redacted>" }

// GoString hides the key from %#v too.
func (s Secret) GoString() string { return s.String() }

// ParseSecret reads a secret "whsec_<base64 key>". Its errors do not
// repeat the secret.
func ParseSecret(s string) (Secret, error) {
	b64, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return Secret{}, errors.New("a secret must start with whsec_")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return Secret{}, errors.New("a secret must be whsec_ followed by base64 (standard alphabet, padded)")
	}
	if len(key) < 16 {
		return Secret{}, fmt.Errorf("a secret's key must be at least 16 bytes (it has %d); 24 to 64 are usual", len(key))
	}
	return Secret{key: key}, nil
}

// ParseSecrets reads the secrets of text: whsec_ secrets separated by
// spaces, commas or newlines, the newest first by convention. While
// rotating, give both the old and the new one: every request then carries a
// signature by each, and a receiver holding either accepts it.
func ParseSecrets(text string) ([]Secret, error) {
	fields := strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
	if len(fields) == 0 {
		return nil, errors.New("no secret given")
	}
	out := make([]Secret, 0, len(fields))
	for i, f := range fields {
		s, err := ParseSecret(f)
		if err != nil {
			return nil, fmt.Errorf("secret %d of %d: %w", i+1, len(fields), err)
		}
		out = append(out, s)
	}
	return out, nil
}

// NewSecret returns a secret with key, e.g. from crypto/rand (tests, tools
// that mint secrets); Encode gives its whsec_ form.
func NewSecret(key []byte) Secret { return Secret{key: append([]byte(nil), key...)} }

// Encode returns the secret as "whsec_<base64 key>", to hand to a receiver.
func (s Secret) Encode() string { return secretPrefix + base64.StdEncoding.EncodeToString(s.key) }

// signature is the base64 HMAC-SHA256 of "id.timestamp.body" under s.
func (s Secret) signature(id, timestamp string, body []byte) []byte {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	sum := mac.Sum(nil)
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sum)))
	base64.StdEncoding.Encode(out, sum)
	return out
}

// Sign returns the value of webhook-signature for a request of id at time
// at with body: "v1,<signature>" for each secret, space-separated.
func Sign(secrets []Secret, id string, at time.Time, body []byte) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	parts := make([]string, len(secrets))
	for i, s := range secrets {
		parts[i] = "v1," + string(s.signature(id, ts, body))
	}
	return strings.Join(parts, " ")
}

// SignHeaders sets the three Standard Webhooks headers of a request.
func SignHeaders(h http.Header, secrets []Secret, id string, at time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(HeaderSignature, Sign(secrets, id, at, body))
}

// Errors of Verify.
var (
	ErrMissingHeaders = errors.New("webhook-id, webhook-timestamp or webhook-signature missing")
	ErrTimestamp      = errors.New("webhook-timestamp outside the tolerance")
	ErrSignature      = errors.New("no valid signature")
)

// Verify checks a request received by a webhook against the receiver's
// secrets: its headers h and its body, as received (not re-encoded). It
// accepts the request if its timestamp is within tolerance of now
// (DefaultTolerance if tolerance is 0) and some v1 signature of the header
// is valid under some secret; it fails with an error wrapping
// ErrMissingHeaders, ErrTimestamp or ErrSignature. Comparisons are in
// constant time. Signatures of other versions than v1 are ignored, so a
// sender can add schemes without breaking receivers.
func Verify(secrets []Secret, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, ts, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || ts == "" || sigs == "" {
		return ErrMissingHeaders
	}
	if tolerance == 0 {
		tolerance = DefaultTolerance
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not Unix seconds", ErrTimestamp, ts)
	}
	if at := time.Unix(sec, 0); at.Before(now.Add(-tolerance)) || at.After(now.Add(tolerance)) {
		return fmt.Errorf("%w: %s is more than %v from %s", ErrTimestamp, at.UTC().Format(time.RFC3339), tolerance, now.UTC().Format(time.RFC3339))
	}
	for _, s := range secrets {
		want := s.signature(id, ts, body)
		for _, sig := range strings.Fields(sigs) {
			if v, got, ok := strings.Cut(sig, ","); ok && v == "v1" && hmac.Equal([]byte(got), want) {
				return nil
			}
		}
	}
	return ErrSignature
}
