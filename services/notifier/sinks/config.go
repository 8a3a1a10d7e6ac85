// Package sinks delivers the notifications of fleet.notifications to
// destinations outside Kafka: generic webhooks, which get each
// notification as a CloudEvent in structured JSON signed per the Standard
// Webhooks specification, and Slack incoming webhooks, which get a Block
// Kit message. A routing file (Load) names the destinations and the rules
// that pick what each one gets.
//
// Delivery progress is kept in Kafka: each destination is a consumer
// group of its own on the notifications topic, which commits a
// notification's offset only once it was delivered, or finally failed and
// that failure was itself written as a notification. So a notification is
// delivered once per destination across restarts, but for the one in
// flight when a notifier stops, which may be delivered again with the same
// webhook-id for the receiver to drop. See Run.
package sinks

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/selector"
	"github.com/flotilla-fleet/flotilla/services/notifier/notifier"
)

// Destination types.
const (
	TypeWebhook = "webhook" // a generic webhook: the CloudEvent in structured JSON, signed
	TypeSlack   = "slack"   // a Slack incoming webhook: a Block Kit message
)

// Defaults of a destination's delivery.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultMaxAttempts = 8
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = time.Minute
)

// Routing is a routing file: the destinations and, for each, the rules of
// what it gets.
type Routing struct {
	// Dashboard is the base URL of Flotilla's dashboard ("" for none):
	// Slack messages link to Dashboard/rollouts/<id> and
	// Dashboard/clusters/<id>.
	Dashboard string
	// Destinations, in the order of the file; their names are unique.
	Destinations []Destination
}

// Destination is where notifications go, and which ones.
type Destination struct {
	Name string
	Type string // TypeWebhook or TypeSlack
	// URL is where notifications are posted. For Slack it is a secret
	// (whoever holds it can post to the channel), read from a file or the
	// environment, never written in the routing file or logged.
	URL string
	// Secrets sign every webhook request, each giving one signature in
	// webhook-signature: several while a secret is being rotated.
	Secrets []Secret
	// Rules pick the notifications the destination gets: those that any
	// rule matches; with no rules, every one.
	Rules []Rule
	// StartAtEnd makes a destination new to the installation (its group
	// has no committed offsets yet) start with the notifications written
	// from the notifier's start on (by their timestamps), rather than the
	// whole retained history.
	StartAtEnd bool
	// Timeout bounds each request; MaxAttempts bounds the requests made
	// for one notification; the waits between them grow exponentially from
	// MinBackoff to MaxBackoff.
	Timeout     time.Duration
	MaxAttempts int
	MinBackoff  time.Duration
	MaxBackoff  time.Duration
}

// Rule is one condition on a notification; every field given must hold.
type Rule struct {
	// Types are CloudEvents types (io.flotilla.workflow.paused), or
	// prefixes of them ending in '*' (io.flotilla.workflow.*).
	Types []string
	// MinSeverity is the lowest severity that passes ("": any).
	MinSeverity records.Severity
	// Workflows are the workflow IDs that pass (none: any).
	Workflows []string
	// Clusters selects the cluster a notification is about by its labels
	// in the inventory (nil: any). A notification about no cluster, or
	// one not in the inventory, does not pass.
	Clusters *selector.Selector
}

// NeedsInventory reports whether some rule selects clusters by label, which
// takes the inventory's labels.
func (r Routing) NeedsInventory() bool {
	for _, d := range r.Destinations {
		for _, rule := range d.Rules {
			if rule.Clusters != nil {
				return true
			}
		}
	}
	return false
}

// The routing file, as written. Field names are those of the YAML.
type fileRouting struct {
	Dashboard    string            `yaml:"dashboard"`
	Destinations []fileDestination `yaml:"destinations"`
}

type fileDestination struct {
	Name        string     `yaml:"name"`
	Type        string     `yaml:"type"`
	URL         string     `yaml:"url"`
	URLFile     string     `yaml:"urlFile"`
	URLEnv      string     `yaml:"urlEnv"`
	SecretFile  string     `yaml:"secretFile"`
	SecretEnv   string     `yaml:"secretEnv"`
	Start       string     `yaml:"start"`
	Timeout     string     `yaml:"timeout"`
	MaxAttempts *int       `yaml:"maxAttempts"`
	MinBackoff  string     `yaml:"minBackoff"`
	MaxBackoff  string     `yaml:"maxBackoff"`
	Rules       []fileRule `yaml:"rules"`
}

