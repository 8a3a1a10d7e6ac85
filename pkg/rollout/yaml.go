package rollout

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/flotilla-fleet/flotilla/pkg/window"
)

// ParseYAML reads a rollout spec in the YAML format people write:
//
//	name: kafka-3.9.1
//	operation:
//	  type: upgrade                 # upgrade | restart | config
//	  version: 3.9.1                # for upgrade
//	  # config: {log.retention.ms: "604800000"}   # for config: keys to set
//	  # reset: [log.cleaner.threads]              # for config: keys back to the cluster default
//	  # expect: {version: 3.8.0}                  # act only on clusters that run this now
//	selector: "env=prod,kind=kafka"
//	clusters: [c-1, c-2]            # added to the selector's targets
//	# policy: azure-first           # a named deployment policy's phases, instead of strategy
//	strategy:
//	  phases:                       # none = one phase over all targets
//	    - name: internal
//	      selector: tier=internal   # empty = the targets left by earlier phases
//	      waves: 5                  # 5 | "25%" | exponential | "exponential:2"; absent = one wave
//	      maxInFlight: 3            # absent = a whole wave at once
//	      bake: 10m                 # Go duration
//	      approve: before           # manual approval gates: before | after | both
//	      approvalTimeout: 24h      # a gate not approved by then pauses the rollout
//	      failureThreshold: 1       # the phase's own limit, as below; absent = none
//	failureThreshold: 2             # 2 | "10%" (pauses) | {limit: "10%", action: rollback}; absent = 1
//	onConflict: wait                # a target in another unfinished rollout: wait | reject
//	unhealthyTargets: hold          # a target unhealthy when its turn comes: hold | skip
//	operationTimeout: 30m           # longest one attempt may take; absent = the executor's limit
//	retries: 2                      # attempts after the first before a cluster counts as failed
//	retryBackoff: 1m                # wait before the first retry, doubled for each next one
//	autoResume: 10m                 # paused by unhealthy clusters: resume once all are healthy this long
//
// Parsing is strict: an unknown or repeated field, a value of the wrong
// shape (a list where a string belongs, "25 percent" as waves, "10" as a
// duration) or a second document is an error. Every such problem is
// reported, as *FieldError values joined with errors.Join, each naming the
// field's path and line:
//
//	strategy.phases[1].waves: line 12: "25 percent" is not a count, a percentage like "25%" or "exponential"
//
// Malformed YAML fails with the YAML parser's error, which names the line.
//
// ParseYAML checks the shape of the document only; call Validate (or Plan,
// which calls it) for the rules a spec must follow, such as an upgrade
// needing a version. Scalars are read as written, so "version: 3.10" is
// "3.10", not the float 3.1.
func ParseYAML(data []byte) (Spec, error) {
	root, err := yamlRoot(data, "rollout spec", "name, operation, ...")
	if err != nil {
		return Spec{}, err
	}
	d := &decoder{}
	s := d.spec(root)
	if len(d.errs) > 0 {
		return Spec{}, errors.Join(d.errs...)
	}
	return s, nil
}

// ParsePolicyYAML reads a deployment policy, strictly as ParseYAML reads a
// rollout spec:
//
//	name: azure-first
//	description: Azure clusters first, one region at a time
//	phases:                         # as a rollout's strategy.phases
//	  - name: azure
//	    selector: cloud=azure
//	    waves: 2
//	  - name: rest
func ParsePolicyYAML(data []byte) (Policy, error) {
	root, err := yamlRoot(data, "deployment policy", "name, phases, ...")
	if err != nil {
		return Policy{}, err
	}
	d := &decoder{}
	f := d.fields("", root, "name", "description", "phases", "driftCorrection")
	p := Policy{
		Name:        d.str("name", f["name"]),
		Description: d.str("description", f["description"]),
		Phases:      d.phases("phases", f["phases"]),
	}
	if n := f["driftCorrection"]; n != nil {
		c := d.fields("driftCorrection", n, "enabled", "selector", "maxPerHour")
		p.DriftCorrection = DriftCorrection{
			Enabled:    d.boolean("driftCorrection.enabled", c["enabled"]),
			Selector:   d.str("driftCorrection.selector", c["selector"]),
			MaxPerHour: d.int("driftCorrection.maxPerHour", c["maxPerHour"]),
		}
	}
	if len(d.errs) > 0 {
		return Policy{}, errors.Join(d.errs...)
	}
	return p, nil
}

