package backbone

import (
	"fmt"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded is an in-process Kafka-protocol broker (kfake), for `flotilla
// dev` and the tests. With a data directory it keeps its logs on disk and
// carries on from them when started again.
type Embedded struct {
	cluster *kfake.Cluster
}

// StartEmbedded starts a single-broker embedded Kafka listening on addr
// ("127.0.0.1:9092"; port 0 picks a free one). dataDir "" keeps everything
// in memory.
func StartEmbedded(addr, dataDir string) (*Embedded, error) {
	return startEmbedded(addr, dataDir)
}

// EmbeddedMechanism is how clients sign in to a secure embedded broker.
const EmbeddedMechanism = "SCRAM-SHA-512"

// StartEmbeddedSecure starts an embedded broker as StartEmbedded does, but
// one that authenticates every client with SASL (EmbeddedMechanism) and
// authorizes every request with ACLs. Its only user at first is the super
// user admin, who creates the others and their ACLs (acl.CreateSCRAMUsers,
// acl.Apply); with a data directory, users and ACLs are kept in it.
func StartEmbeddedSecure(addr, dataDir, adminUser, adminPassword string) (*Embedded, error) {
	return startEmbedded(addr, dataDir, kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser(EmbeddedMechanism, adminUser, adminPassword))
}

func startEmbedded(addr, dataDir string, extra ...kfake.Opt) (*Embedded, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("embedded broker address %q: bad port: %w", addr, err)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ClusterID("flotilla-dev"),
		// Listen where asked: kfake itself listens on 127.0.0.1.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
	}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	opts = append(opts, extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded broker on %s: %w", addr, err)
	}
	return &Embedded{cluster: c}, nil
}

// Addrs returns the addresses clients connect to.
func (e *Embedded) Addrs() []string { return e.cluster.ListenAddrs() }

// Compact runs log compaction now (kfake compacts only on a timer or on demand).
func (e *Embedded) Compact() { e.cluster.Compact() }

// Close stops the broker, saving its state to the data directory if it has one.
func (e *Embedded) Close() { e.cluster.Close() }
