package archive

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

const (
	almostEmptyTar    = "almostempty-docker-1.13-save.tar"
	almostEmptyConfig = "9d7f147c0d0c4d4538a04c7ef385809e56eb1aac7bf800fbe976612188025b68.json"
	almostEmptyV1ID   = "c7b98db321d22702b8dd264fa7d58936951867854969a873d3dd20520eadca8f"
)

// member is one tar entry with its content.
type member struct {
	hdr  *tar.Header
	data []byte
}

func readMembers(t testing.TB, r io.Reader) []member {
	t.Helper()
	var out []member
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s: %v", h.Name, err)
		}
		out = append(out, member{h, b})
	}
}

func byName(ms []member) map[string]member {
	m := map[string]member{}
	for _, x := range ms {
		m[x.hdr.Name] = x
	}
	return m
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "docker-archive", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func opener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// TestRoundTripAlmostEmpty rewrites docker 1.13's own `docker save` archive from its config
// and layer and expects docker's archive back: the same members in the same order, with
// the same types, modes, mtimes and contents.
func TestRoundTripAlmostEmpty(t *testing.T) {
	raw := fixture(t, almostEmptyTar)
	want := readMembers(t, bytes.NewReader(raw))
	w := byName(want)
	cfg := w[almostEmptyConfig].data
	layer := w[almostEmptyV1ID+"/layer.tar"].data
	diffID := digest.FromBytes(layer)

	tests := []struct {
		name  string
		layer Layer
		tags  []string
	}{
		{"size and diffID known", Layer{DiffID: diffID, Size: int64(len(layer)), Open: opener(layer)}, []string{"emptyimage:latest"}},
		{"size unknown", Layer{Open: opener(layer)}, []string{"emptyimage"}},
		{"long hub name, repeated", Layer{Open: opener(layer)}, []string{"docker.io/library/emptyimage:latest", "index.docker.io/library/emptyimage"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteDockerArchive(&buf, DockerImage{RepoTags: tc.tags, Config: cfg, Layers: []Layer{tc.layer}})
			if err != nil {
				t.Fatal(err)
			}
			got := readMembers(t, bytes.NewReader(buf.Bytes()))
			if len(got) != len(want) {
				t.Fatalf("got %d members %v, want %d %v", len(got), names(got), len(want), names(want))
			}
			for i := range want {
				g, x := got[i], want[i]
				if g.hdr.Name != x.hdr.Name || g.hdr.Typeflag != x.hdr.Typeflag || g.hdr.Mode != x.hdr.Mode ||
					!g.hdr.ModTime.Equal(x.hdr.ModTime) || g.hdr.Uid != x.hdr.Uid || g.hdr.Gid != x.hdr.Gid {
					t.Errorf("member %d: got %s type %c mode %o mtime %v, want %s type %c mode %o mtime %v",
						i, g.hdr.Name, g.hdr.Typeflag, g.hdr.Mode, g.hdr.ModTime.UTC(), x.hdr.Name, x.hdr.Typeflag, x.hdr.Mode, x.hdr.ModTime.UTC())
				}
				if !bytes.Equal(g.data, x.data) {
					t.Errorf("%s differs:\ngot  %q\nwant %q", x.hdr.Name, g.data, x.data)
				}
			}
			// Docker pads the archive with one more zero block than archive/tar; the rest is
			// the same bytes.
			if out := buf.Bytes(); !bytes.Equal(out, raw[:len(out)]) || len(bytes.Trim(raw[len(out):], "\x00")) != 0 {
				t.Errorf("archive bytes differ from docker's (%d vs %d bytes)", len(out), len(raw))
			}
			if t.Failed() {
				return
			}
			checkSkopeo(t, buf.Bytes(), []digest.Digest{diffID})
		})
	}
}

func names(ms []member) []string {
	var s []string
	for _, m := range ms {
		s = append(s, m.hdr.Name)
	}
	return s
}

// layerTar builds a small layer tar holding the given files.
func layerTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range sortedKeys(files) {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[n])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	for i := 1; i < len(k); i++ {
		for j := i; j > 0 && k[j] < k[j-1]; j-- {
			k[j], k[j-1] = k[j-1], k[j]
		}
	}
	return k
}

