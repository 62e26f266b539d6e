// Command applyrss applies gzip layer files to a new root filesystem with unpack.Rootfs,
// reading each from its file (so inflated in parallel): for checking memory, stage times
// and, with CPUPROF=FILE, where the CPU goes, outside a pull (HEAPPROF=FILE writes the
// heap before the commit).
//
//	applyrss DIR LAYER.tar.gz...
package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/unpack"
)

func main() {
	if p := os.Getenv("CPUPROF"); p != "" {
		f, err := os.Create(p)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	r, err := unpack.NewRootfs(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer r.Abort()
	for _, p := range os.Args[2:] {
		f, err := os.Open(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		res, err := r.Apply(context.Background(), digest.FromString(p), "", f)
		f.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s: %d entries, %d bytes, %+v\n", p, res.Entries, res.Size, res.Stages)
	}
	if p := os.Getenv("HEAPPROF"); p != "" {
		f, _ := os.Create(p)
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	if err := r.Commit(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}
