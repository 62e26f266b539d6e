package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/archive"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/unpack"
)

// formats maps --manifest-format to the library's.
var formats = map[string]puller.Format{"oci": puller.FormatOCI, "v2s2": puller.FormatDocker, "v2s1": puller.FormatSchema1}

// writeOutput pulls ref and writes it to path in o.format, returning the model and a line
// that says what was written.
func writeOutput(ctx context.Context, o *options, c *puller.Client, call []puller.PullOption, ref, path string) (*manifest.Image, string, error) {
	fail := func(err error) (*manifest.Image, string, error) {
		return nil, "", fmt.Errorf("write %s to %s (%s): %w", ref, path, o.format, err)
	}
	if o.progressOut != nil { // a fresh display per image, drawn below what was printed
		p := newProgress(o.progressOut)
		call = append(call, puller.WithProgress(p.event))
		defer p.finish()
	}
	switch o.format {
	case "oci":
		st, err := store.OpenLayout(path, store.WithDirectIO(o.directIO))
		if err != nil {
			return fail(err)
		}
		img, err := c.Pull(ctx, ref, st, append(call, puller.WithFormat(formats[o.manifestFormat]))...)
		if err != nil {
			return fail(err)
		}
		return img, fmt.Sprintf("%s (OCI image layout, %s as %s)", path, img.Stored.Digest, img.Name), nil

	case "docker-archive":
		tmp, err := os.MkdirTemp(filepath.Dir(path), ".pull-blobs-")
		if err != nil {
			return fail(err)
		}
		defer os.RemoveAll(tmp)
		st, err := store.OpenLayout(tmp, store.WithDirectIO(o.directIO))
		if err != nil {
			return fail(err)
		}
		img, err := c.Pull(ctx, ref, st, append(call, puller.WithFormat(puller.FormatDocker))...)
		if err != nil {
			return fail(err)
		}
		if err := writeArchive(ctx, path, img, st); err != nil {
			return fail(err)
		}
		return img, fmt.Sprintf("%s (docker-archive, config %s)", path, img.Config.Digest), nil
	}
	return fail(fmt.Errorf("unknown format"))
}

// writeArchive writes the pulled image img from st as a docker-archive tar at path
// (through a temporary file in the same directory, renamed into place once complete).
func writeArchive(ctx context.Context, path string, img *manifest.Image, st store.Store) error {
	di, err := archive.FromStore(ctx, st, img)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := archive.WriteDockerArchive(f, di); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// storeCommand runs --list, --delete, --gc or --check on the layout --output DIR.
func storeCommand(ctx context.Context, o *options, stdout io.Writer) error {
	st, err := store.OpenLayout(o.output)
	if err != nil {
		return err
	}
	switch {
	case o.list:
		imgs, err := st.Images(ctx)
		if err != nil {
			return err
		}
		for _, img := range imgs {
			fmt.Fprintf(stdout, "%s  %s  %s\n", clean(string(img.Target.Digest)), clean(img.Target.MediaType), clean(img.Name))
		}
	case o.deleteName != "":
		if err := st.DeleteImage(ctx, o.deleteName); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %s (its blobs stay until --gc)\n", o.deleteName)
	case o.gc:
		res, err := st.GC(ctx, store.WithIngestExpiry(o.ingestExpiry))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %d blobs (%s) and %d partial downloads (%s)\n", len(res.Blobs), humanBytes(res.Bytes), res.Ingests, humanBytes(res.IngestBytes))
	case o.check:
		res, err := st.Check(ctx, true)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "checked %d blobs (%s): %d damaged, removed\n", res.Checked, humanBytes(res.Bytes), len(res.Damaged))
	}
	return nil
}

// unpackOutput pulls ref and applies its layers while they download, to a root
// filesystem (--unpack) or snapshots (--snapshots). The blobs go to --output when given
// (kept), else to a scratch layout removed afterwards.
func unpackOutput(ctx context.Context, o *options, c *puller.Client, call []puller.PullOption, ref string) (*manifest.Image, string, error) {
	target := o.unpack
	if target == "" {
		target = o.snapshots
	}
	fail := func(err error) (*manifest.Image, string, error) {
		return nil, "", fmt.Errorf("unpack %s to %s: %w", ref, target, err)
	}
	dir := o.output
	if dir == "" {
		tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(target)), ".pull-blobs-")
		if err != nil {
			return fail(err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	st, err := store.OpenLayout(dir, store.WithDirectIO(o.directIO))
	if err != nil {
		return fail(err)
	}
	var pipe *unpack.Pipeline
	var rootfs *unpack.Rootfs
	if o.unpack != "" {
		if rootfs, err = unpack.NewRootfs(o.unpack); err != nil {
			return fail(err)
		}
		defer rootfs.Abort()
		pipe = rootfs.NewPipeline(ctx)
	} else {
		snaps, err := unpack.OpenSnapshots(o.snapshots)
		if err != nil {
			return fail(err)
		}
		pipe = snaps.NewPipeline(ctx)
	}
	if o.progressOut != nil {
		p := newProgress(o.progressOut)
		call = append(call, puller.WithProgress(p.event))
		defer p.finish()
	}
	if o.dropBlobs {
		pipe.DropBlobs(st)
	}
	// A layer whose snapshot is there already is not downloaded (its blob may have been
	// dropped by an earlier --drop-blobs).
	img, err := c.Pull(ctx, ref, st, append(call, puller.WithLayerTees(pipe.Tee), puller.WithSkipLayers(pipe.Skip))...)
	if err != nil {
		pipe.Abort(err)
		return fail(err)
	}
	results, err := pipe.Wait()
	if err != nil {
		return fail(err)
	}
	reused := 0
	var stages pullkit.Stages
	for _, r := range results {
		if r.Reused {
			reused++
		}
		stages = stages.Add(r.Stages)
	}
	if rootfs != nil {
		if err := rootfs.Commit(); err != nil {
			return fail(err)
		}
		return img, fmt.Sprintf("%s (root filesystem, %d layers applied; %s)", o.unpack, len(results), stageLine(stages)), nil
	}
	top := "none"
	if len(results) > 0 {
		top = results[len(results)-1].ChainID.String()
	}
	return img, fmt.Sprintf("%s (snapshots, %d layers, %d reused; top chain ID %s; %s)", o.snapshots, len(results), reused, top, stageLine(stages)), nil
}

// stageLine says where the unpack's time went, summed over the layers (they overlap:
// see pullkit.Stages).
func stageLine(s pullkit.Stages) string {
	r := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	return fmt.Sprintf("stages: fetch %s, inflate %s, tar %s, write %s, wait %s", r(s.Fetch), r(s.Inflate), r(s.Tar), r(s.Write), r(s.Wait))
}
