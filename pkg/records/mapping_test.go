package records

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// The fixtures below set every field. They take the time to use, so that a
// test can build the value it encodes (with nanoseconds, in a non-UTC zone)
// and the value it expects back (milliseconds, UTC) from the same code.

var (
	// inTime has sub-millisecond digits and a zone: what callers may pass.
	inTime = time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.FixedZone("CET", 3600))
	// outTime is what every decoder returns for it.
	outTime = inTime.Truncate(time.Millisecond).UTC()
)

func fullEnvelope(t time.Time) Envelope {
	return Envelope{ID: "6b1c7c3e-0b8e-4d8c-9a52-1f0f0c3c9e11", Time: t, Principal: "alice", CausationID: "0d9e8f7a-cause"}
}

func fullCluster() inventory.Cluster {
	return inventory.Cluster{
		ID:       "prod-eu-1",
		Labels:   map[string]string{"cloud": "azure", "kind": "kafka", "tier": "internal"},
		Driver:   "sim",
		Address:  "broker-1:9092,broker-2:9092",
		Version:  "3.8.0",
		Settings: map[string]string{"security.protocol": "SASL_SSL", "sasl.password.env": "KAFKA_PROD_PASSWORD"},
	}
}

func fullOperation() rollout.Operation {
	return rollout.Operation{Kind: rollout.Config, Version: "3.9.1", Config: map[string]string{"log.retention.ms": "604800000", "quoted \"key\"": "<&>"}, Reset: []string{"log.cleaner.threads"},
		ExpectVersion: "3.8.0", ExpectConfig: map[string]string{"log.retention.ms": "86400000"}}
}

func fullSpec() rollout.Spec {
	return rollout.Spec{
		Name:      "kafka-3.9.1",
		Operation: fullOperation(),
		Selector:  "kind=kafka,env in (prod, staging)",
		Clusters:  []string{"legacy-1", "legacy-2"},
		Phases: []rollout.Phase{
			{Name: "internal", Selector: "tier=internal", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}, MaxInFlight: 1, Bake: 10 * time.Minute, Approve: rollout.ApproveAfter, ApprovalTimeout: 24 * time.Hour},
			{Name: "azure", Selector: "cloud=azure", Waves: rollout.Waves{Mode: rollout.WavePercent, Value: 25}, MaxInFlight: 3, Bake: 90 * time.Second,
				FailureThreshold: rollout.Threshold{Percent: 20, Action: rollout.ThresholdAbort}},
			{Name: "rest", Waves: rollout.Waves{Mode: rollout.WaveExponential, Value: 1}, Bake: 1500 * time.Millisecond},
		},
		FailureThreshold: rollout.Threshold{Count: 2, Percent: 10, Action: rollout.ThresholdRollback},
		Policy:           "azure-first",
		OnConflict:       rollout.ConflictReject,
		OperationTimeout: 20 * time.Minute,
		Retries:          2,
		RetryBackoff:     30 * time.Second,
		AutoResume:       10 * time.Minute,
		UnhealthyTargets: rollout.SkipUnhealthy,
		Windows: []rollout.WindowRule{
			{Allow: []string{"Mon-Fri 09:00-17:00 Europe/Paris"}},
			{Selector: "region=eu-*", Allow: []string{"22:00-04:00 Europe/Paris"}, Deny: []string{"2026-12-20T00:00:00Z/2027-01-04T00:00:00Z"}},
		},
	}
}

func fullClusterRecord(t time.Time) ClusterRecord {
	c := fullCluster()
	c.Desired = inventory.Desired{Version: "3.9.1", Config: map[string]string{"log.retention.ms": "604800000"}}
	c.DriftIgnore = []string{"log.cleaner.threads", inventory.DriftVersionKey}
	return ClusterRecord{Envelope: fullEnvelope(t), Cluster: c}
}

func fullRequest(t time.Time) Request {
	return Request{Envelope: fullEnvelope(t), Submit: &SubmitRollout{Spec: fullSpec()}}
}

