// Package kafkadriver is the [drivers.Driver] and [drivers.Prober] for
// Apache Kafka clusters, over the Kafka admin API (franz-go's kadm). It is
// registered under [DriverName] ("kafka"): an inventory entry with Driver
// "kafka" has its bootstrap servers, comma-separated, as Address, and
// optional Settings (see the Setting* constants) that say how to
// authenticate, how many brokers to expect and which configs Flotilla
// manages.
//
// The prober reports a cluster unhealthy when fewer brokers are online than
// expected.brokers, when no controller is active, when partitions are
// offline or below their topic's min.insync.replicas, and degraded when
// partitions are under-replicated. It guesses the Kafka version each broker
// runs from its ApiVersions, and hashes the managed configs into the health
// signal's ConfigHash, so a config change that landed, or drift, shows.
//
// The driver carries out `config` operations: it sets broker configs
// (cluster-wide, or on one broker) and topic configs with
// IncrementalAlterConfigs, or resets them (deletes their value), then waits
// until they read back. It converges: keys already at their desired value,
// and keys to reset that have none, are left alone, so applying a command
// twice changes nothing the second time. Before a config operation acts, it
// reads what the operation's keys are set to ([Driver.Snapshot]), so that
// the executor records what a rollback must restore. It refuses to touch an unhealthy
// cluster. Upgrades and restarts need access to the brokers' machines, which
// the Kafka API does not give: register such clusters with an exec driver.
//
// One admin client is kept per cluster and reused across probes and
// operations; it is replaced when the cluster's address or settings change,
// closed when the cluster has not been used for [Options.IdleTimeout], and
// all are closed by [Driver.Close]. Finding a cluster's client is one map
// lookup, and letting idle clients go looks only at the least recently used
// ones, so a probe costs the same whether the driver holds ten clients or
// a hundred thousand.
package kafkadriver

import (
	"container/list"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
)

// DriverName is the name under which [Driver.Register] registers the
// driver, and the Driver an inventory entry names to be handled by it.
const DriverName = "kafka"

// Defaults of [Options].
const (
	DefaultIdleTimeout   = 10 * time.Minute
	DefaultVerifyTimeout = 60 * time.Second
)

// ErrClosed is returned by Apply and Probe after [Driver.Close].
var ErrClosed = errors.New("kafka driver closed")

// Options configure a [Driver]. The zero value is ready for production.
type Options struct {
	// LookupEnv reads the environment variable a cluster's
	// sasl.password.env names; nil means os.LookupEnv. Tests inject a
	// map.
	LookupEnv func(name string) (string, bool)
	// IdleTimeout is how long a cluster's client is kept without being
	// used before it is closed (default 10 minutes). It is how clients of
	// clusters that left the inventory are let go: the monitor probes
	// every cluster every few seconds, so the clients of live clusters
	// never idle that long.
	IdleTimeout time.Duration
	// VerifyTimeout bounds how long Apply waits for the configs it set
	// to read back on every broker (default 60s): Kafka propagates a
	// cluster-wide config to each broker asynchronously.
	VerifyTimeout time.Duration
	// Clock measures IdleTimeout and VerifyTimeout; nil means the real
	// clock.
	Clock clockwork.Clock
}

// Driver is the kafka driver and prober. It is safe for concurrent use: the
// executor applies to many clusters at once and the monitor probes many.
// Create it with [New] and release its clients with [Driver.Close].
type Driver struct {
	lookupEnv     func(string) (string, bool)
	idle          time.Duration
	verifyTimeout time.Duration
	clock         clockwork.Clock

	mu      sync.Mutex
	clients map[string]*client // by cluster ID
	idleLRU *list.List         // clients no call uses, least recently used at the back
	closed  bool

	// newClient builds a kgo client; tests count and replace it.
	newClient func(opts ...kgo.Opt) (*kgo.Client, error)
}

var (
	_ drivers.Driver = (*Driver)(nil)
	_ drivers.Prober = (*Driver)(nil)
)

// New returns a driver configured by opts. It connects to nothing: clients
// are created on the first probe or operation of each cluster.
func New(opts Options) *Driver {
	d := &Driver{
		lookupEnv:     opts.LookupEnv,
		idle:          opts.IdleTimeout,
		verifyTimeout: opts.VerifyTimeout,
		clock:         opts.Clock,
		clients:       map[string]*client{},
		idleLRU:       list.New(),
		newClient:     kgo.NewClient,
	}
	if d.lookupEnv == nil {
		d.lookupEnv = os.LookupEnv
	}
	if d.idle <= 0 {
		d.idle = DefaultIdleTimeout
	}
	if d.verifyTimeout <= 0 {
		d.verifyTimeout = DefaultVerifyTimeout
	}
	if d.clock == nil {
		d.clock = clockwork.NewRealClock()
	}
	return d
}

