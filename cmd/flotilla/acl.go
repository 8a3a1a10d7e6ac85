package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flotilla-fleet/flotilla/internal/servicecmd"
	"github.com/flotilla-fleet/flotilla/pkg/acl"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

func aclCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acl",
		Short: "Compute and create the least-privilege Kafka ACLs of a namespace",
		Long: `On a Kafka that authenticates clients and checks ACLs, whoever may write a
topic commands the fleet. acl plan lists the ACLs Flotilla needs and no more:

  - each service's principal reads the topics it acts on, writes only the
    topics it owns, joins only its own consumer group and takes only its
    own transactional IDs (prefixed "<namespace>.planner-" and so on);
  - operators write only the requests topic and read what the CLI reads;
  - fleet admins also write the inventory and the deployment policies;
  - trust admins also write the trust store.

acl apply creates the namespace's topics if missing (as the principal that
runs it, an ACL administrator) and then the ACLs the broker lacks; with
--prune it also deletes the other ALLOW ACLs of the same principals, so
that what they hold is exactly the plan.`,
	}
	cmd.AddCommand(aclPlanCommand(), aclApplyCommand())
	return cmd
}

// aclPrincipalFlags name who the plan grants rights to.
type aclPrincipalFlags struct {
	planner, executor, monitor, notifier string
	operators, fleetAdmins, trustAdmins  []string
}

func (f *aclPrincipalFlags) bind(fs *pflag.FlagSet) {
	d := acl.DefaultPrincipals()
	fs.StringVar(&f.planner, "planner", d.Planner, "the planner's principal")
	fs.StringVar(&f.executor, "executor", d.Executor, "the executor's principal")
	fs.StringVar(&f.monitor, "monitor", d.Monitor, "the monitor's principal")
	fs.StringVar(&f.notifier, "notifier", d.Notifier, "the notifier's principal")
	fs.StringSliceVar(&f.operators, "operator", nil, "a user who submits and controls rollouts (repeat, or comma-separate)")
	fs.StringSliceVar(&f.fleetAdmins, "fleet-admin", nil, "a user who also writes the inventory and the policies (repeat, or comma-separate)")
	fs.StringSliceVar(&f.trustAdmins, "trust-admin", nil, "a user who also writes the trust store (repeat, or comma-separate)")
}

func (f *aclPrincipalFlags) plan(names topics.Names) ([]acl.Binding, error) {
	p := acl.Principals{
		Planner: acl.Principal(f.planner), Executor: acl.Principal(f.executor),
		Monitor: acl.Principal(f.monitor), Notifier: acl.Principal(f.notifier),
	}
	for _, o := range f.operators {
		p.Operators = append(p.Operators, acl.Principal(o))
	}
	for _, a := range f.fleetAdmins {
		p.FleetAdmins = append(p.FleetAdmins, acl.Principal(a))
	}
	for _, a := range f.trustAdmins {
		p.TrustAdmins = append(p.TrustAdmins, acl.Principal(a))
	}
	return acl.Plan(names, p)
}

func aclPlanCommand() *cobra.Command {
	var pf aclPrincipalFlags
	var namespace, output string
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Print the ACLs a namespace needs (reads nothing from Kafka)",
		Example: `  flotilla acl plan --operator alice,bob --fleet-admin carol
  flotilla acl plan -o kafka-acls --operator alice   # kafka-acls.sh commands`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			plan, err := pf.plan(topics.NewNames(namespace))
			if err != nil {
				return err
			}
			switch output {
			case "text":
				return printPlan(cmd.OutOrStdout(), plan)
			case "json":
				return printJSON(cmd.OutOrStdout(), bindingsJSON(plan))
			case "kafka-acls":
				for _, b := range plan {
					fmt.Fprintln(cmd.OutOrStdout(), kafkaACLsCommand(b))
				}
				return nil
			}
			return fmt.Errorf("--output %q: want text, json or kafka-acls", output)
		},
	}
	pf.bind(cmd.Flags())
	cmd.Flags().StringVar(&namespace, "namespace", servicecmd.EnvOr("FLOTILLA_NAMESPACE", topics.DefaultNamespace), "prefix of Flotilla's topic and group names (env FLOTILLA_NAMESPACE)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json, or kafka-acls (the kafka-acls.sh commands that create them)")
	return cmd
}

