package puller_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// foreignPlatform is a platform this machine is not, so that the default platform never
// matches it.
func foreignPlatform() platforms.Platform {
	if platforms.Default().Architecture == "s390x" {
		return platforms.Platform{OS: "linux", Architecture: "ppc64le"}
	}
	return platforms.Platform{OS: "linux", Architecture: "s390x"}
}

// matcherFunc is an engine's own platform policy.
type matcherFunc func(platforms.Platform) bool

func (f matcherFunc) Match(p platforms.Platform) bool { return f(p) }
func (matcherFunc) Less(a, b platforms.Platform) bool { return false }

// TestPlatformOfASingleImage: a reference naming one image manifest (no index) whose
// config says another platform than the one asked for fails with a
// *platforms.NoMatchError naming both, in Pull and Inspect alike, and stores nothing;
// with the default platform the image is pulled, and the model says its platform so
// that an engine can warn.
func TestPlatformOfASingleImage(t *testing.T) {
	other := foreignPlatform()
	host := platforms.Platform{OS: "linux", Architecture: "amd64"}
	if other.Architecture == "ppc64le" {
		host = platforms.Platform{OS: "linux", Architecture: "s390x"}
	}
	reg := pullkittest.NewRegistry(t)
	for _, f := range []pullkittest.Format{pullkittest.OCI, pullkittest.Schema2, pullkittest.Schema1} {
		reg.PushImage("app", strings.ToLower(f.String()), f, pullkittest.Platform(other), pullkittest.Layers(1, 64))
	}
	for _, tag := range []string{"oci", "schema2", "schema1"} {
		ref := reg.Ref("app:" + tag)
		t.Run(tag, func(t *testing.T) {
			for _, call := range []struct {
				name string
				run  func(opts ...puller.PullOption) (*manifest.Image, store.Store, error)
			}{
				{"Pull", func(opts ...puller.PullOption) (*manifest.Image, store.Store, error) {
					st := store.NewMemory()
					img, err := newClient(t).Pull(t.Context(), ref, st, opts...)
					return img, st, err
				}},
				{"Inspect", func(opts ...puller.PullOption) (*manifest.Image, store.Store, error) {
					img, err := newClient(t).Inspect(t.Context(), ref, opts...)
					return img, nil, err
				}},
			} {
				for _, asked := range []struct {
					name string
					opt  puller.PullOption
					want string
				}{
					{"WithPlatform", puller.WithPlatform(host), host.String()},
					{"WithMatcher", puller.WithMatcher(matcherFunc(func(p platforms.Platform) bool { return p.Architecture == host.Architecture })), "chosen by the caller's matcher"},
				} {
					reg.ResetRequests()
					_, st, err := call.run(asked.opt)
					var nm *platforms.NoMatchError
					if !errors.Is(err, pullkit.ErrNoMatch) || !errors.As(err, &nm) {
						t.Fatalf("%s %s: err = %v, want a *platforms.NoMatchError", call.name, asked.name, err)
					}
					if nm.Want != asked.want || !slices.EqualFunc(nm.Offered, []platforms.Platform{other}, func(a, b platforms.Platform) bool { return a.String() == b.String() }) {
						t.Errorf("%s %s: NoMatchError wants %q, offered %v; want %q and %v", call.name, asked.name, nm.Want, nm.Offered, asked.want, other)
					}
					msg := oneLine(t, err)
					for _, s := range []string{ref, asked.want, other.String()} {
						if !strings.Contains(msg, s) {
							t.Errorf("%s %s: error %q does not name %q", call.name, asked.name, msg, s)
						}
					}
					if st != nil {
						if imgs, _ := st.Images(t.Context()); len(imgs) != 0 {
							t.Errorf("%s %s: a refused image was named: %v", call.name, asked.name, imgs)
						}
					}
					// Schema 1 says its platform in the manifest: no blob is worth fetching.
					if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob}); tag == "schema1" && n != 0 {
						t.Errorf("%s %s: %d blob requests for a schema 1 image of another platform", call.name, asked.name, n)
					}
				}
				// The default platform is enforced as an explicit one is (containerd refuses
				// an image of another platform too).
				if _, _, err := call.run(); !errors.Is(err, pullkit.ErrNoMatch) || !strings.Contains(oneLine(t, err), other.String()) {
					t.Errorf("%s with the default platform: %v, want ErrNoMatch naming %v", call.name, err, other)
				}
				// Any platform: pulled, and the model says what it is for.
				img, st, err := call.run(puller.WithMatcher(platforms.Any()))
				if err != nil {
					t.Fatalf("%s with any platform: %v", call.name, err)
				}
				if img.Platform == nil || img.Platform.String() != other.String() {
					t.Errorf("%s with any platform: model platform %v, want %v", call.name, img.Platform, other)
				}
				if st != nil {
					if _, err := st.Image(t.Context(), ref); err != nil {
						t.Errorf("%s with any platform: not named: %v", call.name, err)
					}
				}
				// Asked for explicitly, the image's own platform is fine.
				if _, _, err := call.run(puller.WithPlatform(other)); err != nil {
					t.Errorf("%s WithPlatform(%v): %v", call.name, other, err)
				}
			}
		})
	}
	t.Run("an index names the platform: no mismatch to check", func(t *testing.T) {
		idx := reg.PushIndex("multi", "v1", pullkittest.OCIIndex, pullkittest.Platforms(other, host), pullkittest.Layers(1, 64))
		img, err := newClient(t).Inspect(t.Context(), reg.Ref("multi:v1"), puller.WithPlatform(host))
		if err != nil || img.Manifest.Digest != idx.Images[1].Digest {
			t.Fatalf("Inspect = %+v, %v; want the %v entry", img, err, host)
		}
	})
}

