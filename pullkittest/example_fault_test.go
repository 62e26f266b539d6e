package pullkittest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/pullkittest"
)

// fetchBlob is the code under test: a helper that resumes a body cut short with a Range
// request from the byte it reached, and accepts only a 206 that starts there.
func fetchBlob(ctx context.Context, base, repo string, d digest.Digest) ([]byte, error) {
	var got []byte
	for try := 0; try < 3; try++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/blobs/"+d.String(), nil)
		if err != nil {
			return nil, err
		}
		if len(got) > 0 {
			req.Header.Set("Range", "bytes="+strconv.Itoa(len(got))+"-")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		switch {
		case len(got) == 0 && resp.StatusCode == http.StatusOK:
		case len(got) > 0 && resp.StatusCode == http.StatusPartialContent &&
			strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+strconv.Itoa(len(got))+"-"):
		default:
			resp.Body.Close()
			return nil, fmt.Errorf("blob %s: %s", d, resp.Status)
		}
		var buf bytes.Buffer
		_, err = io.Copy(&buf, resp.Body)
		resp.Body.Close()
		got = append(got, buf.Bytes()...)
		if err == nil {
			if digest.FromBytes(got) != d {
				return nil, fmt.Errorf("blob %s does not verify", d)
			}
			return got, nil
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("blob %s: gave up", d)
}

// A user's test of fetchBlob with a fault injected: the first blob response is cut after
// 512 bytes under its full Content-Length, and the request log shows the resume.
func ExampleRegistry_Inject() {
	reg, err := pullkittest.Start()
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	img := reg.PushImage("demo/app", "v1", pullkittest.Schema2, pullkittest.Layers(1, 4096))
	layer := img.Layers[0]
	reg.Inject(&pullkittest.Rule{
		Match: pullkittest.Match{Route: pullkittest.RouteBlob},
		Times: 1,
		Fault: pullkittest.TruncateAfter(512),
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data, err := fetchBlob(ctx, reg.URL(), "demo/app", layer.Digest)
	fmt.Println("verified:", err == nil && bytes.Equal(data, layer.Data))
	for _, r := range reg.Requests() {
		fmt.Printf("%s %s %d range=%q fault=%q\n", r.Method, r.Route, r.Status, r.Range, r.Fault)
	}
	// Output:
	// verified: true
	// GET blob 200 range="" fault="truncate after 512 bytes"
	// GET blob 206 range="bytes=512-" fault=""
}
