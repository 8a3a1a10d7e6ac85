package backbone

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flotilla-fleet/flotilla/internal/testcert"
	"github.com/flotilla-fleet/flotilla/pkg/kafkaauth"
)

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadSecurityRejectsWhatWouldConnectWrongly(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, file, want string }{
		{"misspelt field", "sasl:\n  mechanism: SCRAM-SHA-512\n  username: u\n  pasword_file: /p\n", "field pasword_file not found"},
		{"password in the file", "sasl:\n  mechanism: PLAIN\n  username: u\n  password: hunter2\n", "a password never sits in the config file"},
		{"unknown mechanism", "sasl:\n  mechanism: GSSAPI\n  username: u\n", `SASL mechanism "GSSAPI" is not one of`},
		{"no username", "sasl:\n  mechanism: SCRAM-SHA-256\n", "SCRAM-SHA-256 needs a username"},
		{"token without file", "sasl:\n  mechanism: OAUTHBEARER\n", "OAUTHBEARER needs a token file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadSecurity(write(t, dir, "c.yaml", c.file))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to say %q", err, c.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error repeats the password: %v", err)
			}
		})
	}
	s, err := LoadSecurity(write(t, dir, "empty.yaml", ""))
	if err != nil || s.TLS != nil || s.SASL != nil {
		t.Fatalf("an empty file: %+v, %v; want no TLS, no SASL", s, err)
	}
}

func TestPasswordComesFromItsFileOrTheEnvironment(t *testing.T) {
	dir := t.TempDir()
	env := func(vars map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	}
	file := write(t, dir, "pw", "from-file\nsecond line ignored\n")
	for _, c := range []struct {
		name string
		sasl SASL
		env  map[string]string
		want string // "" means an error
	}{
		{"file", SASL{Mechanism: "PLAIN", Username: "u", PasswordFile: file}, nil, "from-file"},
		{"default variable", SASL{Mechanism: "PLAIN", Username: "u"}, map[string]string{DefaultPasswordEnv: "from-env"}, "from-env"},
		{"named variable", SASL{Mechanism: "PLAIN", Username: "u", PasswordEnv: "MINE"}, map[string]string{"MINE": "mine", DefaultPasswordEnv: "not-this"}, "mine"},
		{"none", SASL{Mechanism: "PLAIN", Username: "u"}, nil, ""},
		{"empty file", SASL{Mechanism: "PLAIN", Username: "u", PasswordFile: write(t, dir, "empty", "\n")}, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.sasl.password(env(c.env))
			if c.want == "" {
				if err == nil {
					t.Fatalf("password %q, want an error", got)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("password %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

// TestClientsSpeakTLSAndSASL connects to an embedded broker that requires
// TLS and SCRAM: with the CA and the password the client works; without
// the CA, or with a wrong password, it does not.
func TestClientsSpeakTLSAndSASL(t *testing.T) {
	dir := t.TempDir()
	serverCert := testcert.New(t, "flotilla-test")
	ca := write(t, dir, "ca.pem", string(serverCert.CertPEM))
	pw := write(t, dir, "pw", "s3cret\n")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert.TLS}}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "planner", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	try := func(s Security) error {
		opts, err := s.ClientOpts(os.LookupEnv)
		if err != nil {
			return err
		}
		cfg := Config{Brokers: c.ListenAddrs(), ClientOpts: opts}
		cl, err := cfg.Client()
		if err != nil {
			return err
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return cl.Ping(ctx)
	}
	good := Security{TLS: &kafkaauth.TLS{CAFile: ca, ServerName: "127.0.0.1"}, SASL: &SASL{Mechanism: "SCRAM-SHA-512", Username: "planner", PasswordFile: pw}}
	if err := try(good); err != nil {
		t.Fatalf("with the CA and the password: %v", err)
	}
	noCA := good
	noCA.TLS = &kafkaauth.TLS{}
	if err := try(noCA); err == nil {
		t.Fatal("a broker whose certificate no trusted CA signed was accepted")
	}
	wrong := good
	wrong.SASL = &SASL{Mechanism: "SCRAM-SHA-512", Username: "planner", PasswordFile: write(t, dir, "wrong", "guess\n")}
	if err := try(wrong); err == nil {
		t.Fatal("a wrong password signed in")
	}
}
