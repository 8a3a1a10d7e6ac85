// Package servicecmd holds the command lines of Flotilla's four services,
// shared by their own binaries (services/*/main.go) and by the flotilla
// CLI, so that a flag means the same wherever a service runs.
package servicecmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/execdriver"
	"github.com/flotilla-fleet/flotilla/pkg/httpserve"
	"github.com/flotilla-fleet/flotilla/pkg/kafkaauth"
	"github.com/flotilla-fleet/flotilla/pkg/kafkadriver"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
	"github.com/flotilla-fleet/flotilla/services/executor/executor"
	"github.com/flotilla-fleet/flotilla/services/monitor/monitor"
	"github.com/flotilla-fleet/flotilla/services/notifier/dashboard"
	"github.com/flotilla-fleet/flotilla/services/notifier/notifier"
	"github.com/flotilla-fleet/flotilla/services/notifier/sinks"
	"github.com/flotilla-fleet/flotilla/services/planner/planner"
)

// BackboneFlags are the flags every client of the backbone takes.
type BackboneFlags struct {
	Brokers   string
	Namespace string
	LogLevel  string
	LogFormat string
	Security  SecurityFlags
}

// SecurityFlags say how to authenticate to the backbone and trust it: a
// client config file (backbone.LoadSecurity), overridden field by field by
// the flags, whose defaults come from the environment. No flag takes a
// secret: a password comes from --sasl-password-file or the environment
// (FLOTILLA_SASL_PASSWORD), so that it never shows in a process list.
type SecurityFlags struct {
	ConfigFile            string
	TLS                   bool
	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
	TLSServerName         string
	TLSInsecureSkipVerify bool
	SASLMechanism         string
	SASLUsername          string
	SASLPasswordFile      string
	SASLTokenFile         string
}

// Bind adds the flags to fs.
func (f *SecurityFlags) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.ConfigFile, "kafka-config", os.Getenv("FLOTILLA_KAFKA_CONFIG"), "YAML file of how to reach Kafka securely (tls:, sasl:); the flags below override it (env FLOTILLA_KAFKA_CONFIG)")
	fs.BoolVar(&f.TLS, "tls", envBool("FLOTILLA_TLS"), "speak TLS to the brokers (env FLOTILLA_TLS); implied by the other --tls-* flags")
	fs.StringVar(&f.TLSCAFile, "tls-ca-file", os.Getenv("FLOTILLA_TLS_CA_FILE"), "PEM file of the CAs to trust instead of the system's (env FLOTILLA_TLS_CA_FILE)")
	fs.StringVar(&f.TLSCertFile, "tls-cert-file", os.Getenv("FLOTILLA_TLS_CERT_FILE"), "PEM client certificate, for mutual TLS (env FLOTILLA_TLS_CERT_FILE)")
	fs.StringVar(&f.TLSKeyFile, "tls-key-file", os.Getenv("FLOTILLA_TLS_KEY_FILE"), "PEM key of the client certificate (env FLOTILLA_TLS_KEY_FILE)")
	fs.StringVar(&f.TLSServerName, "tls-server-name", os.Getenv("FLOTILLA_TLS_SERVER_NAME"), "name to check the brokers' certificates against, instead of the host dialled (env FLOTILLA_TLS_SERVER_NAME)")
	fs.BoolVar(&f.TLSInsecureSkipVerify, "tls-insecure-skip-verify", false, "do not check the brokers' certificates (tests only)")
	fs.StringVar(&f.SASLMechanism, "sasl-mechanism", os.Getenv("FLOTILLA_SASL_MECHANISM"), "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (env FLOTILLA_SASL_MECHANISM)")
	fs.StringVar(&f.SASLUsername, "sasl-username", os.Getenv("FLOTILLA_SASL_USERNAME"), "SASL user (env FLOTILLA_SASL_USERNAME)")
	fs.StringVar(&f.SASLPasswordFile, "sasl-password-file", os.Getenv("FLOTILLA_SASL_PASSWORD_FILE"), "file holding the SASL password; without it, the password is read from env FLOTILLA_SASL_PASSWORD (env FLOTILLA_SASL_PASSWORD_FILE)")
	fs.StringVar(&f.SASLTokenFile, "sasl-token-file", os.Getenv("FLOTILLA_SASL_TOKEN_FILE"), "file holding the OAUTHBEARER token, read again at each connection (env FLOTILLA_SASL_TOKEN_FILE)")
}

