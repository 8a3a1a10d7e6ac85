package records

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/schemas"
)

// The tests below hold the direct codec (avro_records.go) to the goavro
// path it replaced, which stays as their oracle: natives built by
// mapping.go, encoded by goavro with the newest schema of each family
// (encodeGoavro), and decoded by goavro then mapping.go (decodeGoavro).
// They run over every family the registry has, with the full values of
// mapping_test.go and random ones that set every field of the Go types:
// a field, a union member or a schema version that one side has and the
// other lacks makes them fail.

// recordTypes is the Go type of each family's records.
var recordTypes = map[string]reflect.Type{
	nameClusterRecord:  reflect.TypeFor[ClusterRecord](),
	nameRequest:        reflect.TypeFor[Request](),
	nameWorkflowRecord: reflect.TypeFor[WorkflowRecord](),
	nameCommand:        reflect.TypeFor[Command](),
	nameOperationEvent: reflect.TypeFor[OperationEvent](),
	nameHealth:         reflect.TypeFor[Health](),
	nameNotification:   reflect.TypeFor[Notification](),
	namePolicyRecord:   reflect.TypeFor[PolicyRecord](),
	nameClaimRecord:    reflect.TypeFor[ClaimRecord](),
	nameLeaseRecord:    reflect.TypeFor[LeaseRecord](),
	nameTrustRecord:    reflect.TypeFor[TrustRecord](),
	nameDeadLetter:     reflect.TypeFor[DeadLetter](),
	nameCheckpoint:     reflect.TypeFor[Checkpoint](),
}

// goavroDecoders decode each family the way every record was decoded
// before the direct codec: goavro, then mapping.go.
var goavroDecoders = map[string]func([]byte) (any, error){
	nameClusterRecord: func(b []byte) (any, error) { return decodeGoavro(b, nameClusterRecord, clusterRecordFrom) },
	nameRequest: func(b []byte) (any, error) {
		if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] == '{' {
			return DecodeRequest(b) // JSON has no other path
		}
		return decodeGoavro(b, nameRequest, requestFrom)
	},
	nameWorkflowRecord: func(b []byte) (any, error) { return decodeGoavro(b, nameWorkflowRecord, workflowRecordFrom) },
	nameCommand:        func(b []byte) (any, error) { return decodeGoavro(b, nameCommand, commandFrom) },
	nameOperationEvent: func(b []byte) (any, error) { return decodeGoavro(b, nameOperationEvent, operationEventFrom) },
	nameHealth:         func(b []byte) (any, error) { return decodeGoavro(b, nameHealth, healthFrom) },
	nameNotification:   func(b []byte) (any, error) { return decodeGoavro(b, nameNotification, notificationFrom) },
	namePolicyRecord:   func(b []byte) (any, error) { return decodeGoavro(b, namePolicyRecord, policyRecordFrom) },
	nameClaimRecord:    func(b []byte) (any, error) { return decodeGoavro(b, nameClaimRecord, claimRecordFrom) },
	nameLeaseRecord:    func(b []byte) (any, error) { return decodeGoavro(b, nameLeaseRecord, leaseRecordFrom) },
	nameDeadLetter:     func(b []byte) (any, error) { return decodeGoavro(b, nameDeadLetter, deadLetterFrom) },
	nameTrustRecord:    func(b []byte) (any, error) { return decodeGoavro(b, nameTrustRecord, trustRecordFrom) },
	nameCheckpoint:     func(b []byte) (any, error) { return decodeGoavro(b, nameCheckpoint, checkpointFrom) },
}

// TestDirectCodecMatchesGoavro is the oracle test: for every family, Encode
// writes the bytes goavro writes for the value's natives, fails where
// goavro fails with the same message, and decoding those bytes gives the
// value the goavro path gives.
func TestDirectCodecMatchesGoavro(t *testing.T) {
	for name := range reg.Load().writer {
		if recordTypes[name] == nil || decoders[name] == nil || goavroDecoders[name] == nil {
			t.Fatalf("%s has no entry in recordTypes, decoders or goavroDecoders: add it, and its functions to avro_records.go", name)
		}
	}
	for _, tc := range roundTrips {
		checkAgainstGoavro(t, tc.family, tc.in)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	refused := 0 // values Encode refused, as goavro does
	for name, typ := range recordTypes {
		t.Run(name, func(t *testing.T) {
			for range 500 {
				v := randomValue(rng, typ, true)
				ok, err := checkAgainstGoavro(t, name, v.Interface())
				if !ok {
					return
				}
				if err != nil {
					refused++
				}
			}
		})
	}
	if refused == 0 || refused > 500 {
		t.Errorf("Encode refused %d of the random values, want a few", refused)
	}
}

// checkAgainstGoavro checks one value of the named family, as the oracle
// test says. It reports whether the value passed, and Encode's error.
func checkAgainstGoavro(t *testing.T, family string, v any) (bool, error) {
	t.Helper()
	fast, fastErr := Encode(v)
	slow, slowErr := encodeGoavro(v)
	switch {
	case fastErr != nil || slowErr != nil:
		if fastErr == nil || slowErr == nil || fastErr.Error() != slowErr.Error() {
			t.Errorf("%#v:\nEncode fails with %v\ngoavro with %v", v, fastErr, slowErr)
			return false, fastErr
		}
		return true, fastErr
	case !sameAvro(t, family, fast, slow):
		t.Errorf("%#v:\nEncode writes % x\ngoavro writes % x", v, fast, slow)
		return false, nil
	}
	for _, b := range [][]byte{fast, slow} {
		got, err := decoders[family](b)
		want, wantErr := goavroDecoders[family](b)
		if err != nil || wantErr != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%#v encoded as % x:\ndecodes as %#v, %v\n  goavro: %#v, %v", v, b, got, err, want, wantErr)
			return false, nil
		}
	}
	return true, nil
}

