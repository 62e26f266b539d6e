package manifest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
)

// s1ReadFixture reads a file under the repository's testdata directory.
func s1ReadFixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", rel))
	if err != nil {
		t.Fatalf("reading fixture: %v", err)
	}
	return b
}

// s1FixtureDoc is an independent decoding of a fixture, used to derive expectations.
type s1FixtureDoc struct {
	FSLayers []struct {
		BlobSum digest.Digest `json:"blobSum"`
	} `json:"fsLayers"`
	History []struct {
		V1Compatibility string `json:"v1Compatibility"`
	} `json:"history"`
	Signatures []struct {
		Header struct {
			JWK struct {
				Kid string `json:"kid"`
			} `json:"jwk"`
			Alg string `json:"alg"`
		} `json:"header"`
		Protected string `json:"protected"`
	} `json:"signatures"`
}

func s1DecodeFixture(t testing.TB, raw []byte) s1FixtureDoc {
	t.Helper()
	var d s1FixtureDoc
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("decoding fixture: %v", err)
	}
	return d
}

func s1CountEmpty(ls []Layer) int {
	n := 0
	for _, l := range ls {
		if l.Empty {
			n++
		}
	}
	return n
}

// The numbers below are the ones SOURCES.md lists (checked there with python + cryptography).
var s1SignedFixtures = []struct {
	file      string
	raw       string // sha256 of the file
	canonical digest.Digest
	layers    int
	empty     int
	name, tag string
}{
	{"hello-world-dockerhub-2015.json", "b2adb1fb02d8bfac5617625965c475e1035f08dc84b7719f5902528dc1363845",
		"sha256:02fee8c3220ba806531f606525eceb83f4feb654f62b207191b1c9209188dedd", 2, 1, "library/hello-world", "latest"},
	{"mitr-buxybox-2016.json", "35546d99db5d2cd58073417e09b5b86a34d3fe2aeafa081660b824f3e870dda6",
		"sha256:077594da70fc17ec2c93cfa4e6ed1fcc26992851fb2c71861338aaf4aa9e41b1", 3, 0, "mitr/buxybox", "latest"},
	{"rhosp12-openstack-nova-api-2018.json", "34ee2c9bd7ac6d061f2b617d8f9925ce017a6d4413f03c8721fb984888d580c1",
		"sha256:5a26403ca5f91c7f04300e397efc83960afbfe2d2b34314383a53e267a604455", 6, 0, "rhosp12/openstack-nova-api", "latest"},
	{"httpd-copy-by-containers-image-2020.json", "be8a88690cc8f35d7c48423b057e4718b31ce97d956248d44bb847fb6e28e8de",
		"sha256:6feeaff9d4420e29f96881eb712e8762c28615666340222c8e054259f9bc87d4", 15, 10, "library/httpd-copy", "latest"},
	{"quay-buildtest2-2018.json", "6281aa69baeaf970a3de051d43622c3d57032c25fe1d25ceb5040d838654f996",
		"sha256:b5dc4f63fdbd64f34f2314c0747ef81008f9fcddce4edfc3fd0e8ec8b358d571", 6, 4, "josephschorr/buildtest2", "latest"},
	{"quay-unicode-escaped-2018.json", "cdf9353821eb1ef9e35532d6c808dced6292068d00c494eb4826eb56d8deaef5",
		"sha256:815ecf45716a96b19d54d911e6ace91f78bab26ca0dd299645d9995dacd9f1ef", 4, 2, "devtable/simple", "unicode"},
	{"quay-unencoded-unicode-2018.json", "33e1b199626227b568d3976508972da46c105bbd06af72433056e83c3697f3eb",
		"sha256:5d8a0f34744a39bf566ba430251adc0cc86587f86aed3ac2acfb897f349777bc", 3, 2, "devtable/testimage", "latest"},
	{"quay-known-issue-x86_64-2019.json", "59b3028f82bd11aeef77fa09a39031a1c27e17f30783b8ce3de4511ded6efdf2",
		"sha256:44518f5a4d1cb5b7a6347763116fb6e10f6a8563b6c40bb389a0a982f0a9f47a", 5, 1, "quaymonitor/monitortest2", "latest"},
	{"quay-complex-19-layers-2018.json", "8202a88fc493641b02b8203f1f055fb2279c1649868b664235f92c12859ff54c",
		"sha256:9ac47329525a9d6af983484c81972d32ef5ab9e6466cf57afd511620e84ffc01", 19, 8, "user/test", "1"},
}

func TestParseSchema1SignedFixtures(t *testing.T) {
	for _, tc := range s1SignedFixtures {
		t.Run(tc.file, func(t *testing.T) {
			raw := s1ReadFixture(t, "schema1-signed/"+tc.file)
			if got := fmt.Sprintf("%x", sha256.Sum256(raw)); got != tc.raw {
				t.Fatalf("fixture bytes changed: sha256 %s, want %s", got, tc.raw)
			}
			fx := s1DecodeFixture(t, raw)
			m, err := parseSchema1(raw)
			if err != nil {
				t.Fatalf("parseSchema1: %v", err)
			}
			if m.Digest != tc.canonical {
				t.Errorf("Digest = %s, want canonical %s", m.Digest, tc.canonical)
			}
			if m.Digest == digest.FromBytes(raw) {
				t.Errorf("Digest is the raw sha256; a signed manifest's digest is its payload's")
			}
			if got := digest.FromBytes(m.Schema1.Payload); got != tc.canonical {
				t.Errorf("sha256(Payload) = %s, want %s", got, tc.canonical)
			}
			if m.Kind != KindImage || m.MediaType != MediaTypeDockerSchema1Signed || m.Config != nil {
				t.Errorf("Kind %v MediaType %q Config %v, want image, %s, nil", m.Kind, m.MediaType, m.Config, MediaTypeDockerSchema1Signed)
			}
			if !bytes.Equal(m.Raw, raw) {
				t.Errorf("Raw is not the document as served")
			}
			if m.Schema1.Name != tc.name || m.Schema1.Tag != tc.tag {
				t.Errorf("name/tag = %q/%q, want %q/%q", m.Schema1.Name, m.Schema1.Tag, tc.name, tc.tag)
			}
			if len(m.Layers) != tc.layers || len(fx.FSLayers) != tc.layers {
				t.Fatalf("%d layers (fixture has %d fsLayers), want %d", len(m.Layers), len(fx.FSLayers), tc.layers)
			}
			if got := s1CountEmpty(m.Layers); got != tc.empty {
				t.Errorf("%d empty layers, want %d", got, tc.empty)
			}
			for i, l := range m.Layers {
				if want := fx.FSLayers[len(fx.FSLayers)-1-i].BlobSum; l.Digest != want {
					t.Errorf("Layers[%d] = %s, want fsLayers[%d] %s (base first)", i, l.Digest, len(fx.FSLayers)-1-i, want)
				}
				if l.MediaType != MediaTypeDockerLayer || l.Size != -1 || l.DiffID != "" {
					t.Errorf("Layers[%d] = %+v, want docker gzip layer of unknown size", i, l)
				}
			}
			if m.Layers[0].Digest != fx.FSLayers[tc.layers-1].BlobSum || m.Layers[tc.layers-1].Digest != fx.FSLayers[0].BlobSum {
				t.Errorf("first model layer must be the last fsLayer and vice versa")
			}
			h := m.Schema1.History
			if len(h) != len(m.Layers) {
				t.Fatalf("%d history entries for %d layers", len(h), len(m.Layers))
			}
			for i := range h {
				if h[i].V1Compatibility != fx.History[len(fx.History)-1-i].V1Compatibility {
					t.Errorf("History[%d] does not keep fixture history[%d] v1Compatibility exactly", i, len(fx.History)-1-i)
				}
				wantParent := ""
				if i > 0 {
					wantParent = h[i-1].ID
				}
				if h[i].Parent != wantParent {
					t.Errorf("History[%d].Parent = %q, want %q", i, h[i].Parent, wantParent)
				}
				if h[i].Empty != m.Layers[i].Empty {
					t.Errorf("History[%d].Empty %v != Layers[%d].Empty %v", i, h[i].Empty, i, m.Layers[i].Empty)
				}
			}
			if len(m.Schema1.Signatures) != 1 {
				t.Fatalf("%d signatures, want 1", len(m.Schema1.Signatures))
			}
			sig := m.Schema1.Signatures[0]
			if want := fx.Signatures[0].Header.JWK.Kid; sig.KeyID != want || sig.Algorithm != "ES256" || sig.Chain {
				t.Errorf("signature = %+v, want key %s ES256 from a jwk", sig, want)
			}
			if m.Platform == nil || m.Platform.OS != "linux" || m.Platform.Architecture != "amd64" {
				t.Errorf("Platform = %+v, want linux/amd64", m.Platform)
			}
		})
	}
}

