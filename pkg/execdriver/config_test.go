package execdriver_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/execdriver"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

func TestParse(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh in PATH")
	}
	cfg, err := execdriver.Parse([]byte(`
drivers:
  helm:
    apply: [testdata/noop.sh, --wait]       # relative: to the current directory for Parse
    verify: [sh, -c, 'exit 0']              # no slash: looked up in PATH
    operations: [upgrade, restart]
  ansible:
    apply: [noop.sh]
    probe: [./noop.sh, probe]
    workdir: testdata                        # commands with a slash resolve against it
    timeout: 2h
    probe_timeout: 5s
    kill_grace: 1m
    operations: [config]
    env: {ANSIBLE_CONFIG: /etc/ansible/fleet.cfg, PATH: testdata-is-not-here:/no/such/dir}
    pass_env: [SSH_AUTH_SOCK]
`))
	if err == nil || !strings.Contains(err.Error(), "drivers.ansible.apply: noop.sh not found in PATH testdata-is-not-here:/no/such/dir") {
		t.Fatalf("Parse: error %v; want noop.sh not found in the PATH the driver's env sets", err)
	}

	cfg, err = execdriver.Parse([]byte(`
drivers:
  helm:
    apply: [testdata/noop.sh, --wait]
    verify: [sh, -c, 'exit 0']
    operations: [upgrade, restart]
  ansible:
    apply: [./noop.sh]
    probe: [./noop.sh, probe]
    workdir: testdata
    timeout: 2h
    probe_timeout: 5s
    kill_grace: 1m
    operations: [config]
    env: {ANSIBLE_CONFIG: /etc/ansible/fleet.cfg}
    pass_env: [SSH_AUTH_SOCK]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Names(), []string{"ansible", "helm"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	noop := filepath.Join(wd, "testdata", "noop.sh")
	helm := cfg.Drivers["helm"]
	if !slices.Equal(helm.Apply, []string{noop, "--wait"}) || !slices.Equal(helm.Verify, []string{sh, "-c", "exit 0"}) {
		t.Errorf("helm commands: apply %q, verify %q; want absolute paths %s and %s", helm.Apply, helm.Verify, noop, sh)
	}
	if helm.Timeout != execdriver.DefaultTimeout || helm.ProbeTimeout != execdriver.DefaultProbeTimeout ||
		helm.KillGrace != execdriver.DefaultKillGrace || helm.Workdir != wd || len(helm.Probe) != 0 {
		t.Errorf("helm defaults: %+v", helm)
	}
	ans := cfg.Drivers["ansible"]
	if !slices.Equal(ans.Apply, []string{noop}) || !slices.Equal(ans.Probe, []string{noop, "probe"}) ||
		ans.Workdir != filepath.Join(wd, "testdata") || ans.Timeout != 2*time.Hour || ans.ProbeTimeout != 5*time.Second ||
		ans.KillGrace != time.Minute || !slices.Equal(ans.Operations, []rollout.OperationKind{rollout.Config}) ||
		ans.Env["ANSIBLE_CONFIG"] != "/etc/ansible/fleet.cfg" || !slices.Equal(ans.PassEnv, []string{"SSH_AUTH_SOCK"}) {
		t.Errorf("ansible: %+v", ans)
	}
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.sh")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		yaml     string
		wantErrs []string // each must appear in the error
	}{
		{name: "empty document", yaml: "",
			wantErrs: []string{`defines no drivers (want a top-level "drivers:" mapping)`}},
		{name: "syntax error", yaml: "drivers:\n  helm: [\n",
			wantErrs: []string{"yaml: line 2: did not find expected node content"}},
		{name: "unknown top-level field", yaml: "driver:\n  helm: {}\n",
			wantErrs: []string{"line 1: driver: unknown field (want drivers)", `line 1: no "drivers" key`}},
		{name: "drivers not a mapping", yaml: "drivers: [helm]\n",
			wantErrs: []string{"line 1: drivers: want a mapping of driver names to drivers"}},
		{name: "unknown driver field", yaml: "drivers:\n  helm:\n    aply: [testdata/noop.sh]\n    operations: [upgrade]\n",
			wantErrs: []string{
				"line 3: drivers.helm.aply: unknown field (want apply, verify, probe, timeout, probe_timeout, kill_grace, operations, env, pass_env, workdir)",
				"line 2: drivers.helm.apply: required: the command that carries out an operation",
			}},
		{name: "missing operations", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n",
			wantErrs: []string{"line 2: drivers.helm.operations: required: the operation kinds apply handles (upgrade, restart, config)"}},
		{name: "unknown operation kind", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations:\n      - upgrade\n      - upgrad\n",
			wantErrs: []string{`line 6: drivers.helm.operations[1]: unknown operation kind "upgrad" (want upgrade, restart or config)`}},
		{name: "operation listed twice", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations: [restart, restart]\n",
			wantErrs: []string{"line 4: drivers.helm.operations[1]: restart is listed twice"}},
		{name: "empty operations", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations: []\n",
			wantErrs: []string{"line 4: drivers.helm.operations: want a non-empty list"}},
		{name: "bad duration", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations: [upgrade]\n    timeout: 10x\n",
			wantErrs: []string{`line 5: drivers.helm.timeout: "10x" is not a positive duration (e.g. 90s, 10m, 1h)`}},
		{name: "duration without unit", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations: [upgrade]\n    probe_timeout: 10\n",
			wantErrs: []string{`line 5: drivers.helm.probe_timeout: "10" is not a positive duration`}},
		{name: "negative duration", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations: [upgrade]\n    kill_grace: -1s\n",
			wantErrs: []string{`line 5: drivers.helm.kill_grace: "-1s" is not a positive duration`}},
		{name: "command as a string", yaml: "drivers:\n  helm:\n    apply: helm upgrade kafka\n    operations: [upgrade]\n",
			wantErrs: []string{`line 3: drivers.helm.apply: want a list (argv)`, `for a shell line write ["sh", "-c", "..."]`}},
		{name: "empty command", yaml: "drivers:\n  helm:\n    apply: []\n    operations: [upgrade]\n",
			wantErrs: []string{"line 3: drivers.helm.apply: empty command"}},
		{name: "reserved env name", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations: [upgrade]\n    env:\n      FLOTILLA_CLUSTER_ID: x\n",
			wantErrs: []string{"line 6: drivers.helm.env.FLOTILLA_CLUSTER_ID: FLOTILLA_CLUSTER_ID: FLOTILLA_ names are reserved"}},
		{name: "invalid env name", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations: [upgrade]\n    env: {1PASSWORD: x}\n",
			wantErrs: []string{`line 5: drivers.helm.env.1PASSWORD: "1PASSWORD" is not a valid environment variable name`}},
		{name: "env without value", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations: [upgrade]\n    env:\n      KUBECONFIG:\n",
			wantErrs: []string{"line 6: drivers.helm.env.KUBECONFIG: want a string"}},
		{name: "reserved pass_env name", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations: [upgrade]\n    pass_env: [HOME, FLOTILLA_BROKERS]\n",
			wantErrs: []string{"line 5: drivers.helm.pass_env[1]: FLOTILLA_BROKERS: FLOTILLA_ names are reserved"}},
		{name: "missing command", yaml: "drivers:\n  helm:\n    apply: [/no/such/helm-upgrade.sh]\n    operations: [upgrade]\n",
			wantErrs: []string{"line 3: drivers.helm.apply: /no/such/helm-upgrade.sh does not exist"}},
		{name: "command not executable", yaml: "drivers:\n  helm:\n    apply: [" + plain + "]\n    operations: [upgrade]\n",
			wantErrs: []string{"line 3: drivers.helm.apply: " + plain + " is not executable (chmod +x)"}},
		{name: "command is a directory", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    probe: [" + dir + "]\n    operations: [upgrade]\n",
			wantErrs: []string{"line 4: drivers.helm.probe: " + dir + " is a directory"}},
		{name: "program not in PATH", yaml: "drivers:\n  helm:\n    apply: [no-such-program-flotilla]\n    operations: [upgrade]\n",
			wantErrs: []string{"line 3: drivers.helm.apply: no-such-program-flotilla not found in PATH"}},
		{name: "workdir missing", yaml: "drivers:\n  helm:\n    apply: [/bin/sh]\n    operations: [upgrade]\n    workdir: /no/such/dir\n",
			wantErrs: []string{"line 5: drivers.helm.workdir: /no/such/dir is not a directory"}},
		{name: "bad driver name", yaml: "drivers:\n  helm prod:\n    apply: [testdata/noop.sh]\n    operations: [upgrade]\n",
			wantErrs: []string{"line 2: drivers.helm prod: driver name must be 1-64 letters"}},
		{name: "driver not a mapping", yaml: "drivers:\n  helm: [testdata/noop.sh]\n",
			wantErrs: []string{"line 2: drivers.helm: want a mapping (apply, operations, ...)"}},
		{name: "driver defined twice", yaml: "drivers:\n  helm: {apply: [testdata/noop.sh], operations: [upgrade]}\n  helm: {apply: [testdata/noop.sh], operations: [restart]}\n",
			wantErrs: []string{"line 3: drivers.helm: given twice (first at line 2)"}},
		{name: "field given twice", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations: [upgrade]\n    apply: [testdata/noop.sh]\n",
			wantErrs: []string{"line 5: drivers.helm.apply: given twice (first at line 3)"}},
		{name: "every problem reported", yaml: "drivers:\n  helm:\n    apply: [testdata/noop.sh]\n    operations: [upgrade, reboot]\n  ansible:\n    apply: [testdata/noop.sh]\n    operations: [restart]\n    timeout: soon\n",
			wantErrs: []string{`line 4: drivers.helm.operations[1]: unknown operation kind "reboot"`, `line 8: drivers.ansible.timeout: "soon" is not a positive duration`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := execdriver.Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded; want errors %q", tt.wantErrs)
			}
			for _, want := range tt.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error:\n%v\nwant it to contain %q", err, want)
				}
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "scripts", "upgrade.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "exec.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Relative paths are relative to the file, wherever the executor runs.
	write("drivers:\n  helm:\n    apply: [scripts/upgrade.sh]\n    operations: [upgrade]\n")
	t.Chdir(t.TempDir())
	cfg, err := execdriver.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Drivers["helm"]; got.Apply[0] != script || got.Workdir != dir {
		t.Errorf("apply %q in %s, want %s in %s", got.Apply, got.Workdir, script, dir)
	}

	write("drivers:\n  helm:\n    apply: [scripts/upgrade.sh]\n    operations: [upgrade]\n    timeout: forever\n")
	_, err = execdriver.LoadConfig(path)
	if want := "exec drivers config " + path + `: line 5: drivers.helm.timeout: "forever" is not a positive duration`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
	_, err = execdriver.LoadConfig(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml: no such file or directory") {
		t.Errorf("error %v, want the missing file named", err)
	}
}