// yamlRoot returns the mapping at the root of the only document in data.
func yamlRoot(data []byte, what, fields string) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("empty %s", what)
		}
		return nil, withLine(data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, withLine(data, err)
		}
		return nil, fmt.Errorf("line %d: a second YAML document; want exactly one %s", extra.Line, what)
	}
	if err := checkAliases(&doc); err != nil {
		return nil, err
	}
	root := resolve(doc.Content[0])
	if isNull(root) {
		return nil, fmt.Errorf("empty %s", what)
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: a %s is a mapping of fields (%s), found %s", root.Line, what, fields, describe(root))
	}
	return root, nil
}

// decoder walks a YAML node tree, collecting every problem it meets.
type decoder struct {
	errs []error
}

func (d *decoder) failf(path string, n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{Field: path, Line: n.Line, Err: fmt.Errorf(format, args...)})
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// describe names what a node holds, for "found ..." in errors.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// fields returns the values of mapping n by field name, reporting fields
// not in known and fields given twice. Null values are left out: a field
// written without a value is absent.
func (d *decoder) fields(path string, n *yaml.Node, known ...string) map[string]*yaml.Node {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.failf(path, n, "expected a mapping, found %s", describe(n))
		return nil
	}
	out := map[string]*yaml.Node{}
	seen := map[string]int{} // field → line
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.failf(path, k, "expected a field name, found %s", describe(k))
			continue
		}
		name := k.Value
		if !slices.Contains(known, name) {
			field := join(path, name)
			if !plainName.MatchString(name) {
				field = join(path, strconv.Quote(name)) // "", "a b", "x: y", ...
			}
			d.failf(field, k, "unknown field%s; want %s", didYouMean(name, known), orList(known))
			continue
		}
		if line, dup := seen[name]; dup {
			d.failf(join(path, name), k, "given twice (first on line %d)", line)
			continue
		}
		seen[name] = k.Line
		if !isNull(v) {
			out[name] = v
		}
	}
	return out
}

func didYouMean(name string, known []string) string {
	for _, k := range known {
		if strings.EqualFold(name, k) {
			return fmt.Sprintf(" (did you mean %q?)", k)
		}
	}
	return ""
}

