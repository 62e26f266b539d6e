// Command floor is the benchmark's floor: it fetches an image's manifest, then GETs every
// blob concurrently, hashes it with sha256 and writes it to a file, and nothing else (no
// auth, no retries, no resume, no layout). A puller cannot be expected to beat this with
// one stream per blob; pullkit's ratios are measured against it.
//
// With -ranged it is the ranged floor of the WAN benchmark (bench/wan.sh): every blob is
// split into -range-size ranges, and -conns connections GET them from one queue for the
// whole image, each range hashed with sha256 and written at its offset. Nothing checks
// the blob's digest (the ranges arrive out of order), so this is what a plain client with
// that many connections can do on the link, not a puller.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"
)

// scheme is how the registry is spoken to.
var scheme = "http"

func main() {
	registry := flag.String("registry", "127.0.0.1:5000", "registry host:port (plain HTTP)")
	repo := flag.String("repo", "", "repository")
	tag := flag.String("tag", "latest", "tag")
	out := flag.String("out", "", "output directory")
	jobs := flag.Int("jobs", 4, "concurrent blob GETs")
	ranged := flag.Bool("ranged", false, "split every blob into ranges fetched over -conns connections")
	rangeSize := flag.Int64("range-size", 4<<20, "with -ranged, bytes per range")
	conns := flag.Int("conns", 16, "with -ranged, connections (and ranges in flight)")
	flag.StringVar(&scheme, "scheme", "http", "http, or https (the CA from SSL_CERT_FILE)")
	flag.Parse()
	var err error
	if *ranged {
		err = runRanged(*registry, *repo, *tag, *out, *rangeSize, *conns)
	} else {
		err = run(*registry, *repo, *tag, *out, *jobs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(registry, repo, tag, out string, jobs int) error {
	base := scheme + "://" + registry + "/v2/" + repo
	req, err := http.NewRequest(http.MethodGet, base+"/manifests/"+tag, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("manifest: %s", resp.Status)
	}
	var m struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	blobs := []string{m.Config.Digest}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	var g errgroup.Group
	g.SetLimit(jobs)
	for _, d := range blobs {
		g.Go(func() error { return fetch(base+"/blobs/"+d, d, filepath.Join(out, strings.TrimPrefix(d, "sha256:"))) })
	}
	return g.Wait()
}

func fetch(url, want, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", want, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), resp.Body); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s: got %s", want, got)
	}
	return f.Close()
}