// sameAvro reports whether two single-object records of the family are
// the same up to the order of map entries, which both goavro and Encode
// write in Go's random map order.
func sameAvro(t *testing.T, family string, a, b []byte) bool {
	t.Helper()
	if len(a) < headerLen || len(b) < headerLen || !bytes.Equal(a[:headerLen], b[:headerLen]) {
		return false
	}
	typ := reg.Load().writer[family].typ
	ca, err := canonicalAvro(typ, a[headerLen:])
	if err != nil {
		t.Fatalf("% x: %v", a, err)
	}
	cb, err := canonicalAvro(typ, b[headerLen:])
	if err != nil {
		t.Fatalf("% x: %v", b, err)
	}
	return bytes.Equal(ca, cb)
}

// canonicalAvro returns the Avro binary b of a value of type t with the
// entries of each map block sorted by their bytes, every other byte as it
// is. It fails if b is not exactly one value of type t.
func canonicalAvro(t *avroType, b []byte) ([]byte, error) {
	c := canonicalizer{in: b}
	out := c.value(t, nil)
	switch {
	case c.err != nil:
		return nil, c.err
	case len(c.in) > 0:
		return nil, fmt.Errorf("%d bytes after the value", len(c.in))
	}
	return out, nil
}

type canonicalizer struct {
	in  []byte
	err error
}

func (c *canonicalizer) take(n int) []byte {
	if c.err != nil || n < 0 || n > len(c.in) {
		if c.err == nil {
			c.err = errors.New("truncated")
		}
		return nil
	}
	b := c.in[:n]
	c.in = c.in[n:]
	return b
}

// varint takes a varint, returning its bytes and value.
func (c *canonicalizer) varint() ([]byte, int64) {
	for i, x := range c.in {
		if x < 0x80 {
			raw := c.take(i + 1)
			var u uint64
			for j, y := range raw {
				u |= uint64(y&0x7F) << (7 * j)
			}
			return raw, int64(u>>1) ^ -int64(u&1)
		}
	}
	c.take(len(c.in) + 1)
	return nil, 0
}

func (c *canonicalizer) value(t *avroType, out []byte) []byte {
	if c.err != nil {
		return out
	}
	switch t.kind {
	case "null":
	case "boolean":
		out = append(out, c.take(1)...)
	case "int", "long":
		raw, _ := c.varint()
		out = append(out, raw...)
	case "float":
		out = append(out, c.take(4)...)
	case "double":
		out = append(out, c.take(8)...)
	case "string", "bytes":
		raw, n := c.varint()
		out = append(append(out, raw...), c.take(int(min(n, math.MaxInt32)))...)
	case "record":
		for _, f := range t.fields {
			out = c.value(f.typ, out)
		}
	case "union":
		raw, i := c.varint()
		if i < 0 || i >= int64(len(t.members)) {
			c.err = fmt.Errorf("union index %d", i)
			return out
		}
		out = c.value(t.members[i], append(out, raw...))
	case "array", "map":
		for c.err == nil {
			raw, n := c.varint()
			out = append(out, raw...)
			if n == 0 {
				break
			}
			if n < 0 {
				size, _ := c.varint()
				out = append(out, size...)
				n = -n
			}
			var items [][]byte
			for i := int64(0); i < n && c.err == nil; i++ {
				var item []byte
				if t.kind == "map" {
					item = c.value(stringType, item)
				}
				items = append(items, c.value(t.items, item))
			}
			if t.kind == "map" {
				slices.SortFunc(items, bytes.Compare)
			}
			out = append(out, bytes.Join(items, nil)...)
		}
	default:
		c.err = fmt.Errorf("type %s", t.kind)
	}
	return out
}