// orList writes "a, b or c".
func orList(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

func (d *decoder) str(path string, n *yaml.Node) string {
	if n == nil {
		return ""
	}
	if n.Kind != yaml.ScalarNode {
		d.failf(path, n, "expected a string, found %s", describe(n))
		return ""
	}
	return n.Value
}

func (d *decoder) boolean(path string, n *yaml.Node) bool {
	if n == nil {
		return false
	}
	b, err := strconv.ParseBool(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || (n.Value != "true" && n.Value != "false") {
		d.failf(path, n, "expected true or false, found %s", describe(n))
	}
	return b
}

func (d *decoder) int(path string, n *yaml.Node) int {
	if n == nil {
		return 0
	}
	i, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		d.failf(path, n, "expected an integer, found %s", describe(n))
	}
	return i
}

func (d *decoder) spec(n *yaml.Node) Spec {
	f := d.fields("", n, "name", "operation", "selector", "clusters", "policy", "strategy", "failureThreshold", "windows", "onConflict", "unhealthyTargets",
		"operationTimeout", "retries", "retryBackoff", "autoResume")
	s := Spec{
		Name:             d.str("name", f["name"]),
		Operation:        d.operation("operation", f["operation"]),
		Selector:         d.str("selector", f["selector"]),
		Clusters:         d.names("clusters", f["clusters"], "cluster IDs"),
		Policy:           d.str("policy", f["policy"]),
		FailureThreshold: d.threshold("failureThreshold", f["failureThreshold"]),
		Windows:          d.windows("windows", f["windows"]),
		OnConflict:       Conflict(d.str("onConflict", f["onConflict"])),
		UnhealthyTargets: UnhealthyPolicy(d.str("unhealthyTargets", f["unhealthyTargets"])),
		OperationTimeout: d.duration("operationTimeout", f["operationTimeout"]),
		Retries:          d.int("retries", f["retries"]),
		RetryBackoff:     d.duration("retryBackoff", f["retryBackoff"]),
		AutoResume:       d.duration("autoResume", f["autoResume"]),
	}
	// The defaults may be written out; they are kept as the zero value.
	if s.OnConflict == "wait" {
		s.OnConflict = ConflictWait
	}
	if s.UnhealthyTargets == "hold" {
		s.UnhealthyTargets = HoldUnhealthy
	}
	if st := f["strategy"]; st != nil {
		sf := d.fields("strategy", st, "phases")
		s.Phases = d.phases("strategy.phases", sf["phases"])
	}
	return s
}

func (d *decoder) operation(path string, n *yaml.Node) Operation {
	if n == nil {
		return Operation{}
	}
	f := d.fields(path, n, "type", "version", "config", "reset", "expect")
	op := Operation{
		Kind:    OperationKind(d.str(path+".type", f["type"])),
		Version: d.str(path+".version", f["version"]),
		Config:  d.config(path+".config", f["config"]),
		Reset:   d.names(path+".reset", f["reset"], "config keys"),
	}
	if e := f["expect"]; e != nil {
		ef := d.fields(path+".expect", e, "version", "config")
		op.ExpectVersion = d.str(path+".expect.version", ef["version"])
		op.ExpectConfig = d.config(path+".expect.config", ef["config"])
	}
	return op
}

func (d *decoder) config(path string, n *yaml.Node) map[string]string {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.failf(path, n, "expected a mapping of keys to values, found %s", describe(n))
		return nil
	}
	out := map[string]string{}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.failf(path, k, "expected a config key, found %s", describe(k))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.failf(join(path, k.Value), k, "given twice (first on line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		if isNull(v) {
			out[k.Value] = ""
			continue
		}
		out[k.Value] = d.str(join(path, k.Value), v)
	}
	return out
}

// names reads a list of names, such as cluster IDs or config keys (what).
func (d *decoder) names(path string, n *yaml.Node, what string) []string {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.failf(path, n, "expected a list of %s, found %s", what, describe(n))
		return nil
	}
	var ids []string
	for i, c := range n.Content {
		ids = append(ids, d.str(fmt.Sprintf("%s[%d]", path, i), resolve(c)))
	}
	return ids
}

func (d *decoder) phases(path string, n *yaml.Node) []Phase {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.failf(path, n, "expected a list of phases, found %s", describe(n))
		return nil
	}
	var phases []Phase
	for i, pn := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		f := d.fields(p, resolve(pn), "name", "selector", "waves", "maxInFlight", "bake", "approve", "approvalTimeout", "failureThreshold")
		phases = append(phases, Phase{
			Name:             d.str(p+".name", f["name"]),
			Selector:         d.str(p+".selector", f["selector"]),
			Waves:            d.waves(p+".waves", f["waves"]),
			MaxInFlight:      d.int(p+".maxInFlight", f["maxInFlight"]),
			Bake:             d.duration(p+".bake", f["bake"]),
			Approve:          Approval(d.str(p+".approve", f["approve"])),
			ApprovalTimeout:  d.duration(p+".approvalTimeout", f["approvalTimeout"]),
			FailureThreshold: d.threshold(p+".failureThreshold", f["failureThreshold"]),
		})
	}
	return phases
}

func (d *decoder) windows(path string, n *yaml.Node) []WindowRule {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.failf(path, n, "expected a list of window rules, found %s", describe(n))
		return nil
	}
	var rules []WindowRule
	for i, rn := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		f := d.fields(p, resolve(rn), "selector", "allow", "deny")
		rules = append(rules, WindowRule{
			Selector: d.str(p+".selector", f["selector"]),
			Allow:    d.windowList(p+".allow", f["allow"]),
			Deny:     d.windowList(p+".deny", f["deny"]),
		})
	}
	return rules
}

