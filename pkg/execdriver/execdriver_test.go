package execdriver_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/execdriver"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// fixture holds the scripts of one test and the clock its drivers use.
type fixture struct {
	t     *testing.T
	dir   string
	clock *clockwork.FakeClock
}

func newFixture(t *testing.T) *fixture {
	return &fixture{t: t, dir: t.TempDir(), clock: clockwork.NewFakeClock()}
}

// script writes an executable sh script and returns its path.
func (f *fixture) script(name, body string) string {
	f.t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// path returns the path of a file in the fixture's directory.
func (f *fixture) path(name string) string { return filepath.Join(f.dir, name) }

// registry parses a configuration and registers its drivers.
func (f *fixture) registry(config string) *drivers.Registry {
	f.t.Helper()
	cfg, err := execdriver.Parse([]byte(config))
	if err != nil {
		f.t.Fatalf("Parse:\n%s\nerror: %v", config, err)
	}
	reg := drivers.NewRegistry()
	cfg.Register(reg, execdriver.WithClock(f.clock))
	return reg
}

// driver returns the driver "helm" of a configuration.
func (f *fixture) driver(config string) drivers.Driver {
	f.t.Helper()
	d, err := f.registry(config).Driver("helm")
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

// helm returns a configuration of a driver "helm" running apply, with more
// YAML lines for the driver appended.
func helm(apply string, more ...string) string {
	s := fmt.Sprintf("drivers:\n  helm:\n    apply: [%q]\n", apply)
	if !slices.ContainsFunc(more, func(l string) bool { return strings.HasPrefix(l, "operations:") }) {
		more = append(more, "operations: [upgrade, restart, config]")
	}
	for _, l := range more {
		s += "    " + l + "\n"
	}
	return s
}

var cluster = inventory.Cluster{
	ID:       "prod-eu-1",
	Driver:   "helm",
	Address:  "kafka-1.eu:9092,kafka-2.eu:9092",
	Version:  "3.8.0",
	Labels:   map[string]string{"cloud": "aws", "team.name": "payments", "tier": "gold"},
	Settings: map[string]string{"sasl.mechanism": "SCRAM-SHA-512", "release-name": "kafka-eu"},
}

func request(op rollout.Operation) drivers.Request {
	return drivers.Request{CommandID: "cmd-42", Cluster: cluster, Operation: op}
}

var (
	upgrade = rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}
	restart = rollout.Operation{Kind: rollout.Restart}
)

// readEnv parses what `env` printed into a file.
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	return env
}

