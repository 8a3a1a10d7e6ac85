package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla-fleet/flotilla/pkg/auditchain"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
)

func auditVerifyCommand() *cobra.Command {
	var f clientFlags
	var workflow, keyDir string
	var serviceKeys []string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit trail's hash chains and signed checkpoints: report what was altered, removed, inserted, reordered or duplicated",
		Long: `verify replays the workflows, commands, operations and checkpoints topics
and checks the hash chains the planner and the executor keep over each
workflow's records, and the checkpoints they sign: each record must match
its hash and follow the one before it, a chain's records must be in order in
each partition, and what compaction left of each key must be what the last
checkpoint names, or superseded since by a record of the chain. It also
reports every tombstone on the requests topic, where none is legitimate:
a request erased from the record.

Each finding names the topic, partition, offset and key and says what is
wrong; verify exits non-zero if there is any, and otherwise prints how many
records, workflows and checkpoints it verified, and which keys signed them.

--service-key NAME=FILE (repeatable) or --service-keys DIR (every *.pub in
it) gives the services' public keys: a checkpoint signed by any other key
is a finding. Without keys, signed checkpoints are reported as such.

With --workflow, it reads only the workflow's partition of each topic.`,
		Args: cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			pub, err := loadServiceKeys(serviceKeys, keyDir)
			if err != nil {
				return err
			}
			rep, err := verifyAudit(ctx, cfg, workflow, pub)
			if err != nil {
				return err
			}
			if f.Output == "json" {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				printVerify(cmd.OutOrStdout(), rep, len(pub) > 0)
			}
			if n := len(rep.Findings); n > 0 {
				return fmt.Errorf("audit trail: %d findings", n)
			}
			return nil
		}),
	}
	f.bind(cmd)
	cmd.Flags().StringVar(&workflow, "workflow", "", "verify only this workflow's chains (reads only its partition of each topic)")
	cmd.Flags().StringArrayVar(&serviceKeys, "service-key", nil, "a service's public key, NAME=FILE (PEM), e.g. planner=planner.pub (repeatable)")
	cmd.Flags().StringVar(&keyDir, "service-keys", "", "a directory of the services' public keys: every *.pub file in it")
	return cmd
}

// loadServiceKeys reads the public keys given as NAME=FILE and those of a
// directory's *.pub files, by key ID.
func loadServiceKeys(named []string, dir string) (map[string]ed25519.PublicKey, error) {
	files := []string{}
	for _, nf := range named {
		_, file, ok := strings.Cut(nf, "=")
		if !ok {
			file = nf
		}
		files = append(files, file)
	}
	if dir != "" {
		found, err := filepath.Glob(filepath.Join(dir, "*.pub"))
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("--service-keys %s: no *.pub file in it", dir)
		}
		files = append(files, found...)
	}
	out := map[string]ed25519.PublicKey{}
	for _, file := range files {
		k, err := keys.LoadPublic(file)
		if err != nil {
			return nil, err
		}
		out[keys.ID(k)] = k
	}
	return out, nil
}

// verifyAudit verifies the log, only the workflow's partition with one.
func verifyAudit(ctx context.Context, cfg backbone.Config, workflow string, pub map[string]ed25519.PublicKey) (auditchain.Report, error) {
	var parts []int32
	if workflow != "" {
		p, err := loadPartitioning(ctx, cfg, cfg.Names().Workflows)
		if err != nil {
			return auditchain.Report{}, err
		}
		parts = p.of(cfg.Names().Workflows, workflow)
	}
	return auditchain.VerifyLog(ctx, cfg.Opts(), cfg.Names(), auditchain.Scope{Workflow: workflow, Partitions: parts}, pub)
}

func printVerify(w interface{ Write([]byte) (int, error) }, rep auditchain.Report, keysGiven bool) {
	for _, f := range rep.Findings {
		fmt.Fprintln(w, f)
	}
	if len(rep.Findings) > 0 {
		fmt.Fprintf(w, "%d findings\n", len(rep.Findings))
		return
	}
	signed := "none signed"
	if len(rep.Signers) > 0 {
		var ids []string
		for id, n := range rep.Signers {
			ids = append(ids, fmt.Sprintf("%s (%d)", id, n))
		}
		slices.Sort(ids)
		signed = "signed by " + strings.Join(ids, ", ")
		if !keysGiven {
			signed += " (not checked: no --service-key given)"
		}
	}
	if rep.Unsigned > 0 {
		signed += fmt.Sprintf("; %d unsigned (services run without --signing-key)", rep.Unsigned)
	}
	fmt.Fprintf(w, "ok: %d records of %d workflow chains, %d checkpoints (%s), %d requests", rep.Records, rep.Workflows, rep.Checkpoints, signed, rep.Requests)
	if rep.Tail > 0 {
		fmt.Fprintf(w, "; %d records newer than their chain's last checkpoint, vouched for by their links only", rep.Tail)
	}
	fmt.Fprintln(w)
}
