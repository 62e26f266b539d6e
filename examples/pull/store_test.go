package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pullkit/pullkit/internal/faultproxy"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/store"
)

// sharedImages pushes two images that share a base of layers (one of 2 MiB, so it
// streams through a transfer of its own, and small ones) and differ in their top layer.
func sharedImages(t *testing.T, reg *regtest.Registry) (a, b string) {
	t.Helper()
	base := regtest.LayeredImage(t, 3)
	big, err := random.Layer(2<<20, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	if base, err = mutate.AppendLayers(base, big); err != nil {
		t.Fatal(err)
	}
	top := func() v1.Image {
		l, err := random.Layer(4096, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.AppendLayers(base, l)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	reg.Push(t, "shared/a:v1", top())
	reg.Push(t, "shared/b:v1", top())
	return reg.Ref("shared/a:v1"), reg.Ref("shared/b:v1")
}

// checkLayout asserts every blob hashes to its name and ingest/ is empty, and returns
// the blobs.
func checkLayout(t *testing.T, dir string) []string {
	t.Helper()
	var blobs []string
	root := filepath.Join(dir, store.BlobsDir, "sha256")
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(root, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != e.Name() {
			t.Errorf("blob %s does not hash to its name", e.Name())
		}
		blobs = append(blobs, e.Name())
	}
	if left, _ := os.ReadDir(filepath.Join(dir, store.IngestDir)); len(left) != 0 {
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		t.Errorf("ingest/ holds %v", names)
	}
	sort.Strings(blobs)
	return blobs
}

// TestTwoProcessesOneLayout runs two CLI processes pulling different images that share
// layers into one directory at once, ten rounds: both exit 0, both names are listed,
// every blob hashes to its name, ingest/ is empty.
func TestTwoProcessesOneLayout(t *testing.T) {
	reg := regtest.Start(t)
	a, b := sharedImages(t, reg)
	for round := 0; round < 10; round++ {
		dir := filepath.Join(t.TempDir(), "layout")
		var outA, errA, outB, errB bytes.Buffer
		ca := pullChild(t, &outA, &errA, "--output", dir, a)
		cb := pullChild(t, &outB, &errB, "--output", dir, b)
		done := make(chan error, 2)
		go func() { done <- ca.Wait() }()
		go func() { done <- cb.Wait() }()
		for range 2 {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("round %d: a pull failed: %v\nA: %s\nB: %s", round, err, errA.String(), errB.String())
				}
			case <-time.After(2 * time.Minute):
				t.Fatalf("round %d: the pulls did not finish", round)
			}
		}
		code, out, errOut := runCLI(t, "--output", dir, "--list")
		if code != 0 || !strings.Contains(out, a) || !strings.Contains(out, b) {
			t.Fatalf("round %d: --list: exit %d, %q, %q; want both names", round, code, out, errOut)
		}
		checkLayout(t, dir)
	}
}

// TestDeleteAndGC pulls two images that share a base, deletes one name and collects
// garbage: exactly the deleted image's own blobs go (its manifest, config and top
// layer); a stale partial download goes too; the other image is still whole.
func TestDeleteAndGC(t *testing.T) {
	reg := regtest.Start(t)
	a, b := sharedImages(t, reg)
	dir := filepath.Join(t.TempDir(), "layout")
	for _, ref := range []string{a, b} {
		if code, _, errOut := runCLI(t, "--output", dir, ref); code != 0 {
			t.Fatalf("pull %s: %s", ref, errOut)
		}
	}
	withB := checkLayout(t, dir)
	onlyB := filepath.Join(t.TempDir(), "onlyb")
	if code, _, errOut := runCLI(t, "--output", onlyB, b); code != 0 {
		t.Fatalf("pull %s: %s", b, errOut)
	}
	wantLeft := checkLayout(t, onlyB)

	stale := filepath.Join(dir, store.IngestDir, "sha256-"+strings.Repeat("ab", 32)+".partial")
	if err := os.WriteFile(stale, []byte("half a blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(stale, old, old)

	if code, out, errOut := runCLI(t, "--output", dir, "--delete", a); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("--delete: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut := runCLI(t, "--output", dir, "--gc")
	if code != 0 || !strings.Contains(out, "removed 3 blobs") || !strings.Contains(out, "1 partial downloads") {
		t.Fatalf("--gc: exit %d, %q %q; want 3 blobs (A's manifest, config, top layer) and the stale partial", code, out, errOut)
	}
	left := checkLayout(t, dir)
	if strings.Join(left, " ") != strings.Join(wantLeft, " ") {
		t.Errorf("after GC the layout holds %d blobs, want exactly B's %d (it held %d)", len(left), len(wantLeft), len(withB))
	}
	if code, out, _ := runCLI(t, "--output", dir, "--list"); code != 0 || strings.Contains(out, a) || !strings.Contains(out, b) {
		t.Errorf("--list after delete: %q", out)
	}
	if code, out, errOut := runCLI(t, "--output", dir, "--check"); code != 0 || !strings.Contains(out, "0 damaged") {
		t.Errorf("--check: exit %d, %q %q", code, out, errOut)
	}
}

// TestGCDuringPull collects garbage, over and over, while a pull is half way through its
// blobs (the registry holds every blob after its first MiB until the collections are
// done): the collector removes nothing the pull holds, not even with every unlocked
// partial expired, and the pull ends with the image whole.
func TestGCDuringPull(t *testing.T) {
	reg := regtest.Start(t)
	a, _ := sharedImages(t, reg)
	proxy, err := faultproxy.New("http://" + reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	release := make(chan struct{})
	released := sync.OnceFunc(func() { close(release) })
	defer released()
	proxy.Add(&faultproxy.Rule{Method: "GET", PathContains: "/blobs/", Fault: heldAfter{n: 1 << 20, release: release}})
	ref := strings.Replace(a, reg.Host, proxy.Host(), 1)
	dir := filepath.Join(t.TempDir(), "layout")
	if _, err := store.OpenLayout(dir); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	child := pullChild(t, &out, &errOut, "--output", dir, ref)
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()
	// Wait until the pull holds a partial download, then collect five times.
	ingest := filepath.Join(dir, store.IngestDir)
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if partials(t, ingest) > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the pull ended (%v) before the registry released its blobs: %s", err, errOut.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no partial download in %s after 2 minutes", ingest)
		}
	}
	for range 5 {
		if code, _, gerr := runCLI(t, "--output", dir, "--gc", "--ingest-expiry", "0s"); code != 0 {
			t.Fatalf("--gc during the pull: %s", gerr)
		}
	}
	if n := partials(t, ingest); n == 0 {
		t.Errorf("the collections removed the pull's partial downloads")
	}
	released()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pull: %v\n%s", err, errOut.String())
		}
	case <-time.After(2 * time.Minute):
		_ = child.Process.Kill()
		t.Fatalf("the pull still runs 2 minutes after the registry released its blobs")
	}
	checkLayout(t, dir)
	if code, listed, _ := runCLI(t, "--output", dir, "--list"); code != 0 || !strings.Contains(listed, ref) {
		t.Fatalf("--list: %q", listed)
	}
	// The image is whole: pulling it again downloads nothing.
	proxy.Reset()
	if code, _, gerr := runCLI(t, "--output", dir, ref); code != 0 {
		t.Fatal(gerr)
	}
	for _, r := range proxy.Records() {
		if strings.Contains(r.Path, "/blobs/") {
			t.Errorf("a blob was fetched again after the collections: %s", r.Path)
		}
	}
}

// partials counts the non-empty partial downloads in an ingest directory.
func partials(t *testing.T, ingest string) int {
	t.Helper()
	ents, err := os.ReadDir(ingest)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".partial") && fi.Size() > 0 {
			n++
		}
	}
	return n
}

// heldAfter answers with the registry's status, headers and the first n bytes of its
// body, then holds the rest until release is closed (or the client goes away).
type heldAfter struct {
	n       int
	release <-chan struct{}
}

func (h heldAfter) Name() string { return fmt.Sprintf("held after %d bytes", h.n) }

func (h heldAfter) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, r)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	body := rec.Body.Bytes()
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.Code)
	n := min(h.n, len(body))
	_, _ = w.Write(body[:n])
	_ = http.NewResponseController(w).Flush()
	select {
	case <-h.release:
	case <-r.Context().Done():
		return
	}
	_, _ = w.Write(body[n:])
}
