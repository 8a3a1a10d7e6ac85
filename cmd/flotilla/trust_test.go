package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
)

// TestCLISignedRequests: keys made with the CLI, a trust store kept with
// it, and requests it signs (or not), against services that require
// signatures.
func TestCLISignedRequests(t *testing.T) {
	dir := t.TempDir()
	file := func(name string) string { return filepath.Join(dir, name) }
	var fleet *fleettest.Fleet
	cli := func(args ...string) string {
		t.Helper()
		out, err := run(t, fleet, args...)
		if err != nil {
			t.Fatalf("flotilla %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	generate := func(name string) string {
		t.Helper()
		var out bytes.Buffer
		cmd := rootCommand()
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"keys", "generate", "--out", file(name)})
		if err := cmd.Execute(); err != nil || !strings.Contains(out.String(), "private key "+file(name)) {
			t.Fatalf("keys generate: %v\n%s", err, out.String())
		}
		return out.String()
	}
	for _, name := range []string{"admin", "ops", "alice"} {
		generate(name)
	}
	root, err := keys.LoadPublic(file("admin.pub"))
	if err != nil {
		t.Fatal(err)
	}
	ops, err := keys.LoadSigner(file("ops"))
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{
		"ops.yaml": "name: ops\nrules:\n  - name: inventory\n    actions: [inventory, policy]\n",
		"dev.yaml": "name: dev\nrules:\n  - name: off-prod\n    actions: [\"*\"]\n    selector: env!=prod\n",
	}
	for name, text := range roles {
		if err := os.WriteFile(file(name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fleet = fleettest.Start(t, fleettest.Options{Clusters: 20, Trust: trust.Config{Require: true, Root: root}, Operator: ops, OperatorName: "ops",
		Setup: func(f *fleettest.Fleet) {
			fleet = f
			cli("trust", "role", "-f", file("ops.yaml"), "--admin-key", file("admin"))
			cli("trust", "role", "-f", file("dev.yaml"), "--admin-key", file("admin"))
			cli("trust", "add", "ops", "--public-key", file("ops.pub"), "--roles", "ops", "--admin-key", file("admin"))
			cli("trust", "add", "alice", "--public-key", file("alice.pub"), "--roles", "dev", "--admin-key", file("admin"))
		}})
	out := cli("trust", "list", "--trust-root", file("admin.pub"))
	if !strings.Contains(out, "principal/alice") || !strings.Contains(out, `rule "off-prod": * on env!=prod`) || strings.Contains(out, "IGNORED") {
		t.Errorf("trust list:\n%s", out)
	}
	spec := file("dev.yaml.spec")
	if err := os.WriteFile(spec, []byte("name: dev-up\noperation: {type: upgrade, version: 3.9.1}\nselector: env=dev\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLOTILLA_PRINCIPAL", "alice")
	if out := cli("rollout", "submit", "-f", spec, "--key", file("alice")); !strings.Contains(out, `rollout "dev-up" accepted`) {
		t.Errorf("a signed submit: %s", out)
	}
	out, err = run(t, fleet, "rollout", "submit", "-f", spec)
	if err == nil || !strings.Contains(err.Error(), "by alice refused: not signed") {
		t.Errorf("an unsigned submit: %v\n%s", err, out)
	}
	// Revoked, alice's key signs nothing more.
	id := strings.TrimPrefix(strings.Split(generate("spare"), ":")[0], "key ")
	cli("trust", "add", "alice", "--public-key", file("spare.pub"), "--admin-key", file("admin"))
	aliceID := keyID(t, file("alice.pub"))
	cli("trust", "revoke", "alice", aliceID, "--admin-key", file("admin"))
	if !fleet.Eventually(0, 10*time.Second, func() bool {
		_, err := run(t, fleet, "rollout", "submit", "-f", spec, "--key", file("alice"))
		return err != nil && strings.Contains(err.Error(), "signed with key "+aliceID+" of alice, revoked at")
	}) {
		t.Error("a request signed with a revoked key was not refused as such")
	}
	if out := cli("rollout", "submit", "-f", spec, "--key", file("spare")); !strings.Contains(out, "accepted") {
		t.Errorf("a submit signed with alice's other key (%s): %s", id, out)
	}
}

func keyID(t *testing.T, pubFile string) string {
	t.Helper()
	pub, err := keys.LoadPublic(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	return keys.ID(pub)
}