// Security returns the settings the file and the flags describe.
func (f *SecurityFlags) Security() (backbone.Security, error) {
	var s backbone.Security
	if f.ConfigFile != "" {
		var err error
		if s, err = backbone.LoadSecurity(f.ConfigFile); err != nil {
			return backbone.Security{}, err
		}
	}
	if f.TLS || f.TLSCAFile != "" || f.TLSCertFile != "" || f.TLSKeyFile != "" || f.TLSServerName != "" || f.TLSInsecureSkipVerify {
		if s.TLS == nil {
			s.TLS = &kafkaauth.TLS{}
		}
		set(&s.TLS.CAFile, f.TLSCAFile)
		set(&s.TLS.CertFile, f.TLSCertFile)
		set(&s.TLS.KeyFile, f.TLSKeyFile)
		set(&s.TLS.ServerName, f.TLSServerName)
		s.TLS.InsecureSkipVerify = s.TLS.InsecureSkipVerify || f.TLSInsecureSkipVerify
	}
	if f.SASLMechanism != "" || f.SASLUsername != "" || f.SASLPasswordFile != "" || f.SASLTokenFile != "" {
		if s.SASL == nil {
			if f.SASLMechanism == "" {
				return backbone.Security{}, fmt.Errorf("--sasl-username, --sasl-password-file and --sasl-token-file need --sasl-mechanism (or sasl.mechanism in --kafka-config)")
			}
			s.SASL = &backbone.SASL{}
		}
		set(&s.SASL.Mechanism, f.SASLMechanism)
		set(&s.SASL.Username, f.SASLUsername)
		if f.SASLPasswordFile != "" {
			s.SASL.PasswordFile, s.SASL.PasswordEnv = f.SASLPasswordFile, ""
		}
		set(&s.SASL.TokenFile, f.SASLTokenFile)
	}
	if err := s.Validate(); err != nil {
		return backbone.Security{}, err
	}
	return s, nil
}

func set(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func envBool(name string) bool {
	v, err := strconv.ParseBool(os.Getenv(name))
	return err == nil && v
}

// Bind adds the flags to fs.
func (f *BackboneFlags) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.Brokers, "brokers", backbone.BrokersFromEnv(), "Kafka bootstrap servers, comma-separated (env FLOTILLA_BROKERS)")
	fs.StringVar(&f.Namespace, "namespace", EnvOr("FLOTILLA_NAMESPACE", "fleet"), "prefix of Flotilla's topic and group names (env FLOTILLA_NAMESPACE)")
	fs.StringVar(&f.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.LogFormat, "log-format", "text", "log format: text or json")
	f.Security.Bind(fs)
}

// Config returns the backbone configuration the flags describe.
func (f *BackboneFlags) Config() (backbone.Config, error) {
	brokers := backbone.SplitBrokers(f.Brokers)
	if len(brokers) == 0 {
		return backbone.Config{}, fmt.Errorf("--brokers: no broker address given")
	}
	log, err := NewLogger(f.LogLevel, f.LogFormat)
	if err != nil {
		return backbone.Config{}, err
	}
	sec, err := f.Security.Security()
	if err != nil {
		return backbone.Config{}, err
	}
	opts, err := sec.ClientOpts(os.LookupEnv)
	if err != nil {
		return backbone.Config{}, err
	}
	return backbone.Config{Brokers: brokers, Namespace: f.Namespace, Logger: log, ClientOpts: opts, User: sec.Username()}, nil
}

// NewLogger returns a logger writing to stderr at a level and in a format
// ("text" or "json").
func NewLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// EnvOr returns the environment variable name, or fallback when it is unset.
func EnvOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// TopicFlags say how the services create missing topics at start.
type TopicFlags struct {
	Partitions        int32
	ReplicationFactor int16
}