func aclApplyCommand() *cobra.Command {
	var f clientFlags
	var pf aclPrincipalFlags
	var prune bool
	var partitions int32
	var replication int16
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Create the namespace's topics and the ACLs of the plan that the broker lacks",
		Example: `  flotilla acl apply --kafka-config admin.yaml --operator alice --fleet-admin carol
  flotilla acl apply --kafka-config admin.yaml --operator alice --prune`,
		Args: cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			plan, err := pf.plan(cfg.Names())
			if err != nil {
				return err
			}
			if _, err := cfg.SetUpTopics(ctx, partitions, replication); err != nil {
				return fmt.Errorf("topics: %w", err)
			}
			cl, err := cfg.Client()
			if err != nil {
				return err
			}
			defer cl.Close()
			res, err := acl.Apply(ctx, kadm.NewClient(cl), plan, prune)
			if err != nil {
				return err
			}
			if f.Output == "json" {
				return printJSON(cmd.OutOrStdout(), map[string]any{
					"created": bindingsJSON(res.Created), "present": bindingsJSON(res.Present), "removed": bindingsJSON(res.Removed),
				})
			}
			w := cmd.OutOrStdout()
			for _, b := range res.Created {
				fmt.Fprintf(w, "created  %s\n", b)
			}
			for _, b := range res.Removed {
				fmt.Fprintf(w, "removed  %s\n", b)
			}
			fmt.Fprintf(w, "%d ACLs created, %d already present, %d removed\n", len(res.Created), len(res.Present), len(res.Removed))
			return nil
		}),
	}
	f.bind(cmd)
	pf.bind(cmd.Flags())
	cmd.Flags().BoolVar(&prune, "prune", false, "also delete the ALLOW ACLs of these principals that the plan does not hold")
	cmd.Flags().Int32Var(&partitions, "partitions", topics.DefaultPartitions, "partitions of each topic created (existing topics are kept)")
	cmd.Flags().Int16Var(&replication, "replication-factor", -1, "replication factor of topics created (-1: the broker's default)")
	return cmd
}

func printPlan(w io.Writer, plan []acl.Binding) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PRINCIPAL\tOPERATION\tRESOURCE\tPATTERN\tNAME\tWHY")
	for _, b := range plan {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.Principal, b.Operation.String(), acl.ResourceName(b.Resource),
			strings.ToLower(b.Pattern.String()), b.Name, b.Why)
	}
	return tw.Flush()
}

type bindingJSON struct {
	Principal string `json:"principal"`
	Operation string `json:"operation"`
	Resource  string `json:"resource"`
	Pattern   string `json:"pattern"`
	Name      string `json:"name"`
	Why       string `json:"why,omitempty"`
}

func bindingsJSON(bs []acl.Binding) []bindingJSON {
	out := []bindingJSON{}
	for _, b := range bs {
		out = append(out, bindingJSON{b.Principal, b.Operation.String(), acl.ResourceName(b.Resource), strings.ToLower(b.Pattern.String()), b.Name, b.Why})
	}
	return out
}

// kafkaACLsCommand is the kafka-acls.sh command that creates b.
func kafkaACLsCommand(b acl.Binding) string {
	flag := map[kmsg.ACLResourceType]string{
		kmsg.ACLResourceTypeTopic: "--topic", kmsg.ACLResourceTypeGroup: "--group", kmsg.ACLResourceTypeTransactionalId: "--transactional-id",
	}[b.Resource]
	var op strings.Builder // DESCRIBE_CONFIGS is DescribeConfigs
	for _, word := range strings.Split(b.Operation.String(), "_") {
		op.WriteString(word[:1] + strings.ToLower(word[1:]))
	}
	return fmt.Sprintf("kafka-acls.sh --bootstrap-server \"$BROKERS\" --command-config admin.properties --add --allow-principal %s --operation %s %s %s --resource-pattern-type %s",
		shellQuote(b.Principal), op.String(), flag, shellQuote(b.Name), strings.ToLower(b.Pattern.String()))
}
