package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
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
	if o.term != nil { // a fresh display per image, drawn below what was printed
		p := startProgress(o.term, tickInterval)
		call = append(call, puller.WithProgress(p.event))
		defer p.finish()
	}
	switch o.format {
	case "oci":
		st, err := store.OpenLayout(path, store.WithDirectIO(o.directIO))
		if err != nil {
			return fail(err)
		}
		o.partial = path
		img, err := c.Pull(ctx, ref, st, append(call, puller.WithFormat(formats[o.manifestFormat]))...)
		if err != nil {
			if !holdsPartials(path, false) {
				o.partial = ""
			}
			return fail(err)
		}
		o.partial = ""
		line := fmt.Sprintf("%s (OCI image layout, %s as %s)", path, img.Stored.Digest, img.Name)
		if img.Stored.MediaType == manifest.MediaTypeDockerSchema2 {
			line += "; " + v2s2Note
		}
		return img, line, nil

	case "docker-archive":
		// The blobs go to a scratch layout next to the archive, kept when the pull fails
		// so that the same command resumes it. The manifest is stored as served: the
		// archive is written from the model and the blobs, and any layer compression
		// (zstd too) is decompressed into it.
		st, dir, err := openScratch(path, o.directIO)
		if err != nil {
			return fail(err)
		}
		o.partial = dir
		img, err := c.Pull(ctx, ref, st, append(call, puller.WithFormat(puller.FormatAsServed))...)
		if err == nil {
			err = writeArchive(ctx, path, img, st)
		}
		if !closeScratch(dir, err == nil) {
			o.partial = ""
		}
		if err != nil {
			return fail(err)
		}
		return img, fmt.Sprintf("%s (docker-archive, config %s)", path, img.Config.Digest), nil
	}
	return fail(fmt.Errorf("unknown format"))
}

// v2s2Note says who reads a layout whose manifests are Docker schema 2.
const v2s2Note = "its manifest is Docker schema 2, which skopeo's oci: transport and umoci do not read (crane and pullkit do; --manifest-format oci writes what they all read)"

// scratchFor is the scratch layout that holds the blobs of a pull written to target in
// another form (a docker-archive, an unpacked tree): a hidden directory beside target,
// the same for every run, so that a pull interrupted or failed resumes from it.
func scratchFor(target string) string {
	target = filepath.Clean(target)
	return filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".pull-blobs")
}

// openScratch opens target's scratch layout. An error names target's directory, which
// the user chose, not the scratch layout's.
func openScratch(target string, directIO bool) (*store.Layout, string, error) {
	dir := scratchFor(target)
	if _, err := os.Stat(filepath.Dir(dir)); err != nil {
		return nil, dir, targetError(target, err) // the target's directory must exist
	}
	st, err := store.OpenLayout(dir, store.WithDirectIO(directIO))
	if err != nil {
		return nil, dir, targetError(target, err)
	}
	return st, dir, nil
}

// closeScratch removes a scratch layout once the pull succeeded, or when it holds
// nothing to resume from; it reports whether the layout was kept.
func closeScratch(dir string, ok bool) bool {
	if ok || !holdsPartials(dir, true) {
		_ = os.RemoveAll(dir)
		return false
	}
	return true
}

// holdsPartials reports whether the layout dir holds a partial download to resume or,
// with blobs, verified blobs too (a scratch layout's, which the next run reuses).
func holdsPartials(dir string, blobs bool) bool {
	subs := []string{store.IngestDir}
	if blobs {
		subs = append(subs, filepath.Join(store.BlobsDir, "sha256"))
	}
	for _, sub := range subs {
		if ents, err := os.ReadDir(filepath.Join(dir, sub)); err == nil && len(ents) > 0 {
			return true
		}
	}
	return false
}

// targetError rewrites a file system error met while creating a file beside target (a
// scratch layout, a temporary archive) so that it names target's directory, and keeps
// the system's error (errors.Is(err, fs.ErrPermission) holds).
func targetError(target string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("cannot create files in %s: %w", filepath.Dir(filepath.Clean(target)), pe.Err)
	}
	return err
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
		return targetError(path, err)
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
	if err := os.Rename(f.Name(), path); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) {
			return fmt.Errorf("cannot write %s: %w", path, le.Err)
		}
		return err
	}
	return nil
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
			line := fmt.Sprintf("%s  %s  %s", clean(string(img.Target.Digest)), clean(img.Target.MediaType), clean(img.Name))
			if bad := incomplete(ctx, st, img.Target); len(bad) > 0 {
				line += "  INCOMPLETE: " + strings.Join(bad, ", ") + " (pull it again to fetch them)"
			}
			fmt.Fprintln(stdout, line)
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
		// Which names reach each blob, read before the check removes damaged ones.
		users, err := namesByBlob(ctx, st)
		if err != nil {
			return err
		}
		res, err := st.Check(ctx, true)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "checked %d blobs (%s): %d damaged, removed\n", res.Checked, humanBytes(res.Bytes), len(res.Damaged))
		for _, d := range res.Damaged {
			who := "no name reaches it"
			if names := users[d]; len(names) > 0 {
				for i := range names {
					names[i] = clean(names[i])
				}
				who = "used by " + strings.Join(names, ", ") + ": pull it again to fetch the blob"
			}
			fmt.Fprintf(stdout, "  damaged %s (%s)\n", d, who)
		}
	}
	return nil
}