// TestResolveRefusesWhatPullRefuses (issue 22): Resolve's answer is one Pull would pull,
// and what Pull refuses Resolve refuses with the same sentinel and step: an image of
// another platform (asked for, or the default one), an index of artifacts only, and an
// index whose only entry, without a platform, is an artifact. platforms.Any() opts out
// of the platform check for both.
func TestResolveRefusesWhatPullRefuses(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	host := platforms.Default()
	other := platforms.Platform{OS: "linux", Architecture: "s390x"}
	if host.Architecture == "s390x" {
		other = platforms.Platform{OS: "linux", Architecture: "ppc64le"}
	}
	reg.PushImage("foreign", "v1", pullkittest.OCI, pullkittest.Platform(other), pullkittest.Layers(1, 64))
	reg.PushImage("native", "v1", pullkittest.Schema2, pullkittest.Platform(host), pullkittest.Layers(1, 64))
	subject := reg.PushImage("signed", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	art := reg.PushArtifact("signed", subject.Descriptor(), "application/vnd.example.signature")
	withType := art.Descriptor()
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIIndex, "manifests": []manifest.Descriptor{withType}})
	reg.PutManifest("signed", "artifacts", manifest.MediaTypeOCIIndex, idx)
	withoutType := art.Descriptor()
	withoutType.ArtifactType = ""
	lone, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIIndex, "manifests": []manifest.Descriptor{withoutType}})
	reg.PutManifest("signed", "lone", manifest.MediaTypeOCIIndex, lone)

	c := newClient(t)
	for _, tc := range []struct {
		name string
		ref  string
		opts []puller.PullOption
		want error  // nil: both succeed
		op   string // the step both name
	}{
		{"another platform asked for", "native:v1", []puller.PullOption{puller.WithPlatform(other)}, pullkit.ErrNoMatch, pullkit.OpCheckPlatform},
		{"another platform than the default", "foreign:v1", nil, pullkit.ErrNoMatch, pullkit.OpCheckPlatform},
		{"another platform than the default, by digest", "foreign@" + string(mustResolveAny(t, c, reg.Ref("foreign:v1"))), nil, pullkit.ErrNoMatch, pullkit.OpCheckPlatform},
		{"its own platform asked for", "foreign:v1", []puller.PullOption{puller.WithPlatform(other)}, nil, ""},
		{"any platform", "foreign:v1", []puller.PullOption{puller.WithMatcher(platforms.Any())}, nil, ""},
		{"the default platform", "native:v1", nil, nil, ""},
		{"an index of artifacts", "signed:artifacts", nil, pullkit.ErrUnsupported, pullkit.OpChoosePlatform},
		{"an index of artifacts, any platform", "signed:artifacts", []puller.PullOption{puller.WithMatcher(platforms.Any())}, pullkit.ErrUnsupported, pullkit.OpChoosePlatform},
		{"an index's only entry, an artifact without a platform", "signed:lone", nil, pullkit.ErrUnsupported, pullkit.OpFetchManifest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := reg.Ref(tc.ref)
			res, rerr := c.Resolve(t.Context(), ref, tc.opts...)
			img, perr := c.Pull(t.Context(), ref, store.NewMemory(), tc.opts...)
			for _, call := range []struct {
				name string
				err  error
			}{{"Resolve", rerr}, {"Pull", perr}} {
				if tc.want == nil {
					if call.err != nil {
						t.Fatalf("%s: %v", call.name, call.err)
					}
					continue
				}
				var pe *pullkit.Error
				if !errors.Is(call.err, tc.want) || !errors.As(call.err, &pe) || pe.Op != tc.op || pe.Reference != ref {
					t.Errorf("%s: %v (step %q), want %v at step %q naming %s", call.name, call.err, opOf(call.err), tc.want, tc.op, ref)
				}
			}
			if tc.want == nil && res.Manifest.Digest != img.Manifest.Digest {
				t.Errorf("Resolve chose %s, Pull pulled %s", res.Manifest.Digest, img.Manifest.Digest)
			}
		})
	}
}

