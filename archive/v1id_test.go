package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

// readSaveTar returns the members of a real `docker save` archive from testdata.
func readSaveTar(t testing.TB, name string) map[string][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", "docker-archive", name))
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
			t.Fatalf("%s: %v", name, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %s: %v", name, h.Name, err)
		}
		out[h.Name] = b
	}
}

// saveManifest is manifest.json of a `docker save` archive.
type saveManifest []struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// TestV1IDsFixtures computes the v1 ids of both real `docker save` archives from the
// configs inside them and compares them with what docker wrote: the repositories file,
// the layer folder names and each folder's json (docker 1.13), and the legacy image JSON
// blob with its "id" (Docker 25, which writes no repositories file for an untagged save).
func TestV1IDsFixtures(t *testing.T) {
	t.Run("docker 1.13", func(t *testing.T) {
		m := readSaveTar(t, "almostempty-docker-1.13-save.tar")
		var mf saveManifest
		if err := json.Unmarshal(m["manifest.json"], &mf); err != nil || len(mf) != 1 {
			t.Fatalf("manifest.json: %v", err)
		}
		var repos map[string]map[string]string
		if err := json.Unmarshal(m["repositories"], &repos); err != nil {
			t.Fatal(err)
		}
		layers, err := V1Layers(m[mf[0].Config])
		if err != nil {
			t.Fatal(err)
		}
		if len(layers) != len(mf[0].Layers) {
			t.Fatalf("%d layers, manifest.json lists %d", len(layers), len(mf[0].Layers))
		}
		for i, l := range layers {
			dir := strings.TrimSuffix(mf[0].Layers[i], "/layer.tar")
			if l.ID.Encoded() != dir {
				t.Errorf("layer %d: v1 id %s, docker's folder is %s", i, l.ID, dir)
			}
			if !bytes.Equal(l.JSON, m[dir+"/json"]) {
				t.Errorf("layer %d json:\ngot  %s\nwant %s", i, l.JSON, m[dir+"/json"])
			}
			if l.DiffID != digest.FromBytes(m[dir+"/layer.tar"]) {
				t.Errorf("layer %d: diffID %s is not the sha256 of docker's layer.tar", i, l.DiffID)
			}
		}
		for repo, tags := range repos {
			for tag, id := range tags {
				if top := layers[len(layers)-1].ID.Encoded(); id != top {
					t.Errorf("repositories %s:%s = %s, computed %s", repo, tag, id, top)
				}
			}
		}
	})
	t.Run("docker 25", func(t *testing.T) {
		m := readSaveTar(t, "hello-world-docker25-save.tar")
		var mf saveManifest
		if err := json.Unmarshal(m["manifest.json"], &mf); err != nil || len(mf) != 1 {
			t.Fatalf("manifest.json: %v", err)
		}
		if _, ok := m["repositories"]; ok {
			t.Fatal("the fixture was expected to have no repositories file")
		}
		config := m[mf[0].Config]
		// The legacy image JSON is the blob that is neither the config, a layer nor the
		// OCI manifest, and has an "id".
		var legacy []byte
		var legacyID struct {
			ID string `json:"id"`
		}
		for n, b := range m {
			if strings.HasPrefix(n, "blobs/sha256/") && n != mf[0].Config && json.Unmarshal(b, &legacyID) == nil && legacyID.ID != "" {
				legacy = b
				break
			}
		}
		if legacy == nil {
			t.Fatal("no legacy image JSON blob in the archive")
		}
		ids, err := V1IDs(config)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != 1 || ids[0].Encoded() != legacyID.ID {
			t.Errorf("v1 ids %v, docker wrote %s", ids, legacyID.ID)
		}
		layers, err := V1Layers(config)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(layers[0].JSON, legacy) {
			t.Errorf("legacy json:\ngot  %s\nwant %s", layers[0].JSON, legacy)
		}
		// Docker 25 re-encoded BuildKit's 5-key "config" through its struct; hashing the
		// config's nested object as written would not give docker's id.
		if bytes.Contains(config, []byte(`"Hostname"`)) {
			t.Error("fixture config unexpectedly already holds docker's full container config")
		}
	})
}

