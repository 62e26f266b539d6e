package main

import (
	"fmt"
	"time"

	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/puller"
)

// transferFlags are the transfer's flags (issue 19): ranges on or off, connections per
// host, how long an interrupted pull keeps reading what is on its way.
type transferFlags struct {
	ranges bool
	conns  int
	grace  time.Duration
}

// register adds the flags to fs (the "Transfer" group of --help).
func (t *transferFlags) register(fs interface {
	BoolVar(p *bool, name string, value bool, usage string)
	IntVar(p *int, name string, value int, usage string)
	DurationVar(p *time.Duration, name string, value time.Duration, usage string)
}) {
	fs.BoolVar(&t.ranges, "ranges", true, "fetch a large blob in parallel ranges when its one stream is what limits it; false: one request per blob, resumed from where it stopped")
	fs.IntVar(&t.conns, "conns-per-host", 0, "at most `N` blob requests in flight to any one host (0: no cap of its own, --jobs bounds them)")
	fs.DurationVar(&t.grace, "cancel-grace", layers.DefaultCancelGrace, fmt.Sprintf("once interrupted (SIGINT, SIGTERM), read the answers already on their way for at most `DURATION`, kept for the next pull; a second signal stops at once, unless within %v of the first (the same one delivered twice)", sameSignal))
}

// check returns what is wrong with the flags, or "".
func (t *transferFlags) check() string {
	if t.conns < 0 {
		return fmt.Sprintf("--conns-per-host %d: want 0 (no cap) or more", t.conns)
	}
	if t.grace < 0 {
		return fmt.Sprintf("--cancel-grace %v: want 0 or more", t.grace)
	}
	return ""
}

// options are the pull options the flags ask for.
func (t *transferFlags) options() []puller.PullOption {
	opts := []puller.PullOption{puller.WithRanges(t.ranges), puller.WithCancelGrace(t.grace)}
	if t.conns > 0 {
		opts = append(opts, puller.WithConnsPerHost(t.conns))
	}
	return opts
}
