// Package kafkaauth builds what a Kafka client needs to prove who it is
// and to trust the brokers: a TLS configuration from PEM files, and a SASL
// mechanism (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER). Flotilla's own
// clients (pkg/backbone) and the kafka driver's clients of the fleet's
// clusters (pkg/kafkadriver) both use it. Secrets reach it as values read
// by the caller from a file or the environment, never as settings.
package kafkaauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// TLS says how to speak TLS to the brokers. The zero value trusts the
// system's CAs and checks each broker's host name.
type TLS struct {
	// CAFile is a PEM file of the CAs to trust instead of the system's.
	CAFile string `yaml:"caFile,omitempty"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// mutual TLS; both or neither.
	CertFile string `yaml:"certFile,omitempty"`
	KeyFile  string `yaml:"keyFile,omitempty"`
	// ServerName is the name the brokers' certificates are checked
	// against, instead of the host name dialled.
	ServerName string `yaml:"serverName,omitempty"`
	// InsecureSkipVerify skips checking the brokers' certificates: for
	// tests only.
	InsecureSkipVerify bool `yaml:"insecureSkipVerify,omitempty"`
}

// FileError is a TLS file that cannot be used.
type FileError struct {
	Which string // "CA file" or "client certificate"
	File  string
	Err   error
}

func (e *FileError) Error() string { return fmt.Sprintf("tls %s %s: %v", e.Which, e.File, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }

// The files a FileError may be about.
const (
	WhichCA   = "CA file"
	WhichCert = "client certificate"
)

// Config reads the files and returns the TLS configuration. An error (a
// *FileError) names the file and what is wrong with it.
func (t TLS) Config() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // the operator asked for it, for tests
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, &FileError{WhichCA, t.CAFile, err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &FileError{WhichCA, t.CAFile, errors.New("holds no PEM certificate")}
		}
		cfg.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, &FileError{WhichCert, t.CertFile, fmt.Errorf("needs both its certificate file and its key file (key file %q)", t.KeyFile)}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, &FileError{WhichCert, t.CertFile, err}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// The SASL mechanisms Flotilla speaks.
const (
	Plain       = "PLAIN"
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
	OAuthBearer = "OAUTHBEARER"
)

// Mechanisms lists the SASL mechanisms, for messages.
var Mechanisms = []string{Plain, ScramSHA256, ScramSHA512, OAuthBearer}

// NormalizeMechanism returns the mechanism's canonical name, or an error
// that lists those known.
func NormalizeMechanism(name string) (string, error) {
	m := strings.ToUpper(strings.TrimSpace(name))
	for _, known := range Mechanisms {
		if m == known {
			return m, nil
		}
	}
	return "", fmt.Errorf("SASL mechanism %q is not one of %s", name, strings.Join(Mechanisms, ", "))
}

// Password returns the SASL mechanism of a user and password (PLAIN or
// SCRAM).
func Password(mechanism, user, pass string) (sasl.Mechanism, error) {
	m, err := NormalizeMechanism(mechanism)
	if err != nil {
		return nil, err
	}
	switch m {
	case Plain:
		return plain.Auth{User: user, Pass: pass}.AsMechanism(), nil
	case ScramSHA256:
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism(), nil
	case ScramSHA512:
		return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("SASL mechanism %s takes a token, not a password", m)
}

// ReadPasswordFile returns the password a file holds: its first line (a
// mounted secret, with or without a final newline). An empty one is an
// error that names the file.
func ReadPasswordFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	pass, _, _ := strings.Cut(string(data), "\n")
	if pass = strings.TrimRight(pass, "\r"); pass == "" {
		return "", fmt.Errorf("password file %s is empty", path)
	}
	return pass, nil
}

// Token returns an OAUTHBEARER mechanism whose token is read from file at
// each authentication, so that a token renewed on disk (by a sidecar, a
// cron job) is used by the next connection without a restart.
func Token(file string) sasl.Mechanism {
	return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
		b, err := os.ReadFile(file)
		if err != nil {
			return oauth.Auth{}, fmt.Errorf("OAUTHBEARER token file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return oauth.Auth{}, fmt.Errorf("OAUTHBEARER token file %s is empty", file)
		}
		return oauth.Auth{Token: tok}, nil
	})
}