// randomValue returns a random value of type typ, setting every field:
// strings empty, ASCII, not ASCII or not UTF-8; slices and maps nil, empty
// or not; times zero, on the epoch, with nanoseconds, in a zone, at the
// extremes; numbers at their limits and negative. A struct with pointer
// fields is a union: one of them is set. With bad, a few values are ones
// Encode refuses: an int beyond 32 bits, a union with no member or two.
func randomValue(rng *rand.Rand, typ reflect.Type, bad bool) reflect.Value {
	v := reflect.New(typ).Elem()
	switch typ {
	case reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(randomTime(rng)))
		return v
	case reflect.TypeFor[time.Duration]():
		v.SetInt(oneOf(rng, 0, 1, -1, 1500*int64(time.Microsecond), int64(time.Minute), -int64(time.Hour), math.MaxInt64, math.MinInt64, rng.Int64()))
		return v
	}
	switch typ.Kind() {
	case reflect.String:
		v.SetString(randomString(rng))
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 1)
	case reflect.Int:
		n := oneOf(rng, 0, 1, -1, 7, math.MaxInt32, math.MinInt32, int64(int32(rng.Uint32())))
		if bad && rng.IntN(200) == 0 {
			n = oneOf[int64](rng, math.MaxInt32+1, math.MinInt32-1, 1<<40)
		}
		v.SetInt(n)
	case reflect.Uint8: // of []byte
		v.SetUint(uint64(rng.UintN(256)))
	case reflect.Int32:
		v.SetInt(oneOf(rng, 0, 1, -1, math.MaxInt32, math.MinInt32, int64(int32(rng.Uint32()))))
	case reflect.Int64:
		v.SetInt(oneOf(rng, 0, 1, -1, math.MaxInt64, math.MinInt64, rng.Int64(), rng.Int64N(1000)))
	case reflect.Slice:
		switch n := rng.IntN(5); n {
		case 0: // nil
		case 1:
			v.Set(reflect.MakeSlice(typ, 0, 0))
		default:
			v.Set(reflect.MakeSlice(typ, n-1, n-1))
			for i := range n - 1 {
				v.Index(i).Set(randomValue(rng, typ.Elem(), bad))
			}
		}
	case reflect.Map:
		switch n := rng.IntN(5); n {
		case 0: // nil
		default:
			v.Set(reflect.MakeMap(typ))
			for range n - 1 {
				v.SetMapIndex(randomValue(rng, typ.Key(), bad), randomValue(rng, typ.Elem(), bad))
			}
		}
	case reflect.Struct:
		var members []int // pointer fields: a union's members
		for i := range typ.NumField() {
			if f := typ.Field(i); f.Type.Kind() == reflect.Pointer {
				members = append(members, i)
			} else {
				v.Field(i).Set(randomValue(rng, f.Type, bad))
			}
		}
		if len(members) > 0 {
			set := members[rng.IntN(len(members)):][:1]
			if bad && rng.IntN(50) == 0 {
				set = oneOf(rng, nil, members)
			}
			for _, i := range set {
				p := reflect.New(typ.Field(i).Type.Elem())
				p.Elem().Set(randomValue(rng, p.Elem().Type(), bad))
				v.Field(i).Set(p)
			}
		}
	default:
		panic(fmt.Sprintf("randomValue: %s", typ))
	}
	return v
}

func oneOf[T any](rng *rand.Rand, choices ...T) T { return choices[rng.IntN(len(choices))] }

func randomString(rng *rand.Rand) string {
	switch rng.IntN(8) {
	case 0, 1:
		return ""
	case 2:
		return oneOf(rng, "prod-eu-1", "a", "kind=kafka,env in (prod, staging)", "quoted \"key\"")
	case 3:
		return oneOf(rng, "é", "✓ 日本語", "\u2028", "line 1\nline 2 ✓\n")
	case 4:
		return oneOf(rng, "caf\xe9", "\x00", "\xff\xfe") // not UTF-8
	case 5:
		return strings.Repeat("x", 100+rng.IntN(200)) // a length of two varint bytes
	}
	b := make([]byte, rng.IntN(20))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return string(b)
}

func randomTime(rng *rand.Rand) time.Time {
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("CET", 3600), time.FixedZone("odd", -(9*3600 + 30*60))}
	switch rng.IntN(6) {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(0, int64(rng.IntN(1e6))) // not zero, but 0 ms
	case 2:
		return time.UnixMilli(oneOf[int64](rng, -1<<62, 1<<62-1, -1, 1))
	case 3:
		return time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC) // just after the zero time
	}
	return time.UnixMilli(rng.Int64N(1<<45) - 1<<44).Add(time.Duration(rng.IntN(1e6))).In(oneOf(rng, zones...))
}

