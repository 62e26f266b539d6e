package puller_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/store"
)

// hostileReg is a purpose-built registry on loopback for the tests of issue 12: it
// serves whatever manifests and blobs a test puts (no validation), and a test can take
// over any path with a handler of its own (a trickle, a hang, a lie).
type hostileReg struct {
	srv *httptest.Server

	mu       sync.Mutex
	docs     map[string]hostileDoc // "repo/ref" → manifest
	blobs    map[digest.Digest][]byte
	handlers map[string]http.HandlerFunc // path → handler, before anything else
	auth     func(w http.ResponseWriter, r *http.Request) bool
	log      []string // "METHOD path"
}

type hostileDoc struct {
	mediaType string
	raw       []byte
	digest    digest.Digest // Docker-Content-Digest: sha256 of raw unless set
}

// newHostileReg starts a plain-HTTP registry on 127.0.0.1.
func newHostileReg(t testing.TB) *hostileReg {
	h := &hostileReg{docs: map[string]hostileDoc{}, blobs: map[digest.Digest][]byte{}, handlers: map[string]http.HandlerFunc{}}
	h.srv = httptest.NewServer(h)
	t.Cleanup(h.close)
	return h
}

// newHostileTLSReg starts an HTTPS registry on 127.0.0.1, with httptest's certificate
// (valid for example.com and 127.0.0.1).
func newHostileTLSReg(t testing.TB) *hostileReg {
	h := &hostileReg{docs: map[string]hostileDoc{}, blobs: map[digest.Digest][]byte{}, handlers: map[string]http.HandlerFunc{}}
	h.srv = httptest.NewTLSServer(h)
	t.Cleanup(h.close)
	return h
}

func (h *hostileReg) close() {
	h.srv.CloseClientConnections()
	h.srv.Close()
}

func (h *hostileReg) host() string { return h.srv.Listener.Addr().String() }

func (h *hostileReg) ref(repoTag string) string { return h.host() + "/" + repoTag }

// blob stores data and returns its digest.
func (h *hostileReg) blob(data []byte) digest.Digest {
	d := digest.FromBytes(data)
	h.mu.Lock()
	h.blobs[d] = data
	h.mu.Unlock()
	return d
}

// manifest stores raw as repo's manifest, by tag (when tag is not "") and by its sha256.
func (h *hostileReg) manifest(repo, tag, mediaType string, raw []byte) digest.Digest {
	return h.manifestAs(repo, tag, mediaType, raw, digest.FromBytes(raw))
}

// manifestAs stores raw as repo's manifest named d (a signed schema 1's canonical
// digest), by tag (when tag is not "") and by d.
func (h *hostileReg) manifestAs(repo, tag, mediaType string, raw []byte, d digest.Digest) digest.Digest {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.docs[repo+"/"+d.String()] = hostileDoc{mediaType, raw, d}
	if tag != "" {
		h.docs[repo+"/"+tag] = hostileDoc{mediaType, raw, d}
	}
	return d
}

// handle serves path with fn, whatever the registry holds.
func (h *hostileReg) handle(path string, fn http.HandlerFunc) {
	h.mu.Lock()
	h.handlers[path] = fn
	h.mu.Unlock()
}

// requests returns the requests so far, as "METHOD path".
func (h *hostileReg) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.log...)
}

// count counts the requests whose path contains s.
func (h *hostileReg) count(s string) int {
	n := 0
	for _, r := range h.requests() {
		if strings.Contains(r, s) {
			n++
		}
	}
	return n
}

func (h *hostileReg) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.log = append(h.log, r.Method+" "+r.URL.Path)
	fn := h.handlers[r.URL.Path]
	auth := h.auth
	h.mu.Unlock()
	if fn != nil {
		fn(w, r)
		return
	}
	if auth != nil && !auth(w, r) {
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	if i := strings.LastIndex(rest, "/manifests/"); i >= 0 {
		h.mu.Lock()
		doc, ok := h.docs[rest[:i]+"/"+rest[i+len("/manifests/"):]]
		h.mu.Unlock()
		if !ok {
			writeRegistryError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		w.Header().Set("Content-Type", doc.mediaType)
		w.Header().Set("Docker-Content-Digest", doc.digest.String())
		w.Header().Set("Content-Length", fmt.Sprint(len(doc.raw)))
		if r.Method != http.MethodHead {
			_, _ = w.Write(doc.raw)
		}
		return
	}
	if i := strings.LastIndex(rest, "/blobs/"); i >= 0 {
		d, err := digest.Parse(rest[i+len("/blobs/"):])
		h.mu.Lock()
		b, ok := h.blobs[d]
		h.mu.Unlock()
		if err != nil || !ok {
			writeRegistryError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown")
			return
		}
		w.Header().Set("Docker-Content-Digest", d.String())
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
		return
	}
	http.NotFound(w, r)
}

func writeRegistryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// hostileConfig is an image config for os/arch with the layers' diffIDs.
func hostileConfig(os, arch string, diffIDs ...digest.Digest) []byte {
	if diffIDs == nil {
		diffIDs = []digest.Digest{}
	}
	b, err := json.Marshal(map[string]any{"architecture": arch, "os": os,
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}, "config": map[string]any{}})
	if err != nil {
		panic(err)
	}
	return b
}

