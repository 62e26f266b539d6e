package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/pullkit/pullkit/archive"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// A pulled image becomes what `docker load` reads in two calls: FromStore describes it
// from the store the pull wrote, WriteDockerArchive writes it (each layer decompressed and
// checked against its diffID on the way).
func ExampleFromStore() {
	reg, err := pullkittest.Start()
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	reg.PushImage("team/app", "v1", pullkittest.OCI)

	ctx := context.Background()
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	st := store.NewMemory()
	img, err := c.Pull(ctx, reg.Ref("team/app:v1"), st)
	if err != nil {
		panic(err)
	}
	di, err := archive.FromStore(ctx, st, img)
	if err != nil {
		panic(err)
	}
	var out bytes.Buffer // a file in an engine, renamed into place once written
	if err := archive.WriteDockerArchive(&out, di); err != nil {
		panic(err)
	}
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == "manifest.json" { // docker load's table of contents
			var m []struct {
				RepoTags []string
				Layers   []string
			}
			if err := json.NewDecoder(tr).Decode(&m); err != nil {
				panic(err)
			}
			fmt.Println(strings.TrimPrefix(m[0].RepoTags[0], reg.Host()+"/"), len(m[0].Layers), "layers")
		}
	}
	// Output:
	// team/app:v1 2 layers
}
