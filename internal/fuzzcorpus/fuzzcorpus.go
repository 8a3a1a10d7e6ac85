// Package fuzzcorpus writes seed corpora for go test -fuzz: the files under
// a package's testdata/fuzz/<target>/, which every test run also replays.
// The packages' TestWriteFuzzCorpus (behind -write-fuzz-corpus) use it to
// rewrite their seeds.
package fuzzcorpus

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// unsafeName matches what a corpus file name must not hold.
var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Write writes one corpus entry of target, named name, in the format of go
// test -fuzz: each value is a Go literal of the target's argument, such as
// `string("a=b")` or `[]byte("\x01")`.
func Write(t testing.TB, target, name string, values ...string) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := "go test fuzz v1\n" + strings.Join(values, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, unsafeName.ReplaceAllString(name, "_")), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
