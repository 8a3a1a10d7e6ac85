package dashboard

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/httpserve"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
)

// Config configures a dashboard.
type Config struct {
	Backbone backbone.Config
	// Extra handlers mounted on the dashboard's address, by pattern
	// (e.g. "GET /metrics").
	Extra map[string]http.Handler
	// WebConfig is the web configuration file of its server (TLS, users;
	// package httpserve), "" for plain HTTP to anyone.
	WebConfig string
	// Trust, when it requires signatures, makes the dashboard show only
	// inventory records that pass the check every service makes
	// (trust.Table.DecodeCluster): an unsigned, forged or unauthorised one
	// is set aside, as the planner and monitor set it aside.
	Trust trust.Config
}

// Dashboard is the web dashboard of one notifier copy.
type Dashboard struct {
	cfg   Config
	log   *slog.Logger
	model *Model
	mux   *http.ServeMux
}

// New returns a dashboard; Run fills its model, Handler serves it.
func New(cfg Config) *Dashboard {
	d := &Dashboard{cfg: cfg, log: cfg.Backbone.Log().With("service", "notifier", "part", "dashboard"), model: NewModel()}
	d.mux = d.routes()
	for pattern, h := range cfg.Extra {
		d.mux.Handle(pattern, h)
	}
	return d
}

// Model returns the dashboard's model.
func (d *Dashboard) Model() *Model { return d.model }

// Handler returns the dashboard's HTTP handler.
func (d *Dashboard) Handler() http.Handler { return d.mux }

// Run reads every partition of the topics the dashboard shows up to their
// ends, then follows them, until ctx ends (it returns nil then) or a table
// cannot go on.
func (d *Dashboard) Run(ctx context.Context) error {
	parent := ctx
	names := d.cfg.Backbone.Names()
	opts := d.cfg.Backbone.Opts()
	skip := func(topic string) func(*kgo.Record, error) {
		return func(r *kgo.Record, err error) {
			d.log.Debug("dashboard skips a record it cannot read", "topic", topic, "partition", r.Partition, "offset", r.Offset, "err", err)
		}
	}
	m := d.model
	tt := trust.NewTable(names.Trust, opts, d.cfg.Trust, trust.WithLogger(d.log))
	inv := logtable.New(names.Inventory, opts, func(r *kgo.Record) (inventory.Cluster, error) {
		rec, err := tt.DecodeCluster(r)
		return rec.Cluster, err
	}, logtable.Stream(func(key string, c inventory.Cluster, deleted, _ bool) {
		if deleted {
			m.ApplyCluster(key, nil)
			return
		}
		m.ApplyCluster(key, &c)
	}), logtable.OnDecodeError[inventory.Cluster](skip(names.Inventory)), logtable.WithLogger[inventory.Cluster](d.log))
	health := logtable.New(names.Health, opts, func(r *kgo.Record) (records.Health, error) {
		return records.DecodeHealth(r.Value)
	}, logtable.Stream(func(key string, h records.Health, deleted, _ bool) {
		if deleted {
			m.ApplyHealth(key, nil)
			return
		}
		m.ApplyHealth(key, &h)
	}), logtable.OnDecodeError[records.Health](skip(names.Health)), logtable.WithLogger[records.Health](d.log))
	workflows := logtable.New(names.Workflows, opts, func(r *kgo.Record) (records.WorkflowRecord, error) {
		return records.DecodeWorkflowRecord(r.Value)
	}, logtable.Stream(func(key string, rec records.WorkflowRecord, deleted, _ bool) {
		if deleted {
			m.ApplyWorkflowRow(key, nil)
			return
		}
		m.ApplyWorkflowRow(key, &rec)
	}), logtable.OnDecodeError[records.WorkflowRecord](skip(names.Workflows)), logtable.WithLogger[records.WorkflowRecord](d.log))
	history := logtable.New(names.History, opts, func(r *kgo.Record) (records.WorkflowRecord, error) {
		return records.DecodeWorkflowRecord(r.Value)
	}, logtable.Stream(func(key string, rec records.WorkflowRecord, deleted, _ bool) {
		clusterID, workflowID, ok := strings.Cut(key, "/") // cluster IDs hold no '/'; a rollback's workflow ID does
		if !ok {
			return
		}
		if deleted {
			m.ApplyHistory(clusterID, workflowID, nil)
		} else if rec.Target != nil {
			m.ApplyHistory(clusterID, workflowID, rec.Target)
		}
	}), logtable.OnDecodeError[records.WorkflowRecord](skip(names.History)), logtable.WithLogger[records.WorkflowRecord](d.log))
	requests := logtable.New(names.Requests, opts, func(r *kgo.Record) (records.Request, error) {
		return records.DecodeRequest(r.Value)
	}, logtable.Stream(func(_ string, req records.Request, deleted, _ bool) {
		if !deleted {
			m.ApplyRequest(req)
		}
	}), logtable.OnDecodeError[records.Request](skip(names.Requests)), logtable.WithLogger[records.Request](d.log))

	type table interface {
		Run(context.Context) error
		WaitReady(context.Context) error
	}
	tables := []table{inv, health, workflows, history, requests}
	if tt.Required() {
		tables = append(tables, tt)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ended := make(chan error, len(tables))
	for _, t := range tables {
		go func() { ended <- t.Run(ctx) }()
	}
	go func() {
		for _, t := range tables {
			if t.WaitReady(ctx) != nil {
				return // its Run says why
			}
		}
		m.markReady()
		d.log.Info("dashboard caught up with the log")
	}()
	err := <-ended // the first to end ends them all
	cancel()
	for range len(tables) - 1 {
		<-ended
	}
	if parent.Err() != nil {
		return nil
	}
	return fmt.Errorf("dashboard: %w", err)
}

// ListenAndRun listens on addr (host:port; port 0 picks one), tells
// listening the address it got, and then reads the log and serves the
// dashboard until ctx ends (it returns nil then) or either fails.
func ListenAndRun(ctx context.Context, cfg Config, addr string, listening func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("dashboard: listen on %s (--http): %w", addr, err)
	}
	d := New(cfg)
	if listening != nil {
		listening(ln.Addr())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- httpserve.Serve(ctx, ln, d.Handler(), httpserve.Options{WebConfig: cfg.WebConfig, Grace: time.Second, Logger: d.log})
	}()
	err = d.Run(ctx)
	cancel()
	if serveErr := <-served; err == nil {
		err = serveErr
	}
	return err
}

// URL is the address of a dashboard listening on addr, for people: a
// wildcard host becomes localhost.
func URL(addr net.Addr, webConfig string) string {
	scheme := httpserve.Scheme(webConfig) + "://"
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return scheme + addr.String() + "/"
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return scheme + net.JoinHostPort(host, port) + "/"
}
