package puller_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// The transfer's knobs on one call (the CLI's --conns-per-host, --ranges and
// --cancel-grace), and an interrupted pull taken up again: the cancelled call reads
// what it had already asked for within the grace and keeps it in the layout, so the
// next call asks only for the rest.
func ExampleWithCancelGrace() {
	reg, err := pullkittest.Start()
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	reg.PushImage("team/big", "v1", pullkittest.OCI, pullkittest.Layers(2, 8<<20))
	dir, err := os.MkdirTemp("", "resume")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	st, err := store.OpenLayout(dir)
	if err != nil {
		panic(err)
	}
	c, err := puller.New()
	if err != nil {
		panic(err)
	}

	// Cancelled as soon as a layer's bytes arrive: the request they answer (the first
	// few MiB of the blob) is read to its end within the grace and kept.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopAtFirstLayer := func(ev pullkit.Event) {
		if ev.Kind == pullkit.EventProgress && ev.What == "layer" && ev.Done > 0 {
			cancel()
		}
	}
	_, err = c.Pull(ctx, reg.Ref("team/big:v1"), st,
		puller.WithConnsPerHost(4), puller.WithCancelGrace(time.Minute), puller.WithProgress(stopAtFirstLayer))
	fmt.Println("first call cancelled:", errors.Is(err, context.Canceled))

	// The same pull again, each blob in one request this time (a registry that serves
	// ranges badly): it goes on from what the layout kept.
	reg.ResetRequests()
	img, err := c.Pull(context.Background(), reg.Ref("team/big:v1"), st, puller.WithRanges(false))
	if err != nil {
		panic(err)
	}
	var received, layers int64
	for _, r := range reg.Requests() {
		if r.Route == pullkittest.RouteBlob {
			received += r.Bytes
		}
	}
	for _, l := range img.Layers {
		layers += l.Size
	}
	fmt.Println("second call:", len(img.Layers), "layers stored, fewer bytes received than they hold:", received < layers)
	// Output:
	// first call cancelled: true
	// second call: 2 layers stored, fewer bytes received than they hold: true
}
