// Package brokertest gives tests the Kafka broker they run against: a real
// one named by FLOTILLA_TEST_BROKERS (CI starts Apache Kafka with
// .ci/kafka.sh and sets it), or else an embedded kfake broker started once
// per test binary. The same tests run on both; real Kafka is the judge.
//
// It depends only on franz-go, so that the tests of every package —
// pkg/topics and pkg/logtable included, which fleettest itself depends on —
// can use it. Tests sharing a broker must use names of their own (topics,
// groups, transactional IDs); nothing is deleted afterwards. A test that
// compacts has a broker of its own (ForCompaction).
package brokertest

import (
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Env is the variable that names a real broker: "host:port[,host:port...]".
const Env = "FLOTILLA_TEST_BROKERS"

var (
	once     sync.Once
	addrs    []string
	embedded *kfake.Cluster
	startErr error
)

// Addrs returns the addresses of the test broker: those in
// FLOTILLA_TEST_BROKERS, or those of an embedded broker started on first
// use and kept for the rest of the test binary. It fails the test if the
// embedded broker cannot start.
func Addrs(t testing.TB) []string {
	t.Helper()
	once.Do(func() {
		if env := os.Getenv(Env); env != "" {
			for _, a := range strings.Split(env, ",") {
				if a = strings.TrimSpace(a); a != "" {
					addrs = append(addrs, a)
				}
			}
			return
		}
		embedded, startErr = kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("flotilla-test"))
		if startErr == nil {
			addrs = embedded.ListenAddrs()
		}
	})
	if startErr != nil {
		t.Fatalf("start the embedded test broker: %v", startErr)
	}
	return addrs
}

// Opts returns the options of a test client of the broker: its addresses,
// and a short, fixed retry backoff. A broker on this machine that answers
// "not yet" (a new topic's partition without its leader yet, a coordinator
// loading) usually has the answer a few milliseconds later, not the 250 ms
// and more of kgo's default backoff.
func Opts(t testing.TB) []kgo.Opt {
	t.Helper()
	return OptsAt(Addrs(t))
}

// OptsAt returns the options of a test client of the broker at addrs
// (ForCompaction's, say), with the same short retry backoff as Opts.
func OptsAt(addrs []string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(addrs...),
		kgo.RetryBackoffFn(func(int) time.Duration { return 20 * time.Millisecond }),
	}
}

// Real reports whether the tests run against a real Kafka
// (FLOTILLA_TEST_BROKERS is set) rather than the embedded broker.
func Real() bool { return os.Getenv(Env) != "" }

// Name describes the test broker for messages: "Kafka at host:port" or
// "embedded kfake".
func Name() string {
	if Real() {
		return "Kafka at " + os.Getenv(Env)
	}
	return "embedded kfake"
}

// ForCompaction returns the broker of a test that compacts (Compact). The
// embedded broker compacts every topic it holds at once and ignores
// min.compaction.lag.ms, so compacting the shared one would take records
// from under the tests running beside it (the operations history a test
// checks, records the notifier has yet to read): a test that compacts
// gets an embedded broker of its own, closed when it ends. A real Kafka's
// cleaner honours each topic's configs, so there it is the shared broker.
func ForCompaction(t testing.TB) []string {
	t.Helper()
	if Real() {
		return Addrs(t)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("flotilla-compaction-test"))
	if err != nil {
		t.Fatalf("start an embedded broker to compact: %v", err)
	}
	addrs := c.ListenAddrs()
	ownMu.Lock()
	own[addrs[0]] = c
	ownMu.Unlock()
	t.Cleanup(func() {
		ownMu.Lock()
		delete(own, addrs[0])
		ownMu.Unlock()
		c.Close()
	})
	return addrs
}

var (
	ownMu sync.Mutex
	own   = map[string]*kfake.Cluster{} // first address → broker of ForCompaction
)

// Compact makes the broker at addrs, one of ForCompaction, compact its
// compacted topics now, as far as it can. The embedded broker compacts
// only on a timer or when asked, so this asks it (it keeps each
// partition's last batch, as Kafka keeps the active segment). Kafka's log
// cleaner works by itself, as the topic's configs (segment.ms,
// min.cleanable.dirty.ratio...) allow: on a real broker Compact does
// nothing, and a test waits for the outcome instead.
func Compact(t testing.TB, addrs []string) {
	t.Helper()
	if Real() {
		return
	}
	ownMu.Lock()
	c := own[addrs[0]]
	ownMu.Unlock()
	if c == nil {
		t.Fatalf("compact %v: not a broker of ForCompaction; the shared embedded broker is not compacted, for the tests beside it", addrs)
	}
	c.Compact()
}

// SecureEnv names a real broker's listener that requires SASL (SCRAM) and
// checks ACLs: "host:port". SecureAdminEnv is "user:password" of a super
// user there (.ci/kafka.sh sets both).
const (
	SecureEnv      = "FLOTILLA_TEST_SECURE_BROKERS"
	SecureAdminEnv = "FLOTILLA_TEST_SECURE_ADMIN"
)

// SecureBroker is a broker that authenticates every client with SASL and
// authorizes every request with ACLs, and how its super user signs in.
type SecureBroker struct {
	Addrs     []string
	Mechanism string // SCRAM-SHA-512
	AdminUser string
	AdminPass string
}

// Secure returns a broker with SASL and ACLs on: the real one named by
// FLOTILLA_TEST_SECURE_BROKERS when the tests run on a real Kafka, or else
// an embedded kfake broker of the test's own, closed when it ends. On a
// real Kafka without a secure listener the test fails: CI must not pass
// the security tests by skipping them.
func Secure(t testing.TB) SecureBroker {
	t.Helper()
	if Real() {
		addr, admin := os.Getenv(SecureEnv), os.Getenv(SecureAdminEnv)
		user, pass, ok := strings.Cut(admin, ":")
		if addr == "" || !ok {
			t.Fatalf("the tests run on a real Kafka (%s), but %s and %s do not name its SASL listener and super user (.ci/kafka.sh prints them)", Env, SecureEnv, SecureAdminEnv)
		}
		return SecureBroker{Addrs: strings.Split(addr, ","), Mechanism: "SCRAM-SHA-512", AdminUser: user, AdminPass: pass}
	}
	b := SecureBroker{Mechanism: "SCRAM-SHA-512", AdminUser: "admin", AdminPass: "admin-" + strings.ReplaceAll(t.Name(), "/", "-")}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("flotilla-secure-test"),
		kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser(b.Mechanism, b.AdminUser, b.AdminPass))
	if err != nil {
		t.Fatalf("start an embedded broker with SASL and ACLs: %v", err)
	}
	t.Cleanup(c.Close)
	b.Addrs = c.ListenAddrs()
	return b
}
