package records

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/linkedin/goavro/v2"

	"github.com/flotilla-fleet/flotilla/schemas"
)

// The full Avro names of the topic values: a schema family is every version
// of one of them.
const (
	nameClusterRecord  = "flotilla.ClusterRecord"
	nameRequest        = "flotilla.Request"
	nameWorkflowRecord = "flotilla.WorkflowRecord"
	nameCommand        = "flotilla.Command"
	nameOperationEvent = "flotilla.OperationEvent"
	nameHealth         = "flotilla.Health"
	nameNotification   = "flotilla.Notification"
	namePolicyRecord   = "flotilla.PolicyRecord"
	nameClaimRecord    = "flotilla.ClaimRecord"
	nameLeaseRecord    = "flotilla.LeaseRecord"
	nameDeadLetter     = "flotilla.DeadLetter"
	nameTrustRecord    = "flotilla.TrustRecord"
	nameCheckpoint     = "flotilla.Checkpoint"
)

var (
	// ErrNotSingleObject is returned when a value does not start with the
	// Avro single-object header (0xC3 0x01 and an 8-byte fingerprint): it
	// was not written by a Flotilla codec, or is empty (a tombstone).
	ErrNotSingleObject = errors.New("not an Avro single-object record")

	// ErrUnknownSchema is returned when a value names a schema fingerprint
	// that none of this build's schemas has: most likely it was written by
	// a newer Flotilla with a schema version this reader does not have yet.
	ErrUnknownSchema = errors.New("unknown schema")

	// ErrWrongSchema is returned when a value is a record of another
	// family than the one asked for, e.g. a Health decoded as a Command:
	// something produced to the wrong topic.
	ErrWrongSchema = errors.New("wrong schema")

	// ErrMalformed is returned when a value has a known schema but its body
	// does not decode with it (truncated, corrupt), or when a JSON request
	// is not valid Avro JSON of the request schema. The message says where.
	ErrMalformed = errors.New("malformed record")
)

// maxBlockItems caps the item count an array or map block may declare.
// goavro allocates room for the declared count before reading any item,
// so a corrupt count would otherwise ask for gigabytes. Every item takes at
// least one byte, so no record that fits in a Kafka message (1 MiB by
// default) declares more. Below the cap, checkBlockCounts refuses a count
// that the bytes of the record at hand cannot hold.
const maxBlockItems = 1 << 20

// schemaVersion is one schema file.
type schemaVersion struct {
	file    string // e.g. "health.v1.avsc"
	family  string // e.g. "health"
	name    string // full name of its record, e.g. "flotilla.Health"
	version int
	codec   *goavro.Codec
	typ     *avroType
}

// registry knows every schema version by fingerprint and which version of
// each record the codec writes. It is never changed once published.
type registry struct {
	byFingerprint map[uint64]*schemaVersion
	writer        map[string]*schemaVersion // by full record name
}

var (
	reg     atomic.Pointer[registry]
	regLock sync.Mutex // serialises registerSchema
)

func init() {
	if goavro.MaxBlockCount > maxBlockItems {
		goavro.MaxBlockCount = maxBlockItems
	}
	r, err := loadRegistry(schemas.FS)
	if err != nil {
		// The schemas are compiled in: a bad one is a bug of this build.
		panic(fmt.Sprintf("records: embedded schemas: %v", err))
	}
	if err := checkDirect(r); err != nil {
		panic(fmt.Sprintf("records: %v", err))
	}
	reg.Store(r)
}

// loadRegistry registers every *.avsc file at the root of fsys.
func loadRegistry(fsys fs.FS) (*registry, error) {
	files, err := fs.Glob(fsys, "*.avsc")
	if err != nil {
		return nil, err
	}
	r := &registry{byFingerprint: map[uint64]*schemaVersion{}, writer: map[string]*schemaVersion{}}
	for _, f := range files {
		data, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		if err := r.add(f, data); err != nil {
			return nil, err
		}
	}
	return r, nil
}

var fileName = regexp.MustCompile(`^([a-z][a-z0-9_-]*)\.v([0-9]+)\.avsc$`)

