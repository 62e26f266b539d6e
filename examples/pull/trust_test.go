package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/trust/policy"
)

// signSig signs d with priv in cosign's .sig tag format (what cosign 2 pushes).
func signSig(t *testing.T, reg *pullkittest.Registry, repo string, d digest.Digest, priv *ecdsa.PrivateKey) {
	t.Helper()
	payload := fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, reg.Ref(repo), d)
	sum := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	cfg := []byte("{}")
	layer := manifest.Descriptor{MediaType: policy.SimpleSigningMediaType, Digest: reg.PutBlob(repo, payload), Size: int64(len(payload)),
		Annotations: map[string]string{"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(sig)}}
	raw, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIManifest,
		"config": manifest.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: reg.PutBlob(repo, cfg), Size: 2},
		"layers": []manifest.Descriptor{layer}})
	reg.PutManifest(repo, "sha256-"+d.Encoded()+".sig", manifest.MediaTypeOCIManifest, raw)
}

func writeKey(t *testing.T, dir, name string) (*ecdsa.PrivateKey, string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(priv.Public())
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return priv, path
}

// TestVerifyFlags: --verify-key and --policy verify before any layer; the human and
// --json outputs say what vouched; a refusal is one line naming the reference, exit 1.
func TestVerifyFlags(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	dir := t.TempDir()
	priv, pub := writeKey(t, dir, "right.pub")
	_, wrong := writeKey(t, dir, "wrong.pub")
	signSig(t, reg, "team/app", img.Digest, priv)
	ref := reg.Ref("team/app:v1")

	code, out, errOut := runCLI(t, "--verify-key", pub, ref)
	if code != 0 || !strings.Contains(out, "verified   sigstoreSigned") || !strings.Contains(out, "key sha256:") || !strings.Contains(out, "(tag") {
		t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
	}
	code, out, _ = runCLI(t, "--verify-key", pub, "--json", ref)
	var m struct {
		Verified struct {
			Requirements []struct {
				Type      string
				Signature struct {
					Format, KeyID, Identity string
					Digest                  digest.Digest
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &m); code != 0 || err != nil || len(m.Verified.Requirements) != 1 {
		t.Fatalf("exit %d, %v\n%s", code, err, out)
	}
	if s := m.Verified.Requirements[0].Signature; s.Format != "tag" || s.Digest != img.Digest || !strings.HasPrefix(s.KeyID, "sha256:") || s.Identity != reg.Ref("team/app") {
		t.Errorf("verified = %+v", m.Verified)
	}

	reg.ResetRequests()
	code, out, errOut = runCLI(t, "--verify-key", wrong, "--output", filepath.Join(dir, "layout"), ref)
	if code != 1 || !strings.Contains(errOut, ref) || !strings.Contains(errOut, "untrusted") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("wrong key: exit %d, stderr %q, stdout %q", code, errOut, out)
	}
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob, Ref: img.Config.Digest.String()}); n != 0 {
		t.Errorf("a refused pull fetched the config")
	}

	pol := filepath.Join(dir, "policy.json")
	doc := `{"default":[{"type":"reject"}],"transports":{"docker":{"` + reg.Host() + `/open":[{"type":"insecureAcceptAnything"}]}}}`
	if err := os.WriteFile(pol, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	reg.PushImage("open/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	if code, out, errOut := runCLI(t, "--policy", pol, reg.Ref("open/app:v1")); code != 0 || !strings.Contains(out, "verified   insecureAcceptAnything") {
		t.Errorf("insecureAcceptAnything: exit %d, %q\n%s", code, errOut, out)
	}
	if code, _, errOut := runCLI(t, "--policy", pol, ref); code != 1 || !strings.Contains(errOut, "rejects every image") {
		t.Errorf("reject: exit %d, %q", code, errOut)
	}
	for _, args := range [][]string{
		{"--policy", pol, "--verify-key", pub, ref},
		{"--policy", filepath.Join(dir, "missing.json"), ref},
		{"--verify-key", filepath.Join(dir, "policy.json"), ref},
	} {
		if code, _, errOut := runCLI(t, args...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
}
