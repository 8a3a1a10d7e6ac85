package kafkadriver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/kafkaauth"
)

// The settings of an inventory entry ([inventory.Cluster.Settings]) the
// kafka driver reads. All are optional.
const (
	// SettingSecurityProtocol is how to talk to the brokers: PLAINTEXT
	// (the default), SSL, SASL_PLAINTEXT or SASL_SSL.
	SettingSecurityProtocol = "security.protocol"
	// SettingSASLMechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512;
	// required with the SASL_* protocols.
	SettingSASLMechanism = "sasl.mechanism"
	// SettingSASLUsername is the SASL user; required with the SASL_*
	// protocols.
	SettingSASLUsername = "sasl.username"
	// SettingSASLPasswordEnv names the environment variable (of the
	// executor and the monitor) that holds the SASL password; required
	// with the SASL_* protocols. The password itself never sits in the
	// inventory, which anyone with read access can replay.
	SettingSASLPasswordEnv = "sasl.password.env"
	// SettingSASLPasswordFile names instead a file (on the executor's and
	// the monitor's machines) whose first line is the password: a mounted
	// secret. One of the two is required with the SASL_* protocols.
	SettingSASLPasswordFile = "sasl.password.file"
	// SettingTLSCAFile is a PEM file of the CAs to trust instead of the
	// system's.
	SettingTLSCAFile = "tls.ca.file"
	// SettingTLSCertFile and SettingTLSKeyFile are a PEM client
	// certificate and its key, for mutual TLS; both or neither.
	SettingTLSCertFile = "tls.cert.file"
	SettingTLSKeyFile  = "tls.key.file"
	// SettingTLSServerName overrides the name the brokers' certificates
	// are checked against (by default each broker's host name).
	SettingTLSServerName = "tls.server.name"
	// SettingTLSInsecureSkipVerify, "true", skips checking the brokers'
	// certificates. For tests only.
	SettingTLSInsecureSkipVerify = "tls.insecure.skip.verify"
	// SettingExpectedBrokers is how many brokers the cluster should have
	// online; fewer makes it unhealthy. Unset, any number will do.
	SettingExpectedBrokers = "expected.brokers"
	// SettingManagedConfigs is a comma-separated list of the configs
	// Flotilla manages and hashes into the health signal's ConfigHash:
	// broker config keys ("log.retention.ms", read on every broker),
	// "broker:ID:key" (one broker) and "topic:NAME:key" (one topic).
	SettingManagedConfigs = "managed.configs"
	// SettingRequestTimeoutMS bounds, in milliseconds, each round trip to
	// the cluster (default 10000).
	SettingRequestTimeoutMS = "request.timeout.ms"
)

// DefaultRequestTimeout is the bound on one round trip to a cluster when
// its inventory entry sets no request.timeout.ms.
const DefaultRequestTimeout = 10 * time.Second

var knownSettings = []string{
	SettingExpectedBrokers, SettingManagedConfigs, SettingRequestTimeoutMS,
	SettingSASLMechanism, SettingSASLPasswordEnv, SettingSASLPasswordFile, SettingSASLUsername,
	SettingSecurityProtocol, SettingTLSCAFile, SettingTLSCertFile,
	SettingTLSInsecureSkipVerify, SettingTLSKeyFile, SettingTLSServerName,
}

// ErrInvalidSetting is wrapped by every error about a cluster's settings or
// address: the inventory entry cannot work with the kafka driver as it
// stands, and retrying will not help until it is corrected. Check for it
// with errors.Is.
var ErrInvalidSetting = errors.New("invalid kafka cluster setting")

// settingError says which cluster and which setting are wrong, and how.
type settingError struct {
	cluster, setting, problem string
}

func (e *settingError) Error() string {
	return fmt.Sprintf("cluster %s: setting %s: %s", e.cluster, e.setting, e.problem)
}

func (e *settingError) Unwrap() error { return ErrInvalidSetting }

// scope is the kind of resource a config key applies to.
type scope int

const (
	scopeCluster scope = iota // the default broker resource: every broker
	scopeBroker               // one broker
	scopeTopic                // one topic
)

// configKey is one config Flotilla sets or watches, as written in
// managed.configs and in a config operation: "key", "broker:ID:key" or
// "topic:NAME:key".
type configKey struct {
	scope  scope
	broker int32  // for scopeBroker
	topic  string // for scopeTopic
	key    string
}

func (k configKey) String() string {
	switch k.scope {
	case scopeBroker:
		return fmt.Sprintf("broker:%d:%s", k.broker, k.key)
	case scopeTopic:
		return "topic:" + k.topic + ":" + k.key
	}
	return k.key
}

// resource names where the key lives, for people.
func (k configKey) resource() string {
	switch k.scope {
	case scopeBroker:
		return fmt.Sprintf("broker %d", k.broker)
	case scopeTopic:
		return "topic " + k.topic
	}
	return "cluster default"
}

func (k configKey) less(o configKey) bool {
	if k.scope != o.scope {
		return k.scope < o.scope
	}
	if k.broker != o.broker {
		return k.broker < o.broker
	}
	if k.topic != o.topic {
		return k.topic < o.topic
	}
	return k.key < o.key
}