func (r *registry) add(file string, data []byte) error {
	m := fileName.FindStringSubmatch(file)
	if m == nil {
		return fmt.Errorf("schema file %s: name must be <family>.v<version>.avsc", file)
	}
	version, err := strconv.Atoi(m[2])
	if err != nil {
		return fmt.Errorf("schema file %s: version: %w", file, err)
	}
	codec, err := goavro.NewCodec(string(data))
	if err != nil {
		return fmt.Errorf("schema file %s: %w", file, err)
	}
	typ, err := parseSchema(data)
	if err != nil {
		return fmt.Errorf("schema file %s: %w", file, err)
	}
	if typ.kind != "record" {
		return fmt.Errorf("schema file %s: top level is a %s, want a record", file, typ.kind)
	}
	sv := &schemaVersion{file: file, family: m[1], name: typ.name, version: version, codec: codec, typ: typ}
	if prev, ok := r.byFingerprint[codec.Rabin]; ok {
		return fmt.Errorf("schema files %s and %s have the same fingerprint %016x: a new version must add fields", prev.file, file, codec.Rabin)
	}
	for _, other := range r.byFingerprint {
		switch {
		case other.family == sv.family && other.name != sv.name:
			return fmt.Errorf("schema files %s and %s: same family, different records %s and %s", other.file, file, other.name, sv.name)
		case other.family != sv.family && other.name == sv.name:
			return fmt.Errorf("schema files %s and %s: record %s in two families", other.file, file, sv.name)
		case other.family == sv.family && other.version == sv.version:
			return fmt.Errorf("schema files %s and %s: same version", other.file, file)
		}
	}
	r.byFingerprint[codec.Rabin] = sv
	if w := r.writer[sv.name]; w == nil || sv.version > w.version {
		r.writer[sv.name] = sv
	}
	return nil
}

// registerSchema adds a schema version to the codec. Tests use it to write
// records with a version that was never shipped (an "older" one); it
// refuses a newer one, which avro_records.go does not mirror.
func registerSchema(file string, data []byte) error {
	regLock.Lock()
	defer regLock.Unlock()
	old := reg.Load()
	r := &registry{byFingerprint: make(map[uint64]*schemaVersion, len(old.byFingerprint)+1), writer: make(map[string]*schemaVersion, len(old.writer))}
	for k, v := range old.byFingerprint {
		r.byFingerprint[k] = v
	}
	for k, v := range old.writer {
		r.writer[k] = v
	}
	if err := r.add(file, data); err != nil {
		return err
	}
	if err := checkDirect(r); err != nil {
		return err
	}
	reg.Store(r)
	return nil
}

// Encode encodes a record for its topic: v is a ClusterRecord, Request,
// WorkflowRecord, Command, OperationEvent, Health, Notification,
// PolicyRecord, ClaimRecord, LeaseRecord, DeadLetter, TrustRecord or
// Checkpoint, or a
// non-nil pointer to one.
//
// The result is an Avro single-object encoding: 0xC3 0x01, the 8-byte
// little-endian CRC-64-AVRO fingerprint of the newest version of the
// record's schema (in Parsing Canonical Form), then the Avro binary body.
// The fingerprint lets every reader, now or years later, find the exact
// schema the record was written with.
//
// Times are kept to the millisecond, in UTC; a zero time.Time is written as
// 0. Durations are kept to the millisecond. Nil and empty slices and maps
// are both written as empty.
//
// Encode fails on any other type, on a Request without a body, on a
// WorkflowRecord that has not exactly one of Workflow and Target, and on an
// int that does not fit the schema's 32-bit int. It does not validate
// anything else: that is the planner's job.
func Encode(v any) ([]byte, error) {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil, fmt.Errorf("encode: nil %T", v)
		}
		v = rv.Elem().Interface()
	}
	w := writers.Get().(*writer)
	defer w.release()
	w.buf = append(w.buf[:0], 0xC3, 0x01, 0, 0, 0, 0, 0, 0, 0, 0) // the fingerprint comes last
	var name string
	switch x := v.(type) {
	case ClusterRecord:
		name = nameClusterRecord
		writeClusterRecord(w, &x)
	case Request:
		name = nameRequest
		writeRequest(w, &x)
	case WorkflowRecord:
		name = nameWorkflowRecord
		writeWorkflowRecord(w, &x)
	case Command:
		name = nameCommand
		writeCommand(w, &x)
	case OperationEvent:
		name = nameOperationEvent
		writeOperationEvent(w, &x)
	case Health:
		name = nameHealth
		writeHealth(w, &x)
	case Notification:
		name = nameNotification
		writeNotification(w, &x)
	case PolicyRecord:
		name = namePolicyRecord
		writePolicyRecord(w, &x)
	case ClaimRecord:
		name = nameClaimRecord
		writeClaimRecord(w, &x)
	case LeaseRecord:
		name = nameLeaseRecord
		writeLeaseRecord(w, &x)
	case DeadLetter:
		name = nameDeadLetter
		writeDeadLetter(w, &x)
	case TrustRecord:
		name = nameTrustRecord
		writeTrustRecord(w, &x)
	case Checkpoint:
		name = nameCheckpoint
		writeCheckpoint(w, &x)
	default:
		return nil, fmt.Errorf("encode: %T is not a record type", v)
	}
	if w.err != nil {
		// Encode has always failed with goavro's messages, which name the
		// field in their own way: a bad value is rare, let goavro say it.
		if _, err := encodeGoavro(v); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("encode %s: %w", name, w.err)
	}
	binary.LittleEndian.PutUint64(w.buf[2:headerLen], reg.Load().writer[name].codec.Rabin)
	return bytes.Clone(w.buf), nil
}

