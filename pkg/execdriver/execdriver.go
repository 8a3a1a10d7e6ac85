// Package execdriver runs the operator's own commands as Flotilla drivers:
// for what the Kafka API cannot do (binary upgrades, rolling restarts of
// brokers, Kubernetes or Ansible based operations), the executor runs a
// script per cluster, and the monitor may run another one to probe it.
//
// The commands come only from the operator's configuration file, loaded
// with [LoadConfig]; never from a request or an inventory entry. What a
// request and the inventory do say (the cluster, its labels and settings,
// the target version, the config to set) reaches a command only as
// environment variables (FLOTILLA_CLUSTER_ID, FLOTILLA_TARGET_VERSION, ...),
// never as arguments or shell text. Scripts must treat those values as
// data: quote them, never eval them.
//
// Each command runs in a process group of its own with a minimal
// environment: PATH, HOME, LANG and TZ of the executor, the variables the
// configuration lists in pass_env, its static env, and the FLOTILLA_
// variables. The executor's other variables (credentials above all) are
// not passed. On timeout, or when the executor gives up on the operation,
// the whole group gets SIGTERM and, after a grace period, SIGKILL; when the
// command exits, anything it left running in its group is killed.
//
// # Idempotence
//
// The executor calls Apply again with the same command ID after a crash, or
// when a command is redelivered. A driver must then converge, not repeat:
// the script is responsible for that. It gets the desired state
// (FLOTILLA_OPERATION, FLOTILLA_TARGET_VERSION, FLOTILLA_CONFIG_*,
// FLOTILLA_RESET_*), should
// check the cluster first and do only what is missing, and may use
// FLOTILLA_COMMAND_ID, stable across retries, to recognise an operation it
// started before (e.g. to skip brokers a rolling restart already did). The
// driver guarantees that within one process the commands of one cluster
// never run concurrently.
//
// # Config operations and rollback
//
// A config operation sets keys and resets others to the cluster's default.
// The keys to set come as FLOTILLA_CONFIG_<KEY> (see [EnvKey]) and, with
// their exact names, FLOTILLA_CONFIG_JSON (an object); the keys to reset,
// whose override the script must remove, as FLOTILLA_RESET_KEYS (their
// exact names, sorted, comma-separated; empty when there are none) and
// FLOTILLA_RESET_JSON (a JSON array). The reset variables are not named
// FLOTILLA_CONFIG_RESET*, which a config key "reset" would produce.
//
// The exec driver cannot read a cluster's config (a probe reports only a
// hash of it), so it is no [drivers.Snapshotter]: the executor records no
// previous values for its config operations, and a rollback cannot restore
// them. Upgrades are undone as usual, to the version recorded before.
package execdriver

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// inherited are the executor's own variables every command gets.
var inherited = []string{"PATH", "HOME", "LANG", "TZ"}

// Option configures the drivers [Config.Register] makes.
type Option func(*options)

type options struct {
	clock clockwork.Clock
}

// WithClock sets the clock that measures timeouts and kill grace periods
// (default: the real clock). Tests pass a clockwork.FakeClock to time out a
// command without waiting.
func WithClock(c clockwork.Clock) Option { return func(o *options) { o.clock = c } }

// Driver is one configured exec driver: a [drivers.Driver], and a
// [drivers.Prober] when its configuration has a probe command. Make one
// with [Config.Register]. It is safe for concurrent use.
type Driver struct {
	name  string
	cfg   DriverConfig
	clock clockwork.Clock

	mu    sync.Mutex
	locks map[string]chan struct{} // per-cluster Apply lock, a channel so that waiting honours ctx
}

var (
	_ drivers.Driver = (*Driver)(nil)
	_ drivers.Prober = (*Driver)(nil)
)

// Register registers each configured driver in r under its name: as driver
// and, when it has a probe command, as prober (otherwise asking r for its
// prober fails as for an unknown name). A name registered before, such as
// another driver's, is replaced; check [Config.Names] against r.Names()
// first to refuse that.
//
// c should come from [LoadConfig] or [Parse], which validate it and fill in
// defaults; for a Config built by hand, zero durations get the defaults,
// and nothing else is checked until a command runs.
func (c Config) Register(r *drivers.Registry, opts ...Option) {
	o := options{clock: clockwork.NewRealClock()}
	for _, opt := range opts {
		opt(&o)
	}
	for _, name := range c.Names() {
		d := newDriver(name, c.Drivers[name], o)
		if len(d.cfg.Probe) > 0 {
			r.Register(name, d, d)
		} else {
			r.Register(name, d, nil)
		}
	}
}