type fileRule struct {
	Types       []string `yaml:"types"`
	MinSeverity string   `yaml:"minSeverity"`
	Workflows   []string `yaml:"workflows"`
	Clusters    *string  `yaml:"clusters"`
}

// namePattern keeps a destination's name fit for its consumer group's
// name and for logs: <namespace>.notifier.sink.<name>.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// typePattern is a CloudEvents type of Flotilla, or a prefix of one
// ending in '*'.
var typePattern = regexp.MustCompile(`^io\.flotilla\.[a-z0-9.-]*\*?$`)

// Load reads and checks the routing file at path. Secrets and Slack URLs
// are read from the files and environment variables it names (a relative
// file is relative to the routing file's directory).
//
// Loading is strict, so that a mistake stops the notifier at its start
// rather than dropping notifications: an unknown field, an unknown type,
// a duplicate or ill-formed name, a URL that is not http(s), a Slack URL
// written in the file, a missing or ill-formed secret, an unknown severity,
// a type that is not io.flotilla.*, a bad label selector, a bad duration
// are errors that name the file, the destination and the field. Every
// problem is reported, joined with errors.Join. No error holds a secret.
func Load(path string) (Routing, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Routing{}, fmt.Errorf("sinks: %w", err)
	}
	r, err := parse(data, filepath.Dir(path), os.LookupEnv)
	if err != nil {
		return Routing{}, fmt.Errorf("sinks %s: %w", path, err)
	}
	return r, nil
}

