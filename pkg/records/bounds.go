package records

import (
	"fmt"
	"math"
	"sync"

	"github.com/linkedin/goavro/v2"
)

// goavro reserves room for the item count an array or map block declares
// before it reads a single item: a corrupt count in a record of a few
// dozen bytes would make it allocate tens of megabytes (up to
// maxBlockItems items) before failing. checkBlockCounts walks the binary
// body first, the way goavro reads it, and refuses a block that declares
// more items than the bytes left could hold, so that what decoding
// allocates stays in proportion to the record's size. (The direct reader
// of avro_binary.go checks each count the same way as it reads it.)

// checkBlockCounts walks b, the Avro binary encoding of a value of type t,
// and returns an error for the first array or map block whose declared
// count the rest of b cannot hold. Where b is malformed in any other way it
// stops and returns nil, leaving it to goavro to say what is wrong.
func checkBlockCounts(t *avroType, b []byte) error {
	w := blockWalker{buf: b, size: len(b)}
	w.skip(t, 0)
	return w.err
}

type blockWalker struct {
	buf  []byte // what is left to read
	size int    // the length of the whole body, to say where a problem is
	err  error
}

// maxWalkDepth bounds the nesting the walker follows, in case a schema
// refers to itself; goavro reads deeper records itself.
const maxWalkDepth = 256

// skip reads past one value of type t. It returns false when it cannot go
// on: the input is malformed (w.err is set if a count is at fault).
func (w *blockWalker) skip(t *avroType, depth int) bool {
	if depth > maxWalkDepth {
		return false
	}
	switch t.kind {
	case "null":
		return true
	case "boolean":
		return w.take(1)
	case "int", "long":
		_, ok := w.long()
		return ok
	case "float":
		return w.take(4)
	case "double":
		return w.take(8)
	case "bytes", "string":
		n, ok := w.long()
		return ok && n >= 0 && w.take(n)
	case "record":
		for _, f := range t.fields {
			if !w.skip(f.typ, depth+1) {
				return false
			}
		}
		return true
	case "union":
		i, ok := w.long()
		if !ok || i < 0 || i >= int64(len(t.members)) {
			return false
		}
		return w.skip(t.members[i], depth+1)
	case "array", "map":
		itemSize := minEncodedSize(t.items)
		if t.kind == "map" {
			itemSize++ // the key, a string, takes at least its length
		}
		for {
			at := w.size - len(w.buf)
			n, ok := w.long()
			switch {
			case !ok:
				return false
			case n == 0:
				return true
			case n < 0:
				// A negative count is followed by the block's size in bytes.
				if n == math.MinInt64 {
					return false
				}
				n = -n
				if _, ok := w.long(); !ok {
					return false
				}
			}
			if itemSize == 0 || n > goavro.MaxBlockCount {
				// Items may take no bytes, so there is nothing to check; or
				// goavro refuses the count before it allocates anything.
				return false
			}
			if n > int64(len(w.buf)/itemSize) {
				w.err = fmt.Errorf("%s block at byte %d of the body declares %d items, more than the %d bytes after it can hold", t.kind, at, n, len(w.buf))
				return false
			}
			for range n {
				if t.kind == "map" && !w.skip(stringType, depth+1) {
					return false
				}
				if !w.skip(t.items, depth+1) {
					return false
				}
			}
		}
	}
	return false
}

var stringType = &avroType{kind: "string", name: "string"}

// take skips n bytes.
func (w *blockWalker) take(n int64) bool {
	if n > int64(len(w.buf)) {
		return false
	}
	w.buf = w.buf[n:]
	return true
}

// long reads a zig-zag varint exactly as goavro does (which takes any
// number of bytes), so that the walk stays in step with goavro's reading.
func (w *blockWalker) long() (int64, bool) {
	var value uint64
	var shift uint
	for i, b := range w.buf {
		value |= uint64(b&0x7F) << shift
		if b&0x80 == 0 {
			w.buf = w.buf[i+1:]
			return int64(value>>1) ^ -int64(value&1), true
		}
		shift += 7
	}
	return 0, false
}

// minSizes caches minEncodedSize; types are never changed once parsed.
var minSizes sync.Map // *avroType → int

// minEncodedSize returns the fewest bytes a value of type t takes in Avro
// binary.
func minEncodedSize(t *avroType) int {
	if n, ok := minSizes.Load(t); ok {
		return n.(int)
	}
	n := minSize(t, map[*avroType]bool{})
	minSizes.Store(t, n)
	return n
}

func minSize(t *avroType, visiting map[*avroType]bool) int {
	switch t.kind {
	case "boolean", "int", "long", "bytes", "string", "array", "map":
		return 1 // a byte, a varint, a length or the closing count
	case "float":
		return 4
	case "double":
		return 8
	case "record":
		if visiting[t] {
			return 0 // a record that holds itself: count it once
		}
		visiting[t] = true
		defer delete(visiting, t)
		n := 0
		for _, f := range t.fields {
			n += minSize(f.typ, visiting)
		}
		return n
	case "union":
		least := -1
		for _, m := range t.members {
			if n := minSize(m, visiting); least < 0 || n < least {
				least = n
			}
		}
		return 1 + max(least, 0) // the index, then the smallest member
	}
	return 0 // null
}
