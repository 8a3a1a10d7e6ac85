package records

import (
	"fmt"
	"slices"
	"unicode/utf8"
)

// invalidUTF8 returns the path of the first string in the native value v
// (a map key or a value) that is not valid UTF-8, or "". Go strings, and
// so records in binary, may hold any bytes; JSON strings may not, and
// goavro would write U+FFFD in their place.
func invalidUTF8(v any, path string) string {
	join := func(name string) string {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	switch x := v.(type) {
	case string:
		if !utf8.ValidString(x) {
			return path
		}
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if !utf8.ValidString(k) {
				return fmt.Sprintf("%s[%q]", path, k)
			}
			if p := invalidUTF8(x[k], join(k)); p != "" {
				return p
			}
		}
	case []any:
		for i, it := range x {
			if p := invalidUTF8(it, fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	}
	return ""
}
