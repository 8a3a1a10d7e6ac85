package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/execdriver"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/kafkadriver"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// kafkaTargets starts embedded Kafka clusters to act as the fleet, plus
// the real broker of FLOTILLA_TEST_BROKERS when there is one, and creates
// on each a topic whose config the rollout changes.
func kafkaTargets(t *testing.T, n int, topic string) []inventory.Cluster {
	var targets []inventory.Cluster
	addrs := map[string][]string{}
	for i := 1; i <= n; i++ {
		c, err := kfake.NewCluster(kfake.NumBrokers(3))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		addrs[fmt.Sprintf("kfake-%d", i)] = c.ListenAddrs()
	}
	if b := os.Getenv("FLOTILLA_TEST_BROKERS"); b != "" {
		addrs["real-kafka"] = strings.Split(b, ",")
	}
	for id, a := range addrs {
		cl, err := kgo.NewClient(kgo.SeedBrokers(a...))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, map[string]*string{"retention.ms": kadm.StringPtr("604800000")}, topic)
		cancel()
		cl.Close()
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatalf("create %s on %s: %v", topic, id, err)
		}
		brokers := "3"
		if id == "real-kafka" {
			brokers = "1"
		}
		targets = append(targets, inventory.Cluster{
			ID: id, Driver: kafkadriver.DriverName, Address: strings.Join(a, ","),
			Labels: map[string]string{"kind": "kafka-target", "env": "test"},
			Settings: map[string]string{
				"expected.brokers": brokers,
				"managed.configs":  "topic:" + topic + ":retention.ms",
			},
		})
	}
	return targets
}

// TestConfigRolloutOnKafkaClusters rolls a topic config change over real
// Kafka-protocol clusters with the kafka driver: every target ends with the
// new value, and the monitor reports the change it sees.
func TestConfigRolloutOnKafkaClusters(t *testing.T) {
	t.Parallel()
	kd := kafkadriver.New(kafkadriver.Options{})
	t.Cleanup(kd.Close)
	f := fleettest.Start(t, fleettest.Options{Clusters: 5, Drivers: kd.Register})
	topic := "orders-" + f.Backbone.Namespace
	targets := kafkaTargets(t, 3, topic)
	f.Register(targets...)

	key := "topic:" + topic + ":retention.ms"
	detail := "config." + key
	// The monitor knows the targets and their current value before the change.
	before := map[string]string{}
	if !f.Eventually(time.Second, time.Minute, func() bool {
		healths := f.Healths()
		for _, c := range targets {
			h, ok := healths[c.ID]
			if !ok || h.Status != records.HealthHealthy || h.Details[detail] != "604800000" {
				return false
			}
			before[c.ID] = h.ConfigHash
		}
		return true
	}) {
		t.Fatalf("the monitor did not report every target healthy with retention 604800000: %v", f.HealthOf(targets))
	}

	id := f.Submit(rollout.Spec{
		Name:      "retention-1d",
		Operation: rollout.Operation{Kind: rollout.Config, Config: map[string]string{key: "86400000"}},
		Selector:  "kind=kafka-target",
		Phases:    []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}, Bake: 30 * time.Second}},
	})
	w := f.Await(id, time.Second, 2*time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded || len(w.Targets) != len(targets) {
		t.Fatalf("state %s (%s) over %d targets, want succeeded over %d", w.State, w.Reason, len(w.Targets), len(targets))
	}
	healths := f.Healths()
	for _, c := range targets {
		h := healths[c.ID]
		if h.Details[detail] != "86400000" || h.ConfigHash == before[c.ID] {
			t.Errorf("%s: the monitor reports %s=%q with hash %s (was %s), want the new value and a new hash", c.ID, key, h.Details[detail], h.ConfigHash, before[c.ID])
		}
	}
	// Applying again changes nothing: the driver converges.
	again := f.Submit(rollout.Spec{
		Name:      "retention-1d-again",
		Operation: rollout.Operation{Kind: rollout.Config, Config: map[string]string{key: "86400000"}},
		Selector:  "kind=kafka-target",
	})
	f.Await(again, time.Second, time.Minute, "the second rollout finishing", func(w *decide.Workflow) bool { return w.State == records.WorkflowSucceeded })
	for _, ev := range f.Operations() {
		if ev.WorkflowID == again && ev.Status == records.OperationSucceeded && !strings.Contains(ev.Output, "already at desired") {
			t.Errorf("%s: second apply output %q, want it to find the value already set", ev.ClusterID, ev.Output)
		}
	}
}

