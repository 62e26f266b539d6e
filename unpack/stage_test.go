//go:build linux

package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/pullkit/pullkit"
)

// applyAllStaged unpacks layers into e.root the way a pipeline does with parallel apply:
// every layer staged at once, then merged in order; it commits, and returns the first
// error.
func applyAllStaged(t testing.TB, e *env, layers [][]ent, opts ...Option) error {
	t.Helper()
	r, err := NewRootfs(e.root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Abort()
	type out struct {
		s   *stagedLayer
		err error
	}
	outs := make([]out, len(layers))
	ids := make([]digest.Digest, len(layers))
	var wg sync.WaitGroup
	for i, l := range layers {
		l = append([]ent(nil), l...)
		for j := range l {
			l[j].name = e.expand(l[j].name)
			l[j].link = e.expand(l[j].link)
		}
		b := tarOf(t, l...)
		ids[i] = digest.FromString(fmt.Sprintf("layer %d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := r.stage(context.Background(), ids[i], diffIDOf(b), bytes.NewReader(b))
			outs[i] = out{s, err}
		}()
	}
	wg.Wait()
	fail := func(i int, err error) error {
		if _, statErr := os.Stat(e.root); statErr == nil {
			t.Errorf("root exists after a failed layer")
		}
		checkError(t, err, ids[i])
		for _, o := range outs[i+1:] {
			if o.s != nil {
				r.drop(o.s)
			}
		}
		return err
	}
	for i, o := range outs {
		if o.err != nil {
			return fail(i, o.err)
		}
		if _, err := r.merge(context.Background(), o.s); err != nil {
			return fail(i, err)
		}
	}
	return r.Commit()
}

// detail is everything e's tree holds at a path: the scan's node (type, mode, size,
// content, link target, owner, device, attributes, link count), the modification time,
// and which other path a hard-linked file shares its inode with; e's base directory is
// written $B, so that trees of two envs compare.
func detail(t testing.TB, e *env) map[string]string {
	t.Helper()
	root := e.root
	out := map[string]string{}
	first := map[uint64]string{}
	var paths []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			paths = append(paths, p)
		}
		return nil
	})
	sort.Strings(paths)
	for _, p := range paths {
		rel, _ := filepath.Rel(root, p)
		key := "/" + rel
		if rel == "." {
			key = "/"
		}
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		mtime := fmt.Sprintf("%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
		if time.Unix(st.Mtim.Sec, st.Mtim.Nsec).After(testStart) {
			// A directory no archive named (made for a parent): the time it was made.
			mtime = "now"
		}
		s := fmt.Sprintf("%v mtime=%s", nodeOf(t, p), mtime)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			s += fmt.Sprintf(" nlink=%d", st.Nlink)
		}
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if f, ok := first[st.Ino]; ok {
				s += " same-as=" + f
			} else {
				first[st.Ino] = key
			}
		}
		out[strings.ReplaceAll(key, e.base, "$B")] = strings.ReplaceAll(s, e.base, "$B")
	}
	return out
}

// testStart is before any file a test makes: later times are the machine's, not an
// archive's.
var testStart = time.Now().Add(-time.Minute)

func diffDetails(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, fmt.Sprintf("%s: only in serial: %s", k, v))
		} else if v != w {
			d = append(d, fmt.Sprintf("%s: serial %s, staged %s", k, v, w))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%s: only staged: %s", k, v))
		}
	}
	sort.Strings(d)
	return d
}

// crossLayerCases are what parallel apply must get right across layers: whiteouts and
// opaque directories over what several lower layers made, hard links to the layers
// below (also to a file the layer then replaces), writes through a lower symbolic link
// that the layer then replaces, and a directory replaced by a file and back.
var crossLayerCases = []treeCase{
	{name: "whiteouts and opaque over several lower layers", layers: [][]ent{
		{dir("d"), file("d/a", "1"), dir("d/sub"), file("d/sub/x", "x"), dir("e"), file("e/1", "1")},
		{file("d/b", "2"), file("d/sub/y", "y"), dir("e/f"), file("e/f/2", "2"), file("keep", "k")},
		{file("d/c", "3"), dir("d/sub").withMode(0o700), file("d/sub/w", "w")},
		{whiteout("d/a"), whiteout("d/b"), opaque("d/sub"), file("d/sub/z", "z"), whiteout("e"), file("d/new", "n")},
	}, want: map[string]string{"/d": "d 755", "/d/c": "f 644 3", "/d/new": "f 644 n", "/d/sub": "d 700", "/d/sub/z": "f 644 z", "/keep": "f 644 k"}},
	{name: "hard links to files of several lower layers", layers: [][]ent{
		{dir("a"), file("a/f", "f")},
		{file("a/g", "g")},
		{hardlink("h1", "a/f"), hardlink("h2", "a/g"), dir("b"), hardlink("b/h3", "h1")},
	}, want: map[string]string{"/a": "d 755", "/a/f": "f 644 f", "/a/g": "f 644 g", "/h1": "h /a/f", "/h2": "h /a/g", "/b": "d 755", "/b/h3": "h /a/f"}},
	{name: "hard link to a lower file the layer then replaces", layers: [][]ent{
		{file("f", "old")},
		{hardlink("h", "f"), file("f", "new")},
	}, want: map[string]string{"/f": "f 644 new", "/h": "f 644 old"}},
	{name: "hard link to a lower file the layer whited out first", layers: [][]ent{
		{file("f", "old")},
		{whiteout("f"), hardlink("h", "f")},
	}, err: pullkit.ErrInvalid, entry: "h"},
	{name: "write through a lower symlink, then replace it", layers: [][]ent{
		{dir("real"), symlink("s", "real")},
		{file("s/x", "through"), dir("s"), file("s/y", "in")},
	}, want: map[string]string{"/real": "d 755", "/real/x": "f 644 through", "/s": "d 755", "/s/y": "f 644 in"}},
	{name: "directory to file to directory over three layers", layers: [][]ent{
		{dir("d"), file("d/x", "1"), dir("d/s"), file("d/s/y", "2")},
		{file("d", "file").withMode(0o600)},
		{dir("d").withMode(0o711), file("d/z", "3")},
		{file("d/z", "4"), hardlink("d/h", "d/z")},
	}, want: map[string]string{"/d": "d 711", "/d/z": "f 644 4", "/d/h": "h /d/z"}},
	{name: "same name several times in one layer", layers: [][]ent{
		{file("f", "1"), file("f", "2"), dir("f"), file("f/x", "x"), file("f", "3")},
		{file("g", "1"), hardlink("g2", "g"), file("g", "2")},
	}, want: map[string]string{"/f": "f 644 3", "/g": "f 644 2", "/g2": "f 644 1"}},
	{name: "many layers", layers: func() [][]ent {
		var ls [][]ent
		for i := range 8 {
			l := []ent{dir("common"), file(fmt.Sprintf("common/f%d", i), fmt.Sprint(i)), file("over", fmt.Sprint(i))}
			if i > 0 {
				l = append(l, whiteout(fmt.Sprintf("common/f%d", i-1)))
			}
			ls = append(ls, l)
		}
		return ls
	}(), want: map[string]string{"/common": "d 755", "/common/f7": "f 644 7", "/over": "f 644 7"}},
}

