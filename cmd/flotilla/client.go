package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/servicecmd"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// clientFlags are the flags of every client command.
type clientFlags struct {
	servicecmd.BackboneFlags
	Output  string
	Timeout time.Duration
	Key     string
}

func (f *clientFlags) bind(cmd *cobra.Command) {
	f.BackboneFlags.Bind(cmd.Flags())
	cmd.Flags().StringVar(&f.Key, "key", os.Getenv("FLOTILLA_KEY"), "private key file (PEM) that signs the requests and records this command writes, as FLOTILLA_PRINCIPAL (env FLOTILLA_KEY; flotilla keys generate makes one); empty: unsigned")
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
	cfg, err := f.BackboneFlags.Config()
	cfg.ClientOpts = append(cfg.ClientOpts, extraClientOpts...)
	return cfg, err
}

// signerKey carries in a command's context the signer of what it writes
// (--key); none writes unsigned records.
type signerKey struct{}

// withSigner returns ctx with the signer of --key, if one is given.
func (f *clientFlags) withSigner(ctx context.Context) (context.Context, error) {
	if f.Key == "" {
		return ctx, nil
	}
	s, err := keys.LoadSigner(f.Key)
	if err != nil {
		return ctx, err
	}
	return context.WithValue(ctx, signerKey{}, s), nil
}

// encodeUserRecord encodes a record a user writes (a request, an
// inventory or policy record), signed with --key when one is given.
func encodeUserRecord(ctx context.Context, v any) ([]byte, error) {
	s, ok := ctx.Value(signerKey{}).(keys.Signer)
	if !ok {
		return records.Encode(v)
	}
	return records.EncodeSigned(v, s.ID, s.Sign)
}

// extraClientOpts are added to every client the commands make: tests count
// with a hook what the commands fetch.
var extraClientOpts []kgo.Opt

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

// principal names who runs the CLI, for the audit trail and the signature
// of what it writes: FLOTILLA_PRINCIPAL, or the SASL user the broker signs
// in, or the login.
func principal(cfg backbone.Config) string {
	if p := os.Getenv("FLOTILLA_PRINCIPAL"); p != "" {
		return p
	}
	if cfg.User != "" {
		return cfg.User // who the broker signed in
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
		ctx, err = f.withSigner(ctx)
		if err != nil {
			return err
		}
		return fn(ctx, cfg, cmd, args)
	}
}

// partitioning knows how many partitions topics have, and so which
// partition holds the records of a key.
type partitioning map[string]int

// loadPartitioning asks Kafka how many partitions topics have. A topic
// that does not exist is an error that says so.
func loadPartitioning(ctx context.Context, cfg backbone.Config, names ...string) (partitioning, error) {
	cl, err := cfg.Client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	details, err := kadm.NewClient(cl).ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list topics %s: %w", strings.Join(names, ", "), err)
	}
	p := partitioning{}
	for _, name := range names {
		d, ok := details[name]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			return nil, fmt.Errorf("topic %s does not exist (is --namespace %s right, and have the services started once?)", name, cfg.Names().Namespace)
		}
		p[name] = len(d.Partitions)
	}
	return p, nil
}

// of returns the partitions of topic that hold records keyed keys, as
// every Flotilla producer partitions them (topics.Partitioner: a key
// "a/b" by its prefix "a"), each once, in the keys' order.
func (p partitioning) of(topic string, keys ...string) []int32 {
	tp := topics.Partitioner().ForTopic(topic)
	var out []int32
	for _, key := range keys {
		part := int32(tp.Partition(&kgo.Record{Key: []byte(key)}, p[topic]))
		if !slices.Contains(out, part) {
			out = append(out, part)
		}
	}
	return out
}

// workflowKey reports whether a record keyed key may be about workflow id
// in a topic keyed by workflow: its own row (key id), or a row under it
// (id/...): a target's row, command or operation, a control request, its
// rollback. Such a record is on id's partition.
func workflowKey(key []byte, id string) bool {
	k := string(key)
	return k == id || strings.HasPrefix(k, id+"/")
}

// clusterKey reports whether a record keyed key may be about cluster id in
// a topic keyed workflowID/clusterID: its key ends in "/id". Such records
// are on every partition, each on its workflow's.
func clusterKey(key []byte, id string) bool {
	return strings.HasSuffix(string(key), "/"+id)
}
