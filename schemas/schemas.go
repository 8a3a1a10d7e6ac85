// Package schemas holds the Avro schemas of the values of Flotilla's topics,
// one file per topic value and version (for example health.v1.avsc), embedded
// into every binary so that no schema registry is needed at run time.
//
// Each file is a complete, self-contained schema in the "flotilla"
// namespace. A shipped file is never edited: a change is a new version file
// that only adds fields with defaults, and readers keep every version (see
// README.md). The codec that uses them is package records.
package schemas

import "embed"

// FS holds every schema file, *.avsc, at its root. File names are
// "<family>.v<version>.avsc"; the highest version of a family is the one
// writers use.
//
//go:embed *.avsc
var FS embed.FS
