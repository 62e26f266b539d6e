package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/testdata"
)

// demoRepo is the repository the demo registry serves.
const demoRepo = "demo/hello-world"

// The real hello-world blobs the demo serves (testdata/SOURCES.md).
const (
	amd64Manifest = digest.Digest("sha256:f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4")
	amd64Config   = digest.Digest("sha256:feb5d9fea6a5e9606aa995e879d862b825965ba48de054caab5ef356dc6b3412")
	amd64Layer    = digest.Digest("sha256:2db29710123e3e53a794f2694094b9b4338aa9ee5c40b930cb8063a1be392c54")
	arm64Manifest = digest.Digest("sha256:411caf340c828657e915a83ed561a79d2b8150dabad4dc079d881cbfe6f86afe")
	arm64Config   = digest.Digest("sha256:ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44")
	arm64Layer    = digest.Digest("sha256:12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43")
)

// emptyGzipLayer is the 32-byte gzip of an empty tar whose digest is
// manifest.EmptyGzipLayer; schema 1 images list it for steps that change no file.
var emptyGzipLayer = []byte{31, 139, 8, 0, 0, 9, 110, 136, 0, 255, 98, 24, 5, 163, 96, 20, 140, 88, 0, 8, 0, 0, 255, 255, 46, 175, 181, 239, 0, 4, 0, 0}

// demoImage is one image the demo registry serves.
type demoImage struct {
	tag   string
	title string
	note  string
	// only is the platform of an image that is not in an index: the only one it can be
	// pulled for. nil for a list or an index.
	only *platforms.Platform
}

// demoRegistry is pullkit's own test registry (pullkittest, which answers as the CNCF
// distribution registry does) on a loopback port, seeded.
type demoRegistry struct {
	host   string
	reg    *pullkittest.Registry
	images []demoImage
}

func (d *demoRegistry) close() { d.reg.Close() }

// startDemo starts the registry and seeds it with one image per manifest format, all
// built from the real hello-world blobs in testdata.
func startDemo() (*demoRegistry, error) {
	reg, err := pullkittest.Start()
	if err != nil {
		return nil, fmt.Errorf("demo registry: %w", err)
	}
	d := &demoRegistry{host: reg.Host(), reg: reg}
	if err := d.seed(); err != nil {
		d.close()
		return nil, fmt.Errorf("demo registry: seed: %w", err)
	}
	return d, nil
}

