package sinks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/records"
)

var (
	secretA = NewSecret([]byte("secret A of the tests, 32 bytes!"))
	secretB = NewSecret([]byte("secret B of the tests, 32 bytes!"))
)

// env is a fake environment for parse.
func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

// fullExample is the README's example of a routing file.
const fullExample = `
dashboard: http://127.0.0.1:8080
destinations:
  - name: ops-webhook
    type: webhook
    url: https://hooks.example.com/flotilla
    secretFile: webhook-secrets     # whsec_ secrets, one a line: the new one and the old one while rotating
    start: end                      # a new destination starts with what is written from now on (default)
    timeout: 10s                    # each request (default 10s)
    maxAttempts: 8                  # requests for one notification (default 8)
    minBackoff: 1s                  # the first wait between attempts, doubling (default 1s)
    maxBackoff: 1m                  # the longest wait (default 1m)
    rules:                          # any rule; in a rule, every field given
      - types: ["io.flotilla.workflow.*", "io.flotilla.operation.failed"]
        minSeverity: warning
      - workflows: [wf-canary]
      - types: ["io.flotilla.health.changed"]
        clusters: "env=prod,cloud in (aws,azure)"
  - name: slack-oncall
    type: slack
    urlEnv: FLOTILLA_SLACK_URL      # the incoming webhook's URL is a secret
    rules:
      - minSeverity: error
`

func TestLoadTheFullExample(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "webhook-secrets"), []byte(secretA.Encode()+"\n"+secretB.Encode()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sinks.yaml")
	if err := os.WriteFile(path, []byte(fullExample), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLOTILLA_SLACK_URL", "https://hooks.slack.com/services/T000/B000/XXXX")
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if r.Dashboard != "http://127.0.0.1:8080" || len(r.Destinations) != 2 || !r.NeedsInventory() {
		t.Fatalf("routing %+v", r)
	}
	hook, slack := r.Destinations[0], r.Destinations[1]
	if hook.Name != "ops-webhook" || hook.Type != TypeWebhook || hook.URL != "https://hooks.example.com/flotilla" || len(hook.Secrets) != 2 ||
		hook.Timeout != 10*time.Second || hook.MaxAttempts != 8 || hook.MinBackoff != time.Second || hook.MaxBackoff != time.Minute ||
		!hook.StartAtEnd || len(hook.Rules) != 3 {
		t.Errorf("webhook %+v", hook)
	}
	if hook.Rules[0].MinSeverity != records.SeverityWarning || len(hook.Rules[0].Types) != 2 || hook.Rules[2].Clusters == nil {
		t.Errorf("webhook rules %+v", hook.Rules)
	}
	if slack.Type != TypeSlack || slack.URL != "https://hooks.slack.com/services/T000/B000/XXXX" || slack.Timeout != DefaultTimeout {
		t.Errorf("slack %+v", slack)
	}
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), strings.TrimPrefix(fullExample, "\n")) {
		t.Errorf("the README does not show the full example of a routing file as this test loads it")
	}
}

func TestRulesMatch(t *testing.T) {
	r, err := parse([]byte(fullExample), "", env(map[string]string{"FLOTILLA_SLACK_URL": "https://hooks.slack.com/x"}))
	if err == nil {
		t.Fatal("parse found the secret file in the working directory")
	}
	r, err = parse([]byte(strings.Replace(fullExample, "secretFile: webhook-secrets", "secretEnv: HOOK_SECRETS", 1)), "",
		env(map[string]string{"FLOTILLA_SLACK_URL": "https://hooks.slack.com/x", "HOOK_SECRETS": secretA.Encode() + " " + secretB.Encode()}))
	if err != nil {
		t.Fatal(err)
	}
	hook, slack := r.Destinations[0], r.Destinations[1]
	labels := func(c string) (map[string]string, bool) {
		l, ok := map[string]map[string]string{"prod-aws": {"env": "prod", "cloud": "aws"}, "prod-gcp": {"env": "prod", "cloud": "gcp"}}[c]
		return l, ok
	}
	note := func(kind string, sev records.Severity, wf, cluster string) records.Notification {
		return records.Notification{Kind: kind, Severity: sev, WorkflowID: wf, ClusterID: cluster}
	}
	for _, tc := range []struct {
		n           records.Notification
		hook, slack bool
	}{
		{note("workflow.paused", records.SeverityWarning, "wf-1", ""), true, false},
		{note("workflow.submitted", records.SeverityInfo, "wf-1", ""), false, false},
		{note("workflow.submitted", records.SeverityInfo, "wf-canary", ""), true, false},
		{note("operation.failed", records.SeverityError, "wf-1", "prod-gcp"), true, true},
		{note("operation.started", records.SeverityInfo, "wf-1", "prod-aws"), false, false},
		{note("health.changed", records.SeverityWarning, "", "prod-aws"), true, false},
		{note("health.changed", records.SeverityError, "", "prod-gcp"), false, true},
		{note("health.changed", records.SeverityWarning, "", "unknown"), false, false},
		{note("record.set-aside", records.SeverityError, "", ""), false, true},
	} {
		if got := hook.Wants(tc.n, labels); got != tc.hook {
			t.Errorf("webhook wants %s %s %s/%s: %v, want %v", tc.n.Kind, tc.n.Severity, tc.n.WorkflowID, tc.n.ClusterID, got, tc.hook)
		}
		if got := slack.Wants(tc.n, labels); got != tc.slack {
			t.Errorf("slack wants %s %s: %v, want %v", tc.n.Kind, tc.n.Severity, got, tc.slack)
		}
	}
}