func TestParseSchema1HelloWorldEmptyLayerWithoutThrowaway(t *testing.T) {
	m, err := parseSchema1(s1ReadFixture(t, "schema1-signed/hello-world-dockerhub-2015.json"))
	if err != nil {
		t.Fatal(err)
	}
	// fsLayers[0] is the CMD step: the empty gzip with no throwaway flag.
	top := m.Schema1.History[1]
	if !m.Layers[1].Empty || m.Layers[1].Digest != EmptyGzipLayer || top.Throwaway || !top.Empty {
		t.Errorf("layer 1 = %+v history %+v, want Empty (empty gzip) without throwaway", m.Layers[1], top)
	}
	if m.Layers[0].Empty {
		t.Errorf("base layer flagged empty")
	}
	if top.CreatedBy != `/bin/sh -c #(nop) CMD ["/hello"]` || top.DockerVersion != "1.7.1" {
		t.Errorf("history: created_by %q docker %q", top.CreatedBy, top.DockerVersion)
	}
	if want := time.Date(2015, 8, 6, 23, 53, 22, 608577814, time.UTC); !top.Created.Equal(want) {
		t.Errorf("Created = %v, want %v", top.Created, want)
	}
}

func TestParseSchema1Unsigned(t *testing.T) {
	raw := s1ReadFixture(t, "schema1-unsigned/mitr-buxybox-2016-unsigned.json")
	m, err := parseSchema1(raw)
	if err != nil {
		t.Fatal(err)
	}
	const want = digest.Digest("sha256:077594da70fc17ec2c93cfa4e6ed1fcc26992851fb2c71861338aaf4aa9e41b1")
	if len(raw) != 5480 || m.Digest != digest.FromBytes(raw) || m.Digest != want {
		t.Errorf("%d bytes, Digest %s, want 5480 bytes, raw sha256 %s", len(raw), m.Digest, want)
	}
	if m.MediaType != MediaTypeDockerSchema1 || m.Schema1.Signatures != nil || !bytes.Equal(m.Schema1.Payload, raw) {
		t.Errorf("MediaType %q, %d signatures, want unsigned with Payload == raw", m.MediaType, len(m.Schema1.Signatures))
	}
	signed, err := parseSchema1(s1ReadFixture(t, "schema1-signed/mitr-buxybox-2016.json"))
	if err != nil {
		t.Fatal(err)
	}
	if signed.Digest != m.Digest {
		t.Errorf("signed canonical %s != unsigned raw digest %s", signed.Digest, m.Digest)
	}
	if !reflect.DeepEqual(signed.Layers, m.Layers) || !reflect.DeepEqual(signed.Schema1.History, m.Schema1.History) {
		t.Errorf("unsigned layers/history differ from the signed manifest's")
	}
	if len(m.Layers) != 3 || s1CountEmpty(m.Layers) != 0 {
		t.Errorf("%d layers %d empty, want 3, 0", len(m.Layers), s1CountEmpty(m.Layers))
	}
	for _, l := range m.Layers {
		if l.Digest != "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef" {
			t.Errorf("layer %s, want the same blob three times", l.Digest)
		}
	}
}

func TestParseSchema1InvalidFixtures(t *testing.T) {
	for _, tc := range []struct {
		file  string
		check string
		keyID string
	}{
		{"hello-world-schemaversion-tampered.json", "signature", "OIH7:HQFS:44FK:45VB:3B53:OIAG:TPL4:ATF5:6PNE:MGHN:NHQX:2GE4"},
		{"mitr-busybox-name-edited-after-signing.json", "signature", ""},
		// formatLength was left 5 bytes short: raw[:10895]+"\n}" is not JSON.
		{"httpd-copy-registry-converted-edited.json", "payload", ""},
		{"signatures-not-an-array.json", "signatures", ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			_, err := parseSchema1(s1ReadFixture(t, "schema1-invalid/"+tc.file))
			var se *SignatureError
			if !errors.As(err, &se) || !errors.Is(err, pullkit.ErrInvalid) {
				t.Fatalf("err = %v, want *SignatureError", err)
			}
			if se.Check != tc.check || se.Index != 0 {
				t.Errorf("Check %q index %d, want %q index 0 (%v)", se.Check, se.Index, tc.check, err)
			}
			if tc.keyID != "" && se.KeyID != tc.keyID {
				t.Errorf("KeyID %q, want %q", se.KeyID, tc.keyID)
			}
			if errors.Is(err, pullkit.ErrUnsupported) || errors.Is(err, pullkit.ErrDigestMismatch) {
				t.Errorf("signature failure %v matches another sentinel than pullkit.ErrInvalid", err)
			}
		})
	}
}

