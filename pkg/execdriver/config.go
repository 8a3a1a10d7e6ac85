package execdriver

import (
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// Defaults applied by [Parse] and [LoadConfig] to the fields a driver leaves
// out.
const (
	// DefaultTimeout bounds one run of a driver's apply command, and one
	// run of its verify command.
	DefaultTimeout = 30 * time.Minute
	// DefaultProbeTimeout bounds one run of a driver's probe command.
	DefaultProbeTimeout = 30 * time.Second
	// DefaultKillGrace is how long a stopped command's process group has
	// between SIGTERM and SIGKILL.
	DefaultKillGrace = 10 * time.Second
)

// defaultPath is the PATH a command gets when the executor itself has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config is the set of exec drivers an executor or monitor is configured
// with, as read from the operator's YAML file by [LoadConfig] or [Parse].
// It is the only source of the commands the exec driver runs: nothing in a
// request or an inventory entry can add to or change them.
type Config struct {
	// Drivers maps a driver name, as inventory entries carry it
	// (inventory.Cluster.Driver), to what that driver runs.
	Drivers map[string]DriverConfig
}

// DriverConfig is one exec driver: the operator's commands for one kind of
// cluster. After [Parse], every field holds its final value: defaults are
// filled in and the commands' paths are absolute.
type DriverConfig struct {
	// Apply is the argv run for each operation (no shell: write
	// ["sh", "-c", "..."] to get one). Required.
	Apply []string
	// Verify, if set, is run after a successful Apply, with the same
	// environment; a non-zero exit fails the operation.
	Verify []string
	// Probe, if set, makes the driver a prober for the monitor: exit 0 is
	// healthy, 1 degraded, 2 unhealthy, anything else a failed probe.
	Probe []string
	// Timeout bounds one run of Apply, and one run of Verify
	// ([DefaultTimeout]).
	Timeout time.Duration
	// ProbeTimeout bounds one run of Probe ([DefaultProbeTimeout]).
	ProbeTimeout time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL when a command is
	// stopped ([DefaultKillGrace]).
	KillGrace time.Duration
	// Operations are the operation kinds Apply handles; any other kind
	// fails without running anything. Required.
	Operations []rollout.OperationKind
	// Env is extra, static environment for every command of the driver.
	Env map[string]string
	// PassEnv names variables of the executor's (or monitor's) own
	// environment passed on to the commands. Nothing else of it is, except
	// PATH, HOME, LANG and TZ.
	PassEnv []string
	// Workdir is the commands' working directory: absolute after Parse.
	Workdir string
}

// LoadConfig reads and validates the exec drivers configuration file at
// path; see [Parse] for the format and what is checked. Relative paths in
// the file (workdir, commands) are relative to the file's directory.
//
// The error names the file, and for each problem its line and the field
// (`exec drivers config /etc/flotilla/exec.yaml: line 7:
// drivers.helm.operations[1]: unknown operation kind "upgrad" (want upgrade,
// restart or config)`). Every problem found is reported, one per line.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("exec drivers config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Config{}, fmt.Errorf("exec drivers config %s: %w", path, err)
	}
	cfg, err := parse(data, filepath.Dir(abs))
	if err != nil {
		return Config{}, fmt.Errorf("exec drivers config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse reads and validates an exec drivers configuration:
//
//	drivers:
//	  helm:                                   # the name clusters are registered with
//	    apply: ["/opt/flotilla/helm-upgrade.sh"]
//	    verify: ["/opt/flotilla/helm-verify.sh"]  # optional
//	    probe: ["/opt/flotilla/helm-probe.sh"]    # optional
//	    timeout: 10m                          # apply, and verify (default 30m)
//	    probe_timeout: 20s                    # default 30s
//	    kill_grace: 10s                       # SIGTERM → SIGKILL (default 10s)
//	    operations: [upgrade, restart]        # required
//	    env: {KUBECONFIG: /etc/flotilla/kubeconfig}
//	    pass_env: [AWS_PROFILE]               # executor variables passed on
//	    workdir: /opt/flotilla
//
// Parsing is strict: an unknown field, a field of the wrong shape, a missing
// apply or operations, an unknown operation kind, a bad duration, an
// environment name that is not a valid name or is reserved (FLOTILLA_...),
// or a command that cannot be found or is not executable is an error that
// gives the line and the field. Every problem is reported, joined with
// [errors.Join].
//
// Paths: workdir, if relative, and a command's argv[0], if it contains a
// '/' but is relative, are resolved against the directory of the
// configuration file (for Parse, which has no file, the current directory);
// argv[0] is resolved against workdir when workdir is set. An argv[0]
// without '/' is looked up in the PATH the command will get. Parse stores
// the absolute result in argv[0], so the commands do not depend on the
// working directory of the executor. Commands are checked at load time so
// that a typo fails the executor's start, not every operation of a rollout.
func Parse(data []byte) (Config, error) {
	wd, err := os.Getwd()
	if err != nil {
		return Config{}, fmt.Errorf("exec drivers config: %w", err)
	}
	return parse(data, wd)
}

// Names returns the names of the configured drivers in ascending order.
func (c Config) Names() []string {
	names := make([]string, 0, len(c.Drivers))
	for n := range c.Drivers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// fieldError is one problem of a configuration, where it is.
type fieldError struct {
	line  int
	field string // dotted path, e.g. drivers.helm.apply
	msg   string
}

func (e *fieldError) Error() string {
	if e.field == "" {
		return fmt.Sprintf("line %d: %s", e.line, e.msg)
	}
	return fmt.Sprintf("line %d: %s: %s", e.line, e.field, e.msg)
}

// problems collects the errors of one parse, in document order.
type problems []error

func (p *problems) add(n *yaml.Node, field, format string, args ...any) {
	*p = append(*p, &fieldError{line: n.Line, field: field, msg: fmt.Sprintf(format, args...)})
}

var (
	namePattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

var driverFields = []string{"apply", "verify", "probe", "timeout", "probe_timeout", "kill_grace", "operations", "env", "pass_env", "workdir"}

func parse(data []byte, baseDir string) (Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, err // "yaml: line 3: ..." already says where
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return Config{}, errors.New(`defines no drivers (want a top-level "drivers:" mapping)`)
	}
	root := doc.Content[0]
	var errs problems
	if root.Kind != yaml.MappingNode {
		errs.add(root, "", `want a mapping with a "drivers" key`)
		return Config{}, errors.Join(errs...)
	}
	var list *yaml.Node
	for k, v := range pairs(root, "", &errs) {
		if k.Value == "drivers" {
			list = v
			continue
		}
		errs.add(k, k.Value, "unknown field (want drivers)")
	}
	cfg := Config{Drivers: map[string]DriverConfig{}}
	switch {
	case list == nil:
		errs.add(root, "", `no "drivers" key`)
	case list.Kind != yaml.MappingNode || len(list.Content) == 0:
		errs.add(list, "drivers", "want a mapping of driver names to drivers")
	default:
		for k, v := range pairs(list, "drivers.", &errs) {
			field := "drivers." + k.Value
			if !namePattern.MatchString(k.Value) {
				errs.add(k, field, "driver name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
				continue
			}
			dc, ok := parseDriver(k, v, field, baseDir, &errs)
			if ok {
				cfg.Drivers[k.Value] = dc
			}
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

// parseDriver reads one driver's mapping, adding its problems to errs; ok
// is false when there was any.
func parseDriver(key, n *yaml.Node, field, baseDir string, errs *problems) (dc DriverConfig, ok bool) {
	before := len(*errs)
	if n.Kind != yaml.MappingNode {
		errs.add(n, field, "want a mapping (apply, operations, ...)")
		return dc, false
	}
	nodes := map[string]*yaml.Node{} // field → value node, for resolving commands afterwards
	at := func(name string) *yaml.Node {
		if v := nodes[name]; v != nil {
			return v
		}
		return key
	}
	for k, v := range pairs(n, field+".", errs) {
		f := field + "." + k.Value
		nodes[k.Value] = v
		switch k.Value {
		case "apply":
			dc.Apply = argv(v, f, errs)
		case "verify":
			dc.Verify = argv(v, f, errs)
		case "probe":
			dc.Probe = argv(v, f, errs)
		case "timeout":
			dc.Timeout = duration(v, f, errs)
		case "probe_timeout":
			dc.ProbeTimeout = duration(v, f, errs)
		case "kill_grace":
			dc.KillGrace = duration(v, f, errs)
		case "operations":
			dc.Operations = operations(v, f, errs)
		case "env":
			dc.Env = env(v, f, errs)
		case "pass_env":
			dc.PassEnv = passEnv(v, f, errs)
		case "workdir":
			if s, ok := scalar(v, f, errs); ok {
				dc.Workdir = s
			}
		default:
			errs.add(k, f, "unknown field (want %s)", strings.Join(driverFields, ", "))
		}
	}
	if nodes["apply"] == nil {
		errs.add(key, field+".apply", "required: the command that carries out an operation")
	}
	if nodes["operations"] == nil {
		errs.add(key, field+".operations", "required: the operation kinds apply handles (upgrade, restart, config)")
	}
	if dc.Timeout == 0 {
		dc.Timeout = DefaultTimeout
	}
	if dc.ProbeTimeout == 0 {
		dc.ProbeTimeout = DefaultProbeTimeout
	}
	if dc.KillGrace == 0 {
		dc.KillGrace = DefaultKillGrace
	}
	if len(*errs) > before {
		return dc, false
	}

	// Commands are resolved last: they depend on workdir and on env's PATH.
	dc.Workdir = absolute(baseDir, dc.Workdir)
	if fi, err := os.Stat(dc.Workdir); err != nil || !fi.IsDir() {
		errs.add(at("workdir"), field+".workdir", "%s is not a directory", dc.Workdir)
		return dc, false
	}
	path := os.Getenv("PATH")
	if p, ok := dc.Env["PATH"]; ok {
		path = p
	} else if path == "" {
		path = defaultPath
	}
	for _, c := range []struct {
		name string
		argv []string
	}{{"apply", dc.Apply}, {"verify", dc.Verify}, {"probe", dc.Probe}} {
		if len(c.argv) == 0 {
			continue
		}
		resolved, err := resolveCommand(c.argv[0], dc.Workdir, path)
		if err != nil {
			errs.add(at(c.name), field+"."+c.name, "%v", err)
			continue
		}
		c.argv[0] = resolved
	}
	return dc, len(*errs) == before
}

func absolute(base, p string) string {
	if p == "" {
		return base
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(base, p)
}

// resolveCommand returns the absolute path of an executable argv[0].
func resolveCommand(name, dir, path string) (string, error) {
	if !strings.Contains(name, "/") {
		for _, d := range filepath.SplitList(path) {
			if d == "" || !filepath.IsAbs(d) {
				continue // a relative PATH entry would depend on the working directory
			}
			if p := filepath.Join(d, name); isExecutable(p) == nil {
				return p, nil
			}
		}
		return "", fmt.Errorf("%s not found in PATH %s", name, path)
	}
	p := absolute(dir, name)
	if err := isExecutable(p); err != nil {
		return "", err
	}
	return p, nil
}

func isExecutable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s does not exist", p)
	case err != nil:
		return err
	case fi.IsDir():
		return fmt.Errorf("%s is a directory", p)
	case fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%s is not executable (chmod +x)", p)
	}
	return nil
}

// pairs yields the key and value nodes of a mapping, in document order,
// reporting (and skipping) keys given twice: YAML forbids them, but
// decoding into a yaml.Node does not check.
func pairs(n *yaml.Node, prefix string, errs *problems) iter.Seq2[*yaml.Node, *yaml.Node] {
	return func(yield func(k, v *yaml.Node) bool) {
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if first, dup := seen[k.Value]; dup {
				errs.add(k, prefix+k.Value, "given twice (first at line %d)", first)
				continue
			}
			seen[k.Value] = k.Line
			if !yield(k, v) {
				return
			}
		}
	}
}

func scalar(n *yaml.Node, field string, errs *problems) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		errs.add(n, field, "want a string")
		return "", false
	}
	return n.Value, true
}

func argv(n *yaml.Node, field string, errs *problems) []string {
	if n.Kind != yaml.SequenceNode {
		errs.add(n, field, `want a list (argv), e.g. ["/opt/flotilla/upgrade.sh", "--wait"]; for a shell line write ["sh", "-c", "..."]`)
		return nil
	}
	if len(n.Content) == 0 {
		errs.add(n, field, "empty command")
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		s, ok := scalar(c, fmt.Sprintf("%s[%d]", field, i), errs)
		if !ok {
			return nil
		}
		out = append(out, s)
	}
	if out[0] == "" {
		errs.add(n, field+"[0]", "empty program name")
		return nil
	}
	return out
}

func duration(n *yaml.Node, field string, errs *problems) time.Duration {
	s, ok := scalar(n, field, errs)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		errs.add(n, field, "%q is not a positive duration (e.g. 90s, 10m, 1h)", s)
		return 0
	}
	return d
}

func operations(n *yaml.Node, field string, errs *problems) []rollout.OperationKind {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		errs.add(n, field, "want a non-empty list of operation kinds (upgrade, restart, config)")
		return nil
	}
	var out []rollout.OperationKind
	for i, c := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		s, ok := scalar(c, f, errs)
		if !ok {
			continue
		}
		k := rollout.OperationKind(s)
		switch {
		case k != rollout.Upgrade && k != rollout.Restart && k != rollout.Config:
			errs.add(c, f, "unknown operation kind %q (want upgrade, restart or config)", s)
		case slices.Contains(out, k):
			errs.add(c, f, "%s is listed twice", s)
		default:
			out = append(out, k)
		}
	}
	return out
}

