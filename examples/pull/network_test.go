package main

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullkit/pullkit/internal/regtest"
)

// TestNetworkFlags: --plan prints the endpoints a hosts directory chose, in order, with
// the file and entry; --tls-ca pulls from an HTTPS-only loopback registry with a
// private CA, which fails without it; bad flag combinations are usage errors.
func TestNetworkFlags(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "registry.example:5000")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	toml := "server = \"https://registry.example:5000\"\n[host.\"https://mirror.example\"]\n  capabilities = [\"pull\"]\n"
	if err := os.WriteFile(filepath.Join(sub, "hosts.toml"), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "--hosts-dir", dir, "--plan", "registry.example:5000/team/app:v1")
	if code != 0 || errOut != "" {
		t.Fatalf("--plan: exit %d, stderr %q", code, errOut)
	}
	m := strings.Index(out, "mirror https://mirror.example/v2/team/app?ns=registry.example%3A5000")
	r := strings.Index(out, "registry https://registry.example:5000/v2/team/app")
	if m < 0 || r < 0 || m > r || !strings.Contains(out, filepath.Join(sub, "hosts.toml")+` host."https://mirror.example"`) {
		t.Errorf("--plan printed:\n%s", out)
	}

	ca := regtest.NewCA(t, "cli CA")
	cert, key := ca.Server(t, "127.0.0.1")
	reg := regtest.Start(t, regtest.WithV3(), regtest.WithTLS(regtest.TLSFiles{Cert: cert, Key: key, Client: &tls.Config{RootCAs: ca.Pool()}}))
	reg.Push(t, "team/app:v1", regtest.LayeredImage(t, 1))
	ref := reg.Ref("team/app:v1")
	if code, _, errOut := runCLI(t, ref); code != 1 || !strings.Contains(errOut, "certificate") {
		t.Errorf("without --tls-ca: exit %d, stderr %q", code, errOut)
	}
	if code, out, errOut := runCLI(t, "--tls-ca", ca.CertFile, ref); code != 0 || !strings.Contains(out, "layers     1") {
		t.Errorf("--tls-ca: exit %d, stderr %q\n%s", code, errOut, out)
	}

	for _, args := range [][]string{
		{"--tls-cert", "x.pem", ref},
		{"--creds", "nocolon", ref},
		{"--proxy", "::not a url", ref},
		{"--plan"},
	} {
		if code, _, errOut := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, errOut)
		}
	}
	if code, _, errOut := runCLI(t, "--registries-conf", filepath.Join(dir, "missing.conf"), "--plan", ref); code == 0 || !strings.Contains(errOut, "missing.conf") {
		t.Errorf("a missing --registries-conf: exit %d, %q", code, errOut)
	}
}
