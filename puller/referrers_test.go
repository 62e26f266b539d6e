package puller_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

const (
	sbomType = "application/spdx+json"
	sigType  = "application/vnd.dev.cosign.artifact.sig.v1+json"
)

func digestsOf(ds []manifest.Descriptor) []digest.Digest {
	var out []digest.Digest
	for _, d := range ds {
		out = append(out, d.Digest)
	}
	return out
}

// TestReferrers lists what refers to an image through the referrers API, and through
// the tag schema on a registry without it, filtered by artifact type either way.
func TestReferrers(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run("referrers API "+strconv.FormatBool(api), func(t *testing.T) {
			var opts []pullkittest.Option
			if !api {
				opts = append(opts, pullkittest.WithoutReferrersAPI())
			}
			reg := pullkittest.NewRegistry(t, opts...)
			img := reg.PushImage("app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
			sbom := reg.PushArtifact("app", img.Descriptor(), sbomType)
			sig := reg.PushArtifact("app", img.Descriptor(), sigType, pullkittest.Annotations(map[string]string{"k": "v"}))
			lonely := reg.PushImage("app", "v2", pullkittest.OCI, pullkittest.Layers(1, 64))
			c := newClient(t)
			for _, tc := range []struct {
				ref, artifactType string
				want              []digest.Digest
				requests          []string
			}{
				{img.Ref(), "", []digest.Digest{sbom.Digest, sig.Digest}, nil},
				{img.Ref(), sbomType, []digest.Digest{sbom.Digest}, nil},
				{reg.Ref("app:v1"), sigType, []digest.Digest{sig.Digest}, []string{"HEAD manifest v1"}},
				{img.Ref(), "application/other", nil, nil},
				{lonely.Ref(), "", nil, nil},
			} {
				reg.ResetRequests()
				got, err := c.Referrers(t.Context(), tc.ref, tc.artifactType)
				if err != nil {
					t.Fatalf("Referrers(%s, %q): %v", tc.ref, tc.artifactType, err)
				}
				if got == nil || !slices.Equal(digestsOf(got), tc.want) {
					t.Errorf("Referrers(%s, %q) = %v, want %v", tc.ref, tc.artifactType, digestsOf(got), tc.want)
				}
				for _, d := range got {
					want := sbom.Descriptor()
					if d.Digest == sig.Digest {
						want = sig.Descriptor()
					}
					if d.ArtifactType != want.ArtifactType || d.Size != want.Size || d.MediaType != manifest.MediaTypeOCIManifest {
						t.Errorf("entry %+v, want %+v", d, want)
					}
					if d.Digest == sig.Digest && d.Annotations["k"] != "v" {
						t.Errorf("entry %+v lost its annotations", d)
					}
				}
				subject := strings.TrimPrefix(tc.ref[strings.LastIndex(tc.ref, "@")+1:], "")
				if !strings.Contains(tc.ref, "@") {
					subject = img.Digest.String()
				}
				want := append(tc.requests, "GET referrers "+subject)
				if !api {
					want = append(want, "GET manifest sha256-"+strings.TrimPrefix(subject, "sha256:"))
				}
				if got := logLines(reg); !slices.Equal(got, want) {
					t.Errorf("Referrers(%s, %q) sent %q, want %q", tc.ref, tc.artifactType, got, want)
				}
			}
		})
	}
}

