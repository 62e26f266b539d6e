package pullkittest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
)

// fetchImage is the code under test: an engine's own helper that fetches an image
// manifest and its blobs with plain net/http and verifies every digest.
func fetchImage(ctx context.Context, base, repo, tag string) (mediaType string, blobs int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Accept", manifest.MediaTypeOCIManifest+", "+manifest.MediaTypeDockerSchema2)
	raw, resp, err := fetch(req)
	if err != nil {
		return "", 0, err
	}
	switch ct := resp.Header.Get("Content-Type"); ct {
	case manifest.MediaTypeOCIManifest, manifest.MediaTypeDockerSchema2:
	default:
		// A registry may serve what was not asked for: distribution 3 serves an index
		// whatever the Accept header says.
		return "", 0, fmt.Errorf("%s: got a %s, not an image manifest", req.URL.Path, ct)
	}
	if got := digest.FromBytes(raw).String(); got != resp.Header.Get("Docker-Content-Digest") {
		return "", 0, fmt.Errorf("manifest is %s, registry says %s", got, resp.Header.Get("Docker-Content-Digest"))
	}
	var m struct {
		Config manifest.Descriptor   `json:"config"`
		Layers []manifest.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", 0, err
	}
	for _, d := range append([]manifest.Descriptor{m.Config}, m.Layers...) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/blobs/"+d.Digest.String(), nil)
		if err != nil {
			return "", 0, err
		}
		data, _, err := fetch(req)
		if err != nil {
			return "", 0, err
		}
		if digest.FromBytes(data) != d.Digest || int64(len(data)) != d.Size {
			return "", 0, fmt.Errorf("blob %s does not verify", d.Digest)
		}
		blobs++
	}
	return resp.Header.Get("Content-Type"), blobs, nil
}

func fetch(req *http.Request) ([]byte, *http.Response, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%s: %s", req.URL.Path, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	return body, resp, err
}

// A user's test of fetchImage: seed the kit with an OCI image, run the helper against it,
// and check what it asked for. In a test, pullkittest.NewRegistry(t) replaces Start and
// the deferred Close.
func Example() {
	reg, err := pullkittest.Start()
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	reg.PushImage("demo/app", "v1", pullkittest.OCI, pullkittest.Layers(2, 4096))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mediaType, blobs, err := fetchImage(ctx, reg.URL(), "demo/app", "v1")
	fmt.Println(mediaType, blobs, err)
	fmt.Println("manifest requests:", reg.Count(pullkittest.Match{Route: pullkittest.RouteManifest}))
	fmt.Println("blob requests:", reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob}))

	// An index, which the helper did not accept, is served anyway, as distribution 3
	// serves it: the helper must look at what it got.
	reg.PushIndex("demo/multi", "v1", pullkittest.OCIIndex)
	_, _, err = fetchImage(ctx, reg.URL(), "demo/multi", "v1")
	fmt.Println(err)
	// Output:
	// application/vnd.oci.image.manifest.v1+json 3 <nil>
	// manifest requests: 1
	// blob requests: 3
	// /v2/demo/multi/manifests/v1: got a application/vnd.oci.image.index.v1+json, not an image manifest
}
