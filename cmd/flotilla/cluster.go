package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/selector"
)

func clusterCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Register and list the fleet's clusters"}
	cmd.AddCommand(clusterAddCommand(), clusterListCommand(), clusterRemoveCommand(), clusterHistoryCommand())
	return cmd
}

func clusterAddCommand() *cobra.Command {
	var f clientFlags
	var c inventory.Cluster
	var labels, settings, desiredConfig []string
	cmd := &cobra.Command{
		Use:   "add ID",
		Short: "Register a cluster (or update its registration) in the inventory",
		Long: `add writes the cluster's whole registration to the inventory topic: a
registration sent again replaces the one before, flags left out included.

--desired-version and --desired-config declare the cluster's desired state:
the monitor reports the cluster drifted while it runs another version or
another value of a declared key (flotilla drift list), and flotilla drift fix
corrects it. Where nothing is declared, the desired state is what the last
successful rollout left. --drift-ignore names config keys (or "version")
never reported as drift.`,
		Example: `  flotilla cluster add prod-eu-1 --driver sim --address sim://prod-eu-1 --version 3.8.0 \
    --label cloud=aws --label region=eu-west-1 --label env=prod --label tier=standard --label kind=kafka
  flotilla cluster add prod-eu-1 --driver sim --version 3.8.0 -l env=prod \
    --desired-version 3.9.1 --desired-config log.retention.ms=604800000 --drift-ignore num.io.threads`,
		Args: cobra.ExactArgs(1),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			c.ID = args[0]
			var err error
			if c.Labels, err = keyValues("--label", labels); err != nil {
				return err
			}
			if c.Settings, err = keyValues("--setting", settings); err != nil {
				return err
			}
			if c.Desired.Config, err = keyValues("--desired-config", desiredConfig); err != nil {
				return err
			}
			if len(c.Desired.Config) == 0 {
				c.Desired.Config = nil
			}
			if err := c.Validate(); err != nil {
				return err
			}
			value, err := encodeUserRecord(ctx, records.ClusterRecord{
				Envelope: records.Envelope{ID: uuid.NewString(), Time: now().UTC(), Principal: principal(cfg)},
				Cluster:  c,
			})
			if err != nil {
				return err
			}
			if err := produce(ctx, cfg, &kgo.Record{Topic: cfg.Names().Inventory, Key: []byte(c.ID), Value: value}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s registered\n", c.ID)
			return nil
		}),
	}
	f.bind(cmd)
	fs := cmd.Flags()
	fs.StringArrayVarP(&labels, "label", "l", nil, "a label key=value (repeatable)")
	fs.StringArrayVar(&settings, "setting", nil, "a driver setting key=value (repeatable), e.g. expected.brokers=3 or sasl.password.env=PROD_PASSWORD; never a secret itself")
	fs.StringVar(&c.Driver, "driver", "sim", "driver that applies operations and probes the cluster")
	fs.StringVar(&c.Address, "address", "", "how the driver reaches the cluster (bootstrap servers, URL, sim://name)")
	fs.StringVar(&c.Version, "version", "", "software version the cluster runs")
	fs.StringVar(&c.Desired.Version, "desired-version", "", "the version the cluster should run (drift detection); absent: what the last successful upgrade left")
	fs.StringArrayVar(&desiredConfig, "desired-config", nil, "a managed config key=value the cluster should have (repeatable; drift detection)")
	fs.StringArrayVar(&c.DriftIgnore, "drift-ignore", nil, `a config key, or "version", never reported as drift (repeatable)`)
	return cmd
}

func clusterRemoveCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "remove ID",
		Short: "Decommission a cluster: remove it from the inventory",
		Args:  cobra.ExactArgs(1),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			if err := produce(ctx, cfg, &kgo.Record{Topic: cfg.Names().Inventory, Key: []byte(args[0])}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s removed\n", args[0])
			return nil
		}),
	}
	f.bind(cmd)
	return cmd
}

// clusterView is a cluster as `cluster list` shows it: its registration
// and what the monitor last saw.
type clusterView struct {
	inventory.Cluster
	Health          records.HealthStatus `json:"health"`
	ObservedVersion string               `json:"observedVersion,omitempty"`
	Reasons         []string             `json:"reasons,omitempty"`
	ObservedAt      *time.Time           `json:"observedAt,omitempty"`
}

func clusterListCommand() *cobra.Command {
	var f clientFlags
	var sel string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the inventory with each cluster's last health signal",
		Args:  cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			s, err := selector.Parse(sel)
			if err != nil {
				return err
			}
			clusters := map[string]inventory.Cluster{}
			err = logtable.ReadToEnd(ctx, cfg.Opts(), cfg.Names().Inventory, nil, func(r *kgo.Record) {
				if r.Value == nil {
					delete(clusters, string(r.Key))
					return
				}
				if rec, err := records.DecodeClusterRecord(r.Value); err == nil {
					clusters[rec.Cluster.ID] = rec.Cluster
				} else {
					fmt.Fprintf(os.Stderr, "warning: inventory record %d@%d: %v\n", r.Partition, r.Offset, err)
				}
			})
			if err != nil {
				return err
			}
			health := map[string]records.Health{}
			err = logtable.ReadToEnd(ctx, cfg.Opts(), cfg.Names().Health, nil, func(r *kgo.Record) {
				if h, err := records.DecodeHealth(r.Value); err == nil && r.Value != nil {
					health[h.ClusterID] = h
				}
			})
			if err != nil {
				return err
			}
			var views []clusterView
			for _, id := range slices.Sorted(maps.Keys(clusters)) {
				c := clusters[id]
				if !s.Matches(c.Labels) {
					continue
				}
				v := clusterView{Cluster: c, Health: records.HealthUnknown}
				if h, ok := health[id]; ok {
					at := h.ObservedAt
					v.Health, v.ObservedVersion, v.Reasons, v.ObservedAt = h.Status, h.ObservedVersion, h.Reasons, &at
				}
				views = append(views, v)
			}
			if f.Output == "json" {
				return printJSON(cmd.OutOrStdout(), views)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tDRIVER\tVERSION\tHEALTH\tLABELS")
			for _, v := range views {
				version := v.ObservedVersion
				if version == "" {
					version = v.Version
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.ID, v.Driver, version, v.Health, formatLabels(v.Labels))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d clusters\n", len(views))
			return nil
		}),
	}
	f.bind(cmd)
	cmd.Flags().StringVarP(&sel, "selector", "s", "", `only clusters matching a label selector, e.g. "cloud=aws,tier!=internal"`)
	return cmd
}

// keyValues parses repeated key=value flags.
func keyValues(flag string, pairs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%s %q: want key=value", flag, p)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

func formatLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}