func fullWorkflowRow(t time.Time) WorkflowRecord {
	return WorkflowRecord{Envelope: fullEnvelope(t), Workflow: &Workflow{
		ID:     "wf-1",
		Spec:   fullSpec(),
		State:  WorkflowPaused,
		Reason: "2 clusters failed",
		Event:  "paused",
		Phases: []PhasePlan{
			{Name: "internal", WaveSizes: []int{2, 2, 1}, MaxInFlight: 1, Bake: 10 * time.Minute},
			{Name: "azure", WaveSizes: []int{4}, MaxInFlight: 3, Bake: 90 * time.Second, FailureThreshold: rollout.Threshold{Count: 1, Action: rollout.ThresholdRollback}},
		},
		Phase:                1,
		Wave:                 2,
		BakeUntil:            t.Add(time.Hour),
		WaitUntil:            t.Add(2 * time.Hour),
		LastControl:          "8d0f7a52-2f1b-4c8e-9f4e-3a1b2c3d4e5f",
		FailuresAcknowledged: 2,
		Gate:                 "before:azure",
		GateExpires:          t.Add(24 * time.Hour),
		Approved:             []string{"after:internal"},
		Requester:            "alice",
		Approvals:            []GateApproval{{Gate: "before:prod", Principal: "sue"}},
		PausedBy:             "threshold",
		ResumeAt:             t.Add(10 * time.Minute),
		Waiting:              "2 clusters outside their maintenance window",
		Targets:              9,
		Unplanned:            4,
		CreatedAt:            t.Add(-time.Hour),
		UpdatedAt:            t,
		Seq:                  1 << 40,
		RollbackOf:           "wf-0",
	}}
}

func fullTargetRow(t time.Time) WorkflowRecord {
	return WorkflowRecord{Envelope: fullEnvelope(t), Target: &Target{
		WorkflowID:      "wf-1",
		ClusterID:       "prod-eu-1",
		Phase:           1,
		Wave:            2,
		State:           TargetFailed,
		CommandID:       "wf-1/prod-eu-1/2",
		Attempt:         2,
		Reason:          "broker 3 did not come back",
		Unhealthy:       true,
		PreviousVersion: "3.8.0",
		Version:         "3.9.1",
		StartedAt:       t.Add(-time.Minute),
		NotBefore:       t.Add(time.Minute),
		FinishedAt:      t,
		Operation:       rollout.Operation{Kind: rollout.Upgrade, Version: "3.8.0"},
		PreviousConfig:  map[string]string{"log.retention.ms": "86400000"},
		PreviousUnset:   []string{"log.cleaner.threads"},
		Order:           3,
	}}
}

func fullSpecRow(t time.Time) WorkflowRecord {
	return WorkflowRecord{Envelope: fullEnvelope(t), Spec: &WorkflowSpec{WorkflowID: "wf-1", Spec: fullSpec()}}
}

func fullCommand(t time.Time) Command {
	return Command{
		Envelope:   fullEnvelope(t),
		ID:         "wf-1/prod-eu-1/2",
		WorkflowID: "wf-1",
		ClusterID:  "prod-eu-1",
		Attempt:    2,
		Timeout:    10 * time.Minute,
		Operation:  fullOperation(),
		Cluster:    fullCluster(),
	}
}

func fullOperationEvent(t time.Time) OperationEvent {
	return OperationEvent{
		Envelope:        fullEnvelope(t),
		CommandID:       "wf-1/prod-eu-1/2",
		WorkflowID:      "wf-1",
		ClusterID:       "prod-eu-1",
		Attempt:         2,
		Status:          OperationFailed,
		Reason:          "timeout",
		PreviousVersion: "3.8.0",
		Version:         "3.8.0",
		Output:          "line 1\nline 2 ✓\n",
		PreviousConfig:  map[string]string{"log.retention.ms": "86400000"},
		PreviousUnset:   []string{"log.cleaner.threads"},
		Deadline:        t.Add(30 * time.Minute),
		Executor:        "executor-a",
		FencingToken:    4711,
	}
}

