package records

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unique"
)

// This file is the Avro binary encoding, by hand, of the few types the
// schemas use: long, int, boolean, string, bytes, arrays, maps of strings
// and unions of records. avro_records.go uses it to write and read each
// record field by field, straight from and to the Go structs: going
// through goavro's natives (map[string]any) cost more CPU than anything
// else in the services.
//
// It writes exactly the bytes goavro writes, and reads what goavro reads,
// failing where goavro (with checkBlockCounts in front) fails.

// writer appends the Avro binary encoding of values to buf. It keeps the
// first error and ignores what follows it.
type writer struct {
	buf []byte
	err error
}

func (w *writer) long(v int64) {
	u := uint64(v<<1) ^ uint64(v>>63) // zig-zag
	for u >= 0x80 {
		w.buf = append(w.buf, byte(u)|0x80)
		u >>= 7
	}
	w.buf = append(w.buf, byte(u))
}

// int writes an Avro int: v must fit 32 bits.
func (w *writer) int(field string, v int) {
	if int(int32(v)) != v {
		if w.err == nil {
			w.err = fmt.Errorf("field %q: %d does not fit a 32-bit int", field, v)
		}
		return
	}
	w.long(int64(v)) // a 32-bit zig-zag varint is the same as a 64-bit one
}

func (w *writer) boolean(v bool) {
	if v {
		w.buf = append(w.buf, 1)
	} else {
		w.buf = append(w.buf, 0)
	}
}

func (w *writer) str(s string) {
	w.long(int64(len(s)))
	w.buf = append(w.buf, s...)
}

func (w *writer) bytes(b []byte) {
	w.long(int64(len(b)))
	w.buf = append(w.buf, b...)
}

// time writes a timestamp-millis; the zero time is 0.
func (w *writer) time(t time.Time) { w.long(millis(t)) }

// duration writes whole milliseconds.
func (w *writer) duration(d time.Duration) { w.long(d.Milliseconds()) }

// union writes the index of the union member that follows.
func (w *writer) union(index int) { w.long(int64(index)) }

// Arrays and maps are written as goavro writes them: blocks of at most
// maxBlockItems items (one block in practice), each led by its positive
// count, then a 0 count; an empty one is just the 0.

func writeArray[T any](w *writer, items []T, write func(*writer, *T)) {
	for len(items) > 0 {
		n := min(len(items), maxBlockItems)
		w.long(int64(n))
		for i := range items[:n] {
			write(w, &items[i])
		}
		items = items[n:]
	}
	w.long(0)
}

func (w *writer) strs(s []string) {
	writeArray(w, s, func(w *writer, s *string) { w.str(*s) })
}

func (w *writer) ints(field string, s []int) {
	writeArray(w, s, func(w *writer, v *int) { w.int(field, *v) })
}

func (w *writer) strMap(m map[string]string) {
	left := len(m)
	inBlock := 0
	for k, v := range m {
		if inBlock == 0 {
			inBlock = min(left, maxBlockItems)
			w.long(int64(inBlock))
		}
		w.str(k)
		w.str(v)
		inBlock--
		left--
	}
	w.long(0)
}

// reader reads the Avro binary body of a record. It keeps the first
// error, and reads zero values after it, so that the code reading a record
// goes straight through and checks once at the end (see close). It never
// panics, and never allocates for a length or a count before checking that
// the bytes left can hold it.
//
// The error says where it is ("spec.phases[2].name: ..."): each nested
// record, array or map is entered and left, and the path to the error is
// put together as the reader leaves them, so that it costs nothing until
// there is an error.
type reader struct {
	buf   []byte // the body
	pos   int    // where the next value starts in buf
	err   error  // the first problem, without the path to it
	depth int    // how many records, arrays and maps the reader is in
	// errDepth is how many of them the problem is in and the reader has
	// not left yet; where holds the path from there to the problem,
	// innermost first.
	errDepth int
	where    []string
}

func (r *reader) enter() { r.depth++ }

