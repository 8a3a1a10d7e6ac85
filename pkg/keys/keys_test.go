package keys

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyPairFilesRoundTrip(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "alice")
	s, err := WriteKeyPair(prefix)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadSigner(prefix)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublic(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if loaded.ID != s.ID || ID(pub) != s.ID || len(s.ID) != 32 {
		t.Fatalf("IDs differ: written %s, loaded %s, public %s", s.ID, loaded.ID, ID(pub))
	}
	msg := []byte("rollout 1")
	if !ed25519.Verify(pub, msg, loaded.Sign(msg)) {
		t.Fatal("a signature of the loaded key does not verify with the public key file")
	}
	if _, err := WriteKeyPair(prefix); err == nil {
		t.Fatal("WriteKeyPair overwrote an existing key")
	}
}

func TestLoadSignerRefusesAKeyOthersCanRead(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "bob")
	if _, err := WriteKeyPair(prefix); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(prefix, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadSigner(prefix)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("err = %v, want one that says to chmod 600 the key", err)
	}
}

func TestParseRejectsOtherKeys(t *testing.T) {
	if _, err := ParsePublic([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")); err == nil {
		t.Fatal("a private key block parsed as a public key")
	}
	if _, err := ParsePrivate([]byte("not pem")); err == nil {
		t.Fatal("garbage parsed as a private key")
	}
}