func configFor(diffIDs []digest.Digest) []byte {
	ids, _ := json.Marshal(diffIDs)
	return []byte(`{"architecture":"amd64","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"Labels":{"a":"<b>"}},` +
		`"created":"2024-03-01T10:20:30.123456789Z","os":"linux","rootfs":{"type":"layers","diff_ids":` + string(ids) + `}}`)
}

// TestMultiLayer writes a three-layer image whose base and top layers are the same tar and
// checks the layout: folders named by V1IDs, each json naming its parent, the repeated
// layer stored once (a symlink, as docker does), tags in docker's short form.
func TestMultiLayer(t *testing.T) {
	l0 := layerTar(t, map[string]string{"etc/os-release": "ID=test\n"})
	l1 := layerTar(t, map[string]string{"app/run": "#!/bin/sh\necho hi\n", "app/data": strings.Repeat("x", 3000)})
	layers := [][]byte{l0, l1, l0}
	var diffIDs []digest.Digest
	for _, l := range layers {
		diffIDs = append(diffIDs, digest.FromBytes(l))
	}
	cfg := configFor(diffIDs)
	ids, err := V1IDs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	img := DockerImage{
		RepoTags: []string{"docker.io/library/busybox:1", "busybox:2", "example.com:5000/team/app", "org/tool:v3"},
		Config:   cfg,
	}
	for _, l := range layers {
		img.Layers = append(img.Layers, Layer{Open: opener(l), Size: int64(len(l))})
	}
	var buf bytes.Buffer
	if err := WriteDockerArchive(&buf, img); err != nil {
		t.Fatal(err)
	}
	// Deterministic: a second write gives the same bytes.
	var again bytes.Buffer
	if err := WriteDockerArchive(&again, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two writes of the same image differ")
	}

	got := readMembers(t, bytes.NewReader(buf.Bytes()))
	m := byName(got)
	var mf []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(m["manifest.json"].data, &mf); err != nil || len(mf) != 1 {
		t.Fatalf("manifest.json %q: %v", m["manifest.json"].data, err)
	}
	if want := digest.FromBytes(cfg).Encoded() + ".json"; mf[0].Config != want || !bytes.Equal(m[want].data, cfg) {
		t.Errorf("Config %q, want %q holding the config bytes", mf[0].Config, want)
	}
	wantTags := []string{"busybox:1", "busybox:2", "example.com:5000/team/app:latest", "org/tool:v3"}
	if fmt.Sprint(mf[0].RepoTags) != fmt.Sprint(wantTags) {
		t.Errorf("RepoTags %q, want %q", mf[0].RepoTags, wantTags)
	}
	for i, id := range ids {
		dir := id.Encoded()
		if mf[0].Layers[i] != dir+"/layer.tar" {
			t.Errorf("Layers[%d] = %q, want %s/layer.tar", i, mf[0].Layers[i], dir)
		}
		if string(m[dir+"/VERSION"].data) != "1.0" {
			t.Errorf("%s/VERSION = %q", dir, m[dir+"/VERSION"].data)
		}
		var js struct {
			ID, Parent, OS string
			Created        time.Time
		}
		if err := json.Unmarshal(m[dir+"/json"].data, &js); err != nil {
			t.Fatal(err)
		}
		wantParent := ""
		if i > 0 {
			wantParent = ids[i-1].Encoded()
		}
		if js.ID != dir || js.Parent != wantParent || js.OS != "linux" {
			t.Errorf("layer %d json: id %s parent %q os %q, want %s %q linux", i, js.ID, js.Parent, js.OS, dir, wantParent)
		}
		if i < len(ids)-1 && !js.Created.Equal(time.Unix(0, 0)) {
			t.Errorf("layer %d json: created %v, want the epoch", i, js.Created)
		}
	}
	top := m[ids[2].Encoded()+"/layer.tar"].hdr
	if top.Typeflag != tar.TypeSymlink || top.Linkname != "../"+ids[0].Encoded()+"/layer.tar" {
		t.Errorf("repeated layer: type %c link %q, want a symlink to the base's layer.tar", top.Typeflag, top.Linkname)
	}
	if !bytes.Equal(m[ids[1].Encoded()+"/layer.tar"].data, l1) {
		t.Error("layer 1 content differs")
	}
	var repos map[string]map[string]string
	if err := json.Unmarshal(m["repositories"].data, &repos); err != nil {
		t.Fatal(err)
	}
	topID := ids[2].Encoded()
	wantRepos := map[string]map[string]string{
		"busybox":                   {"1": topID, "2": topID},
		"example.com:5000/team/app": {"latest": topID},
		"org/tool":                  {"v3": topID},
	}
	if fmt.Sprint(repos) != fmt.Sprint(wantRepos) {
		t.Errorf("repositories %v, want %v", repos, wantRepos)
	}
	// Names come out sorted, as docker's directory walk gives them.
	for i := 1; i < len(got); i++ {
		if got[i-1].hdr.Name >= got[i].hdr.Name {
			t.Errorf("member %q before %q", got[i-1].hdr.Name, got[i].hdr.Name)
		}
	}
	checkSkopeo(t, buf.Bytes(), diffIDs)
}

