package records

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// avroType is the part of a parsed Avro schema the codec needs beyond what
// goavro offers: field defaults (to fill what an older writer lacked) and
// field order (to write readable JSON).
type avroType struct {
	kind    string // "record", "array", "map", "union", or a primitive name
	name    string // full name of a record; kind otherwise
	fields  []avroField
	items   *avroType   // array items or map values
	members []*avroType // union members
}

type avroField struct {
	name   string
	typ    *avroType
	def    any // as parsed from JSON
	hasDef bool
}

var primitives = map[string]bool{
	"null": true, "boolean": true, "int": true, "long": true,
	"float": true, "double": true, "bytes": true, "string": true,
}

// parseSchema parses a schema file. goavro has already accepted it, so
// this only needs to understand the constructs used under schemas/.
func parseSchema(data []byte) (*avroType, error) {
	var raw any
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	return parseType(raw, "", map[string]*avroType{})
}

func parseType(raw any, ns string, names map[string]*avroType) (*avroType, error) {
	switch s := raw.(type) {
	case string:
		if primitives[s] {
			return &avroType{kind: s, name: s}, nil
		}
		full := s
		if !strings.Contains(s, ".") && ns != "" {
			full = ns + "." + s
		}
		if t, ok := names[full]; ok {
			return t, nil
		}
		if t, ok := names[s]; ok {
			return t, nil
		}
		return nil, fmt.Errorf("unknown type %q", s)
	case []any:
		u := &avroType{kind: "union", name: "union"}
		for _, m := range s {
			mt, err := parseType(m, ns, names)
			if err != nil {
				return nil, err
			}
			u.members = append(u.members, mt)
		}
		return u, nil
	case map[string]any:
		kind, _ := s["type"].(string)
		switch kind {
		case "record":
			name, _ := s["name"].(string)
			if space, _ := s["namespace"].(string); space != "" && !strings.Contains(name, ".") {
				name = space + "." + name
			} else if !strings.Contains(name, ".") && ns != "" {
				name = ns + "." + name
			}
			if i := strings.LastIndexByte(name, '.'); i >= 0 {
				ns = name[:i]
			}
			t := &avroType{kind: "record", name: name}
			names[name] = t // before the fields: a field may refer to it
			fields, _ := s["fields"].([]any)
			for _, f := range fields {
				fm, _ := f.(map[string]any)
				fname, _ := fm["name"].(string)
				ft, err := parseType(fm["type"], ns, names)
				if err != nil {
					return nil, fmt.Errorf("%s.%s: %w", name, fname, err)
				}
				def, hasDef := fm["default"]
				t.fields = append(t.fields, avroField{name: fname, typ: ft, def: def, hasDef: hasDef})
			}
			return t, nil
		case "array", "map":
			key := "items"
			if kind == "map" {
				key = "values"
			}
			it, err := parseType(s[key], ns, names)
			if err != nil {
				return nil, err
			}
			return &avroType{kind: kind, name: kind, items: it}, nil
		default:
			// A primitive with attributes, such as a logical type: its
			// natives are those of the underlying type.
			return parseType(kind, ns, names)
		}
	}
	return nil, fmt.Errorf("unsupported schema element %T", raw)
}

// fillDefaults adds, in place, every field that t declares with a default
// and that the native value v lacks: what a record written with an older
// version of the schema is missing. goavro resolves no schemas, so this is
// the reader's half of Avro schema resolution for added fields.
func fillDefaults(t *avroType, v any) {
	switch t.kind {
	case "record":
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		for _, f := range t.fields {
			if fv, ok := m[f.name]; ok {
				fillDefaults(f.typ, fv)
			} else if f.hasDef {
				m[f.name] = defaultNative(f.typ, f.def)
			}
		}
	case "array":
		items, _ := v.([]any)
		for _, it := range items {
			fillDefaults(t.items, it)
		}
	case "map":
		values, _ := v.(map[string]any)
		for _, it := range values {
			fillDefaults(t.items, it)
		}
	case "union":
		m, ok := v.(map[string]any)
		if !ok || len(m) != 1 {
			return
		}
		for name, mv := range m {
			for _, mt := range t.members {
				if mt.name == name {
					fillDefaults(mt, mv)
				}
			}
		}
	}
}