func TestParseSchema1ExtraDataAfterPayload(t *testing.T) {
	raw := s1ReadFixture(t, "schema1-invalid/hello-world-extra-data-after-payload.json")
	// The whole document, last key winning, has the forged layers.
	if fx := s1DecodeFixture(t, raw); !strings.HasPrefix(string(fx.FSLayers[0].BlobSum), "sha256:ffff") {
		t.Fatalf("fixture no longer carries forged fsLayers: %v", fx.FSLayers)
	}
	m, err := parseSchema1(raw)
	if err != nil {
		t.Fatalf("extra data after the payload must not break verification: %v", err)
	}
	if m.Digest != "sha256:02fee8c3220ba806531f606525eceb83f4feb654f62b207191b1c9209188dedd" {
		t.Errorf("Digest = %s, want the good manifest's canonical digest", m.Digest)
	}
	want := []digest.Digest{
		"sha256:03f4658f8b782e12230c1783426bd3bacce651ce582a4ffb6fbbfa2079428ecb",
		"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4",
	}
	if len(m.Layers) != 2 || m.Layers[0].Digest != want[0] || m.Layers[1].Digest != want[1] || !m.Layers[1].Empty {
		t.Errorf("layers = %+v, want the signed payload's %v (base first)", m.Layers, want)
	}
	good, err := parseSchema1(s1ReadFixture(t, "schema1-signed/hello-world-dockerhub-2015.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(good.Schema1.Payload, m.Schema1.Payload) {
		t.Errorf("payload differs from the good manifest's")
	}
}

func TestParseSchema1QuayX86_64DuplicateBlob(t *testing.T) {
	m, err := parseSchema1(s1ReadFixture(t, "schema1-signed/quay-known-issue-x86_64-2019.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Platform.Architecture != "amd64" || m.Schema1.Architecture != "x86_64" {
		t.Errorf("architecture %q (manifest %q), want amd64 normalised from x86_64", m.Platform.Architecture, m.Schema1.Architecture)
	}
	// fsLayers 1 and 3 share a blob: base first that is model layers 3 and 1.
	if len(m.Layers) != 5 || m.Layers[1].Digest != m.Layers[3].Digest || !strings.HasPrefix(string(m.Layers[1].Digest), "sha256:184dc3db") {
		t.Errorf("layers %v, want the duplicate blob sha256:184dc3db… kept at 1 and 3", m.Layers)
	}
}

// ---- synthetic manifests for the validation rules ----

func s1ID(c byte) string { return strings.Repeat(string(c), 64) }

type s1Entry struct {
	blob string
	v1   string
}

func s1Doc(t testing.TB, version int, arch string, entries ...s1Entry) []byte {
	t.Helper()
	type fs struct {
		BlobSum string `json:"blobSum"`
	}
	type hist struct {
		V1Compatibility string `json:"v1Compatibility"`
	}
	doc := struct {
		SchemaVersion int    `json:"schemaVersion"`
		Name          string `json:"name"`
		Tag           string `json:"tag"`
		Architecture  string `json:"architecture"`
		FSLayers      []fs   `json:"fsLayers"`
		History       []hist `json:"history"`
	}{SchemaVersion: version, Name: "test/repo", Tag: "v1", Architecture: arch, FSLayers: []fs{}, History: []hist{}}
	for _, e := range entries {
		doc.FSLayers = append(doc.FSLayers, fs{e.blob})
		doc.History = append(doc.History, hist{e.v1})
	}
	b, err := json.MarshalIndent(doc, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func s1Hist(blob, id, parent, extra string) s1Entry {
	v := fmt.Sprintf(`{"id":%q`, id)
	if parent != "" {
		v += fmt.Sprintf(`,"parent":%q`, parent)
	}
	return s1Entry{blob: string(digest.FromString(blob)), v1: v + extra + "}"}
}

func TestParseSchema1Validation(t *testing.T) {
	a, b, c := s1ID('a'), s1ID('b'), s1ID('c')
	good := []s1Entry{s1Hist("top", a, b, `,"os":"windows","throwaway":true`), s1Hist("mid", b, c, ""), s1Hist("base", c, "", "")}
	for _, tc := range []struct {
		name string
		doc  []byte
	}{
		{"not JSON", []byte(`{"schemaVersion":1,`)},
		{"JSON array", []byte(`[1]`)},
		{"JSON null", []byte(`null`)},
		{"schemaVersion 2", s1Doc(t, 2, "amd64", good...)},
		{"no layers", s1Doc(t, 1, "amd64")},
		{"fsLayers and history differ", func() []byte {
			d := s1Doc(t, 1, "amd64", good...)
			return bytes.Replace(d, []byte(`"history": [`), []byte(`"history": [{"v1Compatibility":"{}"},`), 1)
		}()},
		{"bad blobSum", s1Doc(t, 1, "amd64", s1Entry{"sha256:xyz", good[0].v1}, good[1], good[2])},
		{"unknown digest algorithm", s1Doc(t, 1, "amd64", s1Entry{"md5:d41d8cd98f00b204e9800998ecf8427e", good[0].v1}, good[1], good[2])},
		{"v1Compatibility not JSON", s1Doc(t, 1, "amd64", s1Entry{good[0].blob, "{"}, good[1], good[2])},
		{"id too short", s1Doc(t, 1, "amd64", s1Hist("top", "abc", b, ""), good[1], good[2])},
		{"id upper case", s1Doc(t, 1, "amd64", s1Hist("top", strings.ToUpper(s1ID('e')), b, ""), good[1], good[2])},
		{"no id", s1Doc(t, 1, "amd64", s1Entry{good[0].blob, `{"parent":"` + b + `"}`}, good[1], good[2])},
		{"base has a parent", s1Doc(t, 1, "amd64", good[0], good[1], s1Hist("base", c, s1ID('d'), ""))},
		{"broken parent chain", s1Doc(t, 1, "amd64", s1Hist("top", a, c, ""), good[1], good[2])},
		{"non-adjacent repeated id", s1Doc(t, 1, "amd64", s1Hist("top", c, b, ""), good[1], good[2])},
		{"bad created", s1Doc(t, 1, "amd64", s1Hist("top", a, b, `,"created":"yesterday"`), good[1], good[2])},
		{"bad throwaway", s1Doc(t, 1, "amd64", s1Hist("top", a, b, `,"throwaway":"yes"`), good[1], good[2])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseSchema1(tc.doc)
			var ie *pullkit.InvalidError
			if !errors.As(err, &ie) || !errors.Is(err, pullkit.ErrInvalid) {
				t.Fatalf("got %v, %v; want *pullkit.InvalidError", m, err)
			}
			if ie.What != MediaTypeDockerSchema1 {
				t.Errorf("MediaType %q", ie.What)
			}
		})
	}

	t.Run("valid", func(t *testing.T) {
		m, err := parseSchema1(s1Doc(t, 1, "aarch64", good...))
		if err != nil {
			t.Fatal(err)
		}
		if m.Platform.OS != "windows" || m.Platform.Architecture != "arm64" {
			t.Errorf("platform %v, want windows (newest s1Entry) / arm64 (normalised aarch64)", m.Platform)
		}
		if len(m.Layers) != 3 || !m.Layers[2].Empty || m.Layers[0].Empty || m.Layers[1].Empty {
			t.Errorf("layers %+v, want 3 with only the top (throwaway) empty", m.Layers)
		}
		if m.Layers[0].Digest != digest.FromString("base") || m.Schema1.History[0].ID != c || m.Schema1.History[2].ID != a {
			t.Errorf("not base first: %+v", m.Schema1.History)
		}
	})
	t.Run("os defaults to linux", func(t *testing.T) {
		m, err := parseSchema1(s1Doc(t, 1, "", s1Hist("top", a, b, `,"architecture":"x86_64"`), good[1], good[2]))
		if err != nil {
			t.Fatal(err)
		}
		if m.Platform.OS != "linux" || m.Platform.Architecture != "amd64" {
			t.Errorf("platform %v, want linux/amd64 (arch from the newest s1Entry when the manifest has none)", m.Platform)
		}
	})
	t.Run("adjacent duplicate ids dropped", func(t *testing.T) {
		// history newest first: a, b (comment new), b (comment old), c.
		doc := s1Doc(t, 1, "amd64", good[0], s1Hist("dup-new", b, c, `,"comment":"new"`), s1Hist("dup-old", b, c, `,"comment":"old"`), good[2])
		m, err := parseSchema1(doc)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Layers) != 3 || len(m.Schema1.History) != 3 {
			t.Fatalf("%d layers, want 3 after dropping the duplicate", len(m.Layers))
		}
		// Walking from the top, the newer of two adjacent duplicates goes (docker, containers/image).
		if m.Layers[1].Digest != digest.FromString("dup-old") || m.Schema1.History[1].Comment != "old" {
			t.Errorf("kept %s %q, want the older duplicate", m.Layers[1].Digest, m.Schema1.History[1].Comment)
		}
	})
	t.Run("duplicate top id dropped", func(t *testing.T) {
		doc := s1Doc(t, 1, "amd64", s1Hist("t1", a, b, `,"os":"plan9"`), s1Hist("t2", a, b, `,"os":"windows"`), good[1], good[2])
		m, err := parseSchema1(doc)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Layers) != 3 || m.Platform.OS != "windows" || m.Layers[2].Digest != digest.FromString("t2") {
			t.Errorf("layers %v os %s, want 3 layers and the kept s1Entry's os", m.Layers, m.Platform.OS)
		}
	})
}

// ---- signing ----

// s1KeySet holds the keys and certificates the signing tests share (generated once:
// RSA key generation is slow).
type s1KeySet struct {
	p256, p384, p521 *ecdsa.PrivateKey
	rsa2048          *rsa.PrivateKey
	caKey            *ecdsa.PrivateKey
	ca, leaf384      *x509.Certificate
	leafRSA          *x509.Certificate
}

var (
	s1KeysOnce sync.Once
	s1TestKeys s1KeySet
	s1KeysErr  error
)

var (
	s1NotBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	s1NotAfter  = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

func s1GenerateKeys(k *s1KeySet) error {
	var err error
	if k.p256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return err
	}
	if k.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		return err
	}
	if k.p521, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader); err != nil {
		return err
	}
	if k.rsa2048, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return err
	}
	if k.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: s1NotBefore, NotAfter: s1NotAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, k.caKey.Public(), k.caKey)
	if err != nil {
		return err
	}
	if k.ca, err = x509.ParseCertificate(der); err != nil {
		return err
	}
	leaf := func(serial int64, pub crypto.PublicKey) (*x509.Certificate, error) {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "signer"},
			NotBefore: s1NotBefore, NotAfter: s1NotAfter, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, k.ca, pub, k.caKey)
		if err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}
	if k.leaf384, err = leaf(2, k.p384.Public()); err != nil {
		return err
	}
	k.leafRSA, err = leaf(3, k.rsa2048.Public())
	return err
}