func TestApplyEnvironment(t *testing.T) {
	f := newFixture(t)
	t.Setenv("LANG", "C.UTF-8")
	t.Setenv("EXECUTOR_SECRET", "hunter2") // must not leak
	t.Setenv("AWS_PROFILE", "fleet")       // passed on: listed in pass_env
	work := filepath.Join(f.dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	dump := f.path("env")
	apply := f.script("dump.sh", `env > "$DUMP"; echo "CWD=$(pwd)" >> "$DUMP"`)
	d := f.driver(helm(apply,
		fmt.Sprintf("env: {DUMP: %q, KUBECONFIG: /etc/flotilla/kubeconfig}", dump),
		"pass_env: [AWS_PROFILE, NOT_SET_ANYWHERE]",
		fmt.Sprintf("workdir: %q", work),
		"timeout: 10m"))

	op := rollout.Operation{Kind: rollout.Config, Config: map[string]string{"retention.ms": "604800000", "min.insync.replicas": "2"},
		Reset: []string{"topic:orders:segment.ms", "cleanup.policy"}}
	req := request(op)
	req.FencingToken = 4711
	if _, err := d.Apply(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	env := readEnv(t, dump)

	want := map[string]string{
		"FLOTILLA_CLUSTER_ID":                 "prod-eu-1",
		"FLOTILLA_CLUSTER_ADDRESS":            "kafka-1.eu:9092,kafka-2.eu:9092",
		"FLOTILLA_CLUSTER_VERSION":            "3.8.0",
		"FLOTILLA_CLUSTER_DRIVER":             "helm",
		"FLOTILLA_LABEL_CLOUD":                "aws",
		"FLOTILLA_LABEL_TEAM_NAME":            "payments",
		"FLOTILLA_LABEL_TIER":                 "gold",
		"FLOTILLA_LABELS_JSON":                `{"cloud":"aws","team.name":"payments","tier":"gold"}`,
		"FLOTILLA_SETTING_SASL_MECHANISM":     "SCRAM-SHA-512",
		"FLOTILLA_SETTING_RELEASE_NAME":       "kafka-eu",
		"FLOTILLA_SETTINGS_JSON":              `{"release-name":"kafka-eu","sasl.mechanism":"SCRAM-SHA-512"}`,
		"FLOTILLA_OPERATION":                  "config",
		"FLOTILLA_TARGET_VERSION":             "",
		"FLOTILLA_CONFIG_RETENTION_MS":        "604800000",
		"FLOTILLA_CONFIG_MIN_INSYNC_REPLICAS": "2",
		"FLOTILLA_CONFIG_JSON":                `{"min.insync.replicas":"2","retention.ms":"604800000"}`,
		"FLOTILLA_RESET_KEYS":                 "cleanup.policy,topic:orders:segment.ms",
		"FLOTILLA_RESET_JSON":                 `["cleanup.policy","topic:orders:segment.ms"]`,
		"FLOTILLA_COMMAND_ID":                 "cmd-42",
		"FLOTILLA_FENCING_TOKEN":              "4711",
		"FLOTILLA_STEP":                       "apply",
		"FLOTILLA_TIMEOUT_SECONDS":            "600",
		"KUBECONFIG":                          "/etc/flotilla/kubeconfig",
		"DUMP":                                dump,
		"AWS_PROFILE":                         "fleet",
		"LANG":                                "C.UTF-8",
		"PATH":                                os.Getenv("PATH"),
		"CWD":                                 work,
	}
	for k, v := range want {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("%s = %q (set: %v), want %q", k, got, ok, v)
		}
	}
	// Nothing else of the executor's environment: only the inherited names,
	// and what the shell itself sets.
	allowed := map[string]bool{"HOME": true, "TZ": true, "PWD": true, "OLDPWD": true, "SHLVL": true, "_": true}
	for k := range env {
		if _, ok := want[k]; !ok && !allowed[k] {
			t.Errorf("unexpected variable %s=%q passed to the command", k, env[k])
		}
	}
	if _, ok := env["EXECUTOR_SECRET"]; ok {
		t.Error("the executor's EXECUTOR_SECRET leaked into the command's environment")
	}
}

func TestUpgradeEnvironmentAndVerifyStep(t *testing.T) {
	f := newFixture(t)
	apply := f.script("apply.sh", `env > "$DIR/apply.env"`)
	verify := f.script("verify.sh", `env > "$DIR/verify.env"`)
	d := f.driver(helm(apply, fmt.Sprintf("verify: [%q]", verify), fmt.Sprintf("env: {DIR: %q}", f.dir)))
	if _, err := d.Apply(context.Background(), request(upgrade)); err != nil {
		t.Fatal(err)
	}
	for file, step := range map[string]string{"apply.env": "apply", "verify.env": "verify"} {
		env := readEnv(t, f.path(file))
		if env["FLOTILLA_STEP"] != step || env["FLOTILLA_OPERATION"] != "upgrade" || env["FLOTILLA_TARGET_VERSION"] != "3.9.1" ||
			env["FLOTILLA_CONFIG_JSON"] != "{}" || env["FLOTILLA_RESET_KEYS"] != "" || env["FLOTILLA_RESET_JSON"] != "[]" || env["FLOTILLA_COMMAND_ID"] != "cmd-42" {
			t.Errorf("%s: step %q operation %q target %q config %q reset %q %q command %q", file, env["FLOTILLA_STEP"], env["FLOTILLA_OPERATION"],
				env["FLOTILLA_TARGET_VERSION"], env["FLOTILLA_CONFIG_JSON"], env["FLOTILLA_RESET_KEYS"], env["FLOTILLA_RESET_JSON"], env["FLOTILLA_COMMAND_ID"])
		}
	}
}

// The exec driver cannot read a cluster's config, so the executor must not
// take it for a Snapshotter: it would record previous values it never read.
func TestIsNoSnapshotter(t *testing.T) {
	f := newFixture(t)
	d := f.driver(helm(f.script("noop.sh", "exit 0")))
	if _, ok := d.(drivers.Snapshotter); ok {
		t.Fatal("the exec driver claims to read configs")
	}
}

func TestEnvKey(t *testing.T) {
	tests := map[string]string{
		"cloud":             "CLOUD",
		"sasl.mechanism":    "SASL_MECHANISM",
		"log.retention-ms":  "LOG_RETENTION_MS",
		"app.kubernetes.io": "APP_KUBERNETES_IO",
		"Team Name/2":       "TEAM_NAME_2",
	}
	for in, want := range tests {
		if got := execdriver.EnvKey(in); got != want {
			t.Errorf("EnvKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestApplyExitStatus(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		op         rollout.Operation
		wantErr    string // "" for success
		wantOutput string // "*" for any: stdout and stderr interleave as they arrive
		wantPrev   string
		wantVer    string
	}{
		{name: "success", body: `echo "helm upgrade done"`, op: restart,
			wantOutput: "helm upgrade done", wantPrev: "3.8.0", wantVer: "3.8.0"},
		{name: "upgrade reports the target", body: `echo upgraded`, op: upgrade,
			wantOutput: "upgraded", wantPrev: "3.8.0", wantVer: "3.9.1"},
		{name: "stderr line is the reason", body: `echo 'Error: release "kafka-eu" not found' >&2; exit 3`, op: upgrade,
			wantErr:    `helm-upgrade.sh exited with status 3 on prod-eu-1: Error: release "kafka-eu" not found`,
			wantOutput: "Error: release \"kafka-eu\" not found", wantPrev: "3.8.0", wantVer: ""},
		{name: "stderr wins over stdout", body: "echo 'last stdout line'; echo 'the error' >&2; exit 3", op: restart,
			wantErr: "helm-upgrade.sh exited with status 3 on prod-eu-1: the error", wantOutput: "*", wantPrev: "3.8.0", wantVer: ""},
		{name: "stdout line when stderr is silent", body: "echo step 1\necho 'quorum lost'\nexit 1", op: restart,
			wantErr: "helm-upgrade.sh exited with status 1 on prod-eu-1: quorum lost", wantOutput: "step 1\nquorum lost", wantPrev: "3.8.0", wantVer: ""},
		{name: "silent failure", body: "exit 4", op: restart,
			wantErr: "helm-upgrade.sh exited with status 4 on prod-eu-1", wantPrev: "3.8.0", wantVer: ""},
		{name: "killed by a signal", body: "echo dying >&2; kill -9 $$", op: restart,
			wantErr: "helm-upgrade.sh was killed by signal 9 (killed) on prod-eu-1: dying", wantOutput: "dying", wantPrev: "3.8.0", wantVer: ""},
		{name: "reported versions", body: `echo '{"version": "3.9.1", "previous_version": "3.7.2"}'`, op: upgrade,
			wantOutput: `{"version": "3.9.1", "previous_version": "3.7.2"}`, wantPrev: "3.7.2", wantVer: "3.9.1"},
		{name: "restart reports the version it found", body: `echo '{"version": "3.8.1"}'`, op: restart,
			wantOutput: `{"version": "3.8.1"}`, wantPrev: "3.8.0", wantVer: "3.8.1"},
		{name: "upgrade reporting another version fails", body: `echo '{"version": "3.8.0"}'`, op: upgrade,
			wantErr:    "upgrade of prod-eu-1 to 3.9.1: the commands succeeded but report version 3.8.0",
			wantOutput: `{"version": "3.8.0"}`, wantPrev: "3.8.0", wantVer: "3.8.0"},
		{name: "a JSON log line is no report", body: `echo '{"level": "info", "msg": "done"}'`, op: upgrade,
			wantOutput: `{"level": "info", "msg": "done"}`, wantPrev: "3.8.0", wantVer: "3.9.1"},
		{name: "malformed report", body: `echo '{"version": 391}'`, op: upgrade,
			wantErr:    "helm-upgrade.sh on prod-eu-1: last line of stdout is not a valid report: json: cannot unmarshal number",
			wantOutput: `{"version": 391}`, wantPrev: "3.8.0", wantVer: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			d := f.driver(helm(f.script("helm-upgrade.sh", tt.body)))
			res, err := d.Apply(context.Background(), request(tt.op))
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)) {
				t.Fatalf("Apply error = %v, want %q", err, tt.wantErr)
			}
			if (tt.wantOutput != "*" && res.Output != tt.wantOutput) || res.PreviousVersion != tt.wantPrev || res.Version != tt.wantVer {
				t.Errorf("result = %+v, want output %q, previous %q, version %q", res, tt.wantOutput, tt.wantPrev, tt.wantVer)
			}
		})
	}
}

