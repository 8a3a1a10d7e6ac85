package records

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/schemas"
)

// rabin is CRC-64-AVRO as the Avro specification gives it, written here
// independently of goavro to check the framing.
func rabin(b []byte) uint64 {
	const empty = 0xc15d213aa4d7a795
	var table [256]uint64
	for i := range table {
		fp := uint64(i)
		for range 8 {
			fp = (fp >> 1) ^ (empty & -(fp & 1))
		}
		table[i] = fp
	}
	fp := uint64(empty)
	for _, c := range b {
		fp = (fp >> 8) ^ table[byte(fp)^c]
	}
	return fp
}

func TestRabinKnownValues(t *testing.T) {
	// Fingerprints of primitive schemas published with the Avro specification.
	for schema, want := range map[string]uint64{`"null"`: 0x63dd24e7cc258f8a, `"int"`: 0x7275d51a3f395c8f} {
		if got := rabin([]byte(schema)); got != want {
			t.Errorf("rabin(%s) = %016x, want %016x", schema, got, want)
		}
	}
}

// Each shipped schema file is pinned to its fingerprint: records written
// with it sit in compacted topics forever and are found by it. If this test
// fails, a shipped file was edited: restore it and add a new version
// instead (schemas/README.md). Only a file never released may be re-pinned.
func TestShippedSchemasArePinned(t *testing.T) {
	pinned := map[string]uint64{
		"cluster.v1.avsc":      0x53772f60ca40201f,
		"cluster.v2.avsc":      0x653ff5aeb85e9e40,
		"health.v2.avsc":       0x6c8945e1940521c3,
		"command.v1.avsc":      0xf05367ff747f284b,
		"command.v2.avsc":      0x653fb89639d88ffb,
		"operation.v2.avsc":    0xb95eacd54557cbdc,
		"request.v2.avsc":      0x2439f2bd73fc794c,
		"workflow.v2.avsc":     0x38b9954314ff8520,
		"workflow.v3.avsc":     0x179f1e8c25762901,
		"workflow.v4.avsc":     0x2852120eb40766dc,
		"policy.v1.avsc":       0x8d9090757535e902,
		"policy.v2.avsc":       0x24e6a47c8cfc24d3,
		"claim.v1.avsc":        0x0f5580a0c49d582f,
		"claim.v2.avsc":        0x3b96f00a77886fc3,
		"lease.v1.avsc":        0xba7e5d4cd5e2161e,
		"deadletter.v1.avsc":   0x6ff33dc25d3161cb,
		"operation.v3.avsc":    0x24e8602ce1b4a8ae,
		"health.v1.avsc":       0xb8b1266bfe463371,
		"notification.v1.avsc": 0x782b4e164ae48746,
		"operation.v1.avsc":    0xcd4d2202f2e4f42d,
		"request.v1.avsc":      0x76720089dd788ae2,
		"workflow.v1.avsc":     0x4010fe3cb29a39ba,
		"cluster.v3.avsc":      0x9ae5d8d5a10ba0e1,
		"request.v3.avsc":      0x972f52613d169872,
		"policy.v3.avsc":       0x650ba252e348bd3b,
		"trust.v1.avsc":        0xef877ba46774ce4a,
		"checkpoint.v1.avsc":   0x479317cfef88221f,
	}
	r, err := loadRegistry(schemas.FS)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for fp, sv := range r.byFingerprint {
		got[sv.file] = fp
	}
	for file, fp := range got {
		want, ok := pinned[file]
		if !ok {
			t.Errorf("%s (fingerprint %016x) is not pinned: add it to this test once it ships", file, fp)
		} else if fp != want {
			t.Errorf("%s: fingerprint %016x, pinned %016x: a shipped schema was edited", file, fp, want)
		}
	}
	for file := range pinned {
		if _, ok := got[file]; !ok {
			t.Errorf("%s is pinned but gone: readers must keep every version", file)
		}
	}
}

func TestFraming(t *testing.T) {
	for _, tc := range roundTrips {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Encode(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte{0xC3, 0x01}) {
				t.Fatalf("starts with % x, want c3 01", b[:2])
			}
			w := reg.Load().writer[tc.family]
			want := rabin([]byte(w.codec.CanonicalSchema()))
			if got := binary.LittleEndian.Uint64(b[2:10]); got != want {
				t.Errorf("fingerprint %016x, want CRC-64-AVRO of the canonical form %016x", got, want)
			}
			// The body is plain Avro binary of the schema.
			if _, rest, err := w.codec.NativeFromBinary(b[10:]); err != nil || len(rest) != 0 {
				t.Errorf("body: %v, %d bytes left", err, len(rest))
			}
		})
	}
}