func s1Keys(t testing.TB) *s1KeySet {
	t.Helper()
	s1KeysOnce.Do(func() { s1KeysErr = s1GenerateKeys(&s1TestKeys) })
	if s1KeysErr != nil {
		t.Fatalf("generating test keys: %v", s1KeysErr)
	}
	return &s1TestKeys
}

// s1ProtectedOf returns the decoded protected header of signature i of a signed document.
func s1ProtectedOf(t testing.TB, doc []byte, i int) (formatLength int, formatTail string) {
	t.Helper()
	fx := s1DecodeFixture(t, doc)
	b, err := base64.RawURLEncoding.DecodeString(fx.Signatures[i].Protected)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		FormatLength int    `json:"formatLength"`
		FormatTail   string `json:"formatTail"`
		Time         string `json:"time"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	if _, err := time.Parse(time.RFC3339, p.Time); err != nil {
		t.Errorf("protected time %q: %v", p.Time, err)
	}
	return p.FormatLength, p.FormatTail
}

func TestSignSchema1RoundTrip(t *testing.T) {
	k := s1Keys(t)
	pretty := s1ReadFixture(t, "schema1-unsigned/mitr-buxybox-2016-unsigned.json")
	httpd, err := parseSchema1(s1ReadFixture(t, "schema1-signed/httpd-copy-by-containers-image-2020.json"))
	if err != nil {
		t.Fatal(err)
	}
	compact := httpd.Schema1.Payload
	for _, tc := range []struct {
		name  string
		key   crypto.Signer
		chain []*x509.Certificate
		alg   string // "" = SignSchema1's choice
		want  string
	}{
		{"EC P-256 jwk", k.p256, nil, "", "ES256"},
		{"EC P-384 jwk", k.p384, nil, "", "ES384"},
		{"EC P-521 jwk", k.p521, nil, "", "ES512"},
		{"RSA 2048 jwk", k.rsa2048, nil, "", "RS256"},
		{"RSA 2048 RS384", k.rsa2048, nil, "RS384", "RS384"},
		{"RSA 2048 RS512", k.rsa2048, nil, "RS512", "RS512"},
		{"EC P-384 x5c chain", k.p384, []*x509.Certificate{k.leaf384, k.ca}, "", "ES384"},
		{"RSA x5c chain", k.rsa2048, []*x509.Certificate{k.leafRSA, k.ca}, "", "RS256"},
	} {
		for _, p := range []struct {
			name    string
			payload []byte
		}{{"pretty", pretty}, {"compact", compact}} {
			t.Run(tc.name+"/"+p.name, func(t *testing.T) {
				var doc []byte
				var err error
				if tc.alg == "" {
					doc, err = SignSchema1(p.payload, tc.key, tc.chain)
				} else {
					doc, err = signSchema1(p.payload, tc.key, tc.chain, tc.alg, time.Now())
				}
				if err != nil {
					t.Fatalf("sign: %v", err)
				}
				m, err := parseSchema1(doc)
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				if m.Digest != digest.FromBytes(p.payload) || !bytes.Equal(m.Schema1.Payload, p.payload) {
					t.Errorf("Digest %s, want sha256(payload) %s", m.Digest, digest.FromBytes(p.payload))
				}
				if m.MediaType != MediaTypeDockerSchema1Signed {
					t.Errorf("MediaType %q", m.MediaType)
				}
				wantID, err := LibtrustKeyID(tc.key.Public())
				if err != nil {
					t.Fatal(err)
				}
				want := Schema1Signature{KeyID: wantID, Algorithm: tc.want, Chain: tc.chain != nil}
				if len(m.Schema1.Signatures) != 1 || m.Schema1.Signatures[0] != want {
					t.Errorf("signatures %+v, want [%+v]", m.Schema1.Signatures, want)
				}
				fl, _ := s1ProtectedOf(t, doc, 0)
				if !bytes.Equal(doc[:fl], p.payload[:fl]) {
					t.Errorf("document does not start with payload[:formatLength]")
				}

				// One flipped byte inside the signed range: "latest" -> "latesu".
				i := bytes.Index(doc[:fl], []byte(`latest"`))
				if i < 0 {
					t.Fatal("no tag in payload")
				}
				bad := bytes.Clone(doc)
				bad[i+5] ^= 1
				_, err = parseSchema1(bad)
				var se *SignatureError
				if !errors.As(err, &se) || se.Check != "signature" || se.KeyID != wantID {
					t.Errorf("flipped byte: err %v, want Check signature for key %s", err, wantID)
				}
			})
		}
	}
}