func TestApplyOutputTail(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		check func(t *testing.T, out string)
	}{
		{name: "last 40 lines", body: "i=1; while [ $i -le 100 ]; do echo line $i; i=$((i+1)); done; exit 2",
			check: func(t *testing.T, out string) {
				lines := strings.Split(out, "\n")
				if lines[0] != "[earlier output omitted]" || len(lines) != 41 || lines[1] != "line 61" || lines[40] != "line 100" {
					t.Errorf("output has %d lines, first %q, second %q, last %q", len(lines), lines[0], lines[1], lines[len(lines)-1])
				}
			}},
		{name: "last 4 KiB, from a line start", body: `i=1; while [ $i -le 20 ]; do printf "%04d%0996d\n" $i 0; i=$((i+1)); done`,
			check: func(t *testing.T, out string) {
				body, ok := strings.CutPrefix(out, "[earlier output omitted]\n")
				if !ok || len(body) > 4096 {
					t.Fatalf("output of %d bytes, marked %v: want at most 4096 after the marker", len(out), ok)
				}
				lines := strings.Split(body, "\n")
				if len(lines) != 4 || !strings.HasPrefix(lines[0], "0017") || !strings.HasPrefix(lines[3], "0020") {
					t.Errorf("got %d lines starting %.4q ... %.4q, want whole lines 0017 to 0020", len(lines), lines[0], lines[len(lines)-1])
				}
			}},
		{name: "stdout and stderr together", body: "echo out; echo err >&2",
			check: func(t *testing.T, out string) {
				if got := strings.Split(out, "\n"); !slices.Contains(got, "out") || !slices.Contains(got, "err") || len(got) != 2 {
					t.Errorf("output %q, want the lines out and err", out)
				}
			}},
		{name: "invalid UTF-8 is replaced", body: `printf 'caf\351\n'`,
			check: func(t *testing.T, out string) {
				if out != "caf\uFFFD" {
					t.Errorf("output %q, want %q", out, "caf\uFFFD")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			d := f.driver(helm(f.script("print.sh", tt.body)))
			res, _ := d.Apply(context.Background(), request(restart))
			tt.check(t, res.Output)
		})
	}
}

