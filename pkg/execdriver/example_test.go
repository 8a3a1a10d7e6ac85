package execdriver_test

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/execdriver"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// sshStub stands in for ssh to the brokers: it logs each call as
// "user@host command", and answers like a healthy broker, except for hosts
// listed in $STUBS/down (inactive) and a host named in $STUBS/fail-restart
// (its next restart fails, once).
const sshStub = `#!/bin/sh
while [ "$1" = -o ]; do shift 2; done
target=$1; shift
echo "$target $*" >> "$STUBS/ssh.log"
host=${target#*@}
case "$*" in
"systemctl is-active"*)
	if grep -qx "$host" "$STUBS/down" 2>/dev/null; then echo inactive; exit 3; fi
	echo active ;;
"sudo systemctl restart"*)
	if [ "$(cat "$STUBS/fail-restart" 2>/dev/null)" = "$host" ]; then
		rm "$STUBS/fail-restart"; echo "Connection to $host closed by remote host." >&2; exit 255
	fi ;;
"ls /opt/kafka/libs") printf 'kafka-clients-3.9.1.jar\nkafka_2.13-3.9.1.jar\n' ;;
esac
`

// TestExampleRollingRestart runs examples/scripts/rolling-restart.sh, as
// examples/exec-drivers.yaml configures it, against stubs of ssh and
// kafka-topics.sh: it shows the idempotence contract at work.
func TestExampleRollingRestart(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("the example script needs bash")
	}
	cfg, err := execdriver.LoadConfig("../../examples/exec-drivers.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Names(), []string{"strimzi", "vm-kafka"}; !slices.Equal(got, want) {
		t.Fatalf("example drivers %v, want %v", got, want)
	}

	stubs := t.TempDir()
	for name, body := range map[string]string{"ssh": sshStub, "kafka-topics.sh": "#!/bin/sh\nexit 0\n"} {
		if err := os.WriteFile(filepath.Join(stubs, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dc := cfg.Drivers["vm-kafka"]
	dc.Env = maps.Clone(dc.Env)
	dc.Env["PATH"] = stubs + ":" + os.Getenv("PATH")
	dc.Env["KAFKA_BIN"] = stubs
	dc.Env["RESTART_STATE_DIR"] = t.TempDir()
	dc.Env["STUBS"] = stubs
	cfg.Drivers["vm-kafka"] = dc
	reg := drivers.NewRegistry()
	cfg.Register(reg)
	d, err := reg.Driver("vm-kafka")
	if err != nil {
		t.Fatal(err)
	}
	p, err := reg.Prober("vm-kafka")
	if err != nil {
		t.Fatal(err)
	}

	c := inventory.Cluster{ID: "prod-eu-1", Driver: "vm-kafka", Address: "k1:9092", Version: "3.9.1",
		Settings: map[string]string{"brokers": "k1,k2,k3"}}
	apply := func(commandID string, op rollout.Operation) (drivers.Result, error) {
		return d.Apply(context.Background(), drivers.Request{CommandID: commandID, Cluster: c, Operation: op})
	}
	restarts := func() []string {
		data, _ := os.ReadFile(filepath.Join(stubs, "ssh.log"))
		var hosts []string
		for _, line := range strings.Split(string(data), "\n") {
			if target, ok := strings.CutSuffix(line, " sudo systemctl restart kafka"); ok {
				hosts = append(hosts, target)
			}
		}
		os.Remove(filepath.Join(stubs, "ssh.log"))
		return hosts
	}
	restart := rollout.Operation{Kind: rollout.Restart}

	// The restart of k2 fails: the operation fails, k1 was restarted.
	if err := os.WriteFile(filepath.Join(stubs, "fail-restart"), []byte("k2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = apply("cmd-1", restart)
	if want := "rolling-restart.sh exited with status 1 on prod-eu-1: k2: systemctl restart kafka failed"; err == nil || err.Error() != want {
		t.Fatalf("first attempt: %v, want %q", err, want)
	}
	if got, want := restarts(), []string{"kafka@k1", "kafka@k2"}; !slices.Equal(got, want) {
		t.Fatalf("first attempt restarted %v, want %v", got, want)
	}

	// The executor retries the same command: k1 is not restarted again.
	res, err := apply("cmd-1", restart)
	if err != nil {
		t.Fatalf("retry: %v\n%s", err, res.Output)
	}
	if got, want := restarts(), []string{"kafka@k2", "kafka@k3"}; !slices.Equal(got, want) {
		t.Errorf("retry restarted %v, want %v", got, want)
	}
	if !strings.Contains(res.Output, "k1: already restarted by command cmd-1") || !strings.Contains(res.Output, "--- verify: rolling-restart.sh ---") {
		t.Errorf("retry output:\n%s", res.Output)
	}
	if res.Version != "3.9.1" || res.PreviousVersion != "3.9.1" {
		t.Errorf("versions %q → %q, want 3.9.1 → 3.9.1", res.PreviousVersion, res.Version)
	}

	// Done is done; a new command restarts every broker.
	if _, err := apply("cmd-1", restart); err != nil {
		t.Fatal(err)
	}
	if got := restarts(); len(got) != 0 {
		t.Errorf("a third attempt at cmd-1 restarted %v", got)
	}
	if _, err := apply("cmd-2", restart); err != nil {
		t.Fatal(err)
	}
	if got, want := restarts(), []string{"kafka@k1", "kafka@k2", "kafka@k3"}; !slices.Equal(got, want) {
		t.Errorf("cmd-2 restarted %v, want %v", got, want)
	}

	// The driver handles restarts only.
	if _, err := apply("cmd-3", rollout.Operation{Kind: rollout.Upgrade, Version: "4.0.0"}); err == nil ||
		!strings.Contains(err.Error(), `exec driver vm-kafka does not handle "upgrade" operations (it handles restart)`) {
		t.Errorf("upgrade: %v", err)
	}

	// Probes.
	obs, err := p.Probe(context.Background(), c)
	if err != nil || obs.Status != records.HealthHealthy || obs.Version != "3.9.1" || obs.Details["brokers"] != "3" || len(obs.Reasons) != 0 {
		t.Errorf("probe of a healthy cluster: %+v, %v", obs, err)
	}
	if err := os.WriteFile(filepath.Join(stubs, "down"), []byte("k2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	obs, err = p.Probe(context.Background(), c)
	if err != nil || obs.Status != records.HealthDegraded || !slices.Equal(obs.Reasons, []string{"brokers down: k2"}) || obs.Details["down"] != "1" {
		t.Errorf("probe with a broker down: %+v, %v", obs, err)
	}

	// Inventory values are data: a host that would inject shell is refused.
	c.Settings = map[string]string{"brokers": "k1,k2;reboot"}
	if _, err := apply("cmd-4", restart); err == nil || !strings.Contains(err.Error(), `exited with status 64 on prod-eu-1: broker host "k2;reboot" has characters this script refuses`) {
		t.Errorf("injection attempt: %v", err)
	}
	if got := restarts(); len(got) != 0 {
		t.Errorf("injection attempt restarted %v", got)
	}
}