// TestSignSchema1Layout checks that SignSchema1 writes what libtrust writes, by signing
// the payloads of two real documents and comparing everything up to the key id.
func TestSignSchema1Layout(t *testing.T) {
	k := s1Keys(t)
	for _, tc := range []struct {
		file   string
		canon  digest.Digest
		prefix string
	}{
		{"hello-world-dockerhub-2015.json", "sha256:02fee8c3220ba806531f606525eceb83f4feb654f62b207191b1c9209188dedd",
			",\n   \"signatures\": [\n      {\n         \"header\": {\n            \"jwk\": {\n               \"crv\": \"P-256\",\n               \"kid\": \""},
		{"httpd-copy-by-containers-image-2020.json", "sha256:6feeaff9d4420e29f96881eb712e8762c28615666340222c8e054259f9bc87d4",
			`,"signatures":[{"header":{"jwk":{"crv":"P-256","kid":"`},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw := s1ReadFixture(t, "schema1-signed/"+tc.file)
			orig, err := parseSchema1(raw)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := SignSchema1(orig.Schema1.Payload, k.p256, nil)
			if err != nil {
				t.Fatal(err)
			}
			fl, tail := s1ProtectedOf(t, doc, 0)
			ofl, otail := s1ProtectedOf(t, raw, 0)
			if fl != ofl || tail != otail {
				t.Errorf("formatLength/Tail %d/%q, the original has %d/%q", fl, tail, ofl, otail)
			}
			if !bytes.HasPrefix(doc[fl:], []byte(tc.prefix)) || !bytes.HasPrefix(raw[fl:], []byte(tc.prefix)) {
				t.Errorf("signature block starts %q, want %q", doc[fl:min(len(doc), fl+len(tc.prefix))], tc.prefix)
			}
			// (the compact fixture has a newline appended after the document)
			if end := bytes.TrimRight(raw, "\n"); !bytes.HasSuffix(doc, end[len(end)-3:]) {
				t.Errorf("document ends %q, the original ends %q", doc[len(doc)-3:], end[len(end)-3:])
			}
			m, err := parseSchema1(doc)
			if err != nil {
				t.Fatal(err)
			}
			if m.Digest != tc.canon {
				t.Errorf("re-signed digest %s, want the original canonical %s", m.Digest, tc.canon)
			}
		})
	}
}

// s1SigObjects returns the signatures array of a signed document and its signed prefix.
func s1SigObjects(t testing.TB, doc []byte) ([]map[string]any, []byte) {
	t.Helper()
	var top struct {
		Signatures []map[string]any `json:"signatures"`
	}
	if err := json.Unmarshal(doc, &top); err != nil {
		t.Fatal(err)
	}
	fl, _ := s1ProtectedOf(t, doc, 0)
	return top.Signatures, doc[:fl]
}

// s1WithSignatures appends a compact signatures member holding sigs to prefix.
func s1WithSignatures(t testing.TB, prefix []byte, sigs any) []byte {
	t.Helper()
	b, err := json.Marshal(sigs)
	if err != nil {
		t.Fatal(err)
	}
	return append(append(append(bytes.Clone(prefix), `,"signatures":`...), b...), '}')
}