// windowList reads a list of windows, checking each where it is written.
func (d *decoder) windowList(path string, n *yaml.Node) []string {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.failf(path, n, `expected a list of windows like ["Mon-Fri 22:00-04:00 Europe/Paris"], found %s`, describe(n))
		return nil
	}
	var out []string
	for i, wn := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		text := d.str(p, resolve(wn))
		if _, err := window.Parse(text); err != nil {
			d.failf(p, wn, "%v", err)
		}
		out = append(out, text)
	}
	return out
}

func (d *decoder) waves(path string, n *yaml.Node) Waves {
	if n == nil {
		return Waves{}
	}
	const want = `a count, a percentage like "25%" or "exponential"`
	if n.Kind != yaml.ScalarNode {
		d.failf(path, n, "expected %s, found %s", want, describe(n))
		return Waves{}
	}
	t := strings.TrimSpace(n.Value)
	if c, err := strconv.Atoi(t); err == nil {
		return Waves{Mode: WaveCount, Value: c}
	}
	if p, ok := strings.CutSuffix(t, "%"); ok {
		if v, err := strconv.Atoi(p); err == nil {
			return Waves{Mode: WavePercent, Value: v}
		}
	}
	if t == "exponential" {
		return Waves{Mode: WaveExponential, Value: 1}
	}
	if start, ok := strings.CutPrefix(t, "exponential:"); ok {
		v, err := strconv.Atoi(start)
		if err != nil || v < 1 {
			d.failf(path, n, "%q: the exponential start must be an integer of at least 1", t)
			return Waves{}
		}
		return Waves{Mode: WaveExponential, Value: v}
	}
	d.failf(path, n, "%q is not %s", t, want)
	return Waves{}
}

// threshold reads a failure threshold: a count or a percentage, which
// pauses, or a mapping {limit: 2 | "10%", action: pause | abort | rollback}.
func (d *decoder) threshold(path string, n *yaml.Node) Threshold {
	if n == nil {
		return Threshold{}
	}
	if n.Kind == yaml.MappingNode {
		f := d.fields(path, n, "limit", "action")
		t := Threshold{Action: ThresholdAction(d.str(path+".action", f["action"]))}
		if t.Action == "pause" {
			t.Action = ThresholdPause
		}
		switch ln := f["limit"]; {
		case ln == nil:
			d.failf(path, n, "limit is required: a count or a percentage like %q", "10%")
			return t
		case ln.Kind != yaml.ScalarNode:
			d.failf(path+".limit", ln, "expected a count or a percentage like %q, found %s", "10%", describe(ln))
			return t
		}
		limit := d.threshold(path+".limit", f["limit"])
		t.Count, t.Percent = limit.Count, limit.Percent
		return t
	}
	const want = `a count, a percentage like "10%", or {limit, action}`
	if n.Kind != yaml.ScalarNode {
		d.failf(path, n, "expected %s, found %s", want, describe(n))
		return Threshold{}
	}
	t := strings.TrimSpace(n.Value)
	if c, err := strconv.Atoi(t); err == nil {
		return Threshold{Count: c}
	}
	if p, ok := strings.CutSuffix(t, "%"); ok {
		if v, err := strconv.Atoi(p); err == nil {
			return Threshold{Percent: v}
		}
	}
	d.failf(path, n, "%q is not %s", t, want)
	return Threshold{}
}

func (d *decoder) duration(path string, n *yaml.Node) time.Duration {
	if n == nil {
		return 0
	}
	if n.Kind != yaml.ScalarNode {
		d.failf(path, n, `expected a duration like "10m", found %s`, describe(n))
		return 0
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		d.failf(path, n, `%q is not a duration like "10m" or "1h30m"`, n.Value)
	}
	return v
}