// TestV1IDsStructNotBytes: the id depends on the config's meaning as docker's structs
// read it, not on its bytes: reordering keys, spelling out docker's defaults, a string
// Cmd or a config "parent" (which docker's Image hides) change nothing; a real change does.
func TestV1IDsStructNotBytes(t *testing.T) {
	base := readSaveTar(t, "hello-world-docker25-save.tar")["blobs/sha256/ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44"]
	want, err := V1IDs(base)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := `"rootfs":{"type":"layers","diff_ids":["sha256:12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43"]}`
	same := map[string]string{
		"docker's full config, keys reordered": `{"os":"linux",` + rootfs + `,"created":"2023-05-02T16:49:27Z","config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/hello"],"ArgsEscaped":true,"Image":"","Volumes":null,"WorkingDir":"/","Entrypoint":null,"OnBuild":null,"Labels":null},"architecture":"arm64"}`,
		"empty container_config spelled out":   `{"architecture":"arm64","container_config":{"Cmd":null,"Hostname":""},"config":{"WorkingDir":"/","Cmd":["/hello"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"ArgsEscaped":true},"created":"2023-05-02T16:49:27Z","os":"linux",` + rootfs + `}`,
		"Cmd as a string, parent and history":  `{"parent":"sha256:aaaa","architecture":"arm64","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":"/hello","WorkingDir":"/","ArgsEscaped":true},"created":"2023-05-02T16:49:27.000Z","os":"linux","history":[{"created_by":"x"}],` + rootfs + `}`,
	}
	differ := map[string]string{
		"a label":           `{"architecture":"arm64","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/hello"],"WorkingDir":"/","ArgsEscaped":true,"Labels":{"a":"b"}},"created":"2023-05-02T16:49:27Z","os":"linux",` + rootfs + `}`,
		"another created":   `{"architecture":"arm64","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/hello"],"WorkingDir":"/","ArgsEscaped":true},"created":"2023-05-02T16:49:28Z","os":"linux",` + rootfs + `}`,
		"a variant":         `{"architecture":"arm64","variant":"v8","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/hello"],"WorkingDir":"/","ArgsEscaped":true},"created":"2023-05-02T16:49:27Z","os":"linux",` + rootfs + `}`,
		"no config section": `{"architecture":"arm64","created":"2023-05-02T16:49:27Z","os":"linux",` + rootfs + `}`,
	}
	for name, cfg := range same {
		got, err := V1IDs([]byte(cfg))
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: %v (%v), want %v", name, got, err, want)
		}
	}
	for name, cfg := range differ {
		got, err := V1IDs([]byte(cfg))
		if err != nil || len(got) != 1 || got[0] == want[0] {
			t.Errorf("%s: %v (%v), want one id other than %v", name, got, err, want)
		}
	}
}

// TestV1IDsLowerLayers checks a three-layer image against ids built here from docker's own
// output, without the package's structs: the lower layers hash docker's empty legacy
// image (its container_config copied from the Docker 25 legacy blob) with the epoch as
// created; the top layer hashes docker 1.13's <v1id>/json for that config, "id" removed.
func TestV1IDsLowerLayers(t *testing.T) {
	old := readSaveTar(t, "almostempty-docker-1.13-save.tar")
	config := old["9d7f147c0d0c4d4538a04c7ef385809e56eb1aac7bf800fbe976612188025b68.json"]
	topJSON := old["c7b98db321d22702b8dd264fa7d58936951867854969a873d3dd20520eadca8f/json"]
	var blob struct {
		ContainerConfig json.RawMessage `json:"container_config"`
	}
	if err := json.Unmarshal(readSaveTar(t, "hello-world-docker25-save.tar")["blobs/sha256/ac09ed77c1b58dc3f93528f17515cb1c5487fa8f304ba2ed54d0f14686f1136e"], &blob); err != nil {
		t.Fatal(err)
	}

	diffIDs := []digest.Digest{digest.FromString("base"), digest.FromString("middle"), "sha256:0b916d257bd406111a3fced53f81b47de9a30f7c7d514a89769b3483aaddca7e"}
	chain := manifest.ChainIDs(diffIDs)
	three := bytes.Replace(config, []byte(`"diff_ids":[`), []byte(`"diff_ids":["`+string(diffIDs[0])+`","`+string(diffIDs[1])+`",`), 1)

	hashHex := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	var want []string
	want = append(want, hashHex(`{"container_config":`+string(blob.ContainerConfig)+`,"created":"1970-01-01T00:00:00Z","layer_id":"`+string(chain[0])+`"}`))
	want = append(want, hashHex(`{"container_config":`+string(blob.ContainerConfig)+`,"created":"1970-01-01T00:00:00Z","layer_id":"`+string(chain[1])+`","parent":"sha256:`+want[0]+`"}`))
	var top map[string]json.RawMessage
	if err := json.Unmarshal(topJSON, &top); err != nil {
		t.Fatal(err)
	}
	delete(top, "id")
	top["layer_id"] = json.RawMessage(`"` + string(chain[2]) + `"`)
	top["parent"] = json.RawMessage(`"sha256:` + want[1] + `"`)
	topBytes, err := json.Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, hashHex(string(topBytes)))

	layers, err := V1Layers(three)
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 3 {
		t.Fatalf("%d layers, want 3", len(layers))
	}
	for i, l := range layers {
		if l.ID.Encoded() != want[i] {
			t.Errorf("layer %d: v1 id %s, want %s", i, l.ID.Encoded(), want[i])
		}
		if l.DiffID != diffIDs[i] || l.ChainID != chain[i] {
			t.Errorf("layer %d: diffID %s chain %s", i, l.DiffID, l.ChainID)
		}
		wantParent := digest.Digest("")
		if i > 0 {
			wantParent = digest.Digest("sha256:" + want[i-1])
		}
		if l.Parent != wantParent {
			t.Errorf("layer %d: parent %s, want %s", i, l.Parent, wantParent)
		}
	}
	wantLower := `{"id":"` + want[1] + `","parent":"` + want[0] + `","created":"1970-01-01T00:00:00Z","container_config":` + string(blob.ContainerConfig) + `,"os":"linux"}`
	if string(layers[1].JSON) != wantLower {
		t.Errorf("lower layer json:\ngot  %s\nwant %s", layers[1].JSON, wantLower)
	}
	wantTop := strings.Replace(string(topJSON), `"id":"c7b98db321d22702b8dd264fa7d58936951867854969a873d3dd20520eadca8f"`, `"id":"`+want[2]+`","parent":"`+want[1]+`"`, 1)
	if string(layers[2].JSON) != wantTop {
		t.Errorf("top layer json:\ngot  %s\nwant %s", layers[2].JSON, wantTop)
	}
}