func parse(data []byte, dir string, lookupEnv func(string) (string, bool)) (Routing, error) {
	var f fileRouting
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // "line 4: field urll not found in type sinks.fileDestination"
	if err := dec.Decode(&f); err != nil {
		return Routing{}, errors.New(strings.ReplaceAll(err.Error(), "sinks.file", ""))
	}
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	r := Routing{Dashboard: strings.TrimRight(f.Dashboard, "/")}
	if f.Dashboard != "" {
		if err := checkURL(f.Dashboard); err != nil {
			add("dashboard", "%v", err)
		}
	}
	if len(f.Destinations) == 0 {
		add("destinations", "none given")
	}
	seen := map[string]bool{}
	for i, fd := range f.Destinations {
		where := fmt.Sprintf("destinations[%d]", i)
		if fd.Name != "" {
			where = fmt.Sprintf("destination %q", fd.Name)
		}
		field := func(name string) string { return where + ": " + name }
		d := Destination{Name: fd.Name, Type: fd.Type, Timeout: DefaultTimeout, MaxAttempts: DefaultMaxAttempts,
			MinBackoff: DefaultMinBackoff, MaxBackoff: DefaultMaxBackoff, StartAtEnd: true}
		switch {
		case fd.Name == "":
			add(field("name"), "required")
		case !namePattern.MatchString(fd.Name):
			add(field("name"), "must be 1-63 lower-case letters, digits, '_' or '-', starting with a letter or digit (it names the destination's consumer group)")
		case seen[fd.Name]:
			add(field("name"), "another destination has this name")
		}
		seen[fd.Name] = true

		// The URL: inline for a webhook; from a file or the environment
		// for either, and only so for Slack, whose URL is a secret.
		sources := 0
		for _, s := range []string{fd.URL, fd.URLFile, fd.URLEnv} {
			if s != "" {
				sources++
			}
		}
		switch {
		case fd.Type != TypeWebhook && fd.Type != TypeSlack:
			if fd.Type == "" {
				add(field("type"), "required (webhook or slack)")
			} else {
				add(field("type"), "unknown type %q (want webhook or slack)", fd.Type)
			}
		case fd.Type == TypeSlack && fd.URL != "":
			add(field("url"), "a Slack webhook URL is a secret: give it in urlFile or urlEnv, not in the file")
		case sources == 0:
			add(field("url"), "required (url, urlFile or urlEnv)")
		case sources > 1:
			add(field("url"), "give one of url, urlFile and urlEnv")
		default:
			u, name, err := fd.URL, "url", error(nil)
			switch {
			case fd.URLFile != "":
				name = "urlFile"
				u, err = readSecretFile(dir, fd.URLFile)
			case fd.URLEnv != "":
				name = "urlEnv"
				u, err = readSecretEnv(lookupEnv, fd.URLEnv)
			}
			u = strings.TrimSpace(u)
			if err == nil {
				if err = checkURL(u); err != nil && name != "url" {
					err = errors.New("does not hold an http(s) URL") // not the URL itself: a secret
				}
			}
			if err != nil {
				add(field(name), "%v", err)
			}
			d.URL = u
		}

		// Secrets: webhooks only, and required there.
		switch {
		case fd.Type == TypeSlack && (fd.SecretFile != "" || fd.SecretEnv != ""):
			add(field("secretFile"), "Slack requests are not signed: a Slack destination takes no secret")
		case fd.Type != TypeWebhook:
		case fd.SecretFile == "" && fd.SecretEnv == "":
			add(field("secretFile"), "required (secretFile or secretEnv): webhook requests are signed")
		case fd.SecretFile != "" && fd.SecretEnv != "":
			add(field("secretFile"), "give one of secretFile and secretEnv")
		default:
			name, text, err := "secretFile", "", error(nil)
			if fd.SecretFile != "" {
				text, err = readSecretFile(dir, fd.SecretFile)
			} else {
				name = "secretEnv"
				text, err = readSecretEnv(lookupEnv, fd.SecretEnv)
			}
			if err == nil {
				d.Secrets, err = ParseSecrets(text)
			}
			if err != nil {
				add(field(name), "%v", err)
			}
		}

		switch fd.Start {
		case "", "end":
		case "start":
			d.StartAtEnd = false
		default:
			add(field("start"), "%q: want end (the default: only what is written from the destination's first start) or start (everything retained)", fd.Start)
		}
		for _, dur := range []struct {
			name string
			text string
			to   *time.Duration
		}{{"timeout", fd.Timeout, &d.Timeout}, {"minBackoff", fd.MinBackoff, &d.MinBackoff}, {"maxBackoff", fd.MaxBackoff, &d.MaxBackoff}} {
			if dur.text == "" {
				continue
			}
			v, err := time.ParseDuration(dur.text)
			if err != nil || v <= 0 {
				add(field(dur.name), "%q: want a positive duration such as 10s or 2m", dur.text)
				continue
			}
			*dur.to = v
		}
		if d.MinBackoff > d.MaxBackoff {
			add(field("minBackoff"), "%v is more than maxBackoff %v", d.MinBackoff, d.MaxBackoff)
		}
		if fd.MaxAttempts != nil {
			if *fd.MaxAttempts < 1 {
				add(field("maxAttempts"), "%d: want at least 1", *fd.MaxAttempts)
			}
			d.MaxAttempts = *fd.MaxAttempts
		}

		for j, fr := range fd.Rules {
			rfield := func(name string) string { return field(fmt.Sprintf("rules[%d].%s", j, name)) }
			rule := Rule{Workflows: fr.Workflows}
			for _, t := range fr.Types {
				if !typePattern.MatchString(t) {
					add(rfield("types"), "%q: want a type io.flotilla.<kind>, or a prefix of one ending in '*' (io.flotilla.workflow.*)", t)
					continue
				}
				if !strings.HasSuffix(t, "*") && !slices.Contains(notifier.Kinds, strings.TrimPrefix(t, notifier.TypePrefix)) {
					add(rfield("types"), "%q: no notification has this type (see the catalogue)", t)
					continue
				}
				rule.Types = append(rule.Types, t)
			}
			if fr.MinSeverity != "" {
				if severityRank(records.Severity(fr.MinSeverity)) < 0 {
					add(rfield("minSeverity"), "%q: want info, warning or error", fr.MinSeverity)
				}
				rule.MinSeverity = records.Severity(fr.MinSeverity)
			}
			if fr.Clusters != nil {
				sel, err := selector.Parse(*fr.Clusters)
				if err != nil {
					add(rfield("clusters"), "%v", err)
				}
				rule.Clusters = &sel
			}
			d.Rules = append(d.Rules, rule)
		}
		r.Destinations = append(r.Destinations, d)
	}
	if len(errs) > 0 {
		return Routing{}, errors.Join(errs...)
	}
	return r, nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

func readSecretFile(dir, name string) (string, error) {
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, name)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err // names the file, not what it holds
	}
	if strings.TrimSpace(string(b)) == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return string(b), nil
}

func readSecretEnv(lookupEnv func(string) (string, bool), name string) (string, error) {
	v, ok := lookupEnv(name)
	if !ok || strings.TrimSpace(v) == "" {
		return "", fmt.Errorf("environment variable %s is not set", name)
	}
	return v, nil
}

// severityRank orders severities; -1 for an unknown one.
func severityRank(s records.Severity) int {
	switch s {
	case records.SeverityInfo:
		return 0
	case records.SeverityWarning:
		return 1
	case records.SeverityError:
		return 2
	}
	return -1
}
