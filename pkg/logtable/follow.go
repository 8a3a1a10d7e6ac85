package logtable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Follow reads partitions of topic from the offsets in from, with
// read-committed isolation, and calls apply for every data record
// (tombstones included; transaction markers and aborted records never
// are), in offset order per partition, until apply returns true. It does
// not stop at an end: it waits for new records, and fails when ctx ends
// first or when a partition cannot be fetched.
//
// It is for a client that waits for an answer to something it wrote:
// capture the partitions' ends (EndOffsets) before writing, then follow
// from there, so that nothing written before is read.
//
// clientOpts carry the connection settings, as for ReadToEnd.
func Follow(ctx context.Context, clientOpts []kgo.Opt, topic string, from map[int32]kgo.Offset, apply func(*kgo.Record) (done bool)) error {
	cl, err := kgo.NewClient(readerOpts(clientOpts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}))...)
	if err != nil {
		return fmt.Errorf("follow %s: %w", topic, err)
	}
	defer cl.Close()
	log := slog.Default()
	for {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		if fetches.IsClientClosed() {
			return kgo.ErrClientClosed
		}
		if err := fetchErrors(fetches, log); err != nil {
			return fmt.Errorf("follow %s: %w", topic, err)
		}
		done := false
		fetches.EachRecord(func(r *kgo.Record) {
			if !done && !r.Attrs.IsControl() {
				done = apply(r)
			}
		})
		if done {
			return nil
		}
	}
}

// fetchErrors returns the errors of fetches that reading cannot go on
// with. A cancelled or timed out poll is not one (the caller looks at its
// context), nor is data loss, which kgo has reset past: it is logged.
func fetchErrors(fetches kgo.Fetches, log *slog.Logger) error {
	var errs []error
	fetches.EachError(func(topic string, p int32, err error) {
		var loss *kgo.ErrDataLoss
		switch {
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		case errors.As(err, &loss):
			// kgo has already reset and carries on; the reader
			// cannot know what it missed, so say so loudly.
			log.Warn("data loss while reading table: records were skipped", "topic", topic, "partition", p, "err", err)
		default:
			errs = append(errs, fmt.Errorf("fetch %s partition %d: %w", topic, p, err))
		}
	})
	return errors.Join(errs...)
}
