package records

import (
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// BenchmarkDecodeCommand and BenchmarkDecodeOperationEvent measure the
// decoding every executor and planner does per record.
func BenchmarkDecodeCommand(b *testing.B) {
	v, err := Encode(Command{
		Envelope: Envelope{ID: "6b1c7c3e-0b8e-4d8c-9a52-1f0f0c3c9e11", Time: time.Now(), Principal: "planner"},
		ID:       "0d9e8f7a-1111-2222-3333-444455556666", WorkflowID: "wf-1", ClusterID: "prod-eu-1", Attempt: 1,
		Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"},
		Cluster:   inventory.Cluster{ID: "prod-eu-1", Driver: "sim", Version: "3.8.0", Labels: map[string]string{"env": "prod", "cloud": "aws"}},
	})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := DecodeCommand(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeOperationEvent(b *testing.B) {
	v, err := Encode(OperationEvent{
		Envelope:  Envelope{ID: "6b1c7c3e-0b8e-4d8c-9a52-1f0f0c3c9e11", Time: time.Now(), Principal: "executor"},
		CommandID: "0d9e8f7a-1111-2222-3333-444455556666", WorkflowID: "wf-1", ClusterID: "prod-eu-1", Attempt: 1,
		Status: OperationSucceeded, PreviousVersion: "3.8.0", Version: "3.9.1", Output: "upgraded",
	})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := DecodeOperationEvent(v); err != nil {
			b.Fatal(err)
		}
	}
}
