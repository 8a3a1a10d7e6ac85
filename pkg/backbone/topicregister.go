package backbone

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// TopicIDs are topic IDs by topic name.
type TopicIDs map[string]kadm.TopicID

// The register of a namespace's topics tells a fresh installation from
// one that lost topics, which look alike to a service that starts: a
// topic is missing, or is there but empty. It is the topic IDs of the
// namespace's topics, kept where losing a topic does not lose its entry:
// in the offsets committed by the consumer group "<namespace>.topics",
// which no client joins. Each topic's partition 0 carries, as the
// commit's metadata, the IDs of every topic of the namespace. Kafka drops
// a topic's committed offsets when the topic is deleted, so a lost
// topic's own entry goes with it, but the entries on the other topics
// still name it and its ID; when every topic of the namespace is deleted,
// the whole register goes with them and the next start is a fresh
// installation, as it should be.
//
// Limits: offsets of a group that no client joins expire after the
// broker's offsets.retention.minutes (7 days by default) from their last
// commit, so SetUpTopics records them at every start and KeepTopicIDs
// again every day while a service runs; after every copy of every
// service was stopped for longer than that, the register is gone and a
// start takes the topics as they are. And a Kafka replaced by an empty
// one (every topic and the register gone) is a fresh installation to
// Flotilla: nothing in an empty Kafka can say otherwise.

// RegisterGroup returns the consumer group whose committed offsets hold the
// register of the namespace's topics: "<namespace>.topics".
func (c Config) RegisterGroup() string { return c.Names().Group("topics") }

// KeepInterval is how often KeepTopicIDs records the register again, well
// within Kafka's default offsets.retention.minutes (7 days).
const KeepInterval = 24 * time.Hour

// SetUpTopics makes the namespace's topics ready for a service that
// starts, without ever creating a topic again over lost state:
//
//   - a topic the register knows that is gone, or whose ID changed (it was
//     deleted and created again, empty), fails the start with a
//     *TopicLostError for each (the error matches ErrTopicLost) and
//     creates nothing: the operator restores them, or deletes the
//     register group (RegisterGroup) to go on without what they held;
//   - otherwise it creates the topics missing from both Kafka and the
//     register (a fresh installation, or a topic new in this version) and
//     checks the shape of all of them (EnsureTopics);
//   - then it records every topic's ID in the register, and returns them.
//
// A broker that cannot be reached or read fails it with that error.
func (c Config) SetUpTopics(ctx context.Context, partitions int32, replicationFactor int16) (TopicIDs, error) {
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	names := c.Names().All()
	group := c.RegisterGroup()

	known, err := c.readRegister(ctx, adm)
	if err != nil {
		return nil, err
	}
	now, err := topicIDs(ctx, cl, names, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("topic IDs: %w", err)
	}
	var zero kadm.TopicID
	var lost []error
	for _, t := range names {
		was, ok := known[t]
		if !ok {
			continue
		}
		switch id, exists := now[t]; {
		case !exists:
			lost = append(lost, &TopicLostError{Topic: t, Was: was})
		case was != zero && id != zero && id != was:
			lost = append(lost, &TopicLostError{Topic: t, Was: was, Now: id})
		}
	}
	if len(lost) > 0 {
		return nil, fmt.Errorf("%w\nFlotilla does not create topics again over lost state: restore them, or, to go on without what they held, delete the consumer group %s (the register of the topics' IDs: kafka-consumer-groups.sh --delete --group %s) and start again, which creates the missing topics empty", errors.Join(lost...), group, group)
	}

	if err := c.EnsureTopics(ctx, partitions, replicationFactor); err != nil {
		return nil, err
	}
	ids, err := topicIDs(ctx, cl, names, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("topic IDs: %w", err)
	}
	for _, t := range names {
		if _, ok := ids[t]; !ok {
			return nil, &TopicLostError{Topic: t} // deleted as it was created
		}
	}
	if err := c.recordRegister(ctx, adm, ids); err != nil {
		return nil, err
	}
	return ids, nil
}

// RecordTopicIDs records ids in the register of the namespace's topics
// (see SetUpTopics), renewing its entries before Kafka expires them.
func (c Config) RecordTopicIDs(ctx context.Context, ids TopicIDs) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	return c.recordRegister(ctx, kadm.NewClient(cl), ids)
}

