package regtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/testdata"
)

// Skopeo copies HOST/src to HOST/dst inside the registry with `skopeo copy --format
// format` (v2s1, v2s2 or oci), as containers/image writes it: v2s1 is signed with an
// ephemeral key in compact JSON.
func (r *Registry) Skopeo(t testing.TB, format, src, dst string) {
	t.Helper()
	bin := SkopeoBinary()
	need(t, bin, "skopeo")
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"copy", "--quiet", "--policy", policy, "--retry-times", "2",
		"--src-tls-verify=false", "--dest-tls-verify=false", "--format", format}
	if r.Auth != "" {
		args = append(args, "--src-creds", User+":"+Password, "--dest-creds", User+":"+Password)
	} else {
		args = append(args, "--src-no-creds", "--dest-no-creds")
	}
	args = append(args, "docker://"+r.Ref(src), "docker://"+r.Ref(dst))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir, "REGISTRY_AUTH_FILE="+filepath.Join(dir, "auth.json"), "TMPDIR="+dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("skopeo %v: %v\n%s", args, err, out.String())
	}
}

// remoteOptions authenticate go-containerregistry's writes as User when needed.
func (r *Registry) remoteOptions() []remote.Option {
	opts := []remote.Option{remote.WithContext(context.Background())}
	if r.Auth != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: User, Password: Password}))
	}
	if r.TLS != nil {
		opts = append(opts, remote.WithTransport(r.client().Transport))
	}
	return opts
}

func (r *Registry) parse(t testing.TB, repoTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repoTag), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// Push writes img to repoTag with go-containerregistry and returns its digest.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) digest.Digest {
	t.Helper()
	if err := remote.Write(r.parse(t, repoTag), img, r.remoteOptions()...); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String())
}

// PushIndex writes idx (and every image in it) to repoTag with go-containerregistry
// and returns its digest.
func (r *Registry) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) digest.Digest {
	t.Helper()
	if err := remote.WriteIndex(r.parse(t, repoTag), idx, r.remoteOptions()...); err != nil {
		t.Fatalf("push index %s: %v", repoTag, err)
	}
	h, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String())
}

// RawImage is an image as bytes: its manifest exactly as it will be served, and the
// blobs it names.
type RawImage struct {
	MediaType string
	Manifest  []byte
	Blobs     [][]byte
}

// HelloWorldAMD64 is Docker Hub's real hello-world linux/amd64 image: the schema 2
// manifest sha256:f54a58bc… (3-space indented, as Docker Hub serves it), its config
// and its gzip layer, from the embedded ctr export.
func HelloWorldAMD64(t testing.TB) RawImage {
	t.Helper()
	blobs, err := testdata.Blobs(testdata.HelloWorldCtrExport)
	if err != nil {
		t.Fatal(err)
	}
	get := func(d string) []byte {
		b, ok := blobs[digest.Digest(d)]
		if !ok {
			t.Fatalf("embedded ctr export has no blob %s", d)
		}
		return b
	}
	return RawImage{
		MediaType: string(types.DockerManifestSchema2),
		Manifest:  get("sha256:f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4"),
		Blobs: [][]byte{
			get("sha256:feb5d9fea6a5e9606aa995e879d862b825965ba48de054caab5ef356dc6b3412"),
			get("sha256:2db29710123e3e53a794f2694094b9b4338aa9ee5c40b930cb8063a1be392c54"),
		},
	}
}

// PushRaw uploads img's blobs and PUTs its manifest bytes unchanged to repoTag (with
// go-containerregistry), returning the manifest's sha256.
func (r *Registry) PushRaw(t testing.TB, repoTag string, img RawImage) digest.Digest {
	t.Helper()
	ref := r.parse(t, repoTag)
	for _, b := range img.Blobs {
		if err := remote.WriteLayer(ref.Context(), static.NewLayer(b, types.MediaType("application/octet-stream")), r.remoteOptions()...); err != nil {
			t.Fatalf("push blob %s: %v", digest.FromBytes(b), err)
		}
	}
	if err := remote.Put(ref, rawManifest{img}, r.remoteOptions()...); err != nil {
		t.Fatalf("put manifest %s: %v", repoTag, err)
	}
	return digest.FromBytes(img.Manifest)
}

// rawManifest is a remote.Taggable that PUTs bytes as they are.
type rawManifest struct{ img RawImage }

func (m rawManifest) RawManifest() ([]byte, error) { return m.img.Manifest, nil }
func (m rawManifest) MediaType() (types.MediaType, error) {
	return types.MediaType(m.img.MediaType), nil
}

// helloLayer is the real hello-world gzip layer as a go-containerregistry layer.
func helloLayer(t testing.TB, mt types.MediaType) v1.Layer {
	t.Helper()
	raw := HelloWorldAMD64(t).Blobs[1]
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(mt))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// PlatformImage builds, with go-containerregistry, an image for p: the hello-world
// layer and a config that names p. oci selects OCI media types over Docker schema 2.
func PlatformImage(t testing.TB, p v1.Platform, oci bool) v1.Image {
	t.Helper()
	manifestType, configType, layerType := types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer
	if oci {
		manifestType, configType, layerType = types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer
	}
	img := mutate.MediaType(empty.Image, manifestType)
	img = mutate.ConfigMediaType(img, configType)
	img, err := mutate.AppendLayers(img, helloLayer(t, layerType))
	if err != nil {
		t.Fatal(err)
	}
	return withPlatform(t, img, p)
}

func withPlatform(t testing.TB, img v1.Image, p v1.Platform) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant, cf.OSVersion = p.OS, p.Architecture, p.Variant, p.OSVersion
	cf.Config.Cmd = []string{"/hello"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Index builds, with go-containerregistry, a Docker manifest list (oci false) or an OCI
// index (oci true) holding PlatformImage for each platform, in order.
func Index(t testing.TB, oci bool, platforms ...v1.Platform) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	if oci {
		idx = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	}
	for _, p := range platforms {
		img := PlatformImage(t, p, oci)
		mt, err := img.MediaType()
		if err != nil {
			t.Fatal(err)
		}
		pc := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{MediaType: mt, Platform: &pc},
		})
	}
	return idx
}

// LayeredImage builds a Docker schema 2 linux/amd64 image with n random gzip layers
// of different sizes, so that layer order is visible in every format.
func LayeredImage(t testing.TB, n int) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	for i := 0; i < n; i++ {
		l, err := random.Layer(int64(256+64*i), types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return withPlatform(t, img, v1.Platform{OS: "linux", Architecture: "amd64"})
}

// DigestOf returns the Docker-Content-Digest the registry reports for repo's ident
// with the given Accept header (HEAD), for tests that compare against the registry.
func (r *Registry) DigestOf(t testing.TB, repo, ident, accept string) digest.Digest {
	t.Helper()
	resp, _ := r.Get(t, "HEAD", fmt.Sprintf("/v2/%s/manifests/%s", repo, ident), accept)
	if resp.StatusCode != 200 {
		t.Fatalf("HEAD %s:%s: %s", repo, ident, resp.Status)
	}
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		t.Fatalf("HEAD %s:%s: Docker-Content-Digest %q: %v", repo, ident, resp.Header.Get("Docker-Content-Digest"), err)
	}
	return d
}
