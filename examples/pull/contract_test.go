package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// TestHelp: --help (and -h) print every flag with its description, under a heading,
// on stdout, and exit 0; a flag registered without a group still shows, under "Other".
func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help"} {
		code, out, errOut := runCLI(t, arg)
		if code != 0 || errOut != "" {
			t.Fatalf("%s: exit %d, stderr %q", arg, code, errOut)
		}
		o, err := parseArgs([]string{arg}) // every flag the command defines, wherever
		if !errors.Is(err, errHelp) {
			t.Fatalf("parseArgs(%s): %v", arg, err)
		}
		n := 0
		o.help.fs.VisitAll(func(f *flag.Flag) {
			n++
			_, usage := flag.UnquoteUsage(f)
			if !strings.Contains(out, "\n  --"+f.Name) {
				t.Errorf("%s: --%s is not listed", arg, f.Name)
			}
			if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(usage), " ")) {
				t.Errorf("%s: the description of --%s is not printed: %q", arg, f.Name, usage)
			}
		})
		if n < 18 {
			t.Errorf("only %d flags defined", n)
		}
		for _, heading := range []string{"\nChoosing the image:\n", "\nOutput:\n", "\nLayout commands (with --output DIR and no reference):\n", "Exit status:"} {
			if !strings.Contains(out, heading) {
				t.Errorf("%s: no %q", arg, heading)
			}
		}
		for _, l := range strings.Split(out, "\n") {
			if len(l) > helpWidth {
				t.Errorf("%s: line of %d characters: %q", arg, len(l), l)
			}
		}
	}

	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	h := defineFlags(fs, &options{})
	fs.String("future-flag", "", "a flag another change added without a `DIR` group")
	var b bytes.Buffer
	h.write(&b, "")
	if !strings.Contains(b.String(), "\nOther:\n  --future-flag DIR\n      a flag another change added") {
		t.Errorf("a flag outside the groups is not shown under Other:\n%s", b.String())
	}
}

// TestInvalidReferenceIsUsage: a reference that does not parse is a usage error (exit
// 2), found before any file is made.
func TestInvalidReferenceIsUsage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "layout")
	code, out, errOut := runCLI(t, "--output", dir, "Not/A Reference")
	if code != 2 || out != "" || !strings.Contains(errOut, "invalid reference") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 2 and the reason", code, out, errOut)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the layout was created for an invalid reference (%v)", err)
	}
}

// TestInspectSaysNoLayers: pull REF without an output fetches no layer, and says so.
func TestInspectSaysNoLayers(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("app", "v1", pullkittest.OCI)
	code, out, errOut := runCLI(t, reg.Ref("app:v1"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "layers     not downloaded") || !strings.Contains(out, "--output PATH") {
		t.Errorf("the summary does not say the layers were not downloaded:\n%s", out)
	}
	for _, l := range img.Layers {
		if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob, Ref: l.Digest.String()}); n != 0 {
			t.Errorf("layer %s fetched %d times", l.Digest, n)
		}
	}
	// With --output the layers are downloaded and the summary says where they went.
	code, out, _ = runCLI(t, "--output", t.TempDir(), reg.Ref("app:v1"))
	if code != 0 || strings.Contains(out, "not downloaded") || !strings.Contains(out, "written") {
		t.Errorf("with --output: exit %d\n%s", code, out)
	}
}

// TestJSONSchema1: --json of a schema 1 image prints no config it does not have and no
// size it does not know; with --output, the synthesised config and the sizes learnt.
func TestJSONSchema1(t *testing.T) {
	host := demoHost(t)
	ref := host + "/demo/hello-world:schema1"
	code, out, errOut := runCLI(t, "--json", ref)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["config"]; ok {
		t.Errorf("config printed for a schema 1 image that has none yet: %v", m["config"])
	}
	if strings.Contains(out, "-1") {
		t.Errorf("a size of -1 is printed:\n%s", out)
	}
	for _, l := range m["layers"].([]any) {
		l := l.(map[string]any)
		size, ok := l["size"]
		// The well-known empty layer's size is known without the manifest.
		if empty := l["digest"] == manifest.EmptyGzipLayer.String(); ok != empty || (empty && size != float64(32)) {
			t.Errorf("layer %v: a size the manifest does not state, or the empty layer's missing", l)
		}
	}
	code, out, _ = runCLI(t, "--json", "--output", t.TempDir(), ref)
	if code != 0 {
		t.Fatalf("with --output: exit %d", code)
	}
	var img jsonImage
	if err := json.Unmarshal([]byte(out), &img); err != nil {
		t.Fatal(err)
	}
	if img.Config == nil || img.Config.Size <= 0 {
		t.Errorf("with --output: config %+v, want the synthesised one", img.Config)
	}
	for _, l := range img.Layers {
		if l.Size == nil || *l.Size <= 0 {
			t.Errorf("with --output: layer %s has no size", l.Digest)
		}
	}
}

