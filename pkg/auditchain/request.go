package auditchain

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// RequestHeader is the record header in which the planner keeps a copy of
// the request a row answers: on the spec row of an accepted rollout (and
// the header row of a rejected one), and on the header row that applied a
// control. The header is hashed with the row, in its chain, so the record
// of who asked for what, and when, outlives the request's own record,
// which a tombstone on the compacted requests topic could erase.
const RequestHeader = "flotilla-request"

// RequestCopy is what a row keeps of its request: where it was, the
// SHA-256 of its value as read, and its envelope's ID, principal and time.
type RequestCopy struct {
	Key       string    `json:"key"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	SHA256    string    `json:"sha256"`
	ID        string    `json:"id"`
	Principal string    `json:"principal"`
	Time      time.Time `json:"time"`
}

// CopyOf returns the copy of a request record with its decoded envelope's
// ID, principal and time.
func CopyOf(r *kgo.Record, id, principal string, at time.Time) RequestCopy {
	sum := sha256.Sum256(r.Value)
	return RequestCopy{Key: string(r.Key), Partition: r.Partition, Offset: r.Offset, SHA256: hex.EncodeToString(sum[:]),
		ID: id, Principal: principal, Time: at.UTC()}
}

// Matches reports whether value is the request the copy was made of.
func (c RequestCopy) Matches(value []byte) bool {
	sum := sha256.Sum256(value)
	return hex.EncodeToString(sum[:]) == c.SHA256
}

// AddRequestCopy puts the copy in r's headers.
func AddRequestCopy(r *kgo.Record, c RequestCopy) {
	b, _ := json.Marshal(c) // a struct of strings, numbers and a time: cannot fail
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: RequestHeader, Value: b})
}

// RequestCopyOf returns the request copy of a record, if it has one.
func RequestCopyOf(r *kgo.Record) (RequestCopy, bool) {
	for _, h := range r.Headers {
		if h.Key == RequestHeader {
			var c RequestCopy
			if json.Unmarshal(h.Value, &c) == nil {
				return c, true
			}
		}
	}
	return RequestCopy{}, false
}
