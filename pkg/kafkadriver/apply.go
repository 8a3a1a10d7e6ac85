package kafkadriver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// ErrRefused is wrapped by the error of an Apply that would not touch a
// cluster because it is unhealthy (offline partitions, partitions below
// min.insync.replicas, fewer brokers than expected, no controller).
var ErrRefused = errors.New("refusing to change an unhealthy cluster")

// ErrUnsupported is wrapped by the error of an Apply of an operation the
// Kafka admin API cannot carry out (upgrade, restart).
var ErrUnsupported = errors.New("operation not supported by the kafka driver")

// refusedError names the cluster and why it is refused, and matches
// ErrRefused.
type refusedError struct {
	cluster string
	reasons []string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("refusing to change cluster %s: %s", e.cluster, strings.Join(e.reasons, "; "))
}

func (e *refusedError) Unwrap() error { return ErrRefused }

// change is one config to converge: a key to set to want, or to reset.
type change struct {
	name    string // the key as the operation writes it
	key     configKey
	want    string
	reset   bool   // remove the key's own value instead of setting one
	was     string // as read before
	changed bool   // set or reset by this Apply
}

func (ch *change) verb() string {
	if ch.reset {
		return "reset"
	}
	return "set"
}

// parseChanges reads the keys an operation sets and resets, in the order
// they are applied and reported.
func parseChanges(op rollout.Operation) ([]*change, error) {
	changes := make([]*change, 0, len(op.Config)+len(op.Reset))
	for k, v := range op.Config {
		key, err := parseConfigKey(k)
		if err != nil {
			return nil, err
		}
		changes = append(changes, &change{name: k, key: key, want: v})
	}
	for _, k := range op.Reset {
		key, err := parseConfigKey(k)
		if err != nil {
			return nil, err
		}
		changes = append(changes, &change{name: k, key: key, reset: true})
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].key.less(changes[j].key) })
	return changes, nil
}

// done reports whether cv shows the change in place: a key to set at its
// desired value, a key to reset with no value of its own.
func (ch *change) done(cv configView) bool {
	if ch.reset {
		c, ok := configOf(cv, ch.key)
		return !ok || !overrides(ch.key, c)
	}
	return cv.value(ch.key) == ch.want
}

// overrides reports whether c, as read on k's resource, is a value set on
// that resource itself (which a reset removes), rather than a static or
// default value or one inherited from a wider scope.
func overrides(k configKey, c kadm.Config) bool {
	switch k.scope {
	case scopeTopic:
		return c.Source == kmsg.ConfigSourceDynamicTopicConfig
	case scopeBroker:
		return c.Source == kmsg.ConfigSourceDynamicBrokerConfig
	}
	// On Kafka the default broker resource lists only the cluster-wide
	// values (DYNAMIC_DEFAULT_BROKER_CONFIG); kfake lists static and
	// default values there too, and labels its dynamic ones
	// DYNAMIC_BROKER_CONFIG.
	return c.Source == kmsg.ConfigSourceDynamicDefaultBrokerConfig || c.Source == kmsg.ConfigSourceDynamicBrokerConfig
}

