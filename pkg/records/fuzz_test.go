package records

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"github.com/flotilla-fleet/flotilla/internal/fuzzcorpus"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// The fuzz targets below feed each Decode function anything a producer
// could write to its topic. Beyond never panicking, each checks that:
//
//   - a value that fails to decode fails with the zero value, a message
//     naming the record, and exactly the sentinel error its bytes call for
//     (ErrNotSingleObject, ErrUnknownSchema, ErrWrongSchema or
//     ErrMalformed);
//   - a value that decodes encodes again, and decodes to the same value:
//     what a service reads it can store and read back;
//   - the decoded value does not share memory with the input, which the
//     consumer may reuse;
//   - decoding allocates memory in proportion to the input, whatever
//     counts and lengths it declares;
//   - the goavro path (the oracle of avro_test.go) agrees: it decodes the
//     same value, or fails with the same sentinel error; and what Encode
//     writes for the value is what goavro writes.
//
// The seed corpora are under testdata/fuzz/<target>/: every record type
// encoded with every schema version this build has, JSON requests, and
// truncated and corrupt variants of them. Rewrite them with
//
//	go test ./pkg/records -run TestWriteFuzzCorpus -write-fuzz-corpus

var writeFuzzCorpus = flag.Bool("write-fuzz-corpus", false, "rewrite the seed corpora under testdata/fuzz")

func FuzzDecodeClusterRecord(f *testing.F) { fuzzDecode(f, nameClusterRecord, DecodeClusterRecord) }
func FuzzDecodeWorkflowRecord(f *testing.F) {
	fuzzDecode(f, nameWorkflowRecord, DecodeWorkflowRecord)
}
func FuzzDecodeCommand(f *testing.F) { fuzzDecode(f, nameCommand, DecodeCommand) }
func FuzzDecodeOperationEvent(f *testing.F) {
	fuzzDecode(f, nameOperationEvent, DecodeOperationEvent)
}
func FuzzDecodeHealth(f *testing.F)       { fuzzDecode(f, nameHealth, DecodeHealth) }
func FuzzDecodeNotification(f *testing.F) { fuzzDecode(f, nameNotification, DecodeNotification) }
func FuzzDecodePolicyRecord(f *testing.F) { fuzzDecode(f, namePolicyRecord, DecodePolicyRecord) }
func FuzzDecodeClaimRecord(f *testing.F)  { fuzzDecode(f, nameClaimRecord, DecodeClaimRecord) }
func FuzzDecodeLeaseRecord(f *testing.F)  { fuzzDecode(f, nameLeaseRecord, DecodeLeaseRecord) }
func FuzzDecodeDeadLetter(f *testing.F)   { fuzzDecode(f, nameDeadLetter, DecodeDeadLetter) }
func FuzzDecodeTrustRecord(f *testing.F)  { fuzzDecode(f, nameTrustRecord, DecodeTrustRecord) }
func FuzzDecodeCheckpoint(f *testing.F)   { fuzzDecode(f, nameCheckpoint, DecodeCheckpoint) }

// FuzzDecodeRequest feeds DecodeRequest anything a producer could write to
// fleet.requests, binary or JSON. Whatever it accepts must also encode as
// Avro JSON (EncodeRequestJSON, the form any Kafka client may produce) and
// decode from it to the same request, and that JSON must be stable.
func FuzzDecodeRequest(f *testing.F) {
	fuzzDecode(f, nameRequest, DecodeRequest, checkRequestJSON)
}

// FuzzDecodeRequestJSON is FuzzDecodeRequest seeded with JSON requests
// only (examples/request-upgrade.json and the like), so that the fuzzer
// spends its time on the Avro JSON path.
func FuzzDecodeRequestJSON(f *testing.F) {
	fuzzDecode(f, nameRequest, DecodeRequest, checkRequestJSON)
}

