package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/services/planner/planner"
)

func policyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Keep the named deployment policies that rollouts refer to",
		Long: `A deployment policy is a named, ordered list of phases ("azure-first",
"internal-first") that a rollout takes by naming it (policy: azure-first)
instead of writing out strategy.phases. Policies live on the compacted
policies topic, keyed by name; the planner copies a policy's phases into a
rollout when it accepts it, so changing or removing a policy does not
change rollouts already under way.`,
	}
	cmd.AddCommand(policyApplyCommand(), policyListCommand(), policyShowCommand(), policyRemoveCommand())
	return cmd
}

func policyApplyCommand() *cobra.Command {
	var f clientFlags
	var file string
	cmd := &cobra.Command{
		Use:     "apply -f POLICY.yaml",
		Short:   "Create a deployment policy, or replace the one of the same name",
		Example: `  flotilla policy apply -f examples/policies/azure-first.yaml`,
		Args:    cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			data, err := readSpecFile(file)
			if err != nil {
				return err
			}
			p, err := rollout.ParsePolicyYAML(data)
			if err == nil {
				err = p.Validate()
			}
			if err != nil {
				return fmt.Errorf("%s:\n%w", file, err)
			}
			value, err := encodeUserRecord(ctx, records.PolicyRecord{
				Envelope: records.Envelope{ID: uuid.NewString(), Time: now().UTC(), Principal: principal(cfg)},
				Policy:   p,
			})
			if err != nil {
				return err
			}
			if err := produce(ctx, cfg, &kgo.Record{Topic: cfg.Names().Policies, Key: []byte(p.Name), Value: value}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy %s applied: %s\n", p.Name, phaseSummary(p.Phases))
			return nil
		}),
	}
	f.bind(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "deployment policy (YAML); - reads standard input")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func policyListCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the deployment policies with their phases",
		Args:  cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			policies, err := readPolicies(ctx, cfg, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			names := slices.Sorted(maps.Keys(policies))
			if f.Output == "text" && len(names) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no deployment policies; add one with flotilla policy apply -f POLICY.yaml")
				return nil
			}
			if f.Output == "json" {
				docs := []map[string]any{}
				for _, name := range names {
					doc, err := policyDocument(policies[name].Policy)
					if err != nil {
						return err
					}
					docs = append(docs, doc)
				}
				return printJSON(cmd.OutOrStdout(), docs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPHASES\tDESCRIPTION")
			for _, name := range names {
				p := policies[name].Policy
				fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, phaseSummary(p.Phases), p.Description)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(names) == 1 {
				fmt.Fprintln(cmd.OutOrStdout(), "1 policy")
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%d policies\n", len(names))
			}
			return nil
		}),
	}
	f.bind(cmd)
	return cmd
}

func policyShowCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a deployment policy as YAML that policy apply takes back",
		Args:  cobra.ExactArgs(1),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			policies, err := readPolicies(ctx, cfg, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			rec, ok := policies[args[0]]
			if !ok {
				return unknownPolicy(args[0], policies)
			}
			if f.Output == "json" {
				doc, err := policyDocument(rec.Policy)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), doc)
			}
			text, err := rollout.FormatPolicyYAML(rec.Policy)
			if err != nil {
				return err
			}
			// A YAML comment: the output stays a policy file.
			fmt.Fprintf(cmd.OutOrStdout(), "# applied by %s at %s\n%s", rec.Envelope.Principal, rec.Envelope.Time.UTC().Format(time.RFC3339), text)
			return nil
		}),
	}
	f.bind(cmd)
	return cmd
}

func policyRemoveCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a deployment policy; rollouts already accepted keep its phases",
		Args:  cobra.ExactArgs(1),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			name := args[0]
			policies, err := readPolicies(ctx, cfg, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if _, ok := policies[name]; !ok {
				return unknownPolicy(name, policies)
			}
			if err := produce(ctx, cfg, &kgo.Record{Topic: cfg.Names().Policies, Key: []byte(name)}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy %s removed\n", name)
			return nil
		}),
	}
	f.bind(cmd)
	return cmd
}

// readPolicies reads the policies topic to its end and returns the
// policies the planner would hold, by name. A record the planner ignores
// is reported to warn with the planner's reason.
func readPolicies(ctx context.Context, cfg backbone.Config, warn io.Writer) (map[string]records.PolicyRecord, error) {
	policies := map[string]records.PolicyRecord{}
	err := logtable.ReadToEnd(ctx, cfg.Opts(), cfg.Names().Policies, nil, func(r *kgo.Record) {
		key := string(r.Key)
		delete(policies, key) // a tombstone, or a record the planner does not take, leaves no policy
		if r.Value == nil {
			return
		}
		rec, err := planner.DecodePolicy(r)
		if err != nil {
			fmt.Fprintf(warn, "warning: policies record %d@%d (key %q) is ignored by the planner: %v\n", r.Partition, r.Offset, key, err)
			return
		}
		policies[key] = rec
	})
	if err != nil {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	return policies, nil
}

// policyMap returns the policies of records by name, as WithPolicy takes them.
func policyMap(recs map[string]records.PolicyRecord) map[string]rollout.Policy {
	out := make(map[string]rollout.Policy, len(recs))
	for name, rec := range recs {
		out[name] = rec.Policy
	}
	return out
}

func unknownPolicy(name string, policies map[string]records.PolicyRecord) error {
	if len(policies) == 0 {
		return fmt.Errorf("no deployment policy %q: there is none (see flotilla policy apply)", name)
	}
	return fmt.Errorf("no deployment policy %q (have: %s)", name, strings.Join(slices.Sorted(maps.Keys(policies)), ", "))
}

// phaseSummary writes a policy's phases on one line:
// "internal (tier=internal), azure (cloud=azure), rest (the rest)".
func phaseSummary(phases []rollout.Phase) string {
	parts := make([]string, len(phases))
	for i, ph := range phases {
		sel := ph.Selector
		if sel == "" {
			sel = "the rest"
		}
		parts[i] = fmt.Sprintf("%s (%s)", ph.Name, sel)
	}
	return strings.Join(parts, ", ")
}

// policyDocument is p as -o json shows it: the fields of its YAML format,
// with durations such as bake written "10m".
func policyDocument(p rollout.Policy) (map[string]any, error) {
	text, err := rollout.FormatPolicyYAML(p)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, fmt.Errorf("format policy %s: %w", p.Name, err)
	}
	return doc, nil
}