func s1B64json(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestParseSchema1MultipleSignatures(t *testing.T) {
	k := s1Keys(t)
	payload := s1ReadFixture(t, "schema1-unsigned/mitr-buxybox-2016-unsigned.json")
	docA, err := SignSchema1(payload, k.p256, nil)
	if err != nil {
		t.Fatal(err)
	}
	docB, err := SignSchema1(payload, k.rsa2048, []*x509.Certificate{k.leafRSA, k.ca})
	if err != nil {
		t.Fatal(err)
	}
	sigA, prefix := s1SigObjects(t, docA)
	sigB, _ := s1SigObjects(t, docB)

	t.Run("two s1Keys, same payload", func(t *testing.T) {
		m, err := parseSchema1(s1WithSignatures(t, prefix, append(sigA, sigB...)))
		if err != nil {
			t.Fatal(err)
		}
		idA, _ := LibtrustKeyID(k.p256.Public())
		idB, _ := LibtrustKeyID(k.rsa2048.Public())
		want := []Schema1Signature{{idA, "ES256", false}, {idB, "RS256", true}}
		if !reflect.DeepEqual(m.Schema1.Signatures, want) || m.Digest != digest.FromBytes(payload) {
			t.Errorf("signatures %+v digest %s, want %+v %s", m.Schema1.Signatures, m.Digest, want, digest.FromBytes(payload))
		}
	})
	t.Run("second signature over another payload", func(t *testing.T) {
		other := bytes.Replace(payload, []byte(`"latest"`), []byte(`"latest2"`), 1)
		docC, err := SignSchema1(other, k.p384, nil)
		if err != nil {
			t.Fatal(err)
		}
		sigC, _ := s1SigObjects(t, docC)
		_, err = parseSchema1(s1WithSignatures(t, prefix, append(sigA, sigC...)))
		var se *SignatureError
		if !errors.As(err, &se) || se.Check != "payload mismatch" || se.Index != 1 {
			t.Errorf("err %v, want Check payload mismatch at index 1", err)
		}
	})
}

func TestParseSchema1SignatureChecks(t *testing.T) {
	k := s1Keys(t)
	payload := s1ReadFixture(t, "schema1-unsigned/mitr-buxybox-2016-unsigned.json")
	doc, err := SignSchema1(payload, k.p256, nil)
	if err != nil {
		t.Fatal(err)
	}
	sigs, prefix := s1SigObjects(t, doc)
	fl, tail := s1ProtectedOf(t, doc, 0)
	good := sigs[0]
	clone := func(m map[string]any) map[string]any {
		b, _ := json.Marshal(m)
		var c map[string]any
		_ = json.Unmarshal(b, &c)
		return c
	}
	// mutate returns a document with one signature, edited by f.
	mutate := func(f func(sig, header, jwk map[string]any)) []byte {
		s := clone(good)
		h := s["header"].(map[string]any)
		j, _ := h["jwk"].(map[string]any)
		f(s, h, j)
		return s1WithSignatures(t, prefix, []any{s})
	}
	protected := func(p map[string]any) func(sig, header, jwk map[string]any) {
		return func(sig, _, _ map[string]any) { sig["protected"] = s1B64json(t, p) }
	}
	rawProtected := func(s string) func(sig, header, jwk map[string]any) {
		return func(sig, _, _ map[string]any) { sig["protected"] = base64.RawURLEncoding.EncodeToString([]byte(s)) }
	}
	rsaJWK := func(n, e []byte) func(sig, header, jwk map[string]any) {
		return func(_, h, _ map[string]any) {
			h["alg"] = "RS256"
			h["jwk"] = map[string]any{"kty": "RSA", "n": base64.RawURLEncoding.EncodeToString(n), "e": base64.RawURLEncoding.EncodeToString(e)}
		}
	}
	selfSigned := func(cn string) string {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: cn},
			NotBefore: s1NotBefore, NotAfter: s1NotAfter}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.p384.Public(), k.p384)
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(der)
	}
	keyID, _ := LibtrustKeyID(k.p256.Public())
	otherID, _ := LibtrustKeyID(k.p384.Public())

	for _, tc := range []struct {
		name  string
		doc   []byte
		check string
	}{
		{"signatures empty", s1WithSignatures(t, prefix, []any{}), "signatures"},
		{"signatures null", s1WithSignatures(t, prefix, nil), "signatures"},
		{"signatures object", s1WithSignatures(t, prefix, map[string]any{"a": 1}), "signatures"},
		{"signatures of strings", s1WithSignatures(t, prefix, []string{"x"}), "signatures"},
		{"protected not base64url", mutate(func(s, _, _ map[string]any) { s["protected"] = "!!!" }), "protected header"},
		{"protected not an object", mutate(rawProtected(`[1]`)), "protected header"},
		{"protected not JSON", mutate(rawProtected(`{"formatLength":`)), "protected header"},
		{"no formatTail", mutate(protected(map[string]any{"formatLength": fl})), "protected header"},
		{"formatTail not base64url", mutate(protected(map[string]any{"formatLength": fl, "formatTail": "*"})), "protected header"},
		{"no formatLength", mutate(protected(map[string]any{"formatTail": tail})), "formatLength"},
		{"formatLength null", mutate(rawProtected(`{"formatLength":null,"formatTail":"` + tail + `"}`)), "formatLength"},
		{"formatLength negative", mutate(protected(map[string]any{"formatLength": -1, "formatTail": tail})), "formatLength"},
		{"formatLength past the end", mutate(protected(map[string]any{"formatLength": 1 << 20, "formatTail": tail})), "formatLength"},
		{"formatLength huge", mutate(rawProtected(`{"formatLength":99999999999999999999999999,"formatTail":"` + tail + `"}`)), "formatLength"},
		{"formatLength max int64", mutate(rawProtected(`{"formatLength":9223372036854775807,"formatTail":"` + tail + `"}`)), "formatLength"},
		{"formatLength exponent", mutate(rawProtected(`{"formatLength":1e400,"formatTail":"` + tail + `"}`)), "formatLength"},
		{"formatLength fraction", mutate(rawProtected(`{"formatLength":12.5,"formatTail":"` + tail + `"}`)), "formatLength"},
		{"formatLength string", mutate(rawProtected(fmt.Sprintf(`{"formatLength":"%d","formatTail":"%s"}`, fl, tail))), "formatLength"},
		{"payload not JSON", mutate(protected(map[string]any{"formatLength": fl, "formatTail": ""})), "payload"},
		{"payload not an object", mutate(protected(map[string]any{"formatLength": 0, "formatTail": base64.RawURLEncoding.EncodeToString([]byte(`[1]`))})), "payload"},
		{"no key", mutate(func(_, h, _ map[string]any) { delete(h, "jwk") }), "key"},
		{"jwk null", mutate(func(_, h, _ map[string]any) { h["jwk"] = nil }), "key"},
		{"jwk kty oct", mutate(func(_, _, j map[string]any) { j["kty"] = "oct" }), "key"},
		{"jwk curve P-192", mutate(func(_, _, j map[string]any) { j["crv"] = "P-192" }), "key"},
		{"jwk point off the curve", mutate(func(_, _, j map[string]any) { j["y"] = j["x"] }), "key"},
		{"jwk x too long", mutate(func(_, _, j map[string]any) {
			j["x"] = base64.RawURLEncoding.EncodeToString(make([]byte, 33))
		}), "key"},
		{"jwk x not base64url", mutate(func(_, _, j map[string]any) { j["x"] = "%%" }), "key"},
		{"RSA e = 1", mutate(rsaJWK(k.rsa2048.N.Bytes(), []byte{1})), "key"},
		{"RSA e too long", mutate(rsaJWK(k.rsa2048.N.Bytes(), []byte{1, 0, 0, 0, 1})), "key"},
		{"RSA 512-bit n", mutate(rsaJWK(bytes.Repeat([]byte{0xff}, 64), []byte{1, 0, 1})), "key"},
		{"x5c not base64", mutate(func(_, h, _ map[string]any) { h["x5c"] = []string{"%%"} }), "key"},
		{"x5c not a certificate", mutate(func(_, h, _ map[string]any) { h["x5c"] = []string{"AAAA"} }), "key"},
		{"x5c not a chain", mutate(func(_, h, _ map[string]any) { h["x5c"] = []string{selfSigned("one"), selfSigned("two")} }), "key"},
		{"alg for another curve", mutate(func(_, h, _ map[string]any) { h["alg"] = "ES384" }), "key"},
		{"alg RSA for an EC key", mutate(func(_, h, _ map[string]any) { h["alg"] = "RS256" }), "key"},
		{"alg HS256", mutate(func(_, h, _ map[string]any) { h["alg"] = "HS256" }), "key"},
		{"alg none", mutate(func(_, h, _ map[string]any) { h["alg"] = "none" }), "key"},
		{"signature not base64url", mutate(func(s, _, _ map[string]any) { s["signature"] = "!!" }), "signature"},
		{"signature too short", mutate(func(s, _, _ map[string]any) { s["signature"] = s["signature"].(string)[:40] }), "signature"},
		{"signature zero", mutate(func(s, _, _ map[string]any) {
			s["signature"] = base64.RawURLEncoding.EncodeToString(make([]byte, 64))
		}), "signature"},
		{"x5c key replaces the jwk", mutate(func(_, h, _ map[string]any) { h["x5c"] = []string{selfSigned("x")} }), "key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseSchema1(tc.doc)
			var se *SignatureError
			if !errors.As(err, &se) || !errors.Is(err, pullkit.ErrInvalid) {
				t.Fatalf("err %v, want *SignatureError", err)
			}
			if se.Check != tc.check {
				t.Errorf("Check %q, want %q (%v)", se.Check, tc.check, err)
			}
		})
	}

	t.Run("jwk kid is not trusted", func(t *testing.T) {
		d := mutate(func(_, _, j map[string]any) { j["kid"] = otherID })
		m, err := parseSchema1(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Schema1.Signatures[0].KeyID; got != keyID || got == otherID {
			t.Errorf("KeyID %s, want the computed %s, not the jwk's %s", got, keyID, otherID)
		}
	})
	t.Run("padded base64url signature accepted", func(t *testing.T) {
		// libtrust accepts padded base64url; the signature value is not part of the
		// signing input, so padding it must still verify.
		d := mutate(func(s, _, _ map[string]any) {
			v := s["signature"].(string)
			s["signature"] = v + strings.Repeat("=", (4-len(v)%4)%4)
		})
		if _, err := parseSchema1(d); err != nil {
			t.Errorf("padded signature: %v", err)
		}
	})
	t.Run("unmodified", func(t *testing.T) {
		if _, err := parseSchema1(s1WithSignatures(t, prefix, []any{good})); err != nil {
			t.Errorf("rebuilt document: %v", err)
		}
	})
}

