package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/flotilla-fleet/flotilla/pkg/acl"
	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/kafkaauth"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
)

// devSecurity is what `dev --secure` keeps in DATA-DIR/secure: a password
// file for each SASL user (the broker's super user "admin", each
// service's principal, and the user running dev), and a client config
// file for each (USER.yaml, for --kafka-config); the trust root's key pair
// (root.key) and the user's (USER.key), which signs the user's requests.
// The files are the owner's alone; a secret never appears in a flag or a
// log.
type devSecurity struct {
	dir  string
	user string // the operator, fleet and trust admin who runs dev
	root keys.Signer
	key  keys.Signer // the user's
	// chains signs the planner's and the executor's checkpoints of the
	// audit trail's hash chains.
	chains keys.Signer
}

const devAdmin = "admin"

// devServicePrincipals are the services' SASL users in dev.
var devServicePrincipals = map[string]string{
	"planner": "flotilla-planner", "executor": "flotilla-executor",
	"monitor": "flotilla-monitor", "notifier": "flotilla-notifier",
}

// secureDir is where dev keeps its credentials.
func secureDir(dataDir string) string { return filepath.Join(dataDir, "secure") }

// openDevSecurity creates the credentials of a new secure data directory,
// or opens those of one run with --secure before.
func openDevSecurity(dataDir, user string) (devSecurity, error) {
	s := devSecurity{dir: secureDir(dataDir), user: user}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return s, err
	}
	users := []string{devAdmin, user}
	for _, u := range devServicePrincipals {
		users = append(users, u)
	}
	for _, u := range users {
		if _, err := os.Stat(s.passwordFile(u)); errors.Is(err, os.ErrNotExist) {
			var b [18]byte
			if _, err := rand.Read(b[:]); err != nil {
				return s, err
			}
			if err := os.WriteFile(s.passwordFile(u), []byte(hex.EncodeToString(b[:])+"\n"), 0o600); err != nil {
				return s, err
			}
		}
		cfg := backbone.Security{SASL: &backbone.SASL{Mechanism: backbone.EmbeddedMechanism, Username: u, PasswordFile: absPath(s.passwordFile(u))}}
		data, err := yaml.Marshal(cfg)
		if err != nil {
			return s, err
		}
		data = append([]byte("# flotilla --kafka-config "+absPath(s.ConfigFile(u))+" (written by flotilla dev --secure)\n"), data...)
		if err := os.WriteFile(s.ConfigFile(u), data, 0o600); err != nil {
			return s, err
		}
	}
	var err error
	if s.root, err = loadOrWriteKey(strings.TrimSuffix(s.RootPublicFile(), ".pub")); err != nil {
		return s, err
	}
	if s.key, err = loadOrWriteKey(s.KeyFile()); err != nil {
		return s, err
	}
	if err := os.MkdirAll(s.ServiceKeysDir(), 0o700); err != nil {
		return s, err
	}
	if s.chains, err = loadOrWriteKey(filepath.Join(s.ServiceKeysDir(), "checkpoints.key")); err != nil {
		return s, err
	}
	// kcat's (librdkafka's) config file of the user; librdkafka reads no
	// password file, so this one holds the password itself.
	pass, err := s.password(user)
	if err != nil {
		return s, err
	}
	kcat := fmt.Sprintf("security.protocol=SASL_PLAINTEXT\nsasl.mechanisms=%s\nsasl.username=%s\nsasl.password=%s\n", backbone.EmbeddedMechanism, user, pass)
	if err := os.WriteFile(s.kcatFile(), []byte(kcat), 0o600); err != nil {
		return s, err
	}
	// The dashboard's and /metrics' one user: the same, with the same
	// password.
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.DefaultCost)
	if err != nil {
		return s, err
	}
	web := fmt.Sprintf("# flotilla --web-config (written by flotilla dev --secure): sign in as %s with the password in %s\nbasic_auth_users:\n  %q: %q\n",
		user, absPath(s.passwordFile(user)), user, hash)
	return s, os.WriteFile(s.WebConfigFile(), []byte(web), 0o600)
}

// WebConfigFile is the web config of the dashboard and /metrics: the
// user, with the password of their SASL user.
func (s devSecurity) WebConfigFile() string { return filepath.Join(s.dir, "web.yaml") }

// loadOrWriteKey reads a private key file, or makes a new key pair there.
func loadOrWriteKey(path string) (keys.Signer, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return keys.WriteKeyPair(path)
	}
	return keys.LoadSigner(path)
}

// RootPublicFile is the trust root's public key, for --trust-root.
func (s devSecurity) RootPublicFile() string { return filepath.Join(s.dir, "root.key.pub") }

// ServiceKeysDir holds the key that signs the services' checkpoints, and
// its public half for flotilla audit verify --service-keys.
func (s devSecurity) ServiceKeysDir() string { return filepath.Join(s.dir, "services") }

// KeyFile is the user's private key, for FLOTILLA_KEY.
func (s devSecurity) KeyFile() string { return filepath.Join(s.dir, s.user+".key") }

// Trust is what the services require: every request and inventory or
// policy record signed, verified against the trust store that root.key
// anchors.
func (s devSecurity) Trust() trust.Config {
	return trust.Config{Require: true, Root: s.root.Public()}
}

