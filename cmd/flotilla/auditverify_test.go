package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// TestCLIAuditVerifyAndAnErasedRequest runs a rollout under signing
// services, verifies the log with the services' public keys, then erases
// the rollout's request with a tombstone: verify names it, and the
// timeline still shows who asked, from the workflow's copy.
func TestCLIAuditVerifyAndAnErasedRequest(t *testing.T) {
	dir := t.TempDir()
	planner, err := keys.WriteKeyPair(filepath.Join(dir, "planner"))
	if err != nil {
		t.Fatal(err)
	}
	executor, err := keys.WriteKeyPair(filepath.Join(dir, "executor"))
	if err != nil {
		t.Fatal(err)
	}
	f := fleettest.Start(t, fleettest.Options{Clusters: 4, PlannerKey: &planner, ExecutorKey: &executor, Brokers: brokertest.ForCompaction(t)})
	id := f.Submit(rollout.Spec{Name: "restart two", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{f.Clusters[0].ID, f.Clusters[1].ID}})
	f.Await(id, time.Second, time.Minute, "the rollout finishing", func(w *decide.Workflow) bool { return w.State.Terminal() })

	var out string
	if !f.Eventually(0, 30*time.Second, func() bool {
		out, err = run(t, f, "audit", "verify", "--service-key", "planner="+filepath.Join(dir, "planner.pub"), "--service-key", "executor="+filepath.Join(dir, "executor.pub"))
		return err == nil && !strings.Contains(out, "newer than their chain's last checkpoint")
	}) {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	if !strings.HasPrefix(out, "ok: ") || !strings.Contains(out, planner.ID) || !strings.Contains(out, executor.ID) {
		t.Fatalf("audit verify printed %q, want ok and both services' key IDs", out)
	}
	if out, err := run(t, f, "audit", "verify", "--workflow", id, "--service-keys", dir); err != nil || !strings.Contains(out, "ok: ") {
		t.Fatalf("audit verify --workflow: %v\n%s", err, out)
	}

	// Twice: the embedded broker never compacts a partition's last batch,
	// so the second lets the first remove the request's record.
	for range 2 {
		f.Produce(&kgo.Record{Topic: f.Backbone.Names().Requests, Key: []byte(id)})
	}
	f.Compact()
	out, err = run(t, f, "audit", "verify", "--service-keys", dir)
	if err == nil || !strings.Contains(out, "erased by a tombstone at offset") || !strings.Contains(out, "the workflow's copy") {
		t.Fatalf("audit verify after the request's erasure: %v\n%s", err, out)
	}
	out, err = run(t, f, "audit", "--workflow", id)
	// On a real Kafka, whose cleaner runs when it will, the request's
	// record may still be there, then shown with its erasure.
	shown := strings.Contains(out, "from the workflow's copy") || os.Getenv("FLOTILLA_TEST_BROKERS") != "" && strings.Contains(out, "erased by a tombstone")
	if err != nil || !strings.Contains(out, "asked for rollout \"restart two\"") || !shown {
		t.Fatalf("audit timeline after the request's erasure: %v\n%s", err, out)
	}
}
