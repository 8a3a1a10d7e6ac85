package kafkadriver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// target is a Kafka cluster the suite runs against: an embedded kfake
// cluster, or the real broker FLOTILLA_TEST_BROKERS names.
type target struct {
	addr    string
	brokers int
	topic   string // a topic of the test's own, 3 partitions
	admin   *kadm.Client
	kfake   *kfake.Cluster // nil on a real broker
}

func (tg target) cluster(id string, settings map[string]string) inventory.Cluster {
	return inventory.Cluster{ID: id, Driver: DriverName, Address: tg.addr, Settings: settings}
}

// kfakeTarget starts a kfake cluster of n brokers with one topic.
func kfakeTarget(t *testing.T, n int, opts ...kfake.Opt) target {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(n), kfake.SeedTopics(3, "orders")}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	tg := target{addr: strings.Join(c.ListenAddrs(), ","), brokers: n, topic: "orders", kfake: c}
	return tg
}

func adminFor(t *testing.T, addr string, opts ...kgo.Opt) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(strings.Split(addr, ",")...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// realTarget uses the broker FLOTILLA_TEST_BROKERS names (a single-node
// Kafka), with a fresh topic for the test.
func realTarget(t *testing.T, addr string) target {
	t.Helper()
	adm := adminFor(t, addr)
	topic := fmt.Sprintf("flotilla-kafkadriver-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, topic); err != nil {
		t.Fatalf("create topic on %s: %v", addr, err)
	}
	awaitTopic(t, ctx, adm, topic)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, topic)
	})
	m, err := adm.BrokerMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return target{addr: addr, brokers: len(m.Brokers), topic: topic, admin: adm}
}

// awaitTopic waits until the broker's metadata and configs know a topic
// just created: Apache Kafka answers CreateTopics first, and a driver that
// looked at once would find no such topic.
func awaitTopic(t *testing.T, ctx context.Context, adm *kadm.Client, topic string) {
	t.Helper()
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			if td, ok := md.Topics[topic]; ok && td.Err == nil {
				if rc, err := adm.DescribeTopicConfigs(ctx, topic); err == nil && rc[0].Err == nil {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %s is not known to the broker: %v", topic, ctx.Err())
		case <-time.After(20 * time.Millisecond): // the broker has no way to tell
		}
	}
}

// targets runs fn against a 3-broker kfake cluster and, when
// FLOTILLA_TEST_BROKERS is set, against that real broker.
func targets(t *testing.T, fn func(t *testing.T, tg target)) {
	t.Run("kfake", func(t *testing.T) {
		t.Parallel()
		tg := kfakeTarget(t, 3)
		tg.admin = adminFor(t, tg.addr)
		fn(t, tg)
	})
	if addr := os.Getenv("FLOTILLA_TEST_BROKERS"); addr != "" {
		t.Run("kafka", func(t *testing.T) { fn(t, realTarget(t, addr)) })
	}
}

func newDriver(t *testing.T, opts Options) *Driver {
	t.Helper()
	if opts.VerifyTimeout == 0 {
		opts.VerifyTimeout = 20 * time.Second
	}
	d := New(opts)
	t.Cleanup(d.Close)
	return d
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func configOp(kv ...string) rollout.Operation {
	op := rollout.Operation{Kind: rollout.Config, Config: map[string]string{}}
	for i := 0; i < len(kv); i += 2 {
		op.Config[kv[i]] = kv[i+1]
	}
	return op
}

// cleanupBrokerConfig removes the cluster-wide value of key after the test,
// so a shared real broker is left as found.
func cleanupBrokerConfig(t *testing.T, tg target, key string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = tg.admin.AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: key}})
	})
}

// The key the suite changes cluster-wide: dynamically updatable on real
// Kafka, accepted by kfake, and harmless to the other users of a shared
// broker.
const clusterKey = "log.cleaner.backoff.ms"

