// Package selector parses and evaluates label selectors in the Kubernetes
// syntax, which rollouts use to pick their targets and phases from the fleet
// inventory:
//
//	env=prod,cloud in (aws,azure),region=eu-*,!legacy
//
// A selector is a comma-separated list of requirements, all of which must
// hold for a set of labels to match:
//
//	k=v, k==v      k is present and its value matches v
//	k!=v           k is absent, or its value does not match v
//	k in (a,b)     k is present and its value matches a or b
//	k notin (a,b)  k is absent, or its value matches neither a nor b
//	k              k is present
//	!k             k is absent
//
// Beyond Kubernetes, values may hold '*' as a wildcard matching any run of
// characters (including none), so "region=eu-*" matches "eu-west-1".
//
// The package is hand-written so that Flotilla does not depend on the
// Kubernetes libraries.
package selector

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Selector is a parsed label selector. The zero value is the empty
// selector, which matches every set of labels. A Selector is immutable and
// safe for concurrent use.
type Selector struct {
	reqs []requirement // sorted by their canonical form, without duplicates
}

type operator int

const (
	opEquals operator = iota
	opNotEquals
	opIn
	opNotIn
	opExists
	opNotExists
)

type requirement struct {
	key    string
	op     operator
	values []string // sorted and deduplicated; exactly one for opEquals and opNotEquals
}

// Parse parses a label selector. An empty or all-whitespace string yields
// the empty selector, which matches everything.
//
// Keys follow the Kubernetes rules for label keys: an optional prefix that is
// a lowercase DNS subdomain of at most 253 characters followed by '/', then
// a name of 1-63 letters, digits, '.', '_' or '-' that starts and ends with a
// letter or digit. Values are at most 63 letters, digits, '.', '_', '-' or
// '*' (the wildcard); after '=', '==' and '!=' a value may be empty
// ("k=" matches a label whose value is empty), inside "in (...)" and
// "notin (...)" it may not, and a list holds at least one value.
//
// Parse fails with a *SyntaxError naming the selector, the column (1-based,
// in characters) at which the problem was found and what was expected
// there, for example:
//
//	selector "env=prod,cloud in (aws": at column 23: expected ',' or ')', found end of input
func Parse(s string) (Selector, error) {
	p := parser{input: s}
	p.next()
	if p.tok.kind == tokEOF {
		return Selector{}, nil
	}
	var reqs []requirement
	for {
		r, err := p.requirement()
		if err != nil {
			return Selector{}, err
		}
		reqs = append(reqs, r)
		switch p.tok.kind {
		case tokEOF:
			return newSelector(reqs), nil
		case tokComma:
			p.next()
		default:
			return Selector{}, p.errorf(p.tok, "expected ',' or end of input, found %s", p.tok)
		}
	}
}

// MustParse is like Parse but panics if s is not a valid selector. It is
// meant for selectors written in the code, such as in tests.
func MustParse(s string) Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

func newSelector(reqs []requirement) Selector {
	// The requirements are a conjunction, so their order carries no meaning:
	// sort them to give every selector one canonical form.
	slices.SortFunc(reqs, func(a, b requirement) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return strings.Compare(a.String(), b.String())
	})
	reqs = slices.CompactFunc(reqs, func(a, b requirement) bool { return a.String() == b.String() })
	return Selector{reqs: reqs}
}

// Matches reports whether labels satisfy every requirement of the
// selector. A nil map is a set with no labels. The empty selector matches
// everything.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		if !r.matches(labels) {
			return false
		}
	}
	return true
}

// Required calls fn with the key of each requirement that only labels
// holding that key can meet with one of some values (k=v and k in (a,b)),
// and a test of a value against them (wildcards included), until fn
// returns false. An index of labels by key and value narrows a search with
// it to the clusters holding one of those values, rather than matching
// every cluster; Matches still decides.
func (s Selector) Required(fn func(key string, matches func(value string) bool) bool) {
	for _, r := range s.reqs {
		if r.op != opEquals && r.op != opIn {
			continue
		}
		if !fn(r.key, r.anyValueMatches) {
			return
		}
	}
}

