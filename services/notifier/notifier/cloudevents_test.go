package notifier

import (
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// checkCloudEvent checks the headers of a notification record against the
// CloudEvents 1.0 Kafka protocol binding, binary mode, and against the
// notification they describe.
func checkCloudEvent(t *testing.T, headers []kgo.RecordHeader, n records.Notification, source string) {
	t.Helper()
	got := map[string]string{}
	for _, h := range headers {
		if _, twice := got[h.Key]; twice {
			t.Errorf("header %s twice", h.Key)
		}
		got[h.Key] = string(h.Value)
	}
	for _, required := range []string{"ce_specversion", "ce_id", "ce_source", "ce_type"} {
		if got[required] == "" {
			t.Errorf("%s: required attribute %s is missing or empty: %v", n.Kind, required, got)
		}
	}
	if got["ce_specversion"] != "1.0" || got["ce_id"] != n.Envelope.ID || got["ce_source"] != source ||
		got["ce_type"] != "io.flotilla."+n.Kind || got["content-type"] != "application/avro" || got["ce_severity"] != string(n.Severity) {
		t.Errorf("%s: headers %v do not say what the notification does: %+v", n.Kind, got, n)
	}
	if u, err := url.Parse(got["ce_source"]); err != nil || !u.IsAbs() {
		t.Errorf("ce_source %q is not an absolute URI: %v", got["ce_source"], err)
	}
	if at, err := time.Parse(time.RFC3339, got["ce_time"]); err != nil || !at.Equal(n.Envelope.Time) {
		t.Errorf("ce_time %q is not the notification's time %s in RFC 3339: %v", got["ce_time"], n.Envelope.Time, err)
	}
	if !slices.Contains(Kinds, n.Kind) {
		t.Errorf("notification kind %q is not in the catalogue (Kinds)", n.Kind)
	}
	for k := range got {
		if name, ok := strings.CutPrefix(k, "ce_"); ok && (len(name) > 20 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789") != "") {
			t.Errorf("attribute %q: CloudEvents attribute names are at most 20 lower-case letters and digits", name)
		}
	}
}

func TestCloudEventHeaders(t *testing.T) {
	src := Source("fleet")
	wf, _ := FromWorkflow(workflowRow("paused", records.WorkflowPaused, "2 clusters failed"))
	op, _ := FromOperation(records.OperationEvent{Envelope: records.Envelope{ID: "op-1", Time: at}, WorkflowID: "wf-1", ClusterID: "c-1", Status: records.OperationFailed, Reason: "boom"})
	health, _ := FromHealth(records.Health{Envelope: records.Envelope{ID: "h-1", Time: at}, ClusterID: "c-1", Status: records.HealthUnhealthy, PreviousStatus: records.HealthHealthy})
	bad := Undecodable("fleet.workflows", 3, 120, "wf-1", at, os.ErrInvalid)
	failed := DeliveryFailed(op, "ops-webhook", 503, "gave up after 8 attempts", at.Add(time.Minute))
	for _, tc := range []struct {
		n       records.Notification
		subject string
	}{
		{wf, "workflows/wf-1"},
		{op, "workflows/wf-1/clusters/c-1"},
		{health, "clusters/c-1"},
		{bad, "records/fleet.workflows/3@120"},
		{failed, "workflows/wf-1/clusters/c-1"},
	} {
		h := CloudEventHeaders(tc.n, src)
		checkCloudEvent(t, h, tc.n, src)
		if i := slices.IndexFunc(h, func(h kgo.RecordHeader) bool { return h.Key == "ce_subject" }); i < 0 || string(h[i].Value) != tc.subject {
			t.Errorf("%s: ce_subject %v, want %q", tc.n.Kind, h, tc.subject)
		}
	}
	if again := DeliveryFailed(op, "ops-webhook", 0, "another reason", at.Add(time.Hour)); again.Envelope.ID != failed.Envelope.ID ||
		DeliveryFailed(op, "slack", 0, "", at).Envelope.ID == failed.Envelope.ID {
		t.Errorf("a failure's ID is not derived from the notification and the destination alone")
	}
	if failed.Envelope.CausationID != op.Envelope.ID || failed.Fields["destination"] != "ops-webhook" || failed.Fields["status"] != "503" {
		t.Errorf("delivery failed %+v", failed)
	}
	if e := Event(op, src); e.ID != op.Envelope.ID || e.Type != "io.flotilla.operation.failed" || e.Subject != "workflows/wf-1/clusters/c-1" || e.Data != nil {
		t.Errorf("Event %+v", e)
	}
	if src != "urn:flotilla:fleet" {
		t.Errorf("source %q", src)
	}
}

// Every workflow event in the catalogue has a message of its own, and the
// README's catalogue lists every type.
func TestTheCatalogueIsComplete(t *testing.T) {
	for _, kind := range Kinds {
		event, ok := strings.CutPrefix(kind, "workflow.")
		if !ok {
			continue
		}
		n, ok := FromWorkflow(workflowRow(event, records.WorkflowRunning, "why"))
		if !ok || n.Kind != kind || strings.HasSuffix(n.Message, ": "+event) {
			t.Errorf("%s: notification %v %q: the notifier has no message of its own for it", kind, ok, n.Message)
		}
	}
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range Kinds {
		if !strings.Contains(string(readme), "`"+TypePrefix+kind+"`") {
			t.Errorf("the README's catalogue of notifications does not list %s", TypePrefix+kind)
		}
	}
}
