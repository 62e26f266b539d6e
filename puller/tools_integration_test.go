package puller_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/unpack"
)

// toolsClient is a client for a regtest registry (basic or token credentials as it
// needs).
func toolsClient(t *testing.T, r *regtest.Registry) *puller.Client {
	t.Helper()
	kc := authn.NewMultiKeychain()
	if r.Auth != "" {
		kc = staticKC{&authn.Basic{Username: regtest.User, Password: regtest.Password}}
	}
	c, err := puller.New(puller.WithKeychain(kc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type staticKC struct{ a authn.Authenticator }

func (k staticKC) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }

// TestRealToolsReadWhatPullStores pulls schema 2, OCI, an index (one platform, and every
// platform) and signed schema 1 from the real registries into one layout with the
// library, then has skopeo and umoci read each image by the name the pull gave it: skopeo
// inspect lists the layers that were pulled, and umoci unpack builds a root filesystem
// from them. Against distribution 2.8 (schema 1 on) and v3 with token auth whose realm is
// on another loopback port (no schema 1 there).
func TestRealToolsReadWhatPullStores(t *testing.T) {
	skopeo := regtest.SkopeoBinary()
	umoci, _ := exec.LookPath("umoci")
	if umoci == "" && os.Getenv("CI") != "" {
		t.Fatal("umoci is not installed, and CI must run this test")
	}
	for _, v3 := range []bool{false, true} {
		name := "distribution 2.8"
		var opts []regtest.Option
		if v3 {
			name = "distribution v3 + token"
			opts = append(opts, regtest.WithV3(), regtest.WithToken(regtest.NewTokenServer(t)))
		}
		t.Run(name, func(t *testing.T) {
			r := regtest.Start(t, opts...)
			r.Push(t, "tools/s2:v1", regtest.LayeredImage(t, 3))
			r.Push(t, "tools/oci:v1", regtest.PlatformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}, true))
			r.PushIndex(t, "tools/idx:v1", regtest.Index(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}))
			refs := []string{"tools/s2:v1", "tools/oci:v1", "tools/idx:v1"}
			if !v3 {
				r.Skopeo(t, "v2s1", "tools/s2:v1", "tools/s1:v1")
				refs = append(refs, "tools/s1:v1")
			}
			dir := t.TempDir()
			st, err := store.OpenLayout(dir)
			if err != nil {
				t.Fatal(err)
			}
			c := toolsClient(t, r)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			for _, ref := range refs {
				img, err := c.Pull(ctx, r.Ref(ref), st, puller.WithPlatform(regtestAMD64))
				if err != nil {
					t.Fatalf("pull %s: %v", ref, err)
				}
				if img.Name != r.Ref(ref) {
					t.Errorf("%s: named %q", ref, img.Name)
				}
				var layerDigests []string
				for _, l := range img.Layers {
					if l.DiffID != "" || !l.Empty {
						layerDigests = append(layerDigests, string(l.Digest))
					}
				}
				checkTools(t, skopeo, umoci, dir, img.Name, layerDigests)
			}
			all, err := c.Pull(ctx, r.Ref("tools/idx:v1"), st, puller.WithAllPlatforms())
			if err != nil {
				t.Fatalf("pull every platform: %v", err)
			}
			if len(all.Platforms) != 2 {
				t.Fatalf("every platform: %d images, want 2", len(all.Platforms))
			}
			// skopeo picks the host's platform out of the stored index; umoci 0.4.7 does not
			// choose platforms (an index of two is "ambiguous" to it), so it is asked for
			// each platform's image by its platform name (issue 22), as skopeo is.
			checkTools(t, skopeo, "", dir, all.Name, []string{string(all.Layers[0].Digest)})
			for _, p := range all.Platforms {
				checkTools(t, skopeo, umoci, dir, store.PlatformName(all.Name, *p.Platform), []string{string(p.Layers[0].Digest)})
			}
			// A second platform of a tag pulled alone: the first keeps its platform name.
			arm, err := c.Pull(ctx, r.Ref("tools/idx:v1"), st, puller.WithPlatform(platforms.Platform{OS: "linux", Architecture: "arm64"}))
			if err != nil {
				t.Fatalf("pull arm64: %v", err)
			}
			checkTools(t, skopeo, umoci, dir, store.PlatformName(arm.Name, regtestAMD64), []string{string(all.Platforms[0].Layers[0].Digest)})
			checkTools(t, skopeo, umoci, dir, store.PlatformName(arm.Name, *arm.Platform), []string{string(arm.Layers[0].Digest)})
			if left, _ := os.ReadDir(filepath.Join(dir, store.IngestDir)); len(left) != 0 {
				t.Errorf("ingest/ holds %d files after the pulls", len(left))
			}
		})
	}
}

