package sinks

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/services/notifier/notifier"
)

var at = time.Date(2026, 12, 1, 12, 30, 0, 0, time.UTC)

func opFailed() records.Notification {
	n, _ := notifier.FromOperation(records.OperationEvent{Envelope: records.Envelope{ID: "op-1", Time: at, Principal: "executor"},
		WorkflowID: "wf-1", ClusterID: "prod-<1>", Status: records.OperationFailed, Reason: "broker 3 <down> & out", CommandID: "cmd-1", Attempt: 1})
	return n
}

// The webhook's body is a CloudEvent in structured JSON with the attributes
// of the Kafka headers, and the notification as data.
func TestCloudEventJSON(t *testing.T) {
	n := opFailed()
	b, err := CloudEventJSON(n, notifier.Source("fleet"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"specversion": "1.0", "id": n.Envelope.ID, "source": "urn:flotilla:fleet", "type": "io.flotilla.operation.failed",
		"time": "2026-12-01T12:30:00Z", "subject": "workflows/wf-1/clusters/prod-<1>", "datacontenttype": "application/json", "severity": "error"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
	headers := map[string]string{}
	for _, h := range notifier.CloudEventHeaders(n, notifier.Source("fleet")) {
		headers[h.Key] = string(h.Value)
	}
	for k := range want {
		if k != "datacontenttype" && headers["ce_"+k] != got[k] {
			t.Errorf("%s: JSON %v, header %q: the two forms differ", k, got[k], headers["ce_"+k])
		}
	}
	var data records.Notification
	raw, _ := json.Marshal(got["data"])
	if err := json.Unmarshal(raw, &data); err != nil || data.Envelope.ID != n.Envelope.ID || data.Message != n.Message || data.Fields["reason"] != "broker 3 <down> & out" {
		t.Errorf("data %s: %v; want the notification", raw, err)
	}
}

// The Slack message is valid Block Kit: known block types, a header within
// 150 characters, mrkdwn escaped, and a button to the dashboard.
func TestSlackMessage(t *testing.T) {
	b, err := SlackMessage(opFailed(), "http://127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type string `json:"type"`
			Text *struct {
				Type, Text string
			} `json:"text"`
			Fields []struct {
				Type, Text string
			} `json:"fields"`
			Elements []struct {
				Type     string          `json:"type"`
				Text     json.RawMessage `json:"text"`
				URL      string          `json:"url"`
				ActionID string          `json:"action_id"`
			} `json:"elements"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(b, &msg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg.Text, "operation failed") {
		t.Errorf("fallback text %q", msg.Text)
	}
	types := []string{}
	var button, fields, section string
	for _, bl := range msg.Blocks {
		types = append(types, bl.Type)
		switch bl.Type {
		case "header":
			if bl.Text == nil || bl.Text.Type != "plain_text" || len([]rune(bl.Text.Text)) > 150 || !strings.Contains(bl.Text.Text, "ERROR") {
				t.Errorf("header %+v", bl.Text)
			}
		case "section":
			if bl.Text != nil {
				section = bl.Text.Text
			}
			for _, f := range bl.Fields {
				if f.Type != "mrkdwn" {
					t.Errorf("field %+v", f)
				}
				fields += f.Text + "\n"
			}
		case "actions":
			for _, e := range bl.Elements {
				if e.Type != "button" || e.ActionID == "" {
					t.Errorf("action %+v", e)
				}
				button = e.URL
			}
		case "context":
		default:
			t.Errorf("block type %q", bl.Type)
		}
	}
	if strings.Join(types, ",") != "header,section,section,actions,context" {
		t.Errorf("blocks %v", types)
	}
	if !strings.Contains(section, "&lt;down&gt; &amp; out") || strings.Contains(section, "<down>") {
		t.Errorf("section %q: mrkdwn not escaped", section)
	}
	if button != "http://127.0.0.1:8080/rollouts/wf-1" {
		t.Errorf("button to %q, want the rollout's page", button)
	}
	if !strings.Contains(fields, "<http://127.0.0.1:8080/rollouts/wf-1|wf-1>") || !strings.Contains(fields, "<http://127.0.0.1:8080/clusters/prod-%3C1%3E|prod-&lt;1&gt;>") {
		t.Errorf("fields %q: want links to the rollout and the cluster", fields)
	}

	// Without a dashboard, no button and no links; a cluster's
	// notification links to the cluster.
	b, _ = SlackMessage(opFailed(), "")
	if strings.Contains(string(b), "actions") || strings.Contains(string(b), "http") {
		t.Errorf("no dashboard, but %s", b)
	}
	h, _ := notifier.FromHealth(records.Health{Envelope: records.Envelope{ID: "h-1", Time: at}, ClusterID: "c-1", Status: records.HealthUnhealthy, PreviousStatus: records.HealthHealthy})
	b, _ = SlackMessage(h, "https://flotilla.example.com")
	if !strings.Contains(string(b), `"url":"https://flotilla.example.com/clusters/c-1"`) {
		t.Errorf("a cluster's notification: %s", b)
	}
}

func TestBackoff(t *testing.T) {
	r := &runner{d: Destination{MinBackoff: time.Second, MaxBackoff: time.Minute}}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 6: 32 * time.Second, 7: time.Minute, 1000: time.Minute} {
		for range 20 {
			if got := r.backoff(attempt); got < want/2 || got > want {
				t.Errorf("backoff after attempt %d: %v, want within [%v, %v]", attempt, got, want/2, want)
			}
		}
	}
	r.d = Destination{MinBackoff: time.Hour, MaxBackoff: 1000 * time.Hour}
	if got := r.backoff(64); got < 500*time.Hour || got > 1000*time.Hour {
		t.Errorf("backoff of large bounds: %v", got)
	}
}
