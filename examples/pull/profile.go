package main

import (
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
)

// startProfiles starts the profiles the environment asks for, for benchmarks of a real
// pull (bench/unpack.sh's PROFILE): PULL_CPUPROFILE=FILE writes a CPU profile,
// PULL_TRACE=FILE an execution trace (go tool trace), PULL_MEMPROFILE=FILE the heap profile
// at the end (its alloc_space says what the pull allocated). The function it returns stops them;
// main calls it before exiting. Neither is part of the CLI's contract.
func startProfiles() (stop func()) {
	var stops []func()
	if p := os.Getenv("PULL_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil && pprof.StartCPUProfile(f) == nil {
			stops = append(stops, func() { pprof.StopCPUProfile(); _ = f.Close() })
		}
	}
	if p := os.Getenv("PULL_TRACE"); p != "" {
		if f, err := os.Create(p); err == nil && trace.Start(f) == nil {
			stops = append(stops, func() { trace.Stop(); _ = f.Close() })
		}
	}
	if p := os.Getenv("PULL_MEMPROFILE"); p != "" {
		runtime.MemProfileRate = 64 << 10
		stops = append(stops, func() {
			if f, err := os.Create(p); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				_ = f.Close()
			}
		})
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}
