package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/manifest"
)

// runCLI runs the program in-process.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// demoHost starts the seeded demo registry for the test and returns its host.
func demoHost(t *testing.T) string {
	t.Helper()
	d, err := startDemo()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	return d.host
}

func keys(m map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

func TestDemoPullsEveryFormat(t *testing.T) {
	code, out, errOut := runCLI(t)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
	}
	for _, want := range []string{
		"Docker schema 1, signed", manifest.MediaTypeDockerSchema1Signed,
		"Docker schema 2", manifest.MediaTypeDockerSchema2,
		"Docker manifest list", manifest.MediaTypeDockerManifestList,
		"OCI image manifest", manifest.MediaTypeOCIManifest,
		"OCI image index", manifest.MediaTypeOCIIndex,
		"diffID sha256:e07ee1baac5fae6a26f30cabfe54a36d3402f96afda318fe0a96cec4ca393359",
		"All 5 formats pulled and verified",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FAILED") {
		t.Errorf("demo output reports a failure:\n%s", out)
	}
}

func TestDemoJSON(t *testing.T) {
	code, out, errOut := runCLI(t, "--json", "--platform", "linux/arm64")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var imgs []jsonImage
	if err := json.Unmarshal([]byte(out), &imgs); err != nil {
		t.Fatalf("stdout is not a JSON array of images: %v\n%s", err, out)
	}
	var types []string
	for _, img := range imgs {
		types = append(types, img.MediaType)
	}
	// The schema 1 and schema 2 images are amd64 only: asked for arm64, they are refused
	// (and the demo says so) rather than pulled for the wrong platform.
	want := []string{manifest.MediaTypeDockerManifestList, manifest.MediaTypeOCIManifest, manifest.MediaTypeOCIIndex}
	if !slices.Equal(types, want) {
		t.Errorf("media types %v, want %v", types, want)
	}
	// The list and the index were narrowed to arm64.
	for _, img := range imgs {
		if img.Platform == nil || img.Platform.Architecture != "arm64" {
			t.Errorf("%s: platform %v, want arm64", img.Reference, img.Platform)
		}
	}
}

// TestJSONShape checks the --json contract (README, "The CLI"), key by key.
func TestJSONShape(t *testing.T) {
	host := demoHost(t)
	ref := host + "/demo/hello-world:list"
	code, out, errOut := runCLI(t, "--json", "--platform", "linux/amd64", ref)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
	}
	if got, want := keys(m), []string{"config", "digest", "layers", "manifest", "mediaType", "platform", "reference"}; !slices.Equal(got, want) {
		t.Errorf("top-level keys %v, want %v", got, want)
	}
	if m["reference"] != ref || m["mediaType"] != manifest.MediaTypeDockerManifestList {
		t.Errorf("reference %v mediaType %v", m["reference"], m["mediaType"])
	}
	for _, k := range []string{"manifest", "config"} {
		sub, ok := m[k].(map[string]any)
		if !ok {
			t.Fatalf("%s is %T", k, m[k])
		}
		if got := keys(sub); !slices.Equal(got, []string{"digest", "mediaType", "size"}) {
			t.Errorf("%s keys %v", k, got)
		}
	}
	if m["manifest"].(map[string]any)["digest"] != amd64Manifest.String() || m["config"].(map[string]any)["digest"] != amd64Config.String() {
		t.Errorf("manifest %v config %v", m["manifest"], m["config"])
	}
	if p, _ := m["platform"].(map[string]any); p["os"] != "linux" || p["architecture"] != "amd64" {
		t.Errorf("platform %v", m["platform"])
	}
	layers, _ := m["layers"].([]any)
	if len(layers) != 1 {
		t.Fatalf("layers %v", m["layers"])
	}
	l := layers[0].(map[string]any)
	if got := keys(l); !slices.Equal(got, []string{"diffID", "digest", "empty", "mediaType", "size"}) {
		t.Errorf("layer keys %v", got)
	}
	if l["digest"] != amd64Layer.String() || l["empty"] != false || l["size"] != float64(2479) {
		t.Errorf("layer %v", l)
	}
	if d, err := digest.Parse(m["digest"].(string)); err != nil || d == amd64Manifest {
		t.Errorf("digest %v should be the list's own", m["digest"])
	}
}