// KeepTopicIDs records ids (SetUpTopics' answer) in the register every
// KeepInterval until ctx ends, so that the register outlives Kafka's
// expiry of offsets while services run for weeks. A failure is logged and
// tried again at the next interval.
func (c Config) KeepTopicIDs(ctx context.Context, ids TopicIDs) {
	t := time.NewTicker(KeepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.RecordTopicIDs(ctx, ids); err != nil && ctx.Err() == nil {
			c.Log().Warn("cannot renew the register of topics; trying again later", "group", c.RegisterGroup(), "err", err)
		}
	}
}

// readRegister returns the topic IDs the register holds, by topic name.
func (c Config) readRegister(ctx context.Context, adm *kadm.Client) (TopicIDs, error) {
	group := c.RegisterGroup()
	fetched, err := adm.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return TopicIDs{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the register of topics (group %s): %w", group, err)
	}
	known := TopicIDs{}
	var bad []error
	fetched.Each(func(o kadm.OffsetResponse) {
		if o.Err != nil {
			bad = append(bad, fmt.Errorf("%s[%d]: %w", o.Topic, o.Partition, o.Err))
			return
		}
		entry, err := c.decodeRegister(o.Metadata)
		if err != nil {
			bad = append(bad, fmt.Errorf("entry on %s[%d]: %w", o.Topic, o.Partition, err))
			return
		}
		for t, id := range entry {
			if prev, ok := known[t]; ok && prev != id {
				// Entries are written together, so they agree; if
				// not, one names an ID the topic no longer has.
				bad = append(bad, fmt.Errorf("entries disagree on the ID of topic %s (%s, %s): delete the group to record them afresh", t, prev, id))
			}
			known[t] = id
		}
	})
	if len(bad) > 0 {
		return nil, fmt.Errorf("read the register of topics (group %s): %w", group, errors.Join(bad...))
	}
	return known, nil
}

// recordRegister commits, on partition 0 of each topic of ids, an entry
// naming every topic of ids with its ID.
func (c Config) recordRegister(ctx context.Context, adm *kadm.Client, ids TopicIDs) error {
	group := c.RegisterGroup()
	meta, err := c.encodeRegister(ids)
	if err != nil {
		return err
	}
	var offsets kadm.Offsets
	for t := range ids {
		offsets.Add(kadm.Offset{Topic: t, Partition: 0, At: 0, LeaderEpoch: -1, Metadata: meta})
	}
	// Under ACLs a service may commit only on the topics it reads; every
	// entry names every topic, so the entries it may write suffice, and
	// the other services write the rest.
	res, err := adm.CommitOffsets(ctx, group, offsets)
	if err != nil {
		return fmt.Errorf("record the register of topics (group %s): %w", group, err)
	}
	recorded := 0
	var failed []error
	res.Each(func(r kadm.OffsetResponse) {
		switch {
		case r.Err == nil:
			recorded++
		case !errors.Is(r.Err, kerr.TopicAuthorizationFailed):
			failed = append(failed, fmt.Errorf("%s: %w", r.Topic, r.Err))
		}
	})
	if len(failed) > 0 || recorded == 0 {
		if recorded == 0 && len(failed) == 0 {
			failed = append(failed, fmt.Errorf("not authorized to read any of the topics: %w", kerr.TopicAuthorizationFailed))
		}
		return fmt.Errorf("record the register of topics (group %s): %w", group, errors.Join(failed...))
	}
	return nil
}

// An entry is JSON: the topic's name without the namespace's prefix, to
// its ID in base64, so that it stays well within Kafka's
// offset.metadata.max.bytes (4096 by default).
func (c Config) encodeRegister(ids TopicIDs) (string, error) {
	prefix := c.Names().Namespace + "."
	entry := map[string]string{}
	for t, id := range ids {
		entry[strings.TrimPrefix(t, prefix)] = base64.StdEncoding.EncodeToString(id[:])
	}
	b, err := json.Marshal(entry) // sorted keys
	if err != nil {
		return "", fmt.Errorf("encode the register of topics: %w", err)
	}
	return string(b), nil
}

func (c Config) decodeRegister(meta string) (TopicIDs, error) {
	var entry map[string]string
	if err := json.Unmarshal([]byte(meta), &entry); err != nil {
		return nil, fmt.Errorf("decode %q: %w", meta, err)
	}
	prefix := c.Names().Namespace + "."
	ids := TopicIDs{}
	for short, text := range entry {
		raw, err := base64.StdEncoding.DecodeString(text)
		if err != nil || len(raw) != len(kadm.TopicID{}) {
			return nil, fmt.Errorf("decode the ID %q of topic %s: not a topic ID", text, short)
		}
		ids[prefix+short] = kadm.TopicID(raw)
	}
	return ids, nil
}