// parseConfigKey parses "key", "broker:ID:key" or "topic:NAME:key".
func parseConfigKey(s string) (configKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return configKey{}, errors.New("empty config key")
	}
	if !strings.Contains(s, ":") {
		return configKey{scope: scopeCluster, key: s}, nil
	}
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 || parts[2] == "" || strings.Contains(parts[2], ":") {
		return configKey{}, fmt.Errorf("config key %q: want key, broker:ID:key or topic:NAME:key", s)
	}
	switch parts[0] {
	case "topic":
		if parts[1] == "" {
			return configKey{}, fmt.Errorf("config key %q: empty topic name", s)
		}
		return configKey{scope: scopeTopic, topic: parts[1], key: parts[2]}, nil
	case "broker":
		id, err := strconv.ParseInt(parts[1], 10, 32)
		if err != nil || id < 0 {
			return configKey{}, fmt.Errorf("config key %q: broker ID %q is not a whole number ≥ 0", s, parts[1])
		}
		return configKey{scope: scopeBroker, broker: int32(id), key: parts[2]}, nil
	}
	return configKey{}, fmt.Errorf("config key %q: unknown prefix %q (want broker: or topic:)", s, parts[0])
}

// settings are a cluster's validated settings.
type settings struct {
	protocol           string // PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
	mechanism          string // PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
	username           string
	passwordEnv        string
	passwordFile       string
	caFile             string
	certFile, keyFile  string
	serverName         string
	insecureSkipVerify bool
	expectedBrokers    int // 0: not checked
	managed            []configKey
	requestTimeout     time.Duration
}

func (s settings) tls() bool  { return s.protocol == "SSL" || s.protocol == "SASL_SSL" }
func (s settings) sasl() bool { return strings.HasPrefix(s.protocol, "SASL_") }

// parseSettings validates c.Settings. It reads no files and no environment:
// that happens when a client is built, see [settings.conn].
func parseSettings(c inventory.Cluster) (settings, error) {
	bad := func(setting, format string, args ...any) error {
		return &settingError{cluster: c.ID, setting: setting, problem: fmt.Sprintf(format, args...)}
	}
	in := c.Settings
	for k := range in {
		if k == "sasl.password" {
			return settings{}, bad(k, "secrets never sit in the inventory: put the password in a file or an environment variable of the executor and monitor and name it in %s or %s", SettingSASLPasswordFile, SettingSASLPasswordEnv)
		}
		if !slices.Contains(knownSettings, k) {
			return settings{}, bad(k, "unknown setting (known: %s)", strings.Join(knownSettings, ", "))
		}
	}
	s := settings{
		protocol:     "PLAINTEXT",
		username:     in[SettingSASLUsername],
		passwordEnv:  in[SettingSASLPasswordEnv],
		passwordFile: in[SettingSASLPasswordFile],
		caFile:       in[SettingTLSCAFile],
		certFile:     in[SettingTLSCertFile],
		keyFile:      in[SettingTLSKeyFile],
		serverName:   in[SettingTLSServerName],

		requestTimeout: DefaultRequestTimeout,
	}
	if v, ok := in[SettingSecurityProtocol]; ok {
		s.protocol = strings.ToUpper(strings.TrimSpace(v))
		switch s.protocol {
		case "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL":
		default:
			return settings{}, bad(SettingSecurityProtocol, "%q is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL", v)
		}
	}

	if v, ok := in[SettingSASLMechanism]; ok {
		s.mechanism = strings.ToUpper(strings.TrimSpace(v))
		switch s.mechanism {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		default:
			return settings{}, bad(SettingSASLMechanism, "%q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", v)
		}
	}
	if s.sasl() {
		for _, req := range []struct{ name, v string }{
			{SettingSASLMechanism, s.mechanism},
			{SettingSASLUsername, s.username},
		} {
			if req.v == "" {
				return settings{}, bad(req.name, "required with %s %s", SettingSecurityProtocol, s.protocol)
			}
		}
		if (s.passwordEnv == "") == (s.passwordFile == "") {
			return settings{}, bad(SettingSASLPasswordEnv, "with %s %s, name where the password is: %s (an environment variable) or %s (a file), one of them", SettingSecurityProtocol, s.protocol, SettingSASLPasswordEnv, SettingSASLPasswordFile)
		}
	} else {
		for _, k := range []string{SettingSASLMechanism, SettingSASLUsername, SettingSASLPasswordEnv, SettingSASLPasswordFile} {
			if _, ok := in[k]; ok {
				return settings{}, bad(k, "needs %s SASL_PLAINTEXT or SASL_SSL (it is %s)", SettingSecurityProtocol, s.protocol)
			}
		}
	}

	if v, ok := in[SettingTLSInsecureSkipVerify]; ok {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return settings{}, bad(SettingTLSInsecureSkipVerify, "%q is not true or false", v)
		}
		s.insecureSkipVerify = b
	}
	if !s.tls() {
		for _, k := range []string{SettingTLSCAFile, SettingTLSCertFile, SettingTLSKeyFile, SettingTLSServerName, SettingTLSInsecureSkipVerify} {
			if _, ok := in[k]; ok {
				return settings{}, bad(k, "needs %s SSL or SASL_SSL (it is %s)", SettingSecurityProtocol, s.protocol)
			}
		}
	}
	if (s.certFile == "") != (s.keyFile == "") {
		return settings{}, bad(SettingTLSCertFile, "%s and %s go together: set both or neither", SettingTLSCertFile, SettingTLSKeyFile)
	}

	if v, ok := in[SettingExpectedBrokers]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return settings{}, bad(SettingExpectedBrokers, "%q is not a whole number ≥ 1", v)
		}
		s.expectedBrokers = n
	}
	if v, ok := in[SettingRequestTimeoutMS]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return settings{}, bad(SettingRequestTimeoutMS, "%q is not a whole number of milliseconds ≥ 1", v)
		}
		s.requestTimeout = time.Duration(n) * time.Millisecond
	}
	if v := in[SettingManagedConfigs]; strings.TrimSpace(v) != "" {
		seen := map[configKey]bool{}
		for _, part := range strings.Split(v, ",") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			k, err := parseConfigKey(part)
			if err != nil {
				return settings{}, bad(SettingManagedConfigs, "%v", err)
			}
			if !seen[k] {
				seen[k] = true
				s.managed = append(s.managed, k)
			}
		}
		sort.Slice(s.managed, func(i, j int) bool { return s.managed[i].less(s.managed[j]) })
	}
	return s, nil
}