func TestResolvePrintsPlatformManifestDigest(t *testing.T) {
	host := demoHost(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--resolve", "--platform", "linux/amd64", host + "/demo/hello-world:list"}, amd64Manifest.String()},
		{[]string{"--resolve", "--platform", "linux/arm64/v8", host + "/demo/hello-world:index"}, arm64Manifest.String()},
		// The image is for linux/arm64: --resolve, like the pull, takes it only for that
		// platform (issue 22).
		{[]string{host + "/demo/hello-world:oci", "--resolve", "--platform", "linux/arm64"}, arm64Manifest.String()}, // flags after the reference
		{[]string{"--resolve", "--platform", "linux/arm64", host + "/demo/hello-world@" + arm64Manifest.String()}, arm64Manifest.String()},
		{[]string{"--plain-http", "--resolve", host + "/demo/hello-world:schema2"}, amd64Manifest.String()},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		if code != 0 || errOut != "" || out != tc.want+"\n" {
			t.Errorf("pull %v: exit %d, stdout %q, stderr %q; want %s", tc.args, code, out, errOut, tc.want)
		}
	}
	// Signed schema 1: the digest printed is the one the registry answers to (the demo
	// registry, like distribution, answers to the canonical payload digest; others to the
	// sha256 of the bytes, which the puller's tests cover), and pulling by it gives the
	// model, whose digest is the canonical one.
	code, out, _ := runCLI(t, "--resolve", host+"/demo/hello-world:schema1")
	if code != 0 {
		t.Fatalf("resolve schema1: exit %d", code)
	}
	pinned := strings.TrimSpace(out)
	code, out, errOut := runCLI(t, "--json", host+"/demo/hello-world@"+pinned)
	var img jsonImage
	if code != 0 || json.Unmarshal([]byte(out), &img) != nil {
		t.Fatalf("pull by the resolved digest %s: exit %d, stderr %q", pinned, code, errOut)
	}
	const canonical = "sha256:886ab4eb75859b2161ab62fb1558bc68950ced8ad9cf909f59ab9966feadb35a"
	if img.Digest != canonical {
		t.Errorf("schema 1: resolved %s, model digest %s; want the canonical %s", pinned, img.Digest, canonical)
	}
}