func TestSignSchema1Errors(t *testing.T) {
	k := s1Keys(t)
	payload := s1ReadFixture(t, "schema1-unsigned/mitr-buxybox-2016-unsigned.json")
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		payload []byte
		key     crypto.Signer
		chain   []*x509.Certificate
		alg     string
		target  error
	}{
		{"not JSON", []byte(`{"a":`), k.p256, nil, "", pullkit.ErrInvalid},
		{"array", []byte(`[1]`), k.p256, nil, "", pullkit.ErrInvalid},
		{"empty object", []byte(" {} "), k.p256, nil, "", pullkit.ErrInvalid},
		{"already signed", s1ReadFixture(t, "schema1-signed/mitr-buxybox-2016.json"), k.p256, nil, "", pullkit.ErrInvalid},
		{"nil key", payload, nil, nil, "", pullkit.ErrUnsupported},
		{"Ed25519 key", payload, edKey, nil, "", pullkit.ErrUnsupported},
		{"P-224 key", payload, s1MustEC(t, elliptic.P224()), nil, "", pullkit.ErrUnsupported},
		{"alg not for the key", payload, k.p256, nil, "ES512", pullkit.ErrUnsupported},
		{"chain for another key", payload, k.p256, []*x509.Certificate{k.leaf384, k.ca}, "", pullkit.ErrInvalid},
		{"nil certificate", payload, k.p384, []*x509.Certificate{k.leaf384, nil}, "", pullkit.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := signSchema1(tc.payload, tc.key, tc.chain, tc.alg, time.Now())
			if !errors.Is(err, tc.target) {
				t.Errorf("err %v, want %v", err, tc.target)
			}
		})
	}
}

func s1MustEC(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestLibtrustKeyID(t *testing.T) {
	// The kid of every signed fixture is recomputed from its jwk in
	// TestParseSchema1SignedFixtures; here, the format.
	id, err := LibtrustKeyID(s1Keys(t).rsa2048.Public())
	if err != nil {
		t.Fatal(err)
	}
	groups := strings.Split(id, ":")
	if len(groups) != 12 {
		t.Fatalf("%q has %d groups, want 12", id, len(groups))
	}
	for _, g := range groups {
		if len(g) != 4 || strings.Trim(g, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
			t.Errorf("group %q is not 4 base32 characters", g)
		}
	}
	if _, err := LibtrustKeyID(struct{}{}); err == nil {
		t.Errorf("no error for a non-key")
	}
}

// ---- Config ----

func s1FakeDiffIDs(n int) []digest.Digest {
	out := make([]digest.Digest, n)
	for i := range out {
		out[i] = digest.FromString(fmt.Sprint("diff", i))
	}
	return out
}

type s1TestConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	RootFS       struct {
		Type    string          `json:"type"`
		DiffIDs []digest.Digest `json:"diff_ids"`
	} `json:"rootfs"`
	History []struct {
		Created    time.Time `json:"created"`
		CreatedBy  string    `json:"created_by"`
		EmptyLayer bool      `json:"empty_layer"`
	} `json:"history"`
}

func TestSchema1ConfigHelloWorld(t *testing.T) {
	m, err := parseSchema1(s1ReadFixture(t, "schema1-signed/hello-world-dockerhub-2015.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The CMD layer is the empty gzip without a throwaway flag: Empty in the model, but
	// docker and skopeo still give it a diffID, so the config must too.
	if _, err := m.Schema1.SynthesizeConfig(s1FakeDiffIDs(1)); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("Config with 1 diffID for 2 unflagged layers: %v, want pullkit.ErrInvalid", err)
	}
	diffIDs := s1FakeDiffIDs(2)
	b, err := m.Schema1.SynthesizeConfig(diffIDs)
	if err != nil {
		t.Fatal(err)
	}
	again, err := m.Schema1.SynthesizeConfig(diffIDs)
	if err != nil || !bytes.Equal(b, again) {
		t.Errorf("Config is not deterministic")
	}
	var cfg s1TestConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("config is not JSON: %v", err)
	}
	if cfg.RootFS.Type != "layers" || !reflect.DeepEqual(cfg.RootFS.DiffIDs, diffIDs) {
		t.Errorf("rootfs %+v, want layers %v", cfg.RootFS, diffIDs)
	}
	if len(cfg.History) != 2 || cfg.History[0].EmptyLayer || cfg.History[1].EmptyLayer || !m.Layers[1].Empty {
		t.Fatalf("history %+v, want 2 entries, neither empty_layer (no throwaway flag), layer 1 Empty in the model", cfg.History)
	}
	if cfg.History[1].CreatedBy != `/bin/sh -c #(nop) CMD ["/hello"]` || cfg.Architecture != "amd64" || cfg.OS != "linux" {
		t.Errorf("config %+v", cfg)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "parent", "Size", "parent_id", "layer_id", "throwaway"} {
		if _, ok := obj[k]; ok {
			t.Errorf("config keeps %q", k)
		}
	}
	// docker 1.7.1 < 1.8.3: re-encoded through the v1 image structure, which has no PortSpecs.
	if bytes.Contains(b, []byte("PortSpecs")) || !strings.Contains(m.Schema1.History[1].V1Compatibility, "PortSpecs") {
		t.Errorf("legacy v1 fields not dropped by the re-encoding")
	}
	var cc struct {
		Config struct{ Cmd []string } `json:"config"`
	}
	if err := json.Unmarshal(b, &cc); err != nil || !reflect.DeepEqual(cc.Config.Cmd, []string{"/hello"}) {
		t.Errorf("config.Cmd %v, want [/hello]", cc.Config.Cmd)
	}
}