func newDriver(name string, dc DriverConfig, o options) *Driver {
	if dc.Timeout <= 0 {
		dc.Timeout = DefaultTimeout
	}
	if dc.ProbeTimeout <= 0 {
		dc.ProbeTimeout = DefaultProbeTimeout
	}
	if dc.KillGrace <= 0 {
		dc.KillGrace = DefaultKillGrace
	}
	// A copy: changing the Config afterwards changes no registered driver.
	dc.Apply, dc.Verify, dc.Probe = slices.Clone(dc.Apply), slices.Clone(dc.Verify), slices.Clone(dc.Probe)
	dc.Operations, dc.PassEnv, dc.Env = slices.Clone(dc.Operations), slices.Clone(dc.PassEnv), maps.Clone(dc.Env)
	return &Driver{name: name, cfg: dc, clock: o.clock, locks: map[string]chan struct{}{}}
}

// Apply implements [drivers.Driver]: it runs the apply command for
// req.Cluster with the request in its environment, then, if it succeeded,
// the verify command. The operation succeeds when both exit with status 0.
//
// The Result's Output is the end of what the commands printed (stdout and
// stderr, interleaved as they arrived; the last 40 lines within 4 KiB),
// also when Apply fails. PreviousVersion is the cluster's registered
// version; Version is the target version after an upgrade, the registered
// one after another operation, and empty after a failure. A command may
// report versions on the last line of its stdout, as a JSON object
// {"version": "3.9.1", "previous_version": "3.8.0"}; they win (verify's
// over apply's), except that an upgrade whose commands report a version
// other than the target fails.
//
// Apply runs nothing and fails when the command ID is empty, when the
// driver is not configured for the operation's kind (`exec driver helm
// does not handle "config" operations (it handles upgrade, restart);
// cluster prod-eu-1`), or
// when an upgrade names no version. It waits for any Apply running for the
// same cluster to finish first. It fails when a command exits non-zero
// ("helm-upgrade.sh exited with status 3 on prod-eu-1: <last line of
// stderr, or of stdout>"), is killed by a signal, or runs past its timeout
// (the error then wraps [ErrTimeout]). When ctx ends, the running command's
// process group is stopped and the error wraps ctx.Err().
func (d *Driver) Apply(ctx context.Context, req drivers.Request) (drivers.Result, error) {
	c, op := req.Cluster, req.Operation
	switch {
	case req.CommandID == "":
		return drivers.Result{}, fmt.Errorf("apply %s to %s: no command id", op.Kind, c.ID)
	case !slices.Contains(d.cfg.Operations, op.Kind):
		return drivers.Result{}, fmt.Errorf("exec driver %s does not handle %q operations (it handles %s); cluster %s", d.name, op.Kind, kinds(d.cfg.Operations), c.ID)
	case op.Kind == rollout.Upgrade && op.Version == "":
		return drivers.Result{}, fmt.Errorf("upgrade of %s names no version", c.ID)
	}

	unlock, err := d.lock(ctx, c.ID)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("apply %s to %s: waiting for the operation already running on it: %w", op.Kind, c.ID, err)
	}
	defer unlock()
	// The wait for the lock may have outlived the executor's hold on the
	// cluster: check it before running anything.
	if err := req.CheckFence(); err != nil {
		return drivers.Result{}, fmt.Errorf("apply %s to %s: %w", op.Kind, c.ID, err)
	}

	combined := &tail{max: outputBytes}
	rep, err := d.step(ctx, "apply", d.cfg.Apply, d.cfg.Timeout, req, combined)
	if err == nil && len(d.cfg.Verify) > 0 {
		fmt.Fprintf(combined, "\n--- verify: %s ---\n", command{argv: d.cfg.Verify}.name())
		var vrep report
		vrep, err = d.step(ctx, "verify", d.cfg.Verify, d.cfg.Timeout, req, combined)
		rep = merge(rep, vrep)
	}
	// After a failure the version the cluster runs is unknown, unless a
	// command said.
	res := drivers.Result{PreviousVersion: c.Version, Version: rep.Version, Output: combined.output()}
	if rep.PreviousVersion != "" {
		res.PreviousVersion = rep.PreviousVersion
	}
	switch {
	case err != nil:
		return res, err
	case op.Kind == rollout.Upgrade && rep.Version != "" && rep.Version != op.Version:
		return res, fmt.Errorf("upgrade of %s to %s: the commands succeeded but report version %s", c.ID, op.Version, rep.Version)
	case op.Kind == rollout.Upgrade:
		res.Version = op.Version
	case res.Version == "":
		res.Version = c.Version // a restart or config change keeps the version
	}
	return res, nil
}