func TestApplyVerify(t *testing.T) {
	tests := []struct {
		name       string
		apply      string
		verify     string
		wantErr    string
		wantVerify bool // verify ran
		wantOutput string
	}{
		{name: "verify passes", apply: "echo applied", verify: `echo '{"version": "3.9.1"}'`, wantVerify: true,
			wantOutput: "applied\n\n--- verify: verify.sh ---\n{\"version\": \"3.9.1\"}"},
		{name: "verify fails", apply: "echo applied", verify: "echo 'brokers still on 3.8.0' >&2; exit 1", wantVerify: true,
			wantErr:    "verify: verify.sh exited with status 1 on prod-eu-1: brokers still on 3.8.0",
			wantOutput: "applied\n\n--- verify: verify.sh ---\nbrokers still on 3.8.0"},
		{name: "verify reports a wrong version", apply: "echo applied", verify: `echo '{"version": "3.8.0"}'`, wantVerify: true,
			wantErr:    "upgrade of prod-eu-1 to 3.9.1: the commands succeeded but report version 3.8.0",
			wantOutput: "applied\n\n--- verify: verify.sh ---\n{\"version\": \"3.8.0\"}"},
		{name: "no verify after a failed apply", apply: "echo 'helm: timed out' >&2; exit 1", verify: "echo verified",
			wantErr: "apply.sh exited with status 1 on prod-eu-1: helm: timed out", wantOutput: "helm: timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			ran := f.path("verify-ran")
			apply := f.script("apply.sh", tt.apply)
			verify := f.script("verify.sh", fmt.Sprintf("touch %q\n%s", ran, tt.verify))
			d := f.driver(helm(apply, fmt.Sprintf("verify: [%q]", verify)))
			res, err := d.Apply(context.Background(), request(upgrade))
			if (err == nil) != (tt.wantErr == "") || (err != nil && err.Error() != tt.wantErr) {
				t.Fatalf("Apply error = %v, want %q", err, tt.wantErr)
			}
			if _, statErr := os.Stat(ran); (statErr == nil) != tt.wantVerify {
				t.Errorf("verify ran: %v, want %v", statErr == nil, tt.wantVerify)
			}
			if res.Output != tt.wantOutput {
				t.Errorf("output %q, want %q", res.Output, tt.wantOutput)
			}
		})
	}
}

