package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
)

// controlAt returns the index of the first character a terminal could act on (C0 but the
// line break, DEL, C1, or another that does not print) in s, or -1.
func controlAt(s string) int {
	for i, r := range s {
		if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x202e || r == 0x200b {
			return i
		}
	}
	return -1
}

func TestSafeWriter(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain line\n", "plain line\n"},
		{"esc \x1b[31mred\x1b[0m\n", `esc \u001b[31mred\u001b[0m` + "\n"},
		{"osc \x1b]0;title\x07 bel", `osc \u001b]0;title\u0007 bel`},
		{"c1 \u009b6n del \x7f", `c1 \u009b6n del \u007f`},
		{"bidi \u202eevil zw\u200b", `bidi \u202eevil zw\u200b`},
		{"cr \r tab \t", `cr \u000d tab \u0009`},
		{"bad \xff utf-8", `bad \xff utf-8`},
		{"keeps é, 日本, emoji 😀", "keeps é, 日本, emoji 😀"},
		{"tag \U000E0041", `tag \udb40\udc41`},
	} {
		var b bytes.Buffer
		if _, err := newSafeWriter(&b).Write([]byte(tc.in)); err != nil || b.String() != tc.want {
			t.Errorf("%q: %q (%v), want %q", tc.in, b.String(), err, tc.want)
		}
	}
	// A rune split between two writes is kept whole.
	var b bytes.Buffer
	w := newSafeWriter(&b)
	e := []byte("é\u009b")
	w.Write(e[:1])
	w.Write(e[1:3])
	w.Write(e[3:])
	if b.String() != `é\u009b` {
		t.Errorf("split writes: %q", b.String())
	}
	// JSON stays JSON.
	raw, _ := json.Marshal(map[string]string{"os": "linux\u009b\x7f\u202e"})
	b.Reset()
	newSafeWriter(&b).Write(raw)
	var back map[string]string
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back["os"] != "linux\u009b\x7f\u202e" || controlAt(b.String()) >= 0 {
		t.Errorf("JSON through the writer: %q (%v), back %q", b.String(), err, back["os"])
	}
}

// hostileRegistry seeds a registry whose strings carry terminal escapes: an index whose
// platforms do not match, and an image whose config's os/architecture do.
func hostileRegistry(t *testing.T) *pullkittest.Registry {
	reg := pullkittest.NewRegistry(t)
	idx, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIIndex, "manifests": []map[string]any{
		{"mediaType": manifest.MediaTypeOCIManifest, "digest": digest.FromString("a"), "size": 1, "platform": map[string]string{"os": "linux\x1b[31m", "architecture": "amd64"}},
		{"mediaType": manifest.MediaTypeOCIManifest, "digest": digest.FromString("b"), "size": 1, "platform": map[string]string{"os": "linux", "architecture": "amd64\x1b]0;owned\x07"}},
		{"mediaType": manifest.MediaTypeOCIManifest, "digest": digest.FromString("c"), "size": 1, "platform": map[string]string{"os": "\u009b6n", "architecture": "arm\u202e"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	reg.PutManifest("hostile/list", "v1", manifest.MediaTypeOCIIndex, idx)

	layer := []byte("not really a layer")
	ld := reg.PutBlob("hostile/img", layer)
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64\x1b[0m", "os": "linux\x1b[2J\u009b",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []digest.Digest{digest.FromBytes(layer)}}, "config": map[string]any{}})
	cd := reg.PutBlob("hostile/img", cfg)
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIManifest,
		"config": map[string]any{"mediaType": manifest.MediaTypeOCIConfig, "digest": cd, "size": len(cfg)},
		"layers": []map[string]any{{"mediaType": manifest.MediaTypeOCILayer, "digest": ld, "size": len(layer)}}})
	reg.PutManifest("hostile/img", "v1", manifest.MediaTypeOCIManifest, m)

	// An image for linux/amd64 (a pull for that platform takes it) whose os.version
	// carries the escapes, for the output of a pull that succeeds.
	vd := reg.PutBlob("hostile/ver", layer)
	vcfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "os.version": "1\x1b[2J\u009b\x1b[0m",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []digest.Digest{digest.FromBytes(layer)}}, "config": map[string]any{}})
	vcd := reg.PutBlob("hostile/ver", vcfg)
	vm, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIManifest,
		"config": map[string]any{"mediaType": manifest.MediaTypeOCIConfig, "digest": vcd, "size": len(vcfg)},
		"layers": []map[string]any{{"mediaType": manifest.MediaTypeOCILayer, "digest": vd, "size": len(layer)}}})
	reg.PutManifest("hostile/ver", "v1", manifest.MediaTypeOCIManifest, vm)
	return reg
}