func fullHealth(t time.Time) Health {
	return Health{
		Envelope:        fullEnvelope(t),
		ClusterID:       "prod-eu-1",
		Status:          HealthDegraded,
		PreviousStatus:  HealthHealthy,
		Reasons:         []string{"under-replicated partitions: 3", "controller moved"},
		ObservedVersion: "3.9.1",
		ObservedAt:      t,
		Heartbeat:       true,
		ConfigHash:      "9f2c",
		Details:         map[string]string{"brokers.online": "3/3"},
		Drift:           []DriftItem{{Key: "log.retention.ms", Observed: "100", Desired: "200"}, {Key: "version", Observed: "3.9.1", Desired: "3.9.2"}},
		DriftChanged:    true,
	}
}

func fullNotification(t time.Time) Notification {
	return Notification{
		Envelope:   fullEnvelope(t),
		Kind:       "workflow.paused",
		Severity:   SeverityWarning,
		WorkflowID: "wf-1",
		ClusterID:  "prod-eu-1",
		Message:    "kafka-3.9.1 paused: 2 clusters failed",
		Fields:     map[string]string{"failed": "2", "phase": "azure"},
	}
}

func fullPolicyRecord(t time.Time) PolicyRecord {
	return PolicyRecord{Envelope: fullEnvelope(t), Policy: rollout.Policy{
		Name:            "azure-first",
		Description:     "Azure first, then the rest",
		Phases:          fullSpec().Phases,
		DriftCorrection: rollout.DriftCorrection{Enabled: true, Selector: "env=staging", MaxPerHour: 4},
	}}
}

func fullClaimRecord(t time.Time) ClaimRecord {
	return ClaimRecord{Envelope: fullEnvelope(t), ClusterID: "prod-eu-1", CommandID: "wf-1/prod-eu-1/2", WorkflowID: "wf-1", CommandPartition: 5, QueuedOffset: 42, Holder: "executor-a"}
}

func fullDeadLetter(t time.Time) DeadLetter {
	return DeadLetter{Envelope: fullEnvelope(t), Service: "planner", SourceTopic: "fleet.operations", SourcePartition: 2, SourceOffset: 99,
		Key: []byte("wf-1/c1"), Value: []byte{0xc3, 0x01, 0xff}, ValueSize: 3, Reason: "unknown schema"}
}

func fullTrustPrincipal(t time.Time) TrustRecord {
	return TrustRecord{Envelope: fullEnvelope(t), Principal: &TrustPrincipal{Name: "alice", Roles: []string{"dev", "sre"},
		Keys: []TrustKey{{ID: "0f1e2d3c4b5a69788796a5b4c3d2e1f0", Public: bytes.Repeat([]byte{7}, 32), Expires: t, Revoked: t}}},
		Signature: Signature{KeyID: "fd2aa4e189f626187118d971188c429a", Value: bytes.Repeat([]byte{9}, 64)}}
}

func fullTrustRole(t time.Time) TrustRecord {
	return TrustRecord{Envelope: fullEnvelope(t), Role: &authz.Role{Name: "sre", Rules: []authz.Rule{{Name: "prod", Actions: []string{"submit", "approve"},
		Operations: []string{"upgrade"}, Selector: "env=prod", Phases: []string{"canary"}, Approvals: 2, SeparateApprover: true}}},
		Signature: Signature{KeyID: "fd2aa4e189f626187118d971188c429a", Value: bytes.Repeat([]byte{9}, 64)}}
}

func fullLeaseRecord(t time.Time) LeaseRecord {
	return LeaseRecord{Envelope: fullEnvelope(t), Partition: 3, Holder: "executor-a", RenewedAt: t, Duration: 15 * time.Second}
}

func fullCheckpoint(t time.Time) Checkpoint {
	return Checkpoint{Envelope: fullEnvelope(t), Writer: "planner", WorkflowID: "wf-1", Bucket: 1, Buckets: 2, Seq: 41,
		Head: []byte{1, 2, 3}, Entries: []ChainEntry{{Topic: "workflows", Key: "wf-1", Seq: 41, Hash: []byte{4, 5}}, {Topic: "commands", Key: "wf-1/c1", Seq: 40, Hash: []byte{6}}},
		KeyID: "0123456789abcdef", Signature: []byte{7, 8, 9}}
}

