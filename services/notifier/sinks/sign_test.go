package sinks

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The example of the Standard Webhooks specification, signed and verified.
func TestSignatureOfTheSpecificationsExample(t *testing.T) {
	s, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1614265330, 0)
	body := []byte(`{"test": 2432232314}`)
	if got, want := Sign([]Secret{s}, "msg_p5jXN8AQM9LWM0D4loKWxJek", at, body), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %q, want the specification's %q", got, want)
	}
	h := http.Header{}
	SignHeaders(h, []Secret{s}, "msg_p5jXN8AQM9LWM0D4loKWxJek", at, body)
	if h.Get("webhook-timestamp") != "1614265330" || h.Get("webhook-id") != "msg_p5jXN8AQM9LWM0D4loKWxJek" {
		t.Errorf("headers %v", h)
	}
	if err := Verify([]Secret{s}, h, body, at.Add(time.Minute), 0); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestVerify(t *testing.T) {
	old, _ := ParseSecret(NewSecret([]byte("the old secret, 32 bytes long!!!")).Encode())
	cur := NewSecret([]byte("the new secret, 32 bytes long!!!"))
	other := NewSecret([]byte("someone else's secret, 32 bytes"))
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	body := []byte(`{"id":"n-1"}`)
	h := http.Header{}
	SignHeaders(h, []Secret{cur, old}, "n-1", at, body) // rotating: both sign
	if n := len(strings.Fields(h.Get(HeaderSignature))); n != 2 {
		t.Fatalf("webhook-signature %q: want a signature per secret", h.Get(HeaderSignature))
	}
	for _, tc := range []struct {
		name    string
		secrets []Secret
		h       http.Header
		body    []byte
		now     time.Time
		want    error
	}{
		{"a receiver with the old secret", []Secret{old}, h, body, at, nil},
		{"a receiver with the new secret", []Secret{cur}, h, body, at, nil},
		{"a receiver with both", []Secret{other, cur}, h, body, at, nil},
		{"another secret", []Secret{other}, h, body, at, ErrSignature},
		{"a body altered", []Secret{cur}, h, []byte(`{"id":"n-2"}`), at, ErrSignature},
		{"too old", []Secret{cur}, h, body, at.Add(DefaultTolerance + time.Second), ErrTimestamp},
		{"from the future", []Secret{cur}, h, body, at.Add(-DefaultTolerance - time.Second), ErrTimestamp},
		{"no signature", []Secret{cur}, with(h, HeaderSignature, ""), body, at, ErrMissingHeaders},
		{"another id", []Secret{cur}, with(h, HeaderID, "n-2"), body, at, ErrSignature},
		{"only an unknown version", []Secret{cur}, with(h, HeaderSignature, strings.ReplaceAll(h.Get(HeaderSignature), "v1,", "v2,")), body, at, ErrSignature},
	} {
		if err := Verify(tc.secrets, tc.h, tc.body, tc.now, 0); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: Verify: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// with returns a copy of h with header k set to v ("": removed).
func with(h http.Header, k, v string) http.Header {
	h = h.Clone()
	h.Del(k)
	if v != "" {
		h.Set(k, v)
	}
	return h
}

func TestParseSecrets(t *testing.T) {
	a, b := NewSecret([]byte("0123456789abcdef")).Encode(), NewSecret([]byte("fedcba9876543210")).Encode()
	got, err := ParseSecrets(a + "\n" + b + "\n")
	if err != nil || len(got) != 2 {
		t.Fatalf("ParseSecrets: %v, %v", got, err)
	}
	if s := got[0].String(); strings.Contains(s, a[6:]) {
		t.Errorf("a secret prints as %q", s)
	}
	for _, bad := range []string{"", "not-a-key", "whsec_not base64!", "whsec_" + "c2hvcnQ="} {
		_, err := ParseSecrets(bad)
		if err == nil {
			t.Errorf("ParseSecrets(%q): no error", bad)
		} else if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("ParseSecrets(%q): the error %q repeats the secret", bad, err)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"7": 7 * time.Second, " 120 ": 2 * time.Minute, "": 0, "-3": 0, "soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", v, got, want)
		}
	}
}