// TestReferrersFilteredByTheClient: go-containerregistry's registry has the referrers
// API but ignores artifactType (and says so by sending no OCI-Filters-Applied): the
// client filters. (That registry reports a referrer's config media type as its
// artifactType, so these artifacts are written the pre-1.1 way, typed by their config.)
func TestReferrersFilteredByTheClient(t *testing.T) {
	kit := pullkittest.NewRegistry(t)
	img := kit.PushImage("app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	host := ggcrRegistry(t, registry.WithReferrersSupport(true))
	putRaw(t, host, "app", "v1", img.MediaType, img.Raw)
	subject := img.Descriptor()
	subject.Platform = nil
	subj, err := json.Marshal(subject)
	if err != nil {
		t.Fatal(err)
	}
	var want []digest.Digest
	for _, at := range []string{sbomType, sigType} {
		raw := []byte(`{"schemaVersion":2,"mediaType":"` + manifest.MediaTypeOCIManifest + `","config":{"mediaType":"` + at +
			`","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"subject":` + string(subj) + `}`)
		putRaw(t, host, "app", digest.FromBytes(raw).String(), manifest.MediaTypeOCIManifest, raw)
		want = append(want, digest.FromBytes(raw))
	}
	c := newClient(t)
	all, err := c.Referrers(t.Context(), host+"/app:v1", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("control: the registry lists %v, want both referrers", digestsOf(all))
	}
	got, err := c.Referrers(t.Context(), host+"/app@"+img.Digest.String(), sigType)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(digestsOf(got), want[1:]) {
		t.Errorf("Referrers(%s) = %v, want only the signature %s", sigType, digestsOf(got), want[1])
	}
}

// TestReferrersRealRegistry: distribution 2.8 has no referrers API; go-containerregistry
// keeps the sha256-<hex> tag when it pushes an artifact with a subject there, and
// Referrers reads it.
func TestReferrersRealRegistry(t *testing.T) {
	kit := pullkittest.NewRegistry(t)
	reg := regtest.Start(t)
	img := kit.PushImage("app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	blobs := [][]byte{img.Config.Data}
	for _, l := range img.Layers {
		blobs = append(blobs, l.Data)
	}
	reg.PushRaw(t, "app:v1", regtest.RawImage{MediaType: img.MediaType, Manifest: img.Raw, Blobs: blobs})
	var arts []*pullkittest.Artifact
	for _, at := range []string{sbomType, sigType} {
		a := kit.PushArtifact("app", img.Descriptor(), at)
		blobs := [][]byte{a.Config.Data}
		for _, b := range a.Blobs {
			blobs = append(blobs, b.Data)
		}
		reg.PushRaw(t, "app@"+a.Digest.String(), regtest.RawImage{MediaType: a.MediaType, Manifest: a.Raw, Blobs: blobs})
		arts = append(arts, a)
	}
	c := newClient(t)
	got, err := c.Referrers(t.Context(), reg.Ref("app:v1"), sbomType)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(digestsOf(got), []digest.Digest{arts[0].Digest}) {
		t.Fatalf("Referrers = %v, want the SBOM %s", digestsOf(got), arts[0].Digest)
	}
	// And the artifact pulls from the real registry by the digest listed.
	st := store.NewMemory()
	a, err := c.PullArtifact(t.Context(), reg.Host+"/app@"+got[0].Digest.String(), st)
	if err != nil {
		t.Fatal(err)
	}
	if a.ArtifactType != sbomType || a.Subject == nil || a.Subject.Digest != img.Digest || !store.Has(t.Context(), st, arts[0].Blobs[0].Digest) {
		t.Errorf("PullArtifact = %+v", a)
	}
}

// TestReferrersErrors: a subject nothing refers to is an empty list, not an error; a
// repository that does not exist is ErrNotFound.
func TestReferrersErrors(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithoutReferrersAPI(), pullkittest.WithNameUnknown())
	c := newClient(t)
	ref := reg.Ref("nothere@" + digest.FromString("x").String())
	_, err := c.Referrers(t.Context(), ref, "")
	if !errors.Is(err, pullkit.ErrNotFound) {
		t.Fatalf("Referrers of a missing repository: err = %v, want ErrNotFound", err)
	}
	if msg := oneLine(t, err); !strings.Contains(msg, ref) || !strings.Contains(msg, "NAME_UNKNOWN") {
		t.Errorf("error %q does not name %s and NAME_UNKNOWN", msg, ref)
	}
	if _, err := c.Referrers(t.Context(), reg.Ref("app:nope"), ""); !errors.Is(err, pullkit.ErrNotFound) {
		t.Errorf("Referrers of a missing tag: err = %v, want ErrNotFound", err)
	}
	if _, err := c.Referrers(t.Context(), "Bad/Ref", ""); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("Referrers of a bad reference: err = %v, want ErrInvalid", err)
	}
}