func fuzzDecode[T any](f *testing.F, family string, decode func([]byte) (T, error), more ...func(*testing.T, T)) {
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		var (
			v   T
			err error
		)
		if n, limit := allocated(func() { v, err = decode(in) }), allocLimit(len(b)); n > limit {
			t.Fatalf("decoding %d bytes allocated %d bytes, more than %d (err = %v)", len(b), n, limit, err)
		}
		slow, slowErr := goavroDecoders[family](b)
		if err != nil {
			checkDecodeError(t, family, b, v, err)
			if slowErr == nil {
				t.Fatalf("fails with %v, but the goavro path decodes %+v", err, slow)
			}
			for _, s := range decodeSentinels {
				if errors.Is(err, s) != errors.Is(slowErr, s) {
					t.Fatalf("fails with %v, the goavro path with %v", err, slowErr)
				}
			}
			return
		}
		if slowErr != nil || !reflect.DeepEqual(any(v), slow) {
			t.Fatalf("decodes as %+v, the goavro path as %+v, %v", v, slow, slowErr)
		}
		// The value must not hold on to the input's memory.
		for i := range in {
			in[i] = 0xAA
		}
		fresh, err := decode(b)
		if err != nil {
			t.Fatalf("decoding again fails: %v", err)
		}
		if !reflect.DeepEqual(v, fresh) {
			t.Fatalf("the decoded value changed when the input's memory was overwritten:\n%+v\n%+v", v, fresh)
		}
		again, err := Encode(v)
		if err != nil {
			t.Fatalf("decoded %+v, which does not encode: %v", v, err)
		}
		if fp := binary.LittleEndian.Uint64(again[2:headerLen]); reg.Load().byFingerprint[fp] != reg.Load().writer[family] {
			t.Fatalf("Encode wrote fingerprint %016x, not the newest %s", fp, family)
		}
		if want, err := encodeGoavro(v); err != nil || !sameAvro(t, family, again, want) {
			t.Fatalf("Encode(%+v) writes % x, goavro % x, %v", v, again, want, err)
		}
		v2, err := decode(again)
		if err != nil {
			t.Fatalf("decoded %+v, whose encoding does not decode: %v", v, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("decode(encode(v)) != v:\n got %+v\nwant %+v", v2, v)
		}
		for _, check := range more {
			check(t, v)
		}
	})
}

// checkRequestJSON checks that a request that decoded goes through JSON
// and back unchanged, and that its JSON is the same every time; only a
// string that is not UTF-8 keeps it from JSON.
func checkRequestJSON(t *testing.T, r Request) {
	text, err := EncodeRequestJSON(r)
	if err != nil {
		// Binary records may hold strings that are not UTF-8; JSON may not.
		if native, _ := requestNative(r); invalidUTF8(native, "") != "" && strings.Contains(err.Error(), "is not valid UTF-8") {
			return
		}
		t.Fatalf("decoded %+v, which does not encode as JSON: %v", r, err)
	}
	r2, err := DecodeRequest(text)
	if err != nil {
		t.Fatalf("decoded %+v, whose JSON %s does not decode: %v", r, text, err)
	}
	if !reflect.DeepEqual(r, r2) {
		t.Fatalf("decode(encodeJSON(r)) != r; JSON %s\n got %+v\nwant %+v", text, r2, r)
	}
	text2, err := EncodeRequestJSON(r2)
	if err != nil || !bytes.Equal(text, text2) {
		t.Fatalf("the same request encodes as JSON twice differently (%v):\n%s\n%s", err, text, text2)
	}
}

var decodeSentinels = []error{ErrNotSingleObject, ErrUnknownSchema, ErrWrongSchema, ErrMalformed}