// Every mistake is an error naming the destination and the field, and no
// error repeats a secret.
func TestConfigErrors(t *testing.T) {
	vars := env(map[string]string{"SLACK": "https://hooks.slack.com/services/SECRET", "BAD_SLACK": "not a url SECRET", "SECRETS": secretA.Encode(), "BAD_SECRETS": "whsec_SECRET"})
	for _, tc := range []struct{ yaml, want string }{
		{"destinations: []", "destinations: none given"},
		{"destinationz: []", "field destinationz not found"},
		{"destinations:\n  - name: a\n    type: webhook\n    url: http://x\n    secretEnv: SECRETS\n    urll: http://x", "line 6: field urll not found in type Destination"},
		{"destinations:\n  - name: A b\n    type: webhook\n    url: http://x\n    secretEnv: SECRETS", `destination "A b": name: must be`},
		{"destinations:\n  - type: webhook\n    url: http://x\n    secretEnv: SECRETS", "destinations[0]: name: required"},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS}\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS}", `destination "a": name: another destination has this name`},
		{"destinations:\n  - {name: a, type: email, url: 'http://x'}", `destination "a": type: unknown type "email"`},
		{"destinations:\n  - {name: a, url: 'http://x'}", `destination "a": type: required`},
		{"destinations:\n  - {name: a, type: webhook, url: 'ftp://x', secretEnv: SECRETS}", `destination "a": url: "ftp://x" is not an http(s) URL`},
		{"destinations:\n  - {name: a, type: webhook, secretEnv: SECRETS}", `destination "a": url: required`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', urlEnv: SLACK, secretEnv: SECRETS}", `destination "a": url: give one of`},
		{"destinations:\n  - {name: a, type: slack, url: 'https://hooks.slack.com/x'}", `destination "a": url: a Slack webhook URL is a secret`},
		{"destinations:\n  - {name: a, type: slack, urlEnv: NOPE}", `destination "a": urlEnv: environment variable NOPE is not set`},
		{"destinations:\n  - {name: a, type: slack, urlEnv: BAD_SLACK}", `destination "a": urlEnv: does not hold an http(s) URL`},
		{"destinations:\n  - {name: a, type: slack, urlFile: /nonexistent/slack-url}", `destination "a": urlFile: open /nonexistent/slack-url`},
		{"destinations:\n  - {name: a, type: slack, urlEnv: SLACK, secretEnv: SECRETS}", `destination "a": secretFile: Slack requests are not signed`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x'}", `destination "a": secretFile: required`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: NOPE}", `destination "a": secretEnv: environment variable NOPE is not set`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: BAD_SECRETS}", `destination "a": secretEnv: secret 1 of 1: a secret must be whsec_ followed by base64`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretFile: /nonexistent/secrets}", `destination "a": secretFile: open /nonexistent/secrets`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS, timeout: 10}", `destination "a": timeout: "10": want a positive duration`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS, maxAttempts: 0}", `destination "a": maxAttempts: 0: want at least 1`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS, minBackoff: 2m, maxBackoff: 1m}", `destination "a": minBackoff: 2m0s is more than maxBackoff 1m0s`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS, start: middle}", `destination "a": start: "middle": want end`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS, rules: [{types: [workflow.paused]}]}", `destination "a": rules[0].types: "workflow.paused": want a type io.flotilla.<kind>`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS, rules: [{types: [io.flotilla.workflow.pausd]}]}", `destination "a": rules[0].types: "io.flotilla.workflow.pausd": no notification has this type`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS, rules: [{minSeverity: fatal}]}", `destination "a": rules[0].minSeverity: "fatal": want info, warning or error`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS, rules: [{}, {clusters: 'env in prod'}]}", `destination "a": rules[1].clusters:`},
		{"destinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS, rules: [{severity: error}]}", "field severity not found in type Rule"},
		{"dashboard: localhost:8080\ndestinations:\n  - {name: a, type: webhook, url: 'http://x', secretEnv: SECRETS}", `dashboard: "localhost:8080" is not an http(s) URL`},
	} {
		_, err := parse([]byte(tc.yaml), "", vars)
		if err == nil {
			t.Errorf("%s: no error, want %q", tc.yaml, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n  error %q\n  want  %q", tc.yaml, err, tc.want)
		}
		if strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%s: the error %q repeats a secret", tc.yaml, err)
		}
	}
	// Load names the file.
	path := filepath.Join(t.TempDir(), "sinks.yaml")
	if err := os.WriteFile(path, []byte("destinations: []"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "sinks "+path+": destinations: none given") {
		t.Errorf("Load: %v; want it to name the file", err)
	}
}