// The document FormatYAML writes, with the fields in the order people read
// them.
type (
	yamlSpec struct {
		Name             string        `yaml:"name"`
		Operation        yamlOperation `yaml:"operation"`
		Selector         string        `yaml:"selector,omitempty"`
		Clusters         []string      `yaml:"clusters,flow,omitempty"`
		Policy           string        `yaml:"policy,omitempty"`
		Strategy         *yamlStrategy `yaml:"strategy,omitempty"`
		FailureThreshold any           `yaml:"failureThreshold,omitempty"`
		Windows          []yamlWindow  `yaml:"windows,omitempty"`
		OnConflict       string        `yaml:"onConflict,omitempty"`
		UnhealthyTargets string        `yaml:"unhealthyTargets,omitempty"`
		OperationTimeout string        `yaml:"operationTimeout,omitempty"`
		Retries          int           `yaml:"retries,omitempty"`
		RetryBackoff     string        `yaml:"retryBackoff,omitempty"`
		AutoResume       string        `yaml:"autoResume,omitempty"`
	}
	yamlWindow struct {
		Selector string   `yaml:"selector,omitempty"`
		Allow    []string `yaml:"allow,omitempty"`
		Deny     []string `yaml:"deny,omitempty"`
	}
	yamlOperation struct {
		Type    string            `yaml:"type"`
		Version string            `yaml:"version,omitempty"`
		Config  map[string]string `yaml:"config,omitempty"`
		Reset   []string          `yaml:"reset,flow,omitempty"`
		Expect  *yamlExpect       `yaml:"expect,omitempty"`
	}
	yamlExpect struct {
		Version string            `yaml:"version,omitempty"`
		Config  map[string]string `yaml:"config,omitempty"`
	}
	yamlStrategy struct {
		Phases []yamlPhase `yaml:"phases"`
	}
	yamlPhase struct {
		Name             string `yaml:"name"`
		Selector         string `yaml:"selector,omitempty"`
		Waves            any    `yaml:"waves,omitempty"`
		MaxInFlight      int    `yaml:"maxInFlight,omitempty"`
		Bake             string `yaml:"bake,omitempty"`
		Approve          string `yaml:"approve,omitempty"`
		ApprovalTimeout  string `yaml:"approvalTimeout,omitempty"`
		FailureThreshold any    `yaml:"failureThreshold,omitempty"`
	}
	yamlThreshold struct {
		Limit  any    `yaml:"limit"`
		Action string `yaml:"action"`
	}
)

// FormatYAML writes s in the format ParseYAML reads, leaving out fields
// that hold their default, so that ParseYAML(FormatYAML(s)) gives s back.
// (Two specs that mean the same also format the same: an empty Clusters or
// Config is written like a nil one, and an exponential start of 0 like 1.)
//
// It fails only on what the format cannot express: an unknown wave mode, or
// a failure threshold with both a count and a percentage.
func FormatYAML(s Spec) ([]byte, error) {
	doc := yamlSpec{
		Name: s.Name,
		Operation: yamlOperation{
			Type:    string(s.Operation.Kind),
			Version: s.Operation.Version,
			Config:  s.Operation.Config,
			Reset:   s.Operation.Reset,
		},
		Policy:           s.Policy,
		Selector:         s.Selector,
		Clusters:         s.Clusters,
		OnConflict:       string(s.OnConflict),
		UnhealthyTargets: string(s.UnhealthyTargets),
		Retries:          s.Retries,
	}
	if s.Operation.ExpectVersion != "" || len(s.Operation.ExpectConfig) > 0 {
		doc.Operation.Expect = &yamlExpect{Version: s.Operation.ExpectVersion, Config: s.Operation.ExpectConfig}
	}
	if s.OperationTimeout != 0 {
		doc.OperationTimeout = shortDuration(s.OperationTimeout)
	}
	if s.RetryBackoff != 0 {
		doc.RetryBackoff = shortDuration(s.RetryBackoff)
	}
	if s.AutoResume != 0 {
		doc.AutoResume = shortDuration(s.AutoResume)
	}
	for _, w := range s.Windows {
		doc.Windows = append(doc.Windows, yamlWindow(w))
	}
	var err error
	if doc.FailureThreshold, err = s.FailureThreshold.yaml(); err != nil {
		return nil, fmt.Errorf("format rollout %s: failureThreshold: %w", s.Name, err)
	}
	if len(s.Phases) > 0 {
		phases, err := formatPhases("strategy.phases", s.Phases)
		if err != nil {
			return nil, fmt.Errorf("format rollout %s: %w", s.Name, err)
		}
		doc.Strategy = &yamlStrategy{Phases: phases}
	}
	out, err := encodeYAML(doc)
	if err != nil {
		return nil, fmt.Errorf("format rollout %s: %w", s.Name, err)
	}
	return out, nil
}

