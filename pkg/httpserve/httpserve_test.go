package httpserve_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/flotilla-fleet/flotilla/internal/testcert"
	"github.com/flotilla-fleet/flotilla/pkg/httpserve"
)

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// serve serves a handler that answers "ok" with the web config given,
// until the test ends, and returns its address.
func serve(t *testing.T, webConfig string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- httpserve.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
			httpserve.Options{WebConfig: webConfig, Grace: time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v at its context's end, want nil", err)
		}
	})
	return ln.Addr().String()
}

// get makes a request as user (none if ""), and returns the status, or
// the error.
func get(client *http.Client, url, user, password string) (int, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, nil
}

func hash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// TestUsersAndTLS: with users, a request without their password is
// refused (401, asking for basic authentication) and one with it served;
// with a certificate too, only HTTPS is served, and the scheme says so.
func TestUsersAndTLS(t *testing.T) {
	dir := t.TempDir()
	cert := testcert.New(t, "flotilla test")
	cert.Write(t, dir, "server.crt", "server.key")
	pool := cert.Pool
	usersOnly := filepath.Join(dir, "users.yml")
	write(t, usersOnly, "basic_auth_users:\n  alice: "+hash(t, "s3cret")+"\n")
	withTLS := filepath.Join(dir, "tls.yml")
	write(t, withTLS, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: "+hash(t, "s3cret")+"\n")

	if s := httpserve.Scheme(usersOnly); s != "http" {
		t.Errorf("scheme of a config without TLS: %s", s)
	}
	if s := httpserve.Scheme(withTLS); s != "https" {
		t.Errorf("scheme of a config with TLS: %s", s)
	}

	plain := &http.Client{Timeout: 10 * time.Second}
	secure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, tc := range []struct {
		name   string
		client *http.Client
		url    string
	}{
		{"users over HTTP", plain, "http://" + serve(t, usersOnly) + "/"},
		{"users over HTTPS", secure, "https://" + serve(t, withTLS) + "/"},
	} {
		for _, c := range []struct {
			user, password string
			want           int
		}{{"", "", http.StatusUnauthorized}, {"alice", "wrong", http.StatusUnauthorized}, {"mallory", "s3cret", http.StatusUnauthorized}, {"alice", "s3cret", http.StatusOK}} {
			if got, err := get(tc.client, tc.url, c.user, c.password); err != nil || got != c.want {
				t.Errorf("%s: as %q with %q: %d %v, want %d", tc.name, c.user, c.password, got, err, c.want)
			}
		}
	}
	// Plain HTTP to the TLS server gets nothing served.
	addr := serve(t, withTLS)
	if got, err := get(plain, "http://"+addr+"/", "alice", "s3cret"); err == nil && got == http.StatusOK {
		t.Error("the TLS server answered plain HTTP")
	}
	// Without a config: plain HTTP to anyone.
	if got, err := get(plain, "http://"+serve(t, "")+"/", "", ""); err != nil || got != http.StatusOK {
		t.Errorf("without a config: %d %v", got, err)
	}
}

// TestCheckNamesTheFileAndTheProblem: a file that cannot be used stops a
// service at its start, saying which and why.
func TestCheckNamesTheFileAndTheProblem(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, text, want string }{
		{"missing.yml", "", "no such file"},
		{"bad-yaml.yml", "basic_auth_users: [", "yaml"},
		{"bad-hash.yml", "basic_auth_users:\n  alice: not-a-hash\n", "bcrypt"},
		{"no-key.yml", "tls_server_config:\n  cert_file: server.crt\n", "key"},
		{"unknown.yml", "basic_auth_user:\n  alice: x\n", "basic_auth_user"},
	} {
		path := filepath.Join(dir, tc.name)
		if tc.text != "" {
			write(t, path, tc.text)
		}
		err := httpserve.Check(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming the file and %q", tc.name, err, tc.want)
		}
	}
	if err := httpserve.Check(""); err != nil {
		t.Errorf("no file: %v", err)
	}
}