// TestPullArtifact pulls artifacts into a store: manifest verified, config and blobs
// fetched and verified, the artifact named last; and Pull still refuses it as an image,
// in one line.
func TestPullArtifact(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	sbom := reg.PushArtifact("app", img.Descriptor(), sbomType,
		pullkittest.ArtifactBlob(sbomType, []byte(`{"spdxVersion":"SPDX-2.3"}`)), pullkittest.ArtifactBlob("text/plain", []byte("notes")))
	withdrawn := []byte(`{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","artifactType":"application/example","blobs":[` +
		`{"mediaType":"text/plain","digest":"` + reg.PutBlob("app", []byte("hello")).String() + `","size":5}]}`)
	wd := reg.PutManifest("app", "old", manifest.MediaTypeOCIArtifact, withdrawn)

	c := newClient(t)
	for _, tc := range []struct {
		ref, artifactType string
		blobs             []digest.Digest
		digest            digest.Digest
	}{
		{sbom.Ref(), sbomType, []digest.Digest{sbom.Config.Digest, sbom.Blobs[0].Digest, sbom.Blobs[1].Digest}, sbom.Digest},
		{reg.Ref("app:old"), "application/example", []digest.Digest{digest.FromString("hello")}, wd},
	} {
		st, err := store.OpenLayout(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		a, err := c.PullArtifact(t.Context(), tc.ref, st)
		if err != nil {
			t.Fatalf("PullArtifact(%s): %v", tc.ref, err)
		}
		if a.Digest != tc.digest || a.ArtifactType != tc.artifactType || a.Reference != tc.ref || a.Name != tc.ref {
			t.Errorf("PullArtifact(%s) = %+v", tc.ref, a)
		}
		stored := verifiedBlobs(t, st)
		for _, d := range append(tc.blobs, tc.digest) {
			if !slices.Contains(stored, d) {
				t.Errorf("PullArtifact(%s): %s not stored", tc.ref, d)
			}
		}
		named, err := st.Image(t.Context(), tc.ref)
		if err != nil || named.Target.Digest != tc.digest || named.Target.MediaType != a.MediaType {
			t.Errorf("PullArtifact(%s) named %+v, %v", tc.ref, named, err)
		}

		_, err = c.Pull(t.Context(), tc.ref, store.NewMemory())
		if !errors.Is(err, pullkit.ErrUnsupported) {
			t.Errorf("Pull(%s): err = %v, want ErrUnsupported", tc.ref, err)
		} else if msg := oneLine(t, err); !strings.Contains(msg, tc.ref) || !strings.Contains(msg, "artifact") {
			t.Errorf("Pull(%s): error %q does not name the reference and say it is an artifact", tc.ref, msg)
		}
	}

	t.Run("verified", func(t *testing.T) {
		reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Route: pullkittest.RouteManifest, Ref: sbom.Digest.String()}, Fault: pullkittest.CorruptByte()})
		defer reg.ClearFaults()
		st := store.NewMemory()
		_, err := c.PullArtifact(t.Context(), sbom.Ref(), st)
		if !errors.Is(err, pullkit.ErrDigestMismatch) {
			t.Fatalf("err = %v, want ErrDigestMismatch", err)
		}
		oneLine(t, err)
		if imgs, _ := st.Images(t.Context()); len(imgs) != 0 || store.Has(t.Context(), st, sbom.Blobs[0].Digest) {
			t.Errorf("a manifest that did not verify left %v and its blobs", imgs)
		}
	})
	t.Run("a blob that does not verify", func(t *testing.T) {
		reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Route: pullkittest.RouteBlob, Ref: sbom.Blobs[1].Digest.String()}, Fault: pullkittest.CorruptByte()})
		defer reg.ClearFaults()
		st := store.NewMemory()
		_, err := c.PullArtifact(t.Context(), sbom.Ref(), st)
		if !errors.Is(err, pullkit.ErrDigestMismatch) || !strings.Contains(err.Error(), sbom.Blobs[1].Digest.String()) {
			t.Fatalf("err = %v, want ErrDigestMismatch naming %s", err, sbom.Blobs[1].Digest)
		}
		oneLine(t, err)
		if imgs, _ := st.Images(t.Context()); len(imgs) != 0 {
			t.Errorf("named %v", imgs)
		}
	})
	t.Run("an index is not an artifact", func(t *testing.T) {
		idx := reg.PushIndex("multi", "v1", pullkittest.OCIIndex, pullkittest.Layers(1, 64))
		if _, err := c.PullArtifact(t.Context(), idx.Ref(), store.NewMemory()); !errors.Is(err, pullkit.ErrUnsupported) {
			t.Errorf("err = %v, want ErrUnsupported", err)
		}
	})
	t.Run("nil store", func(t *testing.T) {
		if _, err := c.PullArtifact(t.Context(), sbom.Ref(), nil); !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("err = %v, want ErrInvalid", err)
		}
	})
}
