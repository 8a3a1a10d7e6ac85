package kafkadriver

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// wanted lists the config resources to read.
type wanted struct {
	def     bool // the default broker resource (cluster-wide dynamic configs)
	brokers map[int32]bool
	topics  map[string]bool
}

func (w *wanted) broker(id int32) {
	if w.brokers == nil {
		w.brokers = map[int32]bool{}
	}
	w.brokers[id] = true
}

func (w *wanted) topic(name string) {
	if w.topics == nil {
		w.topics = map[string]bool{}
	}
	w.topics[name] = true
}

// add asks for what reading k on every broker needs: a cluster-wide key is
// read on each online broker of meta, a broker key on its broker, a topic key
// on its topic.
func (w *wanted) add(k configKey, meta kadm.Metadata) {
	switch k.scope {
	case scopeCluster:
		for _, b := range meta.Brokers {
			w.broker(b.NodeID)
		}
	case scopeBroker:
		w.broker(k.broker)
	case scopeTopic:
		w.topic(k.topic)
	}
}

// configView is the configs read from a cluster, by resource and key.
type configView struct {
	def     map[string]kadm.Config
	brokers map[int32]map[string]kadm.Config
	topics  map[string]map[string]kadm.Config
	// noTopic holds the wanted topics that do not exist.
	noTopic map[string]bool
}

// Values as shown to people and hashed, for configs that have no plain
// value.
const (
	unsetValue     = "(unset)"
	sensitiveValue = "(sensitive)"
	noTopicValue   = "(no such topic)"
)

func show(c kadm.Config, ok bool) string {
	switch {
	case !ok || (c.Value == nil && !c.Sensitive):
		return unsetValue
	case c.Sensitive:
		return sensitiveValue
	}
	return *c.Value
}

func (v configView) defaultValue(key string) string {
	c, ok := v.def[key]
	return show(c, ok)
}

func (v configView) brokerValue(id int32, key string) string {
	c, ok := v.brokers[id][key]
	return show(c, ok)
}

func (v configView) topicValue(topic, key string) string {
	if v.noTopic[topic] {
		return noTopicValue
	}
	c, ok := v.topics[topic][key]
	return show(c, ok)
}

// describe reads the wanted resources' configs, one DescribeConfigs round
// trip per kind. A wanted topic that does not exist is noted in noTopic;
// any other error fails.
func describe(ctx context.Context, cl *client, w wanted) (configView, error) {
	v := configView{
		def:     map[string]kadm.Config{},
		brokers: map[int32]map[string]kadm.Config{},
		topics:  map[string]map[string]kadm.Config{},
		noTopic: map[string]bool{},
	}
	if w.def {
		rctx, cancel := cl.set.roundTrip(ctx)
		rcs, err := cl.adm.DescribeBrokerConfigs(rctx)
		cancel()
		if err != nil {
			return configView{}, fmt.Errorf("describe cluster-wide broker configs: %w", err)
		}
		rc, err := rcs.On("", nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			return configView{}, fmt.Errorf("describe cluster-wide broker configs: %s", brokerError(err, rc.ErrMessage))
		}
		v.def = byKey(rc.Configs)
	}
	if len(w.brokers) > 0 {
		ids := make([]int32, 0, len(w.brokers))
		for id := range w.brokers {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		rctx, cancel := cl.set.roundTrip(ctx)
		rcs, err := cl.adm.DescribeBrokerConfigs(rctx, ids...)
		cancel()
		if err != nil {
			return configView{}, fmt.Errorf("describe broker configs: %w", err)
		}
		for _, id := range ids {
			rc, err := rcs.On(strconv.Itoa(int(id)), nil)
			if err == nil {
				err = rc.Err
			}
			if err != nil {
				return configView{}, fmt.Errorf("describe configs of broker %d: %s", id, brokerError(err, rc.ErrMessage))
			}
			v.brokers[id] = byKey(rc.Configs)
		}
	}
	if len(w.topics) > 0 {
		names := make([]string, 0, len(w.topics))
		for t := range w.topics {
			names = append(names, t)
		}
		sort.Strings(names)
		rctx, cancel := cl.set.roundTrip(ctx)
		rcs, err := cl.adm.DescribeTopicConfigs(rctx, names...)
		cancel()
		if err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return configView{}, fmt.Errorf("describe topic configs: %w", err)
		}
		for _, t := range names {
			rc, err := rcs.On(t, nil)
			if err == nil {
				err = rc.Err
			}
			switch {
			case errors.Is(err, kerr.UnknownTopicOrPartition):
				v.noTopic[t] = true
			case err != nil:
				return configView{}, fmt.Errorf("describe configs of topic %s: %s", t, brokerError(err, rc.ErrMessage))
			default:
				v.topics[t] = byKey(rc.Configs)
			}
		}
	}
	return v, nil
}

func byKey(cs []kadm.Config) map[string]kadm.Config {
	m := make(map[string]kadm.Config, len(cs))
	for _, c := range cs {
		m[c.Key] = c
	}
	return m
}

// brokerError renders a broker's answer: the error code's name and the
// broker's own message when it sent one ("INVALID_CONFIG: Invalid value abc
// for configuration log.retention.ms"), else the code's description.
func brokerError(err error, msg string) string {
	var ke *kerr.Error
	if msg != "" && errors.As(err, &ke) {
		return ke.Message + ": " + msg
	}
	if msg != "" {
		return err.Error() + ": " + msg
	}
	return err.Error()
}
