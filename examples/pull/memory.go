package main

import (
	"os"
	"runtime/debug"
)

// memoryLimit is the soft limit the command puts on the Go runtime's memory (heap,
// stacks, the runtime's own), unless GOMEMLIMIT says otherwise. A pull's peak RSS is
// bound by 64 MiB (README, "Speed and memory"), and the collector's default pacing
// lets the heap grow to about twice what is live before it collects: a transfer
// holding its parts' blocks and HTTP/2 windows (25-40 MiB live over a long link) then
// went past the bound with garbage alone, and so did the speculative inflate's buffers
// (96-118 MiB without a limit). The rest of the bound is the binary's own
// pages (about 18 MiB resident) and what the C library maps. Live memory over the
// limit is not refused: the collector then runs more often, its CPU capped by the
// runtime.
const memoryLimit = 40 << 20

// limitMemory applies memoryLimit, unless the environment sets GOMEMLIMIT.
func limitMemory() {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return
	}
	debug.SetMemoryLimit(memoryLimit)
}
