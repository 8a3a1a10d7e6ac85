package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
)

func keysCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Make the Ed25519 keys that sign requests"}
	var out string
	gen := &cobra.Command{
		Use:   "generate [--out PREFIX]",
		Short: "Write a new key pair to PREFIX (private, mode 0600) and PREFIX.pub, and print its key ID",
		Example: `  flotilla keys generate --out ~/.flotilla/alice
  flotilla trust add alice --public-key ~/.flotilla/alice.pub --roles dev --admin-key admin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := keys.WriteKeyPair(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s: private key %s, public key %s.pub\n", s.ID, out, out)
			return nil
		},
	}
	gen.Flags().StringVar(&out, "out", "flotilla-key", "file name of the private key; the public key is the same with .pub")
	cmd.AddCommand(gen)
	return cmd
}

func trustCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trust",
		Short: "Keep the trust store: principals, their public keys and roles, and the roles' rules",
		Long: `The trust store is the compacted topic <namespace>.trust. Services started
with --require-signatures --trust-root FILE read it to verify every request,
inventory and policy record, and authorise requests by role. Each change is
signed with --admin-key: the trust root's private key (as principal root), or
the key of a principal with role admin.`,
	}
	cmd.AddCommand(trustAddCommand(), trustRevokeCommand(), trustRolesCommand(), trustRoleCommand(), trustListCommand())
	return cmd
}

// trustFlags are the flags of the commands that change the store.
type trustFlags struct {
	clientFlags
	AdminKey string
}

func (f *trustFlags) bind(cmd *cobra.Command) {
	f.clientFlags.bind(cmd)
	cmd.Flags().StringVar(&f.AdminKey, "admin-key", os.Getenv("FLOTILLA_ADMIN_KEY"), "private key file of an admin (the trust root's, or an admin principal's) that signs the change (env FLOTILLA_ADMIN_KEY)")
}

// readTrust reads the trust topic: the last record of each key.
func readTrust(ctx context.Context, cfg backbone.Config) (map[string]records.TrustRecord, map[string]*kgo.Record, error) {
	recs, raw := map[string]records.TrustRecord{}, map[string]*kgo.Record{}
	err := logtable.ReadToEnd(ctx, cfg.Opts(), cfg.Names().Trust, nil, func(r *kgo.Record) {
		key := string(r.Key)
		if r.Value == nil {
			delete(recs, key)
			delete(raw, key)
			return
		}
		if rec, err := records.DecodeTrustRecord(r.Value); err == nil {
			recs[key], raw[key] = rec, r
		}
	})
	return recs, raw, err
}

// writeTrust signs rec with the admin key, as its owner, and writes it.
func (f *trustFlags) writeTrust(ctx context.Context, cfg backbone.Config, store map[string]records.TrustRecord, key string, rec records.TrustRecord) error {
	if f.AdminKey == "" {
		return errors.New("--admin-key FILE (or FLOTILLA_ADMIN_KEY) is needed: changes to the trust store are signed by an admin")
	}
	admin, err := keys.LoadSigner(f.AdminKey)
	if err != nil {
		return err
	}
	return writeTrustRecord(ctx, cfg, admin, store, key, rec)
}

// writeTrustRecord signs rec with admin's key, as the key's owner in
// store, and writes it under key.
func writeTrustRecord(ctx context.Context, cfg backbone.Config, admin keys.Signer, store map[string]records.TrustRecord, key string, rec records.TrustRecord) error {
	owner := trust.RootPrincipal // a key no principal has is taken to be the root's
	for _, r := range store {
		if r.Principal != nil && slices.ContainsFunc(r.Principal.Keys, func(k records.TrustKey) bool { return k.ID == admin.ID }) {
			owner = r.Principal.Name
		}
	}
	rec.Envelope = records.Envelope{ID: uuid.NewString(), Time: now().UTC(), Principal: owner}
	value, err := records.EncodeSigned(rec, admin.ID, admin.Sign)
	if err != nil {
		return err
	}
	return produce(ctx, cfg, &kgo.Record{Topic: cfg.Names().Trust, Key: []byte(key), Value: value})
}

func principalOf(store map[string]records.TrustRecord, name string) records.TrustPrincipal {
	if r, ok := store[records.TrustPrincipalKey(name)]; ok && r.Principal != nil {
		return *r.Principal
	}
	return records.TrustPrincipal{Name: name}
}

func trustAddCommand() *cobra.Command {
	var f trustFlags
	var pubFile, expires string
	var roles []string
	cmd := &cobra.Command{
		Use:   "add NAME --public-key FILE [--roles R,...] [--expires T]",
		Short: "Add a principal, or a key to one (its roles set if --roles is given)",
		Example: `  flotilla trust add alice --public-key alice.pub --roles dev --admin-key admin
  flotilla trust add sam --public-key sam.pub --roles sre,admin --expires 2027-01-01T00:00:00Z --admin-key admin`,
		Args: cobra.ExactArgs(1),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			pub, err := keys.LoadPublic(pubFile)
			if err != nil {
				return err
			}
			key := records.TrustKey{ID: keys.ID(pub), Public: pub}
			if expires != "" {
				if key.Expires, err = time.Parse(time.RFC3339, expires); err != nil {
					return fmt.Errorf("--expires: %w", err)
				}
			}
			store, _, err := readTrust(ctx, cfg)
			if err != nil {
				return err
			}
			p := principalOf(store, args[0])
			p.Keys = slices.DeleteFunc(p.Keys, func(k records.TrustKey) bool { return k.ID == key.ID })
			p.Keys = append(p.Keys, key)
			if cmd.Flags().Changed("roles") {
				p.Roles = roles
			}
			if err := f.writeTrust(ctx, cfg, store, records.TrustPrincipalKey(p.Name), records.TrustRecord{Principal: &p}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "principal %s: key %s added; roles %s\n", p.Name, key.ID, strings.Join(p.Roles, ", "))
			return nil
		}),
	}
	f.bind(cmd)
	cmd.Flags().StringVar(&pubFile, "public-key", "", "the principal's public key file (PEM)")
	cmd.Flags().StringSliceVar(&roles, "roles", nil, "the principal's roles, comma-separated (admin may change the trust store)")
	cmd.Flags().StringVar(&expires, "expires", "", "when the key stops being accepted (RFC 3339)")
	_ = cmd.MarkFlagRequired("public-key")
	return cmd
}

func trustRevokeCommand() *cobra.Command {
	var f trustFlags
	cmd := &cobra.Command{
		Use:     "revoke NAME KEY-ID",
		Short:   "Revoke a key of a principal: records appended from now on that it signed are refused",
		Example: `  flotilla trust revoke alice 3f0c1d2e4b5a69788796a5b4c3d2e1f0 --admin-key admin`,
		Args:    cobra.ExactArgs(2),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			store, _, err := readTrust(ctx, cfg)
			if err != nil {
				return err
			}
			p := principalOf(store, args[0])
			i := slices.IndexFunc(p.Keys, func(k records.TrustKey) bool { return k.ID == args[1] })
			if i < 0 {
				return fmt.Errorf("principal %s has no key %s", args[0], args[1])
			}
			if p.Keys[i].Revoked.IsZero() {
				p.Keys[i].Revoked = now().UTC()
			}
			if err := f.writeTrust(ctx, cfg, store, records.TrustPrincipalKey(p.Name), records.TrustRecord{Principal: &p}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s of %s revoked at %s\n", args[1], p.Name, p.Keys[i].Revoked.Format(time.RFC3339))
			return nil
		}),
	}
	f.bind(cmd)
	return cmd
}

func trustRolesCommand() *cobra.Command {
	var f trustFlags
	cmd := &cobra.Command{
		Use:     "roles NAME ROLE,...",
		Short:   "Set a principal's roles",
		Example: `  flotilla trust roles alice dev,sre --admin-key admin`,
		Args:    cobra.ExactArgs(2),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			store, _, err := readTrust(ctx, cfg)
			if err != nil {
				return err
			}
			p := principalOf(store, args[0])
			p.Roles = strings.Split(args[1], ",")
			if err := f.writeTrust(ctx, cfg, store, records.TrustPrincipalKey(p.Name), records.TrustRecord{Principal: &p}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "principal %s: roles %s\n", p.Name, strings.Join(p.Roles, ", "))
			return nil
		}),
	}
	f.bind(cmd)
	return cmd
}

// roleFile is a role as written in YAML (flotilla trust role -f).
type roleFile struct {
	Name  string `yaml:"name"`
	Rules []struct {
		Name             string   `yaml:"name"`
		Actions          []string `yaml:"actions"`
		Operations       []string `yaml:"operations"`
		Selector         string   `yaml:"selector"`
		Phases           []string `yaml:"phases"`
		Approvals        int      `yaml:"approvals"`
		SeparateApprover bool     `yaml:"separateApprover"`
	} `yaml:"rules"`
}

func trustRoleCommand() *cobra.Command {
	var f trustFlags
	var file string
	cmd := &cobra.Command{
		Use:     "role -f ROLE.yaml",
		Short:   "Create a role, or replace the one of the same name, with its rules",
		Example: `  flotilla trust role -f examples/roles/sre.yaml --admin-key admin`,
		Args:    cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			data, err := readSpecFile(file)
			if err != nil {
				return err
			}
			var rf roleFile
			dec := yaml.NewDecoder(strings.NewReader(string(data)))
			dec.KnownFields(true)
			if err := dec.Decode(&rf); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			role := authz.Role{Name: rf.Name}
			for _, r := range rf.Rules {
				role.Rules = append(role.Rules, authz.Rule(r))
			}
			if err := authz.CheckRole(role); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			store, _, err := readTrust(ctx, cfg)
			if err != nil {
				return err
			}
			if err := f.writeTrust(ctx, cfg, store, records.TrustRoleKey(role.Name), records.TrustRecord{Role: &role}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "role %s: %d rules\n", role.Name, len(role.Rules))
			return nil
		}),
	}
	f.bind(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "the role (YAML); - reads standard input")
	return cmd
}

func trustListCommand() *cobra.Command {
	var f clientFlags
	var root string
	cmd := &cobra.Command{
		Use:   "list [--trust-root FILE]",
		Short: "List the principals, their keys and roles, and the roles' rules; with the trust root, the records the services ignore and why",
		Args:  cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			store, raw, err := readTrust(ctx, cfg)
			if err != nil {
				return err
			}
			keysOf := slices.Sorted(func(yield func(string) bool) {
				for k := range store {
					if !yield(k) {
						return
					}
				}
			})
			ignored := map[string]string{}
			if root != "" {
				pub, err := keys.LoadPublic(root)
				if err != nil {
					return err
				}
				var entries []trust.Entry
				for key, rec := range store {
					canonical, _ := records.CanonicalBytes(raw[key].Value, rec.Signature)
					entries = append(entries, trust.Entry{Key: key, Record: rec, Claim: trust.Claim{
						Principal: rec.Envelope.Principal, Signature: rec.Signature, Canonical: canonical, Appended: raw[key].Timestamp}})
				}
				_, ig := trust.Build(pub, entries)
				for _, i := range ig {
					ignored[i.Entry.Key] = i.Err.Error()
				}
			}
			if f.Output == "json" {
				return printJSON(cmd.OutOrStdout(), map[string]any{"records": store, "ignored": ignored})
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "RECORD\tSIGNED BY\tDETAILS")
			for _, key := range keysOf {
				rec := store[key]
				var details []string
				switch {
				case rec.Principal != nil:
					details = append(details, "roles "+strings.Join(rec.Principal.Roles, ","))
					for _, k := range rec.Principal.Keys {
						d := "key " + k.ID
						if !k.Expires.IsZero() {
							d += " expires " + k.Expires.Format(time.RFC3339)
						}
						if !k.Revoked.IsZero() {
							d += " revoked " + k.Revoked.Format(time.RFC3339)
						}
						details = append(details, d)
					}
				case rec.Role != nil:
					for _, r := range rec.Role.Rules {
						d := fmt.Sprintf("rule %q: %s", r.Name, strings.Join(r.Actions, ","))
						if len(r.Operations) > 0 {
							d += " of " + strings.Join(r.Operations, ",")
						}
						if r.Selector != "" {
							d += " on " + r.Selector
						}
						if len(r.Phases) > 0 {
							d += " phases " + strings.Join(r.Phases, ",")
						}
						if r.Approvals > 1 {
							d += fmt.Sprintf(" approvals %d", r.Approvals)
						}
						if r.SeparateApprover {
							d += " separate approver"
						}
						details = append(details, d)
					}
				}
				if why, ok := ignored[key]; ok {
					details = append(details, "IGNORED: "+why)
				}
				fmt.Fprintf(w, "%s\t%s (%s)\t%s\n", key, rec.Envelope.Principal, rec.Signature.KeyID, strings.Join(details, "; "))
			}
			return w.Flush()
		}),
	}
	f.bind(cmd)
	cmd.Flags().StringVar(&root, "trust-root", os.Getenv("FLOTILLA_TRUST_ROOT"), "public key file of the trust root: say which records the services ignore, and why (env FLOTILLA_TRUST_ROOT)")
	return cmd
}