// decoders decode into any, so that tables can hold every type.
var decoders = map[string]func([]byte) (any, error){
	nameClusterRecord:  func(b []byte) (any, error) { return DecodeClusterRecord(b) },
	nameRequest:        func(b []byte) (any, error) { return DecodeRequest(b) },
	nameWorkflowRecord: func(b []byte) (any, error) { return DecodeWorkflowRecord(b) },
	nameCommand:        func(b []byte) (any, error) { return DecodeCommand(b) },
	nameOperationEvent: func(b []byte) (any, error) { return DecodeOperationEvent(b) },
	nameHealth:         func(b []byte) (any, error) { return DecodeHealth(b) },
	nameNotification:   func(b []byte) (any, error) { return DecodeNotification(b) },
	namePolicyRecord:   func(b []byte) (any, error) { return DecodePolicyRecord(b) },
	nameClaimRecord:    func(b []byte) (any, error) { return DecodeClaimRecord(b) },
	nameLeaseRecord:    func(b []byte) (any, error) { return DecodeLeaseRecord(b) },
	nameDeadLetter:     func(b []byte) (any, error) { return DecodeDeadLetter(b) },
	nameTrustRecord:    func(b []byte) (any, error) { return DecodeTrustRecord(b) },
	nameCheckpoint:     func(b []byte) (any, error) { return DecodeCheckpoint(b) },
}

// roundTrips is every record type with every field set: the value to
// encode, the value decoding must return, and its family.
var roundTrips = []struct {
	name, family string
	in, want     any
}{
	{"cluster", nameClusterRecord, fullClusterRecord(inTime), fullClusterRecord(outTime)},
	{"request", nameRequest, fullRequest(inTime), fullRequest(outTime)},
	{"workflow row", nameWorkflowRecord, fullWorkflowRow(inTime), fullWorkflowRow(outTime)},
	{"target row", nameWorkflowRecord, fullTargetRow(inTime), fullTargetRow(outTime)},
	{"spec row", nameWorkflowRecord, fullSpecRow(inTime), fullSpecRow(outTime)},
	{"command", nameCommand, fullCommand(inTime), fullCommand(outTime)},
	{"operation", nameOperationEvent, fullOperationEvent(inTime), fullOperationEvent(outTime)},
	{"health", nameHealth, fullHealth(inTime), fullHealth(outTime)},
	{"notification", nameNotification, fullNotification(inTime), fullNotification(outTime)},
	{"policy", namePolicyRecord, fullPolicyRecord(inTime), fullPolicyRecord(outTime)},
	{"claim", nameClaimRecord, fullClaimRecord(inTime), fullClaimRecord(outTime)},
	{"lease", nameLeaseRecord, fullLeaseRecord(inTime), fullLeaseRecord(outTime)},
	{"dead letter", nameDeadLetter, fullDeadLetter(inTime), fullDeadLetter(outTime)},
	{"trust principal", nameTrustRecord, fullTrustPrincipal(inTime), fullTrustPrincipal(outTime)},
	{"trust role", nameTrustRecord, fullTrustRole(inTime), fullTrustRole(outTime)},
	{"checkpoint", nameCheckpoint, fullCheckpoint(inTime), fullCheckpoint(outTime)},
}