// writers recycles Encode's buffers: Encode allocates only the record it
// returns.
var writers = sync.Pool{New: func() any { return &writer{buf: make([]byte, 0, 1024)} }}

func (w *writer) release() {
	if cap(w.buf) <= 64<<10 { // let a big dead letter's buffer go
		w.err = nil
		writers.Put(w)
	}
}

// encodeGoavro is what Encode did before it wrote records itself: build
// goavro natives (mapping.go) and have goavro encode them. It gives
// Encode's error messages, and is the tests' oracle.
func encodeGoavro(v any) ([]byte, error) {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil, fmt.Errorf("encode: nil %T", v)
		}
		v = rv.Elem().Interface()
	}
	var (
		name   string
		native map[string]any
		err    error
	)
	switch x := v.(type) {
	case ClusterRecord:
		name, native = nameClusterRecord, clusterRecordNative(x)
	case Request:
		name = nameRequest
		native, err = requestNative(x)
	case WorkflowRecord:
		name = nameWorkflowRecord
		native, err = workflowRecordNative(x)
	case Command:
		name, native = nameCommand, commandNative(x)
	case OperationEvent:
		name, native = nameOperationEvent, operationEventNative(x)
	case Health:
		name, native = nameHealth, healthNative(x)
	case Notification:
		name, native = nameNotification, notificationNative(x)
	case PolicyRecord:
		name, native = namePolicyRecord, policyRecordNative(x)
	case ClaimRecord:
		name, native = nameClaimRecord, claimRecordNative(x)
	case LeaseRecord:
		name, native = nameLeaseRecord, leaseRecordNative(x)
	case DeadLetter:
		name, native = nameDeadLetter, deadLetterNative(x)
	case TrustRecord:
		name = nameTrustRecord
		native, err = trustRecordNative(x)
	case Checkpoint:
		name, native = nameCheckpoint, checkpointNative(x)
	default:
		return nil, fmt.Errorf("encode: %T is not a record type", v)
	}
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", name, err)
	}
	b, err := reg.Load().writer[name].codec.SingleFromNative(nil, native)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", name, err)
	}
	return b, nil
}

// EncodeRequestJSON encodes a request as Avro JSON of the newest request
// schema: the form DecodeRequest also accepts, for any Kafka client to
// produce (`kcat -P`, kafka-console-producer, a script). Unions are written
// the Avro way, {"flotilla.SubmitRollout": {...}}; times as milliseconds
// since the epoch; durations as milliseconds. The output is one line,
// fields in schema order, so the same request always reads the same.
//
// It fails as Encode does, and on a string that is not valid UTF-8 (which
// Encode writes as it is, but JSON cannot hold).
func EncodeRequestJSON(r Request) ([]byte, error) {
	native, err := requestNative(r)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", nameRequest, err)
	}
	if p := invalidUTF8(native, ""); p != "" {
		return nil, fmt.Errorf("encode %s: %s is not valid UTF-8, which JSON cannot hold", nameRequest, p)
	}
	w := reg.Load().writer[nameRequest]
	text, err := w.codec.TextualFromNative(nil, native)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", nameRequest, err)
	}
	// goavro writes fields in map order; rewrite them in schema order.
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("encode %s: reorder json: %w", nameRequest, err)
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, w.typ, v); err != nil {
		return nil, fmt.Errorf("encode %s: reorder json: %w", nameRequest, err)
	}
	return buf.Bytes(), nil
}

// DecodeClusterRecord decodes a value of fleet.inventory. See DecodeHealth
// for how it fails.
func DecodeClusterRecord(b []byte) (ClusterRecord, error) {
	return decodeAs(b, nameClusterRecord, readClusterRecord, clusterRecordFrom)
}