// TestStagedEqualsSerial applies every corpus both ways, serially and staged in parallel
// then merged, and checks that the trees are the same in every respect (names, types,
// contents, modes, owners, times, attributes, hard links), or that both fail alike.
func TestStagedEqualsSerial(t *testing.T) {
	cases := append(append(append([]treeCase(nil), escapeCases...), semanticCases...), crossLayerCases...)
	for _, c := range umociCases() {
		if strings.HasPrefix(c.name, "whiteout forms") || c.name == "every type" {
			cases = append(cases, c)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "every type" && os.Geteuid() != 0 {
				t.Skip("needs root for owners and devices")
			}
			es, ep := newEnv(t), newEnv(t)
			errS := applyAll(t, es, copyLayers(c.layers))
			errP := applyAllStaged(t, ep, copyLayers(c.layers))
			ep.checkOutside(t)
			if c.err != nil || errS != nil || errP != nil {
				if (errS == nil) != (errP == nil) || c.err != nil && !errors.Is(errP, c.err) {
					t.Fatalf("serial: %v; staged: %v; want %v", errS, errP, c.err)
				}
				var a, b *EntryError
				if !errors.As(errS, &a) || !errors.As(errP, &b) || a.Entry != b.Entry {
					t.Fatalf("the errors name other entries: serial %v, staged %v", errS, errP)
				}
				if ents, _ := os.ReadDir(ep.base); len(ents) != 1 {
					t.Fatalf("left after a failed staged apply: %v", ents)
				}
				return
			}
			// Both roots live under the same name in their own env: compare relative.
			if d := diffDetails(detail(t, es), detail(t, ep)); len(d) > 0 {
				t.Fatalf("staged tree differs from the serial one:\n  %s", strings.Join(d, "\n  "))
			}
			if c.want != nil {
				want := map[string]string{}
				for p, w := range c.want {
					want[ep.expand(p)] = ep.expand(w)
				}
				for p := range want {
					for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
						if _, ok := want[d]; !ok {
							want[d] = "d 755"
						}
					}
				}
				checkTree(t, ep.root, want)
			}
			if ents, _ := os.ReadDir(ep.base); len(ents) != 2 { // the root and the outside
				t.Fatalf("left beside the root: %v", ents)
			}
		})
	}
}

func copyLayers(ls [][]ent) [][]ent {
	out := make([][]ent, len(ls))
	for i := range ls {
		out[i] = append([]ent(nil), ls[i]...)
	}
	return out
}

// TestStagedMetadata checks times, owners and attributes of a staged layer against the
// serial apply with the metadata corpus, as root.
func TestStagedMetadata(t *testing.T) {
	requireRoot(t)
	layers := [][]ent{{
		{name: "./", typ: tar.TypeDir, mode: 0o750, mtime: testTime.AddDate(1, 0, 0)},
		dir("d").withMode(0o751).withOwner(3, 4).withTime(testTime.AddDate(0, 1, 0)),
		file("f", "data").withMode(0o4750).withOwner(1000, 2000).withXattr("user.test", "1").withXattr("security.capability", capNetBindService()),
		file("d/c", "child").withOwner(65534, 65534),
		dir("sgid").withMode(0o2775).withOwner(0, 50),
	}, {
		file("sgid/new", "n").withOwner(7, 0), file("f", "again").withMode(0o640).withXattr("user.other", "2"),
		dir("d").withMode(0o700).withXattr("user.dir", "x"), file("d/c2", "c2"),
	}}
	es, ep := newEnv(t), newEnv(t)
	must(t, applyAll(t, es, copyLayers(layers)))
	must(t, applyAllStaged(t, ep, copyLayers(layers)))
	if d := diffDetails(detail(t, es), detail(t, ep)); len(d) > 0 {
		t.Fatalf("staged tree differs from the serial one:\n  %s", strings.Join(d, "\n  "))
	}
}
