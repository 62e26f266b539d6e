package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
)

// part is one range of one blob.
type part struct {
	loc    *where
	f      *os.File
	off, n int64
}

// where is a blob's URL, and where the registry redirects it (a CDN), asked once and
// again when the CDN refuses the URL (an expired signature).
type where struct {
	blob string
	mu   sync.Mutex
	to   string
}

func (w *where) url(client *http.Client, fresh bool) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.to != "" && !fresh {
		return w.to, nil
	}
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, err := http.NewRequest(http.MethodGet, w.blob, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Range", "bytes=0-0")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	w.to = w.blob
	if resp.StatusCode/100 == 3 {
		if u, err := resp.Location(); err == nil {
			w.to = u.String()
		}
	}
	return w.to, nil
}

// runRanged fetches the manifest, creates every blob's file at its full size, and has
// conns workers take ranges of at most rangeSize bytes from one queue, blob after blob.
func runRanged(registry, repo, tag, out string, rangeSize int64, conns int) error {
	if rangeSize < 1 || conns < 1 {
		return fmt.Errorf("-range-size and -conns must be positive")
	}
	// HTTP/1.1 only, so that conns connections carry the ranges whatever the server
	// offers (one HTTP/2 connection would carry them all).
	tr := &http.Transport{MaxConnsPerHost: conns, MaxIdleConnsPerHost: conns, DisableCompression: true,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	client := &http.Client{Transport: tr}
	base := scheme + "://" + registry + "/v2/" + repo
	req, err := http.NewRequest(http.MethodGet, base+"/manifests/"+tag, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	type desc struct {
		Digest string
		Size   int64
	}
	var m struct {
		Config desc   `json:"config"`
		Layers []desc `json:"layers"`
	}
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("manifest: %s", resp.Status)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var parts []part
	for _, d := range append([]desc{m.Config}, m.Layers...) {
		f, err := os.Create(filepath.Join(out, strings.TrimPrefix(d.Digest, "sha256:")))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Truncate(d.Size); err != nil {
			return err
		}
		loc := &where{blob: base + "/blobs/" + d.Digest}
		for off := int64(0); off < d.Size; off += rangeSize {
			parts = append(parts, part{loc: loc, f: f, off: off, n: min(rangeSize, d.Size-off)})
		}
	}
	queue := make(chan part)
	var g errgroup.Group
	for range min(conns, len(parts)) {
		g.Go(func() error {
			buf := make([]byte, 256<<10)
			for p := range queue {
				if err := fetchRange(client, p, buf); err != nil {
					// Keep taking parts so the feeder is not stuck; the first error wins.
					for range queue {
					}
					return err
				}
			}
			return nil
		})
	}
	for _, p := range parts {
		queue <- p
	}
	close(queue)
	return g.Wait()
}

// fetchRange GETs one range (at the blob's redirect, asked again once if refused),
// hashes it and writes it at its offset.
func fetchRange(client *http.Client, p part, buf []byte) error {
	var resp *http.Response
	for try := 0; ; try++ {
		u, err := p.loc.url(client, try > 0)
		if err != nil {
			return err
		}
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", p.off, p.off+p.n-1))
		if resp, err = client.Do(req); err != nil {
			return err
		}
		if resp.StatusCode == http.StatusForbidden && try == 0 {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			continue
		}
		break
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return fmt.Errorf("%s bytes %d+%d: %s, want 206", p.loc.blob, p.off, p.n, resp.Status)
	}
	h := sha256.New()
	off, end := p.off, p.off+p.n
	for off < end {
		k, err := resp.Body.Read(buf[:min(int64(len(buf)), end-off)])
		if k > 0 {
			h.Write(buf[:k])
			if _, werr := p.f.WriteAt(buf[:k], off); werr != nil {
				return werr
			}
			off += int64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if off != end {
		return fmt.Errorf("%s bytes %d+%d: got %d", p.loc.blob, p.off, p.n, off-p.off)
	}
	h.Sum(buf[:0])
	return nil
}