// TestUntagged: without tags, RepoTags is null and there is no repositories file, as in
// `docker save <id>`.
func TestUntagged(t *testing.T) {
	l := layerTar(t, map[string]string{"f": "x"})
	var buf bytes.Buffer
	err := WriteDockerArchive(&buf, DockerImage{Config: configFor([]digest.Digest{digest.FromBytes(l)}), Layers: []Layer{{Open: opener(l)}}})
	if err != nil {
		t.Fatal(err)
	}
	m := byName(readMembers(t, &buf))
	if _, ok := m["repositories"]; ok {
		t.Error("untagged archive has a repositories file")
	}
	if !bytes.Contains(m["manifest.json"].data, []byte(`"RepoTags":null`)) {
		t.Errorf("manifest.json %s, want RepoTags null", m["manifest.json"].data)
	}
}

// failWriter fails after n bytes.
type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, errors.New("disk full")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriteDockerArchiveErrors(t *testing.T) {
	l := layerTar(t, map[string]string{"f": "x"})
	other := layerTar(t, map[string]string{"g": "y"})
	d := digest.FromBytes(l)
	cfg := configFor([]digest.Digest{d})
	size := int64(len(l))
	tests := []struct {
		name   string
		img    DockerImage
		w      io.Writer
		target error
		text   string
	}{
		{"malformed config", DockerImage{Config: []byte(`{"rootfs":`), Layers: []Layer{{Open: opener(l)}}}, nil, pullkit.ErrInvalid, "config sha256:"},
		{"config docker cannot read", DockerImage{Config: []byte(`{"config":{"Cmd":5},"rootfs":{"diff_ids":["` + string(d) + `"]}}`), Layers: []Layer{{Open: opener(l)}}}, nil, pullkit.ErrInvalid, "Cmd"},
		{"too few layers", DockerImage{Config: configFor([]digest.Digest{d, d})}, nil, pullkit.ErrInvalid, "0 layers given, config has 2"},
		{"nil opener", DockerImage{Config: cfg, Layers: []Layer{{}}}, nil, pullkit.ErrInvalid, "no opener"},
		{"diffID not the config's", DockerImage{Config: cfg, Layers: []Layer{{DiffID: digest.FromBytes(other), Open: opener(l)}}}, nil, pullkit.ErrInvalid, "config says " + string(d)},
		{"negative size", DockerImage{Config: cfg, Layers: []Layer{{Size: -1, Open: opener(l)}}}, nil, pullkit.ErrInvalid, "negative size"},
		{"digest reference", DockerImage{RepoTags: []string{"busybox@" + string(d)}, Config: cfg, Layers: []Layer{{Open: opener(l)}}}, nil, pullkit.ErrInvalid, "digest reference"},
		{"bad tag", DockerImage{RepoTags: []string{"Upper/Case:x"}, Config: cfg, Layers: []Layer{{Open: opener(l)}}}, nil, pullkit.ErrInvalid, `"Upper/Case:x"`},
		{"wrong content, size unknown", DockerImage{Config: cfg, Layers: []Layer{{Open: opener(other)}}}, nil, pullkit.ErrDigestMismatch, "want " + string(d)},
		{"wrong content, size known", DockerImage{Config: cfg, Layers: []Layer{{Size: int64(len(other)), Open: opener(other)}}}, nil, pullkit.ErrDigestMismatch, "want " + string(d)},
		{"content shorter than size", DockerImage{Config: cfg, Layers: []Layer{{Size: size + 1, Open: opener(l)}}}, nil, pullkit.ErrSizeMismatch, fmt.Sprintf("want %d bytes, content has %d", size+1, size)},
		{"content longer than size", DockerImage{Config: cfg, Layers: []Layer{{Size: size - 512, Open: opener(l)}}}, nil, pullkit.ErrSizeMismatch, "content is longer"},
		{"opener fails", DockerImage{Config: cfg, Layers: []Layer{{Open: func() (io.ReadCloser, error) { return nil, os.ErrNotExist }}}}, nil, os.ErrNotExist, "open layer 0 (" + string(d) + ")"},
		{"writer fails", DockerImage{Config: cfg, Layers: []Layer{{Open: opener(l)}}}, &failWriter{n: 600}, nil, "disk full"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.w
			if w == nil {
				w = io.Discard
			}
			err := WriteDockerArchive(w, tc.img)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.target != nil && !errors.Is(err, tc.target) {
				t.Errorf("error %v is not %v", err, tc.target)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q does not say %q", err, tc.text)
			}
		})
	}
	var bad *name.ErrBadName
	err := WriteDockerArchive(io.Discard, DockerImage{RepoTags: []string{"a:b:c:d"}, Config: cfg, Layers: []Layer{{Open: opener(l)}}})
	if !errors.As(err, &bad) {
		t.Errorf("bad tag error %v does not carry the name error", err)
	}
}