// Empty reports whether the selector has no requirements, and so matches
// everything.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// String returns the selector's canonical form: requirements sorted by key
// and joined by ',' without spaces, "==" written "=", the values of a list
// sorted and deduplicated. Parsing the canonical form yields an equivalent
// selector with the same canonical form. The empty selector is "".
func (s Selector) String() string {
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

func (r requirement) matches(labels map[string]string) bool {
	v, ok := labels[r.key]
	switch r.op {
	case opExists:
		return ok
	case opNotExists:
		return !ok
	case opEquals, opIn:
		return ok && r.anyValueMatches(v)
	default: // opNotEquals, opNotIn: as in Kubernetes, an absent key satisfies them.
		return !ok || !r.anyValueMatches(v)
	}
}

func (r requirement) anyValueMatches(v string) bool {
	for _, pattern := range r.values {
		if glob(pattern, v) {
			return true
		}
	}
	return false
}

func (r requirement) String() string {
	switch r.op {
	case opEquals:
		return r.key + "=" + r.values[0]
	case opNotEquals:
		return r.key + "!=" + r.values[0]
	case opIn:
		return r.key + " in (" + strings.Join(r.values, ",") + ")"
	case opNotIn:
		return r.key + " notin (" + strings.Join(r.values, ",") + ")"
	case opExists:
		return r.key
	default:
		return "!" + r.key
	}
}

// glob reports whether s matches pattern, in which '*' matches any run of
// characters and every other character matches itself. It is path.Match
// restricted to '*', except that '*' also matches '/': label values are not
// paths.
func glob(pattern, s string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == s
	}
	parts := strings.Split(pattern, "*")
	first, last := parts[0], parts[len(parts)-1]
	if !strings.HasPrefix(s, first) {
		return false
	}
	s = s[len(first):]
	// Taking each middle part at its leftmost occurrence leaves the most
	// room for the parts after it, so no backtracking is needed.
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, last)
}

// SyntaxError is the error Parse returns for a malformed selector.
type SyntaxError struct {
	Selector string // the selector as given
	Column   int    // 1-based column, in characters, where the problem was found
	Msg      string // what is wrong there
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("selector %q: at column %d: %s", e.Selector, e.Column, e.Msg)
}

type tokenKind int

const (
	tokEOF tokenKind = iota
	tokIdent
	tokEquals       // =
	tokDoubleEquals // ==
	tokNotEquals    // !=
	tokBang         // !
	tokComma
	tokOpen  // (
	tokClose // )
)

type token struct {
	kind tokenKind
	text string
	pos  int // byte offset into the input
}

func (t token) String() string {
	if t.kind == tokEOF {
		return "end of input"
	}
	return fmt.Sprintf("%q", t.text)
}