func (d *demoRegistry) seed() error {
	ctr, err := testdata.Blobs(testdata.HelloWorldCtrExport)
	if err != nil {
		return err
	}
	d25, err := testdata.Blobs(testdata.HelloWorldDocker25Save)
	if err != nil {
		return err
	}
	blob := func(m map[digest.Digest][]byte, dg digest.Digest) ([]byte, error) {
		if b, ok := m[dg]; ok {
			return b, nil
		}
		return nil, fmt.Errorf("embedded testdata has no blob %s", dg)
	}
	var raw = map[digest.Digest][]byte{}
	for _, src := range []struct {
		m  map[digest.Digest][]byte
		dg digest.Digest
	}{{ctr, amd64Manifest}, {ctr, amd64Config}, {ctr, amd64Layer}, {d25, arm64Manifest}, {d25, arm64Config}, {d25, arm64Layer}} {
		b, err := blob(src.m, src.dg)
		if err != nil {
			return err
		}
		raw[src.dg] = b
	}
	for _, b := range [][]byte{raw[amd64Config], raw[amd64Layer], raw[arm64Config], raw[arm64Layer], emptyGzipLayer} {
		if err := d.putBlob(b); err != nil {
			return err
		}
	}

	// Docker schema 2: Docker Hub's own hello-world linux/amd64 manifest, bytes as served.
	if err := d.putManifest("schema2", manifest.MediaTypeDockerSchema2, raw[amd64Manifest]); err != nil {
		return err
	}
	// OCI manifest: the linux/arm64 manifest Docker 25's `docker save` wrote.
	if err := d.putManifest("oci", manifest.MediaTypeOCIManifest, raw[arm64Manifest]); err != nil {
		return err
	}

	// Docker manifest list: the amd64 manifest above and the arm64 OCI manifest converted
	// to schema 2 (its layer is an uncompressed tar).
	amd64, err := manifest.Parse(raw[amd64Manifest], manifest.MediaTypeDockerSchema2)
	if err != nil {
		return err
	}
	arm64, err := manifest.Parse(raw[arm64Manifest], manifest.MediaTypeOCIManifest)
	if err != nil {
		return err
	}
	arm64Schema2, err := manifest.ConvertImage(arm64, manifest.MediaTypeDockerSchema2)
	if err != nil {
		return err
	}
	list, err := indexManifest(manifest.MediaTypeDockerManifestList,
		manifest.Descriptor{MediaType: manifest.MediaTypeDockerSchema2, Digest: amd64Manifest, Size: int64(len(raw[amd64Manifest])),
			Platform: &platforms.Platform{OS: "linux", Architecture: "amd64"}},
		manifest.Descriptor{MediaType: manifest.MediaTypeDockerSchema2, Digest: digest.FromBytes(arm64Schema2), Size: int64(len(arm64Schema2)),
			Platform: &platforms.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}})
	if err != nil {
		return err
	}
	if err := d.putManifest(digest.FromBytes(arm64Schema2).String(), manifest.MediaTypeDockerSchema2, arm64Schema2); err != nil {
		return err
	}
	if err := d.putManifest("list", manifest.MediaTypeDockerManifestList, list); err != nil {
		return err
	}

	// OCI index: the amd64 manifest converted to OCI and the arm64 OCI manifest above.
	amd64OCI, err := manifest.ConvertImage(amd64, manifest.MediaTypeOCIManifest)
	if err != nil {
		return err
	}
	index, err := indexManifest(manifest.MediaTypeOCIIndex,
		manifest.Descriptor{MediaType: manifest.MediaTypeOCIManifest, Digest: digest.FromBytes(amd64OCI), Size: int64(len(amd64OCI)),
			Platform: &platforms.Platform{OS: "linux", Architecture: "amd64"}},
		manifest.Descriptor{MediaType: manifest.MediaTypeOCIManifest, Digest: arm64Manifest, Size: int64(len(raw[arm64Manifest])),
			Platform: &platforms.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}})
	if err != nil {
		return err
	}
	if err := d.putManifest(digest.FromBytes(amd64OCI).String(), manifest.MediaTypeOCIManifest, amd64OCI); err != nil {
		return err
	}
	if err := d.putManifest("index", manifest.MediaTypeOCIIndex, index); err != nil {
		return err
	}

	// Signed schema 1: the amd64 image converted as a registry does for old clients,
	// signed now with an ephemeral key.
	s1, err := manifest.ToSchema1(amd64, raw[amd64Config], demoRepo, "schema1", nil)
	if err != nil {
		return err
	}
	if err := d.putManifest("schema1", manifest.MediaTypeDockerSchema1Signed, s1); err != nil {
		return err
	}

	amd64Only := &platforms.Platform{OS: "linux", Architecture: "amd64"}
	arm64Only := &platforms.Platform{OS: "linux", Architecture: "arm64"}
	d.images = []demoImage{
		{"schema1", "Docker schema 1, signed", "layers newest first in the manifest, base first here; canonical digest = sha256 of the signed payload; no config blob", amd64Only},
		{"schema2", "Docker schema 2", "Docker Hub's hello-world linux/amd64 manifest, bytes as served", amd64Only},
		{"list", "Docker manifest list", "linux/amd64 and linux/arm64/v8; the platform is chosen, then its manifest fetched by digest and verified", nil},
		{"oci", "OCI image manifest", "written by Docker 25's docker save for linux/arm64; uncompressed layer", arm64Only},
		{"index", "OCI image index", "linux/amd64 and linux/arm64/v8", nil},
	}
	return nil
}