// ociManifest is an OCI image manifest of config and layers.
func ociManifest(config manifest.Descriptor, layers ...manifest.Descriptor) []byte {
	type desc struct {
		MediaType string        `json:"mediaType"`
		Digest    digest.Digest `json:"digest"`
		Size      int64         `json:"size"`
		URLs      []string      `json:"urls,omitempty"`
	}
	ls := []desc{}
	for _, l := range layers {
		ls = append(ls, desc{l.MediaType, l.Digest, l.Size, l.URLs})
	}
	b, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIManifest,
		"config": desc{config.MediaType, config.Digest, config.Size, nil}, "layers": ls})
	if err != nil {
		panic(err)
	}
	return b
}

// image stores an OCI image of cfg and layers (their blobs stored, or served, apart) as
// repo:tag and returns the manifest's digest.
func (h *hostileReg) image(repo, tag string, cfg []byte, layers ...manifest.Descriptor) digest.Digest {
	cd := h.blob(cfg)
	return h.manifest(repo, tag, manifest.MediaTypeOCIManifest,
		ociManifest(manifest.Descriptor{MediaType: manifest.MediaTypeOCIConfig, Digest: cd, Size: int64(len(cfg))}, layers...))
}

// gzipLayer is a layer descriptor for data, stored in the registry.
func (h *hostileReg) layer(data []byte) manifest.Descriptor {
	return manifest.Descriptor{MediaType: manifest.MediaTypeOCILayerGzip, Digest: h.blob(data), Size: int64(len(data))}
}

// rawServer is a TCP server on loopback that hands every connection to serve: for
// answers no HTTP server would give (none at all, headers a byte at a time, endless 1xx).
// It closes every connection when the test ends.
type rawServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	n     atomic.Int64
	wg    sync.WaitGroup
}

func newRawServer(t testing.TB, serve func(c net.Conn, r *bufio.Reader)) *rawServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.n.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) host() string { return s.ln.Addr().String() }

// accepted is how many connections the server took.
func (s *rawServer) accepted() int64 { return s.n.Load() }

// readRequestHead reads one request's head (up to the blank line), or reports false.
func readRequestHead(r *bufio.Reader) bool {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return false
		}
		if line == "\r\n" || line == "\n" {
			return true
		}
	}
}

// discardStore is a memory store whose writers of blobs of at least big bytes count
// and drop what they are given, for transfers too large to keep.
type discardStore struct {
	*store.Memory
	big     int64
	written atomic.Int64
}

func (s *discardStore) Writer(ctx context.Context, desc manifest.Descriptor) (store.Writer, error) {
	if desc.Size >= s.big {
		return &discardWriter{s: s, d: desc.Digest}, nil
	}
	return s.Memory.Writer(ctx, desc)
}

type discardWriter struct {
	s   *discardStore
	d   digest.Digest
	off int64
}

func (w *discardWriter) Write(p []byte) (int, error) {
	w.off += int64(len(p))
	w.s.written.Add(int64(len(p)))
	return len(p), nil
}
func (w *discardWriter) Offset() int64 { return w.off }
func (w *discardWriter) Truncate(n int64) error {
	w.off = n
	return nil
}
func (w *discardWriter) Commit(context.Context, int64, digest.Digest) error {
	return &pullkit.DigestMismatchError{What: "blob", Want: w.d, Got: digest.Digest("sha256:" + strings.Repeat("0", 64))}
}
func (w *discardWriter) Close() error { return nil }

// zeros is an io.ReadSeeker of n zero bytes, for http.ServeContent.
type zeros struct{ n, off int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.off >= z.n {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), z.n-z.off))
	clear(p[:k])
	z.off += int64(k)
	return k, nil
}

func (z *zeros) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		z.off = off
	case io.SeekCurrent:
		z.off += off
	case io.SeekEnd:
		z.off = z.n + off
	}
	return z.off, nil
}