// TestSchema1ConfigHttpd: containers/image wrote this schema 1 from the image whose config
// is config/httpd-2.4.23-config.json; given that config's diffIDs, Config must give it back.
func TestSchema1ConfigHttpd(t *testing.T) {
	m, err := parseSchema1(s1ReadFixture(t, "schema1-signed/httpd-copy-by-containers-image-2020.json"))
	if err != nil {
		t.Fatal(err)
	}
	var orig map[string]any
	if err := json.Unmarshal(s1ReadFixture(t, "config/httpd-2.4.23-config.json"), &orig); err != nil {
		t.Fatal(err)
	}
	var diffIDs []digest.Digest
	for _, d := range orig["rootfs"].(map[string]any)["diff_ids"].([]any) {
		diffIDs = append(diffIDs, digest.Digest(d.(string)))
	}
	b, err := m.Schema1.SynthesizeConfig(diffIDs)
	if err != nil {
		t.Fatal(err)
	}
	var cfg s1TestConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 5 || len(cfg.History) != 15 || len(cfg.History) != len(m.Layers) {
		t.Fatalf("%d diff_ids %d history, want 5 and 15", len(cfg.RootFS.DiffIDs), len(cfg.History))
	}
	for i, h := range cfg.History {
		if h.EmptyLayer != m.Schema1.History[i].Throwaway {
			t.Errorf("history[%d].empty_layer %v, layer %s throwaway %v", i, h.EmptyLayer, m.Layers[i].Digest, m.Schema1.History[i].Throwaway)
		}
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, orig) {
		for k := range orig {
			if !reflect.DeepEqual(got[k], orig[k]) {
				t.Errorf("config %q = %v\nwant %v", k, got[k], orig[k])
			}
		}
		for k := range got {
			if _, ok := orig[k]; !ok {
				t.Errorf("config has extra %q", k)
			}
		}
	}
}

func TestSchema1ConfigErrors(t *testing.T) {
	m, err := parseSchema1(s1ReadFixture(t, "schema1-signed/quay-buildtest2-2018.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Schema1.SynthesizeConfig(s1FakeDiffIDs(2)); err != nil { // 6 layers, 4 empty
		t.Errorf("2 diffIDs for 2 non-empty layers: %v", err)
	}
	for _, tc := range []struct {
		name string
		s    *Schema1
		ids  []digest.Digest
	}{
		{"too few diffIDs", m.Schema1, s1FakeDiffIDs(1)},
		{"too many diffIDs", m.Schema1, s1FakeDiffIDs(6)},
		{"invalid diffID", m.Schema1, []digest.Digest{"sha256:nope", s1FakeDiffIDs(1)[0]}},
		{"no history", &Schema1{}, nil},
		{"nil", nil, nil},
		{"not an object", &Schema1{History: []Schema1History{{V1Compatibility: "[1]", Empty: true, Throwaway: true}}}, nil},
		{"legacy with bad fields", &Schema1{History: []Schema1History{{V1Compatibility: `{"docker_version":"1.6.0","config":{"Cmd":5}}`, DockerVersion: "1.6.0", Empty: true, Throwaway: true}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.s.SynthesizeConfig(tc.ids)
			var ie *pullkit.InvalidError
			if !errors.As(err, &ie) {
				t.Errorf("err %v, want *pullkit.InvalidError", err)
			}
		})
	}
}

func TestDockerVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"1.7.1", "1.8.3", true},
		{"1.8.2-fc22", "1.8.3", true},
		{"1.8.3", "1.8.3", false},
		{"1.10.3", "1.8.3", false},
		{"17.09.0-ce", "1.8.3", false},
		{"1.8", "1.8.3", true},
	} {
		if got := dockerVersionLess(tc.a, tc.b); got != tc.want {
			t.Errorf("dockerVersionLess(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestParseSchema1DuplicateSignatures(t *testing.T) {
	k := s1Keys(t)
	payload := s1ReadFixture(t, "schema1-unsigned/mitr-buxybox-2016-unsigned.json")
	docA, err := SignSchema1(payload, k.p256, nil)
	if err != nil {
		t.Fatal(err)
	}
	docB, err := SignSchema1(payload, k.p384, nil)
	if err != nil {
		t.Fatal(err)
	}
	sigA, prefix := s1SigObjects(t, docA)
	sigB, _ := s1SigObjects(t, docB)
	idA, _ := LibtrustKeyID(k.p256.Public())
	idB, _ := LibtrustKeyID(k.p384.Public())

	t.Run("copies of one signature are verified and reported once", func(t *testing.T) {
		var sigs []map[string]any
		for i := range MaxSchema1Signatures {
			if i == 3 {
				sigs = append(sigs, sigB...)
			} else {
				sigs = append(sigs, sigA...)
			}
		}
		m, err := parseSchema1(s1WithSignatures(t, prefix, sigs))
		if err != nil {
			t.Fatal(err)
		}
		want := []Schema1Signature{{idA, "ES256", false}, {idB, "ES384", false}}
		if !reflect.DeepEqual(m.Schema1.Signatures, want) {
			t.Errorf("signatures %+v, want %+v", m.Schema1.Signatures, want)
		}
	})
	t.Run("more than the cap is invalid, whatever they are", func(t *testing.T) {
		var sigs []map[string]any
		for range MaxSchema1Signatures + 1 {
			sigs = append(sigs, sigA...)
		}
		doc := s1WithSignatures(t, prefix, sigs)
		_, err := parseSchema1(doc)
		var se *SignatureError
		if !errors.As(err, &se) || se.Check != "signatures" || !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("err %v, want a SignatureError of check signatures wrapping ErrInvalid", err)
		}
		// Verified by its canonical digest, it is the manifest named, invalid: not
		// damage in transit.
		if _, err := Verify(doc, MediaTypeDockerSchema1Signed, digest.FromBytes(payload)); !errors.As(err, &se) || errors.Is(err, pullkit.ErrDigestMismatch) {
			t.Errorf("Verify: %v, want the SignatureError", err)
		}
		damaged := bytes.Replace(doc, []byte(`"latest"`), []byte(`"lateXt"`), 1)
		if _, err := Verify(damaged, MediaTypeDockerSchema1Signed, digest.FromBytes(payload)); !errors.Is(err, pullkit.ErrDigestMismatch) {
			t.Errorf("Verify of a damaged payload: %v, want ErrDigestMismatch", err)
		}
	})
	t.Run("a broken copy is still found, at its place", func(t *testing.T) {
		bad := map[string]any{}
		for k, v := range sigA[0] {
			bad[k] = v
		}
		bad["signature"] = "AAAA"
		_, err := parseSchema1(s1WithSignatures(t, prefix, []map[string]any{sigA[0], sigA[0], bad}))
		var se *SignatureError
		if !errors.As(err, &se) || se.Check != "signature" || se.Index != 2 {
			t.Errorf("err %v, want Check signature at index 2", err)
		}
	})
}