func TestApplyRefusesWithoutRunning(t *testing.T) {
	f := newFixture(t)
	ran := f.path("ran")
	d := f.driver(helm(f.script("apply.sh", fmt.Sprintf("touch %q", ran)), "operations: [upgrade]"))
	tests := []struct {
		name    string
		req     drivers.Request
		wantErr string
	}{
		{name: "operation kind not configured", req: request(restart),
			wantErr: `exec driver helm does not handle "restart" operations (it handles upgrade); cluster prod-eu-1`},
		{name: "unknown operation kind", req: request(rollout.Operation{Kind: "reboot"}),
			wantErr: `exec driver helm does not handle "reboot" operations (it handles upgrade); cluster prod-eu-1`},
		{name: "upgrade without version", req: request(rollout.Operation{Kind: rollout.Upgrade}),
			wantErr: "upgrade of prod-eu-1 names no version"},
		{name: "no command id", req: drivers.Request{Cluster: cluster, Operation: upgrade},
			wantErr: "apply upgrade to prod-eu-1: no command id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.Apply(context.Background(), tt.req)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Apply error = %v, want %q", err, tt.wantErr)
			}
			if _, err := os.Stat(ran); err == nil {
				t.Fatal("the apply command ran")
			}
		})
	}
}

// A script that starts a child in the background and waits for it: both
// must be gone once Apply returns. The PIDs are written atomically.
const spawner = `sleep 100 &
echo "$$ $!" > "$PIDS.tmp"; mv "$PIDS.tmp" "$PIDS"
wait`

type applied struct {
	res drivers.Result
	err error
}

func applyAsync(ctx context.Context, d drivers.Driver, req drivers.Request) <-chan applied {
	ch := make(chan applied, 1)
	go func() {
		res, err := d.Apply(ctx, req)
		ch <- applied{res, err}
	}()
	return ch
}

func await(t *testing.T, ch <-chan applied) applied {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("Apply did not return within 10s")
		return applied{}
	}
}

// waitFor polls cond until it holds, failing the test after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readPIDs waits for the spawner's PID file and returns the PIDs in it.
func readPIDs(t *testing.T, path string) []int {
	t.Helper()
	waitFor(t, "the script to write its PIDs", func() bool { _, err := os.Stat(path); return err == nil })
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, s := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if len(pids) != 2 {
		t.Fatalf("PID file holds %q, want two PIDs", data)
	}
	return pids
}

// alive reports whether a process runs. A zombie counts as gone: once
// killed and reparented, it waits for an init that may never reap it.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	rest := stat[strings.LastIndexByte(string(stat), ')')+1:]
	return !strings.HasPrefix(strings.TrimSpace(string(rest)), "Z")
}

