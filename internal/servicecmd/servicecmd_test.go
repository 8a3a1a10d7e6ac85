package servicecmd

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/services/notifier/notifier"
	"github.com/flotilla-fleet/flotilla/services/notifier/sinks"
)

// TestNotifierWithSinks runs the notifier as its command does, with a
// routing file: a health change reaches the webhook, signed, as the
// notifier's notification. A bad routing file stops it at once, naming the
// field.
func TestNotifierWithSinks(t *testing.T) {
	secret := sinks.NewSecret([]byte("a secret of the notifier's test!"))
	got := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := sinks.Verify([]sinks.Secret{secret}, r.Header, body, time.Now(), 0); err != nil {
			t.Errorf("webhook: %v", err)
		}
		got <- r.Header.Get(sinks.HeaderID) + " " + string(body)
	}))
	defer srv.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "sinks.yaml")
	write := func(yaml string) {
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("destinations:\n  - {name: hook, type: webhook, url: '" + srv.URL + "', secretEnv: TEST_SECRET, start: start, timeout: 3s, rules: [{types: [io.flotilla.health.*]}]}\n")
	t.Setenv("TEST_SECRET", secret.Encode())

	bb := backbone.Config{Brokers: brokertest.Addrs(t), Namespace: fmt.Sprintf("svctest%d", time.Now().UnixNano())}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := bb.EnsureTopics(ctx, 3, 1); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = RunNotifier(runCtx, notifier.Config{Backbone: bb, InstanceID: "t0"}, file, nil) })

	h := records.Health{Envelope: records.Envelope{ID: "h-1", Time: time.Now().UTC(), Principal: "monitor"},
		ClusterID: "c-1", Status: records.HealthUnhealthy, PreviousStatus: records.HealthHealthy, ObservedAt: time.Now().UTC()}
	v, err := records.Encode(h)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := bb.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: bb.Names().Health, Key: []byte("c-1"), Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if !strings.Contains(d, `"type":"io.flotilla.health.changed"`) || !strings.Contains(d, `"subject":"clusters/c-1"`) {
			t.Errorf("webhook got %s", d)
		}
	case <-ctx.Done():
		t.Fatal("the webhook got nothing within 60s")
	}
	stop()
	wg.Wait()
	if runErr != nil {
		t.Errorf("RunNotifier: %v", runErr)
	}

	write("destinations:\n  - {name: hook, type: webhook, url: '" + srv.URL + "', secretEnv: TEST_SECRET, maxAttempts: -1}\n")
	if err := RunNotifier(ctx, notifier.Config{Backbone: bb, InstanceID: "t0"}, file, nil); err == nil ||
		!strings.Contains(err.Error(), `--sinks: sinks `+file+`: destination "hook": maxAttempts: -1: want at least 1`) {
		t.Errorf("RunNotifier with a bad routing file: %v", err)
	}
	if err := CheckSinks(file); err == nil {
		t.Error("CheckSinks passed a bad routing file")
	}
}

// TestSecurityFlagsOverrideTheConfigFile: a flag replaces the file's
// value field by field, and SASL flags without a mechanism are an error
// that says so.
func TestSecurityFlagsOverrideTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "kafka.yaml")
	os.WriteFile(file, []byte("tls:\n  caFile: /etc/ca.pem\nsasl:\n  mechanism: SCRAM-SHA-512\n  username: from-file\n  passwordEnv: FILE_PW\n"), 0o600)
	f := SecurityFlags{ConfigFile: file, SASLUsername: "from-flag", SASLPasswordFile: "/run/pw", TLSServerName: "kafka.internal"}
	s, err := f.Security()
	if err != nil {
		t.Fatal(err)
	}
	if s.SASL.Mechanism != "SCRAM-SHA-512" || s.SASL.Username != "from-flag" || s.SASL.PasswordFile != "/run/pw" || s.SASL.PasswordEnv != "" {
		t.Errorf("sasl %+v: want the file's mechanism, the flags' user and password file (and no variable)", *s.SASL)
	}
	if s.TLS.CAFile != "/etc/ca.pem" || s.TLS.ServerName != "kafka.internal" {
		t.Errorf("tls %+v: want the file's CA and the flag's server name", *s.TLS)
	}
	if _, err := (&SecurityFlags{SASLUsername: "u"}).Security(); err == nil || !strings.Contains(err.Error(), "--sasl-mechanism") {
		t.Errorf("--sasl-username alone: err %v, want one naming --sasl-mechanism", err)
	}
	if s, err := (&SecurityFlags{}).Security(); err != nil || s.TLS != nil || s.SASL != nil {
		t.Errorf("no flags: %+v, %v; want plaintext", s, err)
	}
}