// step runs one of the apply and verify commands and returns its report.
func (d *Driver) step(ctx context.Context, step string, argv []string, timeout time.Duration, req drivers.Request, combined *tail) (report, error) {
	vars := clusterVars(req.Cluster)
	maps.Copy(vars, operationVars(req))
	vars["FLOTILLA_STEP"] = step
	cmd := d.command(ctx, argv, timeout, vars)
	o, err := run(ctx, d.clock, cmd, combined)
	prefix := ""
	if step != "apply" {
		prefix = step + ": "
	}
	if err != nil {
		return report{}, fmt.Errorf("%sstart %s for %s: %w", prefix, cmd.name(), req.Cluster.ID, err)
	}
	if err := o.failure(prefix, cmd, req.Cluster.ID); err != nil {
		return report{}, err
	}
	if o.reportErr != nil {
		return report{}, fmt.Errorf("%s%s on %s: %w", prefix, cmd.name(), req.Cluster.ID, o.reportErr)
	}
	return o.report, nil
}

// Probe implements [drivers.Prober]: it runs the probe command for c and
// maps its exit status to the cluster's health: 0 healthy, 1 degraded, 2
// unhealthy. The last line of its stdout may be a JSON object
// {"version": "3.9.1", "reasons": ["..."], "config_hash": "...",
// "config": {"log.retention.ms": "604800000"}, "details": {"urp": 0}}: its
// fields fill the Observation (details' values become strings; config is
// the keys the probe read, compared for drift). A degraded or unhealthy probe that gives no reasons
// gets one: the last line of its stderr, or "helm-probe.sh exited with
// status 2".
//
// Probe fails, meaning the cluster could not be observed, when the driver
// has no probe command, when the command cannot be started, exits with any
// other status, is killed by a signal, runs past the probe timeout (the
// error wraps [ErrTimeout]) or past ctx (the error wraps ctx.Err()), or
// prints a last line that is a JSON object but not a valid report.
func (d *Driver) Probe(ctx context.Context, c inventory.Cluster) (drivers.Observation, error) {
	if len(d.cfg.Probe) == 0 {
		return drivers.Observation{}, fmt.Errorf("exec driver %s has no probe command; cluster %s", d.name, c.ID)
	}
	vars := clusterVars(c)
	vars["FLOTILLA_STEP"] = "probe"
	cmd := d.command(ctx, d.cfg.Probe, d.cfg.ProbeTimeout, vars)
	o, err := run(ctx, d.clock, cmd, &tail{max: outputBytes})
	if err != nil {
		return drivers.Observation{}, fmt.Errorf("start probe %s for %s: %w", cmd.name(), c.ID, err)
	}
	var status records.HealthStatus
	if o.stopped == nil && o.state != nil {
		switch o.state.ExitCode() {
		case 0:
			status = records.HealthHealthy
		case 1:
			status = records.HealthDegraded
		case 2:
			status = records.HealthUnhealthy
		}
	}
	if status == "" {
		err := o.failure("", cmd, c.ID)
		if err == nil { // cannot happen: exit 0 is healthy
			err = fmt.Errorf("probe %s of %s ended oddly", cmd.name(), c.ID)
		}
		return drivers.Observation{}, fmt.Errorf("probe: %w", err)
	}
	if o.reportErr != nil {
		return drivers.Observation{}, fmt.Errorf("probe %s on %s: %w", cmd.name(), c.ID, o.reportErr)
	}
	obs := drivers.Observation{
		Status:     status,
		Reasons:    o.report.Reasons,
		Version:    o.report.Version,
		ConfigHash: o.report.ConfigHash,
		Config:     o.report.Config,
		Details:    o.report.details(),
	}
	if status != records.HealthHealthy && len(obs.Reasons) == 0 {
		reason := o.stderr
		if reason == "" {
			reason = fmt.Sprintf("%s exited with status %d", cmd.name(), o.state.ExitCode())
		}
		obs.Reasons = []string{reason}
	}
	return obs, nil
}