func TestV1IDsErrors(t *testing.T) {
	d := `"sha256:0b916d257bd406111a3fced53f81b47de9a30f7c7d514a89769b3483aaddca7e"`
	tests := []struct {
		name   string
		config string
		text   string
	}{
		{"not JSON", `{"rootfs":`, "invalid image config"},
		{"bad diffID", `{"rootfs":{"diff_ids":["sha256:xyz"]}}`, "rootfs.diff_ids[0]"},
		{"Cmd docker cannot read", `{"config":{"Cmd":5},"rootfs":{"diff_ids":[` + d + `]}}`, "Cmd"},
		{"created not a time", `{"created":"yesterday","rootfs":{"diff_ids":[` + d + `]}}`, "legacy image"},
		{"labels not strings", `{"config":{"Labels":{"a":1}},"rootfs":{"diff_ids":[` + d + `]}}`, "Labels"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := V1IDs([]byte(tc.config))
			if !errors.Is(err, pullkit.ErrInvalid) {
				t.Fatalf("error %v is not pullkit.ErrInvalid", err)
			}
			if want := "config " + string(digest.FromString(tc.config)); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q does not name %s and %q", err, want, tc.text)
			}
		})
	}
	ids, err := V1IDs([]byte(`{"rootfs":{"type":"layers","diff_ids":[]}}`))
	if err != nil || len(ids) != 0 {
		t.Errorf("no layers: %v, %v; want no ids and no error", ids, err)
	}
}

// FuzzV1IDs: any config; never a panic, and an accepted config gives one id per diffID,
// chained by parent, each with a json that names it.
func FuzzV1IDs(f *testing.F) {
	for _, p := range []string{"config/*.json", "misc/*.json"} {
		files, _ := filepath.Glob(filepath.Join("..", "testdata", p))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add(readSaveTar(f, "almostempty-docker-1.13-save.tar")["9d7f147c0d0c4d4538a04c7ef385809e56eb1aac7bf800fbe976612188025b68.json"])
	f.Fuzz(func(t *testing.T, config []byte) {
		layers, err := V1Layers(config)
		if err != nil {
			if !errors.Is(err, pullkit.ErrInvalid) {
				t.Fatalf("error %v is not pullkit.ErrInvalid", err)
			}
			return
		}
		cfg, err := manifest.ParseConfig(config)
		if err != nil {
			t.Fatalf("V1Layers accepted a config ParseConfig rejects: %v", err)
		}
		if len(layers) != len(cfg.RootFS.DiffIDs) {
			t.Fatalf("%d layers for %d diffIDs", len(layers), len(cfg.RootFS.DiffIDs))
		}
		var parent digest.Digest
		for i, l := range layers {
			if l.ID.Validate() != nil || l.Parent != parent || l.DiffID != cfg.RootFS.DiffIDs[i] {
				t.Fatalf("layer %d: id %q parent %q (want %q)", i, l.ID, l.Parent, parent)
			}
			var js struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(l.JSON, &js); err != nil || js.ID != l.ID.Encoded() {
				t.Fatalf("layer %d json %s does not name %s (%v)", i, l.JSON, l.ID, err)
			}
			parent = l.ID
		}
	})
}

// TestV1LayersDocker25LegacyJSON: Docker 25 also writes the legacy v1 JSON of the top
// layer into blobs/ (misc/docker25-save-legacy-v1-layer-json.json, blob ac09ed77…). From
// the config alone, V1Layers must give those exact bytes and the id inside them.
func TestV1LayersDocker25LegacyJSON(t *testing.T) {
	want := readFixture(t, "misc/docker25-save-legacy-v1-layer-json.json")
	if d := digest.FromBytes(want); d != "sha256:ac09ed77c1b58dc3f93528f17515cb1c5487fa8f304ba2ed54d0f14686f1136e" {
		t.Fatalf("fixture digest %s", d)
	}
	layers, err := V1Layers(readFixture(t, "config/hello-world-arm64-buildkit-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	top := layers[len(layers)-1]
	if !bytes.Equal(top.JSON, want) {
		t.Fatalf("legacy JSON differs:\n got %s\nwant %s", top.JSON, want)
	}
	var doc struct{ ID string }
	if err := json.Unmarshal(want, &doc); err != nil || "sha256:"+doc.ID != top.ID.String() || !strings.HasPrefix(doc.ID, "78d0dd34") {
		t.Fatalf("id %s in the fixture, V1Layers says %s (%v)", doc.ID, top.ID, err)
	}
}

func readFixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
