package records

import (
	"os"
	"reflect"
	"testing"
)

// FuzzDecodeRequest feeds DecodeRequest anything a producer could write to
// fleet.requests. It must never panic; and whatever it accepts must encode
// again and decode to the same request, so the planner can store it.
func FuzzDecodeRequest(f *testing.F) {
	full, err := Encode(fullRequest(inTime))
	if err != nil {
		f.Fatal(err)
	}
	example, err := os.ReadFile("../../examples/request-upgrade.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add(full[:len(full)/2])
	f.Add(example)
	f.Add([]byte(handWrittenRequest))
	f.Add([]byte{})
	f.Add([]byte{0xC3, 0x01})
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			return
		}
		again, err := Encode(r)
		if err != nil {
			t.Fatalf("decoded %+v, which does not encode: %v", r, err)
		}
		r2, err := DecodeRequest(again)
		if err != nil {
			t.Fatalf("decoded %+v, whose encoding does not decode: %v", r, err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("decode(encode(r)) != r:\n%+v\n%+v", r2, r)
		}
	})
}