// conn is what a client needs to reach a cluster: the options are built
// from it, and tests inspect it.
type conn struct {
	seeds   []string
	tls     *tls.Config    // nil: plaintext
	sasl    sasl.Mechanism // nil: no SASL
	timeout time.Duration  // per round trip
}

// conn reads what the settings point at (the password's environment
// variable, the TLS files) and returns how to reach cluster c. lookupEnv is
// os.LookupEnv outside tests.
func (s settings) conn(c inventory.Cluster, lookupEnv func(string) (string, bool)) (conn, error) {
	bad := func(setting, format string, args ...any) error {
		return &settingError{cluster: c.ID, setting: setting, problem: fmt.Sprintf(format, args...)}
	}
	out := conn{timeout: s.requestTimeout}
	for _, seed := range strings.Split(c.Address, ",") {
		if seed = strings.TrimSpace(seed); seed != "" {
			out.seeds = append(out.seeds, seed)
		}
	}
	if len(out.seeds) == 0 {
		return conn{}, bad("address", "no bootstrap servers: register the cluster with --address host:port[,host:port...]")
	}

	if s.tls() {
		cfg, err := kafkaauth.TLS{CAFile: s.caFile, CertFile: s.certFile, KeyFile: s.keyFile, ServerName: s.serverName, InsecureSkipVerify: s.insecureSkipVerify}.Config()
		if err != nil {
			setting := SettingTLSCAFile
			var fe *kafkaauth.FileError
			if errors.As(err, &fe) && fe.Which == kafkaauth.WhichCert {
				setting = SettingTLSCertFile
			}
			return conn{}, bad(setting, "%v", err)
		}
		out.tls = cfg
	}

	if s.sasl() {
		pass, ok := lookupEnv(s.passwordEnv)
		if s.passwordFile != "" {
			var err error
			if pass, err = kafkaauth.ReadPasswordFile(s.passwordFile); err != nil {
				return conn{}, bad(SettingSASLPasswordFile, "%v (the executor and the monitor both need it)", err)
			}
		} else if !ok || pass == "" {
			return conn{}, bad(SettingSASLPasswordEnv, "environment variable %s is not set in this process (the executor and the monitor both need it)", s.passwordEnv)
		}
		m, err := kafkaauth.Password(s.mechanism, s.username, pass)
		if err != nil {
			return conn{}, bad(SettingSASLMechanism, "%v", err)
		}
		out.sasl = m
	}
	return out, nil
}

// opts returns the client options for c.
func (c conn) opts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.seeds...),
		kgo.ClientID("flotilla-kafka-driver"),
		kgo.DialTimeout(c.timeout),
		kgo.RequestTimeoutOverhead(c.timeout),
		// A request is retried (a broker restarting, a leader moving)
		// for at most one timeout.
		kgo.RetryTimeout(c.timeout),
	}
	if c.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(c.tls))
	}
	if c.sasl != nil {
		opts = append(opts, kgo.SASL(c.sasl))
	}
	return opts
}

// roundTrip bounds one round trip to the cluster by the request timeout.
func (s settings) roundTrip(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.requestTimeout)
}

// cacheKey identifies the client a cluster needs: a new ID, address or
// any changed setting needs a new client.
func cacheKey(c inventory.Cluster) string {
	var b strings.Builder
	b.WriteString(c.ID)
	b.WriteByte(0)
	b.WriteString(c.Address)
	keys := make([]string, 0, len(c.Settings))
	for k := range c.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(c.Settings[k])
	}
	return b.String()
}