// indexManifest encodes a manifest list or OCI index.
func indexManifest(mediaType string, entries ...manifest.Descriptor) ([]byte, error) {
	return json.MarshalIndent(struct {
		SchemaVersion int                   `json:"schemaVersion"`
		MediaType     string                `json:"mediaType"`
		Manifests     []manifest.Descriptor `json:"manifests"`
	}{2, mediaType, entries}, "", "   ")
}

func (d *demoRegistry) putBlob(b []byte) error {
	d.reg.PutBlob(demoRepo, b)
	return nil
}

func (d *demoRegistry) putManifest(ident, mediaType string, b []byte) error {
	d.reg.PutManifest(demoRepo, ident, mediaType, b)
	return nil
}

// runDemo serves the demo images and pulls each one as o asks: for the platform given
// with --platform (refusing, as it should, an image that is not for it), or else for
// this machine's platform, and an image that exists for one other platform only for
// that one, as a user would ask for it with --platform.
func runDemo(ctx context.Context, o *options, popts []puller.Option, call []puller.PullOption, stdout io.Writer) error {
	d, err := startDemo()
	if err != nil {
		return err
	}
	defer d.close()
	explicit := o.platform != ""
	want := platforms.Default()
	note := ""
	if explicit {
		want, _ = platforms.Parse(o.platform)
	} else if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		want = platforms.Platform{OS: "linux", Architecture: "amd64"}
		call = append(call, puller.WithPlatform(want))
		note = fmt.Sprintf(" (this machine is %s; the demo images are for amd64 and arm64, so linux/amd64 is chosen)", runtime.GOARCH)
	}
	// own marks the images pulled for their own platform rather than want.
	own := make([]bool, len(d.images))
	var others []string
	for i, im := range d.images {
		if !explicit && im.only != nil && !platforms.Only(want).Match(*im.only) {
			own[i] = true
			others = append(others, fmt.Sprintf("%s exists only for %s, so it is pulled for that platform", im.tag, im.only))
		}
	}
	// The demo registry needs no credentials; never consult the user's.
	c, err := puller.New(append(popts, puller.WithKeychain(authn.NewMultiKeychain()))...)
	if err != nil {
		return err
	}
	if !o.json && !o.resolve {
		how := fmt.Sprintf("for %s%s", want, note)
		if explicit {
			how += " (an image that is not for it is refused)"
		}
		if len(others) > 0 {
			how += "; " + strings.Join(others, "; ")
		}
		fmt.Fprintf(stdout, "pull: no reference given, so this serves testdata's hello-world images in every manifest format\n"+
			"from pullkit's test registry (pullkittest) on %s and pulls each one %s.\n", d.host, how)
	}
	var imgs []*manifest.Image
	var failed, refused []string
	pulled := map[string][]string{} // platform -> tags pulled for it
	var order []string
	for i, im := range d.images {
		ref := d.host + "/" + demoRepo + ":" + im.tag
		icall := call
		if own[i] {
			icall = append(slices.Clone(call), puller.WithPlatform(*im.only))
		}
		if o.resolve {
			res, err := c.Resolve(ctx, ref, icall...)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s  %s\n", res.Manifest.Digest, ref)
			continue
		}
		if !o.json {
			fmt.Fprintf(stdout, "\n== %s: %s\n", im.title, im.note)
		}
		var img *manifest.Image
		var written string
		if o.output != "" || o.unpack != "" || o.snapshots != "" {
			img, written, err = demoOutput(ctx, o, c, icall, ref, im.tag)
		} else {
			img, err = c.Inspect(ctx, ref, icall...)
		}
		if errors.Is(err, pullkit.ErrNoMatch) && explicit {
			// A single-platform image for another platform is refused, as it should be.
			refused = append(refused, im.tag)
			if !o.json {
				fmt.Fprintf(stdout, "%s\n  refused, as asked: %s\n", ref, oneLine(err.Error()))
			}
			continue
		}
		if err != nil {
			if o.json {
				return err
			}
			fmt.Fprintf(stdout, "%s\n  FAILED: %s\n", ref, oneLine(err.Error()))
			failed = append(failed, im.tag)
			continue
		}
		plat := "an unknown platform"
		if img.Platform != nil {
			plat = img.Platform.String()
		}
		if _, ok := pulled[plat]; !ok {
			order = append(order, plat)
		}
		pulled[plat] = append(pulled[plat], im.tag)
		if o.json {
			imgs = append(imgs, img)
			continue
		}
		printImage(stdout, img)
		if written != "" {
			fmt.Fprintln(stdout, "  written    "+written)
		} else {
			fmt.Fprintln(stdout, "  "+notDownloaded)
		}
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		out := make([]jsonImage, len(imgs))
		for i, img := range imgs {
			out[i] = jsonModel(img)
		}
		return enc.Encode(out)
	}
	if len(failed) > 0 {
		return fmt.Errorf("demo: %d of %d pulls failed: %v", len(failed), len(d.images), failed)
	}
	if o.resolve {
		return nil
	}
	var per []string
	for _, plat := range order {
		per = append(per, fmt.Sprintf("%s for %s", strings.Join(pulled[plat], ", "), plat))
	}
	n := len(d.images) - len(refused)
	if len(refused) == 0 {
		fmt.Fprintf(stdout, "\nAll %d formats pulled and verified: %s.\n", n, strings.Join(per, "; "))
	} else {
		fmt.Fprintf(stdout, "\n%d of %d formats pulled and verified: %s. Refused, as asked: %s (not for %s).\n",
			n, len(d.images), strings.Join(per, "; "), strings.Join(refused, ", "), want)
	}
	other := "linux/arm64"
	if want.Architecture == "arm64" {
		other = "linux/amd64"
	}
	self := selfCommand()
	fmt.Fprintf(stdout, "Try also:\n  %s --platform %s\n  %s --json\n  %s --resolve\n  %s --output %s\n",
		self, other, self, self, self, filepath.Join(os.TempDir(), "pull-demo"))
	return nil
}

