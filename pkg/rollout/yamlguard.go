package rollout

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// This file holds what keeps the YAML decoder honest about any input: the
// line in every error of the YAML parser, and a bound on what aliases may
// make the decoder walk.

var (
	// plainName matches field names an error names as they are; others
	// are quoted.
	plainName     = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	parserLine    = regexp.MustCompile(`^yaml: line \d+: `)
	unknownAnchor = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)
)

// withLine makes an error of the YAML parser name its line, as ParseYAML
// promises. The parser leaves the line out of problems on the first line,
// of bytes it cannot read (invalid UTF-8, control characters) and of
// aliases to anchors never defined.
func withLine(data []byte, err error) error {
	msg := err.Error()
	rest, ok := strings.CutPrefix(msg, "yaml: ")
	if !ok || parserLine.MatchString(msg) {
		return err
	}
	at := badChar(data)
	if m := unknownAnchor.FindStringSubmatch(msg); m != nil {
		at = max(0, bytes.Index(data, []byte("*"+m[1])))
	}
	return &yamlError{msg: fmt.Sprintf("yaml: line %d: %s", lineOf(data, at), rest), err: err}
}

// lineOf returns the line of the byte at offset at, counting line breaks
// as YAML does: CR LF, CR, LF, NEL, LS and PS.
func lineOf(data []byte, at int) int {
	line := 1
	for i := 0; i < at; {
		r, size := utf8.DecodeRune(data[i:])
		switch r {
		case '\r':
			if i+1 < len(data) && data[i+1] == '\n' {
				size = 2
			}
			line++
		case '\n', 0x85, 0x2028, 0x2029:
			line++
		}
		i += size
	}
	return line
}

// yamlError is an error of the YAML parser, its message with the line.
type yamlError struct {
	msg string
	err error
}

func (e *yamlError) Error() string { return e.msg }
func (e *yamlError) Unwrap() error { return e.err }

// badChar returns the offset of the first character the YAML parser
// refuses to read, or 0.
func badChar(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return i
		case r == '\t' || r == '\n' || r == '\r' || r == 0x85,
			0x20 <= r && r <= 0x7E, 0xA0 <= r && r <= 0xD7FF, 0xE000 <= r && r <= 0xFFFD, 0x10000 <= r:
		default:
			return i // a control character
		}
		i += size
	}
	return 0
}

// checkAliases refuses a document whose aliases refer to a node that holds
// them, or expand it far beyond its own size. The YAML parser leaves
// aliases as they are written, pointing into the tree; the decoder follows
// them, so a cycle would make it recurse for ever, and a few aliases of a
// large node would make it walk (and report problems in) that node as
// many times: a small document could keep it busy for hours.
func checkAliases(doc *yaml.Node) error {
	c := aliasCheck{sizes: map[*yaml.Node]int{}}
	own := countNodes(doc)
	c.limit = 2*own + 1000
	c.size(doc)
	return c.err
}

type aliasCheck struct {
	sizes    map[*yaml.Node]int // expanded size of each anchored node; -1 while it is being sized
	expanded int                // nodes the aliases met so far stand for
	limit    int
	err      error
}

func countNodes(n *yaml.Node) int {
	total := 1
	for _, c := range n.Content {
		total += countNodes(c)
	}
	return total
}

// size returns how many nodes n stands for once aliases are expanded.
func (c *aliasCheck) size(n *yaml.Node) int {
	if c.err != nil {
		return 0
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		s, ok := c.sizes[n.Alias]
		switch {
		case ok && s < 0:
			c.err = fmt.Errorf("line %d: alias *%s refers to a node that holds it", n.Line, n.Value)
			return 0
		case !ok:
			s = c.size(n.Alias)
		}
		if c.expanded += s; c.expanded > c.limit {
			c.err = fmt.Errorf("line %d: too many aliases: they expand the document past %d nodes; write the values out", n.Line, c.limit)
			return 0
		}
		return s
	}
	if n.Anchor != "" {
		c.sizes[n] = -1
	}
	total := 1
	for _, child := range n.Content {
		total += c.size(child)
	}
	if n.Anchor != "" {
		c.sizes[n] = total
	}
	return total
}