// leave leaves what the reader entered last, named name in the path.
func (r *reader) leave(name string) {
	if r.err != nil && r.depth == r.errDepth {
		r.where = append(r.where, name)
		r.errDepth--
	}
	r.depth--
}

// fail records the first problem, at field ("" when the path says it
// all: an array item, a map value).
func (r *reader) fail(field, format string, args ...any) {
	if r.err != nil {
		return
	}
	r.err = fmt.Errorf(format, args...)
	r.errDepth = r.depth
	if field != "" {
		r.where = append(r.where, field)
	}
}

// close returns the reader's error, if any, with the path to it; bytes
// left after the record are one.
func (r *reader) close() error {
	if r.err == nil {
		if left := len(r.buf) - r.pos; left > 0 {
			return fmt.Errorf("%d bytes after the end of the record", left)
		}
		return nil
	}
	if len(r.where) == 0 {
		return r.err
	}
	slices.Reverse(r.where)
	return fmt.Errorf("%s: %w", strings.Join(r.where, "."), r.err)
}

// varint reads a varint as goavro does: any number of bytes, the bits
// beyond 64 dropped.
func (r *reader) varint(field string) uint64 {
	if r.err != nil {
		return 0
	}
	var v uint64
	var shift uint
	for i := r.pos; i < len(r.buf); i++ {
		b := r.buf[i]
		v |= uint64(b&0x7F) << shift
		if b < 0x80 {
			r.pos = i + 1
			return v
		}
		shift += 7
	}
	r.fail(field, "truncated: the body ends in the varint at byte %d", r.pos)
	return 0
}

func (r *reader) long(field string) int64 {
	u := r.varint(field)
	return int64(u>>1) ^ -int64(u&1)
}

// int reads an Avro int: like goavro, it keeps the low 32 bits of a
// varint that holds more.
func (r *reader) int(field string) int {
	u := r.varint(field)
	return int(int32(u>>1) ^ -int32(u&1))
}

func (r *reader) boolean(field string) bool {
	if r.err != nil {
		return false
	}
	if r.pos >= len(r.buf) {
		r.fail(field, "truncated: the body ends before the boolean at byte %d", r.pos)
		return false
	}
	b := r.buf[r.pos]
	if b > 1 {
		r.fail(field, "boolean byte %d at byte %d of the body, want 0 or 1", b, r.pos)
		return false
	}
	r.pos++
	return b == 1
}

