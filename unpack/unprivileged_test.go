//go:build linux

package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

const nobody = 65534

// unprivilegedLayers are what an unprivileged process meets: devices it may not make, an
// attribute it may not set, directories whose modes shut it out, whiteouts inside them.
func unprivilegedLayers() [][]ent {
	return [][]ent{{
		dir("ro").withMode(0o555), file("ro/a", "a"), file("ro/b", "b"),
		dir("closed").withMode(0), dir("shut").withMode(0o500), file("shut/x", "x").withMode(0o400),
		file("suid", "s").withMode(0o4755).withOwner(0, 0),
		file("cap", "c").withXattr("security.capability", capNetBindService()).withXattr("user.kept", "1"),
		{name: "null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		{name: "sda", typ: tar.TypeBlock, mode: 0o660, major: 8, minor: 0},
		{name: "fifo", typ: tar.TypeFifo, mode: 0o600},
		dir("o").withMode(0o555), file("o/old", "old"),
	}, {
		file("ro/new", "new"), whiteout("ro/a"), file("shut/y", "y"), whiteout("shut/x"),
		dir("o").withMode(0o555), opaque("o"), file("o/new", "new"), file("closed/in", "in"),
	}}
}

type unprivilegedReport struct {
	Rootfs    []Result
	Snapshots []Result
	Chain     []digest.Digest
	Err       string
	MapErr    string
}

// TestUnprivileged runs the applier as an unprivileged user (nobody), in a child process
// when the test runs as root, and checks what a rootless engine gets: the files belong to
// the caller, devices and privileged attributes are skipped and reported, modes that would
// shut the process out are still applied, and snapshots use the user.overlay.* forms.
func TestUnprivileged(t *testing.T) {
	if dir := os.Getenv("PULLKIT_UNPACK_CHILD"); dir != "" {
		unprivilegedChild(t, dir)
		return
	}
	work, err := os.MkdirTemp("", "unpack-unprivileged")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(work) })
	must(t, os.Chmod(work, 0o755))
	uid := os.Geteuid()
	if uid == 0 {
		must(t, os.Chown(work, nobody, nobody))
		self, err := os.Executable()
		must(t, err)
		bin := filepath.Join(work, "unpack.test")
		copyFile(t, self, bin)
		cmd := exec.Command(bin, "-test.run=^TestUnprivileged$", "-test.v")
		cmd.Env = append(os.Environ(), "PULLKIT_UNPACK_CHILD="+work)
		cmd.Dir = work
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("child as nobody: %v\n%s", err, out)
		}
		uid = nobody
	} else {
		unprivilegedChild(t, work)
	}
	var rep unprivilegedReport
	b, err := os.ReadFile(filepath.Join(work, "report.json"))
	must(t, err)
	must(t, json.Unmarshal(b, &rep))
	if rep.Err != "" {
		t.Fatal(rep.Err)
	}
	t.Logf("skipped: %+v; unmapped: %s", rep.Rootfs[0].Skipped, rep.MapErr)

	root := filepath.Join(work, "root")
	checkTree(t, root, map[string]string{
		"/ro": "d 555", "/ro/b": "f 644 b", "/ro/new": "f 644 new",
		"/closed": "d 0", "/closed/in": "f 644 in",
		"/shut": "d 500", "/shut/y": "f 644 y",
		"/suid": "f 4755 s", "/cap": "f 644 c", "/fifo": "p 600",
		"/o": "d 555", "/o/new": "f 644 new",
	})
	for p, n := range scan(t, root) {
		if n.UID != uid {
			t.Errorf("%s belongs to %d, not to the caller %d", p, n.UID, uid)
		}
	}
	if x := nodeOf(t, filepath.Join(root, "cap")).Xattrs; x != `user.kept="1"` {
		t.Errorf("/cap xattrs %s", x)
	}
	skipped := map[string]bool{}
	for _, s := range rep.Rootfs[0].Skipped {
		skipped[s.Entry] = true
	}
	if !skipped["null"] || !skipped["sda"] || (uid != 0 && !skipped["cap"]) {
		t.Errorf("skips not reported: %+v", rep.Rootfs[0].Skipped)
	}
	snap := scan(t, filepath.Join(work, "snaps", "sha256", rep.Chain[1].Encoded()))
	if snap["/o"].Xattrs != `user.overlay.opaque="y"` {
		t.Errorf("snapshot /o: %v", snap["/o"])
	}
	if w := snap["/ro/a"]; w.Type != "whiteout" && !strings.Contains(w.Xattrs, "user.overlay.whiteout") {
		t.Errorf("snapshot /ro/a: %v", w)
	}
	if !strings.Contains(rep.MapErr, "uid 1000 has no mapping") {
		t.Errorf("unmapped uid: %q", rep.MapErr)
	}
	// Staged in parallel and merged, the same tree.
	if a, b := formatTree(scan(t, root)), formatTree(scan(t, filepath.Join(work, "staged"))); a != b {
		t.Errorf("staged tree differs from the one applied in order:\n%s\nwant:\n%s", b, a)
	}
}