func waitGone(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		waitFor(t, fmt.Sprintf("process %d to be gone", pid), func() bool { return !alive(pid) })
	}
}

func TestApplyTimeoutKillsProcessGroup(t *testing.T) {
	tests := []struct {
		name       string
		ignoreTERM bool
	}{
		{name: "SIGTERM stops it"},
		{name: "SIGKILL after the grace period", ignoreTERM: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			body := spawner
			if tt.ignoreTERM {
				body = "trap '' TERM\n" + body // inherited by the child: both ignore SIGTERM
			}
			pidFile := f.path("pids")
			d := f.driver(helm(f.script("helm-upgrade.sh", body), "timeout: 10m", "kill_grace: 30s",
				fmt.Sprintf("env: {PIDS: %q}", pidFile)))
			done := applyAsync(context.Background(), d, request(upgrade))
			pids := readPIDs(t, pidFile)

			f.clock.Advance(10 * time.Minute)
			if tt.ignoreTERM {
				// SIGTERM was sent and ignored; the grace timer runs.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := f.clock.BlockUntilContext(ctx, 1); err != nil {
					t.Fatal("no grace timer after the timeout")
				}
				for _, pid := range pids {
					if !alive(pid) {
						t.Fatalf("process %d died of an ignored SIGTERM", pid)
					}
				}
				f.clock.Advance(30 * time.Second)
			}
			a := await(t, done)
			if !errors.Is(a.err, execdriver.ErrTimeout) || errors.Is(a.err, context.DeadlineExceeded) {
				t.Errorf("error %v: want one wrapping ErrTimeout and not DeadlineExceeded", a.err)
			}
			if want := "helm-upgrade.sh timed out after 10m0s on prod-eu-1 and was killed"; a.err == nil || a.err.Error() != want {
				t.Errorf("error %v, want %q", a.err, want)
			}
			waitGone(t, pids)
		})
	}
}

func TestApplyContextCancelKillsProcessGroup(t *testing.T) {
	f := newFixture(t)
	pidFile := f.path("pids")
	d := f.driver(helm(f.script("helm-upgrade.sh", spawner), fmt.Sprintf("env: {PIDS: %q}", pidFile)))
	ctx, cancel := context.WithCancel(context.Background())
	done := applyAsync(ctx, d, request(upgrade))
	pids := readPIDs(t, pidFile)
	cancel()
	a := await(t, done)
	if !errors.Is(a.err, context.Canceled) {
		t.Errorf("error %v, want one wrapping context.Canceled", a.err)
	}
	if want := "helm-upgrade.sh on prod-eu-1 was stopped: context canceled"; a.err == nil || a.err.Error() != want {
		t.Errorf("error %v, want %q", a.err, want)
	}
	waitGone(t, pids)
}

func TestApplyKillsWhatTheCommandLeftBehind(t *testing.T) {
	f := newFixture(t)
	pidFile := f.path("pids")
	// Exits at once, leaving its child running (and holding stdout).
	d := f.driver(helm(f.script("helm-upgrade.sh", "sleep 100 &\necho \"$$ $!\" > \"$PIDS\"\necho started"),
		fmt.Sprintf("env: {PIDS: %q}", pidFile)))
	res, err := d.Apply(context.Background(), request(upgrade))
	if err != nil || res.Output != "started" {
		t.Fatalf("Apply = %+v, %v; want success with output %q", res, err, "started")
	}
	waitGone(t, readPIDs(t, pidFile))
}

