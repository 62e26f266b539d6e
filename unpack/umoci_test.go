//go:build linux

package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/internal/ztest"
)

// lookTool finds a tool the test compares against: missing, the test is skipped, unless
// CI is set.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found: %v", name, err)
		}
		t.Skipf("%s not found", name)
	}
	return p
}

// ociLayout writes an OCI image layout in dir with one image, named name, made of blobs
// (each a layer blob as stored) with their diffIDs and media types.
func ociLayout(t *testing.T, dir, name string, blobs [][]byte, diffIDs []digest.Digest, mediaTypes []string) {
	t.Helper()
	put := func(b []byte) digest.Digest {
		d := digest.FromBytes(b)
		p := filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, b, 0o644))
		return d
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      digest.Digest     `json:"digest"`
		Size        int               `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "config": map[string]any{},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	must(t, err)
	m := map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: put(config), Size: len(config)},
	}
	var layers []desc
	for i, b := range blobs {
		layers = append(layers, desc{MediaType: mediaTypes[i], Digest: put(b), Size: len(b)})
	}
	m["layers"] = layers
	manifest, err := json.Marshal(m)
	must(t, err)
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []desc{{
		MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: put(manifest), Size: len(manifest),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": name},
	}}})
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644))
}

// umociCases are the layers compared with umoci: every case of the table tests that
// unpacks, an image using every whiteout form, and a layer of every entry type and
// attribute.
func umociCases() []treeCase {
	var cases []treeCase
	for _, c := range append(append([]treeCase(nil), escapeCases...), semanticCases...) {
		switch {
		case c.err != nil:
		case c.name == "reserved whiteout names are ignored":
			// umoci 0.4.7 unpacks aufs's .wh..wh.plnk directory as a directory; it is not
			// part of the image (containerd and moby skip it too).
		case c.name == "hardlink replaces its own name":
			// umoci 0.4.7 removes the file before linking it to itself, and fails.
		default:
			cases = append(cases, c)
		}
	}
	cases = append(cases, treeCase{name: "whiteout forms", layers: stackLayers()})
	cases = append(cases, treeCase{name: "every type", layers: [][]ent{{
		{name: "./", typ: tar.TypeDir, mode: 0o711},
		dir("d").withMode(0o751).withOwner(3, 4),
		file("f", "data").withMode(0o4750).withOwner(1000, 2000).withXattr("user.test", "1").withXattr("security.capability", capNetBindService()),
		file("empty", "").withMode(0o600),
		file("zeros", "a"+string(make([]byte, 1<<20))+"z"),
		file("d/c", "child").withOwner(65534, 65534),
		symlink("s", "f").withOwner(5, 6),
		symlink("abs", "/etc/passwd"),
		symlink("dangling", "no/such"),
		{name: "p", typ: tar.TypeFifo, mode: 0o620, uid: 7, gid: 8},
		{name: "null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		{name: "loop0", typ: tar.TypeBlock, mode: 0o660, major: 7, minor: 0, gid: 6},
		hardlink("h", "f"), hardlink("d/h2", "f"),
		dir("sticky").withMode(0o1777), dir("sgid").withMode(0o2775).withOwner(0, 50),
		file(strings.Repeat("n", 255), "long"),
		file("bad\xff\xfename", "bytes"),
		file(strings.Repeat("p", 120)+"/"+strings.Repeat("q", 120)+"/"+strings.Repeat("r", 120), "pax path"),
		file("implicit/parent/file", "x"),
	}, {
		file("f", "replaced").withMode(0o644), dir("d").withMode(0o700),
		hardlink("d/h3", "d/h2"), whiteout("h"), file("d/new", "n"),
	}}})
	return cases
}

// TestAgainstUmoci unpacks the same images with umoci (which must run as root here) and
// compares the trees: paths, types, modes, sizes, contents, link targets, device
// numbers, ownership, link counts and extended attributes.
func TestAgainstUmoci(t *testing.T) {
	umoci := lookTool(t, "umoci")
	requireRoot(t)
	for _, c := range umociCases() {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			var blobs [][]byte
			var diffIDs []digest.Digest
			var types []string
			r, err := NewRootfs(e.root)
			must(t, err)
			defer r.Abort()
			for i, l := range c.layers {
				l = append([]ent(nil), l...)
				for j := range l {
					l[j].name, l[j].link = e.expand(l[j].name), e.expand(l[j].link)
				}
				b := tarOf(t, l...)
				diffIDs = append(diffIDs, diffIDOf(b))
				// umoci 0.4.7 reads gzip and plain layers (not zstd).
				if i%2 == 0 {
					b = ztest.Gzip(t, b)
					types = append(types, "application/vnd.oci.image.layer.v1.tar+gzip")
				} else {
					types = append(types, "application/vnd.oci.image.layer.v1.tar")
				}
				blobs = append(blobs, b)
				if _, err := r.Apply(context.Background(), digest.FromBytes(b), diffIDs[i], bytes.NewReader(b)); err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
			}
			must(t, r.Commit())
			e.checkOutside(t)

			scratch := t.TempDir()
			layout, bundle := filepath.Join(scratch, "layout"), filepath.Join(scratch, "bundle")
			ociLayout(t, layout, "test", blobs, diffIDs, types)
			out, err := exec.Command(umoci, "unpack", "--image", layout+":test", bundle).CombinedOutput()
			if err != nil {
				t.Fatalf("umoci unpack: %v\n%s", err, out)
			}
			e.checkOutside(t)
			ours, theirs := scan(t, e.root), scan(t, filepath.Join(bundle, "rootfs"))
			if a, b := formatTree(ours), formatTree(theirs); a != b {
				t.Fatalf("trees differ:\nours:\n%s\numoci:\n%s", a, b)
			}
		})
	}
}
