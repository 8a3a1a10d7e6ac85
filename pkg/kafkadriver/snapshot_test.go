package kafkadriver

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

func snapshot(t *testing.T, d *Driver, c inventory.Cluster, op rollout.Operation) drivers.Snapshot {
	t.Helper()
	snap, err := d.Snapshot(ctxFor(t), drivers.Request{CommandID: "snap", Cluster: c, Operation: op})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if err := snap.Check(op); err != nil {
		t.Fatalf("Snapshot %+v: %v", snap, err)
	}
	return snap
}

func wantSnapshot(t *testing.T, got drivers.Snapshot, config map[string]string, unset ...string) {
	t.Helper()
	if !maps.Equal(got.Config, config) || !slices.Equal(got.Unset, unset) {
		t.Errorf("snapshot: config %v, unset %v; want config %v, unset %v", got.Config, got.Unset, config, unset)
	}
}

func TestSnapshot(t *testing.T) {
	targets(t, func(t *testing.T, tg target) {
		d := newDriver(t, Options{})
		ctx := ctxFor(t)
		c := tg.cluster("snapshot", nil)
		cleanupBrokerConfig(t, tg, clusterKey)
		retention := "topic:" + tg.topic + ":retention.ms"
		segment := "topic:" + tg.topic + ":segment.ms"
		op := rollout.Operation{Kind: rollout.Config, Config: map[string]string{clusterKey: "15006", segment: "3600000"}, Reset: []string{retention}}

		// Nothing overridden yet: every key is at its default (kfake lists
		// the default of clusterKey on the default resource; that is no
		// value of its own).
		wantSnapshot(t, snapshot(t, d, c, op), nil, clusterKey, retention, segment)

		if _, err := d.Apply(ctx, drivers.Request{CommandID: "c1", Cluster: c, Operation: configOp(clusterKey, "15007", retention, "7200000")}); err != nil {
			t.Fatal(err)
		}
		wantSnapshot(t, snapshot(t, d, c, op), map[string]string{clusterKey: "15007", retention: "7200000"}, segment)

		_, err := d.Snapshot(ctx, drivers.Request{CommandID: "snap", Cluster: c, Operation: configOp("topic:no-such-topic:retention.ms", "1")})
		if err == nil || !strings.Contains(err.Error(), "cluster snapshot: read retention.ms: topic no-such-topic does not exist") {
			t.Errorf("snapshot of a missing topic: %v", err)
		}
	})
}

func TestApplyReset(t *testing.T) {
	targets(t, func(t *testing.T, tg target) {
		d := newDriver(t, Options{})
		ctx := ctxFor(t)
		c := tg.cluster("reset", nil)
		cleanupBrokerConfig(t, tg, clusterKey)
		retention := "topic:" + tg.topic + ":retention.ms"
		if _, err := d.Apply(ctx, drivers.Request{CommandID: "c1", Cluster: c, Operation: configOp(clusterKey, "15008", retention, "7200000")}); err != nil {
			t.Fatal(err)
		}

		reset := rollout.Operation{Kind: rollout.Config, Reset: []string{retention, clusterKey}}
		res, err := d.Apply(ctx, drivers.Request{CommandID: "c2", Cluster: c, Operation: reset})
		if err != nil {
			t.Fatal(err)
		}
		if want := "reset " + clusterKey + " (was 15008) on cluster default; reset retention.ms (was 7200000) on topic " + tg.topic; res.Output != want {
			t.Errorf("output %q, want %q", res.Output, want)
		}
		wantSnapshot(t, snapshot(t, d, c, reset), nil, clusterKey, retention)
		if got := readBrokerDefault(t, tg, clusterKey); got == "15008" {
			t.Errorf("cluster-wide %s still reads 15008", clusterKey)
		}

		// Applied again, and as a new command: the keys are reset
		// already, nothing is sent.
		alters := countAlters(t, tg)
		for _, id := range []string{"c2", "c3"} {
			res, err = d.Apply(ctx, drivers.Request{CommandID: id, Cluster: c, Operation: reset})
			if err != nil {
				t.Fatal(err)
			}
			if res.Output != "already at desired values" {
				t.Errorf("%s again: output %q", id, res.Output)
			}
		}
		if alters != nil && alters.Load() != 0 {
			t.Errorf("re-applying resets sent %d IncrementalAlterConfigs", alters.Load())
		}

		// Set and reset in one operation.
		res, err = d.Apply(ctx, drivers.Request{CommandID: "c4", Cluster: c, Operation: rollout.Operation{
			Kind: rollout.Config, Config: map[string]string{retention: "3600000"}, Reset: []string{clusterKey}}})
		if err != nil {
			t.Fatal(err)
		}
		if want := "set retention.ms "; !strings.HasPrefix(res.Output, want) || !strings.HasSuffix(res.Output, " → 3600000 on topic "+tg.topic+"; already at desired values: "+clusterKey) {
			t.Errorf("output %q", res.Output)
		}
	})
}