// demoOutput writes one demo image as o asks: into the one OCI layout o.output, as one
// docker-archive tar per image in the directory o.output, or unpacked into a directory
// per image under the directory given.
func demoOutput(ctx context.Context, o *options, c *puller.Client, call []puller.PullOption, ref, tag string) (*manifest.Image, string, error) {
	switch {
	case o.unpack != "" || o.snapshots != "":
		per := *o
		if o.unpack != "" {
			if err := os.MkdirAll(o.unpack, 0o755); err != nil {
				return nil, "", err
			}
			per.unpack = filepath.Join(o.unpack, tag)
		}
		img, written, err := unpackOutput(ctx, &per, c, call, ref)
		o.partial = per.partial
		return img, written, err
	case o.format == "docker-archive":
		if err := os.MkdirAll(o.output, 0o755); err != nil {
			return nil, "", err
		}
		return writeOutput(ctx, o, c, call, ref, filepath.Join(o.output, tag+".tar"))
	}
	return writeOutput(ctx, o, c, call, ref, o.output)
}

// selfCommand is how the user can run this command again: "go run" with the package
// when it was built by go run (or go test), else the program as it was invoked.
func selfCommand() string {
	exe := os.Args[0]
	if !strings.Contains(filepath.ToSlash(exe), "/go-build") {
		return exe
	}
	if _, err := os.Stat(filepath.Join("examples", "pull", "main.go")); err == nil {
		return "go run ./examples/pull"
	}
	return "go run github.com/pullkit/pullkit/examples/pull"
}
