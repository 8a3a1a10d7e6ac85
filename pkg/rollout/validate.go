package rollout

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/flotilla-fleet/flotilla/pkg/selector"
	"github.com/flotilla-fleet/flotilla/pkg/window"
)

// FieldError is one problem with one field of a spec. ParseYAML and
// Validate return their problems as FieldErrors joined with errors.Join, so
// a caller can list them one by one with errors.As or by unwrapping.
type FieldError struct {
	// Field is the field's path in the YAML format, such as
	// "strategy.phases[1].waves"; empty for a problem with the document
	// as a whole, such as a key that is not a field name.
	Field string
	// Line is the field's line in the YAML document, or 0 when the spec
	// did not come from YAML.
	Line int
	// Err says what is wrong.
	Err error
}

func (e *FieldError) Error() string {
	switch {
	case e.Field == "" && e.Line > 0:
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	case e.Field == "":
		return e.Err.Error()
	case e.Line > 0:
		return fmt.Sprintf("%s: line %d: %v", e.Field, e.Line, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Field, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks everything about a spec that does not depend on the
// inventory: a name; a known operation with what it needs (a version for an
// upgrade, a non-empty config for a config change, and nothing it does not
// take); a selector or explicit clusters, selectors that parse; phases with
// unique, non-empty names; wave sizes that make sense (a count of at least
// 1, a percentage in 1..100, an exponential start of at least 1, where 0
// means the default of 1); no negative maxInFlight or bake; and a failure
// threshold that is a count ≥ 0 or a percentage in 0..100, not both; and
// window rules whose selectors and windows parse.
//
// It returns nil or every problem found, as *FieldError values joined with
// errors.Join, each naming its field path in the YAML format:
//
//	strategy.phases[1].waves: a percentage must be in 1..100, got 150
//
// Validate does not look at the inventory; Plan does, and calls Validate
// first.
func (s Spec) Validate() error {
	var errs []error
	add := func(field string, err error) {
		errs = append(errs, &FieldError{Field: field, Err: err})
	}
	addf := func(field, format string, args ...any) { add(field, fmt.Errorf(format, args...)) }

	if s.Name == "" {
		addf("name", "required")
	}

	op := s.Operation
	switch op.Kind {
	case Upgrade, Restart, Config:
	case "":
		addf("operation.type", "required: want upgrade, restart or config")
	default:
		addf("operation.type", "unknown operation %q: want upgrade, restart or config", op.Kind)
	}
	switch {
	case op.Kind == Upgrade && op.Version == "":
		addf("operation.version", "required for an upgrade")
	case op.Kind != Upgrade && op.Version != "":
		addf("operation.version", "only an upgrade takes a version, not %s (got %q)", opName(op.Kind), op.Version)
	}
	switch {
	case op.Kind == Config && len(op.Config) == 0 && len(op.Reset) == 0:
		addf("operation.config", "required for a config operation: at least one key to set or reset")
	case op.Kind != Config && len(op.Config) > 0:
		addf("operation.config", "only a config operation takes config, not %s", opName(op.Kind))
	case op.Kind != Config && len(op.Reset) > 0:
		addf("operation.reset", "only a config operation resets keys, not %s", opName(op.Kind))
	}
	if _, ok := op.Config[""]; ok {
		addf("operation.config", "empty key")
	}
	for _, k := range slices.Sorted(maps.Keys(op.ExpectConfig)) {
		_, set := op.Config[k]
		if !set && !slices.Contains(op.Reset, k) {
			addf("operation.expect.config", "key %q is neither set nor reset by the operation", k)
		}
	}
	for i, k := range op.Reset {
		switch _, set := op.Config[k]; {
		case k == "":
			addf(fmt.Sprintf("operation.reset[%d]", i), "empty key")
		case set:
			addf(fmt.Sprintf("operation.reset[%d]", i), "key %q is both set and reset", k)
		}
	}

	if strings.TrimSpace(s.Selector) == "" && len(s.Clusters) == 0 {
		addf("selector", "a selector or explicit clusters are required")
	}
	if _, err := selector.Parse(s.Selector); err != nil {
		add("selector", err)
	}
	for i, id := range s.Clusters {
		if id == "" {
			addf(fmt.Sprintf("clusters[%d]", i), "empty cluster ID")
		}
	}

	errs = append(errs, validatePhases("strategy.phases", s.Phases)...)

	if err := s.FailureThreshold.validate(); err != nil {
		add("failureThreshold", err)
	}
	if s.OperationTimeout < 0 {
		addf("operationTimeout", "must not be negative, got %s", s.OperationTimeout)
	}
	if s.Retries < 0 || s.Retries > 10 {
		addf("retries", "must be in 0..10, got %d", s.Retries)
	}
	if s.AutoResume < 0 {
		addf("autoResume", "must not be negative, got %s", s.AutoResume)
	}
	if s.RetryBackoff < 0 {
		addf("retryBackoff", "must not be negative, got %s", s.RetryBackoff)
	}
	switch s.OnConflict {
	case ConflictWait, ConflictReject, "wait":
	default:
		addf("onConflict", "unknown policy %q: want wait or reject", s.OnConflict)
	}
	switch s.UnhealthyTargets {
	case HoldUnhealthy, SkipUnhealthy, "hold":
	default:
		addf("unhealthyTargets", "unknown policy %q: want hold or skip", s.UnhealthyTargets)
	}
	for i, rule := range s.Windows {
		path := fmt.Sprintf("windows[%d]", i)
		if _, err := selector.Parse(rule.Selector); err != nil {
			add(path+".selector", err)
		}
		if len(rule.Allow) == 0 && len(rule.Deny) == 0 {
			addf(path, "a rule needs allow or deny windows")
		}
		for j, w := range rule.Allow {
			if _, err := window.Parse(w); err != nil {
				add(fmt.Sprintf("%s.allow[%d]", path, j), err)
			}
		}
		for j, w := range rule.Deny {
			if _, err := window.Parse(w); err != nil {
				add(fmt.Sprintf("%s.deny[%d]", path, j), err)
			}
		}
	}
	return errors.Join(errs...)
}

// validatePhases checks a list of phases, as a rollout's strategy or a
// deployment policy holds them; field is the list's path.
func validatePhases(field string, phases []Phase) []error {
	var errs []error
	add := func(field string, err error) {
		errs = append(errs, &FieldError{Field: field, Err: err})
	}
	addf := func(field, format string, args ...any) { add(field, fmt.Errorf(format, args...)) }
	firstByName := map[string]int{}
	for i, ph := range phases {
		path := fmt.Sprintf("%s[%d]", field, i)
		if ph.Name == "" {
			addf(path+".name", "required")
		} else if j, dup := firstByName[ph.Name]; dup {
			addf(path+".name", "duplicate phase name %q (also %s[%d])", ph.Name, field, j)
		} else {
			firstByName[ph.Name] = i
		}
		if _, err := selector.Parse(ph.Selector); err != nil {
			add(path+".selector", err)
		}
		if err := ph.Waves.validate(); err != nil {
			add(path+".waves", err)
		}
		if ph.MaxInFlight < 0 {
			addf(path+".maxInFlight", "must not be negative, got %d", ph.MaxInFlight)
		}
		if ph.Bake < 0 {
			addf(path+".bake", "must not be negative, got %s", ph.Bake)
		}
		switch ph.Approve {
		case ApproveNone, ApproveBefore, ApproveAfter, ApproveBoth:
		default:
			addf(path+".approve", "unknown gate %q: want before, after or both", ph.Approve)
		}
		if ph.ApprovalTimeout < 0 {
			addf(path+".approvalTimeout", "must not be negative, got %s", ph.ApprovalTimeout)
		}
		if ph.ApprovalTimeout > 0 && ph.Approve == ApproveNone {
			addf(path+".approvalTimeout", "the phase has no approval gate (set approve)")
		}
		if err := ph.FailureThreshold.validate(); err != nil {
			add(path+".failureThreshold", err)
		}
	}
	return errs
}

// Validate checks a deployment policy: a name that can key a record, and
// phases as a rollout's strategy takes them, with a final catch-all phase
// not required (a rollout's targets that no phase picks are reported when
// it is planned).
func (p Policy) Validate() error {
	var errs []error
	switch {
	case p.Name == "":
		errs = append(errs, &FieldError{Field: "name", Err: errors.New("required")})
	case strings.ContainsAny(p.Name, "/ \t\n"):
		errs = append(errs, &FieldError{Field: "name", Err: fmt.Errorf("%q: a policy name has no spaces or '/'", p.Name)})
	}
	if len(p.Phases) == 0 {
		errs = append(errs, &FieldError{Field: "phases", Err: errors.New("a policy needs at least one phase")})
	}
	errs = append(errs, validatePhases("phases", p.Phases)...)
	if _, err := selector.Parse(p.DriftCorrection.Selector); err != nil {
		errs = append(errs, &FieldError{Field: "driftCorrection.selector", Err: err})
	}
	if p.DriftCorrection.MaxPerHour < 0 {
		errs = append(errs, &FieldError{Field: "driftCorrection.maxPerHour", Err: fmt.Errorf("%d: must not be negative", p.DriftCorrection.MaxPerHour)})
	}
	return errors.Join(errs...)
}

// Windows are a spec's window rules, compiled: which clusters each rule
// picks, and its schedule.
type Windows []compiledWindowRule

type compiledWindowRule struct {
	selector selector.Selector
	schedule window.Schedule
}

// CompileWindows parses the spec's window rules. It fails on what Validate
// rejects.
func (s Spec) CompileWindows() (Windows, error) {
	var out Windows
	for i, rule := range s.Windows {
		sel, err := selector.Parse(rule.Selector)
		if err != nil {
			return nil, fmt.Errorf("windows[%d].selector: %w", i, err)
		}
		sched, err := window.NewSchedule(rule.Allow, rule.Deny)
		if err != nil {
			return nil, fmt.Errorf("windows[%d]: %w", i, err)
		}
		out = append(out, compiledWindowRule{selector: sel, schedule: sched})
	}
	return out, nil
}

// For returns the schedule a cluster with these labels must keep: every
// rule that picks it at once. It is always open when no rule picks it.
func (w Windows) For(labels map[string]string) window.All {
	var all window.All
	for _, r := range w {
		if r.selector.Matches(labels) {
			all = append(all, r.schedule)
		}
	}
	return all
}

func opName(k OperationKind) string {
	switch k {
	case "":
		return "no operation"
	case Upgrade:
		return "an upgrade"
	case Restart:
		return "a restart"
	case Config:
		return "a config operation"
	}
	return fmt.Sprintf("operation %q", k)
}

func (w Waves) validate() error {
	switch w.Mode {
	case "":
		if w.Value != 0 {
			return fmt.Errorf("value %d without a mode", w.Value)
		}
	case WaveCount:
		if w.Value < 1 {
			return fmt.Errorf("a count must be at least 1, got %d", w.Value)
		}
	case WavePercent:
		if w.Value < 1 || w.Value > 100 {
			return fmt.Errorf("a percentage must be in 1..100, got %d", w.Value)
		}
	case WaveExponential:
		if w.Value < 0 {
			return fmt.Errorf("an exponential start must be at least 1, got %d", w.Value)
		}
	default:
		return fmt.Errorf("unknown wave mode %q: want count, percent or exponential", w.Mode)
	}
	return nil
}

func (t Threshold) validate() error {
	var errs []error
	switch t.Action {
	case ThresholdPause, ThresholdAbort, ThresholdRollback, "pause":
	default:
		errs = append(errs, fmt.Errorf("unknown action %q: want pause, abort or rollback", t.Action))
	}
	if t.Count != 0 && t.Percent != 0 {
		errs = append(errs, fmt.Errorf("both a count (%d) and a percentage (%d%%) are set: set one", t.Count, t.Percent))
	}
	if t.Count < 0 {
		errs = append(errs, fmt.Errorf("a count must not be negative, got %d", t.Count))
	}
	if t.Percent < 0 || t.Percent > 100 {
		errs = append(errs, fmt.Errorf("a percentage must be in 0..100, got %d", t.Percent))
	}
	return errors.Join(errs...)
}

// Limit returns the number of failed or unhealthy clusters, out of
// targets, at which the rollout pauses: Count if it is set, else Percent of
// targets rounded up, and never less than 1, so the zero Threshold pauses at
// the first failure. Limit does not fail: on a Threshold that Validate
// rejects it still returns at least 1.
func (t Threshold) Limit(targets int) int {
	switch {
	case t.Count > 0:
		return t.Count
	case t.Percent > 0:
		return max(1, ceilPercent(t.Percent, targets))
	default:
		return 1
	}
}

// ceilPercent returns pct percent of n, rounded up.
func ceilPercent(pct, n int) int { return (pct*n + 99) / 100 }

// text returns the YAML notation of w: "5", "25%", "exponential" or
// "exponential:2"; "" for the zero value (one wave).
func (w Waves) text() (string, error) {
	switch w.Mode {
	case "":
		return "", nil
	case WaveCount:
		return strconv.Itoa(w.Value), nil
	case WavePercent:
		return strconv.Itoa(w.Value) + "%", nil
	case WaveExponential:
		if w.Value == 0 || w.Value == 1 {
			return "exponential", nil
		}
		return "exponential:" + strconv.Itoa(w.Value), nil
	}
	return "", fmt.Errorf("unknown wave mode %q: want count, percent or exponential", w.Mode)
}
