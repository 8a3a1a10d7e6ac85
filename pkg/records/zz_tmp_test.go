package records

import (
	"bytes"
	"runtime"
	"testing"
)

func allocTmp(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

func TestAllocTmp(t *testing.T) {
	envelope := mustEncodeEnvelopeOnly(t)
	request, _ := Encode(Request{Submit: &SubmitRollout{}})
	for _, cnt := range [][]byte{{0x80, 0x80, 0x80, 0x01}, {0x80, 0x80, 0x40}, {0x80, 0x80, 0x10}} {
		huge := append(bytes.Clone(request[:10]), envelope...)
		huge = append(huge, 0, 0, 0, 0, 0, 0, 0)
		huge = append(huge, cnt...)
		n := allocTmp(func() { _, err := DecodeRequest(huge); t.Log(err) })
		t.Logf("array len %d: %d bytes allocated", len(huge), n)
		hm := append(bytes.Clone(request[:10]), envelope...)
		hm = append(hm, 0, 0, 0, 0)
		hm = append(hm, cnt...)
		n = allocTmp(func() { _, err := DecodeRequest(hm); t.Log(err) })
		t.Logf("map len %d: %d bytes allocated", len(hm), n)
	}
	for _, tc := range roundTrips {
		b, _ := Encode(tc.in)
		n := allocTmp(func() { decoders[tc.family](b) })
		t.Logf("%s: %d bytes -> %d allocated (%.0f/byte)", tc.name, len(b), n, float64(n)/float64(len(b)))
	}
}