// ggcrSchema1 serves a signed schema 1 image from go-containerregistry's registry, which
// indexes manifests by the sha256 of their bytes, not the canonical digest. It returns
// the tag's reference, the canonical digest and the registry's.
func ggcrSchema1(t *testing.T) (ref string, canonical, bytesDigest digest.Digest) {
	t.Helper()
	kit := pullkittest.NewRegistry(t)
	img := kit.PushImage("app", "v1", pullkittest.Schema1, pullkittest.Layers(2, 300))
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	put := func(method, path, contentType string, body []byte) {
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("%s %s: %s", method, path, resp.Status)
		}
	}
	for _, l := range img.Layers {
		put(http.MethodPost, "/v2/team/app/blobs/uploads/?digest="+l.Digest.String(), "application/octet-stream", l.Data)
	}
	put(http.MethodPost, "/v2/team/app/blobs/uploads/?digest="+manifest.EmptyGzipLayer.String(), "application/octet-stream", emptyGzipLayer)
	put(http.MethodPut, "/v2/team/app/manifests/v1", img.MediaType, img.Raw)
	host := strings.TrimPrefix(srv.URL, "http://")
	return host + "/team/app:v1", img.Digest, digest.FromBytes(img.Raw)
}

// TestRegistryDigestBeside: for signed schema 1 on a registry that indexes it by the
// sha256 of its bytes, the summary and --json give the digest it answers to beside the
// canonical one, and pulling by it works.
func TestRegistryDigestBeside(t *testing.T) {
	ref, canonical, served := ggcrSchema1(t)
	if canonical == served {
		t.Fatal("control: a signed schema 1 whose canonical digest is its bytes' sha256")
	}
	code, out, errOut := runCLI(t, ref)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "digest     "+canonical.String()) || !strings.Contains(out, "registry   "+served.String()) {
		t.Errorf("the summary does not give both digests:\n%s", out)
	}
	code, out, _ = runCLI(t, "--json", ref)
	var img jsonImage
	if code != 0 || json.Unmarshal([]byte(out), &img) != nil || img.Digest != canonical || img.RegistryDigest != served {
		t.Errorf("--json: exit %d, digest %s, registryDigest %s; want %s and %s", code, img.Digest, img.RegistryDigest, canonical, served)
	}
	pinned := strings.TrimSuffix(ref, ":v1") + "@" + img.RegistryDigest.String()
	if code, _, errOut := runCLI(t, "--output", t.TempDir(), pinned); code != 0 {
		t.Errorf("pull by the registry's digest: exit %d, %s", code, errOut)
	}
}

// TestDockerArchiveZstd writes a docker-archive of an image with zstd layers (served in
// a Docker schema 2 manifest, as BuildKit writes them): each layer.tar is the
// decompressed layer.
func TestDockerArchiveZstd(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("zstd/app", "v1", pullkittest.Schema2, pullkittest.Compression(manifest.Zstd))
	path := filepath.Join(t.TempDir(), "app.tar")
	code, out, errOut := runCLI(t, "--output", path, "--format", "docker-archive", reg.Ref("zstd/app:v1"))
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	members := readTar(t, path)
	var items []struct{ Layers []string }
	if err := json.Unmarshal(members["manifest.json"], &items); err != nil || len(items) != 1 || len(items[0].Layers) != len(img.Layers) {
		t.Fatalf("manifest.json %s: %v", members["manifest.json"], err)
	}
	for i, name := range items[0].Layers {
		if got := digest.FromBytes(members[name]); got != img.Layers[i].DiffID {
			t.Errorf("%s hashes to %s, want the diffID %s", name, got, img.Layers[i].DiffID)
		}
	}
	if _, err := os.Stat(scratchFor(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the scratch layout is left after a successful pull (%v)", err)
	}
}

// TestFormatCheckedFirst: a manifest format the image cannot be converted to is refused
// before any layer is downloaded.
func TestFormatCheckedFirst(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	reg.PushImage("zstd/app", "v1", pullkittest.OCI, pullkittest.Compression(manifest.Zstd), pullkittest.Layers(2, 1<<20))
	code, _, errOut := runCLI(t, "--output", t.TempDir(), "--manifest-format", "v2s2", reg.Ref("zstd/app:v1"))
	if code != 1 || !strings.Contains(errOut, "zstd") || !strings.Contains(errOut, "convert") {
		t.Errorf("exit %d, stderr %q; want the conversion refused", code, errOut)
	}
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob}); n != 0 {
		t.Errorf("%d blobs fetched before the conversion was refused", n)
	}
}