// checkSkopeo has skopeo read the archive: inspect must report the layers by their
// diffIDs, and copy to an OCI layout must succeed. Skipped when skopeo is absent, unless
// CI is set.
func checkSkopeo(t *testing.T, archive []byte, diffIDs []digest.Digest) {
	t.Helper()
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Log("skopeo not installed: archive not checked with skopeo")
			return
		}
		t.Fatal("skopeo not installed (CI is set)")
	}
	dir := t.TempDir()
	tarPath := filepath.Join(dir, "image.tar")
	if err := os.WriteFile(tarPath, archive, 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []byte {
		cmd := exec.Command(skopeo, append([]string{"--insecure-policy", "--tmpdir", dir}, args...)...)
		cmd.Env = append(os.Environ(), "TMPDIR="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	out := run("inspect", "docker-archive:"+tarPath)
	var insp struct {
		Layers []digest.Digest
		Os     string
	}
	if err := json.Unmarshal(out, &insp); err != nil {
		t.Fatalf("skopeo inspect output %s: %v", out, err)
	}
	if fmt.Sprint(insp.Layers) != fmt.Sprint(diffIDs) || insp.Os != "linux" {
		t.Errorf("skopeo inspect: layers %v os %q, want %v linux", insp.Layers, insp.Os, diffIDs)
	}
	ociDir := filepath.Join(dir, "oci")
	run("copy", "docker-archive:"+tarPath, "oci:"+ociDir+":copied")
	idx, err := os.ReadFile(filepath.Join(ociDir, "index.json"))
	if err != nil || !bytes.Contains(idx, []byte(`"org.opencontainers.image.ref.name":"copied"`)) {
		t.Errorf("skopeo copy wrote index.json %s (%v)", idx, err)
	}
}

// TestNoLayers: an image without layers (FROM scratch with only metadata) is written as
// docker load and skopeo take it: manifest.json with an empty Layers list, and no
// repositories file, since no layer has a v1 id for a tag to name.
func TestNoLayers(t *testing.T) {
	var buf bytes.Buffer
	cfg := configFor(nil)
	if err := WriteDockerArchive(&buf, DockerImage{RepoTags: []string{"empty:v1"}, Config: cfg}); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	if _, ok := files["repositories"]; ok {
		t.Errorf("repositories written for an image without layers")
	}
	var items []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &items); err != nil || len(items) != 1 {
		t.Fatalf("manifest.json %s: %v", files["manifest.json"], err)
	}
	if items[0].Layers == nil || len(items[0].Layers) != 0 || !bytes.Contains(files["manifest.json"], []byte(`"Layers":[]`)) {
		t.Errorf("Layers %v in %s, want []", items[0].Layers, files["manifest.json"])
	}
	if !bytes.Equal(files[items[0].Config], cfg) || len(items[0].RepoTags) != 1 {
		t.Errorf("config or tags wrong: %+v", items[0])
	}
}
