package notifier

import (
	"net/url"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/records"
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

// CloudEventHeaders returns the CloudEvents headers of notification n of
// the installation at source.
func CloudEventHeaders(n records.Notification, source string) []kgo.RecordHeader {
	h := []kgo.RecordHeader{
		{Key: "ce_specversion", Value: []byte(CloudEventsSpecVersion)},
		{Key: "ce_id", Value: []byte(n.Envelope.ID)},
		{Key: "ce_source", Value: []byte(source)},
		{Key: "ce_type", Value: []byte(TypePrefix + n.Kind)},
		{Key: "ce_time", Value: []byte(n.Envelope.Time.UTC().Format(time.RFC3339Nano))},
	}
	if s := Subject(n); s != "" {
		h = append(h, kgo.RecordHeader{Key: "ce_subject", Value: []byte(s)})
	}
	return append(h,
		kgo.RecordHeader{Key: "ce_severity", Value: []byte(n.Severity)},
		kgo.RecordHeader{Key: "content-type", Value: []byte(ContentType)},
	)
}