func mustResolveAny(t *testing.T, c *puller.Client, ref string) digest.Digest {
	t.Helper()
	res, err := c.Resolve(t.Context(), ref, puller.WithMatcher(platforms.Any()))
	if err != nil {
		t.Fatal(err)
	}
	return res.Manifest.Digest
}

func opOf(err error) string {
	var pe *pullkit.Error
	if errors.As(err, &pe) {
		return pe.Op
	}
	return ""
}

// TestResolveLearnsAnUntypedEntry: an index entry without a mediaType is one Choose takes
// and Pull pulls; Resolve fetches it by digest to learn what it is, so that it names an
// image manifest's media type (or goes on into a nested index), as Pull's model does. A
// fuzzed index found it naming the empty media type.
func TestResolveLearnsAnUntypedEntry(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	host := platforms.Default()
	img := reg.PushImage("untyped", "img", pullkittest.Schema2, pullkittest.Platform(host), pullkittest.Layers(1, 64))
	entry := img.Descriptor()
	entry.MediaType = ""
	entry.Platform = &host
	outer, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIIndex, "manifests": []manifest.Descriptor{entry}})
	reg.PutManifest("untyped", "v1", manifest.MediaTypeOCIIndex, outer)
	inner := manifest.Descriptor{MediaType: "", Digest: digest.FromBytes(outer), Size: int64(len(outer)), Platform: &host}
	nested, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIIndex, "manifests": []manifest.Descriptor{inner}})
	reg.PutManifest("untyped", "nested", manifest.MediaTypeOCIIndex, nested)

	c := newClient(t)
	for _, tag := range []string{"v1", "nested"} {
		t.Run(tag, func(t *testing.T) {
			ref := reg.Ref("untyped:" + tag)
			res, err := c.Resolve(t.Context(), ref)
			if err != nil {
				t.Fatal(err)
			}
			if res.Manifest.MediaType != manifest.MediaTypeDockerSchema2 || res.Manifest.Digest != img.Digest {
				t.Errorf("Resolve named %s (%q), want %s (%q)", res.Manifest.Digest, res.Manifest.MediaType, img.Digest, manifest.MediaTypeDockerSchema2)
			}
			pulled, err := c.Pull(t.Context(), ref, store.NewMemory())
			if err != nil {
				t.Fatal(err)
			}
			if pulled.Manifest.Digest != res.Manifest.Digest {
				t.Errorf("Resolve chose %s, Pull pulled %s", res.Manifest.Digest, pulled.Manifest.Digest)
			}
		})
	}
}