// TestItemSizes checks that the least size readArray is given for the
// items of an array of records is the least the schema allows, as
// checkBlockCounts computes it: a count the bytes left cannot hold fails
// the same way on both paths.
func TestItemSizes(t *testing.T) {
	for name, got := range map[string]int{
		"flotilla.Phase":      phaseSize,
		"flotilla.PhasePlan":  phasePlanSize,
		"flotilla.WindowRule": windowRuleSize,
		"flotilla.TrustKey":   trustKeySize,
		"flotilla.RoleRule":   roleRuleSize,
	} {
		var typ *avroType
		for _, w := range reg.Load().writer {
			if typ = findRecord(w.typ, name, map[*avroType]bool{}); typ != nil {
				break
			}
		}
		if typ == nil {
			t.Fatalf("no schema has %s", name)
		}
		if want := minEncodedSize(typ); got != want {
			t.Errorf("%s: items take at least %d bytes, readArray is told %d", name, want, got)
		}
	}
}

func findRecord(t *avroType, name string, seen map[*avroType]bool) *avroType {
	if t == nil || seen[t] {
		return nil
	}
	seen[t] = true
	if t.kind == "record" && t.name == name {
		return t
	}
	for _, f := range t.fields {
		if r := findRecord(f.typ, name, seen); r != nil {
			return r
		}
	}
	for _, m := range t.members {
		if r := findRecord(m, name, seen); r != nil {
			return r
		}
	}
	return findRecord(t.items, name, seen)
}

// A new schema version refuses to start until avro_records.go mirrors it.
func TestCheckDirect(t *testing.T) {
	if err := checkDirect(reg.Load()); err != nil {
		t.Fatal(err)
	}
	files := fstest.MapFS{}
	all, err := schemas.FS.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range all {
		data, err := schemas.FS.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		files[f.Name()] = &fstest.MapFile{Data: data}
	}
	newest, err := schemas.FS.ReadFile("health.v2.avsc")
	if err != nil {
		t.Fatal(err)
	}
	v3 := strings.Replace(string(newest), `{"name": "heartbeat"`, `{"name": "zone", "type": "string", "default": ""}, {"name": "heartbeat"`, 1)
	files["health.v3.avsc"] = &fstest.MapFile{Data: []byte(v3)}
	r, err := loadRegistry(files)
	if err != nil {
		t.Fatal(err)
	}
	want := "the newest flotilla.Health schema is health.v3.avsc, but avro_records.go mirrors health.v2.avsc"
	if err := checkDirect(r); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("checkDirect = %v, want an error saying %q", err, want)
	}
}

// The direct reader's errors say which field is at fault, and where.
func TestDirectDecodeErrors(t *testing.T) {
	command, err := Encode(fullCommand(inTime))
	if err != nil {
		t.Fatal(err)
	}
	workflow, err := Encode(fullWorkflowRow(inTime))
	if err != nil {
		t.Fatal(err)
	}
	cut := func(b []byte, n int) []byte { return b[:len(b)-n] }
	// Labels of the command's cluster, with its first key twice.
	dupLabels := Command{Cluster: inventory.Cluster{Labels: map[string]string{"a": "1"}}}
	dup, err := Encode(dupLabels)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(dup, []byte{2, 2, 'a', 2, '1', 0}) // count 1, "a", "1", end
	dup = append(append(bytes.Clone(dup[:i]), 4, 2, 'a', 2, '1', 2, 'a', 2, '2', 0), dup[i+6:]...)
	badBool, err := Encode(WorkflowRecord{Target: &Target{Unhealthy: true}})
	if err != nil {
		t.Fatal(err)
	}
	badBool[bytes.IndexByte(badBool[headerLen+5:], 1)+headerLen+5] = 2
	for _, tc := range []struct {
		name, family string
		in           []byte
		want         string
	}{
		{"truncated", nameCommand, cut(command, 1), "decode flotilla.Command (command.v2.avsc): malformed record: cluster.settings: truncated: the body ends in the varint at byte"},
		{"truncated in a map value", nameCommand, cut(command, 10), `cluster.settings["`},
		{"truncated in an array of records", nameWorkflowRecord, workflow[:300], "row.flotilla.Workflow.spec.phases[0].approve: truncated: length 5 at byte 286 of the body, only 3 bytes after it"},
		{"duplicate key", nameCommand, dup, `cluster.labels: duplicate key "a"`},
		{"boolean", nameWorkflowRecord, badBool, "row.flotilla.Target.unhealthy: boolean byte 2 at byte"},
		{"trailing bytes", nameCommand, append(bytes.Clone(command), 0), "malformed record: 1 bytes after the end of the record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decoders[tc.family](tc.in)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrMalformed saying %q", err, tc.want)
			}
			if _, slowErr := goavroDecoders[tc.family](tc.in); !errors.Is(slowErr, ErrMalformed) {
				t.Errorf("goavro: err = %v, want ErrMalformed", slowErr)
			}
		})
	}
}
