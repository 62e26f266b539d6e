package puller_test

import (
	"slices"
	"testing"

	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// TestSecondPlatformOfATagIsKept (issue 22): pulling another platform of a tag moves the
// tag's name to it, and the first platform stays reachable by its platform name; a pull
// of every platform names the index by the tag and each platform's image by its own.
func TestSecondPlatformOfATagIsKept(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	idx := reg.PushIndex("team/app", "v1", pullkittest.ManifestList) // Docker's: stored converted to OCI
	amd64 := platforms.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := platforms.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	c := newClient(t)
	ref := reg.Ref("team/app:v1")
	for _, open := range []struct {
		name string
		st   func(t *testing.T) store.Store
	}{
		{"memory", func(*testing.T) store.Store { return store.NewMemory() }},
		{"layout", func(t *testing.T) store.Store {
			l, err := store.OpenLayout(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return l
		}},
	} {
		t.Run(open.name, func(t *testing.T) {
			st := open.st(t)
			first, err := c.Pull(t.Context(), ref, st, puller.WithPlatform(amd64))
			if err != nil {
				t.Fatal(err)
			}
			second, err := c.Pull(t.Context(), ref, st, puller.WithPlatform(arm64))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]manifest.Descriptor{
				ref:                            second.Stored,
				store.PlatformName(ref, amd64): first.Stored,
				store.PlatformName(ref, arm64): second.Stored,
			}
			names, err := st.Images(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(names) != len(want) {
				t.Errorf("names %v, want %d", names, len(want))
			}
			for n, d := range want {
				got, err := st.Image(t.Context(), n)
				if err != nil || got.Target.Digest != d.Digest {
					t.Errorf("%s names %s (%v), want %s", n, got.Target.Digest, err, d.Digest)
				}
				// The registry's digests are kept beside the converted manifest's.
				if got.Target.Annotations[store.AnnotationRegistryDigest] != idx.Digest.String() {
					t.Errorf("%s: registry digest %q, want the index's %s", n, got.Target.Annotations[store.AnnotationRegistryDigest], idx.Digest)
				}
			}
			if got, _ := st.Image(t.Context(), store.PlatformName(ref, amd64)); got.Target.Annotations[store.AnnotationRegistryManifest] != idx.Images[0].Digest.String() {
				t.Errorf("amd64's registry manifest %q, want %s", got.Target.Annotations[store.AnnotationRegistryManifest], idx.Images[0].Digest)
			}
			if first.Stored.Digest == idx.Images[0].Digest {
				t.Fatal("the manifest was not converted: the test proves nothing about the registry digest")
			}

			// Every platform: the index by the tag, each image by its platform name.
			all, err := c.Pull(t.Context(), ref, st, puller.WithAllPlatforms())
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range []platforms.Platform{amd64, arm64} {
				got, err := st.Image(t.Context(), store.PlatformName(ref, p))
				if err != nil || got.Target.Digest != all.Platforms[i].Stored.Digest && got.Target.Digest != first.Stored.Digest && got.Target.Digest != second.Stored.Digest {
					t.Errorf("%v after a pull of every platform: %v, %v", p, got.Target.Digest, err)
				}
			}
			if got, _ := st.Image(t.Context(), ref); got.Target.MediaType != manifest.MediaTypeOCIIndex {
				t.Errorf("the tag names a %s after a pull of every platform, want the index", got.Target.MediaType)
			}

			// Deleting the tag deletes its platform names with it, and nothing else is left.
			if err := st.DeleteImage(t.Context(), ref); err != nil {
				t.Fatal(err)
			}
			if names, _ := st.Images(t.Context()); len(names) != 0 {
				t.Errorf("names left after deleting the tag: %v", names)
			}
		})
	}
}

// TestSingleImageTagHasOneName: a tag naming one image (no index) gets one name.
func TestSingleImageTagHasOneName(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("team/one", "v1", pullkittest.Schema2)
	st := store.NewMemory()
	pulled, err := newClient(t).Pull(t.Context(), reg.Ref("team/one:v1"), st)
	if err != nil {
		t.Fatal(err)
	}
	if name, err := puller.StorageName(reg.Ref("team/one:v1")); err != nil || name != pulled.Name {
		t.Errorf("StorageName = %q, %v; the pull named it %q", name, err, pulled.Name)
	}
	names, _ := st.Images(t.Context())
	var got []string
	for _, n := range names {
		got = append(got, n.Name)
	}
	if !slices.Equal(got, []string{reg.Ref("team/one:v1")}) {
		t.Errorf("names %v, want the tag's alone", got)
	}
	// Converted to OCI, the entry keeps the digest the registry answers to.
	if pulled.Stored.Digest == img.Digest || names[0].Target.Annotations[store.AnnotationRegistryDigest] != img.Digest.String() {
		t.Errorf("stored %s, registry digest annotation %q; want a conversion that keeps %s", pulled.Stored.Digest, names[0].Target.Annotations[store.AnnotationRegistryDigest], img.Digest)
	}
}

// TestLoadAfterReopen (issue 22): a layout reopened (as after a restart) gives back the
// model Pull returned, by name alone: layers base first with diffIDs, the runtime config,
// the registry's digest; for every platform, each platform's image.
func TestLoadAfterReopen(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	reg.PushImage("team/app", "v1", pullkittest.Schema2, pullkittest.Layers(3, 2000))
	idx := reg.PushIndex("team/multi", "v1", pullkittest.ManifestList)
	reg.PushImage("team/old", "v1", pullkittest.Schema1, pullkittest.Layers(2, 500))
	dir := t.TempDir()
	st, err := store.OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	var pulled []*manifest.Image
	for _, tc := range []struct {
		ref  string
		opts []puller.PullOption
	}{
		{"team/app:v1", nil},
		{"team/multi:v1", []puller.PullOption{puller.WithAllPlatforms()}},
		{"team/old:v1", nil},
		{"team/app:v1", []puller.PullOption{puller.WithFormat(puller.FormatAsServed)}},
	} {
		img, err := c.Pull(t.Context(), reg.Ref(tc.ref), st, tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		pulled = append(pulled, img)
	}
	pulled = pulled[1:] // team/app:v1 was pulled again, as served: the name's last pull

	reopened, err := store.OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range pulled {
		got, err := store.Load(t.Context(), reopened, want.Name)
		if err != nil {
			t.Fatalf("Load(%s): %v", want.Name, err)
		}
		sameModel(t, want.Name, got, want)
		if len(got.Platforms) != len(want.Platforms) {
			t.Fatalf("Load(%s): %d platforms, want %d", want.Name, len(got.Platforms), len(want.Platforms))
		}
		for i := range want.Platforms {
			sameModel(t, want.Name+" platform "+want.Platforms[i].Platform.String(), got.Platforms[i], want.Platforms[i])
		}
	}
	// Each platform of the pull of every platform, by its platform name.
	for i, im := range idx.Images {
		name := store.PlatformName(reg.Ref("team/multi:v1"), im.Platform)
		got, err := store.Load(t.Context(), reopened, name)
		if err != nil {
			t.Fatalf("Load(%s): %v", name, err)
		}
		sameModel(t, name, got, pulled[0].Platforms[i])
		if got.RegistryDigest != idx.Digest {
			t.Errorf("Load(%s): registry digest %s, want the index's %s", name, got.RegistryDigest, idx.Digest)
		}
	}
}

// sameModel compares what Load must give back of a pulled image.
func sameModel(t *testing.T, what string, got, want *manifest.Image) {
	t.Helper()
	if got.RegistryDigest != want.RegistryDigest {
		t.Errorf("%s: registry digest %s, want %s", what, got.RegistryDigest, want.RegistryDigest)
	}
	if want.Stored.Digest != "" && got.Stored.Digest != want.Stored.Digest && len(want.Platforms) == 0 {
		t.Errorf("%s: stored %s, want %s", what, got.Stored.Digest, want.Stored.Digest)
	}
	if got.Config.Digest != want.Config.Digest || !slices.Equal(got.Runtime.Cmd, want.Runtime.Cmd) || !slices.Equal(got.Runtime.Env, want.Runtime.Env) {
		t.Errorf("%s: config %s %+v, want %s %+v", what, got.Config.Digest, got.Runtime, want.Config.Digest, want.Runtime)
	}
	if (got.Platform == nil) != (want.Platform == nil) || got.Platform != nil && got.Platform.String() != want.Platform.String() {
		t.Errorf("%s: platform %v, want %v", what, got.Platform, want.Platform)
	}
	var gl, wl []manifest.Layer
	for _, l := range got.Layers {
		if !l.Empty {
			gl = append(gl, l)
		}
	}
	for _, l := range want.Layers {
		if !l.Empty {
			wl = append(wl, l)
		}
	}
	if len(gl) != len(wl) {
		t.Fatalf("%s: %d layers, want %d", what, len(gl), len(wl))
	}
	for i := range wl {
		if gl[i].Digest != wl[i].Digest || gl[i].DiffID != wl[i].DiffID || gl[i].Size != wl[i].Size {
			t.Errorf("%s: layer %d %s (diffID %s, %d bytes), want %s (diffID %s, %d bytes)", what, i, gl[i].Digest, gl[i].DiffID, gl[i].Size, wl[i].Digest, wl[i].DiffID, wl[i].Size)
		}
	}
}
