package deadletter

import (
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Pending holds the unusable records of a topic that every copy of a
// service reads whole (a table: the inventory, the policies, the claims),
// by partition, until the copy that owns that partition number of its
// group's topic takes them to set them aside: one copy sets a record
// aside, not every copy. It keeps at most MaxPending per partition — a
// flood of bad records is announced by its first ones — and is safe for
// concurrent use.
type Pending struct {
	mu      sync.Mutex
	records map[int32][]pending
}

type pending struct {
	r      *kgo.Record
	reason error
}

// MaxPending bounds the records Pending keeps per partition.
const MaxPending = 100

// Add keeps r, unusable for reason.
func (p *Pending) Add(r *kgo.Record, reason error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.records == nil {
		p.records = map[int32][]pending{}
	}
	if list := p.records[r.Partition]; len(list) < MaxPending {
		p.records[r.Partition] = append(list, pending{r, reason})
	}
}

// Take removes the records kept for partitions and returns their dead
// letters, as service sets them aside on topic (the dead-letter topic) at
// now, in partition and offset order. A record it cannot encode a letter
// for is passed to failed.
func (p *Pending) Take(topic, service string, partitions []int32, now time.Time, failed func(src *kgo.Record, err error)) []*kgo.Record {
	p.mu.Lock()
	var taken []pending
	for _, part := range slices.Sorted(slices.Values(partitions)) {
		taken = append(taken, p.records[part]...)
		delete(p.records, part)
	}
	p.mu.Unlock()
	var out []*kgo.Record
	for _, u := range taken {
		rec, err := Record(topic, service, u.r, u.reason, now)
		if err != nil {
			failed(u.r, err)
			continue
		}
		out = append(out, rec)
	}
	return out
}
