// Command ggcr pulls an image with go-containerregistry's remote and writes it with its
// layout package: the in-process equivalent of `crane pull --format oci`, measured in the
// same run as the floor and pullkit.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func main() {
	ref := flag.String("ref", "", "image reference")
	out := flag.String("out", "", "output OCI layout directory")
	flag.Parse()
	if err := run(*ref, *out); err != nil {
		fmt.Fprintln(os.Stderr, "ggcr:", err)
		os.Exit(1)
	}
}

func run(ref, out string) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(r)
	if err != nil {
		return err
	}
	p, err := layout.Write(out, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img)
}