// Bind adds the flags to fs.
func (f *TopicFlags) Bind(fs *pflag.FlagSet) {
	fs.Int32Var(&f.Partitions, "partitions", topics.DefaultPartitions, "partitions of each topic created at start (existing topics are kept): the most copies of a service that can share the work; fixed once created")
	fs.Int16Var(&f.ReplicationFactor, "replication-factor", -1, "replication factor of topics created at start (-1: the broker's default)")
}

// SimFlags configure the simulated fleet, for the sim driver and probe.
type SimFlags struct {
	Dir         string
	OpDuration  time.Duration
	FailureRate float64
	BadVersions string
	CallLog     string
}

// Bind adds the flags to fs.
func (f *SimFlags) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.Dir, "sim-dir", "", "directory holding the simulated clusters' state, shared by the executor and the monitor on one machine (empty: in memory)")
	fs.DurationVar(&f.OpDuration, "sim-op-duration", 2*time.Second, "how long a simulated operation takes")
	fs.Float64Var(&f.FailureRate, "sim-failure-rate", 0, "fraction (0..1) of simulated operations that fail")
	fs.StringVar(&f.BadVersions, "sim-bad-versions", "", "comma-separated versions that make a simulated cluster unhealthy")
	fs.StringVar(&f.CallLog, "sim-call-log", "", "file to which every simulated Apply call appends a line when it begins and one when it ends (JSON lines, shared by several processes), for checking a run's history")
}

// Fleet returns the simulated fleet the flags describe.
func (f *SimFlags) Fleet() (*simfleet.Fleet, error) {
	var bad []string
	for _, v := range strings.Split(f.BadVersions, ",") {
		if v = strings.TrimSpace(v); v != "" {
			bad = append(bad, v)
		}
	}
	return simfleet.New(simfleet.Options{Dir: f.Dir, OpDuration: f.OpDuration, FailureRate: f.FailureRate, BadVersions: bad, CallLog: f.CallLog})
}

// staticInstanceUsage describes the --instance flag of the executor and
// the monitor.
var staticInstanceUsage = "stable name of this copy, its identity in its consumer group (static membership): " +
	"a copy restarted under the same name takes its partitions back at once, and one stopped holds them for up to --session-timeout; distinct per copy"

func defaultInstance() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "0"
}

// serviceCommand builds a service's command: it parses the shared flags,
// serves /metrics on --metrics-addr if given, sets up the topics
// (backbone.Config.SetUpTopics: creates those missing, refuses to start
// over lost ones), and runs the service until interrupted. run is given
// the registry of the service's metrics, nil without --metrics-addr.
func serviceCommand(name, short string, bind func(fs *pflag.FlagSet), run func(cmd *cobra.Command, cfg backbone.Config, reg prometheus.Registerer) error) *cobra.Command {
	var bb BackboneFlags
	var tf TopicFlags
	var session time.Duration
	var metricsAddr, webConfig string
	cmd := &cobra.Command{
		Use:          name,
		Short:        short,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := bb.Config()
			if err != nil {
				return err
			}
			cfg.SessionTimeout = session
			if err := httpserve.Check(webConfig); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			reg, err := ServeMetrics(ctx, cfg.Log(), metricsAddr, webConfig)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			// Creates missing topics, but never over lost ones: a
			// service refuses to start on topics deleted, or deleted
			// and created again, since the last start.
			ids, err := cfg.SetUpTopics(ctx, tf.Partitions, tf.ReplicationFactor)
			if err != nil {
				return fmt.Errorf("%s: topics: %w", name, err)
			}
			go cfg.KeepTopicIDs(ctx, ids)
			if reg == nil {
				return run(cmd, cfg, nil) // not a nil *Registry in an interface
			}
			return run(cmd, cfg, reg)
		},
	}
	bb.Bind(cmd.Flags())
	tf.Bind(cmd.Flags())
	BindMetricsAddr(cmd.Flags(), &metricsAddr)
	BindWebConfig(cmd.Flags(), &webConfig)
	cmd.Flags().DurationVar(&session, "session-timeout", backbone.StaticSessionTimeout,
		"how long this copy may be away (crashed, frozen) before its consumer group gives its partitions to another copy; "+
			"a restart within it takes them back at once (between the broker's group.min and group.max.session.timeout.ms)")
	if bind != nil {
		bind(cmd.Flags())
	}
	return cmd
}

