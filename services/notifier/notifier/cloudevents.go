package notifier

import (
	"fmt"
	"net/url"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// Every notification record carries the attributes of a CloudEvent in the
// headers of the CloudEvents Kafka protocol binding, binary mode (spec
// 1.0): ce_specversion, ce_id, ce_source, ce_type, ce_time, ce_subject, the
// extension ce_severity, and content-type for the value, which stays the
// Avro record. So a CloudEvents consumer reads a notification's what, when
// and about what without decoding Avro, and drops a repeat by ce_id (a
// notification's ID is derived from the record that caused it).

// CloudEventsSpecVersion is the CloudEvents version of the headers.
const CloudEventsSpecVersion = "1.0"

// TypePrefix starts every CloudEvents type of Flotilla: the type of a
// notification of kind K is TypePrefix+K, e.g. io.flotilla.workflow.paused.
const TypePrefix = "io.flotilla."

// ContentType is the media type of a notification record's value: the
// Avro single-object encoding of schemas/notification.v1.avsc.
const ContentType = "application/avro"

// Kinds are the kinds of notification, each the CloudEvents type
// TypePrefix+kind, with what it says. The README's catalogue lists them.
var Kinds = []string{
	"workflow.submitted", "workflow.rejected", "workflow.phase-started", "workflow.wave-started",
	"workflow.wave-completed", "workflow.waiting", "workflow.waiting-approval", "workflow.approved",
	"workflow.paused", "workflow.recovering", "workflow.resumed", "workflow.retrying",
	"workflow.cancelled", "workflow.aborted", "workflow.succeeded", "workflow.failed",
	"workflow.rolling-back", "workflow.rolled-back", "workflow.rollback-failed", "workflow.compacted",
	"operation.started", "operation.succeeded", "operation.failed",
	"health.changed", "cluster.drifted", "cluster.drift-resolved",
	"record.undecodable", "record.set-aside",
	"sink.delivery-failed",
}

// Source is the CloudEvents source of an installation's notifications: a
// URN naming its namespace.
func Source(namespace string) string { return "urn:flotilla:" + url.PathEscape(namespace) }

// Subject is the CloudEvents subject of a notification: what it is about,
// within the source.
func Subject(n records.Notification) string {
	switch {
	case n.WorkflowID != "" && n.ClusterID != "":
		return "workflows/" + n.WorkflowID + "/clusters/" + n.ClusterID
	case n.WorkflowID != "":
		return "workflows/" + n.WorkflowID
	case n.ClusterID != "":
		return "clusters/" + n.ClusterID
	case n.Fields["record"] != "":
		return "records/" + n.Fields["record"] // where a record that could not be used is
	}
	return ""
}

// CloudEvent holds the context attributes of a notification as a
// CloudEvent, computed once for both of its forms: the Kafka headers
// (CloudEventHeaders) and the structured JSON that sinks deliver over HTTP
// (with Data set). Subject is empty when the notification is about nothing
// narrower than the installation.
type CloudEvent struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Time            string `json:"time"`
	Subject         string `json:"subject,omitempty"`
	DataContentType string `json:"datacontenttype,omitempty"`
	// Severity is an extension attribute: info, warning or error.
	Severity string `json:"severity"`
	// Data is the event's payload in structured mode; nil in binary mode,
	// where the record's value is the payload.
	Data any `json:"data,omitempty"`
}

// Event returns the CloudEvent attributes of notification n of the
// installation at source, without data.
func Event(n records.Notification, source string) CloudEvent {
	return CloudEvent{
		SpecVersion: CloudEventsSpecVersion,
		ID:          n.Envelope.ID,
		Source:      source,
		Type:        TypePrefix + n.Kind,
		Time:        n.Envelope.Time.UTC().Format(time.RFC3339Nano),
		Subject:     Subject(n),
		Severity:    string(n.Severity),
	}
}

// CloudEventHeaders returns the CloudEvents headers of notification n of
// the installation at source.
func CloudEventHeaders(n records.Notification, source string) []kgo.RecordHeader {
	e := Event(n, source)
	h := []kgo.RecordHeader{
		{Key: "ce_specversion", Value: []byte(e.SpecVersion)},
		{Key: "ce_id", Value: []byte(e.ID)},
		{Key: "ce_source", Value: []byte(e.Source)},
		{Key: "ce_type", Value: []byte(e.Type)},
		{Key: "ce_time", Value: []byte(e.Time)},
	}
	if e.Subject != "" {
		h = append(h, kgo.RecordHeader{Key: "ce_subject", Value: []byte(e.Subject)})
	}
	return append(h,
		kgo.RecordHeader{Key: "ce_severity", Value: []byte(e.Severity)},
		kgo.RecordHeader{Key: "content-type", Value: []byte(ContentType)},
	)
}

// Record returns the record of notification note on the notifications
// topic of names: its Avro value, its key (the workflow's ID, else the
// cluster's, so a workflow's notifications stay in order on one
// partition) and its CloudEvents headers. Whoever writes a notification
// (the notifier's loop, its sinks) writes it this way.
func Record(names topics.Names, note records.Notification) (*kgo.Record, error) {
	value, err := records.Encode(note)
	if err != nil {
		return nil, fmt.Errorf("encode notification %s: %w", note.Kind, err)
	}
	key := note.WorkflowID
	if key == "" {
		key = note.ClusterID
	}
	return &kgo.Record{Topic: names.Notifications, Key: []byte(key), Value: value,
		Headers: CloudEventHeaders(note, Source(names.Namespace))}, nil
}