// TestErrorsAreOneLine runs every mistake a user can make: non-zero exit, nothing on
// stdout, one line on stderr that names what was expected.
func TestErrorsAreOneLine(t *testing.T) {
	host := demoHost(t)
	list := host + "/demo/hello-world:list"
	noDir := filepath.Join(t.TempDir(), "no", "such", "dir")
	for _, tc := range []struct {
		args     []string
		code     int
		mentions []string
	}{
		{[]string{"--bogus", list}, 2, []string{"unknown flag --bogus", "--help"}},
		{[]string{"--outptu", t.TempDir(), list}, 2, []string{"unknown flag --outptu", "did you mean --output?"}},
		{[]string{list, "--output"}, 2, []string{"--output needs a value"}},
		{[]string{"--format", "oci", list}, 2, []string{"--format needs --output"}},
		{[]string{"--output", t.TempDir(), "--format", "tar", list}, 2, []string{`"tar"`, "oci or docker-archive"}},
		{[]string{"--jobs", "0", list}, 2, []string{"--jobs 0"}},
		{[]string{"--conns-per-host", "-1", list}, 2, []string{"--conns-per-host -1"}},
		{[]string{"--cancel-grace", "-1s", list}, 2, []string{"--cancel-grace -1s"}},
		{[]string{"--resolve", "--output", t.TempDir(), list}, 2, []string{"--resolve", "--output"}},
		{[]string{"--resolve", "--json", list}, 2, []string{"--resolve", "--json"}},
		{[]string{list, list}, 2, []string{"one reference expected"}},
		{[]string{"--platform", "linux", list}, 2, []string{"--platform", `"linux"`, "os/arch"}},
		{[]string{host + "/demo/hello-world:nope"}, 1, []string{host + "/demo/hello-world:nope", `tag "nope"`, "404"}},
		{[]string{host + "/demo/hello-world@" + digest.FromString("x").String()}, 1, []string{digest.FromString("x").String(), "MANIFEST_UNKNOWN"}},
		{[]string{"--platform", "linux/s390x", list}, 1, []string{list, "linux/s390x", "linux/amd64", "linux/arm64"}},
		{[]string{"Not A Reference"}, 2, []string{"Not A Reference", "invalid reference", "[registry/]repository[:tag|@digest]"}},
		{[]string{"--output", t.TempDir(), "registry.example/UPPER:case"}, 2, []string{"registry.example/UPPER:case", "invalid reference"}},
		{[]string{"--output", filepath.Join(noDir, "x.tar"), "--format", "docker-archive", list}, 1, []string{list, "docker-archive", "x.tar", "cannot create files in " + noDir + ": no such file"}},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		if code != tc.code || out != "" {
			t.Errorf("pull %v: exit %d (want %d), stdout %q", tc.args, code, tc.code, out)
		}
		if strings.Count(errOut, "\n") != 1 || !strings.HasSuffix(errOut, "\n") || !strings.HasPrefix(errOut, "pull: ") {
			t.Errorf("pull %v: stderr is not one line: %q", tc.args, errOut)
		}
		for _, m := range tc.mentions {
			if !strings.Contains(errOut, m) {
				t.Errorf("pull %v: stderr %q does not mention %q", tc.args, errOut, m)
			}
		}
		// A usage error is short (the synopsis is --help's, not every error's), and no
		// error names a scratch file of the command's own.
		if tc.code == 2 && len(errOut) > 240 {
			t.Errorf("pull %v: a usage error of %d characters: %q", tc.args, len(errOut), errOut)
		}
		if strings.Contains(errOut, ".pull-blobs") || strings.Contains(errOut, ".tmp-") {
			t.Errorf("pull %v: stderr names an internal file: %q", tc.args, errOut)
		}
	}
}

// TestOutputOCI writes images into an OCI layout: diffIDs computed for schema 1, its
// config synthesised, every blob the stored manifest names present.
func TestOutputOCI(t *testing.T) {
	host := demoHost(t)
	dir := filepath.Join(t.TempDir(), "layout")
	code, out, errOut := runCLI(t, "--output", dir, "--json", "--jobs", "2", host+"/demo/hello-world:schema1")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var img jsonImage
	if err := json.Unmarshal([]byte(out), &img); err != nil {
		t.Fatal(err)
	}
	const diffID = "sha256:e07ee1baac5fae6a26f30cabfe54a36d3402f96afda318fe0a96cec4ca393359"
	if len(img.Layers) != 2 || img.Layers[0].DiffID != diffID || img.Layers[0].Size == nil || *img.Layers[0].Size != 2479 || !img.Layers[1].Empty {
		t.Errorf("layers %+v, want the base layer with diffID %s and size 2479", img.Layers, diffID)
	}
	if img.Config.Digest == "" || img.Config.MediaType != manifest.MediaTypeOCIConfig {
		t.Errorf("config %+v, want the synthesised one", img.Config)
	}
	code, _, errOut = runCLI(t, "--output", dir, "--platform", "linux/arm64", host+"/demo/hello-world:list")
	if code != 0 {
		t.Fatalf("second pull into the layout: exit %d, %s", code, errOut)
	}

	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var index struct {
		Manifests []manifest.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &index); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range index.Manifests {
		names = append(names, d.Annotations["org.opencontainers.image.ref.name"])
		mraw, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", d.Digest.Encoded()))
		if err != nil {
			t.Fatalf("index entry %s: %v", d.Digest, err)
		}
		m, err := manifest.Verify(mraw, d.MediaType, d.Digest)
		if err != nil {
			t.Fatalf("stored manifest %s: %v", d.Digest, err)
		}
		for _, b := range append([]manifest.Descriptor{*m.Config}, layerDescs(m)...) {
			if b.Digest == manifest.EmptyGzipLayer {
				t.Errorf("manifest %s lists the schema 1 empty layer", d.Digest)
			}
			data, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", b.Digest.Encoded()))
			if err != nil || digest.FromBytes(data) != b.Digest || int64(len(data)) != b.Size {
				t.Errorf("blob %s of %s missing or wrong (%v)", b.Digest, d.Digest, err)
			}
		}
	}
	// A tag naming a list also names the platform's image by its platform name
	// (store.PlatformName), so that another platform of the tag keeps its own.
	if !slices.Equal(names, []string{host + "/demo/hello-world:schema1", host + "/demo/hello-world:list@linux/arm64/v8", host + "/demo/hello-world:list"}) {
		t.Errorf("index.json names %v", names)
	}
}