// maxManifest caps what is read from a store as a manifest or index: the cap a pull puts
// on manifests.
const maxManifest = 4 << 20

// reachable calls fn for every blob target reaches (target itself, an index's manifests,
// each manifest's config and layers) with the size its descriptor states. A manifest that
// is missing or does not parse reaches nothing more.
func reachable(ctx context.Context, st store.Provider, target manifest.Descriptor, fn func(manifest.Descriptor)) {
	seen := map[digest.Digest]bool{}
	queue := []manifest.Descriptor{target}
	for len(queue) > 0 && ctx.Err() == nil {
		d := queue[0]
		queue = queue[1:]
		if seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		fn(d)
		raw, err := store.ReadBlob(ctx, st, d.Digest, maxManifest)
		if err != nil {
			continue
		}
		m, err := manifest.Parse(raw, d.MediaType)
		if err != nil {
			continue
		}
		if m.Config != nil {
			fn(*m.Config)
		}
		for _, l := range m.Layers {
			if l.Size >= 0 {
				fn(l.Descriptor())
			}
		}
		queue = append(queue, m.Manifests...)
	}
}

// incomplete lists what is wrong with the blobs target reaches: missing, or of another
// size than its descriptor says (damage of the same size takes --check's hashing).
func incomplete(ctx context.Context, st *store.Layout, target manifest.Descriptor) []string {
	var bad []string
	reachable(ctx, st, target, func(d manifest.Descriptor) {
		info, err := st.Info(ctx, d.Digest)
		switch {
		case err != nil:
			bad = append(bad, "missing "+clean(string(d.Digest)))
		case d.Size >= 0 && info.Size != d.Size:
			bad = append(bad, fmt.Sprintf("damaged %s (%d bytes, want %d)", clean(string(d.Digest)), info.Size, d.Size))
		}
	})
	return bad
}

// namesByBlob maps every blob a name of st reaches to those names, sorted.
func namesByBlob(ctx context.Context, st *store.Layout) (map[digest.Digest][]string, error) {
	imgs, err := st.Images(ctx)
	if err != nil {
		return nil, err
	}
	users := map[digest.Digest][]string{}
	for _, img := range imgs {
		reachable(ctx, st, img.Target, func(d manifest.Descriptor) {
			if !slices.Contains(users[d.Digest], img.Name) {
				users[d.Digest] = append(users[d.Digest], img.Name)
			}
		})
	}
	return users, ctx.Err()
}

// unpackOutput pulls ref and applies its layers while they download, to a root
// filesystem (--unpack) or snapshots (--snapshots). The blobs go to --output when given,
// else to a scratch layout beside the target, kept when the pull fails so that the same
// command resumes it, and removed once it succeeded.
func unpackOutput(ctx context.Context, o *options, c *puller.Client, call []puller.PullOption, ref string) (*manifest.Image, string, error) {
	target := o.unpack
	if target == "" {
		target = o.snapshots
	}
	fail := func(err error) (*manifest.Image, string, error) {
		return nil, "", fmt.Errorf("unpack %s to %s: %w", ref, target, err)
	}
	var st *store.Layout
	var err error
	dir, scratch := o.output, o.output == ""
	if scratch {
		st, dir, err = openScratch(target, o.directIO)
	} else {
		st, err = store.OpenLayout(dir, store.WithDirectIO(o.directIO))
	}
	if err != nil {
		return fail(err)
	}
	o.partial = dir
	img, line, err := unpackInto(ctx, o, c, call, ref, st)
	kept := holdsPartials(dir, false)
	if scratch {
		kept = closeScratch(dir, err == nil)
	}
	if err != nil {
		if !kept {
			o.partial = ""
		}
		return fail(err)
	}
	o.partial = ""
	return img, line, nil
}

// unpackInto pulls ref into st and applies its layers while they download.
func unpackInto(ctx context.Context, o *options, c *puller.Client, call []puller.PullOption, ref string, st store.Store) (*manifest.Image, string, error) {
	var pipe *unpack.Pipeline
	var rootfs *unpack.Rootfs
	var err error
	if o.unpack != "" {
		if rootfs, err = unpack.NewRootfs(o.unpack); err != nil {
			return nil, "", err
		}
		defer rootfs.Abort()
		pipe = rootfs.NewPipeline(ctx)
	} else {
		snaps, err := unpack.OpenSnapshots(o.snapshots)
		if err != nil {
			return nil, "", err
		}
		pipe = snaps.NewPipeline(ctx)
	}
	if o.term != nil {
		p := startProgress(o.term, tickInterval)
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
		return nil, "", err
	}
	results, err := pipe.Wait()
	if err != nil {
		return nil, "", err
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
			return nil, "", err
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