// Apply implements [drivers.Driver] for `config` operations. Each key of
// Operation.Config is a broker config set cluster-wide (on the default
// broker resource, so every broker, present and future, takes it), or, as
// "broker:ID:key", on one broker, or, as "topic:NAME:key", on one topic.
// Each key of Operation.Reset, written the same way, is returned to its
// default: its value on that resource is deleted (IncrementalAlterConfigs,
// DELETE), so the broker's static or default value applies again.
//
// Apply first observes the cluster as [Driver.Probe] does, then reads
// every key and leaves alone those already at their desired value (for a
// reset key: with no value of its own on its resource), so that applying a
// command a second time changes nothing; when all are, it succeeds with
// Output "already at desired values". Before it changes
// anything it refuses an unhealthy cluster ([ErrRefused]: "refusing to
// change cluster X: 3 partitions offline"). The keys to change are
// validated by the brokers (IncrementalAlterConfigs with ValidateOnly)
// before any is set, so an unknown key or an invalid value fails the
// operation with the broker's message and changes nothing.
// Then they are set (IncrementalAlterConfigs, SET or DELETE) and Apply
// waits, up to [Options.VerifyTimeout], until every key reads back with its
// desired value, or a reset key as no longer set on its resource: a
// cluster-wide key on the default resource and on every online broker
// (except one that overrides it with a per-broker value, which Output
// mentions), since Kafka propagates it to each broker asynchronously.
// Sensitive configs (passwords) read back as nothing and cannot be
// compared: they are always set and not verified.
//
// Output says what changed ("set log.retention.ms 604800000 → 86400000 on
// cluster default; reset log.cleaner.backoff.ms (was 15001) on cluster
// default"). Version and PreviousVersion are the lowest broker
// version guess (configs do not change it).
//
// Upgrade and restart fail with [ErrUnsupported]: the Kafka API cannot
// replace or restart brokers. Apply also fails when the cluster's settings
// are invalid ([ErrInvalidSetting]), when it cannot be reached, when a
// topic named in a key does not exist, and when ctx ends; when it fails
// after setting some keys, a retry converges the rest.
func (d *Driver) Apply(ctx context.Context, req drivers.Request) (drivers.Result, error) {
	c := req.Cluster
	switch req.Operation.Kind {
	case rollout.Config:
	case rollout.Upgrade:
		return drivers.Result{}, fmt.Errorf("cluster %s: the kafka driver cannot upgrade brokers: register the cluster with an exec driver for binary upgrades: %w", c.ID, ErrUnsupported)
	case rollout.Restart:
		return drivers.Result{}, fmt.Errorf("cluster %s: the kafka driver cannot restart brokers: register the cluster with an exec driver for rolling restarts: %w", c.ID, ErrUnsupported)
	default:
		return drivers.Result{}, fmt.Errorf("cluster %s: operation %q: %w", c.ID, req.Operation.Kind, ErrUnsupported)
	}

	changes, err := parseChanges(req.Operation)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("cluster %s: %w", c.ID, err)
	}

	cl, release, err := d.acquire(c)
	if err != nil {
		return drivers.Result{}, err
	}
	defer release()

	v, err := observe(ctx, cl)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("cluster %s (%s): %w", c.ID, c.Address, err)
	}
	a := assess(v, cl.set.expectedBrokers)
	refuse := func() error {
		if a.status == records.HealthUnhealthy {
			return &refusedError{cluster: c.ID, reasons: a.reasons}
		}
		return nil
	}
	res := drivers.Result{PreviousVersion: a.version, Version: a.version}
	if len(changes) == 0 {
		if err := refuse(); err != nil {
			return drivers.Result{}, err
		}
		res.Output = "no config to set"
		return res, nil
	}

	before, err := d.readCurrent(ctx, cl, changes)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("cluster %s: %w", c.ID, err)
	}
	var todo []*change
	for _, ch := range changes {
		if ch.key.scope == scopeTopic && before.noTopic[ch.key.topic] {
			return drivers.Result{}, fmt.Errorf("cluster %s: %s %s: topic %s does not exist", c.ID, ch.verb(), ch.key.key, ch.key.topic)
		}
		ch.was = before.value(ch.key)
		if !ch.done(before) {
			todo = append(todo, ch)
		}
	}

	if len(todo) > 0 {
		// Only now: confirming what an earlier attempt did does not
		// touch the cluster, whatever its health.
		if err := refuse(); err != nil {
			return drivers.Result{}, err
		}
		if err := alter(ctx, cl, todo, true); err != nil {
			return drivers.Result{}, fmt.Errorf("cluster %s: %w", c.ID, err)
		}
		if err := alter(ctx, cl, todo, false); err != nil {
			return drivers.Result{}, fmt.Errorf("cluster %s: %w", c.ID, err)
		}
		for _, ch := range todo {
			ch.changed = true
		}
	}
	overridden, err := d.verify(ctx, cl, changes)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("cluster %s: %w", c.ID, err)
	}
	res.Output = summary(changes, overridden)
	return res, nil
}

// readCurrent reads each key on its own resource: a cluster-wide key on
// the default broker resource, a broker key on its broker, a topic key on
// its topic.
func (d *Driver) readCurrent(ctx context.Context, cl *client, changes []*change) (configView, error) {
	var w wanted
	for _, ch := range changes {
		switch ch.key.scope {
		case scopeCluster:
			w.def = true
		default:
			w.add(ch.key, kadm.Metadata{})
		}
	}
	return describe(ctx, cl, w)
}

// value is k's value where it is set.
func (v configView) value(k configKey) string {
	switch k.scope {
	case scopeBroker:
		return v.brokerValue(k.broker, k.key)
	case scopeTopic:
		return v.topicValue(k.topic, k.key)
	}
	return v.defaultValue(k.key)
}

