package kafkadriver

import (
	"context"
	"fmt"
	"slices"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

var _ drivers.Snapshotter = (*Driver)(nil)

// Snapshot implements [drivers.Snapshotter]: for each key a config
// operation sets or resets (written as for [Driver.Apply]) it reads, with
// DescribeConfigs, whether the key has a value of its own on the resource
// the operation changes (the default broker resource for a cluster-wide
// key, the broker for "broker:ID:key", the topic for "topic:NAME:key"), and
// which. A key at its static or default value, or one a topic or broker
// only inherits from a wider scope, is unset: rolling back resets it. The
// Snapshot's Version is empty: the executor keeps the registered one.
//
// Snapshot fails, so that the executor does not act, when the operation is
// not a config operation ([ErrUnsupported]), a key is malformed, the
// cluster's settings are invalid, it cannot be reached, a topic named in a
// key does not exist, or a key to be changed is sensitive and set: Kafka
// never returns a sensitive value, so it could not be restored.
func (d *Driver) Snapshot(ctx context.Context, req drivers.Request) (drivers.Snapshot, error) {
	c := req.Cluster
	if req.Operation.Kind != rollout.Config {
		return drivers.Snapshot{}, fmt.Errorf("cluster %s: snapshot of a %q operation: %w", c.ID, req.Operation.Kind, ErrUnsupported)
	}
	changes, err := parseChanges(req.Operation)
	if err != nil {
		return drivers.Snapshot{}, fmt.Errorf("cluster %s: %w", c.ID, err)
	}
	var snap drivers.Snapshot
	if len(changes) == 0 {
		return snap, nil
	}
	cl, release, err := d.acquire(c)
	if err != nil {
		return drivers.Snapshot{}, err
	}
	defer release()
	cv, err := d.readCurrent(ctx, cl, changes)
	if err != nil {
		return drivers.Snapshot{}, fmt.Errorf("cluster %s (%s): %w", c.ID, c.Address, err)
	}
	for _, ch := range changes {
		if ch.key.scope == scopeTopic && cv.noTopic[ch.key.topic] {
			return drivers.Snapshot{}, fmt.Errorf("cluster %s: read %s: topic %s does not exist", c.ID, ch.key.key, ch.key.topic)
		}
		cfg, ok := configOf(cv, ch.key)
		switch {
		case !ok || !overrides(ch.key, cfg):
			snap.Unset = append(snap.Unset, ch.name)
		case cfg.Value == nil:
			return drivers.Snapshot{}, fmt.Errorf("cluster %s: %s on %s is sensitive and set: Kafka does not return its value, so a rollback could not restore it", c.ID, ch.key.key, ch.key.resource())
		default:
			if snap.Config == nil {
				snap.Config = map[string]string{}
			}
			snap.Config[ch.name] = *cfg.Value
		}
	}
	slices.Sort(snap.Unset)
	return snap, nil
}
