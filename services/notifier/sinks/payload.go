package sinks

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/services/notifier/notifier"
)

// Wants reports whether destination d gets notification n: some rule
// matches it, or d has no rules. labels returns the labels of a cluster
// in the inventory (nil when no rule selects clusters).
func (d Destination) Wants(n records.Notification, labels func(cluster string) (map[string]string, bool)) bool {
	if len(d.Rules) == 0 {
		return true
	}
	for _, r := range d.Rules {
		if r.Matches(n, labels) {
			return true
		}
	}
	return false
}

// Matches reports whether every condition of r holds for n.
func (r Rule) Matches(n records.Notification, labels func(cluster string) (map[string]string, bool)) bool {
	if len(r.Types) > 0 {
		typ, ok := notifier.TypePrefix+n.Kind, false
		for _, t := range r.Types {
			if prefix, glob := strings.CutSuffix(t, "*"); glob && strings.HasPrefix(typ, prefix) || t == typ {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if r.MinSeverity != "" && severityRank(n.Severity) < severityRank(r.MinSeverity) {
		return false
	}
	if len(r.Workflows) > 0 && (n.WorkflowID == "" || !slices.Contains(r.Workflows, n.WorkflowID)) {
		return false
	}
	if r.Clusters != nil {
		if n.ClusterID == "" || labels == nil {
			return false
		}
		l, ok := labels(n.ClusterID)
		if !ok || !r.Clusters.Matches(l) {
			return false
		}
	}
	return true
}

// CloudEventContentType is the media type of a webhook's body: a
// CloudEvent in the structured mode of the HTTP binding.
const CloudEventContentType = "application/cloudevents+json; charset=utf-8"

// CloudEventJSON returns notification n of the installation at source as
// a CloudEvent in structured JSON, the body of a webhook request: the
// attributes of its Kafka headers (notifier.Event), datacontenttype
// application/json, and the notification itself as data.
func CloudEventJSON(n records.Notification, source string) ([]byte, error) {
	e := notifier.Event(n, source)
	e.DataContentType = "application/json"
	e.Data = n
	return json.Marshal(e)
}

// Slack Block Kit, as much of it as a message takes.
type slackMessage struct {
	Text   string       `json:"text"` // the fallback: notifications, screen readers
	Blocks []slackBlock `json:"blocks"`
}

type slackBlock struct {
	Type     string        `json:"type"`
	Text     *slackText    `json:"text,omitempty"`
	Fields   []slackText   `json:"fields,omitempty"`
	Elements []slackButton `json:"elements,omitempty"`
}

type slackText struct {
	Type  string `json:"type"` // plain_text or mrkdwn
	Text  string `json:"text"`
	Emoji bool   `json:"emoji,omitempty"`
}

// slackButton is an element of an actions block (a button) or of a
// context block (Type mrkdwn, Text only).
type slackButton struct {
	Type     string `json:"type"`
	Text     any    `json:"text"`
	URL      string `json:"url,omitempty"`
	ActionID string `json:"action_id,omitempty"`
}

var severityEmoji = map[records.Severity]string{
	records.SeverityInfo:    ":information_source:",
	records.SeverityWarning: ":warning:",
	records.SeverityError:   ":rotating_light:",
}

// SlackMessage returns notification n as the JSON body of a Slack incoming
// webhook: a header with the severity and the type, the message, fields
// for the workflow and the cluster (linked to the dashboard when
// dashboard is set), a button to the dashboard, and a context line with
// the type, ID and time.
func SlackMessage(n records.Notification, dashboard string) ([]byte, error) {
	sev := string(n.Severity)
	title := strings.TrimSpace(severityEmoji[n.Severity] + " " + strings.ToUpper(sev) + " · " + n.Kind)
	msg := slackMessage{
		Text: "[" + sev + "] " + n.Message,
		Blocks: []slackBlock{
			{Type: "header", Text: &slackText{Type: "plain_text", Text: truncate(title, 150), Emoji: true}},
			{Type: "section", Text: &slackText{Type: "mrkdwn", Text: truncate(slackEscape(n.Message), 3000)}},
		},
	}
	link := func(path, id string) string {
		if dashboard == "" {
			return slackEscape(id)
		}
		return "<" + dashboard + path + url.PathEscape(id) + "|" + slackEscape(id) + ">"
	}
	var fields []slackText
	if n.WorkflowID != "" {
		fields = append(fields, slackText{Type: "mrkdwn", Text: "*Workflow*\n" + link("/rollouts/", n.WorkflowID)})
	}
	if n.ClusterID != "" {
		fields = append(fields, slackText{Type: "mrkdwn", Text: "*Cluster*\n" + link("/clusters/", n.ClusterID)})
	}
	fields = append(fields, slackText{Type: "mrkdwn", Text: "*Severity*\n" + sev})
	msg.Blocks = append(msg.Blocks, slackBlock{Type: "section", Fields: fields})
	if dashboard != "" && (n.WorkflowID != "" || n.ClusterID != "") {
		target, label := dashboard+"/rollouts/"+url.PathEscape(n.WorkflowID), "Open the rollout"
		if n.WorkflowID == "" {
			target, label = dashboard+"/clusters/"+url.PathEscape(n.ClusterID), "Open the cluster"
		}
		msg.Blocks = append(msg.Blocks, slackBlock{Type: "actions", Elements: []slackButton{{
			Type: "button", Text: slackText{Type: "plain_text", Text: label}, URL: target, ActionID: "open-dashboard",
		}}})
	}
	msg.Blocks = append(msg.Blocks, slackBlock{Type: "context", Elements: []slackButton{{
		Type: "mrkdwn", Text: notifier.TypePrefix + n.Kind + " · " + n.Envelope.ID + " · " + n.Envelope.Time.UTC().Format("2006-01-02 15:04:05Z"),
	}}})
	return json.Marshal(msg)
}

// slackEscape escapes what Slack's mrkdwn reads as markup: &, < and >.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func truncate(s string, max int) string {
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}