func copyFile(t *testing.T, from, to string) {
	in, err := os.Open(from)
	must(t, err)
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	must(t, err)
	_, err = io.Copy(out, in)
	must(t, err)
	must(t, out.Close())
}

// unprivilegedChild applies the layers in dir and writes what happened to report.json.
func unprivilegedChild(t *testing.T, dir string) {
	var rep unprivilegedReport
	err := func() error {
		ctx := context.Background()
		r, err := NewRootfs(filepath.Join(dir, "root"))
		if err != nil {
			return err
		}
		defer r.Abort()
		s, err := OpenSnapshots(filepath.Join(dir, "snaps"))
		if err != nil {
			return err
		}
		var parent digest.Digest
		for _, l := range unprivilegedLayers() {
			b := tarOf(t, l...)
			res, err := r.Apply(ctx, digest.FromBytes(b), diffIDOf(b), bytes.NewReader(b))
			if err != nil {
				return err
			}
			rep.Rootfs = append(rep.Rootfs, res)
			if res, err = s.Apply(ctx, parent, digest.FromBytes(b), diffIDOf(b), bytes.NewReader(b)); err != nil {
				return err
			}
			rep.Snapshots = append(rep.Snapshots, res)
			parent = res.ChainID
			rep.Chain = append(rep.Chain, parent)
		}
		if err := r.Commit(); err != nil {
			return err
		}
		// The same layers staged at once and merged in order (a pipeline on four
		// processors or more).
		sr, err := NewRootfs(filepath.Join(dir, "staged"))
		if err != nil {
			return err
		}
		defer sr.Abort()
		var staged []*stagedLayer
		for _, l := range unprivilegedLayers() {
			b := tarOf(t, l...)
			st, err := sr.stage(ctx, digest.FromBytes(b), diffIDOf(b), bytes.NewReader(b))
			if err != nil {
				return err
			}
			staged = append(staged, st)
		}
		for _, st := range staged {
			if _, err := sr.merge(ctx, st); err != nil {
				return err
			}
		}
		if err := sr.Commit(); err != nil {
			return err
		}
		// A rootless engine maps the image's IDs onto its own: one it has no range for is
		// an error.
		self := uint32(os.Geteuid())
		m, err := NewRootfs(filepath.Join(dir, "mapped"), WithIDMap([]IDMap{{0, self, 1}}, []IDMap{{0, uint32(os.Getegid()), 1}}))
		if err != nil {
			return err
		}
		defer m.Abort()
		b := tarOf(t, file("mine", "x"), file("theirs", "x").withOwner(1000, 1000))
		if _, err := m.Apply(ctx, digest.FromBytes(b), "", bytes.NewReader(b)); !errors.Is(err, pullkit.ErrInvalid) {
			return errors.New("an unmapped uid did not fail: " + errString(err))
		} else {
			rep.MapErr = err.Error()
		}
		return nil
	}()
	if err != nil {
		rep.Err = err.Error()
	}
	b, _ := json.Marshal(rep)
	must(t, os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644))
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