// TestV2S2Note: a layout written with --manifest-format v2s2 is said to be unreadable by
// skopeo's oci: transport and umoci, and (where they are installed) it is.
func TestV2S2Note(t *testing.T) {
	host := demoHost(t)
	ref := host + "/demo/hello-world:schema2"
	dir := filepath.Join(t.TempDir(), "layout")
	code, out, errOut := runCLI(t, "--output", dir, "--manifest-format", "v2s2", ref)
	if code != 0 || !strings.Contains(out, "skopeo's oci: transport and umoci do not read") {
		t.Fatalf("exit %d, %s\n%s", code, errOut, out)
	}
	if _, err := exec.LookPath("skopeo"); err == nil {
		if out, err := exec.Command("skopeo", "inspect", "oci:"+dir+":"+ref).CombinedOutput(); err == nil {
			t.Errorf("skopeo reads the v2s2 layout; the note is wrong:\n%s", out)
		}
	}
	if _, err := exec.LookPath("umoci"); err == nil {
		if out, err := exec.Command("umoci", "unpack", "--image", dir+":"+ref, filepath.Join(t.TempDir(), "bundle")).CombinedOutput(); err == nil {
			t.Errorf("umoci reads the v2s2 layout; the note is wrong:\n%s", out)
		}
	}
}

// TestDockerArchivePermission: a docker-archive into a directory the user cannot write
// fails naming that directory, not a scratch file of the command's own. Run as root, the
// command is started without the capability that overrides permissions.
func TestDockerArchivePermission(t *testing.T) {
	host := demoHost(t)
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	args := []string{"--output", filepath.Join(dir, "x.tar"), "--format", "docker-archive", host + "/demo/hello-world:list"}
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("as root, this needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
		}
		cmd = childCommand(t, args...)
		cmd.Args = append([]string{setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"}, cmd.Args...)
		cmd.Path = setpriv
	} else {
		cmd = childCommand(t, args...)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1; stderr %q", err, errOut.String())
	}
	want := "cannot create files in " + dir + ": permission denied"
	if s := errOut.String(); !strings.Contains(s, want) || strings.Contains(s, ".pull-blobs") || strings.Contains(s, ".tmp-") || strings.Count(s, "\n") != 1 {
		t.Errorf("stderr %q, want one line with %q and no internal name", s, want)
	}
}

// TestDemoPlatforms: the demo names the platforms it pulls for, asks for a
// single-platform image's own platform when it is not the machine's, and with
// --platform says how many it pulled and which it refused, never "All 5".
func TestDemoPlatforms(t *testing.T) {
	code, out, _ := runCLI(t)
	if code != 0 {
		t.Fatalf("demo: exit %d", code)
	}
	if !regexp.MustCompile(`pulls each one for linux/(amd64|arm64)`).MatchString(out) || !strings.Contains(out, "All 5 formats pulled and verified: ") {
		t.Errorf("demo heading or ending:\n%s", out)
	}
	if strings.Contains(out, "linux/amd64") && strings.Contains(out, "platform   linux/arm64") && !strings.Contains(out, "oci exists only for linux/arm64") {
		t.Errorf("the heading does not say an arm64 image was pulled:\n%s", out)
	}

	code, out, _ = runCLI(t, "--platform", "linux/arm64")
	if code != 0 {
		t.Fatalf("demo --platform linux/arm64: exit %d", code)
	}
	if strings.Contains(out, "All 5") || !strings.Contains(out, "3 of 5 formats pulled and verified: list, oci, index for linux/arm64. Refused, as asked: schema1, schema2") {
		t.Errorf("demo --platform linux/arm64 ending:\n%s", out)
	}
	if !strings.Contains(out, "pulls each one for linux/arm64") || strings.Contains(out, "platform   linux/amd64") {
		t.Errorf("demo --platform linux/arm64 heading or pulls:\n%s", out)
	}
}

// TestDemoTryAlso: every command the demo suggests runs: the program is named as it
// can be run again (go run with a package go resolves, here), and its flags parse.
func TestDemoTryAlso(t *testing.T) {
	_, out, _ := runCLI(t)
	_, tail, ok := strings.Cut(out, "Try also:\n")
	if !ok {
		t.Fatalf("no suggestions:\n%s", out)
	}
	self := selfCommand()
	if !strings.HasPrefix(self, "go run ") {
		t.Fatalf("under go test the program is %q, want go run", self)
	}
	pkg := strings.TrimPrefix(self, "go run ")
	if out, err := exec.Command("go", "list", pkg).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "github.com/pullkit/pullkit/examples/pull" {
		t.Errorf("go list %s: %v %s", pkg, err, out)
	}
	lines := strings.Split(strings.TrimSpace(tail), "\n")
	if len(lines) < 4 {
		t.Fatalf("suggestions %q", lines)
	}
	for _, l := range lines {
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), self)
		if !ok {
			t.Errorf("suggestion %q does not start with %q", l, self)
			continue
		}
		if _, err := parseArgs(strings.Fields(rest)); err != nil {
			t.Errorf("suggestion %q: %v", l, err)
		}
	}
}

