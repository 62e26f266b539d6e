package puller_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// exampleMirrorPair starts a registry and a mirror holding the same team/app:v1.
func exampleMirrorPair() (origin, mirror *pullkittest.Registry) {
	origin, mirror = exampleRegistry(), exampleRegistry()
	return origin, mirror
}

// A hosts directory as containerd and Docker lay it out: DIR/<registry>/hosts.toml names
// a pull-only mirror (it never resolves a tag: the registry does) in front of the
// registry; certs.d files beside it would give TLS roots and client certificates.
func ExampleWithHostsDir() {
	origin, mirror := exampleMirrorPair()
	defer origin.Close()
	defer mirror.Close()
	dir, _ := os.MkdirTemp("", "hosts")
	defer os.RemoveAll(dir)
	_ = os.MkdirAll(filepath.Join(dir, origin.Host()), 0o755)
	toml := fmt.Sprintf(`server = "http://%s"

[host."http://%s"]
  capabilities = ["pull"]
  dial_timeout = "1s"
`, origin.Host(), mirror.Host())
	_ = os.WriteFile(filepath.Join(dir, origin.Host(), "hosts.toml"), []byte(toml), 0o644)

	c, err := puller.New(puller.WithHostsDir(dir))
	if err != nil {
		panic(err)
	}
	img, err := c.Pull(context.Background(), origin.Ref("team/app:v1"), store.NewMemory())
	if err != nil {
		panic(err)
	}
	fmt.Println("pulled", short(origin, img.Name), "with", len(img.Layers), "layers")
	fmt.Println("registry: manifests", origin.Count(pullkittest.Match{Route: pullkittest.RouteManifest}), "blobs", origin.Count(pullkittest.Match{Route: pullkittest.RouteBlob}))
	fmt.Println("mirror:   manifests", mirror.Count(pullkittest.Match{Route: pullkittest.RouteManifest}), "blobs", mirror.Count(pullkittest.Match{Route: pullkittest.RouteBlob}))
	// Output:
	// pulled team/app:v1 with 2 layers
	// registry: manifests 1 blobs 0
	// mirror:   manifests 0 blobs 3
}

// containers-registries.conf: a [[registry]] table by prefix with a mirror that may serve
// only digests, so a tag is resolved by the registry and a digest comes from the mirror.
func ExampleWithRegistriesConf() {
	origin, mirror := exampleMirrorPair()
	defer origin.Close()
	defer mirror.Close()
	dir, _ := os.MkdirTemp("", "conf")
	defer os.RemoveAll(dir)
	conf := fmt.Sprintf(`[[registry]]
prefix = %q
location = %q

[[registry.mirror]]
location = %q
pull-from-mirror = "digest-only"
`, origin.Host()+"/team", origin.Host()+"/team", mirror.Host()+"/team")
	path := filepath.Join(dir, "registries.conf")
	_ = os.WriteFile(path, []byte(conf), 0o644)

	c, err := puller.New(puller.WithRegistriesConf(path))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	res, err := c.Resolve(ctx, origin.Ref("team/app:v1"))
	if err != nil {
		panic(err)
	}
	fmt.Println("tag resolved by the registry:", origin.Count(pullkittest.Match{Route: pullkittest.RouteManifest}) > 0)
	if _, err := c.Pull(ctx, res.Pinned(), store.NewMemory()); err != nil {
		panic(err)
	}
	fmt.Println("blobs by digest from the mirror:", mirror.Count(pullkittest.Match{Route: pullkittest.RouteBlob}))
	// Output:
	// tag resolved by the registry: true
	// blobs by digest from the mirror: 3
}

// Plan shows where a pull would go, in order, and why, without sending anything: the
// support answer to "which mirror did it use?".
func ExampleClient_Plan() {
	dir, _ := os.MkdirTemp("", "hosts")
	defer os.RemoveAll(dir)
	_ = os.MkdirAll(filepath.Join(dir, "docker.io"), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "docker.io", "hosts.toml"), []byte(`server = "https://registry-1.docker.io"

[host."https://public-mirror.example.com"]
  capabilities = ["pull"]
[host."https://docker-mirror.internal"]
  capabilities = ["pull", "resolve"]
  [host."https://docker-mirror.internal".header]
    x-team = "engines"
`), 0o644)
	c, err := puller.New(puller.WithHostsDir(dir), puller.WithProxy(nil), puller.WithCredentials("docker.io", puller.Credential{Username: "me", Password: "secret"}))
	if err != nil {
		panic(err)
	}
	plan, err := c.Plan("alpine:3.20")
	if err != nil {
		panic(err)
	}
	for _, e := range plan.Endpoints {
		fmt.Println(e.URL)
		fmt.Println("  ", strings.Join(e.Capabilities, "+"), "|", e.Use)
		fmt.Println("  ", "credentials:", e.Credentials, "| headers:", e.Headers)
		fmt.Println("  ", "deadlines:", e.Connect, e.FirstByte, "| chosen by:", strings.ReplaceAll(e.Source, dir, "DIR"))
	}
	// Output:
	// https://public-mirror.example.com/v2/library/alpine?ns=docker.io
	//    pull | manifests and blobs by digest, once another endpoint resolved the tag
	//    credentials: keychain | headers: []
	//    deadlines: 1s 1s | chosen by: DIR/docker.io/hosts.toml host."https://public-mirror.example.com"
	// https://docker-mirror.internal/v2/library/alpine?ns=docker.io
	//    resolve+pull | resolve the tag; manifests and blobs by digest
	//    credentials: keychain | headers: [X-Team]
	//    deadlines: 1s 1s | chosen by: DIR/docker.io/hosts.toml host."https://docker-mirror.internal"
	// https://registry-1.docker.io/v2/library/alpine
	//    resolve+pull | resolve the tag; manifests and blobs by digest
	//    credentials: WithCredentials(docker.io) | headers: []
	//    deadlines: 15s 25s | chosen by: DIR/docker.io/hosts.toml server = "https://registry-1.docker.io"
}

// Plain credentials, without a keychain: a username and password for one registry.
func ExampleWithCredentials() {
	reg, err := pullkittest.Start(pullkittest.WithBasicAuth("alice", "s3cret"))
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	reg.PushImage("team/app", "v1", pullkittest.OCI)
	c, err := puller.New(puller.WithCredentials(reg.Host(), puller.Credential{Username: "alice", Password: "s3cret"}))
	if err != nil {
		panic(err)
	}
	img, err := c.Pull(context.Background(), reg.Ref("team/app:v1"), store.NewMemory())
	if err != nil {
		panic(err)
	}
	fmt.Println("pulled", short(reg, img.Name))
	// Output:
	// pulled team/app:v1
}