// BindMetricsAddr adds --metrics-addr to fs.
func BindMetricsAddr(fs *pflag.FlagSet, addr *string) {
	fs.StringVar(addr, "metrics-addr", os.Getenv("FLOTILLA_METRICS_ADDR"),
		"address (host:port, :9100) on which to serve Prometheus metrics at /metrics; empty: none (env FLOTILLA_METRICS_ADDR)")
}

// BindWebConfig adds --web-config to fs.
func BindWebConfig(fs *pflag.FlagSet, path *string) {
	fs.StringVar(path, "web-config", os.Getenv("FLOTILLA_WEB_CONFIG"),
		"web configuration file (the Prometheus exporter toolkit's format) of the HTTP endpoints, /metrics and the dashboard: "+
			"TLS (tls_server_config) and users with bcrypt passwords (basic_auth_users); empty: plain HTTP to anyone (env FLOTILLA_WEB_CONFIG)")
}

// ServeMetrics serves a new registry's metrics (metrics.NewRegistry) at
// /metrics on addr, with the TLS and users of webConfig, until ctx ends,
// and returns the registry; with addr "" it serves nothing and returns
// nil. It fails at once, naming addr, if it cannot listen there; a server
// that fails later is logged, and the service carries on without it.
func ServeMetrics(ctx context.Context, log *slog.Logger, addr, webConfig string) (*prometheus.Registry, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := metrics.Listen(addr)
	if err != nil {
		return nil, err
	}
	reg := metrics.NewRegistry()
	go func() {
		if err := metrics.ServeListener(ctx, ln, reg, webConfig); err != nil {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("serving metrics", "url", httpserve.Scheme(webConfig)+"://"+ln.Addr().String()+metrics.Path)
	return reg, nil
}

// TrustFlags say whether a service requires the records users write to be
// signed, and with which trust root (package trust).
type TrustFlags struct {
	Require bool
	Root    string // the trust root's public key file
	Window  time.Duration
}

// Bind adds the flags to fs.
func (f *TrustFlags) Bind(fs *pflag.FlagSet) {
	fs.BoolVar(&f.Require, "require-signatures", os.Getenv("FLOTILLA_REQUIRE_SIGNATURES") == "1",
		"refuse requests, inventory and policy records that are not signed by a current key of their principal, and authorise requests by the roles of the trust store (env FLOTILLA_REQUIRE_SIGNATURES=1)")
	fs.StringVar(&f.Root, "trust-root", os.Getenv("FLOTILLA_TRUST_ROOT"),
		"public key file (PEM) of the first admin: it signs the first records of the trust store, as principal root (env FLOTILLA_TRUST_ROOT; flotilla keys generate makes one)")
	fs.DurationVar(&f.Window, "signature-window", trust.DefaultWindow, "how far a signed record's time may be from when the broker appended it")
}

// Config returns the trust configuration the flags say.
func (f *TrustFlags) Config() (trust.Config, error) {
	cfg := trust.Config{Require: f.Require, Window: f.Window}
	if !f.Require {
		return cfg, nil
	}
	if f.Root == "" {
		return cfg, errors.New("--require-signatures needs --trust-root FILE, the public key of the first admin (flotilla keys generate --out admin makes admin and admin.pub)")
	}
	root, err := keys.LoadPublic(f.Root)
	if err != nil {
		return cfg, fmt.Errorf("--trust-root: %w", err)
	}
	cfg.Root = root
	return cfg, nil
}

// ChainFlags say how a writer of hash chains (planner, executor) signs
// and paces its checkpoints (package auditchain).
type ChainFlags struct {
	SigningKey string
	Interval   time.Duration
}

// Bind adds the flags to fs.
func (f *ChainFlags) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.SigningKey, "signing-key", os.Getenv("FLOTILLA_SIGNING_KEY"), "Ed25519 private key file (PEM, mode 0600; flotilla keys or openssl genpkey -algorithm ed25519) that signs the checkpoints of the audit trail's hash chains; empty: unsigned checkpoints (env FLOTILLA_SIGNING_KEY)")
	fs.DurationVar(&f.Interval, "checkpoint-interval", planner.DefaultCheckpointInterval, "how often the hash chains changed since their last checkpoint are checkpointed")
}