// DecodeRequest decodes a value of fleet.requests: either a single-object
// Avro record, as Encode writes, or, if its first non-space byte is '{',
// the Avro JSON encoding of the newest request schema (see
// EncodeRequestJSON and examples/request-upgrade.json). In JSON, fields with
// a default may be left out and unknown fields are refused (so a typo is
// caught); a bad document fails with ErrMalformed and goavro's message,
// which names the field at fault. Otherwise it fails as DecodeHealth does.
func DecodeRequest(b []byte) (Request, error) {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return decodeRequestJSON(t)
	}
	return decodeAs(b, nameRequest, readRequest, requestFrom)
}

func decodeRequestJSON(b []byte) (Request, error) {
	w := reg.Load().writer[nameRequest]
	native, rest, err := w.codec.NativeFromTextual(b)
	if err != nil {
		var doc any
		if json.Unmarshal(b, &doc) == nil {
			if p := firstMissing(w.typ, doc, ""); p != "" {
				return Request{}, fmt.Errorf("decode %s: %w: avro json: required field %s is missing: %w", nameRequest, ErrMalformed, p, err)
			}
		}
		return Request{}, fmt.Errorf("decode %s: %w: avro json: %w", nameRequest, ErrMalformed, err)
	}
	if rest = bytes.TrimSpace(rest); len(rest) > 0 {
		return Request{}, fmt.Errorf("decode %s: %w: avro json: %d unexpected bytes after the request", nameRequest, ErrMalformed, len(rest))
	}
	fillDefaults(w.typ, native)
	r, err := requestFrom(native)
	if err != nil {
		return Request{}, fmt.Errorf("decode %s: %w: avro json: %w", nameRequest, ErrMalformed, err)
	}
	return r, nil
}

// DecodeWorkflowRecord decodes a value of fleet.workflows. See DecodeHealth
// for how it fails.
func DecodeWorkflowRecord(b []byte) (WorkflowRecord, error) {
	return decodeAs(b, nameWorkflowRecord, readWorkflowRecord, workflowRecordFrom)
}

// DecodeCommand decodes a value of fleet.commands. See DecodeHealth for how
// it fails.
func DecodeCommand(b []byte) (Command, error) {
	return decodeAs(b, nameCommand, readCommand, commandFrom)
}

// DecodeOperationEvent decodes a value of fleet.operations. See
// DecodeHealth for how it fails.
func DecodeOperationEvent(b []byte) (OperationEvent, error) {
	return decodeAs(b, nameOperationEvent, readOperationEvent, operationEventFrom)
}

// DecodeHealth decodes a value of fleet.health written by Encode with any
// version of the health schema this build has; fields that the writer's
// version lacked take the defaults of the newest version.
//
// Like every Decode function, it never panics and does not validate what
// the record says (a state that no code knows decodes fine). It fails with
// ErrNotSingleObject if b does not start with the single-object header
// (an empty b, a tombstone, included), ErrUnknownSchema if the fingerprint
// is not one of this build's schemas, ErrWrongSchema if the record is of
// another family ("record is a flotilla.Command, want flotilla.Health"), and
// ErrMalformed if the body does not decode. Times decode in UTC, 0 as the
// zero time.Time; empty slices and maps decode as nil.
func DecodeHealth(b []byte) (Health, error) {
	return decodeAs(b, nameHealth, readHealth, healthFrom)
}

// DecodePolicyRecord decodes a value of fleet.policies. See DecodeHealth
// for how it fails.
func DecodePolicyRecord(b []byte) (PolicyRecord, error) {
	return decodeAs(b, namePolicyRecord, readPolicyRecord, policyRecordFrom)
}

// DecodeClaimRecord decodes a value of fleet.claims. See DecodeHealth for
// how it fails.
func DecodeClaimRecord(b []byte) (ClaimRecord, error) {
	return decodeAs(b, nameClaimRecord, readClaimRecord, claimRecordFrom)
}

// DecodeCheckpoint decodes a value of fleet.checkpoints. See DecodeHealth
// for the errors.
func DecodeCheckpoint(b []byte) (Checkpoint, error) {
	return decodeAs(b, nameCheckpoint, readCheckpoint, checkpointFrom)
}