func TestProbeHealthy(t *testing.T) {
	targets(t, func(t *testing.T, tg target) {
		d := newDriver(t, Options{})
		ctx := ctxFor(t)
		c := tg.cluster("probe-healthy", map[string]string{
			"expected.brokers": strconv.Itoa(tg.brokers),
			"managed.configs":  clusterKey + ",topic:" + tg.topic + ":retention.ms",
		})
		cleanupBrokerConfig(t, tg, clusterKey)

		obs, err := d.Probe(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if obs.Status != records.HealthHealthy || len(obs.Reasons) != 0 {
			t.Fatalf("status %s %q, want healthy", obs.Status, obs.Reasons)
		}
		t.Logf("observed: version %q, details %v", obs.Version, obs.Details)
		if obs.Version == "" || strings.HasPrefix(obs.Version, "v") {
			t.Errorf("version %q, want a guess like 4.1", obs.Version)
		}
		if got := obs.Details["brokers.online"]; got != strconv.Itoa(tg.brokers) {
			t.Errorf("brokers.online = %s", got)
		}
		if got := obs.Details["brokers.expected"]; got != strconv.Itoa(tg.brokers) {
			t.Errorf("brokers.expected = %s", got)
		}
		if _, err := strconv.Atoi(obs.Details["controller"]); err != nil {
			t.Errorf("controller = %q, want a broker ID", obs.Details["controller"])
		}
		var versions int
		for k, v := range obs.Details {
			if strings.HasPrefix(k, "version.broker.") {
				versions++
				if v == "" || v == "unknown" {
					t.Errorf("%s = %q", k, v)
				}
			}
		}
		if versions != tg.brokers {
			t.Errorf("%d broker versions in details, want %d: %v", versions, tg.brokers, obs.Details)
		}
		for _, k := range []string{"partitions.offline", "partitions.under_replicated", "partitions.under_min_isr"} {
			if obs.Details[k] != "0" {
				t.Errorf("%s = %q, want 0", k, obs.Details[k])
			}
		}
		if len(obs.ConfigHash) != 16 {
			t.Fatalf("config hash %q, want 16 hex digits", obs.ConfigHash)
		}

		again, err := d.Probe(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if again.ConfigHash != obs.ConfigHash {
			t.Errorf("hash changed between probes with no change: %s, %s", obs.ConfigHash, again.ConfigHash)
		}

		for i, op := range []rollout.Operation{configOp(clusterKey, "15001"), configOp("topic:"+tg.topic+":retention.ms", "3600000")} {
			if _, err := d.Apply(ctx, drivers.Request{CommandID: "c" + strconv.Itoa(i), Cluster: c, Operation: op}); err != nil {
				t.Fatal(err)
			}
			after, err := d.Probe(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if after.ConfigHash == again.ConfigHash {
				t.Errorf("hash did not change after %v", op.Config)
			}
			again = after
		}
		if got := again.Details["config."+clusterKey]; got != "15001" {
			t.Errorf("details config.%s = %q", clusterKey, got)
		}
		if got := again.Details["config.topic:"+tg.topic+":retention.ms"]; got != "3600000" {
			t.Errorf("details topic retention = %q", got)
		}
		// The values read, keyed as a config operation names them: what
		// the monitor compares with a cluster's desired config.
		if got := again.Config[clusterKey]; got != "15001" || again.ConfigComplete {
			t.Errorf("observed config %s = %q (complete %t), want 15001, only the managed keys", clusterKey, got, again.ConfigComplete)
		}
		if got := again.Config["topic:"+tg.topic+":retention.ms"]; got != "3600000" {
			t.Errorf("observed topic retention = %q", got)
		}

		// A cluster without managed configs has no hash.
		plain, err := d.Probe(ctx, tg.cluster("probe-plain", nil))
		if err != nil || plain.ConfigHash != "" {
			t.Errorf("no managed configs: hash %q, %v", plain.ConfigHash, err)
		}
	})
}

func TestTooFewBrokers(t *testing.T) {
	targets(t, func(t *testing.T, tg target) {
		d := newDriver(t, Options{})
		ctx := ctxFor(t)
		c := tg.cluster("too-few", map[string]string{"expected.brokers": strconv.Itoa(tg.brokers + 2)})
		cleanupBrokerConfig(t, tg, clusterKey)

		obs, err := d.Probe(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%d of %d brokers online", tg.brokers, tg.brokers+2)
		if obs.Status != records.HealthUnhealthy || len(obs.Reasons) != 1 || obs.Reasons[0] != want {
			t.Errorf("probe: %s %q, want unhealthy %q", obs.Status, obs.Reasons, want)
		}

		_, err = d.Apply(ctx, drivers.Request{CommandID: "c1", Cluster: c, Operation: configOp(clusterKey, "15002")})
		if !errors.Is(err, ErrRefused) || err.Error() != "refusing to change cluster too-few: "+want {
			t.Errorf("apply: %v, want a refusal saying %q", err, want)
		}
		if got := readBrokerDefault(t, tg, clusterKey); got == "15002" {
			t.Error("a refused apply changed the cluster")
		}

		// Confirming a config already in place (an executor resuming an
		// operation it completed) touches nothing, so it is not refused.
		rcs, err := tg.admin.DescribeTopicConfigs(ctx, tg.topic)
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := rcs.On(tg.topic, nil)
		res, err := d.Apply(ctx, drivers.Request{CommandID: "c2", Cluster: c, Operation: configOp("topic:"+tg.topic+":retention.ms", configValue(rc, "retention.ms"))})
		if err != nil || res.Output != "already at desired values" {
			t.Errorf("confirming on an unhealthy cluster: %q, %v", res.Output, err)
		}
	})
}

// readBrokerDefault reads the cluster-wide value of key, "" if unset.
func readBrokerDefault(t *testing.T, tg target, key string) string {
	t.Helper()
	rcs, err := tg.admin.DescribeBrokerConfigs(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range rcs {
		for _, c := range rc.Configs {
			if c.Key == key {
				return c.MaybeValue()
			}
		}
	}
	return ""
}

func TestApplyConfig(t *testing.T) {
	targets(t, func(t *testing.T, tg target) {
		d := newDriver(t, Options{})
		ctx := ctxFor(t)
		c := tg.cluster("apply", nil)
		cleanupBrokerConfig(t, tg, clusterKey)
		before := readBrokerDefault(t, tg, clusterKey)
		if before == "" {
			before = unsetValue
		}

		op := configOp(clusterKey, "15003", "topic:"+tg.topic+":retention.ms", "7200000")
		res, err := d.Apply(ctx, drivers.Request{CommandID: "c1", Cluster: c, Operation: op})
		if err != nil {
			t.Fatal(err)
		}
		wantOut := "set " + clusterKey + " " + before + " → 15003 on cluster default; set retention.ms "
		if !strings.HasPrefix(res.Output, wantOut) || !strings.HasSuffix(res.Output, " → 7200000 on topic "+tg.topic) {
			t.Errorf("output %q, want %q… → 7200000 on topic %s", res.Output, wantOut, tg.topic)
		}
		if res.Version == "" || res.PreviousVersion != res.Version {
			t.Errorf("versions %q → %q", res.PreviousVersion, res.Version)
		}
		if got := readBrokerDefault(t, tg, clusterKey); got != "15003" {
			t.Errorf("cluster-wide %s reads %q after apply", clusterKey, got)
		}
		rcs, err := tg.admin.DescribeTopicConfigs(ctx, tg.topic)
		if err != nil {
			t.Fatal(err)
		}
		if rc, _ := rcs.On(tg.topic, nil); configValue(rc, "retention.ms") != "7200000" {
			t.Errorf("topic retention.ms reads %q after apply", configValue(rc, "retention.ms"))
		}

		// Applied again (a redelivered command, a resumed executor):
		// nothing changes.
		alters := countAlters(t, tg)
		res, err = d.Apply(ctx, drivers.Request{CommandID: "c1", Cluster: c, Operation: op})
		if err != nil {
			t.Fatal(err)
		}
		if res.Output != "already at desired values" {
			t.Errorf("second apply output %q", res.Output)
		}
		if alters != nil && alters.Load() != 0 {
			t.Errorf("second apply sent %d IncrementalAlterConfigs", alters.Load())
		}

		// Partly converged: only the other key is set.
		res, err = d.Apply(ctx, drivers.Request{CommandID: "c2", Cluster: c, Operation: configOp(clusterKey, "15003", "topic:"+tg.topic+":retention.ms", "3600000")})
		if err != nil {
			t.Fatal(err)
		}
		if want := "set retention.ms 7200000 → 3600000 on topic " + tg.topic + "; already at desired values: " + clusterKey; res.Output != want {
			t.Errorf("output %q, want %q", res.Output, want)
		}
	})
}

func configValue(rc kadm.ResourceConfig, key string) string {
	for _, c := range rc.Configs {
		if c.Key == key {
			return c.MaybeValue()
		}
	}
	return ""
}

// countAlters counts the IncrementalAlterConfigs (not ValidateOnly) a kfake
// cluster receives from now on; nil on a real broker.
func countAlters(t *testing.T, tg target) *atomic.Int64 {
	if tg.kfake == nil {
		return nil
	}
	var n atomic.Int64
	tg.kfake.ControlKey(kmsg.IncrementalAlterConfigs.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if !req.(*kmsg.IncrementalAlterConfigsRequest).ValidateOnly {
			n.Add(1)
		}
		return nil, nil, false
	})
	return &n
}

func TestApplyInvalidConfig(t *testing.T) {
	targets(t, func(t *testing.T, tg target) {
		d := newDriver(t, Options{})
		ctx := ctxFor(t)
		c := tg.cluster("invalid", nil)
		cleanupBrokerConfig(t, tg, clusterKey)

		// One invalid value fails the whole operation before anything is
		// set: the valid topic key is left alone.
		alters := countAlters(t, tg)
		_, err := d.Apply(ctx, drivers.Request{CommandID: "c1", Cluster: c, Operation: configOp(
			clusterKey, "soon", "topic:"+tg.topic+":retention.ms", "1000")})
		if err == nil {
			t.Fatal("invalid value applied")
		}
		for _, want := range []string{"cluster invalid", "validate " + clusterKey + " on cluster default: broker refused: INVALID_"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if alters != nil && alters.Load() != 0 {
			t.Errorf("%d IncrementalAlterConfigs sent despite the invalid value", alters.Load())
		}
		t.Logf("invalid value: %v", err)
		rcs, _ := tg.admin.DescribeTopicConfigs(ctx, tg.topic)
		if rc, _ := rcs.On(tg.topic, nil); configValue(rc, "retention.ms") == "1000" {
			t.Error("the valid key was set although the operation failed")
		}

		_, err = d.Apply(ctx, drivers.Request{CommandID: "c2", Cluster: c, Operation: configOp("topic:no-such-topic:retention.ms", "1000")})
		if err == nil || !strings.Contains(err.Error(), "topic no-such-topic does not exist") {
			t.Errorf("unknown topic: %v", err)
		}
		_, err = d.Apply(ctx, drivers.Request{CommandID: "c3", Cluster: c, Operation: configOp("group:g:x", "1")})
		if err == nil || !strings.Contains(err.Error(), "unknown prefix") {
			t.Errorf("bad key: %v", err)
		}

		if tg.kfake == nil {
			// kfake accepts any topic key (and both accept custom broker
			// keys); real Kafka refuses unknown topic keys, and we pass
			// its reason on.
			_, err = d.Apply(ctx, drivers.Request{CommandID: "c4", Cluster: c, Operation: configOp("topic:"+tg.topic+":no.such.config", "1")})
			if err == nil || !strings.Contains(err.Error(), "validate no.such.config on topic "+tg.topic+": broker refused: INVALID_CONFIG: ") {
				t.Errorf("unknown key: %v", err)
			}
			t.Logf("unknown key: %v", err)
		}
	})
}

func TestApplyUnsupported(t *testing.T) {
	d := newDriver(t, Options{})
	c := inventory.Cluster{ID: "k", Driver: DriverName, Address: "127.0.0.1:1"}
	for _, tc := range []struct {
		op   rollout.Operation
		want string
	}{
		{rollout.Operation{Kind: rollout.Upgrade, Version: "4.1.1"}, "cluster k: the kafka driver cannot upgrade brokers: register the cluster with an exec driver for binary upgrades"},
		{rollout.Operation{Kind: rollout.Restart}, "cluster k: the kafka driver cannot restart brokers"},
		{rollout.Operation{Kind: "dance"}, `operation "dance"`},
	} {
		_, err := d.Apply(context.Background(), drivers.Request{CommandID: "c", Cluster: c, Operation: tc.op})
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.op.Kind, err, tc.want)
		}
	}
}

func TestApplyBrokerConfig(t *testing.T) {
	tg := kfakeTarget(t, 3)
	tg.admin = adminFor(t, tg.addr)
	d := newDriver(t, Options{})
	ctx := ctxFor(t)
	res, err := d.Apply(ctx, drivers.Request{CommandID: "c", Cluster: tg.cluster("per-broker", nil), Operation: configOp("broker:1:log.cleaner.backoff.ms", "16000")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Output, "set log.cleaner.backoff.ms ") || !strings.HasSuffix(res.Output, " → 16000 on broker 1") {
		t.Errorf("output %q, want set log.cleaner.backoff.ms … → 16000 on broker 1", res.Output)
	}
}

// withMetadata makes kfake answer every Metadata request with its answer
// of now, changed by mutate: how tests show the driver a cluster kfake
// cannot be (offline or under-replicated partitions).
func withMetadata(t *testing.T, tg target, mutate func(*kmsg.MetadataResponse)) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(tg.addr, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	base, err := kmsg.NewPtrMetadataRequest().RequestWith(ctxFor(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	mutate(base)
	tg.kfake.ControlKey(kmsg.Metadata.Int16(), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		tg.kfake.KeepControl()
		req := kr.(*kmsg.MetadataRequest)
		resp := *base
		resp.Version = req.Version
		resp.Topics = nil
		for _, bt := range base.Topics {
			if req.Topics == nil || slicesContainsTopic(req.Topics, *bt.Topic) {
				resp.Topics = append(resp.Topics, bt)
			}
		}
		return &resp, nil, true
	})
}

func slicesContainsTopic(ts []kmsg.MetadataRequestTopic, name string) bool {
	for _, t := range ts {
		if t.Topic != nil && *t.Topic == name {
			return true
		}
	}
	return false
}

func partitionsOf(resp *kmsg.MetadataResponse, topic string) []kmsg.MetadataResponseTopicPartition {
	for _, t := range resp.Topics {
		if *t.Topic == topic {
			return t.Partitions
		}
	}
	return nil
}

func TestUnhealthyPartitions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		minISR  string
		mutate  func(ps []kmsg.MetadataResponseTopicPartition)
		status  records.HealthStatus
		reasons []string
		refused bool
	}{
		{
			name:    "offline partition",
			mutate:  func(ps []kmsg.MetadataResponseTopicPartition) { ps[0].Leader = -1 },
			status:  records.HealthUnhealthy,
			reasons: []string{"1 partition offline"},
			refused: true,
		},
		{
			name:   "below min.insync.replicas",
			minISR: "2",
			mutate: func(ps []kmsg.MetadataResponseTopicPartition) {
				ps[0].ISR = ps[0].ISR[:1]
				ps[1].ISR = ps[1].ISR[:2]
			},
			status:  records.HealthUnhealthy,
			reasons: []string{"1 partition below min.insync.replicas (orders)", "2 partitions under-replicated (orders)"},
			refused: true,
		},
		{
			name:    "under-replicated only",
			minISR:  "2",
			mutate:  func(ps []kmsg.MetadataResponseTopicPartition) { ps[2].ISR = ps[2].ISR[:2] },
			status:  records.HealthDegraded,
			reasons: []string{"1 partition under-replicated (orders)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tg := kfakeTarget(t, 3)
			tg.admin = adminFor(t, tg.addr)
			ctx := ctxFor(t)
			if tc.minISR != "" {
				if _, err := tg.admin.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "min.insync.replicas", Value: kmsg.StringPtr(tc.minISR)}}, "orders"); err != nil {
					t.Fatal(err)
				}
			}
			withMetadata(t, tg, func(resp *kmsg.MetadataResponse) { tc.mutate(partitionsOf(resp, "orders")) })
			d := newDriver(t, Options{})
			c := tg.cluster("sick", map[string]string{"expected.brokers": "3"})

			obs, err := d.Probe(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if obs.Status != tc.status || strings.Join(obs.Reasons, "|") != strings.Join(tc.reasons, "|") {
				t.Errorf("probe: %s %q, want %s %q", obs.Status, obs.Reasons, tc.status, tc.reasons)
			}

			alters := countAlters(t, tg)
			_, err = d.Apply(ctx, drivers.Request{CommandID: "c", Cluster: c, Operation: configOp("topic:orders:retention.ms", "1000")})
			if tc.refused {
				want := "refusing to change cluster sick: " + strings.Join(tc.reasons, "; ")
				if !errors.Is(err, ErrRefused) || err.Error() != want {
					t.Errorf("apply: %v, want %q", err, want)
				}
				if alters.Load() != 0 {
					t.Errorf("a refused apply sent %d IncrementalAlterConfigs", alters.Load())
				}
			} else if err != nil {
				t.Errorf("apply to a degraded cluster: %v", err)
			}
		})
	}
}

func TestSASL(t *testing.T) {
	for _, mechanism := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mechanism, func(t *testing.T) {
			t.Parallel()
			tg := kfakeTarget(t, 1, kfake.EnableSASL(), kfake.Superuser(mechanism, "flotilla", "s3cret"))
			d := newDriver(t, Options{LookupEnv: env(map[string]string{"GOOD": "s3cret", "BAD": "guess"})})
			ctx := ctxFor(t)
			settings := func(passwordEnv string) map[string]string {
				return map[string]string{
					"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism, "sasl.username": "flotilla",
					"sasl.password.env": passwordEnv, "expected.brokers": "1", "request.timeout.ms": "2000",
				}
			}
			c := tg.cluster("sasl", settings("GOOD"))
			obs, err := d.Probe(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if obs.Status != records.HealthHealthy {
				t.Errorf("probe: %s %q", obs.Status, obs.Reasons)
			}
			if _, err := d.Apply(ctx, drivers.Request{CommandID: "c", Cluster: c, Operation: configOp("topic:orders:retention.ms", "1000")}); err != nil {
				t.Errorf("apply over SASL: %v", err)
			}

			// kfake hangs up on a failed authentication (Kafka says why),
			// and the client retries until the request timeout.
			wrong := settings("BAD")
			wrong["request.timeout.ms"] = "300"
			if _, err = d.Probe(ctx, tg.cluster("sasl-wrong", wrong)); err == nil || !strings.Contains(err.Error(), "cluster sasl-wrong") {
				t.Errorf("wrong password: %v, want an error naming the cluster", err)
			}
		})
	}
}

