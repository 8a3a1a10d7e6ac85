package backbone

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"

	"github.com/flotilla-fleet/flotilla/pkg/kafkaauth"
)

// Security says how Flotilla's clients authenticate to the backbone and
// trust it: TLS, SASL, both or neither. It comes from a client config
// file (LoadSecurity), flags and the environment; secrets come only from
// files or the environment, so that they never appear in a process's
// arguments, and are read when a client is built, never logged.
type Security struct {
	// TLS, when set, makes every connection TLS.
	TLS *kafkaauth.TLS `yaml:"tls,omitempty"`
	// SASL, when set, authenticates every connection.
	SASL *SASL `yaml:"sasl,omitempty"`
}

// SASL names a SASL principal and where its secret is.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
	Mechanism string `yaml:"mechanism,omitempty"`
	// Username is the principal (PLAIN and SCRAM).
	Username string `yaml:"username,omitempty"`
	// PasswordFile holds the password (PLAIN and SCRAM); its first line
	// is used.
	PasswordFile string `yaml:"passwordFile,omitempty"`
	// PasswordEnv names the environment variable holding the password,
	// when there is no PasswordFile.
	PasswordEnv string `yaml:"passwordEnv,omitempty"`
	// TokenFile holds the OAUTHBEARER token, read again at each
	// authentication so that a renewed token is picked up.
	TokenFile string `yaml:"tokenFile,omitempty"`
}

// DefaultPasswordEnv is the environment variable a password is read from
// when neither a password file nor another variable is named.
const DefaultPasswordEnv = "FLOTILLA_SASL_PASSWORD"

// LoadSecurity reads a client config file (YAML):
//
//	tls:
//	  caFile: /etc/flotilla/ca.pem
//	  certFile: /etc/flotilla/planner.pem   # mutual TLS, optional
//	  keyFile: /etc/flotilla/planner.key
//	sasl:
//	  mechanism: SCRAM-SHA-512
//	  username: flotilla-planner
//	  passwordFile: /run/secrets/planner-password
//
// An unknown field is an error that names it: a misspelt "pasword" must
// not silently connect without a password. A file with a password in it
// is refused: the password belongs in its own file or the environment.
func LoadSecurity(path string) (Security, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Security{}, fmt.Errorf("kafka client config: %w", err)
	}
	var s Security
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil && !errors.Is(err, io.EOF) {
		if strings.Contains(err.Error(), `field password not found`) {
			return Security{}, fmt.Errorf("kafka client config %s: a password never sits in the config file: put it in a file of its own (sasl.passwordFile) or in the environment (sasl.passwordEnv, default %s)", path, DefaultPasswordEnv)
		}
		return Security{}, fmt.Errorf("kafka client config %s: %w", path, err)
	}
	if err := s.Validate(); err != nil {
		return Security{}, fmt.Errorf("kafka client config %s: %w", path, err)
	}
	return s, nil
}

// Validate checks that the settings are complete, without reading any file.
func (s Security) Validate() error {
	if s.SASL == nil {
		return nil
	}
	m, err := kafkaauth.NormalizeMechanism(s.SASL.Mechanism)
	if err != nil {
		return fmt.Errorf("sasl: %w", err)
	}
	if m == kafkaauth.OAuthBearer {
		if s.SASL.TokenFile == "" {
			return errors.New("sasl: OAUTHBEARER needs a token file (sasl.tokenFile, --sasl-token-file)")
		}
		return nil
	}
	if s.SASL.Username == "" {
		return fmt.Errorf("sasl: %s needs a username (sasl.username, --sasl-username, FLOTILLA_SASL_USERNAME)", m)
	}
	return nil
}

// Username returns the SASL principal's name, "" without SASL (or with a
// token, whose principal the broker reads from it).
func (s Security) Username() string {
	if s.SASL == nil {
		return ""
	}
	return s.SASL.Username
}

// ClientOpts reads the secrets and files and returns the client options.
// lookupEnv is os.LookupEnv outside tests. An error says which setting is
// missing or which file cannot be used; it never holds a secret.
func (s Security) ClientOpts(lookupEnv func(string) (string, bool)) ([]kgo.Opt, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var opts []kgo.Opt
	if s.TLS != nil {
		cfg, err := s.TLS.Config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if s.SASL != nil {
		m, _ := kafkaauth.NormalizeMechanism(s.SASL.Mechanism)
		if m == kafkaauth.OAuthBearer {
			if _, err := os.Stat(s.SASL.TokenFile); err != nil {
				return nil, fmt.Errorf("sasl: OAUTHBEARER token file: %w", err)
			}
			return append(opts, kgo.SASL(kafkaauth.Token(s.SASL.TokenFile))), nil
		}
		pass, err := s.SASL.password(lookupEnv)
		if err != nil {
			return nil, err
		}
		mech, err := kafkaauth.Password(m, s.SASL.Username, pass)
		if err != nil {
			return nil, fmt.Errorf("sasl: %w", err)
		}
		opts = append(opts, kgo.SASL(mech))
	}
	return opts, nil
}

// password reads the password from its file, or from its environment
// variable.
func (s SASL) password(lookupEnv func(string) (string, bool)) (string, error) {
	if s.PasswordFile != "" {
		pass, err := kafkaauth.ReadPasswordFile(s.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("sasl: %w", err)
		}
		return pass, nil
	}
	env := s.PasswordEnv
	if env == "" {
		env = DefaultPasswordEnv
	}
	pass, ok := lookupEnv(env)
	if !ok || pass == "" {
		return "", fmt.Errorf("sasl: no password for %s: give a password file (sasl.passwordFile, --sasl-password-file) or set %s", s.Username, env)
	}
	return pass, nil
}