func TestApplySerialisedPerCluster(t *testing.T) {
	f := newFixture(t)
	// Each run takes a per-cluster directory lock (failing if another run of
	// the same cluster holds it), logs its start and end, and holds the lock
	// until a release file for its cluster exists.
	apply := f.script("apply.sh", `mkdir "$DIR/lock-$FLOTILLA_CLUSTER_ID" || { echo "concurrent run on $FLOTILLA_CLUSTER_ID" >&2; exit 9; }
echo "start $FLOTILLA_COMMAND_ID" >> "$DIR/log-$FLOTILLA_CLUSTER_ID"
touch "$DIR/running-$FLOTILLA_COMMAND_ID"
while [ ! -e "$DIR/release-$FLOTILLA_CLUSTER_ID" ]; do sleep 0.01; done
echo "end $FLOTILLA_COMMAND_ID" >> "$DIR/log-$FLOTILLA_CLUSTER_ID"
rmdir "$DIR/lock-$FLOTILLA_CLUSTER_ID"`)
	d := f.driver(helm(apply, fmt.Sprintf("env: {DIR: %q}", f.dir)))
	running := func(cmd string) func() bool {
		return func() bool { _, err := os.Stat(f.path("running-" + cmd)); return err == nil }
	}
	req := func(cmd, clusterID string) drivers.Request {
		r := request(restart)
		r.CommandID, r.Cluster.ID = cmd, clusterID
		return r
	}

	first := applyAsync(context.Background(), d, req("a", "prod-eu-1"))
	waitFor(t, "a to run", running("a"))

	// While a runs, another Apply to its cluster waits: with a context
	// already done, it gives up waiting rather than run.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Apply(ctx, req("x", "prod-eu-1")); err == nil || !strings.Contains(err.Error(), "waiting for the operation already running on it: context canceled") {
		t.Fatalf("Apply with a done context while another runs: %v; want it to give up waiting", err)
	}
	second := applyAsync(context.Background(), d, req("b", "prod-eu-1"))

	// A done context with the cluster free: the lock is taken, the command
	// is not started.
	if _, err := d.Apply(ctx, req("y", "prod-us-2")); err == nil || err.Error() != "apply.sh on prod-us-2 was stopped: context canceled" {
		t.Fatalf("Apply with a done context: %v; want it stopped before the command starts", err)
	}
	if _, err := os.Stat(f.path("running-y")); err == nil {
		t.Fatal("the command ran with a done context")
	}

	// Another cluster is not held up by the first.
	if err := os.WriteFile(f.path("release-prod-us-1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if a := await(t, applyAsync(context.Background(), d, req("c", "prod-us-1"))); a.err != nil {
		t.Fatalf("Apply to another cluster: %v", a.err)
	}

	if err := os.WriteFile(f.path("release-prod-eu-1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, a := range []applied{await(t, first), await(t, second)} {
		if a.err != nil {
			t.Fatalf("Apply: %v (output %q)", a.err, a.res.Output)
		}
	}
	log, err := os.ReadFile(f.path("log-prod-eu-1"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(log), "start a\nend a\nstart b\nend b\n"; got != want {
		t.Errorf("runs on prod-eu-1:\n%s\nwant:\n%s", got, want)
	}
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    drivers.Observation
		wantErr string
	}{
		{name: "healthy with a report",
			body: `echo checking; echo '{"version": "3.9.1", "config_hash": "abc123", "config": {"log.retention.ms": "100", "unset.key": ""}, "details": {"urp": 0, "controller": "kafka-2", "racks": ["a", "b"]}}'`,
			want: drivers.Observation{Status: records.HealthHealthy, Version: "3.9.1", ConfigHash: "abc123",
				Config:  map[string]string{"log.retention.ms": "100", "unset.key": ""},
				Details: map[string]string{"urp": "0", "controller": "kafka-2", "racks": `["a","b"]`}}},
		{name: "healthy, plain output", body: "echo all good",
			want: drivers.Observation{Status: records.HealthHealthy}},
		{name: "degraded with reasons", body: `echo '{"version": "3.9.1", "reasons": ["3 partitions under-replicated"]}'; exit 1`,
			want: drivers.Observation{Status: records.HealthDegraded, Version: "3.9.1", Reasons: []string{"3 partitions under-replicated"}}},
		{name: "unhealthy, reason from stderr", body: "echo 'broker kafka-2 is down' >&2; exit 2",
			want: drivers.Observation{Status: records.HealthUnhealthy, Reasons: []string{"broker kafka-2 is down"}}},
		{name: "unhealthy, silent", body: "exit 2",
			want: drivers.Observation{Status: records.HealthUnhealthy, Reasons: []string{"helm-probe.sh exited with status 2"}}},
		{name: "other status: the probe failed", body: "echo 'kubectl: connection refused' >&2; exit 3",
			wantErr: "probe: helm-probe.sh exited with status 3 on prod-eu-1: kubectl: connection refused"},
		{name: "malformed report", body: `echo '{"reasons": "not a list"}'`,
			wantErr: "probe helm-probe.sh on prod-eu-1: last line of stdout is not a valid report"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			reg := f.registry(helm(f.script("apply.sh", "true"), fmt.Sprintf("probe: [%q]", f.script("helm-probe.sh", tt.body))))
			p, err := reg.Prober("helm")
			if err != nil {
				t.Fatal(err)
			}
			obs, err := p.Probe(context.Background(), cluster)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("Probe error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Probe: %v", err)
			}
			if obs.Status != tt.want.Status || obs.Version != tt.want.Version || obs.ConfigHash != tt.want.ConfigHash ||
				!slices.Equal(obs.Reasons, tt.want.Reasons) || !maps.Equal(obs.Details, tt.want.Details) || !maps.Equal(obs.Config, tt.want.Config) {
				t.Errorf("observation %+v, want %+v", obs, tt.want)
			}
		})
	}
}

