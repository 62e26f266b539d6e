package pullkittest_test

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
)

// Artifacts that refer to an image are listed by the OCI 1.1 referrers API, filterable
// by artifact type.
func ExampleRegistry_PushArtifact() {
	reg, err := pullkittest.Start()
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	img := reg.PushImage("demo/app", "v1", pullkittest.OCI)
	reg.PushArtifact("demo/app", img.Descriptor(), "application/spdx+json")
	reg.PushArtifact("demo/app", img.Descriptor(), "application/vnd.dev.cosign.artifact.sig.v1+json")

	for _, query := range []string{"", "?artifactType=application/spdx%2Bjson"} {
		resp, err := http.Get(reg.URL() + "/v2/demo/app/referrers/" + img.Digest.String() + query)
		if err != nil {
			panic(err)
		}
		var index struct {
			Manifests []manifest.Descriptor `json:"manifests"`
		}
		err = json.NewDecoder(resp.Body).Decode(&index)
		resp.Body.Close()
		fmt.Printf("%d %q filters=%q\n", resp.StatusCode, query, resp.Header.Get("OCI-Filters-Applied"))
		for _, d := range index.Manifests {
			fmt.Println(" ", d.ArtifactType, err)
		}
	}
	// Output:
	// 200 "" filters=""
	//   application/spdx+json <nil>
	//   application/vnd.dev.cosign.artifact.sig.v1+json <nil>
	// 200 "?artifactType=application/spdx%2Bjson" filters="artifactType"
	//   application/spdx+json <nil>
}

// A registry without the referrers API answers 404, and the kit keeps the fallback tag
// sha256-<hex> of the subject pointing at an index of its referrers, as pushing clients
// do.
func ExampleWithoutReferrersAPI() {
	reg, err := pullkittest.Start(pullkittest.WithoutReferrersAPI())
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	img := reg.PushImage("demo/app", "v1", pullkittest.OCI)
	sbom := reg.PushArtifact("demo/app", img.Descriptor(), "application/spdx+json")

	resp, err := http.Get(reg.URL() + "/v2/demo/app/referrers/" + img.Digest.String())
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println("referrers API:", resp.StatusCode)

	req, _ := http.NewRequest(http.MethodGet, reg.URL()+"/v2/demo/app/manifests/sha256-"+img.Digest.Encoded(), nil)
	req.Header.Set("Accept", manifest.MediaTypeOCIIndex)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var index struct {
		Manifests []manifest.Descriptor `json:"manifests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&index); err != nil {
		panic(err)
	}
	fmt.Println("fallback tag:", resp.StatusCode, len(index.Manifests), index.Manifests[0].Digest == sbom.Digest)
	// Output:
	// referrers API: 404
	// fallback tag: 200 1 true
}

// Distribution's answer to a missing repository and to a missing tag is the same
// MANIFEST_UNKNOWN; only tags/list says NAME_UNKNOWN. WithNameUnknown makes the kit
// answer NAME_UNKNOWN for both, as some registries do, so a client can be tested
// against either.
func ExampleWithNameUnknown() {
	for _, opts := range [][]pullkittest.Option{nil, {pullkittest.WithNameUnknown()}} {
		reg, err := pullkittest.Start(opts...)
		if err != nil {
			panic(err)
		}
		reg.PushImage("demo/app", "v1", pullkittest.Schema2)
		for _, path := range []string{"/v2/demo/app/manifests/nosuch", "/v2/demo/nosuch/manifests/v1", "/v2/demo/nosuch/tags/list"} {
			resp, err := http.Get(reg.URL() + path)
			if err != nil {
				panic(err)
			}
			var body struct {
				Errors []struct{ Code string } `json:"errors"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			fmt.Println(resp.StatusCode, body.Errors[0].Code, path)
		}
		reg.Close()
	}
	// Output:
	// 404 MANIFEST_UNKNOWN /v2/demo/app/manifests/nosuch
	// 404 MANIFEST_UNKNOWN /v2/demo/nosuch/manifests/v1
	// 404 NAME_UNKNOWN /v2/demo/nosuch/tags/list
	// 404 MANIFEST_UNKNOWN /v2/demo/app/manifests/nosuch
	// 404 NAME_UNKNOWN /v2/demo/nosuch/manifests/v1
	// 404 NAME_UNKNOWN /v2/demo/nosuch/tags/list
}