// DecodeLeaseRecord decodes a value of fleet.leases. See DecodeHealth for
// how it fails.
func DecodeLeaseRecord(b []byte) (LeaseRecord, error) {
	return decodeAs(b, nameLeaseRecord, readLeaseRecord, leaseRecordFrom)
}

// DecodeDeadLetter decodes a value of fleet.deadletters. See DecodeHealth
// for how it fails.
func DecodeDeadLetter(b []byte) (DeadLetter, error) {
	return decodeAs(b, nameDeadLetter, readDeadLetter, deadLetterFrom)
}

// DecodeTrustRecord decodes a value of fleet.trust. See DecodeHealth for
// how it fails.
func DecodeTrustRecord(b []byte) (TrustRecord, error) {
	return decodeAs(b, nameTrustRecord, readTrustRecord, trustRecordFrom)
}

// DecodeNotification decodes a value of fleet.notifications. See
// DecodeHealth for how it fails.
func DecodeNotification(b []byte) (Notification, error) {
	return decodeAs(b, nameNotification, readNotification, notificationFrom)
}

// decodeAs decodes a record of the named family: read reads the body of
// the newest version; any other version, and a value without a valid
// header, goes to goavro and from (decodeGoavro).
func decodeAs[T any](b []byte, name string, read func(*reader) T, from func(any) (T, error)) (T, error) {
	var r reader
	if !r.open(b, name) {
		return decodeGoavro(b, name, from)
	}
	v := read(&r)
	if err := r.close(); err != nil {
		var zero T
		return zero, fmt.Errorf("decode %s (%s): %w: %w", name, directFiles[name], ErrMalformed, err)
	}
	return v, nil
}

// open points r at the body of b if b is a record of the newest version of
// the named family's schema, the one read functions read.
func (r *reader) open(b []byte, name string) bool {
	if len(b) < headerLen || b[0] != 0xC3 || b[1] != 0x01 {
		return false
	}
	if w := reg.Load().writer[name]; w.codec.Rabin != binary.LittleEndian.Uint64(b[2:headerLen]) {
		return false
	}
	r.buf = b[headerLen:]
	return true
}

// decodeGoavro decodes a record with goavro and from (mapping.go): the
// decoder of records of an older version, and the tests' oracle.
func decodeGoavro[T any](b []byte, name string, from func(any) (T, error)) (T, error) {
	var zero T
	native, err := decodeNative(b, name)
	if err != nil {
		return zero, err
	}
	v, err := from(native)
	if err != nil {
		return zero, fmt.Errorf("decode %s: %w: %w", name, ErrMalformed, err)
	}
	return v, nil
}

const headerLen = 10 // 0xC3 0x01 + 8-byte fingerprint

// decodeNative decodes a single-object record of the named family into
// goavro natives, with the defaults of the newest version filled in.
func decodeNative(b []byte, name string) (any, error) {
	switch {
	case len(b) == 0:
		return nil, fmt.Errorf("decode %s: %w: empty value (a tombstone?)", name, ErrNotSingleObject)
	case len(b) < headerLen:
		return nil, fmt.Errorf("decode %s: %w: %d bytes, shorter than the %d-byte header", name, ErrNotSingleObject, len(b), headerLen)
	case b[0] != 0xC3 || b[1] != 0x01:
		return nil, fmt.Errorf("decode %s: %w: starts with % x, want c3 01", name, ErrNotSingleObject, b[:2])
	}
	r := reg.Load()
	fp := binary.LittleEndian.Uint64(b[2:headerLen])
	sv, ok := r.byFingerprint[fp]
	if !ok {
		return nil, fmt.Errorf("decode %s: %w: fingerprint %016x is none of this build's schemas (written by a newer version?)", name, ErrUnknownSchema, fp)
	}
	if sv.name != name {
		return nil, fmt.Errorf("decode %s: %w: record is a %s, want %s", name, ErrWrongSchema, sv.name, name)
	}
	if err := checkBlockCounts(sv.typ, b[headerLen:]); err != nil {
		return nil, fmt.Errorf("decode %s (%s): %w: %w", name, sv.file, ErrMalformed, err)
	}
	native, rest, err := sv.codec.NativeFromBinary(b[headerLen:])
	if err != nil {
		return nil, fmt.Errorf("decode %s (%s): %w: %w", name, sv.file, ErrMalformed, err)
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("decode %s (%s): %w: %d bytes after the end of the record", name, sv.file, ErrMalformed, len(rest))
	}
	if w := r.writer[name]; w != sv {
		fillDefaults(w.typ, native)
	}
	return native, nil
}
