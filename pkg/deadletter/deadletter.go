// Package deadletter sets aside the records a service cannot use: a value
// that does not decode, of an unknown schema, invalid, a null key on a
// compacted topic. Each becomes a record of the dead-letter topic naming
// where it was (topic, partition, offset), what it held and why it was set
// aside; processing goes on, and the notifier announces it. Nothing is lost
// silently, and no record can make a service crash-loop.
//
// The service that sets a record aside is the one that owns its partition
// (the executor for commands, operations, claims and leases; the planner
// for workflows and policies; the monitor for the inventory and health),
// so each bad record is set aside once per reading; topics every copy
// reads whole go by the partition number of the copy's own (Pending). A record read again after a
// restart is set aside again under the same envelope ID: readers drop the
// repeat by ID.
package deadletter

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// idSpace scopes the name-based IDs of dead letters.
var idSpace = uuid.MustParse("0b7c9d7e-61f4-4d1b-9a3e-5f0c2d8a4e11")

// Letter returns the dead letter of src, set aside by service for reason.
func Letter(service string, src *kgo.Record, reason error, now time.Time) records.DeadLetter {
	where := records.DeadLetterKey(src.Topic, src.Partition, src.Offset)
	d := records.DeadLetter{
		Envelope:        records.Envelope{ID: uuid.NewSHA1(idSpace, []byte(service+"|"+where)).String(), Time: now.UTC(), Principal: service},
		Service:         service,
		SourceTopic:     src.Topic,
		SourcePartition: src.Partition,
		SourceOffset:    src.Offset,
		Key:             src.Key,
		NullKey:         src.Key == nil,
		Tombstone:       src.Value == nil,
		ValueSize:       int64(len(src.Value)),
		Reason:          reason.Error(),
	}
	d.Value = src.Value[:min(len(src.Value), records.MaxDeadLetterValue)]
	return d
}

// Record returns the record to produce to topic (the namespace's
// dead-letter topic) for src, set aside by service for reason.
func Record(topic, service string, src *kgo.Record, reason error, now time.Time) (*kgo.Record, error) {
	d := Letter(service, src, reason, now)
	value, err := records.Encode(d)
	if err != nil {
		return nil, fmt.Errorf("encode the dead letter of %s: %w", records.DeadLetterKey(src.Topic, src.Partition, src.Offset), err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(records.DeadLetterKey(src.Topic, src.Partition, src.Offset)), Value: value}, nil
}