func TestRoundTripEveryFieldSet(t *testing.T) {
	for _, tc := range roundTrips {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Encode(tc.in)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := decoders[tc.family](b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestEncodeAcceptsPointers(t *testing.T) {
	for _, tc := range roundTrips {
		t.Run(tc.name, func(t *testing.T) {
			byValue, err := Encode(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			p := reflect.New(reflect.TypeOf(tc.in))
			p.Elem().Set(reflect.ValueOf(tc.in))
			byPointer, err := Encode(p.Interface())
			if err != nil {
				t.Fatalf("Encode(%T): %v", p.Interface(), err)
			}
			got, err := decoders[tc.family](byPointer)
			if err != nil {
				t.Fatal(err)
			}
			// Map order may differ between encodings, so compare decoded values.
			if want, _ := decoders[tc.family](byValue); !reflect.DeepEqual(got, want) {
				t.Errorf("pointer and value encode differently:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// Zero values round-trip exactly: zero times stay zero (written as 0), nil
// slices and maps stay nil.
func TestRoundTripZeroValues(t *testing.T) {
	for _, in := range []any{
		ClusterRecord{},
		Request{Submit: &SubmitRollout{}},
		Request{Control: &ControlWorkflow{}},
		WorkflowRecord{Workflow: &Workflow{}},
		WorkflowRecord{Target: &Target{}},
		Command{},
		OperationEvent{},
		Health{},
		Notification{},
	} {
		b, err := Encode(in)
		if err != nil {
			t.Fatalf("Encode(%T): %v", in, err)
		}
		got, err := decoderFor(t, in)(b)
		if err != nil {
			t.Fatalf("decode %T: %v", in, err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Errorf("zero %T:\n got %+v\nwant %+v", in, got, in)
		}
	}
}

// Empty (non-nil) slices and maps decode as nil: the wire cannot tell them
// apart, and nil is the Go zero value.
func TestEmptyCollectionsDecodeAsNil(t *testing.T) {
	spec := rollout.Spec{Operation: rollout.Operation{Config: map[string]string{}}, Clusters: []string{}, Phases: []rollout.Phase{}}
	in := []any{
		ClusterRecord{Cluster: inventory.Cluster{Labels: map[string]string{}}},
		Request{Submit: &SubmitRollout{Spec: spec}},
		WorkflowRecord{Workflow: &Workflow{Spec: spec, Phases: []PhasePlan{{WaveSizes: []int{}}}}},
		Health{Reasons: []string{}},
		Notification{Fields: map[string]string{}},
	}
	want := []any{
		ClusterRecord{},
		Request{Submit: &SubmitRollout{}},
		WorkflowRecord{Workflow: &Workflow{Phases: []PhasePlan{{}}}},
		Health{},
		Notification{},
	}
	for i := range in {
		b, err := Encode(in[i])
		if err != nil {
			t.Fatalf("Encode(%T): %v", in[i], err)
		}
		got, err := decoderFor(t, in[i])(b)
		if err != nil {
			t.Fatalf("decode %T: %v", in[i], err)
		}
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("%T:\n got %+v\nwant %+v", in[i], got, want[i])
		}
	}
}

// Durations keep whole milliseconds; times keep milliseconds, in UTC.
func TestPrecision(t *testing.T) {
	epochish := time.Date(1969, 12, 31, 23, 59, 59, 999_999_999, time.UTC) // negative millis
	in := Request{Envelope: Envelope{Time: epochish}, Submit: &SubmitRollout{Spec: rollout.Spec{Phases: []rollout.Phase{{Bake: 1500*time.Microsecond + 7}}}}}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := epochish.Truncate(time.Millisecond); !got.Envelope.Time.Equal(want) || got.Envelope.Time.Location() != time.UTC {
		t.Errorf("time = %v, want %v in UTC", got.Envelope.Time, want)
	}
	if d := got.Submit.Spec.Phases[0].Bake; d != time.Millisecond {
		t.Errorf("bake = %v, want 1ms", d)
	}
}

func decoderFor(t *testing.T, v any) func([]byte) (any, error) {
	t.Helper()
	switch v.(type) {
	case ClusterRecord:
		return decoders[nameClusterRecord]
	case Request:
		return decoders[nameRequest]
	case WorkflowRecord:
		return decoders[nameWorkflowRecord]
	case Command:
		return decoders[nameCommand]
	case OperationEvent:
		return decoders[nameOperationEvent]
	case Health:
		return decoders[nameHealth]
	case Notification:
		return decoders[nameNotification]
	}
	t.Fatalf("no decoder for %T", v)
	return nil
}

func TestRoundTripControlRequest(t *testing.T) {
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	in := Request{Envelope: Envelope{ID: "r-1", Time: at, Principal: "alice"},
		Control: &ControlWorkflow{WorkflowID: "wf-1", Action: ActionApprove, Reason: "dashboards look fine", Phase: "azure"}}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRequest(b)
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, got, in)
	}
	js, err := EncodeRequestJSON(in)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeRequest(js); err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("JSON round trip of %s: %v, %+v", js, err, got)
	}
	if _, err := Encode(Request{Submit: &SubmitRollout{}, Control: &ControlWorkflow{}}); err == nil {
		t.Fatal("a request with two bodies encoded")
	}
}
