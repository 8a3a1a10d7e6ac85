package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/servicecmd"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
)

// clientFlags are the flags of every client command.
type clientFlags struct {
	servicecmd.BackboneFlags
	Output  string
	Timeout time.Duration
}

func (f *clientFlags) bind(cmd *cobra.Command) {
	f.BackboneFlags.Bind(cmd.Flags())
	cmd.Flags().StringVarP(&f.Output, "output", "o", "text", "output format: text or json")
	cmd.Flags().DurationVar(&f.Timeout, "timeout", 30*time.Second, "how long to wait for Kafka and for answers")
}

func (f *clientFlags) config() (backbone.Config, error) {
	if f.Output != "text" && f.Output != "json" {
		return backbone.Config{}, fmt.Errorf("--output %q: want text or json", f.Output)
	}
	if f.LogLevel == "info" {
		f.LogLevel = "warn" // a CLI prints results, not progress logs
	}
	return f.BackboneFlags.Config()
}

// produce writes records and waits until Kafka has them.
func produce(ctx context.Context, cfg backbone.Config, recs ...*kgo.Record) error {
	cl, err := cfg.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s: %w", recs[0].Topic, err)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// principal names who runs the CLI, for the audit trail.
func principal() string {
	if p := os.Getenv("FLOTILLA_PRINCIPAL"); p != "" {
		return p
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "unknown"
}

// printJSONLine writes v as one line of JSON.
func printJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// now is the time the CLI stamps on what it writes; tests run it on the
// services' fake clock.
var now = time.Now

// runE wraps a client command's body: it reads the flags into a backbone
// configuration and bounds the command by --timeout.
func (f *clientFlags) runE(fn func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cfg, err := f.config()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), f.Timeout)
		defer cancel()
		return fn(ctx, cfg, cmd, args)
	}
}
