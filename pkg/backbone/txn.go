package backbone

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// This file holds what the transactional services (planner, notifier)
// share about their GroupTransactSession: which errors end them, and how
// to end a transaction and close the session without outliving a stop.

const (
	// EndTimeout bounds ending a transaction while the service runs: an
	// End that takes longer has an unknown outcome, and FatalTxnError
	// says so.
	EndTimeout = 15 * time.Second
	// StopGrace is how long a service that was asked to stop still gives
	// the end of its transaction, and then leaving its group: enough for
	// a broker that answers (an abort or a leave takes milliseconds), and
	// short enough that the service stops within the few seconds a
	// supervisor waits after SIGTERM when the broker does not answer —
	// two graces and kgo's own bounded close (about a second).
	StopGrace = 500 * time.Millisecond
)

// FatalTxnError reports whether err, from beginning, producing in or ending
// a transaction, leaves the transactional producer unusable, so that a
// service must end (with a clear message) rather than rebuild and carry on:
//
//   - fenced: a newer producer initialised the same transactional ID
//     (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH, TRANSACTION_COORDINATOR_FENCED),
//     or a newer group member took the same static instance ID
//     (FENCED_INSTANCE_ID) — another copy runs with the same instance ID;
//   - the broker no longer knows the producer (UNKNOWN_PRODUCER_ID,
//     INVALID_PRODUCER_ID_MAPPING, TRANSACTIONAL_ID_NOT_FOUND) or its
//     transaction (INVALID_TXN_STATE);
//   - not authorised (TRANSACTIONAL_ID_, CLUSTER_, GROUP_ or
//     TOPIC_AUTHORIZATION_FAILED), or a transaction timeout the broker
//     refuses (INVALID_TRANSACTION_TIMEOUT);
//   - an end that timed out (context.DeadlineExceeded, as with EndTimeout):
//     whether it committed is unknown, and the producer is stuck in it.
//
// The stable transactional ID makes the restart safe: initialising it
// again aborts whatever transaction was left open. Errors are matched with
// errors.Is against franz-go's kerr values, never by text.
//
// FatalTxnError(nil) is false. An error it does not call fatal is not
// thereby safe to retry: kgo documents no error of GroupTransactSession.End
// as retryable, and after a failed End the session may refuse to begin
// again ("already in a transaction"). A service should rebuild only after
// an abort that came without an error.
func FatalTxnError(err error) bool {
	if err == nil {
		return false
	}
	for _, fatal := range []error{
		kerr.ProducerFenced,
		kerr.InvalidProducerEpoch,
		kerr.TransactionCoordinatorFenced,
		kerr.FencedInstanceID,
		kerr.UnknownProducerID,
		kerr.InvalidProducerIDMapping,
		kerr.TransactionalIDNotFound,
		kerr.InvalidTxnState,
		kerr.TransactionalIDAuthorizationFailed,
		kerr.ClusterAuthorizationFailed,
		kerr.GroupAuthorizationFailed,
		kerr.TopicAuthorizationFailed,
		kerr.InvalidTransactionTimeout,
		context.DeadlineExceeded,
	} {
		if errors.Is(err, fatal) {
			return true
		}
	}
	return false
}

// FencedTxnError reports whether err says that a newer producer took the
// transactional ID (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH,
// TRANSACTION_COORDINATOR_FENCED) or a newer member the static group
// instance ID (FENCED_INSTANCE_ID): usually a second copy of the service
// running with the same instance ID. It is one of the FatalTxnError cases,
// for messages that name the likely cause.
func FencedTxnError(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) ||
		errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.TransactionCoordinatorFenced) ||
		errors.Is(err, kerr.FencedInstanceID)
}

// EndTransactionPromptly ends a GroupTransactSession's transaction: it
// commits when commit holds and ctx is still live, else aborts. It is
// EndTransaction bounded for a service that must stop promptly: while ctx
// is live the end may take up to EndTimeout (then it fails with
// context.DeadlineExceeded, which FatalTxnError calls fatal); once ctx
// ends — before or during the end — the end gets StopGrace more, and is
// then cut short. An end cut short leaves the transaction open on the
// broker until the service's restart initialises its transactional ID
// again (which aborts it) or the transaction times out; ending it is still
// tried, since an open transaction blocks read-committed readers.
//
// It returns whether the transaction committed, and End's error.
func EndTransactionPromptly(ctx context.Context, sess *kgo.GroupTransactSession, commit bool) (bool, error) {
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), EndTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(StopGrace, cancel)
		context.AfterFunc(endCtx, func() { t.Stop() })
	})
	defer stop()
	return sess.End(endCtx, kgo.TransactionEndTry(commit && ctx.Err() == nil))
}

// CloseSession leaves the session's group and closes it, giving the leave
// StopGrace: kgo's Close waits for the group to be left, with the client's
// retries, however long an unreachable broker takes to answer. A member
// that could not leave is dropped by the group coordinator once its
// session times out. Call it only from the goroutine that polls, never
// from a rebalance callback.
func CloseSession(sess *kgo.GroupTransactSession) {
	ctx, cancel := context.WithTimeout(context.Background(), StopGrace)
	defer cancel()
	_ = sess.Client().LeaveGroupContext(ctx) // best effort: see above
	sess.Close()
}

// ProveMembership returns ctx for ending a GroupTransactSession's
// transaction (EndTransactionPromptly) so that the end commits consumed
// offsets even when the transaction consumed nothing: it then commits
// offsets again at the positions already committed. Only an offset commit
// in a transaction is checked by the group coordinator against the
// member's generation, so without one a transaction decided on time alone
// (a deadline, a window opening) would commit even from a copy that lost
// its partitions while frozen and has not yet heard: a zombie writing next
// to the partitions' new owner. Kafka Streams commits its tasks' positions
// with a punctuation's output for the same reason.
//
// offsets are the positions to commit again (the session client's
// CommittedOffsets, taken before ending), and topicIDs the IDs of their
// topics (as a TopicWatch holds them), which TxnOffsetCommit v6 names
// topics by. A commit
// refused for the generation (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID) makes
// End abort without an error, as after a rebalance. A member that knows
// it has no generation (it is rejoining) commits nothing and aborts too:
// the coordinator would take a commit without a generation as an
// administrator's.
func ProveMembership(ctx context.Context, offsets map[string]map[int32]kgo.EpochOffset, topicIDs TopicIDs) context.Context {
	return kgo.PreTxnCommitFnContext(ctx, func(req *kmsg.TxnOffsetCommitRequest) error {
		if req.MemberID == "" || req.Generation < 0 {
			return fmt.Errorf("not a member of the group's current generation (rejoining): %w", kerr.UnknownMemberID)
		}
		if len(req.Topics) > 0 {
			return nil // the transaction consumed records: their offsets are checked
		}
		for _, topic := range slices.Sorted(maps.Keys(offsets)) {
			rt := kmsg.NewTxnOffsetCommitRequestTopic()
			rt.Topic, rt.TopicID = topic, [16]byte(topicIDs[topic])
			for _, part := range slices.Sorted(maps.Keys(offsets[topic])) {
				at := offsets[topic][part]
				rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
				rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata = part, at.Offset, at.Epoch, &req.MemberID
				rt.Partitions = append(rt.Partitions, rp)
			}
			req.Topics = append(req.Topics, rt)
		}
		if len(req.Topics) == 0 {
			return fmt.Errorf("no committed offsets to commit again, so the group cannot check this member's generation: %w", kerr.UnknownMemberID)
		}
		return nil
	})
}