func layerDescs(m *manifest.Manifest) []manifest.Descriptor {
	var out []manifest.Descriptor
	for _, l := range m.Layers {
		out = append(out, l.Descriptor())
	}
	return out
}

// TestOutputDockerArchive writes docker-archive tars and reads them back: the config
// under its digest, one layer.tar per diffID whose content hashes to it, and the tag.
func TestOutputDockerArchive(t *testing.T) {
	host := demoHost(t)
	for _, tag := range []string{"schema1", "list"} {
		ref := host + "/demo/hello-world:" + tag
		path := filepath.Join(t.TempDir(), tag+".tar")
		code, out, errOut := runCLI(t, "--output", path, "--format", "docker-archive", "--json", "--platform", "linux/amd64", ref)
		if code != 0 || errOut != "" {
			t.Fatalf("%s: exit %d, stderr %q", tag, code, errOut)
		}
		var img jsonImage
		if err := json.Unmarshal([]byte(out), &img); err != nil {
			t.Fatal(err)
		}
		members := readTar(t, path)
		var items []struct {
			Config   string
			RepoTags []string
			Layers   []string
		}
		if err := json.Unmarshal(members["manifest.json"], &items); err != nil || len(items) != 1 {
			t.Fatalf("%s: manifest.json %q: %v", tag, members["manifest.json"], err)
		}
		it := items[0]
		if !slices.Equal(it.RepoTags, []string{ref}) {
			t.Errorf("%s: RepoTags %v, want [%s]", tag, it.RepoTags, ref)
		}
		if cfg := members[it.Config]; digest.FromBytes(cfg).Encoded()+".json" != it.Config || digest.FromBytes(cfg) != img.Config.Digest {
			t.Errorf("%s: config member %s does not hash to its name or to %s", tag, it.Config, img.Config.Digest)
		}
		var diffIDs []digest.Digest
		for _, l := range img.Layers {
			if l.DiffID != "" {
				diffIDs = append(diffIDs, l.DiffID)
			}
		}
		if len(it.Layers) != len(diffIDs) || len(diffIDs) == 0 {
			t.Fatalf("%s: layers %v for diffIDs %v", tag, it.Layers, diffIDs)
		}
		for i, name := range it.Layers {
			if got := digest.FromBytes(members[name]); got != diffIDs[i] {
				t.Errorf("%s: %s hashes to %s, want diffID %s", tag, name, got, diffIDs[i])
			}
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("%s: archive mode %v (%v)", tag, st.Mode(), err)
		}
	}
}

func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = b
	}
}