// TestCheckAndListNameDamage: --check names the damaged blob and the images that used
// it; --list then shows those images as incomplete, naming the blob, and so does a blob
// truncated on disk before any check.
func TestCheckAndListNameDamage(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	a := reg.PushImage("team/a", "v1", pullkittest.OCI, pullkittest.Seed(7))
	reg.Tag("team/a", "v2", a.Digest) // a second name for the same image
	reg.PushImage("team/b", "v1", pullkittest.OCI, pullkittest.Seed(8))
	dir := filepath.Join(t.TempDir(), "layout")
	for _, r := range []string{"team/a:v1", "team/a:v2", "team/b:v1"} {
		if code, _, errOut := runCLI(t, "--output", dir, reg.Ref(r)); code != 0 {
			t.Fatalf("pull %s: %s", r, errOut)
		}
	}
	damaged := a.Layers[0].Digest
	blob := filepath.Join(dir, store.BlobsDir, "sha256", damaged.Encoded())
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff // same size, other content
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "--output", dir, "--check")
	if code != 0 || !strings.Contains(out, "1 damaged") || !strings.Contains(out, "damaged "+damaged.String()+" (used by "+reg.Ref("team/a:v1")+", "+reg.Ref("team/a:v2")+": pull it again") {
		t.Errorf("--check: exit %d, %q %q; want the blob and its image named", code, out, errOut)
	}
	if strings.Contains(out, reg.Ref("team/b:v1")) {
		t.Errorf("--check names an image that does not use the blob: %q", out)
	}
	code, out, _ = runCLI(t, "--output", dir, "--list")
	lineA, lineA2, lineB := lineWith(out, reg.Ref("team/a:v1")), lineWith(out, reg.Ref("team/a:v2")), lineWith(out, reg.Ref("team/b:v1"))
	if code != 0 || !strings.Contains(lineA, "INCOMPLETE: missing "+damaged.String()) || !strings.Contains(lineA2, "INCOMPLETE") || strings.Contains(lineB, "INCOMPLETE") {
		t.Errorf("--list after --check: exit %d\n%s", code, out)
	}

	// A blob of b cut short on disk: --list sees it by its size.
	bImg, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var index struct{ Manifests []manifest.Descriptor }
	if err := json.Unmarshal(bImg, &index); err != nil {
		t.Fatal(err)
	}
	var bLayer digest.Digest
	for _, d := range index.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] != reg.Ref("team/b:v1") {
			continue
		}
		raw, _ := os.ReadFile(filepath.Join(dir, store.BlobsDir, "sha256", d.Digest.Encoded()))
		m, err := manifest.Parse(raw, d.MediaType)
		if err != nil {
			t.Fatal(err)
		}
		bLayer = m.Layers[0].Digest
	}
	if err := os.Truncate(filepath.Join(dir, store.BlobsDir, "sha256", bLayer.Encoded()), 10); err != nil {
		t.Fatal(err)
	}
	_, out, _ = runCLI(t, "--output", dir, "--list")
	if l := lineWith(out, reg.Ref("team/b:v1")); !strings.Contains(l, "INCOMPLETE: damaged "+bLayer.String()+" (10 bytes, want ") {
		t.Errorf("--list with a truncated blob: %q", l)
	}
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// TestInterruptKeepsPartial interrupts, with SIGINT, a pull whose blobs go to a scratch
// layout (--format docker-archive, and --unpack without --output) half way through a
// large layer: the command exits 130 with one line that names where the partial
// download is kept; the same command then resumes it (its first request for the layer
// starts where the kept part ends), succeeds, and removes the scratch layout.
func TestInterruptKeepsPartial(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("big", "v1", pullkittest.OCI, pullkittest.Layers(1, 4<<20))
	big := img.Layers[0]
	ref := reg.Ref("big:v1")
	for _, tc := range []struct {
		name   string
		target func(dir string) string
		args   func(target string) []string
	}{
		{"docker-archive", func(dir string) string { return filepath.Join(dir, "big.tar") },
			func(target string) []string { return []string{"--output", target, "--format", "docker-archive", ref} }},
		{"unpack", func(dir string) string { return filepath.Join(dir, "rootfs") },
			func(target string) []string { return []string{"--unpack", target, ref} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg.ClearFaults()
			reg.ResetRequests()
			reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Method: http.MethodGet, Route: pullkittest.RouteBlob, Ref: big.Digest.String()},
				Fault: pullkittest.StallAfter(1<<20, 2*time.Minute)})
			target := tc.target(t.TempDir())
			scratch := scratchFor(target)
			partial := filepath.Join(scratch, store.IngestDir, "sha256-"+big.Digest.Encoded()+".partial")

			var out, errOut bytes.Buffer
			cmd := pullChild(t, &out, &errOut, tc.args(target)...)
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			deadline := time.Now().Add(time.Minute) // a bound that only catches a hang
			for {
				if fi, err := os.Stat(partial); err == nil && fi.Size() > 0 {
					break
				}
				select {
				case err := <-exited:
					t.Fatalf("the pull ended (%v) before the interrupt: %s", err, errOut.String())
				case <-time.After(10 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					t.Fatalf("no partial download appeared in %s", partial)
				}
			}
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
			case <-time.After(time.Minute):
				_ = cmd.Process.Kill()
				t.Fatal("the pull did not end after SIGINT")
			}
			if code := cmd.ProcessState.ExitCode(); code != 130 {
				t.Errorf("exit %d after SIGINT, want 130", code)
			}
			want := "pull: interrupted by SIGINT; the partial downloads in " + scratch + " are kept, and the same command resumes them\n"
			if errOut.String() != want {
				t.Errorf("stderr %q, want %q", errOut.String(), want)
			}
			fi, err := os.Stat(partial)
			if err != nil || fi.Size() == 0 {
				t.Fatalf("the partial download is gone (%v)", err)
			}

			reg.ClearFaults()
			reg.ResetRequests()
			if code, _, errOut := runCLI(t, tc.args(target)...); code != 0 {
				t.Fatalf("second run: exit %d, %s", code, errOut)
			}
			first := ""
			for _, r := range reg.Requests() {
				if r.Route == pullkittest.RouteBlob && r.Ref == big.Digest.String() && r.Method == http.MethodGet {
					first = r.Range
					break
				}
			}
			if want := fmt.Sprintf("bytes=%d-", fi.Size()); first != want {
				t.Errorf("the second run's first request for the layer asked for %q, want %q (resumed from what was kept)", first, want)
			}
			if _, err := os.Stat(scratch); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the scratch layout is left after the pull succeeded (%v)", err)
			}
			if _, err := os.Stat(target); err != nil {
				t.Errorf("the target was not written: %v", err)
			}
		})
	}
}
