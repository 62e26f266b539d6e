// Command inflate times inflating gzip layer blobs: klauspost's serial gzip reader (what
// layers.Decompress uses, and the floor's inflate term in bench/unpack.sh), or pullkit's
// parallel reader (internal/inflate). CPUPROF=FILE writes a CPU profile. It prints one
// line per run: mode, wall seconds, CPU seconds (user + system of this process),
// uncompressed bytes.
//
//	inflate [-mode klauspost|inorder|parallel] [-workers N] [-rounds N] FILE...
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/pullkit/pullkit/internal/inflate"
)

func main() {
	mode := flag.String("mode", "klauspost", "klauspost (serial), inorder (pullkit, no workers) or parallel")
	workers := flag.Int("workers", 0, "parallel: workers besides the reader (default GOMAXPROCS-1)")
	rounds := flag.Int("rounds", 1, "runs over all the files")
	flag.Int64Var(&partSize, "part", 0, "parallel: compressed bytes per part (default the package's)")
	flag.Parse()
	if p := os.Getenv("CPUPROF"); p != "" {
		if f, err := os.Create(p); err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	var blobs [][]byte
	for _, f := range flag.Args() {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		blobs = append(blobs, b)
	}
	for range *rounds {
		t0, c0 := time.Now(), cpu()
		var total int64
		for _, b := range blobs {
			n, err := run(*mode, *workers, b)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				pprof.StopCPUProfile()
				os.Exit(1)
			}
			total += n
		}
		fmt.Printf("%s\t%.3f\t%.3f\t%d\n", *mode, time.Since(t0).Seconds(), (cpu() - c0).Seconds(), total)
	}
}

var partSize int64

func run(mode string, workers int, b []byte) (int64, error) {
	var r io.Reader
	switch mode {
	case "klauspost":
		z, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return 0, err
		}
		r = z
	case "inorder", "parallel":
		cfg := inflate.Config{}
		if mode == "parallel" {
			cfg = inflate.Default()
			if workers > 0 {
				cfg.Workers = workers
			}
			cfg.PartSize = partSize
		}
		z, err := inflate.NewGzip(context.Background(), bytes.NewReader(b), int64(len(b)), cfg)
		if err != nil {
			return 0, err
		}
		defer func() {
			if os.Getenv("INFLATE_STATS") != "" {
				fmt.Fprintf(os.Stderr, "%+v\n", z.Stats())
			}
			z.Close()
		}()
		r = z
	default:
		return 0, fmt.Errorf("unknown mode %q", mode)
	}
	return io.Copy(io.Discard, r)
}

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
