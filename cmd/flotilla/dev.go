package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/servicecmd"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/httpserve"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/records"
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

func devCommand() *cobra.Command {
	var (
		dataDir, addr, namespace, logLevel string
		httpAddr                           string
		sinksFile                          string
		clusters                           int
		partitions                         int32
		df                                 servicecmd.DriverFlags
		probeInterval, heartbeat           time.Duration
		brokerOnly, secure                 bool
		metricsAddr, webConfig             string
		chain                              servicecmd.ChainFlags
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything on this machine: an embedded Kafka, the four services and a simulated fleet",
		Long: `dev starts an embedded Kafka-protocol broker (its logs kept in --data-dir),
creates Flotilla's topics, registers a simulated fleet of --sim-clusters
clusters with varied labels, and runs the planner, executor, monitor and
notifier in this process. Ctrl-C stops it cleanly; started again on the
same data directory it carries on where it stopped.

With --secure the broker signs every client in with SASL (SCRAM-SHA-512)
and checks ACLs: dev creates a user for each service and one for you (an
operator and fleet admin, named as FLOTILLA_PRINCIPAL or your login), the
least-privilege ACLs of 'flotilla acl plan', and the client config files
in DATA-DIR/secure, and prints how to connect. A data directory run with
--secure runs only with --secure.

With --broker-only it runs the broker, the topics and the simulated fleet
but no service, and prints how to run each service as a process of its
own against it; the executor and the monitor share the simulated
clusters' state through --sim-dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := servicecmd.NewLogger(logLevel, "text")
			if err != nil {
				return err
			}
			if err := httpserve.Check(webConfig); err != nil {
				return err
			}
			if df.Sim.Dir == "" {
				df.Sim.Dir = filepath.Join(dataDir, "sim")
			}
			o := devOptions{
				DataDir: dataDir, Addr: addr, Namespace: namespace, Clusters: clusters, Partitions: partitions, Drivers: df,
				ProbeInterval: probeInterval, Heartbeat: heartbeat, Log: log, MetricsAddr: metricsAddr, WebConfig: webConfig, HTTP: httpAddr, Out: cmd.OutOrStdout(),
				Sinks: sinksFile, Secure: secure, Chain: chain,
			}
			if brokerOnly {
				o.BrokerOnly = true
				// The simulation's flags given to dev go to the services
				// that use the simulated fleet.
				for _, name := range []string{"sim-op-duration", "sim-failure-rate", "sim-bad-versions", "drivers-config"} {
					if f := cmd.Flags().Lookup(name); f.Changed {
						v := f.Value.String()
						if name == "drivers-config" {
							v = absPath(v)
						}
						o.DriverArgs = append(o.DriverArgs, "--"+name, v)
					}
				}
			}
			return runDev(cmd.Context(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&dataDir, "data-dir", ".flotilla", "directory of the embedded broker's logs and the simulated fleet's state")
	fs.StringVar(&addr, "addr", backbone.DefaultBrokers, "address the embedded broker listens on")
	fs.StringVar(&namespace, "namespace", servicecmd.EnvOr("FLOTILLA_NAMESPACE", "fleet"), "prefix of Flotilla's topic and group names (env FLOTILLA_NAMESPACE)")
	fs.IntVar(&clusters, "sim-clusters", 200, "size of the simulated fleet registered in the inventory")
	fs.Int32Var(&partitions, "partitions", topics.DefaultPartitions, "partitions of each topic created at start (existing topics are kept)")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&probeInterval, "probe-interval", 2*time.Second, "time between two probes of a cluster")
	fs.DurationVar(&heartbeat, "heartbeat", 5*time.Second, "longest time without a health signal for a cluster")
	fs.StringVar(&httpAddr, "http", "127.0.0.1:8080", "address of the web dashboard (empty: none)")
	fs.StringVar(&sinksFile, "sinks", servicecmd.EnvOr("FLOTILLA_SINKS", ""), "YAML routing file of the notifier's sinks (webhooks, Slack) (env FLOTILLA_SINKS)")
	fs.BoolVar(&secure, "secure", false, "run the broker with SASL sign-in and ACLs, each service as a principal of its own, and print how to connect")
	fs.BoolVar(&brokerOnly, "broker-only", false, "run the broker, the topics and the simulated fleet without the services, and print how to run each service against them")
	servicecmd.BindMetricsAddr(fs, &metricsAddr)
	servicecmd.BindWebConfig(fs, &webConfig)
	df.Bind(fs)
	chain.Bind(fs)
	return cmd
}

type devOptions struct {
	DataDir, Addr, Namespace string
	Clusters                 int
	Partitions               int32 // of each topic created (0: topics.DefaultPartitions)
	Drivers                  servicecmd.DriverFlags
	ProbeInterval, Heartbeat time.Duration
	Log                      *slog.Logger
	// Sinks is the notifier's routing file of sinks ("": none).
	Sinks string
	// OnReady, if set, is told the broker's addresses once everything runs.
	OnReady func(brokers []string)
	// HTTP is the dashboard's address ("": none); Out is told its URL.
	HTTP string
	// OnDashboard, if set, is told the dashboard's address once it listens.
	OnDashboard func(net.Addr)
	// BrokerOnly runs no service: it prints to Out how to run each one.
	BrokerOnly bool
	Out        io.Writer
	// DriverArgs are flags of the simulated fleet and drivers to pass on
	// to the executor and the monitor (BrokerOnly).
	DriverArgs []string
	// MetricsAddr, if set, is where the services' metrics are served, at
	// /metrics: one registry for the process, each service's metrics
	// under its own names. OnMetrics, if set, is told the address bound.
	MetricsAddr string
	OnMetrics   func(addr net.Addr)
	// WebConfig is the web configuration file (TLS, users) of the
	// dashboard and the metrics server (package httpserve).
	WebConfig string
	// Secure runs the broker with SASL and ACLs (see devSecurity).
	Secure bool
	// Chain signs and paces the planner's and executor's checkpoints of
	// the audit trail (one key for both; none: unsigned).
	Chain servicecmd.ChainFlags
}

func runDev(ctx context.Context, o devOptions) error {
	if err := servicecmd.CheckSinks(o.Sinks); err != nil {
		return err
	}
	var sec *devSecurity
	if _, err := os.Stat(secureDir(o.DataDir)); err == nil && !o.Secure {
		return fmt.Errorf("%s was run with --secure (its broker signs clients in and checks ACLs): run dev with --secure again, or give another --data-dir", o.DataDir)
	}
	var broker *backbone.Embedded
	var err error
	if o.Secure {
		s, err := openDevSecurity(o.DataDir, principal(backbone.Config{}))
		if err != nil {
			return fmt.Errorf("--secure: credentials in %s: %w", secureDir(o.DataDir), err)
		}
		sec = &s
		if o.WebConfig == "" {
			o.WebConfig = sec.WebConfigFile() // the dashboard and /metrics ask for a password too
		}
		pass, err := sec.password(devAdmin)
		if err != nil {
			return err
		}
		broker, err = backbone.StartEmbeddedSecure(o.Addr, filepath.Join(o.DataDir, "kafka"), devAdmin, pass)
		if err != nil {
			return err
		}
	} else if broker, err = backbone.StartEmbedded(o.Addr, filepath.Join(o.DataDir, "kafka")); err != nil {
		return err
	}
	defer broker.Close()
	cfg := backbone.Config{Brokers: broker.Addrs(), Namespace: o.Namespace, Logger: o.Log}
	// as returns the configuration of a service's principal: the one
	// cfg is, unless --secure gives each service a user of its own.
	as := func(service string) (backbone.Config, error) { return cfg, nil }
	if sec != nil {
		if cfg, err = sec.as(cfg, devAdmin); err != nil {
			return err
		}
		as = func(service string) (backbone.Config, error) { return sec.as(cfg, devServicePrincipals[service]) }
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ids, err := cfg.SetUpTopics(ctx, cmp.Or(o.Partitions, topics.DefaultPartitions), 1)
	if err != nil {
		return fmt.Errorf("topics: %w", err)
	}
	go cfg.KeepTopicIDs(ctx, ids)
	var trustCfg trust.Config
	var fleetSigner *keys.Signer // of the simulated fleet's records
	owner := "flotilla-dev"
	if sec != nil {
		if err := sec.setUp(ctx, cfg); err != nil {
			return fmt.Errorf("--secure: users and ACLs: %w", err)
		}
		if err := sec.setUpTrust(ctx, cfg); err != nil {
			return fmt.Errorf("--secure: the trust store: %w", err)
		}
		trustCfg, fleetSigner, owner = sec.Trust(), &sec.key, sec.user
	}
	added, err := registerSimFleet(ctx, cfg, o.Clusters, owner, fleetSigner)
	if err != nil {
		return fmt.Errorf("register the simulated fleet: %w", err)
	}
	if sec != nil {
		sec.printHowToConnect(o.Out, broker.Addrs())
	}
	if o.BrokerOnly {
		printServiceCommands(o, broker.Addrs(), sec)
		if o.OnReady != nil {
			o.OnReady(broker.Addrs())
		}
		o.Log.Info("flotilla dev --broker-only is running; Ctrl-C stops it",
			"brokers", broker.Addrs(), "data_dir", o.DataDir, "clusters_registered_now", added)
		<-ctx.Done()
		o.Log.Info("flotilla dev stopped")
		return nil
	}
	reg, closeDrivers, err := o.Drivers.Registry()
	if err != nil {
		return err
	}
	defer closeDrivers()
	sets, err := o.serveMetrics(ctx)
	if err != nil {
		return err
	}

	svc := map[string]backbone.Config{}
	for _, name := range []string{"planner", "executor", "monitor", "notifier"} {
		if svc[name], err = as(name); err != nil {
			return err
		}
	}
	signer, err := o.Chain.Signer()
	if err != nil {
		return err
	}
	if signer == nil && sec != nil {
		signer = &sec.chains
	}
	services := map[string]func(context.Context) error{
		"planner": func(ctx context.Context) error {
			return planner.Run(ctx, planner.Config{Backbone: svc["planner"], InstanceID: "dev", StaticMembership: true, Metrics: sets.Planner,
				Trust: trustCfg, Signer: signer, CheckpointInterval: o.Chain.Interval})
		},
		"executor": func(ctx context.Context) error {
			return executor.Run(ctx, executor.Config{Backbone: svc["executor"], Drivers: reg, InstanceID: "dev", Metrics: sets.Executor,
				Signer: signer, CheckpointInterval: o.Chain.Interval})
		},
		"monitor": func(ctx context.Context) error {
			return monitor.Run(ctx, monitor.Config{Backbone: svc["monitor"], Probers: reg, InstanceID: "dev", Interval: o.ProbeInterval, Heartbeat: o.Heartbeat, Metrics: sets.Monitor, Trust: trustCfg})
		},
		"notifier": func(ctx context.Context) error {
			var observer sinks.Observer
			if sets.Notifier != nil {
				observer = sets.Notifier.Deliveries()
			}
			run := func(ctx context.Context) error {
				return servicecmd.RunNotifier(ctx, notifier.Config{Backbone: svc["notifier"], InstanceID: "dev", StaticMembership: true, Metrics: sets.Notifier, Trust: trustCfg}, o.Sinks, observer)
			}
			if o.HTTP == "" {
				return run(ctx)
			}
			return servicecmd.RunWithDashboard(ctx, svc["notifier"], trustCfg, o.HTTP, o.WebConfig, sets.handler, func(addr net.Addr) {
				if o.Out != nil {
					fmt.Fprintf(o.Out, "dashboard: %s\n", dashboard.URL(addr, o.WebConfig))
				}
				if o.OnDashboard != nil {
					o.OnDashboard(addr)
				}
			}, run)
		},
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(services))
	for name, run := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	if o.OnReady != nil {
		o.OnReady(broker.Addrs())
	}
	o.Log.Info("flotilla dev is running; Ctrl-C stops it",
		"brokers", broker.Addrs(), "data_dir", o.DataDir, "clusters_registered_now", added, "try", "flotilla cluster list")
	<-ctx.Done()
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	o.Log.Info("flotilla dev stopped")
	return errors.Join(all...)
}

// devMetrics are the metrics of dev's four services, all nil with
// neither --metrics-addr nor a dashboard; handler serves them on the
// dashboard's address when there is no --metrics-addr.
type devMetrics struct {
	metrics.Services
	handler http.Handler
}

func newDevMetrics(reg *prometheus.Registry) (devMetrics, error) {
	s, err := metrics.NewServices(reg)
	return devMetrics{Services: s}, err
}

// serveMetrics serves one registry for the four services on o.MetricsAddr
// until ctx ends, and returns their metrics on it; nothing without an
// address. The same registry can be mounted on another server with
// metrics.Handler.
func (o devOptions) serveMetrics(ctx context.Context) (devMetrics, error) {
	if o.MetricsAddr == "" {
		if o.HTTP == "" {
			return devMetrics{}, nil
		}
		// On the dashboard's address, at /metrics.
		reg := metrics.NewRegistry()
		m, err := newDevMetrics(reg)
		m.handler = metrics.Handler(reg)
		return m, err
	}
	ln, err := metrics.Listen(o.MetricsAddr)
	if err != nil {
		return devMetrics{}, err
	}
	reg := metrics.NewRegistry()
	m, err := newDevMetrics(reg)
	if err != nil {
		ln.Close()
		return devMetrics{}, err
	}
	go func() {
		if err := metrics.ServeListener(ctx, ln, reg, o.WebConfig); err != nil {
			o.Log.Error("metrics server stopped", "err", err)
		}
	}()
	o.Log.Info("serving metrics", "url", httpserve.Scheme(o.WebConfig)+"://"+ln.Addr().String()+metrics.Path)
	if o.OnMetrics != nil {
		o.OnMetrics(ln.Addr())
	}
	return m, nil
}

// printServiceCommands tells how to run each service as a process of its
// own against the broker of `dev --broker-only`.
func printServiceCommands(o devOptions, brokers []string, sec *devSecurity) {
	simDir := absPath(o.Drivers.Sim.Dir)
	if o.Out == nil {
		o.Out = os.Stdout
	}
	common := func(service string) []string {
		args := []string{service, "--brokers", strings.Join(brokers, ","), "--namespace", o.Namespace}
		if sec != nil {
			args = append(args, "--kafka-config", absPath(sec.ConfigFile(devServicePrincipals[service])))
			if service != "executor" { // it reads no user-written record
				args = append(args, "--require-signatures", "--trust-root", absPath(sec.RootPublicFile()))
			}
		}
		return args
	}
	sim := append([]string{"--sim-dir", simDir}, o.DriverArgs...)
	notifierArgs := common("notifier")
	if o.Sinks != "" {
		notifierArgs = append(notifierArgs, "--sinks", absPath(o.Sinks))
	}
	lines := [][]string{
		common("planner"),
		append(common("executor"), sim...),
		append(append(common("monitor"), sim...),
			"--interval", o.ProbeInterval.String(), "--heartbeat", o.Heartbeat.String()),
		notifierArgs,
	}
	fmt.Fprintf(o.Out, "The broker runs at %s, with Flotilla's topics (namespace %s) and a simulated fleet of %d clusters.\n",
		strings.Join(brokers, ","), o.Namespace, o.Clusters)
	fmt.Fprintf(o.Out, "Run each service against it, each in a terminal of its own (or as go run ./services/NAME with the same flags):\n\n")
	for _, l := range lines {
		for i, arg := range l {
			l[i] = shellQuote(arg)
		}
		fmt.Fprintf(o.Out, "  flotilla %s\n", strings.Join(l, " "))
	}
	fmt.Fprintf(o.Out, "\nThe executor and the monitor share the simulated clusters' state in %s. Ctrl-C stops the broker.\n", simDir)
}

// absPath returns path made absolute, so that a command printed works from
// any directory, or path itself if it cannot.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// shellQuote quotes s for a POSIX shell, unless it needs none.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:,=@%+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// registerSimFleet adds to the inventory the simulated clusters it lacks,
// so that restarting dev keeps the fleet as it was.
func registerSimFleet(ctx context.Context, cfg backbone.Config, n int, owner string, signer *keys.Signer) (int, error) {
	names := cfg.Names()
	known := map[string]bool{}
	err := logtable.ReadToEnd(ctx, cfg.Opts(), names.Inventory, nil, func(r *kgo.Record) {
		known[string(r.Key)] = r.Value != nil
	})
	if err != nil {
		return 0, err
	}
	var recs []*kgo.Record
	for _, c := range simfleet.GenerateClusters(n) {
		if _, seen := known[c.ID]; seen {
			continue // registered before, or decommissioned on purpose
		}
		rec := records.ClusterRecord{
			Envelope: records.Envelope{ID: uuid.NewString(), Time: time.Now().UTC(), Principal: owner},
			Cluster:  c,
		}
		var value []byte
		if signer != nil {
			value, err = records.EncodeSigned(rec, signer.ID, signer.Sign)
		} else {
			value, err = records.Encode(rec)
		}
		if err != nil {
			return 0, err
		}
		recs = append(recs, &kgo.Record{Topic: names.Inventory, Key: []byte(c.ID), Value: value})
	}
	if len(recs) == 0 {
		return 0, nil
	}
	return len(recs), produce(ctx, cfg, recs...)
}