// defaultNative turns a default as written in a schema (JSON) into the
// native value goavro would have decoded.
func defaultNative(t *avroType, def any) any {
	switch t.kind {
	case "int":
		f, _ := def.(float64)
		return int32(f)
	case "long":
		f, _ := def.(float64)
		return int64(f)
	case "record":
		m, _ := def.(map[string]any)
		out := make(map[string]any, len(t.fields))
		for _, f := range t.fields {
			if fv, ok := m[f.name]; ok {
				out[f.name] = defaultNative(f.typ, fv)
			} else if f.hasDef {
				out[f.name] = defaultNative(f.typ, f.def)
			}
		}
		return out
	case "array":
		items, _ := def.([]any)
		out := make([]any, len(items))
		for i, it := range items {
			out[i] = defaultNative(t.items, it)
		}
		return out
	case "map":
		values, _ := def.(map[string]any)
		out := make(map[string]any, len(values))
		for k, it := range values {
			out[k] = defaultNative(t.items, it)
		}
		return out
	case "union":
		// The default of a union is a value of its first member.
		if len(t.members) == 0 || t.members[0].kind == "null" {
			return nil
		}
		return map[string]any{t.members[0].name: defaultNative(t.members[0], def)}
	}
	return def
}

// writeJSON writes the JSON value v (decoded with UseNumber) of type t to
// buf compactly, record fields in schema order and map keys sorted, so that
// the same value always reads the same way.
func writeJSON(buf *bytes.Buffer, t *avroType, v any) error {
	switch t.kind {
	case "record":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("record %s: got %T", t.name, v)
		}
		buf.WriteByte('{')
		n := 0
		for _, f := range t.fields {
			fv, ok := m[f.name]
			if !ok {
				continue
			}
			if n > 0 {
				buf.WriteByte(',')
			}
			n++
			_ = writeScalar(buf, f.name) // a string always encodes
			buf.WriteByte(':')
			if err := writeJSON(buf, f.typ, fv); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case "array":
		items, ok := v.([]any)
		if !ok {
			return fmt.Errorf("array: got %T", v)
		}
		buf.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := writeJSON(buf, t.items, it); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case "map":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("map: got %T", v)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			_ = writeScalar(buf, k)
			buf.WriteByte(':')
			if err := writeJSON(buf, t.items, m[k]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case "union":
		if v == nil {
			buf.WriteString("null")
			return nil
		}
		m, ok := v.(map[string]any)
		if !ok || len(m) != 1 {
			return fmt.Errorf("union: got %T", v)
		}
		for name, mv := range m {
			for _, mt := range t.members {
				if mt.name != name {
					continue
				}
				buf.WriteByte('{')
				_ = writeScalar(buf, name)
				buf.WriteByte(':')
				if err := writeJSON(buf, mt, mv); err != nil {
					return err
				}
				buf.WriteByte('}')
				return nil
			}
			return fmt.Errorf("union: no member %q", name)
		}
	default:
		return writeScalar(buf, v)
	}
	return nil
}

func writeScalar(buf *bytes.Buffer, v any) error {
	var tmp bytes.Buffer
	enc := json.NewEncoder(&tmp)
	enc.SetEscapeHTML(false) // keep selectors such as "a<b" readable
	if err := enc.Encode(v); err != nil {
		return err
	}
	buf.Write(bytes.TrimSuffix(tmp.Bytes(), []byte("\n")))
	return nil
}

// firstMissing returns the path of the first field without a default that
// the JSON value v (as encoding/json decodes it) lacks, or "". goavro only
// says "only found 3 of 4 fields"; this names the field.
func firstMissing(t *avroType, v any, path string) string {
	join := func(name string) string {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	switch t.kind {
	case "record":
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		for _, f := range t.fields {
			fv, ok := m[f.name]
			if !ok {
				if !f.hasDef {
					return join(f.name)
				}
				continue
			}
			if p := firstMissing(f.typ, fv, join(f.name)); p != "" {
				return p
			}
		}
	case "array":
		items, _ := v.([]any)
		for i, it := range items {
			if p := firstMissing(t.items, it, fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	case "map":
		values, _ := v.(map[string]any)
		for k, it := range values {
			if p := firstMissing(t.items, it, fmt.Sprintf("%s[%q]", path, k)); p != "" {
				return p
			}
		}
	case "union":
		m, _ := v.(map[string]any)
		for _, mt := range t.members {
			if mv, ok := m[mt.name]; ok && len(m) == 1 {
				return firstMissing(mt, mv, join(mt.name))
			}
		}
	}
	return ""
}