// raw reads the length-prefixed bytes of a string or a bytes value, as a
// slice of the body.
func (r *reader) raw(field string) []byte {
	at := r.pos
	n := r.long(field)
	switch {
	case r.err != nil:
		return nil
	case n < 0:
		r.fail(field, "negative length %d at byte %d of the body", n, at)
		return nil
	case n > int64(len(r.buf)-r.pos):
		r.fail(field, "truncated: length %d at byte %d of the body, only %d bytes after it", n, at, len(r.buf)-r.pos)
		return nil
	}
	b := r.buf[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return b
}

// str reads a string: a copy, never memory of the body.
func (r *reader) str(field string) string { return string(r.raw(field)) }

// word reads a string that many records repeat — a state, a principal, a
// version, a label — as one shared copy (unique.Make): a service holding a
// fleet's records then holds each such string once, not once per record.
func (r *reader) word(field string) string {
	b := r.raw(field)
	if len(b) == 0 || len(b) > maxWord {
		return string(b)
	}
	return unique.Make(string(b)).Value()
}

// maxWord is the longest string word shares; longer ones are rarely repeated.
const maxWord = 64

// bytes reads bytes: a copy, never memory of the body; empty is nil.
func (r *reader) bytes(field string) []byte {
	if b := r.raw(field); len(b) > 0 {
		return bytes.Clone(b)
	}
	return nil
}

// time reads a timestamp-millis: 0 is the zero time.Time; any other value
// is in UTC.
func (r *reader) time(field string) time.Time {
	if ms := r.long(field); ms != 0 {
		return time.UnixMilli(ms).UTC()
	}
	return time.Time{}
}

// duration reads milliseconds. Values beyond what time.Duration holds
// saturate rather than wrap.
func (r *reader) duration(field string) time.Duration {
	ms := min(max(r.long(field), -maxMillis), maxMillis)
	return time.Duration(ms) * time.Millisecond
}

// union reads the index of a union's member, one of n.
func (r *reader) union(field string, n int) int {
	at := r.pos
	i := r.long(field)
	if r.err == nil && (i < 0 || i >= int64(n)) {
		r.fail(field, "union index %d at byte %d of the body: index ought to be between 0 and %d", i, at, n-1)
	}
	if r.err != nil {
		return -1
	}
	return int(i)
}

// block reads the item count of the next block of the array or map the
// reader entered last: 0 at the end. Each item takes at least size bytes:
// a count that the bytes left cannot hold is an error before anything is
// allocated for it (see checkBlockCounts, which does the same for goavro).
func (r *reader) block(kind string, size int) int {
	size = max(size, 1) // never divide by zero, whatever a caller passes
	at := r.pos
	n := r.long("")
	if n < 0 {
		if n == math.MinInt64 {
			r.fail("", "%s block at byte %d of the body: count %d, which cannot be made positive", kind, at, n)
			return 0
		}
		n = -n
		r.long("") // the block's size in bytes, which nothing needs
	}
	switch left := len(r.buf) - r.pos; {
	case r.err != nil:
		return 0
	case n > maxBlockItems:
		r.fail("", "%s block at byte %d of the body: block count exceeds MaxBlockCount: %d > %d", kind, at, n, maxBlockItems)
		return 0
	case n > int64(left/size):
		r.fail("", "%s block at byte %d of the body declares %d items, more than the %d bytes after it can hold", kind, at, n, left)
		return 0
	}
	return int(n)
}

// record reads a nested record, named field in the path of its errors.
func record[T any](r *reader, field string, read func(*reader) T) T {
	r.enter()
	v := read(r)
	r.leave(field)
	return v
}

// readArray reads an array of items that each take at least size bytes
// (see zeroSize); empty is nil.
func readArray[T any](r *reader, field string, size int, read func(*reader) T) []T {
	r.enter()
	var out []T
	for n := r.block("array", size); n > 0; n = r.block("array", size) {
		if out == nil {
			out = make([]T, 0, n)
		}
		for range n {
			out = append(out, read(r))
			if r.err != nil {
				r.leave(field + "[" + strconv.Itoa(len(out)-1) + "]")
				return nil
			}
		}
	}
	r.leave(field)
	return out
}

// strs reads an array of strings; empty is nil.
func (r *reader) strs(field string) []string {
	return readArray(r, field, 1, func(r *reader) string { return r.str("") })
}

// ints reads an array of ints; empty is nil.
func (r *reader) ints(field string) []int {
	return readArray(r, field, 1, func(r *reader) int { return r.int("") })
}

// strMap reads a map of strings; empty is nil. A key twice is an error,
// as in goavro.
func (r *reader) strMap(field string) map[string]string {
	r.enter()
	var m map[string]string
	for n := r.block("map", 2); n > 0; n = r.block("map", 2) { // a key and a value, a byte each at least
		if m == nil {
			m = make(map[string]string, n)
		}
		for range n {
			k := r.word("")
			if _, ok := m[k]; ok && r.err == nil {
				r.fail("", "duplicate key %q", k)
			}
			if r.err != nil {
				r.leave(field)
				return nil
			}
			m[k] = r.word("")
			if r.err != nil {
				r.leave(field + "[" + strconv.Quote(k) + "]")
				return nil
			}
		}
	}
	r.leave(field)
	return m
}

// zeroSize is the size of the zero value of a record as write writes it:
// the fewest bytes an item of an array of such records takes, since every
// field at its zero value takes the fewest bytes it can (one).
func zeroSize[T any](write func(*writer, *T)) int {
	var w writer
	var zero T
	write(&w, &zero)
	return len(w.buf)
}