// devRole is the role dev gives its user: every action on every cluster.
var devRole = authz.Role{Name: "dev-operator", Rules: []authz.Rule{{Name: "everything", Actions: []string{"*"}}}}

// setUpTrust writes, signed by the trust root, the role of the user and
// the user with its key and the roles admin (it may change the trust
// store) and dev-operator, unless the store holds them already.
func (s devSecurity) setUpTrust(ctx context.Context, cfg backbone.Config) error {
	store, _, err := readTrust(ctx, cfg)
	if err != nil {
		return err
	}
	if _, ok := store[records.TrustRoleKey(devRole.Name)]; !ok {
		role := devRole
		if err := writeTrustRecord(ctx, cfg, s.root, store, records.TrustRoleKey(role.Name), records.TrustRecord{Role: &role}); err != nil {
			return err
		}
	}
	p := principalOf(store, s.user)
	if slices.ContainsFunc(p.Keys, func(k records.TrustKey) bool { return k.ID == s.key.ID }) {
		return nil
	}
	p.Keys = append(p.Keys, records.TrustKey{ID: s.key.ID, Public: s.key.Public()})
	p.Roles = []string{"admin", devRole.Name}
	return writeTrustRecord(ctx, cfg, s.root, store, records.TrustPrincipalKey(s.user), records.TrustRecord{Principal: &p})
}

func (s devSecurity) kcatFile() string { return filepath.Join(s.dir, s.user+".kcat.conf") }

func (s devSecurity) passwordFile(user string) string { return filepath.Join(s.dir, user+".password") }

// ConfigFile is the --kafka-config file of user.
func (s devSecurity) ConfigFile(user string) string { return filepath.Join(s.dir, user+".yaml") }

func (s devSecurity) password(user string) (string, error) {
	return kafkaauth.ReadPasswordFile(s.passwordFile(user))
}

// as returns cfg signed in as user.
func (s devSecurity) as(cfg backbone.Config, user string) (backbone.Config, error) {
	sec, err := backbone.LoadSecurity(s.ConfigFile(user))
	if err != nil {
		return cfg, err
	}
	opts, err := sec.ClientOpts(os.LookupEnv)
	if err != nil {
		return cfg, err
	}
	cfg.ClientOpts, cfg.User = opts, user
	return cfg, nil
}

// setUp creates the SASL users of the services and of the user, and the
// ACLs of the plan (the user an operator and fleet admin), as admin.
func (s devSecurity) setUp(ctx context.Context, admin backbone.Config) error {
	passwords := map[string]string{}
	for _, u := range append([]string{s.user}, servicePrincipalList()...) {
		p, err := s.password(u)
		if err != nil {
			return err
		}
		passwords[u] = p
	}
	cl, err := admin.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if err := acl.CreateSCRAMUsers(ctx, adm, kafkaauth.ScramSHA512, passwords); err != nil {
		return err
	}
	plan, err := acl.Plan(admin.Names(), s.principals())
	if err != nil {
		return err
	}
	_, err = acl.Apply(ctx, adm, plan, true)
	return err
}

func (s devSecurity) principals() acl.Principals {
	return acl.Principals{
		Planner: acl.Principal(devServicePrincipals["planner"]), Executor: acl.Principal(devServicePrincipals["executor"]),
		Monitor: acl.Principal(devServicePrincipals["monitor"]), Notifier: acl.Principal(devServicePrincipals["notifier"]),
		FleetAdmins: []string{acl.Principal(s.user)}, TrustAdmins: []string{acl.Principal(s.user)},
	}
}

func servicePrincipalList() []string {
	return []string{devServicePrincipals["planner"], devServicePrincipals["executor"], devServicePrincipals["monitor"], devServicePrincipals["notifier"]}
}

// printHowToConnect tells the user how to reach the secure broker.
func (s devSecurity) printHowToConnect(w io.Writer, brokers []string) {
	if w == nil {
		return
	}
	fmt.Fprintf(w, "secure: the broker at %s signs every client in with %s and checks ACLs (flotilla acl plan).\n", strings.Join(brokers, ","), backbone.EmbeddedMechanism)
	fmt.Fprintf(w, "secure: the planner, monitor and notifier accept only records signed by a key of the trust store (flotilla trust list).\n")
	fmt.Fprintf(w, "secure: connect as %s (operator, fleet and trust admin), signing with your key:\n", s.user)
	fmt.Fprintf(w, "  export FLOTILLA_KAFKA_CONFIG=%s\n", shellQuote(absPath(s.ConfigFile(s.user))))
	fmt.Fprintf(w, "  export FLOTILLA_KEY=%s FLOTILLA_PRINCIPAL=%s\n", shellQuote(absPath(s.KeyFile())), shellQuote(s.user))
	fmt.Fprintf(w, "  flotilla cluster list\n")
	fmt.Fprintf(w, "secure: the planner and the executor sign their audit checkpoints: flotilla audit verify --service-keys %s\n", shellQuote(absPath(s.ServiceKeysDir())))
	fmt.Fprintf(w, "secure: with kcat: kcat -F %s -b %s -L\n", shellQuote(absPath(s.kcatFile())), strings.Join(brokers, ","))
	fmt.Fprintf(w, "secure: the dashboard and /metrics ask for a password: sign in as %s with the one in %s\n", s.user, shellQuote(absPath(s.passwordFile(s.user))))
}
