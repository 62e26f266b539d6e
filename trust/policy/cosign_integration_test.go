package policy_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/faultproxy"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/trust"
	"github.com/pullkit/pullkit/trust/policy"
)

// cosignBinary finds the real cosign CLI ($PULLKIT_COSIGN, the PATH, $GOPATH/bin), which
// .ci/run installs at a pinned version. Without it the test is skipped, unless CI is set:
// then it fails, as the other integration tests do.
func cosignBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PULLKIT_COSIGN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("cosign"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	if p := filepath.Join(gopath, "bin", "cosign"); fileExists(p) {
		return p
	}
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatalf("cosign is not installed, and CI=%s: .ci/run must install it (go install github.com/sigstore/cosign/v3/cmd/cosign)", ci)
	}
	t.Skip("cosign is not installed (go install github.com/sigstore/cosign/v3/cmd/cosign@v3.1.3; set CI to make this a failure)")
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// cosign runs the CLI in dir, offline: no transparency log, no signing config, no
// network but the loopback registry.
type cosign struct {
	bin, dir string
}

func (c cosign) run(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "HOME="+c.dir, "COSIGN_PASSWORD=", "COSIGN_YES=true", "TUF_ROOT="+filepath.Join(c.dir, "tuf"),
		"DOCKER_CONFIG="+filepath.Join(c.dir, "docker"), "SIGSTORE_NO_CACHE=true")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// keyPair makes a cosign key pair (empty password) named prefix.key / prefix.pub.
func (c cosign) keyPair(t *testing.T, prefix string) (key, pub string) {
	t.Helper()
	c.run(t, "generate-key-pair", "--output-key-prefix", prefix)
	return filepath.Join(c.dir, prefix+".key"), filepath.Join(c.dir, prefix+".pub")
}

// sign signs ref (by digest) with key, as a bundle referrer or in the .sig tag.
func (c cosign) sign(t *testing.T, key, ref string, bundle bool) {
	t.Helper()
	c.run(t, "sign", "--key", key, "--tlog-upload=false", "--use-signing-config=false",
		"--allow-http-registry", "--allow-insecure-registry", "--yes",
		"--new-bundle-format="+map[bool]string{true: "true", false: "false"}[bundle], ref)
}

func pushRandom(t *testing.T, reg *regtest.Registry, repoTag string) digest.Digest {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	return reg.Push(t, repoTag, img)
}

