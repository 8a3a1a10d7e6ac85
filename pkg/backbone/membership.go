package backbone

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// StaticSessionTimeout is the session timeout of a group member with a
// stable identity (StaticMember).
//
// For such a member the session timeout means something new: it is how
// long the member may be away before the group gives its partitions to
// others. A static member that stops does not leave the group, crashed or
// closed (franz-go sends no LeaveGroup for it), so its partitions wait for
// it for up to this long; a copy restarted with the same identity within
// it takes them back at once, with no rebalance.
//
// 45 s is Kafka's and franz-go's default session timeout: a member lost
// for good is replaced exactly as late as a dynamic member that crashes
// is today, and a crashed copy that a supervisor (systemd, a container
// restart, Kubernetes' first back-offs of 10 and 20 s) starts again
// within it recovers at once instead of waiting for its old session. A
// longer timeout would cover slower restarts but leave a lost copy's
// partitions unserved longer; a shorter one would miss restarts. What a
// static member gives up is the hand-over on a clean stop: a copy stopped
// for good (scaled down, or restarted under another name) holds its
// partitions until the timeout. The broker bounds the value with
// group.min.session.timeout.ms and group.max.session.timeout.ms (6 s and
// 30 min by default). Config.SessionTimeout (a service's
// --session-timeout) sets another.
const StaticSessionTimeout = 45 * time.Second

// InstanceID returns the group instance ID (group.instance.id) of an
// instance of a service in a consumer group: "<group>-<instance>", e.g.
// "fleet.executor-host1", made like the planner's and notifier's
// transactional IDs so that one name finds a copy in both.
func InstanceID(group, instance string) string { return group + "-" + instance }

// StaticMember returns the group options of a member with a stable
// identity (static group membership, KIP-345): group.instance.id
// InstanceID(group, instance) and the Config's SessionTimeout. instance ""
// returns no options: the member stays dynamic, with a new identity on
// every start, and leaves the group when its client closes.
//
// An identity must be held by one running copy at a time. When a second
// copy joins with the same identity, the broker gives it the first one's
// place and answers the first one FENCED_INSTANCE_ID; franz-go then
// rejoins, takes the place back, and the two fence each other in turn.
// So fenced, if not nil, is called (from the client's group goroutine,
// possibly more than once) with an error naming the identity, which
// wraps the broker's kerr.FencedInstanceID (kerr.UnreleasedInstanceID in
// a KIP-848 group): the service should stop with that error, a fatal one,
// rather than fight its twin.
func (c Config) StaticMember(group, instance string, fenced func(error)) []kgo.Opt {
	if instance == "" {
		return nil
	}
	id := InstanceID(group, instance)
	opts := []kgo.Opt{
		kgo.InstanceID(id),
		kgo.SessionTimeout(cmp.Or(c.SessionTimeout, StaticSessionTimeout)),
	}
	if fenced != nil {
		opts = append(opts, kgo.WithHooks(fenceHook{group: group, id: id, fenced: fenced}))
	}
	return opts
}

// fenceHook reports that another member took this member's identity.
type fenceHook struct {
	group, id string
	fenced    func(error)
}

// OnGroupManageError implements kgo.HookGroupManageError.
func (h fenceHook) OnGroupManageError(err error) {
	// UnreleasedInstanceID is the next-generation protocol's (KIP-848) way
	// of saying the identity is held by another running member.
	if errors.Is(err, kerr.FencedInstanceID) || errors.Is(err, kerr.UnreleasedInstanceID) {
		h.fenced(fmt.Errorf("group %s: another member runs with instance ID %s (two copies with one --instance?): %w", h.group, h.id, err))
	}
}
