package pullkittest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// get sends method to url with the given headers ("Name: value") and returns the
// response with its body read.
func get(t testing.TB, method, url string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := try(method, url, headers...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp, body
}

var testClient = &http.Client{Timeout: 10 * time.Second}

func try(method, url string, headers ...string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, nil, err
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := testClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// registryError is one entry of a distribution error body.
type registryError struct {
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Detail  json.RawMessage `json:"detail"`
}

// errorsOf decodes a distribution error body ("" entries when it is not one).
func errorsOf(body []byte) []registryError {
	var e struct {
		Errors []registryError `json:"errors"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Errors
}

// codeOf is the first error code of a body, or "".
func codeOf(body []byte) string {
	if e := errorsOf(body); len(e) > 0 {
		return e[0].Code
	}
	return ""
}

// acceptAll is every manifest type, as a modern client asks.
const acceptAll = "Accept: application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.v1+prettyjws"
