package records

import (
	"bytes"
	"fmt"
	"math"
	"time"
)

// This file holds the helpers that turn Go values into goavro natives and
// back. Natives are what goavro encodes and decodes: map[string]any for
// records and maps, []any for arrays, nil or a one-key map for unions.

// millis is a time as Avro timestamp-millis: the zero time is 0.
func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func stringsNative(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func intsNative(s []int) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func stringMapNative(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// nativeReader walks a decoded native value. It keeps the first problem it
// meets and hands out zero values after that, so mapping code reads
// straight through and checks once at the end. It never panics on a value
// of an unexpected shape: decoding must survive any input.
type nativeReader struct{ err error }

func (r *nativeReader) fail(path, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
	}
}

// rec is one record inside a native value; m is nil once reading failed.
type rec struct {
	r    *nativeReader
	path string
	m    map[string]any
}

func (r *nativeReader) record(v any, path string) rec {
	m, ok := v.(map[string]any)
	if !ok && r.err == nil {
		r.fail(path, "want a record, got %T", v)
	}
	return rec{r: r, path: path, m: m}
}

func (x rec) sub(name string) string {
	if x.path == "" {
		return name
	}
	return x.path + "." + name
}

// get returns a field's value; a missing field is a failure, since the
// defaults of the newest schema have already been filled in.
func (x rec) get(name string) (any, bool) {
	if x.m == nil {
		return nil, false
	}
	v, ok := x.m[name]
	if !ok {
		x.r.fail(x.sub(name), "missing")
	}
	return v, ok
}

func (x rec) str(name string) string {
	v, ok := x.get(name)
	if !ok {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		x.r.fail(x.sub(name), "want a string, got %T", v)
	}
	return s
}

func (x rec) bytes(name string) []byte {
	v, ok := x.get(name)
	if !ok {
		return nil
	}
	switch b := v.(type) {
	case []byte:
		// goavro's bytes are a slice of the record: copy them, so that the
		// value does not change when the caller reuses the record's memory
		// (nor an append to it write over the record). Empty is nil.
		if len(b) == 0 {
			return nil
		}
		return bytes.Clone(b)
	case string: // a default, as JSON gives it
		if b == "" {
			return nil
		}
		return []byte(b)
	}
	x.r.fail(x.sub(name), "want bytes, got %T", v)
	return nil
}

func (x rec) boolean(name string) bool {
	v, ok := x.get(name)
	if !ok {
		return false
	}
	b, ok := v.(bool)
	if !ok {
		x.r.fail(x.sub(name), "want a boolean, got %T", v)
	}
	return b
}

// integer accepts every form an integer takes among natives: int32 and
// int64 from goavro, float64 from a default parsed from JSON.
func (r *nativeReader) integer(v any, path string) int64 {
	switch n := v.(type) {
	case int32:
		return int64(n)
	case int64:
		return n
	case int:
		return int64(n)
	case float64:
		if n == math.Trunc(n) && math.Abs(n) < 1<<63 {
			return int64(n)
		}
	case time.Time: // a timestamp field read as an integer
		return n.UnixMilli()
	}
	r.fail(path, "want an integer, got %T", v)
	return 0
}

func (x rec) long(name string) int64 {
	v, ok := x.get(name)
	if !ok {
		return 0
	}
	return x.r.integer(v, x.sub(name))
}

func (x rec) int(name string) int { return int(x.long(name)) }

// maxMillis is the longest duration, in whole milliseconds, that
// time.Duration holds.
const maxMillis = math.MaxInt64 / int64(time.Millisecond)

// duration reads milliseconds. Values beyond what time.Duration holds
// saturate rather than wrap.
func (x rec) duration(name string) time.Duration {
	ms := x.long(name)
	switch {
	case ms > maxMillis:
		ms = maxMillis
	case ms < -maxMillis:
		ms = -maxMillis
	}
	return time.Duration(ms) * time.Millisecond
}

// time reads a timestamp-millis: goavro gives a time.Time, a default a
// number. 0 is the zero time.Time; any other value is in UTC.
func (x rec) time(name string) time.Time {
	v, ok := x.get(name)
	if !ok {
		return time.Time{}
	}
	var ms int64
	if t, ok := v.(time.Time); ok {
		ms = t.UnixMilli()
	} else {
		ms = x.r.integer(v, x.sub(name))
	}
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func (x rec) array(name string) []any {
	v, ok := x.get(name)
	if !ok {
		return nil
	}
	a, ok := v.([]any)
	if !ok {
		x.r.fail(x.sub(name), "want an array, got %T", v)
	}
	return a
}

// strs reads an array of strings; empty is nil.
func (x rec) strs(name string) []string {
	a := x.array(name)
	if len(a) == 0 {
		return nil
	}
	out := make([]string, len(a))
	for i, v := range a {
		s, ok := v.(string)
		if !ok {
			x.r.fail(fmt.Sprintf("%s[%d]", x.sub(name), i), "want a string, got %T", v)
		}
		out[i] = s
	}
	return out
}

// ints reads an array of integers; empty is nil.
func (x rec) ints(name string) []int {
	a := x.array(name)
	if len(a) == 0 {
		return nil
	}
	out := make([]int, len(a))
	for i, v := range a {
		out[i] = int(x.r.integer(v, fmt.Sprintf("%s[%d]", x.sub(name), i)))
	}
	return out
}

// recs reads an array of records.
func (x rec) recs(name string) []rec {
	a := x.array(name)
	out := make([]rec, len(a))
	for i, v := range a {
		out[i] = x.r.record(v, fmt.Sprintf("%s[%d]", x.sub(name), i))
	}
	return out
}

// strMap reads a map of strings; empty is nil.
func (x rec) strMap(name string) map[string]string {
	v, ok := x.get(name)
	if !ok {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		x.r.fail(x.sub(name), "want a map, got %T", v)
		return nil
	}
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, mv := range m {
		s, ok := mv.(string)
		if !ok {
			x.r.fail(fmt.Sprintf("%s[%q]", x.sub(name), k), "want a string, got %T", mv)
		}
		out[k] = s
	}
	return out
}

func (x rec) record(name string) rec {
	v, ok := x.get(name)
	if !ok {
		return rec{r: x.r, path: x.sub(name)}
	}
	return x.r.record(v, x.sub(name))
}

// union reads a union of records: the full name of the member present
// ("" for null) and its record.
func (x rec) union(name string) (string, rec) {
	v, ok := x.get(name)
	if !ok || v == nil {
		return "", rec{r: x.r, path: x.sub(name)}
	}
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		x.r.fail(x.sub(name), "want a union value, got %T", v)
		return "", rec{r: x.r, path: x.sub(name)}
	}
	for member, mv := range m {
		return member, x.r.record(mv, x.sub(name)+"."+member)
	}
	return "", rec{} // unreachable: m has one key
}