// alter sets and resets the changes, one IncrementalAlterConfigs round trip
// per resource kind; with validateOnly the brokers only check them.
func alter(ctx context.Context, cl *client, changes []*change, validateOnly bool) error {
	var (
		cluster []kadm.AlterConfig
		brokers = map[int32][]kadm.AlterConfig{}
		topics  = map[string][]kadm.AlterConfig{}
	)
	for _, ch := range changes {
		ac := kadm.AlterConfig{Op: kadm.SetConfig, Name: ch.key.key, Value: kmsg.StringPtr(ch.want)}
		if ch.reset {
			ac = kadm.AlterConfig{Op: kadm.DeleteConfig, Name: ch.key.key}
		}
		switch ch.key.scope {
		case scopeCluster:
			cluster = append(cluster, ac)
		case scopeBroker:
			brokers[ch.key.broker] = append(brokers[ch.key.broker], ac)
		case scopeTopic:
			topics[ch.key.topic] = append(topics[ch.key.topic], ac)
		}
	}
	verb := "set"
	if validateOnly {
		verb = "validate"
	}
	// call runs one alter of the configs acs on the resource what.
	call := func(what string, acs []kadm.AlterConfig, fn func(context.Context) (kadm.AlterConfigsResponses, error)) error {
		names := make([]string, len(acs))
		for i, ac := range acs {
			names[i] = ac.Name
			if ac.Op == kadm.DeleteConfig {
				names[i] += " (reset)"
			}
		}
		rctx, cancel := cl.set.roundTrip(ctx)
		defer cancel()
		rs, err := fn(rctx)
		if err != nil {
			return fmt.Errorf("%s %s on %s: %w", verb, strings.Join(names, ", "), what, err)
		}
		for _, r := range rs {
			if r.Err != nil {
				return fmt.Errorf("%s %s on %s: broker refused: %s", verb, strings.Join(names, ", "), what, brokerError(r.Err, r.ErrMessage))
			}
		}
		return nil
	}

	if len(cluster) > 0 {
		err := call("cluster default", cluster, func(ctx context.Context) (kadm.AlterConfigsResponses, error) {
			if validateOnly {
				return cl.adm.ValidateAlterBrokerConfigs(ctx, cluster)
			}
			return cl.adm.AlterBrokerConfigs(ctx, cluster)
		})
		if err != nil {
			return err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(brokers)) {
		err := call(fmt.Sprintf("broker %d", id), brokers[id], func(ctx context.Context) (kadm.AlterConfigsResponses, error) {
			if validateOnly {
				return cl.adm.ValidateAlterBrokerConfigs(ctx, brokers[id], id)
			}
			return cl.adm.AlterBrokerConfigs(ctx, brokers[id], id)
		})
		if err != nil {
			return err
		}
	}
	for _, t := range slices.Sorted(maps.Keys(topics)) {
		err := call("topic "+t, topics[t], func(ctx context.Context) (kadm.AlterConfigsResponses, error) {
			if validateOnly {
				return cl.adm.ValidateAlterTopicConfigs(ctx, topics[t], t)
			}
			return cl.adm.AlterTopicConfigs(ctx, topics[t], t)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// verify waits until every change reads back with its desired value, polling
// with a growing interval until the verify timeout. It returns the brokers
// that override a cluster-wide key with a value of their own, by key.
func (d *Driver) verify(ctx context.Context, cl *client, changes []*change) (map[string][]int32, error) {
	deadline := d.clock.Now().Add(d.verifyTimeout)
	wait := 50 * time.Millisecond
	for {
		overridden, pending, err := d.check(ctx, cl, changes)
		if err == nil && len(pending) == 0 {
			return overridden, nil
		}
		if d.clock.Now().After(deadline) {
			if err != nil {
				return nil, fmt.Errorf("verify configs: %w", err)
			}
			return nil, fmt.Errorf("configs did not read back within %s: %s", d.verifyTimeout, strings.Join(pending, "; "))
		}
		t := d.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if len(pending) > 0 {
				return nil, fmt.Errorf("verify configs: %w (still waiting for %s)", ctx.Err(), strings.Join(pending, "; "))
			}
			return nil, fmt.Errorf("verify configs: %w", ctx.Err())
		case <-t.Chan():
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// check reads the changes back once and lists those not (yet) at their
// desired value, or, for a reset, still set.
func (d *Driver) check(ctx context.Context, cl *client, changes []*change) (overridden map[string][]int32, pending []string, err error) {
	meta, err := freshMetadata(ctx, cl)
	if err != nil {
		return nil, nil, fmt.Errorf("read metadata: %w", err)
	}
	var w wanted
	for _, ch := range changes {
		if ch.key.scope == scopeCluster {
			w.def = true
		}
		w.add(ch.key, meta)
	}
	cv, err := describe(ctx, cl, w)
	if err != nil {
		return nil, nil, err
	}
	overridden = map[string][]int32{}
	for _, ch := range changes {
		switch {
		case ch.reset:
			if c, ok := configOf(cv, ch.key); ok && overrides(ch.key, c) {
				pending = append(pending, fmt.Sprintf("%s on %s is still set to %s", ch.key.key, ch.key.resource(), show(c, ok)))
			}
			if ch.key.scope != scopeCluster {
				continue
			}
			for _, b := range meta.Brokers {
				switch c, ok := cv.brokers[b.NodeID][ch.key.key]; {
				case !ok:
				case c.Source == kmsg.ConfigSourceDynamicDefaultBrokerConfig:
					pending = append(pending, fmt.Sprintf("%s on broker %d still reads the cluster-wide %s", ch.key.key, b.NodeID, show(c, ok)))
				case c.Source == kmsg.ConfigSourceDynamicBrokerConfig:
					overridden[ch.key.key] = append(overridden[ch.key.key], b.NodeID)
				}
			}
		case ch.key.scope == scopeCluster:
			if c, ok := cv.def[ch.key.key]; ok && c.Sensitive {
				continue
			}
			if got := cv.defaultValue(ch.key.key); got != ch.want {
				pending = append(pending, fmt.Sprintf("%s on cluster default reads %s, want %s", ch.key.key, got, ch.want))
			}
			for _, b := range meta.Brokers {
				c, ok := cv.brokers[b.NodeID][ch.key.key]
				got := show(c, ok)
				switch {
				case got == ch.want || c.Sensitive:
				case c.Source == kmsg.ConfigSourceDynamicBrokerConfig:
					overridden[ch.key.key] = append(overridden[ch.key.key], b.NodeID)
				default:
					pending = append(pending, fmt.Sprintf("%s on broker %d reads %s, want %s", ch.key.key, b.NodeID, got, ch.want))
				}
			}
		default:
			c, ok := configOf(cv, ch.key)
			if got := show(c, ok); got != ch.want && !c.Sensitive {
				pending = append(pending, fmt.Sprintf("%s on %s reads %s, want %s", ch.key.key, ch.key.resource(), got, ch.want))
			}
		}
	}
	return overridden, pending, nil
}

func configOf(cv configView, k configKey) (kadm.Config, bool) {
	var c kadm.Config
	var ok bool
	switch k.scope {
	case scopeBroker:
		c, ok = cv.brokers[k.broker][k.key]
	case scopeTopic:
		c, ok = cv.topics[k.topic][k.key]
	default:
		c, ok = cv.def[k.key]
	}
	return c, ok
}

// summary says what Apply did, one clause per key it set or reset.
func summary(changes []*change, overridden map[string][]int32) string {
	var set, already []string
	for _, ch := range changes {
		if !ch.changed {
			already = append(already, ch.key.String())
			continue
		}
		var s string
		switch {
		case ch.was == sensitiveValue:
			s = fmt.Sprintf("%s %s (sensitive) on %s", ch.verb(), ch.key.key, ch.key.resource())
		case ch.reset:
			s = fmt.Sprintf("reset %s (was %s) on %s", ch.key.key, ch.was, ch.key.resource())
		default:
			s = fmt.Sprintf("set %s %s → %s on %s", ch.key.key, ch.was, ch.want, ch.key.resource())
		}
		if ch.key.scope == scopeCluster && len(overridden[ch.key.key]) > 0 {
			s += fmt.Sprintf(" (overridden on broker %s)", joinIDs(overridden[ch.key.key]))
		}
		set = append(set, s)
	}
	if len(set) == 0 {
		return "already at desired values"
	}
	out := strings.Join(set, "; ")
	if len(already) > 0 {
		out += "; already at desired values: " + strings.Join(already, ", ")
	}
	return out
}

func joinIDs(ids []int32) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ", ")
}