// checkDecodeError checks that a decoding error is the one the documented
// contract gives b, and comes with the zero value.
func checkDecodeError[T any](t *testing.T, family string, b []byte, v T, err error) {
	t.Helper()
	if !reflect.ValueOf(&v).Elem().IsZero() {
		t.Errorf("returned %+v with the error %v, want the zero value", v, err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "decode "+family) {
		t.Errorf("error %q does not start with %q", msg, "decode "+family)
	}
	want := wantSentinel(family, b)
	for _, s := range decodeSentinels {
		if errors.Is(err, s) != (s == want) {
			t.Fatalf("error %q: errors.Is(err, %v) = %v; want only %v", msg, s, errors.Is(err, s), want)
		}
	}
}

// wantSentinel is the error that the documentation of DecodeHealth (and
// DecodeRequest, for JSON) gives for b when it does not decode.
func wantSentinel(family string, b []byte) error {
	if t := bytes.TrimLeft(b, " \t\r\n"); family == nameRequest && len(t) > 0 && t[0] == '{' {
		return ErrMalformed
	}
	if len(b) < headerLen || b[0] != 0xC3 || b[1] != 0x01 {
		return ErrNotSingleObject
	}
	sv, ok := reg.Load().byFingerprint[binary.LittleEndian.Uint64(b[2:headerLen])]
	switch {
	case !ok:
		return ErrUnknownSchema
	case sv.name != family:
		return ErrWrongSchema
	}
	return ErrMalformed
}

// allocLimit is the most memory decoding n bytes may allocate: a fixed
// amount for the decoder's own needs, and in proportion to the input for
// what it declares. A count or length the input cannot hold must not make
// the decoder reserve room for it.
func allocLimit(n int) uint64 { return 256<<10 + 512*uint64(n) }

// allocated returns how many bytes fn allocates. Fuzz workers run one
// input at a time, so nothing else allocates much meanwhile.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// fuzzSeeds returns the seed corpus of each fuzz target, by target and
// seed name.
func fuzzSeeds(t *testing.T) map[string]map[string][]byte {
	full := map[string][]byte{} // every record type, by name
	byFamily := map[string][]string{}
	for _, tc := range roundTrips {
		b, err := Encode(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.ReplaceAll(tc.name, " ", "-")
		full[name] = b
		byFamily[tc.family] = append(byFamily[tc.family], name)
	}
	zero := map[string]any{
		nameClusterRecord:  ClusterRecord{},
		nameRequest:        Request{Control: &ControlWorkflow{}},
		nameWorkflowRecord: WorkflowRecord{Target: &Target{}},
		nameCommand:        Command{},
		nameOperationEvent: OperationEvent{},
		nameHealth:         Health{},
		nameNotification:   Notification{},
		namePolicyRecord:   PolicyRecord{},
		nameClaimRecord:    ClaimRecord{},
		nameLeaseRecord:    LeaseRecord{},
		nameDeadLetter:     DeadLetter{},
		nameTrustRecord:    TrustRecord{Role: &authz.Role{}},
		nameCheckpoint:     Checkpoint{},
	}
	// Extremes: the largest and smallest numbers, times and durations.
	extreme := map[string]any{
		nameLeaseRecord: LeaseRecord{Envelope: Envelope{Time: time.UnixMilli(-1 << 62)}, Partition: -1 << 31, RenewedAt: time.UnixMilli(1<<62 - 1), Duration: -1 << 63},
		nameClaimRecord: ClaimRecord{CommandPartition: 1<<31 - 1, QueuedOffset: -1 << 63},
		nameRequest:     Request{Control: &ControlWorkflow{WorkflowID: "wf\x00\u2028", Action: ActionRollback, Reason: strings.Repeat("é", 40)}},
		nameCommand:     Command{Attempt: -1 << 31, Timeout: 1<<63 - 1, Operation: rollout.Operation{Config: map[string]string{"": ""}}},
	}
	envelope := mustEncodeEnvelopeOnly(t)
	seeds := map[string]map[string][]byte{}
	for _, target := range []struct{ name, family string }{
		{"FuzzDecodeClusterRecord", nameClusterRecord},
		{"FuzzDecodeRequest", nameRequest},
		{"FuzzDecodeWorkflowRecord", nameWorkflowRecord},
		{"FuzzDecodeCommand", nameCommand},
		{"FuzzDecodeOperationEvent", nameOperationEvent},
		{"FuzzDecodeHealth", nameHealth},
		{"FuzzDecodeNotification", nameNotification},
		{"FuzzDecodePolicyRecord", namePolicyRecord},
		{"FuzzDecodeClaimRecord", nameClaimRecord},
		{"FuzzDecodeLeaseRecord", nameLeaseRecord},
		{"FuzzDecodeDeadLetter", nameDeadLetter},
		{"FuzzDecodeTrustRecord", nameTrustRecord},
		{"FuzzDecodeCheckpoint", nameCheckpoint},
	} {
		s := map[string][]byte{
			"empty":        {},
			"magic-only":   {0xC3, 0x01},
			"json-object":  []byte(`{"envelope": {}}`),
			"other-family": full["lease"],
		}
		if target.family == nameLeaseRecord {
			s["other-family"] = full["claim"]
		}
		add := func(name string, b []byte) {
			s[name] = b
			n := len(b)
			s[name+"-header-only"] = b[:headerLen]
			s[name+"-cut-half"] = b[:headerLen+(n-headerLen)/2]
			s[name+"-cut-last-byte"] = b[:n-1]
			s[name+"-trailing-bytes"] = append(bytes.Clone(b), 0, 0)
			s[name+"-wrong-magic"] = append([]byte{0xC3, 0x02}, b[2:]...)
			s[name+"-unknown-fingerprint"] = append([]byte{0xC3, 0x01, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01}, b[headerLen:]...)
			// The first field is the envelope's ID: declare it 2^31 bytes long.
			s[name+"-huge-length"] = append(append(bytes.Clone(b[:headerLen]), 0x80, 0x80, 0x80, 0x80, 0x10), b[headerLen+1:]...)
			flipped := bytes.Clone(b)
			for i := headerLen; i < n; i += 7 {
				flipped[i] ^= 0xFF
			}
			s[name+"-flipped-bytes"] = flipped
			// Right after the envelope: a union index, a string or a count.
			if at := headerLen + len(envelope); at < n {
				corrupt := bytes.Clone(b)
				corrupt[at] = 0x7F // zigzag -64
				s[name+"-corrupt-after-envelope"] = corrupt
			}
		}
		for _, name := range byFamily[target.family] {
			add(name, full[name])
			// The same record written with every older version of its schema.
			native, _, err := reg.Load().writer[target.family].codec.NativeFromBinary(full[name][headerLen:])
			if err != nil {
				t.Fatal(err)
			}
			for _, sv := range reg.Load().byFingerprint {
				if sv.name != target.family || sv == reg.Load().writer[target.family] || strings.Contains(sv.file, ".v0.") {
					continue
				}
				if b, err := sv.codec.SingleFromNative(nil, native); err == nil {
					s[name+"-"+strings.TrimSuffix(sv.file, ".avsc")] = b
				}
			}
		}
		b, err := Encode(zero[target.family])
		if err != nil {
			t.Fatal(err)
		}
		add("zero", b)
		if x, ok := extreme[target.family]; ok {
			b, err := Encode(x)
			if err != nil {
				t.Fatal(err)
			}
			add("extreme", b)
		}
		seeds[target.name] = s
	}

	req := seeds["FuzzDecodeRequest"]
	// A spec.clusters that declares 2^30 items (see TestDecodeErrors).
	huge := append(bytes.Clone(full["request"][:headerLen]), envelope...)
	huge = append(huge, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x08)
	req["huge-array-count"] = huge

	js := map[string][]byte{}
	example, err := os.ReadFile("../../examples/request-upgrade.json")
	if err != nil {
		t.Fatal(err)
	}
	js["example-request-upgrade"] = example
	js["hand-written"] = []byte(handWrittenRequest)
	js["hand-written-cut"] = []byte(handWrittenRequest[:len(handWrittenRequest)*2/3])
	js["hand-written-trailing"] = []byte(handWrittenRequest + " {}")
	js["hand-written-typo"] = []byte(strings.Replace(handWrittenRequest, `"selector": "kind`, `"selectr": "kind`, 1))
	js["hand-written-missing-field"] = []byte(strings.Replace(handWrittenRequest, `"principal": "bob"`, `"causation_id": ""`, 1))
	for name, r := range map[string]Request{"full": fullRequest(inTime), "control": {Envelope: fullEnvelope(inTime), Control: &ControlWorkflow{WorkflowID: "wf-1", Action: ActionApprove, Phase: "canary"}}} {
		text, err := EncodeRequestJSON(r)
		if err != nil {
			t.Fatal(err)
		}
		js[name] = text
		js[name+"-cut"] = text[:len(text)/2]
	}
	js["empty-object"] = []byte("{}")
	js["spaces-then-brace"] = []byte(" \t\r\n{")
	js["deep-nesting"] = []byte(strings.Repeat(`{"envelope":`, 200))
	seeds["FuzzDecodeRequestJSON"] = js
	for name, b := range js {
		req["json-"+name] = b
	}
	return seeds
}

// recordRegressions are records that the fuzz targets found to break a
// decoder, by target and name. They are in the corpora as
// regression-<name>, and TestDecodeRegressions checks each in detail.
func recordRegressions(t *testing.T) map[string]map[string][]byte {
	envelope := mustEncodeEnvelopeOnly(t)
	request, err := Encode(Request{Submit: &SubmitRollout{}})
	if err != nil {
		t.Fatal(err)
	}
	// spec.operation.config declares 2^20 entries, within goavro's cap:
	// goavro reserved a map for them, 84 MB for 82 bytes.
	hugeMap := append(bytes.Clone(request[:headerLen]), envelope...)
	hugeMap = append(hugeMap, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x01)
	// A reason that is not UTF-8, which EncodeRequestJSON turned into U+FFFD.
	notUTF8, err := Encode(Request{Control: &ControlWorkflow{WorkflowID: "wf-1", Action: ActionCancel, Reason: "caf\xe9"}})
	if err != nil {
		t.Fatal(err)
	}
	// Key and Value were slices of the record, which the consumer may reuse.
	deadLetter, err := Encode(fullDeadLetter(inTime))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]map[string][]byte{
		"FuzzDecodeRequest":    {"huge-map-count": hugeMap, "not-utf8": notUTF8},
		"FuzzDecodeDeadLetter": {"bytes-share-the-record": deadLetter},
	}
}

func TestDecodeRegressions(t *testing.T) {
	reg := recordRegressions(t)
	t.Run("huge map count", func(t *testing.T) {
		b := reg["FuzzDecodeRequest"]["huge-map-count"]
		var err error
		if n, limit := allocated(func() { _, err = DecodeRequest(b) }), allocLimit(len(b)); n > limit {
			t.Errorf("decoding %d bytes allocated %d, more than %d", len(b), n, limit)
		}
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "map block at byte 68 of the body declares 1048576 items, more than the 0 bytes after it can hold") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("not UTF-8", func(t *testing.T) {
		r, err := DecodeRequest(reg["FuzzDecodeRequest"]["not-utf8"])
		if err != nil {
			t.Fatal(err)
		}
		text, err := EncodeRequestJSON(r)
		if want := "encode flotilla.Request: body.flotilla.ControlWorkflow.reason is not valid UTF-8, which JSON cannot hold"; err == nil || err.Error() != want {
			t.Errorf("EncodeRequestJSON = %s, %v; want the error %q", text, err, want)
		}
	})
	t.Run("bytes share the record", func(t *testing.T) {
		b := bytes.Clone(reg["FuzzDecodeDeadLetter"]["bytes-share-the-record"])
		d, err := DecodeDeadLetter(b)
		if err != nil {
			t.Fatal(err)
		}
		want := fullDeadLetter(outTime)
		_ = append(d.Key, "more"...) // must not write over the record, nor Value
		for i := range b {
			b[i] = 0
		}
		if !reflect.DeepEqual(d, want) {
			t.Errorf("got  %+v\nwant %+v", d, want)
		}
		empty, err := Encode(DeadLetter{Key: []byte{}, Value: []byte{}})
		if err != nil {
			t.Fatal(err)
		}
		if d, err := DecodeDeadLetter(empty); err != nil || d.Key != nil || d.Value != nil {
			t.Errorf("empty bytes decode as %#v, %#v (%v); want nil, as empty slices do", d.Key, d.Value, err)
		}
	})
}

// TestWriteFuzzCorpus writes the seed corpora under testdata/fuzz, with
// -write-fuzz-corpus. It leaves other files there (inputs the fuzzer
// found) alone.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeFuzzCorpus {
		t.Skip("run with -write-fuzz-corpus to rewrite the seed corpora")
	}
	for target, seeds := range fuzzSeeds(t) {
		for name, b := range seeds {
			fuzzcorpus.Write(t, target, "seed-"+name, fmt.Sprintf("[]byte(%q)", b))
		}
	}
	for target, regressions := range recordRegressions(t) {
		for name, b := range regressions {
			fuzzcorpus.Write(t, target, "regression-"+name, fmt.Sprintf("[]byte(%q)", b))
		}
	}
}