func TestProbeUnreachable(t *testing.T) {
	tg := kfakeTarget(t, 1)
	addr := tg.addr
	tg.kfake.Close() // nothing listens there any more
	d := newDriver(t, Options{})
	start := time.Now()
	_, err := d.Probe(ctxFor(t), inventory.Cluster{ID: "gone", Driver: DriverName, Address: addr, Settings: map[string]string{"request.timeout.ms": "300"}})
	if err == nil || !strings.Contains(err.Error(), "cluster gone ("+addr+"): read metadata:") {
		t.Errorf("probe of a dead cluster: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("probe took %s despite request.timeout.ms=300", time.Since(start))
	}
}

func TestInvalidSettingsFailProbeAndApply(t *testing.T) {
	d := newDriver(t, Options{})
	c := inventory.Cluster{ID: "typo", Driver: DriverName, Address: "127.0.0.1:1", Settings: map[string]string{"expected.brokers": "many"}}
	if _, err := d.Probe(context.Background(), c); !errors.Is(err, ErrInvalidSetting) || !strings.Contains(err.Error(), "cluster typo: setting expected.brokers") {
		t.Errorf("probe: %v", err)
	}
	if _, err := d.Apply(context.Background(), drivers.Request{CommandID: "c", Cluster: c, Operation: configOp("a", "b")}); !errors.Is(err, ErrInvalidSetting) {
		t.Errorf("apply: %v", err)
	}
}
