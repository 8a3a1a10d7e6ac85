package security

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/kafkadriver"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// TestSecretsNeverReachTopicsOrLogs runs a config rollout through the
// kafka driver over two clusters that require SASL, one whose password
// the executor and the monitor read from an environment variable, one
// from a file, with Flotilla itself on a broker that signs its services
// in. Then it reads every record of every topic of the namespace (keys,
// values, headers) and every line the services logged, at debug level,
// for each secret the run used: none may be there.
func TestSecretsNeverReachTopicsOrLogs(t *testing.T) {
	run := uuid.NewString()[:8]
	envSecret, fileSecret := "env-secret-"+run, "file-secret-"+run
	t.Setenv("ORDERS_PASSWORD", envSecret)
	passFile := filepath.Join(t.TempDir(), "payments-password")
	if err := os.WriteFile(passFile, []byte(fileSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const topic = "orders"
	target := func(id, user, pass string, where map[string]string) inventory.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", user, pass))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		settings := map[string]string{
			"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
			"managed.configs": "topic:" + topic + ":retention.ms",
		}
		for k, v := range where {
			settings[k] = v
		}
		createTopic(t, c.ListenAddrs(), user, pass, topic)
		return inventory.Cluster{ID: id, Driver: kafkadriver.DriverName, Address: strings.Join(c.ListenAddrs(), ","),
			Labels: map[string]string{"kind": "sasl-target"}, Settings: settings}
	}
	targets := []inventory.Cluster{
		target("orders-eu", "orders-op", envSecret, map[string]string{"sasl.password.env": "ORDERS_PASSWORD"}),
		target("payments-eu", "payments-op", fileSecret, map[string]string{"sasl.password.file": passFile}),
	}

	var logs lockedBuffer
	kd := kafkadriver.New(kafkadriver.Options{})
	t.Cleanup(kd.Close)
	sf := startSecuredWith(t, fleettest.Options{Clusters: 3, Drivers: kd.Register, Log: &logs})
	sf.Register(targets...)
	id := sf.Submit(rollout.Spec{
		Name:      "retention",
		Operation: rollout.Operation{Kind: rollout.Config, Config: map[string]string{"topic:" + topic + ":retention.ms": "86400000"}},
		Selector:  "kind=sasl-target",
	})
	w := sf.Await(id, time.Second, 2*time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("the rollout over SASL clusters ended %s (%s)", w.State, w.Reason)
	}

	secrets := map[string]string{"orders-eu's password (environment)": envSecret, "payments-eu's password (file)": fileSecret,
		"the broker's admin password": sf.broker.AdminPass}
	for user, pass := range sf.passwords {
		secrets[user+"'s password"] = pass
	}
	var seen bytes.Buffer // everything the topics hold
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tp := range sf.Backbone.Names().All() {
		err := logtable.ReadToEnd(ctx, sf.Backbone.Opts(), tp, nil, func(r *kgo.Record) {
			seen.Write(r.Key)
			seen.Write(r.Value)
			for _, h := range r.Headers {
				seen.WriteString(h.Key)
				seen.Write(h.Value)
			}
		})
		if err != nil {
			t.Fatalf("read %s: %v", tp, err)
		}
	}
	// The scan sees what it should: the run's records and logs are there.
	if !bytes.Contains(seen.Bytes(), []byte("payments-eu")) || !bytes.Contains(seen.Bytes(), []byte("ORDERS_PASSWORD")) {
		t.Fatal("the topics do not hold the run's inventory: the scan reads nothing")
	}
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Fatal("no debug line logged: the scan of the logs reads nothing")
	}
	for what, secret := range secrets {
		if bytes.Contains(seen.Bytes(), []byte(secret)) {
			t.Errorf("%s is in a topic", what)
		}
		if strings.Contains(logs.String(), secret) {
			t.Errorf("%s is in the logs", what)
		}
	}
	t.Logf("%d secrets looked for in %d bytes of records and %d bytes of logs", len(secrets), seen.Len(), len(logs.String()))
}

func createTopic(t *testing.T, addrs []string, user, pass, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...)}, saslOpt(t, "SCRAM-SHA-512", user, pass))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, map[string]*string{"retention.ms": kadm.StringPtr("604800000")}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create %s: %v", topic, err)
	}
}

// lockedBuffer collects log lines written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
