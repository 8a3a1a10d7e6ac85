// Package keys holds Flotilla's signing keys: Ed25519 key pairs in the
// standard PEM files (PKCS#8 private keys, PKIX public keys, as
// `openssl genpkey -algorithm ed25519` writes them), and the key ID that
// names a public key in signed records and in the trust store.
package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ID names a public key: the first 16 bytes of its SHA-256, in hex. It is
// what a signed record carries to say which key signed it.
func ID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:16])
}

// Signer signs with a private key and names it by its ID.
type Signer struct {
	ID  string
	key ed25519.PrivateKey
}

// NewSigner returns the signer of a private key.
func NewSigner(key ed25519.PrivateKey) Signer {
	return Signer{ID: ID(key.Public().(ed25519.PublicKey)), key: key}
}

// Sign returns the Ed25519 signature of msg.
func (s Signer) Sign(msg []byte) []byte { return ed25519.Sign(s.key, msg) }

// Public returns the signer's public key.
func (s Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Generate returns a new key pair.
func Generate() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}

// MarshalPrivate returns the PEM file of a private key (PKCS#8).
func MarshalPrivate(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublic returns the PEM file of a public key (PKIX).
func MarshalPublic(key ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivate reads a PEM private key; it must be Ed25519.
func ParsePrivate(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM \"PRIVATE KEY\" block (PKCS#8)")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an Ed25519 key", k)
	}
	return key, nil
}

// ParsePublic reads a PEM public key; it must be Ed25519.
func ParsePublic(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM \"PUBLIC KEY\" block (PKIX)")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an Ed25519 key", k)
	}
	return key, nil
}

// LoadSigner reads a private key file. It refuses a file that others than
// its owner may read: a signing key is the principal's identity.
func LoadSigner(path string) (Signer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Signer{}, fmt.Errorf("signing key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return Signer{}, fmt.Errorf("signing key %s: readable by others (mode %04o): chmod 600 it", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Signer{}, fmt.Errorf("signing key: %w", err)
	}
	key, err := ParsePrivate(data)
	if err != nil {
		return Signer{}, fmt.Errorf("signing key %s: %w", path, err)
	}
	return NewSigner(key), nil
}

// LoadPublic reads a public key file.
func LoadPublic(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	key, err := ParsePublic(data)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return key, nil
}

// WriteKeyPair writes a new key pair to prefix (the private key, mode 0600)
// and prefix.pub; it refuses to overwrite either. It returns the signer.
func WriteKeyPair(prefix string) (Signer, error) {
	pub, priv, err := Generate()
	if err != nil {
		return Signer{}, err
	}
	privPEM, err := MarshalPrivate(priv)
	if err != nil {
		return Signer{}, err
	}
	pubPEM, err := MarshalPublic(pub)
	if err != nil {
		return Signer{}, err
	}
	if err := writeNew(prefix+".pub", pubPEM, 0o644); err != nil {
		return Signer{}, err
	}
	if err := writeNew(prefix, privPEM, 0o600); err != nil {
		os.Remove(prefix + ".pub")
		return Signer{}, err
	}
	return NewSigner(priv), nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
