//go:build !unix

package puller_test

import (
	"os"
	"time"
)

// cpuTime is not measured here.
func cpuTime() time.Duration { return 0 }

// peakRSS is not measured here.
func peakRSS(*os.ProcessState) int64 { return 0 }