// healthV2 is health.v1.avsc with a field added.
func healthV2(t *testing.T) (v1, v2 []byte) {
	t.Helper()
	v1, err := schemas.FS.ReadFile("health.v1.avsc")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(v1), `{"name": "heartbeat"`, `{"name": "zone", "type": "string", "default": ""}, {"name": "heartbeat"`, 1)
	if s == string(v1) {
		t.Fatal("health.v1.avsc has no heartbeat field to add one before")
	}
	return v1, []byte(s)
}

func TestWriterIsNewestVersion(t *testing.T) {
	v1, v2 := healthV2(t)
	r, err := loadRegistry(fstest.MapFS{
		"health.v2.avsc": {Data: v2},
		"health.v1.avsc": {Data: v1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if w := r.writer[nameHealth]; w.file != "health.v2.avsc" {
		t.Errorf("writer %s, want health.v2.avsc", w.file)
	}
	if len(r.byFingerprint) != 2 {
		t.Errorf("%d versions registered, want both", len(r.byFingerprint))
	}
}

func TestLoadRegistryRefusesBadSchemaSets(t *testing.T) {
	health, healthNext := healthV2(t)
	command, _ := schemas.FS.ReadFile("command.v1.avsc")
	docOnly := strings.Replace(string(health), `"doc": "Set on`, `"doc": "Now set on`, 1)
	for _, tc := range []struct {
		name  string
		files fstest.MapFS
		want  string
	}{
		{"bad file name", fstest.MapFS{"health.avsc": {Data: health}}, "name must be <family>.v<version>.avsc"},
		{"invalid schema", fstest.MapFS{"health.v1.avsc": {Data: []byte(`{"type": "record", "name": "Health"}`)}}, "health.v1.avsc"},
		{"not a record", fstest.MapFS{"health.v1.avsc": {Data: []byte(`"string"`)}}, "want a record"},
		{"same fingerprint", fstest.MapFS{"health.v1.avsc": {Data: health}, "health.v2.avsc": {Data: []byte(docOnly)}}, "same fingerprint"},
		{"family changes record", fstest.MapFS{"health.v1.avsc": {Data: health}, "health.v2.avsc": {Data: command}}, "different records"},
		{"record in two families", fstest.MapFS{"health.v1.avsc": {Data: health}, "state.v1.avsc": {Data: healthNext}}, "record flotilla.Health in two families"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadRegistry(tc.files)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	health, err := Encode(fullHealth(inTime))
	if err != nil {
		t.Fatal(err)
	}
	unknown := append([]byte{0xC3, 0x01, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01}, health[10:]...)
	badUnion, err := Encode(fullTargetRow(inTime))
	if err != nil {
		t.Fatal(err)
	}
	// The union index follows the envelope; corrupt it to 5 (zigzag 10).
	envelope := mustEncodeEnvelopeOnly(t)
	badUnion[10+len(envelope)] = 10
	// A request whose spec.clusters declares 2^30 items: goavro would
	// allocate room for them all before reading one.
	request, err := Encode(Request{Submit: &SubmitRollout{}})
	if err != nil {
		t.Fatal(err)
	}
	hugeArray := append(bytes.Clone(request[:10]), envelope...)
	hugeArray = append(hugeArray,
		0,          // union member 0, SubmitRollout
		0,          // spec.name ""
		0, 0, 0, 0, // operation: kind "", version "", config {}, reset []
		0,                            // selector ""
		0x80, 0x80, 0x80, 0x80, 0x08, // clusters: block of 1<<30 items
	)

	for _, tc := range []struct {
		name    string
		family  string
		in      []byte
		is      error
		message string
	}{
		{"empty (tombstone)", nameHealth, nil, ErrNotSingleObject, "empty value"},
		{"shorter than the header", nameHealth, health[:9], ErrNotSingleObject, "9 bytes, shorter than the 10-byte header"},
		{"wrong magic", nameCommand, append([]byte{0xC3, 0x02}, health[2:]...), ErrNotSingleObject, "starts with c3 02, want c3 01"},
		{"json on a binary topic", nameHealth, []byte(`{"envelope": {}}`), ErrNotSingleObject, "starts with 7b 22"},
		{"unknown fingerprint", nameHealth, unknown, ErrUnknownSchema, "fingerprint 0123456789abcdef"},
		{"health decoded as command", nameCommand, health, ErrWrongSchema, "record is a flotilla.Health, want flotilla.Command"},
		{"health decoded as request", nameRequest, health, ErrWrongSchema, "record is a flotilla.Health, want flotilla.Request"},
		{"truncated body", nameHealth, health[:len(health)-3], ErrMalformed, `decode flotilla.Health (health.v2.avsc): malformed record: drift[1].desired: truncated`},
		{"trailing bytes", nameHealth, append(bytes.Clone(health), 0, 0), ErrMalformed, "2 bytes after the end of the record"},
		{"union index out of range", nameWorkflowRecord, badUnion, ErrMalformed, "index ought to be between 0 and 2"},
		{"header only", nameHealth, health[:10], ErrMalformed, "malformed record"},
		{"huge array count", nameRequest, hugeArray, ErrMalformed, "block count exceeds MaxBlockCount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decoders[tc.family](tc.in)
			if !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("err = %q, want it to say %q", err, tc.message)
			}
			if !reflect.ValueOf(got).IsZero() {
				t.Errorf("returned %+v with the error, want the zero value", got)
			}
		})
	}
}

// mustEncodeEnvelopeOnly returns the Avro binary of fullEnvelope(inTime)
// alone, to find where the field after it starts.
func mustEncodeEnvelopeOnly(t *testing.T) []byte {
	t.Helper()
	c, err := goavro.NewCodec(`{"type": "record", "name": "E", "fields": [
		{"name": "id", "type": "string"}, {"name": "time", "type": "long"},
		{"name": "principal", "type": "string"}, {"name": "causation_id", "type": "string"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.BinaryFromNative(nil, envelopeNative(fullEnvelope(inTime)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every prefix of a valid record fails with a typed error and no panic.
func TestTruncatedRecordsFail(t *testing.T) {
	for _, tc := range roundTrips {
		b, err := Encode(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(b) {
			_, err := decoders[tc.family](b[:n])
			if !errors.Is(err, ErrNotSingleObject) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s cut to %d of %d bytes: err = %v", tc.name, n, len(b), err)
			}
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
		want string
	}{
		{"not a record type", "hello", "encode: string is not a record type"},
		{"nil pointer", (*Health)(nil), "encode: nil *records.Health"},
		{"request without body", Request{}, "encode flotilla.Request: request has no body"},
		{"workflow record with no row", WorkflowRecord{}, "none of Workflow, Target and Spec"},
		{"workflow record with two rows", WorkflowRecord{Workflow: &Workflow{}, Target: &Target{}}, "more than one of Workflow, Target and Spec"},
		{"int beyond 32 bits", Command{Attempt: 1 << 40}, `field "attempt"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Encode(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Encode = %x, %v; want an error saying %q", b, err, tc.want)
			}
		})
	}
}

// The test-only older versions in testdata/ are registered once per
// process: registering the same fingerprint twice is refused.
var registerOld = sync.OnceValue(func() error {
	for _, f := range []string{"health.v0.avsc", "request.v0.avsc"} {
		data, err := os.ReadFile("testdata/" + f)
		if err != nil {
			return err
		}
		if err := registerSchema(f, data); err != nil {
			return err
		}
	}
	return nil
})

// encodeWith encodes a native with a registered schema version.
func encodeWith(t *testing.T, file string, native map[string]any) []byte {
	t.Helper()
	if err := registerOld(); err != nil {
		t.Fatal(err)
	}
	for _, sv := range reg.Load().byFingerprint {
		if sv.file == file {
			b, err := sv.codec.SingleFromNative(nil, native)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("%s is not registered", file)
	return nil
}

// A record written with an older schema version decodes with today's code,
// the fields it lacks taking the newest version's defaults.
func TestDecodeOlderVersionFillsDefaults(t *testing.T) {
	t.Run("health", func(t *testing.T) {
		b := encodeWith(t, "health.v0.avsc", map[string]any{
			"envelope":         envelopeNative(fullEnvelope(inTime)),
			"cluster_id":       "prod-eu-1",
			"status":           "healthy",
			"observed_version": "3.9.1",
			"observed_at":      millis(inTime),
		})
		got, err := DecodeHealth(b)
		if err != nil {
			t.Fatal(err)
		}
		want := Health{
			Envelope:        fullEnvelope(outTime),
			ClusterID:       "prod-eu-1",
			Status:          HealthHealthy,
			PreviousStatus:  HealthUnknown, // the default of health.v1
			ObservedVersion: "3.9.1",
			ObservedAt:      outTime,
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
	})
	t.Run("request, nested records", func(t *testing.T) {
		b := encodeWith(t, "request.v0.avsc", map[string]any{
			"envelope": map[string]any{"id": "r-1", "time": millis(inTime), "principal": "bob"},
			"body": map[string]any{memberSubmitRollout: map[string]any{"spec": map[string]any{
				"name":      "restart-all",
				"operation": map[string]any{"kind": "restart"},
				"selector":  "kind=kafka",
				"phases":    []any{map[string]any{"name": "first", "bake_ms": int64(60000)}, map[string]any{"name": "rest"}},
			}}},
		})
		got, err := DecodeRequest(b)
		if err != nil {
			t.Fatal(err)
		}
		want := Request{
			Envelope: Envelope{ID: "r-1", Time: outTime, Principal: "bob"},
			Submit: &SubmitRollout{Spec: rollout.Spec{
				Name:      "restart-all",
				Operation: rollout.Operation{Kind: rollout.Restart},
				Selector:  "kind=kafka",
				Phases:    []rollout.Phase{{Name: "first", Bake: time.Minute}, {Name: "rest"}},
			}},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
	})
	t.Run("writer stays the newest", func(t *testing.T) {
		if err := registerOld(); err != nil {
			t.Fatal(err)
		}
		b, err := Encode(Health{})
		if err != nil {
			t.Fatal(err)
		}
		if fp := binary.LittleEndian.Uint64(b[2:10]); reg.Load().byFingerprint[fp].file != "health.v2.avsc" {
			t.Errorf("Encode wrote %s", reg.Load().byFingerprint[fp].file)
		}
	})
}

// TestDecodeVersion1Records checks that records written with the first
// version of each changed schema still decode, the fields added since
// taking their defaults: compacted topics hold them forever.
func TestDecodeVersion1Records(t *testing.T) {
	v1 := func(file string, native map[string]any) []byte {
		t.Helper()
		data, err := schemas.FS.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		c, err := goavro.NewCodec(string(data))
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.SingleFromNative(nil, native) // fields v1 lacks are ignored
		if err != nil {
			t.Fatalf("encode with %s: %v", file, err)
		}
		return b
	}
	// What v1 could hold: the full records without the fields added in v2.
	oldSpec := func(s rollout.Spec) rollout.Spec {
		s.Operation.Reset, s.Operation.ExpectVersion, s.Operation.ExpectConfig, s.Policy = nil, "", nil, ""
		s.FailureThreshold.Action = ""
		for i := range s.Phases {
			s.Phases[i].FailureThreshold = rollout.Threshold{}
		}
		return s
	}

	req := fullRequest(inTime)
	req.Submit.Spec = oldSpec(req.Submit.Spec)
	native, err := requestNative(req)
	if err != nil {
		t.Fatal(err)
	}
	gotReq, err := DecodeRequest(v1("request.v1.avsc", native))
	wantReq := fullRequest(outTime)
	wantReq.Submit.Spec = oldSpec(wantReq.Submit.Spec)
	if err != nil || !reflect.DeepEqual(gotReq, wantReq) {
		t.Errorf("request v1: %v\n got %+v\nwant %+v", err, gotReq, wantReq)
	}

	strip := func(r WorkflowRecord) WorkflowRecord {
		if w := r.Workflow; w != nil {
			w.Spec, w.RollbackOf, w.Unplanned, w.Requester, w.Approvals = oldSpec(w.Spec), "", 0, "", nil
			for i := range w.Phases {
				w.Phases[i].FailureThreshold = rollout.Threshold{}
			}
		}
		if tg := r.Target; tg != nil {
			tg.Operation, tg.PreviousConfig, tg.PreviousUnset, tg.Order = rollout.Operation{}, nil, nil, 0
		}
		return r
	}
	for _, full := range []func(time.Time) WorkflowRecord{fullWorkflowRow, fullTargetRow} {
		native, err := workflowRecordNative(strip(full(inTime)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeWorkflowRecord(v1("workflow.v1.avsc", native))
		if want := strip(full(outTime)); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("workflow v1: %v\n got %+v %+v %+v\nwant %+v %+v %+v", err, got, got.Workflow, got.Target, want, want.Workflow, want.Target)
		}
	}

	ev := fullOperationEvent(inTime)
	ev.PreviousConfig, ev.PreviousUnset, ev.Deadline, ev.Executor, ev.FencingToken = nil, nil, time.Time{}, "", 0
	gotEv, err := DecodeOperationEvent(v1("operation.v1.avsc", operationEventNative(ev)))
	wantEv := fullOperationEvent(outTime)
	wantEv.PreviousConfig, wantEv.PreviousUnset, wantEv.Deadline, wantEv.Executor, wantEv.FencingToken = nil, nil, time.Time{}, "", 0
	if err != nil || !reflect.DeepEqual(gotEv, wantEv) {
		t.Errorf("operation v1: %v\n got %+v\nwant %+v", err, gotEv, wantEv)
	}

	// A claim written before v2 keeps its place by its own offset.
	cl := fullClaimRecord(inTime)
	cl.QueuedOffset, cl.Holder = 0, ""
	gotClaim, err := DecodeClaimRecord(v1("claim.v1.avsc", claimRecordNative(cl)))
	wantClaim := fullClaimRecord(outTime)
	wantClaim.QueuedOffset, wantClaim.Holder = -1, ""
	if err != nil || !reflect.DeepEqual(gotClaim, wantClaim) {
		t.Errorf("claim v1: %v\n got %+v\nwant %+v", err, gotClaim, wantClaim)
	}

	// Health and inventory records written before drift detection.
	h := fullHealth(inTime)
	h.Drift, h.DriftChanged = nil, false
	gotHealth, err := DecodeHealth(v1("health.v1.avsc", healthNative(h)))
	wantHealth := fullHealth(outTime)
	wantHealth.Drift, wantHealth.DriftChanged = nil, false
	if err != nil || !reflect.DeepEqual(gotHealth, wantHealth) {
		t.Errorf("health v1: %v\n got %+v\nwant %+v", err, gotHealth, wantHealth)
	}
	pol := fullPolicyRecord(inTime)
	pol.Policy.DriftCorrection = rollout.DriftCorrection{}
	gotPolicy, err := DecodePolicyRecord(v1("policy.v1.avsc", policyRecordNative(pol)))
	wantPolicy := fullPolicyRecord(outTime)
	wantPolicy.Policy.DriftCorrection = rollout.DriftCorrection{}
	if err != nil || !reflect.DeepEqual(gotPolicy, wantPolicy) {
		t.Errorf("policy v1: %v\n got %+v\nwant %+v", err, gotPolicy, wantPolicy)
	}
	c := fullClusterRecord(inTime)
	c.Cluster.Desired, c.Cluster.DriftIgnore = inventory.Desired{}, nil
	gotCluster, err := DecodeClusterRecord(v1("cluster.v1.avsc", clusterRecordNative(c)))
	wantCluster := fullClusterRecord(outTime)
	wantCluster.Cluster.Desired, wantCluster.Cluster.DriftIgnore = inventory.Desired{}, nil
	if err != nil || !reflect.DeepEqual(gotCluster, wantCluster) {
		t.Errorf("cluster v1: %v\n got %+v\nwant %+v", err, gotCluster, wantCluster)
	}

	cmd := fullCommand(inTime)
	cmd.Operation.Reset, cmd.Operation.ExpectVersion, cmd.Operation.ExpectConfig = nil, "", nil
	gotCmd, err := DecodeCommand(v1("command.v1.avsc", commandNative(cmd)))
	wantCmd := fullCommand(outTime)
	wantCmd.Operation.Reset, wantCmd.Operation.ExpectVersion, wantCmd.Operation.ExpectConfig = nil, "", nil
	if err != nil || !reflect.DeepEqual(gotCmd, wantCmd) {
		t.Errorf("command v1: %v\n got %+v\nwant %+v", err, gotCmd, wantCmd)
	}
}
