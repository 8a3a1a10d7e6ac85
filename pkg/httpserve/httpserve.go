// Package httpserve serves Flotilla's HTTP endpoints — the notifier's
// dashboard and every service's /metrics — until a context ends, with the
// TLS and basic authentication of a web configuration file (--web-config)
// in the format of the Prometheus exporter toolkit, which does the work:
// the file Prometheus, its exporters and Alertmanager take, so one file
// and one way of scraping with credentials serve the whole stack.
//
//	tls_server_config:
//	  cert_file: server.crt
//	  key_file: server.key
//	  client_ca_file: ca.crt            # with client_auth_type: mutual TLS
//	  client_auth_type: RequireAndVerifyClientCert
//	basic_auth_users:
//	  alice: $2y$10$...                 # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':')
//
// Certificates are read again on each new connection and the file on each
// request, so a renewed certificate or a changed user takes effect
// without a restart.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v3"
)

// Options of a server.
type Options struct {
	// WebConfig is the web configuration file; "" serves plain HTTP to
	// anyone.
	WebConfig string
	// Grace is how long requests under way may go on once the context
	// ends (an event stream is told to end at once: its request's context
	// is the server's).
	Grace time.Duration
	// Logger is told what the server does (nil: slog's default).
	Logger *slog.Logger
}

// Check reads a web configuration file and says what is wrong with it,
// naming the file: a service checks its file before it starts.
func Check(path string) error {
	if path == "" {
		return nil
	}
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("web config %s (--web-config): %w", path, err)
	}
	return nil
}

// Scheme returns "https" if the web configuration file serves TLS, else
// "http": what a URL of the server begins with.
func Scheme(path string) string {
	if path == "" {
		return "http"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "http" // Check says why
	}
	var c struct {
		TLS web.TLSConfig `yaml:"tls_server_config"`
	}
	if yaml.Unmarshal(data, &c) == nil && c.TLS.IsEnabled() {
		return "https"
	}
	return "http"
}

// Serve serves handler on ln until ctx ends, then shuts the server down,
// giving requests under way o.Grace, and returns nil; it returns an error
// if serving fails. The requests' contexts end with ctx.
func Serve(ctx context.Context, ln net.Listener, handler http.Handler, o Options) error {
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan error, 1)
	configFile := o.WebConfig
	go func() {
		if configFile == "" {
			done <- srv.Serve(ln)
			return
		}
		done <- web.Serve(ln, srv, &web.FlagConfig{WebConfigFile: &configFile}, logger)
	}()
	select {
	case err := <-done:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), o.Grace)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close() // past the grace: cut off
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}