// checkTools has skopeo inspect and umoci unpack the image named name in the layout dir.
func checkTools(t *testing.T, skopeo, umoci, dir, name string, layerDigests []string) {
	t.Helper()
	if skopeo != "" {
		out, err := exec.Command(skopeo, "inspect", "oci:"+dir+":"+name).CombinedOutput()
		if err != nil {
			t.Errorf("skopeo inspect oci:%s:%s: %v\n%s", dir, name, err, out)
		} else {
			for _, d := range layerDigests {
				if !bytes.Contains(out, []byte(d)) {
					t.Errorf("skopeo inspect of %s does not list layer %s:\n%s", name, d, out)
				}
			}
		}
	}
	if umoci != "" {
		bundle := filepath.Join(t.TempDir(), "bundle")
		if out, err := exec.Command(umoci, "unpack", "--image", dir+":"+name, bundle).CombinedOutput(); err != nil {
			t.Errorf("umoci unpack --image %s:%s: %v\n%s", dir, name, err, out)
		} else if n := countFiles(t, filepath.Join(bundle, "rootfs")); n == 0 {
			t.Errorf("umoci unpacked %s into an empty rootfs", name)
		}
	}
}

func countFiles(t *testing.T, root string) int {
	n := 0
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// treeDigest summarises a directory tree (paths, types, modes, sizes, contents, link
// targets), for comparing unpackers.
func treeDigest(t *testing.T, root string) (string, []string) {
	t.Helper()
	var lines []string
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		line := rel + " " + info.Mode().String()
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case info.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			io.Copy(h, f)
			f.Close()
			line += " " + hex.EncodeToString(h.Sum(nil))
		}
		if rel != "." {
			lines = append(lines, line)
		}
		return nil
	})
	sort.Strings(lines)
	h := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(h[:]), lines
}

var regtestAMD64 = platforms.Platform{OS: "linux", Architecture: "amd64"}

// tarEntry is one entry of a test layer.
type tarEntry struct {
	name, link, body string
	typ              byte
	mode             int64
}

func layerTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// agreementImage builds an image of two layers with what real images hold (absolute
// symlinks used as directories, hard links, a whiteout, an opaque directory, modes) in
// the given media types and compression.
func agreementImage(t *testing.T, oci bool, comp compression.Compression) v1.Image {
	t.Helper()
	base := layerTar(t,
		tarEntry{name: "usr/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "usr/lib/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "usr/lib/libc.so", typ: tar.TypeReg, mode: 0o755, body: "libc"},
		tarEntry{name: "lib", typ: tar.TypeSymlink, link: "/usr/lib", mode: 0o777},
		tarEntry{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, body: "root:x:0:0::/root:/bin/sh\n"},
		tarEntry{name: "etc/shadow", typ: tar.TypeReg, mode: 0o640, body: "root:*::0:::::\n"},
		tarEntry{name: "etc/passwd-", typ: tar.TypeLink, link: "etc/passwd"},
		tarEntry{name: "opt/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "opt/old/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "opt/old/a", typ: tar.TypeReg, mode: 0o600, body: "a"},
		tarEntry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "bin/su", typ: tar.TypeReg, mode: 0o4755, body: "su"},
		tarEntry{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
	)
	top := layerTar(t,
		tarEntry{name: "lib/x.so", typ: tar.TypeReg, mode: 0o644, body: "x"}, // through the absolute symlink
		tarEntry{name: "etc/.wh.shadow", typ: tar.TypeReg},
		tarEntry{name: "opt/.wh..wh..opq", typ: tar.TypeReg},
		tarEntry{name: "opt/new", typ: tar.TypeReg, mode: 0o644, body: "new"},
		tarEntry{name: "etc/hostname", typ: tar.TypeReg, mode: 0o644, body: "pullkit\n"},
	)
	manifestType, configType, layerType := types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer
	if oci {
		manifestType, configType, layerType = types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer
		if comp == compression.ZStd {
			layerType = types.OCILayerZStd
		}
	}
	img := mutate.MediaType(empty.Image, manifestType)
	img = mutate.ConfigMediaType(img, configType)
	for _, b := range [][]byte{base, top} {
		b := b
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
			tarball.WithCompression(comp), tarball.WithMediaType(layerType))
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestUnpackAgreesWithUmoci pulls images from the real registry with their layers applied
// while they download (a root filesystem, and snapshots), and compares the tree with
// what umoci unpack makes of the same image: schema 2, OCI, signed schema 1 (skopeo's),
// and zstd (umoci 0.4.7 does not read zstd, so the zstd image is compared with umoci's
// tree of the same layers in gzip).
func TestUnpackAgreesWithUmoci(t *testing.T) {
	umoci, _ := exec.LookPath("umoci")
	if umoci == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("umoci is not installed, and CI must run this test")
		}
		t.Skip("umoci is not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("compares ownership and setuid bits: needs root, as umoci's rootful unpack does")
	}
	r := regtest.Start(t)
	r.Push(t, "agree/s2:v1", agreementImage(t, false, compression.GZip))
	r.Push(t, "agree/oci:v1", agreementImage(t, true, compression.GZip))
	r.Push(t, "agree/zstd:v1", agreementImage(t, true, compression.ZStd))
	r.Skopeo(t, "v2s1", "agree/s2:v1", "agree/s1:v1")
	c := toolsClient(t, r)
	dir := t.TempDir()
	st, err := store.OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tc := range []struct{ ref, umociRef string }{
		{"agree/s2:v1", "agree/s2:v1"}, {"agree/oci:v1", "agree/oci:v1"},
		{"agree/s1:v1", "agree/s1:v1"}, {"agree/zstd:v1", "agree/oci:v1"},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "rootfs")
			rootfs, err := unpack.NewRootfs(root)
			if err != nil {
				t.Fatal(err)
			}
			defer rootfs.Abort()
			pipe := rootfs.NewPipeline(ctx)
			img, err := c.Pull(ctx, r.Ref(tc.ref), st, puller.WithLayerTees(pipe.Tee))
			if err != nil {
				pipe.Abort(err)
				t.Fatal(err)
			}
			if _, err := pipe.Wait(); err != nil {
				t.Fatal(err)
			}
			if err := rootfs.Commit(); err != nil {
				t.Fatal(err)
			}
			if tc.umociRef != tc.ref {
				if _, err := c.Pull(ctx, r.Ref(tc.umociRef), st); err != nil {
					t.Fatal(err)
				}
			}
			bundle := filepath.Join(t.TempDir(), "bundle")
			if out, err := exec.Command(umoci, "unpack", "--image", dir+":"+r.Ref(tc.umociRef), bundle).CombinedOutput(); err != nil {
				t.Fatalf("umoci unpack: %v\n%s", err, out)
			}
			ours, ourLines := treeDigest(t, root)
			theirs, theirLines := treeDigest(t, filepath.Join(bundle, "rootfs"))
			if ours != theirs {
				t.Errorf("%s (%d layers): our tree differs from umoci's:\nours:\n%s\numoci:\n%s", tc.ref, len(img.Layers), strings.Join(ourLines, "\n"), strings.Join(theirLines, "\n"))
			}

			// The same layers as snapshots: the base's chain ID is its diffID, and a
			// second pull of an image sharing it reuses the snapshot.
			snaps, err := unpack.OpenSnapshots(filepath.Join(t.TempDir(), "snaps"))
			if err != nil {
				t.Fatal(err)
			}
			for round := 0; round < 2; round++ {
				sp := snaps.NewPipeline(ctx)
				if _, err := c.Pull(ctx, r.Ref(tc.ref), st, puller.WithLayerTees(sp.Tee)); err != nil {
					sp.Abort(err)
					t.Fatal(err)
				}
				res, err := sp.Wait()
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range res {
					if x.Reused != (round == 1) {
						t.Errorf("round %d: snapshot %s reused %v", round, x.ChainID, x.Reused)
					}
				}
			}
		})
	}
}