// TestOutputEscaped is issue 12's row "Terminal escape sequences sent by the registry (in
// a platform string of a list that does not match; in a config's os/architecture) reach
// the terminal on stderr and stdout", through the command: no line it prints holds a
// character a terminal acts on, whatever the registry sent.
func TestOutputEscaped(t *testing.T) {
	reg := hostileRegistry(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string // on stdout or stderr, escaped
	}{
		{[]string{"--platform", "linux/amd64", reg.Ref("hostile/list:v1")}, 1, `linux\x1b[31m/amd64`},
		{[]string{"--platform", "linux/amd64", reg.Ref("hostile/img:v1")}, 1, `linux\x1b[2J\u009b/amd64\x1b[0m`},
		// The platform a pull is for is checked against the config (issue 22): the
		// image whose os/architecture carry escapes is refused whatever the platform, so
		// the pulls that succeed take one whose os.version carries them.
		{[]string{reg.Ref("hostile/img:v1")}, 1, `linux\x1b[2J\u009b/amd64\x1b[0m`},
		{[]string{"--platform", "linux/amd64", reg.Ref("hostile/ver:v1")}, 0, `linux/amd64:1\x1b[2J\u009b\x1b[0m`},
		{[]string{"--platform", "linux/amd64", "--json", reg.Ref("hostile/ver:v1")}, 0, `1\u001b[2J\u009b`},
		{[]string{"--platform", "linux/amd64", "--output", dir, reg.Ref("hostile/ver:v1")}, 0, `linux/amd64:1\x1b[2J\u009b\x1b[0m`},
		{[]string{"--output", dir, "--list"}, 0, "hostile/ver:v1"},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		t.Logf("pull %v: exit %d\nstdout: %s\nstderr: %s", tc.args, code, out, errOut)
		if code != tc.code {
			t.Errorf("pull %v: exit %d, want %d", tc.args, code, tc.code)
		}
		for name, s := range map[string]string{"stdout": out, "stderr": errOut} {
			if i := controlAt(s); i >= 0 {
				t.Errorf("pull %v: %s holds a control character at %d: %q", tc.args, name, i, s)
			}
		}
		if !strings.Contains(out+errOut, tc.want) {
			t.Errorf("pull %v: the output does not show %q, escaped", tc.args, tc.want)
		}
		if tc.code != 0 && strings.Count(errOut, "\n") != 1 {
			t.Errorf("pull %v: stderr is not one line: %q", tc.args, errOut)
		}
		if len(tc.args) > 1 && tc.args[0] == "--json" {
			var v map[string]any
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Errorf("--json output is not JSON: %v", err)
			}
		}
	}
}

// TestProgressShowsWaits: a wait the registry imposes on a manifest (a 429) is drawn on
// the terminal, then cleared.
func TestProgressShowsWaits(t *testing.T) {
	cols, rows := 80, 24
	p, out, _ := testProgress(&cols, &rows)
	p.event(pullkit.Event{Kind: pullkit.EventWaiting, What: "manifest", Wait: 30 * time.Second, Total: -1})
	if first := replay(t, out.Bytes(), cols, rows).lines(); len(first) != 2 || first[1] != "waiting 30s for manifest, as the registry asked" {
		t.Errorf("the wait is not drawn: %q", first)
	}
	p.event(pullkit.Event{Kind: pullkit.EventVerified, What: "manifest", Digest: digest.FromString("m")})
	p.event(pullkit.Event{Kind: pullkit.EventPlanned, Total: 10, Blobs: 1})
	d := digest.FromString("layer")
	p.event(pullkit.Event{Kind: pullkit.EventWaiting, What: "layer", Digest: d, Total: 10})
	p.finish()
	last := replay(t, out.Bytes(), cols, rows).lines()
	if len(last) != 2 || !strings.HasPrefix(last[1], shortDigest(d)+"  layer   another download") {
		t.Errorf("a wait for another download is not drawn, or the manifest's wait is still drawn: %q", last)
	}
}

// TestInterruptStopsDiffID is issue 12's row "Computing a diffID ignores cancellation: a
// 2 MiB zstd layer that expands to 64 GiB keeps a core busy after SIGINT", through the
// command: SIGINT during the diffID check ends it within a second or two, with one line
// on stderr and status 130.
func TestInterruptStopsDiffID(t *testing.T) {
	const blocks = 64 << 30 / (128 << 10)
	bomb := make([]byte, 0, 6+4*blocks)
	bomb = append(bomb, 0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38) // zstd frame, 128 KiB window
	for i := range blocks {
		v := uint32(128<<10)<<3 | 1<<1 // an RLE block of 128 KiB
		if i == blocks-1 {
			v |= 1
		}
		bomb = append(bomb, byte(v), byte(v>>8), byte(v>>16), 0)
	}
	reg := pullkittest.NewRegistry(t)
	ld := reg.PutBlob("bomb", bomb)
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []digest.Digest{digest.FromString("whatever")}}, "config": map[string]any{}})
	cd := reg.PutBlob("bomb", cfg)
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIManifest,
		"config": map[string]any{"mediaType": manifest.MediaTypeOCIConfig, "digest": cd, "size": len(cfg)},
		"layers": []map[string]any{{"mediaType": manifest.MediaTypeOCILayerZstd, "digest": ld, "size": len(bomb)}}})
	reg.PutManifest("bomb", "v1", manifest.MediaTypeOCIManifest, m)

	var out, errOut bytes.Buffer
	cmd := pullChild(t, &out, &errOut, "--platform", "linux/amd64", "--check-diffids", "--output", t.TempDir(), reg.Ref("bomb:v1"))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		t.Fatalf("the pull ended (%v) before the interrupt: %s", err, errOut.String())
	case <-time.After(2 * time.Second):
	}
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the pull still runs 30 s after SIGINT")
	}
	took := time.Since(sent)
	t.Logf("exited %v after SIGINT (%v): %s", took.Round(time.Millisecond), err, errOut.String())
	if err == nil || cmd.ProcessState.ExitCode() != 130 {
		t.Errorf("exit %v, want status 130, as shells report SIGINT", err)
	}
	if took > 20*time.Second { // a bound that catches a hang, not a measure of speed
		t.Errorf("took %v to stop after SIGINT", took)
	}
	if s := errOut.String(); strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "pull: interrupted by SIGINT") {
		t.Errorf("stderr %q, want one line saying it was interrupted", s)
	}
}
