package kafkaauth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTokenIsReadAtEachAuthentication: an OAUTHBEARER token renewed on
// disk is what the next connection sends; an empty or missing file is an
// error that names it.
func TestTokenIsReadAtEachAuthentication(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	m := Token(file)
	first := func() (string, error) {
		_, msg, err := m.Authenticate(context.Background(), "broker:9092")
		return string(msg), err
	}
	if _, err := first(); err == nil || !strings.Contains(err.Error(), "token file") {
		t.Fatalf("a missing token file: err %v, want one naming the token file", err)
	}
	for _, tok := range []string{"eyJ.first", "eyJ.renewed"} {
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		msg, err := first()
		if err != nil || !strings.Contains(msg, "auth=Bearer "+tok+"\x01") {
			t.Fatalf("with token %s on disk the client sends %q (%v)", tok, msg, err)
		}
	}
	os.WriteFile(file, []byte("\n"), 0o600)
	if _, err := first(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("an empty token file: err %v, want it to say so", err)
	}
	if m.Name() != OAuthBearer {
		t.Fatalf("mechanism %s", m.Name())
	}
}

func TestMechanismsByName(t *testing.T) {
	for _, name := range []string{"plain", "SCRAM-SHA-256", " scram-sha-512 "} {
		if _, err := Password(name, "u", "p"); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	if _, err := Password("OAUTHBEARER", "u", "p"); err == nil {
		t.Error("OAUTHBEARER took a password")
	}
	if _, err := NormalizeMechanism("GSSAPI"); err == nil || !strings.Contains(err.Error(), "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER") {
		t.Errorf("GSSAPI: %v, want the known mechanisms listed", err)
	}
}