// TestManifestFormat writes one schema 2 image into OCI layouts as each
// --manifest-format: oci by default (what skopeo reads), v2s2 as served (the registry's
// digest kept), v2s1 as a signed schema 1 conversion that verifies.
func TestManifestFormat(t *testing.T) {
	host := demoHost(t)
	ref := host + "/demo/hello-world:list"
	const served = "sha256:f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4"
	for _, tt := range []struct {
		flag, mediaType string
	}{
		{"", manifest.MediaTypeOCIManifest},
		{"oci", manifest.MediaTypeOCIManifest},
		{"v2s2", manifest.MediaTypeDockerSchema2},
		{"v2s1", manifest.MediaTypeDockerSchema1Signed},
	} {
		t.Run(tt.flag, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layout")
			args := []string{"--output", dir, "--platform", "linux/amd64"}
			if tt.flag != "" {
				args = append(args, "--manifest-format", tt.flag)
			}
			if code, _, errOut := runCLI(t, append(args, ref)...); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
			if err != nil {
				t.Fatal(err)
			}
			// The reference's name and the platform's (the tag names a list), one manifest.
			var index struct{ Manifests []manifest.Descriptor }
			if err := json.Unmarshal(raw, &index); err != nil || len(index.Manifests) != 2 || index.Manifests[0].Digest != index.Manifests[1].Digest {
				t.Fatalf("index.json %s: %v", raw, err)
			}
			d := index.Manifests[1]
			if d.MediaType != tt.mediaType {
				t.Fatalf("stored %s, want %s", d.MediaType, tt.mediaType)
			}
			mraw, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", d.Digest.Encoded()))
			if err != nil || digest.FromBytes(mraw) != d.Digest {
				t.Fatalf("manifest blob %s: %v", d.Digest, err)
			}
			m, err := manifest.Parse(mraw, d.MediaType)
			if err != nil {
				t.Fatalf("stored manifest does not parse/verify: %v", err)
			}
			switch tt.flag {
			case "v2s2":
				if d.Digest != served {
					t.Errorf("v2s2 digest %s, want the registry's %s", d.Digest, served)
				}
			case "v2s1":
				if m.Schema1 == nil || m.Schema1.Name != "demo/hello-world" || m.Schema1.Tag != "list" || len(m.Schema1.Signatures) != 1 {
					t.Errorf("schema 1 %+v", m.Schema1)
				}
			default:
				if d.Digest == served || m.Config.MediaType != manifest.MediaTypeOCIConfig {
					t.Errorf("oci: digest %s, config %+v", d.Digest, m.Config)
				}
				if _, err := exec.LookPath("skopeo"); err == nil {
					if out, err := exec.Command("skopeo", "inspect", "oci:"+dir+":"+ref).CombinedOutput(); err != nil {
						t.Errorf("skopeo cannot read the layout: %v\n%s", err, out)
					}
				} else if os.Getenv("CI") != "" {
					t.Error("skopeo is not installed, and CI must run this check")
				}
			}
		})
	}
	if code, _, errOut := runCLI(t, "--manifest-format", "v2s1", ref); code != 2 || !strings.Contains(errOut, "--manifest-format") {
		t.Errorf("--manifest-format without --output: exit %d, %q", code, errOut)
	}
}

// TestSchema1ToOCIMatchesSkopeo pulls a schema 1 image (written by skopeo --format v2s1
// into the real registry) into an OCI layout, and has skopeo convert the same schema 1
// image to OCI: the diffIDs pullkit computed while streaming are the ones skopeo wrote,
// and the layers are the same blobs.
func TestSchema1ToOCIMatchesSkopeo(t *testing.T) {
	reg := regtest.Start(t)
	reg.PushRaw(t, "conv/hello:s2", regtest.HelloWorldAMD64(t))
	reg.Skopeo(t, "v2s1", "conv/hello:s2", "conv/hello:s1")
	reg.Skopeo(t, "oci", "conv/hello:s1", "conv/hello:oci-by-skopeo")

	_, raw := reg.Get(t, "GET", "/v2/conv/hello/manifests/oci-by-skopeo", manifest.AcceptHeader)
	theirs, err := manifest.Parse(raw, manifest.MediaTypeOCIManifest)
	if err != nil {
		t.Fatal(err)
	}
	_, theirConfigRaw := reg.Get(t, "GET", "/v2/conv/hello/blobs/"+theirs.Config.Digest.String(), "")
	theirConfig, err := manifest.ParseConfig(theirConfigRaw)
	if err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "layout")
	code, out, errOut := runCLI(t, "--output", dir, "--json", reg.Ref("conv/hello:s1"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var img jsonImage
	if err := json.Unmarshal([]byte(out), &img); err != nil {
		t.Fatal(err)
	}
	if img.MediaType != manifest.MediaTypeDockerSchema1Signed {
		t.Fatalf("pulled %s, want the schema 1 skopeo wrote", img.MediaType)
	}
	ourConfigRaw, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", img.Config.Digest.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := manifest.ParseConfig(ourConfigRaw)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ours.RootFS.DiffIDs, theirConfig.RootFS.DiffIDs) || len(ours.RootFS.DiffIDs) == 0 {
		t.Errorf("diffIDs %v, skopeo wrote %v", ours.RootFS.DiffIDs, theirConfig.RootFS.DiffIDs)
	}
	if len(ours.History) != len(theirConfig.History) {
		t.Errorf("%d history entries, skopeo wrote %d", len(ours.History), len(theirConfig.History))
	}
	var oursLayers []digest.Digest
	for _, l := range img.Layers {
		if l.DiffID != "" {
			oursLayers = append(oursLayers, l.Digest)
		}
	}
	var theirLayers []digest.Digest
	for _, l := range theirs.Layers {
		theirLayers = append(theirLayers, l.Digest)
	}
	if !slices.Equal(oursLayers, theirLayers) {
		t.Errorf("layers %v, skopeo's %v", oursLayers, theirLayers)
	}
}