// TestExecDriverRunsTheOperatorsCommand upgrades clusters through an exec
// driver whose script records each run: every cluster's script ran once,
// with the cluster and the operation in its environment.
func TestExecDriverRunsTheOperatorsCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "upgrade.sh")
	mustWrite(t, script, `#!/bin/sh
set -eu
echo "$FLOTILLA_COMMAND_ID $FLOTILLA_OPERATION $FLOTILLA_TARGET_VERSION $FLOTILLA_LABEL_REGION" >> "$STATE/$FLOTILLA_CLUSTER_ID.log"
echo "$FLOTILLA_TARGET_VERSION" > "$STATE/$FLOTILLA_CLUSTER_ID.version"
echo "upgraded $FLOTILLA_CLUSTER_ID"
`, 0o755)
	probe := filepath.Join(dir, "probe.sh")
	mustWrite(t, probe, `#!/bin/sh
v=$(cat "$STATE/$FLOTILLA_CLUSTER_ID.version" 2>/dev/null || echo "$FLOTILLA_CLUSTER_VERSION")
printf '{"version":"%s"}\n' "$v"
`, 0o755)
	config := filepath.Join(dir, "drivers.yaml")
	mustWrite(t, config, fmt.Sprintf(`drivers:
  script:
    apply: [%s]
    probe: [%s]
    operations: [upgrade]
    timeout: 1m
    env: {STATE: %s}
`, script, probe, dir), 0o644)
	cfg, err := execdriver.LoadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	f := fleettest.Start(t, fleettest.Options{Clusters: 5, Drivers: func(r *drivers.Registry) { cfg.Register(r) }})
	var targets []inventory.Cluster
	for i := 1; i <= 4; i++ {
		targets = append(targets, inventory.Cluster{ID: fmt.Sprintf("vm-%d", i), Driver: "script", Address: fmt.Sprintf("vm-%d.example:9092", i),
			Version: "3.8.0", Labels: map[string]string{"kind": "vm-kafka", "region": "eu-west-1"}})
	}
	f.Register(targets...)
	id := f.Submit(rollout.Spec{
		Name:      "vm-upgrade",
		Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"},
		Selector:  "kind=vm-kafka",
		Phases:    []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}}},
	})
	w := f.Await(id, time.Second, time.Minute, "the rollout finishing", finished)
	if w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s)", w.State, w.Reason)
	}
	for _, c := range targets {
		raw, err := os.ReadFile(filepath.Join(dir, c.ID+".log"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		tg := w.Targets[c.ID]
		if len(lines) != 1 || lines[0] != tg.CommandID+" upgrade 3.9.1 eu-west-1" {
			t.Errorf("%s: script runs %q, want one run of command %s", c.ID, lines, tg.CommandID)
		}
		if tg.Version != "3.9.1" {
			t.Errorf("%s: version after the operation %q, want 3.9.1", c.ID, tg.Version)
		}
	}
	for _, ev := range f.Operations() {
		if ev.WorkflowID == id && ev.Status == records.OperationSucceeded && !strings.Contains(ev.Output, "upgraded "+ev.ClusterID) {
			t.Errorf("%s: output %q does not carry the script's output", ev.ClusterID, ev.Output)
		}
	}
}

func mustWrite(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}