func envName(n *yaml.Node, name, field string, errs *problems) bool {
	switch {
	case !envNamePattern.MatchString(name):
		errs.add(n, field, "%q is not a valid environment variable name", name)
	case strings.HasPrefix(strings.ToUpper(name), "FLOTILLA_"):
		errs.add(n, field, "%s: FLOTILLA_ names are reserved for what the driver passes", name)
	default:
		return true
	}
	return false
}

func env(n *yaml.Node, field string, errs *problems) map[string]string {
	if n.Kind != yaml.MappingNode {
		errs.add(n, field, "want a mapping of variable names to values")
		return nil
	}
	out := map[string]string{}
	for k, v := range pairs(n, field+".", errs) {
		f := field + "." + k.Value
		if !envName(k, k.Value, f, errs) {
			continue
		}
		if s, ok := scalar(v, f, errs); ok {
			out[k.Value] = s
		}
	}
	return out
}

func passEnv(n *yaml.Node, field string, errs *problems) []string {
	if n.Kind != yaml.SequenceNode {
		errs.add(n, field, "want a list of variable names")
		return nil
	}
	var out []string
	for i, c := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		if s, ok := scalar(c, f, errs); ok && envName(c, s, f, errs) {
			out = append(out, s)
		}
	}
	return out
}