// Register registers d as both driver and prober under [DriverName]
// ("kafka").
func (d *Driver) Register(r *drivers.Registry) { r.Register(DriverName, d, d) }

// Close closes every client, including those in use by a running Apply or
// Probe (which then fail), and makes later calls fail with [ErrClosed]. It
// is for shutdown; calling it twice is harmless.
func (d *Driver) Close() {
	d.mu.Lock()
	clients := d.clients
	d.clients = map[string]*client{}
	d.idleLRU.Init()
	d.closed = true
	d.mu.Unlock()
	for _, cl := range clients {
		cl.adm.Close()
	}
}

// client is the cached admin client of one cluster.
type client struct {
	id       string // the cluster it was built for
	key      string // cacheKey of that cluster
	set      settings
	kgo      *kgo.Client
	adm      *kadm.Client
	refs     int           // calls using it now
	lastUsed time.Time     // when the last call using it ended (or began)
	retired  bool          // replaced: close when refs drops to 0
	idle     *list.Element // its place in idleLRU while refs is 0, else nil
}

// acquire returns the client of cluster c, building it if c is new or its
// address or settings changed (the old client is closed once no call uses
// it), and the function to call when done with it. It also closes clients
// idle for longer than the idle timeout. It fails when c's settings are
// invalid ([ErrInvalidSetting]) or the driver is closed.
func (d *Driver) acquire(c inventory.Cluster) (*client, func(), error) {
	set, err := parseSettings(c)
	if err != nil {
		return nil, nil, err
	}
	key := cacheKey(c)

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, nil, fmt.Errorf("cluster %s: %w", c.ID, ErrClosed)
	}
	now := d.clock.Now()
	toClose := d.expire(now)
	cl := d.clients[c.ID]
	if cl != nil && cl.key != key {
		delete(d.clients, c.ID)
		cl.retired = true
		if cl.refs == 0 {
			d.idleLRU.Remove(cl.idle)
			toClose = append(toClose, cl)
		}
		cl = nil
	}
	if cl == nil {
		cl, err = d.build(c, set, key)
		if err != nil {
			d.mu.Unlock()
			closeAll(toClose)
			return nil, nil, err
		}
		d.clients[c.ID] = cl
	}
	if cl.idle != nil {
		d.idleLRU.Remove(cl.idle)
		cl.idle = nil
	}
	cl.refs++
	cl.lastUsed = now
	d.mu.Unlock()
	closeAll(toClose)

	var once sync.Once
	release := func() {
		once.Do(func() { d.release(cl) })
	}
	return cl, release, nil
}

// release ends one call's use of cl: a replaced client is closed once no
// call uses it, a current one goes to the front of the idle list.
func (d *Driver) release(cl *client) {
	d.mu.Lock()
	cl.refs--
	cl.lastUsed = d.clock.Now()
	closeIt := cl.retired && cl.refs == 0
	if cl.refs == 0 && !cl.retired && !d.closed {
		cl.idle = d.idleLRU.PushFront(cl)
	}
	d.mu.Unlock()
	if closeIt {
		cl.adm.Close()
	}
}

// expire takes out of the cache the clients idle for the idle timeout, for
// the caller to close outside the lock. The idle list is in order of last
// use, so it stops at the first client used recently: O(1) amortised.
func (d *Driver) expire(now time.Time) []*client {
	var out []*client
	for e := d.idleLRU.Back(); e != nil; e = d.idleLRU.Back() {
		cl := e.Value.(*client)
		if now.Sub(cl.lastUsed) < d.idle {
			break
		}
		d.idleLRU.Remove(e)
		cl.idle = nil
		delete(d.clients, cl.id) // only current clients are on the list
		out = append(out, cl)
	}
	return out
}

// build makes the client of cluster c. It reads the files and the
// environment variable the settings name, and does no network I/O.
func (d *Driver) build(c inventory.Cluster, set settings, key string) (*client, error) {
	cn, err := set.conn(c, d.lookupEnv)
	if err != nil {
		return nil, err
	}
	kcl, err := d.newClient(cn.opts()...)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: new kafka client: %w", c.ID, err)
	}
	return &client{id: c.ID, key: key, set: set, kgo: kcl, adm: kadm.NewClient(kcl)}, nil
}

func closeAll(cls []*client) {
	for _, cl := range cls {
		cl.adm.Close()
	}
}