// FormatPolicyYAML writes p in the format ParsePolicyYAML reads, its
// phases as FormatYAML writes a rollout's, so that
// ParsePolicyYAML(FormatPolicyYAML(p)) gives p back.
func FormatPolicyYAML(p Policy) ([]byte, error) {
	phases, err := formatPhases("phases", p.Phases)
	if err != nil {
		return nil, fmt.Errorf("format policy %s: %w", p.Name, err)
	}
	type yamlDriftCorrection struct {
		Enabled    bool   `yaml:"enabled"`
		Selector   string `yaml:"selector,omitempty"`
		MaxPerHour int    `yaml:"maxPerHour,omitempty"`
	}
	var dc *yamlDriftCorrection
	if p.DriftCorrection != (DriftCorrection{}) {
		dc = &yamlDriftCorrection{p.DriftCorrection.Enabled, p.DriftCorrection.Selector, p.DriftCorrection.MaxPerHour}
	}
	doc := struct {
		Name            string               `yaml:"name"`
		Description     string               `yaml:"description,omitempty"`
		Phases          []yamlPhase          `yaml:"phases"`
		DriftCorrection *yamlDriftCorrection `yaml:"driftCorrection,omitempty"`
	}{p.Name, p.Description, phases, dc}
	out, err := encodeYAML(doc)
	if err != nil {
		return nil, fmt.Errorf("format policy %s: %w", p.Name, err)
	}
	return out, nil
}

// formatPhases returns the YAML form of phases; field is their path.
func formatPhases(field string, phases []Phase) ([]yamlPhase, error) {
	var out []yamlPhase
	for i, ph := range phases {
		yp := yamlPhase{Name: ph.Name, Selector: ph.Selector, MaxInFlight: ph.MaxInFlight, Approve: string(ph.Approve)}
		if ph.ApprovalTimeout != 0 {
			yp.ApprovalTimeout = shortDuration(ph.ApprovalTimeout)
		}
		var err error
		if yp.FailureThreshold, err = ph.FailureThreshold.yaml(); err != nil {
			return nil, fmt.Errorf("%s[%d].failureThreshold: %w", field, i, err)
		}
		w, err := ph.Waves.text()
		if err != nil {
			return nil, fmt.Errorf("%s[%d].waves: %w", field, i, err)
		}
		switch {
		case ph.Waves.Mode == WaveCount:
			yp.Waves = ph.Waves.Value // written as a number, as people write it
		case w != "":
			yp.Waves = w
		}
		if ph.Bake != 0 {
			yp.Bake = shortDuration(ph.Bake)
		}
		out = append(out, yp)
	}
	return out, nil
}

// encodeYAML writes doc as YAML indented by two spaces.
func encodeYAML(doc any) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// yaml returns the YAML notation of t: nil when unset, a count or a
// percentage when it pauses, else {limit, action}.
func (t Threshold) yaml() (any, error) {
	var limit any
	switch {
	case t.Count != 0 && t.Percent != 0:
		return nil, fmt.Errorf("both a count (%d) and a percentage (%d%%) are set", t.Count, t.Percent)
	case t.Count != 0:
		limit = t.Count
	case t.Percent != 0:
		limit = fmt.Sprintf("%d%%", t.Percent)
	}
	switch {
	case t.Action == ThresholdPause:
		return limit, nil
	case limit == nil:
		limit = 1 // the default limit, written out so the action has one
	}
	return yamlThreshold{Limit: limit, Action: string(t.Action)}, nil
}

// shortDuration writes d as people do: "10m" and "1h", not "10m0s" and
// "1h0m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