func TestProbeEnvironmentAndTimeout(t *testing.T) {
	f := newFixture(t)
	dump, pidFile := f.path("env"), f.path("pids")
	probe := f.script("helm-probe.sh", `env > "$DUMP"; `+spawner)
	reg := f.registry(helm(f.script("apply.sh", "true"), fmt.Sprintf("probe: [%q]", probe), "probe_timeout: 20s",
		fmt.Sprintf("env: {DUMP: %q, PIDS: %q}", dump, pidFile)))
	p, err := reg.Prober("helm")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := p.Probe(context.Background(), cluster)
		errc <- err
	}()
	pids := readPIDs(t, pidFile)
	f.clock.Advance(20 * time.Second)
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("Probe did not return after its timeout")
	}
	if !errors.Is(err, execdriver.ErrTimeout) || err.Error() != "probe: helm-probe.sh timed out after 20s on prod-eu-1 and was killed" {
		t.Errorf("Probe error %v, want a timeout after 20s", err)
	}
	waitGone(t, pids)

	env := readEnv(t, dump)
	if env["FLOTILLA_STEP"] != "probe" || env["FLOTILLA_CLUSTER_ID"] != "prod-eu-1" || env["FLOTILLA_LABEL_CLOUD"] != "aws" || env["FLOTILLA_TIMEOUT_SECONDS"] != "20" {
		t.Errorf("probe environment: step %q cluster %q label %q timeout %q", env["FLOTILLA_STEP"], env["FLOTILLA_CLUSTER_ID"], env["FLOTILLA_LABEL_CLOUD"], env["FLOTILLA_TIMEOUT_SECONDS"])
	}
	for k := range env {
		if regexp.MustCompile(`^FLOTILLA_(COMMAND_ID|OPERATION|TARGET_VERSION|CONFIG_)`).MatchString(k) {
			t.Errorf("probe got the operation variable %s", k)
		}
	}
}

func TestRegisterProberOnlyWithProbe(t *testing.T) {
	f := newFixture(t)
	apply := f.script("apply.sh", "true")
	reg := f.registry(fmt.Sprintf(`drivers:
  helm: {apply: [%q], operations: [upgrade]}
  ansible: {apply: [%q], probe: [%q], operations: [restart]}
`, apply, apply, apply))
	if got, want := reg.Names(), []string{"ansible", "helm"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	if _, err := reg.Prober("helm"); !errors.Is(err, drivers.ErrUnknownDriver) {
		t.Errorf("Prober(helm) error %v, want ErrUnknownDriver: helm has no probe", err)
	}
	if _, err := reg.Prober("ansible"); err != nil {
		t.Errorf("Prober(ansible): %v", err)
	}
	for _, name := range []string{"helm", "ansible"} {
		if _, err := reg.Driver(name); err != nil {
			t.Errorf("Driver(%s): %v", name, err)
		}
	}
}