// command makes the run of argv with the driver's environment plus vars.
func (d *Driver) command(ctx context.Context, argv []string, timeout time.Duration, vars map[string]string) command {
	// Tell the script how long it has, for the tools it calls (kubectl
	// --timeout, ansible's async): the nearer of its timeout and ctx's.
	left := timeout
	if dl, ok := ctx.Deadline(); ok {
		if until := time.Until(dl); until < left {
			left = until
		}
	}
	vars["FLOTILLA_TIMEOUT_SECONDS"] = fmt.Sprint(int64(math.Max(0, math.Floor(left.Seconds()))))

	env := map[string]string{}
	for _, k := range inherited {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	if env["PATH"] == "" {
		env["PATH"] = defaultPath
	}
	for _, k := range d.cfg.PassEnv {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	maps.Copy(env, d.cfg.Env)
	maps.Copy(env, vars)
	list := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		list = append(list, k+"="+env[k])
	}
	return command{argv: slices.Clone(argv), dir: d.cfg.Workdir, env: list, timeout: timeout, grace: d.cfg.KillGrace}
}

// clusterVars describes a cluster to a command.
func clusterVars(c inventory.Cluster) map[string]string {
	vars := map[string]string{
		"FLOTILLA_CLUSTER_ID":      c.ID,
		"FLOTILLA_CLUSTER_ADDRESS": c.Address,
		"FLOTILLA_CLUSTER_VERSION": c.Version,
		"FLOTILLA_CLUSTER_DRIVER":  c.Driver,
		"FLOTILLA_LABELS_JSON":     jsonObject(c.Labels),
		"FLOTILLA_SETTINGS_JSON":   jsonObject(c.Settings),
	}
	prefixed(vars, "FLOTILLA_LABEL_", c.Labels)
	prefixed(vars, "FLOTILLA_SETTING_", c.Settings)
	return vars
}

// operationVars describes an operation and its command to a command.
func operationVars(req drivers.Request) map[string]string {
	reset := slices.Sorted(slices.Values(req.Operation.Reset))
	resetJSON, _ := json.Marshal(append([]string{}, reset...)) // []string always encodes; [] rather than null
	vars := map[string]string{}
	// The per-key variables first: a key named "json" must not hide
	// FLOTILLA_CONFIG_JSON, which holds every key exactly.
	prefixed(vars, "FLOTILLA_CONFIG_", req.Operation.Config)
	maps.Copy(vars, map[string]string{
		"FLOTILLA_COMMAND_ID":     req.CommandID,
		"FLOTILLA_FENCING_TOKEN":  strconv.FormatInt(req.FencingToken, 10),
		"FLOTILLA_OPERATION":      string(req.Operation.Kind),
		"FLOTILLA_TARGET_VERSION": req.Operation.Version,
		"FLOTILLA_CONFIG_JSON":    jsonObject(req.Operation.Config),
		"FLOTILLA_RESET_KEYS":     strings.Join(reset, ","),
		"FLOTILLA_RESET_JSON":     string(resetJSON),
	})
	return vars
}

// prefixed adds m to vars under prefix+EnvKey(key). Keys are taken in
// ascending order, so when two keys make the same name ("a.b", "a-b") the
// greater one wins, every time; the _JSON variables hold the exact keys.
func prefixed(vars map[string]string, prefix string, m map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		vars[prefix+EnvKey(k)] = m[k]
	}
}

// EnvKey turns a label, setting or config key into the suffix of its
// FLOTILLA_LABEL_, FLOTILLA_SETTING_ or FLOTILLA_CONFIG_ variable: upper
// case, with every character other than A-Z and 0-9 replaced by '_'
// ("sasl.mechanism" → "SASL_MECHANISM", "log.retention-ms" →
// "LOG_RETENTION_MS").
func EnvKey(key string) string {
	b := []byte(strings.ToUpper(key))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

func jsonObject(m map[string]string) string {
	if m == nil {
		return "{}"
	}
	b, _ := json.Marshal(m) // map[string]string always encodes
	return string(b)
}

func merge(a, b report) report {
	if b.Version != "" {
		a.Version = b.Version
	}
	if b.PreviousVersion != "" {
		a.PreviousVersion = b.PreviousVersion
	}
	return a
}

func kinds(ks []rollout.OperationKind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// lock takes the lock of cluster id, or gives up when ctx is done.
func (d *Driver) lock(ctx context.Context, id string) (unlock func(), err error) {
	d.mu.Lock()
	l, ok := d.locks[id]
	if !ok {
		l = make(chan struct{}, 1)
		d.locks[id] = l
	}
	d.mu.Unlock()
	select { // a free lock is taken even when ctx is done: run reports that
	case l <- struct{}{}:
		return func() { <-l }, nil
	default:
	}
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