// Signer returns the signer of the key file, or nil without one.
func (f *ChainFlags) Signer() (*keys.Signer, error) {
	if f.SigningKey == "" {
		return nil, nil
	}
	s, err := keys.LoadSigner(f.SigningKey)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// Planner returns the planner's command.
func Planner() *cobra.Command {
	var instance string
	var poll, retention time.Duration
	var tf TrustFlags
	var chain ChainFlags
	return serviceCommand("planner", "Plan rollouts and decide what happens next", func(fs *pflag.FlagSet) {
		tf.Bind(fs)
		chain.Bind(fs)
		fs.StringVar(&instance, "instance", defaultInstance(), "stable name of this copy: its transactional ID and its identity in its consumer group (static membership); distinct per copy")
		fs.DurationVar(&poll, "poll-interval", 100*time.Millisecond, "longest wait for records before checking health changes and deadlines")
		fs.DurationVar(&retention, "retention", planner.DefaultRetention, "how long a finished rollout keeps its per-cluster rows and commands (status, retry, rollback) before they are removed; its summary and each cluster's history stay; 0 keeps them for ever")
	}, func(cmd *cobra.Command, cfg backbone.Config, reg prometheus.Registerer) error {
		if retention == 0 {
			retention = -1 // for ever
		}
		m, err := metricsOn(reg, metrics.NewPlanner)
		if err != nil {
			return err
		}
		trustCfg, err := tf.Config()
		if err != nil {
			return err
		}
		signer, err := chain.Signer()
		if err != nil {
			return err
		}
		return planner.Run(cmd.Context(), planner.Config{Backbone: cfg, InstanceID: instance, StaticMembership: true, PollInterval: poll, Retention: retention, Metrics: m,
			Trust: trustCfg, Signer: signer, CheckpointInterval: chain.Interval})
	})
}

// Executor returns the executor's command.
func Executor() *cobra.Command {
	var df DriverFlags
	var instance string
	var concurrency int
	var timeout, lease time.Duration
	var chain ChainFlags
	return serviceCommand("executor", "Carry out operations on clusters through drivers", func(fs *pflag.FlagSet) {
		df.Bind(fs)
		chain.Bind(fs)
		fs.StringVar(&instance, "instance", defaultInstance(), staticInstanceUsage)
		fs.IntVar(&concurrency, "concurrency", executor.DefaultConcurrency, "most operations acting at once (those waiting for their cluster do not count)")
		fs.DurationVar(&timeout, "timeout", 30*time.Minute, "longest an operation may take before it fails")
		fs.DurationVar(&lease, "lease", 15*time.Second, "lease on each owned partition of commands, renewed every third of it: an executor that cannot renew it stops acting, and the next owner waits for it to lapse before resuming what was in flight")
	}, func(cmd *cobra.Command, cfg backbone.Config, mreg prometheus.Registerer) error {
		m, err := metricsOn(mreg, metrics.NewExecutor)
		if err != nil {
			return err
		}
		reg, closeDrivers, err := df.Registry()
		if err != nil {
			return err
		}
		defer closeDrivers()
		signer, err := chain.Signer()
		if err != nil {
			return err
		}
		return executor.Run(cmd.Context(), executor.Config{Backbone: cfg, Drivers: reg, InstanceID: instance, Concurrency: concurrency, Timeout: timeout, Lease: lease, Metrics: m,
			Signer: signer, CheckpointInterval: chain.Interval})
	})
}

// Monitor returns the monitor's command.
func Monitor() *cobra.Command {
	var df DriverFlags
	var instance string
	var interval, heartbeat time.Duration
	var concurrency int
	var probeRate, heartbeatBudget float64
	var tf TrustFlags
	return serviceCommand("monitor", "Probe every cluster and publish health signals", func(fs *pflag.FlagSet) {
		df.Bind(fs)
		tf.Bind(fs)
		fs.StringVar(&instance, "instance", defaultInstance(), staticInstanceUsage)
		fs.DurationVar(&interval, "interval", 10*time.Second, "time between two probes of a cluster, at least (clusters this copy owns) / --probe-rate")
		fs.DurationVar(&heartbeat, "heartbeat", time.Minute, "longest time without a signal for a cluster whose health does not change, at least (clusters this copy owns) / --heartbeat-budget")
		fs.IntVar(&concurrency, "concurrency", 32, "most probes run at once")
		fs.Float64Var(&probeRate, "probe-rate", monitor.DefaultProbeRate, "most probes of due clusters started per second by this copy (probes after an operation ends are not counted)")
		fs.Float64Var(&heartbeatBudget, "heartbeat-budget", monitor.DefaultHeartbeatBudget, "most heartbeats published per second by this copy (changes of health are published at once, not counted)")
	}, func(cmd *cobra.Command, cfg backbone.Config, mreg prometheus.Registerer) error {
		m, err := metricsOn(mreg, metrics.NewMonitor)
		if err != nil {
			return err
		}
		reg, closeDrivers, err := df.Registry()
		if err != nil {
			return err
		}
		defer closeDrivers()
		trustCfg, err := tf.Config()
		if err != nil {
			return err
		}
		return monitor.Run(cmd.Context(), monitor.Config{Backbone: cfg, Probers: reg, InstanceID: instance, Interval: interval, Heartbeat: heartbeat,
			Concurrency: concurrency, ProbeRate: probeRate, HeartbeatBudget: heartbeatBudget, Metrics: m, Trust: trustCfg})
	})
}

// Notifier returns the notifier's command.
func Notifier() *cobra.Command {
	var instance, httpAddr, sinksFile string
	var tf TrustFlags
	cmd := serviceCommand("notifier", "Turn decisions, operations and health changes into notifications", func(fs *pflag.FlagSet) {
		tf.Bind(fs)
		fs.StringVar(&instance, "instance", defaultInstance(), "stable name of this copy: its transactional ID and its identity in its consumer group (static membership); distinct per copy")
		fs.StringVar(&httpAddr, "http", os.Getenv("FLOTILLA_HTTP"), "address (host:port) to serve the web dashboard and its /api/ on, showing the whole fleet (every partition); empty: none (env FLOTILLA_HTTP)")
		fs.StringVar(&sinksFile, "sinks", EnvOr("FLOTILLA_SINKS", ""), "YAML routing file of the sinks: webhooks and Slack destinations that get notifications, and their rules (env FLOTILLA_SINKS; see the README's Sinks)")
	}, func(cmd *cobra.Command, cfg backbone.Config, reg prometheus.Registerer) error {
		m, err := metricsOn(reg, metrics.NewNotifier)
		if err != nil {
			return err
		}
		var observer sinks.Observer
		if m != nil {
			observer = m.Deliveries()
		}
		trustCfg, err := tf.Config()
		if err != nil {
			return err
		}
		run := func(ctx context.Context) error {
			return RunNotifier(ctx, notifier.Config{Backbone: cfg, InstanceID: instance, StaticMembership: true, Metrics: m, Trust: trustCfg}, sinksFile, observer)
		}
		if httpAddr == "" {
			return run(cmd.Context())
		}
		webConfig, _ := cmd.Flags().GetString("web-config")
		return RunWithDashboard(cmd.Context(), cfg, trustCfg, httpAddr, webConfig, nil, func(addr net.Addr) {
			cfg.Log().Info("dashboard listening", "url", dashboard.URL(addr, webConfig))
		}, run)
	})
	// A mistake in the routing file stops the start before anything
	// touches Kafka.
	cmd.PreRunE = func(*cobra.Command, []string) error { return CheckSinks(sinksFile) }
	return cmd
}

// CheckSinks loads the routing file of the sinks, if any, and returns what
// is wrong with it.
func CheckSinks(sinksFile string) error {
	if sinksFile == "" {
		return nil
	}
	if _, err := sinks.Load(sinksFile); err != nil {
		return fmt.Errorf("--sinks: %w", err)
	}
	return nil
}

// RunNotifier runs the notifier until ctx ends and, if sinksFile is set,
// its sinks beside it (sinks.Run), telling observer (if not nil) of their
// deliveries. The routing file is loaded first: a mistake in it, or
// sinks that cannot start, stops the notifier with the reason; a
// destination failing at run time does not.
func RunNotifier(ctx context.Context, cfg notifier.Config, sinksFile string, observer sinks.Observer) error {
	if sinksFile == "" {
		return notifier.Run(ctx, cfg)
	}
	routing, err := sinks.Load(sinksFile)
	if err != nil {
		return fmt.Errorf("--sinks: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sinkErr := make(chan error, 1)
	go func() {
		err := sinks.Run(ctx, sinks.Config{Backbone: cfg.Backbone, Routing: routing, Observer: observer, Trust: cfg.Trust})
		if err != nil {
			cancel() // sinks.Run fails only as it starts: stop, saying why
		}
		sinkErr <- err
	}()
	err = notifier.Run(ctx, cfg)
	cancel()
	return errors.Join(err, <-sinkErr)
}

// metricsOn returns a service's metrics made on reg by newSet
// (metrics.NewPlanner...), or none (nil) without a registry.
func metricsOn[T any](reg prometheus.Registerer, newSet func(prometheus.Registerer) (*T, error)) (*T, error) {
	if reg == nil {
		return nil, nil
	}
	return newSet(reg)
}

// DriverFlags say which drivers and probes the executor and monitor have:
// always the simulated fleet ("sim") and the Kafka admin API ("kafka"),
// plus the operator's command drivers from --drivers-config.
type DriverFlags struct {
	Sim           SimFlags
	DriversConfig string
}

// Bind adds the flags to fs.
func (f *DriverFlags) Bind(fs *pflag.FlagSet) {
	f.Sim.Bind(fs)
	fs.StringVar(&f.DriversConfig, "drivers-config", "", "YAML file of command (exec) drivers: per driver name, the apply, verify and probe commands (see examples/exec-drivers.yaml)")
}

// Registry returns the drivers and probes the flags describe, and a
// function that releases them (open connections to clusters).
func (f *DriverFlags) Registry() (*drivers.Registry, func(), error) {
	fleet, err := f.Sim.Fleet()
	if err != nil {
		return nil, nil, fmt.Errorf("simulated fleet: %w", err)
	}
	return Registry(fleet, f.DriversConfig)
}

// Registry returns the drivers and probes of a simulated fleet, of the
// Kafka admin API and of the command drivers configured in a file ("": none).
func Registry(fleet *simfleet.Fleet, driversConfig string) (*drivers.Registry, func(), error) {
	reg := drivers.NewRegistry()
	fleet.Register(reg)
	kd := kafkadriver.New(kafkadriver.Options{})
	kd.Register(reg)
	if driversConfig != "" {
		cfg, err := execdriver.LoadConfig(driversConfig)
		if err != nil {
			kd.Close()
			return nil, nil, fmt.Errorf("--drivers-config: %w", err)
		}
		for _, name := range cfg.Names() {
			if name == simfleet.DriverName || name == kafkadriver.DriverName {
				kd.Close()
				return nil, nil, fmt.Errorf("--drivers-config %s: driver %q is built in; name yours differently", driversConfig, name)
			}
		}
		cfg.Register(reg)
	}
	return reg, kd.Close, nil
}

// Main runs a service's command until SIGINT or SIGTERM, and exits non-zero
// if it fails: the whole main of each service's own binary.
func Main(cmd *cobra.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		os.Exit(1)
	}
}

// RunWithDashboard runs the notifier (run) and its web dashboard on
// httpAddr side by side, until ctx ends or either fails, which stops the
// other; listening is told the dashboard's address. The dashboard checks
// the inventory as the notifier does (trustCfg), and serves with the TLS
// and users of webConfig. A metrics handler, if given, is served on the
// same address at /metrics.
func RunWithDashboard(ctx context.Context, cfg backbone.Config, trustCfg trust.Config, httpAddr, webConfig string, metricsHandler http.Handler, listening func(net.Addr), run func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dcfg := dashboard.Config{Backbone: cfg, Trust: trustCfg, WebConfig: webConfig}
	if metricsHandler != nil {
		dcfg.Extra = map[string]http.Handler{"GET " + metrics.Path: metricsHandler}
	}
	shown := make(chan error, 1)
	go func() {
		shown <- dashboard.ListenAndRun(ctx, dcfg, httpAddr, listening)
		cancel()
	}()
	err := run(ctx)
	cancel()
	return errors.Join(err, <-shown)
}