// TestCheckDiffIDs pulls an image whose config names the wrong diffID for its layer: the
// blob verifies against its digest, so a plain pull succeeds, and --check-diffids, which
// decompresses every layer, refuses it naming the layer.
func TestCheckDiffIDs(t *testing.T) {
	reg := regtest.Start(t)
	hello := regtest.HelloWorldAMD64(t)
	layer := hello.Blobs[1]
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []digest.Digest{digest.FromString("not this layer")}},
	})
	m, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": manifest.MediaTypeDockerSchema2,
		"config": manifest.Descriptor{MediaType: manifest.MediaTypeDockerConfig, Digest: digest.FromBytes(config), Size: int64(len(config))},
		"layers": []manifest.Descriptor{{MediaType: manifest.MediaTypeDockerLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}},
	})
	reg.PushRaw(t, "diff/lie:v1", regtest.RawImage{MediaType: manifest.MediaTypeDockerSchema2, Manifest: m, Blobs: [][]byte{config, layer}})
	ref := reg.Ref("diff/lie:v1")

	if code, _, errOut := runCLI(t, "--output", filepath.Join(t.TempDir(), "a"), ref); code != 0 {
		t.Fatalf("without --check-diffids: exit %d, %s", code, errOut)
	}
	code, _, errOut := runCLI(t, "--output", filepath.Join(t.TempDir(), "b"), "--check-diffids", ref)
	if code != 1 || !strings.Contains(errOut, "diffID") || !strings.Contains(errOut, digest.FromBytes(layer).String()) || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("with --check-diffids: exit %d, stderr %q; want one line naming the layer's diffID mismatch", code, errOut)
	}
}

// TestDirectIOFlag pulls an image with a 3 MiB layer (large enough for the direct-I/O
// path) with O_DIRECT on (the default) and off: both layouts hold the same verified blob.
func TestDirectIOFlag(t *testing.T) {
	reg := regtest.Start(t)
	layer := make([]byte, 3<<20+12345)
	for i := range layer {
		layer[i] = byte(i*7 + i>>13)
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []digest.Digest{digest.FromBytes(layer)}},
	})
	m, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": manifest.MediaTypeDockerSchema2,
		"config": manifest.Descriptor{MediaType: manifest.MediaTypeDockerConfig, Digest: digest.FromBytes(config), Size: int64(len(config))},
		"layers": []manifest.Descriptor{{MediaType: manifest.MediaTypeDockerLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}},
	})
	reg.PushRaw(t, "direct/io:v1", regtest.RawImage{MediaType: manifest.MediaTypeDockerSchema2, Manifest: m, Blobs: [][]byte{config, layer}})
	d := digest.FromBytes(layer)
	for _, flag := range []string{"--direct-io=true", "--direct-io=false"} {
		out := filepath.Join(t.TempDir(), "oci")
		if code, _, errOut := runCLI(t, "--output", out, flag, reg.Ref("direct/io:v1")); code != 0 {
			t.Fatalf("%s: exit %d, %s", flag, code, errOut)
		}
		got, err := os.ReadFile(filepath.Join(out, "blobs", "sha256", d.Encoded()))
		if err != nil {
			t.Fatalf("%s: %v", flag, err)
		}
		if !bytes.Equal(got, layer) {
			t.Errorf("%s: stored layer has %d bytes, digest %s; want %d bytes, %s", flag, len(got), digest.FromBytes(got), len(layer), d)
		}
	}
}
