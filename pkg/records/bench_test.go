package records

import (
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// The benchmarks below measure the encoding and decoding the services do
// per record, each on two paths in the same run: direct, what Encode and
// the Decode functions do (avro_records.go), and goavro, what they did
// before (natives built by mapping.go, encoded and decoded by goavro),
// which remains the path of records of an older schema version. Compare
// them with
//
//	go test -run '^$' -bench . -benchmem ./pkg/records/

// benchRecords are records of the kinds the services write most, as they
// write them.
var benchRecords = []struct {
	name string
	v    any
	// decode and goavro decode a record of v's family, directly and with
	// goavro, returning only the error: converting the value to an
	// interface would cost an allocation neither path has.
	decode, goavro func([]byte) error
}{
	{
		name: "Command",
		v: Command{
			Envelope: Envelope{ID: "6b1c7c3e-0b8e-4d8c-9a52-1f0f0c3c9e11", Time: time.Now(), Principal: "planner"},
			ID:       "0d9e8f7a-1111-2222-3333-444455556666", WorkflowID: "wf-1", ClusterID: "prod-eu-1", Attempt: 1,
			Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"},
			Cluster:   inventory.Cluster{ID: "prod-eu-1", Driver: "sim", Version: "3.8.0", Labels: map[string]string{"env": "prod", "cloud": "aws"}},
		},
		decode: func(b []byte) error { _, err := DecodeCommand(b); return err },
		goavro: func(b []byte) error { _, err := decodeGoavro(b, nameCommand, commandFrom); return err },
	},
	{
		name: "OperationEvent",
		v: OperationEvent{
			Envelope:  Envelope{ID: "6b1c7c3e-0b8e-4d8c-9a52-1f0f0c3c9e11", Time: time.Now(), Principal: "executor"},
			CommandID: "0d9e8f7a-1111-2222-3333-444455556666", WorkflowID: "wf-1", ClusterID: "prod-eu-1", Attempt: 1,
			Status: OperationSucceeded, PreviousVersion: "3.8.0", Version: "3.9.1", Output: "upgraded",
		},
		decode: func(b []byte) error { _, err := DecodeOperationEvent(b); return err },
		goavro: func(b []byte) error { _, err := decodeGoavro(b, nameOperationEvent, operationEventFrom); return err },
	},
	{
		name:   "TargetRow",
		v:      fullTargetRow(time.Now()),
		decode: func(b []byte) error { _, err := DecodeWorkflowRecord(b); return err },
		goavro: func(b []byte) error { _, err := decodeGoavro(b, nameWorkflowRecord, workflowRecordFrom); return err },
	},
	{
		name:   "WorkflowRow",
		v:      fullWorkflowRow(time.Now()),
		decode: func(b []byte) error { _, err := DecodeWorkflowRecord(b); return err },
		goavro: func(b []byte) error { _, err := decodeGoavro(b, nameWorkflowRecord, workflowRecordFrom); return err },
	},
	{
		name:   "Health",
		v:      fullHealth(time.Now()),
		decode: func(b []byte) error { _, err := DecodeHealth(b); return err },
		goavro: func(b []byte) error { _, err := decodeGoavro(b, nameHealth, healthFrom); return err },
	},
	{
		name:   "ClusterRecord",
		v:      fullClusterRecord(time.Now()),
		decode: func(b []byte) error { _, err := DecodeClusterRecord(b); return err },
		goavro: func(b []byte) error { _, err := decodeGoavro(b, nameClusterRecord, clusterRecordFrom); return err },
	},
}

func BenchmarkEncode(b *testing.B) {
	for _, r := range benchRecords {
		b.Run(r.name+"/direct", func(b *testing.B) { benchEncode(b, Encode, r.v) })
		b.Run(r.name+"/goavro", func(b *testing.B) { benchEncode(b, encodeGoavro, r.v) })
	}
}

func benchEncode(b *testing.B, encode func(any) ([]byte, error), v any) {
	for b.Loop() {
		if _, err := encode(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, r := range benchRecords {
		v, err := Encode(r.v)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(r.name+"/direct", func(b *testing.B) { benchDecode(b, r.decode, v) })
		b.Run(r.name+"/goavro", func(b *testing.B) { benchDecode(b, r.goavro, v) })
	}
}

func benchDecode(b *testing.B, decode func([]byte) error, v []byte) {
	for b.Loop() {
		if err := decode(v); err != nil {
			b.Fatal(err)
		}
	}
}