// A reset goes through the brokers' validation with the keys set beside
// it: when one of them is refused, nothing is reset.
func TestApplyResetValidatesFirst(t *testing.T) {
	targets(t, func(t *testing.T, tg target) {
		d := newDriver(t, Options{})
		ctx := ctxFor(t)
		c := tg.cluster("reset-invalid", nil)
		cleanupBrokerConfig(t, tg, clusterKey)
		retention := "topic:" + tg.topic + ":retention.ms"
		if _, err := d.Apply(ctx, drivers.Request{CommandID: "c1", Cluster: c, Operation: configOp(retention, "7200000")}); err != nil {
			t.Fatal(err)
		}
		alters := countAlters(t, tg)
		_, err := d.Apply(ctx, drivers.Request{CommandID: "c2", Cluster: c, Operation: rollout.Operation{
			Kind: rollout.Config, Config: map[string]string{clusterKey: "soon"}, Reset: []string{retention}}})
		if err == nil || !strings.Contains(err.Error(), "validate "+clusterKey+" on cluster default: broker refused") {
			t.Fatalf("apply with an invalid value: %v", err)
		}
		if alters != nil && alters.Load() != 0 {
			t.Errorf("%d IncrementalAlterConfigs sent despite the invalid value", alters.Load())
		}
		wantSnapshot(t, snapshot(t, d, c, rollout.Operation{Kind: rollout.Config, Reset: []string{retention}}), map[string]string{retention: "7200000"})
	})
}

// kfake keeps one set of dynamic broker configs for the default resource
// and every broker, so a per-broker value is visible cluster-wide there;
// what this shows is that the driver reads and resets it on the broker.
func TestSnapshotAndResetBrokerConfig(t *testing.T) {
	tg := kfakeTarget(t, 3)
	tg.admin = adminFor(t, tg.addr)
	d := newDriver(t, Options{})
	ctx := ctxFor(t)
	c := tg.cluster("per-broker", nil)
	key := "broker:1:" + clusterKey
	if _, err := d.Apply(ctx, drivers.Request{CommandID: "c1", Cluster: c, Operation: configOp(key, "16000")}); err != nil {
		t.Fatal(err)
	}
	reset := rollout.Operation{Kind: rollout.Config, Reset: []string{key}}
	wantSnapshot(t, snapshot(t, d, c, reset), map[string]string{key: "16000"})
	res, err := d.Apply(ctx, drivers.Request{CommandID: "c2", Cluster: c, Operation: reset})
	if err != nil {
		t.Fatal(err)
	}
	if want := "reset " + clusterKey + " (was 16000) on broker 1"; res.Output != want {
		t.Errorf("output %q, want %q", res.Output, want)
	}
	wantSnapshot(t, snapshot(t, d, c, reset), nil, key)
}

// Kafka never returns the value of a sensitive config: one that is set
// cannot be recorded, so Snapshot fails and the executor does not act.
// kfake has no sensitive dynamic configs; its answer is doctored.
func TestSnapshotRefusesSetSensitiveConfig(t *testing.T) {
	tg := kfakeTarget(t, 1)
	tg.kfake.ControlKey(kmsg.DescribeConfigs.Int16(), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		tg.kfake.KeepControl()
		req := kr.(*kmsg.DescribeConfigsRequest)
		resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
		for _, rr := range req.Resources {
			r := kmsg.NewDescribeConfigsResponseResource()
			r.ResourceName, r.ResourceType = rr.ResourceName, rr.ResourceType
			cfg := kmsg.NewDescribeConfigsResponseResourceConfig()
			cfg.Name, cfg.IsSensitive, cfg.Source = "ssl.keystore.password", true, kmsg.ConfigSourceDynamicDefaultBrokerConfig
			r.Configs = append(r.Configs, cfg)
			resp.Resources = append(resp.Resources, r)
		}
		return resp, nil, true
	})
	d := newDriver(t, Options{})
	_, err := d.Snapshot(ctxFor(t), drivers.Request{CommandID: "c", Cluster: tg.cluster("secret", nil), Operation: configOp("ssl.keystore.password", "new")})
	if err == nil || !strings.Contains(err.Error(), "cluster secret: ssl.keystore.password on cluster default is sensitive and set") {
		t.Errorf("snapshot of a set sensitive key: %v", err)
	}
}

func TestSnapshotUnsupported(t *testing.T) {
	d := newDriver(t, Options{})
	c := inventory.Cluster{ID: "k", Driver: DriverName, Address: "127.0.0.1:1"}
	if _, err := d.Snapshot(ctxFor(t), drivers.Request{CommandID: "c", Cluster: c, Operation: rollout.Operation{Kind: rollout.Restart}}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("snapshot of a restart: %v, want ErrUnsupported", err)
	}
	if _, err := d.Snapshot(ctxFor(t), drivers.Request{CommandID: "c", Cluster: c, Operation: configOp("group:g:x", "1")}); err == nil || !strings.Contains(err.Error(), "unknown prefix") {
		t.Errorf("snapshot of a bad key: %v", err)
	}
}