type parser struct {
	input string
	pos   int // byte offset of the next token to scan
	tok   token
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// isPunct reports whether c ends an identifier. Everything else, including
// characters that are invalid in keys and values, is gathered into an
// identifier so that the error can quote the whole word.
func isPunct(c byte) bool {
	return c == '!' || c == '=' || c == ',' || c == '(' || c == ')'
}

func (p *parser) next() {
	for p.pos < len(p.input) && isSpace(p.input[p.pos]) {
		p.pos++
	}
	start := p.pos
	if p.pos == len(p.input) {
		p.tok = token{kind: tokEOF, pos: start}
		return
	}
	kind := tokIdent
	switch c := p.input[p.pos]; c {
	case '=':
		kind = tokEquals
		p.pos++
		if p.pos < len(p.input) && p.input[p.pos] == '=' {
			kind = tokDoubleEquals
			p.pos++
		}
	case '!':
		kind = tokBang
		p.pos++
		if p.pos < len(p.input) && p.input[p.pos] == '=' {
			kind = tokNotEquals
			p.pos++
		}
	case ',':
		kind = tokComma
		p.pos++
	case '(':
		kind = tokOpen
		p.pos++
	case ')':
		kind = tokClose
		p.pos++
	default:
		for p.pos < len(p.input) && !isSpace(p.input[p.pos]) && !isPunct(p.input[p.pos]) {
			p.pos++
		}
	}
	p.tok = token{kind: kind, text: p.input[start:p.pos], pos: start}
}

func (p *parser) errorf(at token, format string, args ...any) error {
	return &SyntaxError{
		Selector: p.input,
		Column:   utf8.RuneCountInString(p.input[:at.pos]) + 1,
		Msg:      fmt.Sprintf(format, args...),
	}
}

func (p *parser) requirement() (requirement, error) {
	if p.tok.kind == tokBang {
		p.next()
		key, err := p.key()
		if err != nil {
			return requirement{}, err
		}
		return requirement{key: key, op: opNotExists}, nil
	}
	key, err := p.key()
	if err != nil {
		return requirement{}, err
	}
	switch {
	case p.tok.kind == tokEOF || p.tok.kind == tokComma:
		return requirement{key: key, op: opExists}, nil
	case p.tok.kind == tokEquals || p.tok.kind == tokDoubleEquals || p.tok.kind == tokNotEquals:
		op := opEquals
		if p.tok.kind == tokNotEquals {
			op = opNotEquals
		}
		p.next()
		value := ""
		switch p.tok.kind {
		case tokIdent:
			if value, err = p.value(); err != nil {
				return requirement{}, err
			}
		case tokEOF, tokComma: // an empty value
		default:
			return requirement{}, p.errorf(p.tok, "expected a value, found %s", p.tok)
		}
		return requirement{key: key, op: op, values: []string{value}}, nil
	case p.tok.kind == tokIdent && (p.tok.text == "in" || p.tok.text == "notin"):
		op := opIn
		if p.tok.text == "notin" {
			op = opNotIn
		}
		p.next()
		values, err := p.list()
		if err != nil {
			return requirement{}, err
		}
		return requirement{key: key, op: op, values: values}, nil
	default:
		return requirement{}, p.errorf(p.tok, "expected '=', '==', '!=', 'in', 'notin', ',' or end of input after key %q, found %s", key, p.tok)
	}
}

// list parses "(v1, v2, ...)" and returns its values sorted and deduplicated.
func (p *parser) list() ([]string, error) {
	if p.tok.kind != tokOpen {
		return nil, p.errorf(p.tok, "expected '(', found %s", p.tok)
	}
	p.next()
	var values []string
	for {
		if p.tok.kind != tokIdent {
			return nil, p.errorf(p.tok, "expected a value, found %s", p.tok)
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		values = append(values, v)
		switch p.tok.kind {
		case tokComma:
			p.next()
		case tokClose:
			p.next()
			slices.Sort(values)
			return slices.Compact(values), nil
		default:
			return nil, p.errorf(p.tok, "expected ',' or ')', found %s", p.tok)
		}
	}
}

// key consumes an identifier token that must be a valid label key.
func (p *parser) key() (string, error) {
	if p.tok.kind != tokIdent {
		return "", p.errorf(p.tok, "expected a key, found %s", p.tok)
	}
	k := p.tok.text
	if msg := checkKey(k); msg != "" {
		return "", p.errorf(p.tok, "invalid key %q: %s", k, msg)
	}
	p.next()
	return k, nil
}

// value consumes an identifier token that must be a valid value.
func (p *parser) value() (string, error) {
	v := p.tok.text
	if len(v) > 63 {
		return "", p.errorf(p.tok, "invalid value %q: longer than 63 characters", v)
	}
	for i := 0; i < len(v); i++ {
		if !isNameChar(v[i]) && v[i] != '*' {
			return "", p.errorf(p.tok, "invalid value %q: may hold only letters, digits, '.', '_', '-' and '*'", v)
		}
	}
	p.next()
	return v, nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isNameChar(c byte) bool { return isAlnum(c) || c == '.' || c == '_' || c == '-' }

// checkKey returns what is wrong with a label key, or "" if nothing is.
func checkKey(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name = k
	}
	if hasPrefix {
		switch {
		case prefix == "":
			return "empty prefix before '/'"
		case len(prefix) > 253:
			return "prefix longer than 253 characters"
		case !isDNSSubdomain(prefix):
			return fmt.Sprintf("prefix %q is not a lowercase DNS subdomain (labels of a-z, 0-9 and '-', separated by '.')", prefix)
		case strings.Contains(name, "/"):
			return "more than one '/'"
		}
	}
	switch {
	case name == "":
		return "empty name after '/'"
	case len(name) > 63:
		return "name longer than 63 characters"
	}
	for i := 0; i < len(name); i++ {
		if !isNameChar(name[i]) {
			return "name may hold only letters, digits, '.', '_' and '-'"
		}
	}
	if !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
		return "name must start and end with a letter or digit"
	}
	return ""
}

func isDNSSubdomain(s string) bool {
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
