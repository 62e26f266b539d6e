package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/internal/faultproxy"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/store"
)

// killChildArgs is the environment variable that turns the test binary into the CLI: it
// holds the command line as a JSON array.
const killChildArgs = "PULLKIT_PULL_CHILD_ARGS"

// childSameSignal, when set (a duration), is the child's sameSignal.
const childSameSignal = "PULLKIT_PULL_CHILD_SAME_SIGNAL"

// TestKillHelperProcess is not a test: run by TestKillResume in a child process with
// killChildArgs set, it is the pull command.
func TestKillHelperProcess(t *testing.T) {
	raw, ok := os.LookupEnv(killChildArgs)
	if !ok {
		t.Skip("the CLI as a child process of TestKillResume")
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		fmt.Fprintln(os.Stderr, "bad", killChildArgs, err)
		os.Exit(3)
	}
	if v, ok := os.LookupEnv(childSameSignal); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad", childSameSignal, err)
			os.Exit(3)
		}
		sameSignal = d
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
}

// pullChild starts the CLI in a child process (the test binary re-executed).
func pullChild(t *testing.T, stdout, stderr io.Writer, args ...string) *exec.Cmd {
	t.Helper()
	cmd := childCommand(t, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// childCommand is the CLI as a child process (the test binary re-executed), not started.
func childCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	raw, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelperProcess$")
	cmd.Env = append(os.Environ(), killChildArgs+"="+string(raw), "DOCKER_CONFIG="+t.TempDir())
	return cmd
}

// TestKillResume kills a pull with SIGKILL while one large blob is midway, then pulls
// again: the second run resumes from the partial file the first left in ingest/ (its
// first request for the blob asks for "Range: bytes=N-", N the partial file's size) and
// finishes with every blob verified.
func TestKillResume(t *testing.T) {
	reg := regtest.Start(t)
	const stallAt = 1 << 20
	big, err := random.Layer(4<<20, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	small, err := random.Layer(1024, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.DockerManifestSchema2), types.DockerConfigJSON), big, small)
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "big:v1", img)
	h, err := big.Digest()
	if err != nil {
		t.Fatal(err)
	}
	bigDigest := digest.Digest(h.String())
	bigSize, err := big.Size()
	if err != nil || bigSize < 2*stallAt {
		t.Fatalf("big layer is %d bytes (%v), want well over %d", bigSize, err, stallAt)
	}

	proxy, err := faultproxy.New("http://" + reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	// The big blob stops after stallAt bytes and stays silent: the child is provably
	// midway, with its partial file on disk, for as long as the test needs.
	proxy.Add(&faultproxy.Rule{Method: http.MethodGet, PathContains: "/blobs/" + bigDigest.String(),
		Fault: faultproxy.StallAfter(stallAt, 2*time.Minute)})

	out := filepath.Join(t.TempDir(), "layout")
	ref := proxy.Host() + "/big:v1"
	partial := filepath.Join(out, store.IngestDir, string(bigDigest.Algorithm())+"-"+bigDigest.Encoded()+".partial")

	var out1, err1 bytes.Buffer
	first := pullChild(t, &out1, &err1, "--output", out, ref)
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	grown := int64(0)
	deadline := time.Now().Add(60 * time.Second)
	for grown < stallAt && time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("the first pull ended (%v) before it was killed\nstdout: %s\nstderr: %s", err, out1.String(), err1.String())
		case <-time.After(20 * time.Millisecond):
		}
		if fi, err := os.Stat(partial); err == nil {
			grown = fi.Size()
		}
	}
	if grown == 0 {
		_ = first.Process.Kill()
		<-exited
		t.Fatalf("the partial file %s never grew (stderr: %s)", partial, err1.String())
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitErr := <-exited
	var ee *exec.ExitError
	if !errors.As(waitErr, &ee) {
		t.Fatalf("first pull: %v, want killed", waitErr)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("first pull ended with %v, want killed by SIGKILL", waitErr)
	}
	fi, err := os.Stat(partial)
	if err != nil {
		t.Fatalf("the killed pull left no partial file: %v", err)
	}
	n := fi.Size()
	if n <= 0 || n > stallAt {
		t.Fatalf("partial file is %d bytes, want 0 < n <= %d (what the proxy sent)", n, stallAt)
	}
	if _, err := os.Stat(filepath.Join(out, store.BlobsDir, "sha256", bigDigest.Encoded())); err == nil {
		t.Fatal("the big blob carries its final name after a killed, incomplete transfer")
	}
	t.Logf("killed with %d of %d bytes in %s", n, bigSize, filepath.Base(partial))

	// Drop the fault and pull again.
	proxy.Reset()
	var out2, err2 bytes.Buffer
	second := pullChild(t, &out2, &err2, "--output", out, ref)
	if err := second.Wait(); err != nil {
		t.Fatalf("second pull: %v\nstdout: %s\nstderr: %s", err, out2.String(), err2.String())
	}
	if !strings.Contains(out2.String(), "written") {
		t.Errorf("second pull printed %q, want the written line", out2.String())
	}
	var firstRange string
	seen := false
	for _, r := range proxy.Records() {
		if r.Method == http.MethodGet && strings.HasSuffix(r.Path, "/blobs/"+bigDigest.String()) {
			firstRange, seen = r.Range, true
			break
		}
	}
	if want := fmt.Sprintf("bytes=%d-", n); !seen || firstRange != want {
		t.Errorf("second run's first request for %s had Range %q (seen: %v), want %q", bigDigest, firstRange, seen, want)
	}

	// Everything verifies: each blob hashes to its name, nothing is left in ingest/.
	blobs, err := os.ReadDir(filepath.Join(out, store.BlobsDir, "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range blobs {
		b, err := os.ReadFile(filepath.Join(out, store.BlobsDir, "sha256", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != e.Name() {
			t.Errorf("blobs/sha256/%s hashes to %s", e.Name(), got)
		}
		found = found || e.Name() == bigDigest.Encoded()
	}
	if !found {
		t.Errorf("the big blob %s is not in the layout", bigDigest)
	}
	left, err := os.ReadDir(filepath.Join(out, store.IngestDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("ingest/%s left after a successful pull", e.Name())
	}
}