func writePolicy(t *testing.T, dir, doc string) *policy.Verifier {
	t.Helper()
	path := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := policy.NewVerifier(p)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func storeEmpty(t *testing.T, st store.Store) {
	t.Helper()
	var n int
	_ = st.Walk(context.Background(), func(store.Info) error { n++; return nil })
	imgs, _ := st.Images(context.Background())
	if n != 0 || len(imgs) != 0 {
		t.Errorf("a refused pull stored %d blobs and %d names", n, len(imgs))
	}
}

// TestCosignIntegration signs images with the real cosign CLI (a key pair it makes,
// offline) on docker-registry 2.8 (no referrers API: the bundle lands under the
// sha256-<hex> tag) and distribution v3, in both storage formats, and pulls them through
// a recording proxy with a containers-policy.json.
func TestCosignIntegration(t *testing.T) {
	bin := cosignBinary(t)
	for _, v3 := range []bool{false, true} {
		regName := map[bool]string{false: "distribution 2.8", true: "distribution v3"}[v3]
		t.Run(regName, func(t *testing.T) {
			var opts []regtest.Option
			if v3 {
				opts = append(opts, regtest.WithV3())
			}
			reg := regtest.Start(t, opts...)
			proxy, err := faultproxy.New("http://" + reg.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			dir := t.TempDir()
			cs := cosign{bin: bin, dir: dir}
			key, pub := cs.keyPair(t, "right")
			_, wrongPub := cs.keyPair(t, "wrong")
			for _, bundle := range []bool{true, false} {
				format := map[bool]string{true: trust.FormatBundle, false: trust.FormatTag}[bundle]
				t.Run(format, func(t *testing.T) {
					repo := "team/" + format
					signed := pushRandom(t, reg, repo+":signed")
					unsigned := pushRandom(t, reg, repo+":unsigned")
					host := proxy.Host()
					// Signed through the proxy: the identity cosign writes names the
					// registry as the puller sees it.
					cs.sign(t, key, host+"/"+repo+"@"+signed.String(), bundle)
					ref := host + "/" + repo + ":signed"

					policyFor := func(keyPath, identity string) *policy.Verifier {
						return writePolicy(t, t.TempDir(), `{"default":[{"type":"reject"}],"transports":{"docker":{
							"`+host+`/team":[{"type":"sigstoreSigned","keyPath":"`+keyPath+`","signedIdentity":`+identity+`}],
							"`+host+`/open":[{"type":"insecureAcceptAnything"}]}}}`)
					}
					matchRepo := `{"type":"matchRepository"}`

					// Right key: accepted; the pull adds only signature reads before the
					// first blob, and the result says what vouched.
					proxy.Reset()
					c := newClient(t, puller.WithVerifier(policyFor(pub, matchRepo)))
					st := store.NewMemory()
					var res *trust.Result
					img, err := c.Pull(context.Background(), ref, st, puller.WithVerified(func(r *trust.Result) { res = r }))
					if err != nil {
						t.Fatalf("signed image refused: %v", err)
					}
					if res == nil || len(res.Signatures) != 1 || res.Signatures[0].Format != format || res.Signatures[0].Digest != signed || res.Signatures[0].KeyID == "" {
						t.Fatalf("result = %+v", res)
					}
					if img.Digest != signed {
						t.Errorf("pulled %s, want %s", img.Digest, signed)
					}
					checkOrder(t, proxy.Records(), imageBlobs(t, reg.Ref(repo+"@"+signed.String())))

					// The same client again: the verdict is cached, no signature read
					// (Resolve may read the image's own config).
					proxy.Reset()
					if _, err := c.Resolve(context.Background(), ref); err != nil {
						t.Fatal(err)
					}
					own := imageBlobs(t, reg.Ref(repo+"@"+signed.String()))
					for _, r := range proxy.Records() {
						if strings.Contains(r.Path, "/manifests/sha256-") || strings.Contains(r.Path, "/referrers/") || strings.Contains(r.Path, "/blobs/") && !isImageBlob(r, own) {
							t.Errorf("a cached verification requested %s %s", r.Method, r.Path)
						}
					}

					refuse := func(name, ref string, v *policy.Verifier, want string) {
						t.Helper()
						blobs := imageBlobs(t, strings.Replace(ref, host, reg.Host, 1))
						proxy.Reset()
						st := store.NewMemory()
						_, err := newClient(t, puller.WithVerifier(v)).Pull(context.Background(), ref, st)
						if !errors.Is(err, pullkit.ErrUntrusted) {
							t.Fatalf("%s: err = %v, want ErrUntrusted", name, err)
						}
						if !strings.Contains(err.Error(), want) {
							t.Errorf("%s: %v\nwant it to say %q", name, err, want)
						}
						var pe *pullkit.Error
						if !errors.As(err, &pe) || pe.Reference != ref || pe.Digest == "" {
							t.Errorf("%s: %#v does not name the reference and digest", name, pe)
						}
						storeEmpty(t, st)
						for _, r := range proxy.Records() {
							if isImageBlob(r, blobs) {
								t.Errorf("%s: a refused pull requested %s", name, r.Path)
							}
						}
					}
					refuse("wrong key", ref, policyFor(wrongPub, matchRepo), "none of 1 signatures accepted")
					refuse("no signature", host+"/"+repo+":unsigned", policyFor(pub, matchRepo), "no signature")
					_ = unsigned
					if bundle {
						// A bundle names a digest only: exactReference of a tag is unmet.
						refuse("identity", ref, policyFor(pub, `{"type":"exactReference","dockerReference":"`+ref+`"}`), "does not satisfy exactReference")
					} else {
						// cosign's payload names the repository: exactRepository of another
						// one is unmet, and so is the default (no tag in the identity).
						refuse("identity", ref, policyFor(pub, `{"type":"exactRepository","dockerRepository":"`+host+`/team/other"}`), "does not satisfy exactRepository")
						refuse("identity default", ref, policyFor(pub, `{"type":"matchRepoDigestOrExact"}`), "does not satisfy matchRepoDigestOrExact")
						// The .sig of the signed image copied to the unsigned one's tag.
						copyTag(t, reg, repo, "sha256-"+signed.Encoded()+".sig", "sha256-"+unsigned.Encoded()+".sig")
						refuse("another digest", host+"/"+repo+":unsigned", policyFor(pub, matchRepo), "it signs "+signed.String())
					}
					// Default reject, insecureAcceptAnything for open/: pulled unsigned.
					pushRandom(t, reg, "open/thing:v1")
					if _, err := newClient(t, puller.WithVerifier(policyFor(pub, matchRepo))).Pull(context.Background(), host+"/open/thing:v1", store.NewMemory()); err != nil {
						t.Errorf("insecureAcceptAnything scope: %v", err)
					}
					pushRandom(t, reg, "other/thing:v1")
					refuse("default reject", host+"/other/thing:v1", policyFor(pub, matchRepo), "rejects every image")
				})
			}
		})
	}
}

// imageBlobs lists the config and layer digests of the image ref names.
func imageBlobs(t *testing.T, ref string) map[string]bool {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	out[cfg.String()] = true
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out[d.String()] = true
	}
	return out
}

// isImageBlob reports whether the request was for one of the image's own blobs.
func isImageBlob(r faultproxy.Record, blobs map[string]bool) bool {
	i := strings.Index(r.Path, "/blobs/")
	return i >= 0 && blobs[r.Path[i+len("/blobs/"):]]
}

// checkOrder checks what a verified pull asked for: the manifest, then only signature
// reads (referrers, sha256-<hex> tags, referrer manifests and the blobs they name), and
// only then the image's config and layers.
func checkOrder(t *testing.T, recs []faultproxy.Record, blobs map[string]bool) {
	t.Helper()
	firstImage, lastSig, sigReads := -1, -1, 0
	for i, r := range recs {
		switch {
		case isImageBlob(r, blobs):
			if firstImage < 0 {
				firstImage = i
			}
		case strings.Contains(r.Path, "/referrers/") || strings.Contains(r.Path, "/manifests/sha256") || strings.Contains(r.Path, "/blobs/"):
			lastSig = i
			sigReads++
		}
	}
	if lastSig < 0 || firstImage < 0 {
		t.Fatalf("no signature read, or no image blob: %v", recs)
	}
	if firstImage < lastSig {
		t.Errorf("an image blob (%s) was requested before the verification ended: %v", recs[firstImage].Path, recs)
	}
	var lines []string
	for _, r := range recs {
		lines = append(lines, r.Method+" "+r.Path)
	}
	t.Logf("verified pull: %d requests, %d of them signature reads:\n%s", len(recs), sigReads, strings.Join(lines, "\n"))
}

// copyTag tags the manifest tagged from as to, inside repo.
func copyTag(t *testing.T, reg *regtest.Registry, repo, from, to string) {
	t.Helper()
	src, err := name.ParseReference(reg.Ref(repo+":"+from), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(src)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := name.ParseReference(reg.Ref(repo+":"+to), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(dst, desc); err != nil {
		t.Fatal(err)
	}
}

func newClient(t *testing.T, opts ...puller.Option) *puller.Client {
	t.Helper()
	c, err := puller.New(append([]puller.Option{puller.WithKeychain(anonymous{})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// anonymous finds no credentials (the developer's docker config cannot change a test).
type anonymous struct{}

func (anonymous) Resolve(authn.Resource) (authn.Authenticator, error) { return authn.Anonymous, nil }
