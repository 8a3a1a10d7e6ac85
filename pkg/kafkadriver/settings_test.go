package kafkadriver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/flotilla-fleet/flotilla/internal/testcert"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
)

func cluster(settings map[string]string) inventory.Cluster {
	return inventory.Cluster{ID: "prod-eu-1", Driver: DriverName, Address: "k1:9092, k2:9092", Settings: settings}
}

func TestParseSettingsErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings map[string]string
		setting  string // the setting the error must name
		want     string // and a part of its message
	}{
		{"unknown key", map[string]string{"sasl.mechansim": "PLAIN"}, "sasl.mechansim", "unknown setting"},
		{"password in the inventory", map[string]string{"sasl.password": "hunter2"}, "sasl.password", "environment variable"},
		{"bad protocol", map[string]string{"security.protocol": "TLS"}, "security.protocol", `"TLS" is not one of`},
		{"bad mechanism", map[string]string{"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI", "sasl.username": "u", "sasl.password.env": "P"}, "sasl.mechanism", `"GSSAPI" is not one of`},
		{"sasl without mechanism", map[string]string{"security.protocol": "SASL_PLAINTEXT", "sasl.username": "u", "sasl.password.env": "P"}, "sasl.mechanism", "required with security.protocol SASL_PLAINTEXT"},
		{"sasl without user", map[string]string{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.password.env": "P"}, "sasl.username", "required"},
		{"sasl without password env", map[string]string{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u"}, "sasl.password.env", "name where the password is"},
		{"sasl with password env and file", map[string]string{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password.env": "P", "sasl.password.file": "/p"}, "sasl.password.env", "one of them"},
		{"sasl settings on plaintext", map[string]string{"sasl.username": "u"}, "sasl.username", "needs security.protocol SASL_PLAINTEXT or SASL_SSL (it is PLAINTEXT)"},
		{"tls settings without tls", map[string]string{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password.env": "P", "tls.ca.file": "/ca.pem"}, "tls.ca.file", "needs security.protocol SSL or SASL_SSL"},
		{"cert without key", map[string]string{"security.protocol": "SSL", "tls.cert.file": "/c.pem"}, "tls.cert.file", "set both or neither"},
		{"bad skip verify", map[string]string{"security.protocol": "SSL", "tls.insecure.skip.verify": "yes please"}, "tls.insecure.skip.verify", "not true or false"},
		{"expected brokers not a number", map[string]string{"expected.brokers": "three"}, "expected.brokers", `"three" is not a whole number ≥ 1`},
		{"expected brokers zero", map[string]string{"expected.brokers": "0"}, "expected.brokers", "≥ 1"},
		{"timeout not a number", map[string]string{"request.timeout.ms": "10s"}, "request.timeout.ms", "milliseconds"},
		{"managed config bad prefix", map[string]string{"managed.configs": "log.retention.ms,group:g:x"}, "managed.configs", `unknown prefix "group"`},
		{"managed config bad broker", map[string]string{"managed.configs": "broker:one:log.retention.ms"}, "managed.configs", `broker ID "one"`},
		{"managed config empty topic", map[string]string{"managed.configs": "topic::retention.ms"}, "managed.configs", "empty topic name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseSettings(cluster(tc.settings))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalidSetting) {
				t.Errorf("error %q does not match ErrInvalidSetting", err)
			}
			for _, want := range []string{"cluster prod-eu-1", "setting " + tc.setting + ":", tc.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

func TestParseSettings(t *testing.T) {
	s, err := parseSettings(cluster(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.protocol != "PLAINTEXT" || s.expectedBrokers != 0 || s.requestTimeout != DefaultRequestTimeout || s.managed != nil {
		t.Errorf("defaults: %+v", s)
	}

	s, err = parseSettings(cluster(map[string]string{
		"security.protocol": "sasl_ssl", "sasl.mechanism": "scram-sha-512", "sasl.username": "flotilla",
		"sasl.password.env": "KAFKA_PASSWORD", "tls.server.name": "kafka.internal", "tls.insecure.skip.verify": "false",
		"expected.brokers": "3", "request.timeout.ms": "2500",
		"managed.configs": " topic:orders:retention.ms, log.retention.ms,,broker:2:log.cleaner.threads,log.retention.ms",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.protocol != "SASL_SSL" || s.mechanism != "SCRAM-SHA-512" || s.expectedBrokers != 3 || s.requestTimeout != 2500*time.Millisecond {
		t.Errorf("parsed: %+v", s)
	}
	var managed []string
	for _, k := range s.managed {
		managed = append(managed, k.String())
	}
	// Deduplicated, and ordered cluster-wide, broker, topic.
	if got, want := strings.Join(managed, ","), "log.retention.ms,broker:2:log.cleaner.threads,topic:orders:retention.ms"; got != want {
		t.Errorf("managed = %s, want %s", got, want)
	}
}

func TestParseConfigKey(t *testing.T) {
	for _, tc := range []struct {
		in, want, resource, err string
	}{
		{in: "log.retention.ms", want: "log.retention.ms", resource: "cluster default"},
		{in: " compression.type ", want: "compression.type", resource: "cluster default"},
		{in: "broker:3:log.cleaner.threads", want: "broker:3:log.cleaner.threads", resource: "broker 3"},
		{in: "topic:orders.v1:retention.ms", want: "topic:orders.v1:retention.ms", resource: "topic orders.v1"},
		{in: "", err: "empty config key"},
		{in: "topic:orders", err: "want key, broker:ID:key or topic:NAME:key"},
		{in: "topic:orders:", err: "want key"},
		{in: "broker:-1:x", err: "not a whole number"},
		{in: "cluster:x:y", err: "unknown prefix"},
	} {
		k, err := parseConfigKey(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseConfigKey(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || k.String() != tc.want || k.resource() != tc.resource {
			t.Errorf("parseConfigKey(%q) = %s on %s, %v; want %s on %s", tc.in, k, k.resource(), err, tc.want, tc.resource)
		}
	}
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// The option builder turns each SASL mechanism into the franz-go mechanism
// that authenticates as the configured user with the password from the
// environment.
func TestConnSASL(t *testing.T) {
	for _, tc := range []struct {
		mechanism string
		first     string // the client's first SASL message, as far as it is deterministic
	}{
		{"PLAIN", "\x00flotilla\x00s3cret"},
		{"SCRAM-SHA-256", "n,,n=flotilla,r="},
		{"SCRAM-SHA-512", "n,,n=flotilla,r="},
	} {
		t.Run(tc.mechanism, func(t *testing.T) {
			c := cluster(map[string]string{
				"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": tc.mechanism,
				"sasl.username": "flotilla", "sasl.password.env": "KAFKA_PASSWORD",
			})
			s, err := parseSettings(c)
			if err != nil {
				t.Fatal(err)
			}
			cn, err := s.conn(c, env(map[string]string{"KAFKA_PASSWORD": "s3cret"}))
			if err != nil {
				t.Fatal(err)
			}
			if cn.tls != nil {
				t.Error("SASL_PLAINTEXT dials TLS")
			}
			if got := strings.Join(cn.seeds, "|"); got != "k1:9092|k2:9092" {
				t.Errorf("seeds = %s", got)
			}
			if cn.sasl == nil || cn.sasl.Name() != tc.mechanism {
				t.Fatalf("mechanism = %v, want %s", cn.sasl, tc.mechanism)
			}
			_, msg, err := cn.sasl.Authenticate(context.Background(), "k1:9092")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(msg), tc.first) {
				t.Errorf("first message %q, want prefix %q", msg, tc.first)
			}

			// And the client is built with exactly that mechanism.
			cl, err := kgo.NewClient(cn.opts()...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			got, _ := cl.OptValue(kgo.SASL).([]sasl.Mechanism)
			if len(got) != 1 || got[0].Name() != tc.mechanism {
				t.Errorf("client SASL = %v", got)
			}

			// Without the variable, the error says which one is missing.
			_, err = s.conn(c, env(nil))
			if !errors.Is(err, ErrInvalidSetting) || !strings.Contains(err.Error(), "environment variable KAFKA_PASSWORD is not set") {
				t.Errorf("missing password: %v", err)
			}
		})
	}
}

func TestConnTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := testcert.New(t, "kafka.internal").Write(t, dir, "cert.pem", "key.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}

	c := cluster(map[string]string{
		"security.protocol": "SSL", "tls.ca.file": certFile, "tls.cert.file": certFile, "tls.key.file": keyFile,
		"tls.server.name": "kafka.internal",
	})
	s, err := parseSettings(c)
	if err != nil {
		t.Fatal(err)
	}
	cn, err := s.conn(c, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cn.tls == nil || cn.tls.RootCAs == nil || len(cn.tls.Certificates) != 1 || cn.tls.ServerName != "kafka.internal" || cn.tls.InsecureSkipVerify {
		t.Errorf("tls config: %+v", cn.tls)
	}
	if cn.sasl != nil {
		t.Error("SSL without SASL authenticates with SASL")
	}

	for _, tc := range []struct {
		name     string
		settings map[string]string
		want     string
	}{
		{"missing CA file", map[string]string{"security.protocol": "SSL", "tls.ca.file": filepath.Join(dir, "nope.pem")}, "setting tls.ca.file: tls CA file"},
		{"CA file without certificates", map[string]string{"security.protocol": "SSL", "tls.ca.file": garbage}, "holds no PEM certificate"},
		{"bad key pair", map[string]string{"security.protocol": "SSL", "tls.cert.file": certFile, "tls.key.file": garbage}, "setting tls.cert.file: tls client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cluster(tc.settings)
			s, err := parseSettings(c)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.conn(c, env(nil))
			if !errors.Is(err, ErrInvalidSetting) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "cluster prod-eu-1") {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}

	c = cluster(map[string]string{"security.protocol": "SSL", "tls.insecure.skip.verify": "true"})
	s, _ = parseSettings(c)
	if cn, err := s.conn(c, env(nil)); err != nil || !cn.tls.InsecureSkipVerify || cn.tls.RootCAs != nil {
		t.Errorf("skip verify: %+v, %v", cn.tls, err)
	}

	c.Address = " , "
	if _, err := s.conn(c, env(nil)); !errors.Is(err, ErrInvalidSetting) || !strings.Contains(err.Error(), "no bootstrap servers") {
		t.Errorf("empty address: %v", err)
	}
}
