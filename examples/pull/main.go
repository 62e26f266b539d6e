// Command pull pulls a container image the way an engine needs it: it resolves the
// reference, negotiates and verifies the manifests, picks the platform, verifies the
// config, and prints the normalised model, or writes the image to disk.
//
//	pull [flags] REFERENCE
//	pull --output DIR (--list | --delete NAME | --gc [--ingest-expiry DURATION] | --check)
//	pull [flags]   # no reference: start an in-process registry seeded from testdata, pull each
//
// pull --help lists every flag, grouped. Build it with go build -o pull ./examples/pull.
//
// It is a thin shell over the library: puller.Client's Resolve, Inspect and Pull, and
// store.Layout's names, GC and Check.
//
// It exits 0 on success; otherwise one line on stderr and 1 when the pull failed, 2 for
// a usage error (an invalid reference too), 128 plus the signal's number when SIGINT
// (130) or SIGTERM (143) interrupted it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/store"
)

func main() {
	limitMemory()
	stopProfiles := startProfiles()
	code := run(os.Args[1:], os.Stdout, os.Stderr)
	stopProfiles()
	os.Exit(code)
}

// options are the parsed command line.
type options struct {
	platform string
	all      bool
	output   string
	format   string
	// manifestFormat is the image manifest written into an OCI layout: oci (default),
	// v2s2 or v2s1.
	manifestFormat string
	jobs           int
	json           bool
	resolve        bool
	plainHTTP      bool
	checkDiffIDs   bool
	directIO       bool
	reference      string
	// unpack and snapshots are where layers are applied: a flattened root filesystem, or
	// overlay snapshots by chain ID.
	unpack, snapshots string
	// Store commands on --output DIR, without a reference.
	list, gc, check bool
	deleteName      string
	ingestExpiry    time.Duration
	// formatSet and manifestFormatSet record whether the flags were given.
	formatSet, manifestFormatSet bool
	// jobsSet records whether --jobs was given: without it, the library's default.
	jobsSet bool
	// term is stderr when it is a terminal (progress is drawn on it), else nil.
	term *os.File
	// help prints --help.
	help *flagHelp
	// partial is where the pull keeps its partial downloads (an OCI layout), for the
	// message of an interrupted or failed pull; "" when nothing was kept.
	partial string
	// net are the network flags (network.go).
	net networkFlags
	// trust are --policy and --verify-key, and what they verified (trust.go).
	trust trustFlags
	// xfer are the transfer's flags (transfer.go).
	xfer transferFlags
	// dropBlobs deletes each layer blob from --output once applied (issue 20's disk
	// policy).
	dropBlobs bool
}

// usageError is a command-line mistake (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// errHelp is --help: the help goes to stdout and the exit status is 0.
var errHelp = errors.New("help requested")

// synopsis heads --help; the flags follow it, grouped.
const synopsis = `Usage:
  pull [flags] REFERENCE
      Resolve REFERENCE, verify its manifests and config, and print the image.
      The layers are downloaded only with --output, --unpack or --snapshots.
  pull --output DIR (--list | --delete NAME | --gc | --check)
      Work on the OCI image layout DIR that --output wrote.
  pull [flags]
      No reference: pull one image of every manifest format from an in-process
      demo registry.

REFERENCE is [registry/]repository[:tag|@digest], e.g. docker.io/library/alpine.
Exit status: 0 done; 1 the pull failed; 2 a usage error or an invalid reference;
130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM.
`

// defineFlags registers every flag on fs, each in its --help group. A new flag is one
// line in its group (or in a new group).
func defineFlags(fs *flag.FlagSet, o *options) *flagHelp {
	h := newFlagHelp(fs)

	img := h.group("Choosing the image")
	img.StringVar(&o.platform, "platform", "", "the platform, `OS/ARCH[/VARIANT]`, to choose from a list or index (default: linux on this machine's architecture); checked against a single image's config too")
	img.BoolVar(&o.all, "all", false, "with --output DIR, pull every platform of an index and store the index under the name")
	img.BoolVar(&o.resolve, "resolve", false, "print the digest of the platform's manifest that the registry answers to, and download no blob")

	out := h.group("Output")
	out.StringVar(&o.output, "output", "", "store the image at `PATH`: an OCI image layout directory, or a tar with --format docker-archive")
	out.StringVar(&o.format, "format", "oci", "what --output writes, `FORMAT`: oci (an image layout that skopeo, umoci and crane read) or docker-archive (what docker save writes)")
	out.StringVar(&o.manifestFormat, "manifest-format", "oci", "the image manifest written into an OCI layout, `FORMAT`: oci, v2s2 (Docker schema 2, the registry's digest kept; skopeo's oci: and umoci do not read it) or v2s1 (a signed schema 1 conversion)")
	out.BoolVar(&o.json, "json", false, "print the image model as JSON instead of the summary")

	unp := h.group("Unpacking")
	unp.StringVar(&o.unpack, "unpack", "", "apply the layers, while they download, to a new root filesystem `DIR` (the blobs go to --output when given)")
	unp.StringVar(&o.snapshots, "snapshots", "", "apply the layers, while they download, to overlay snapshots by chain ID in `DIR` (a base shared with an image unpacked before is reused)")
	unp.BoolVar(&o.dropBlobs, "drop-blobs", false, "with --output DIR and --unpack or --snapshots, delete each layer blob from DIR once it is applied and verified (the manifest and config stay)")

	xfer := h.group("Transfer")
	xfer.IntVar(&o.jobs, "jobs", 0, fmt.Sprintf("at most `N` requests in flight for the whole pull (default: %d, and %d more for blobs of %d KiB at most)", layers.DefaultJobs, layers.DefaultTinyJobs, layers.TinyBlobSize>>10))
	xfer.BoolVar(&o.checkDiffIDs, "check-diffids", false, "decompress each layer while it downloads and check it against the config's rootfs.diff_ids")
	xfer.BoolVar(&o.directIO, "direct-io", true, "write blobs of 1 MiB and more with O_DIRECT where the file system allows it; false writes through the page cache")
	o.xfer.register(xfer)

	reg := h.group("Registries")
	reg.BoolVar(&o.plainHTTP, "plain-http", false, "speak plain HTTP to every registry (default: HTTPS first; plain HTTP only to loopback or --insecure-registry hosts that do not speak TLS)")
	o.net.register(reg)

	o.trust.register(h.group("Trust"))

	lay := h.group("Layout commands (with --output DIR and no reference)")
	lay.BoolVar(&o.list, "list", false, "list the images named in the layout, and any whose blobs are missing or damaged")
	lay.StringVar(&o.deleteName, "delete", "", "remove the name `NAME` from the layout (its blobs stay until --gc)")
	lay.BoolVar(&o.gc, "gc", false, "remove every blob no name reaches, and partial downloads older than --ingest-expiry")
	lay.DurationVar(&o.ingestExpiry, "ingest-expiry", store.DefaultIngestExpiry, "with --gc, how long (a `DURATION`: 24h, 90m) a partial download is kept for a later pull to resume")
	lay.BoolVar(&o.check, "check", false, "hash every blob again, remove the damaged ones and name the images that used them")
	return h
}

// flagError rewrites an error of the flag package as one short line in this command's
// spelling (--name).
func flagError(fs *flag.FlagSet, err error) *usageError {
	msg := strings.TrimSpace(err.Error())
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		name = strings.TrimLeft(name, "-")
		msg = "unknown flag --" + name
		if near := closestFlag(fs, name); near != "" {
			msg += ": did you mean --" + near + "?"
		}
	} else if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		msg = "--" + strings.TrimLeft(name, "-") + " needs a value"
	} else {
		msg = strings.Replace(msg, "for flag -", "for --", 1)
	}
	return &usageError{msg}
}

// parseArgs reads the flags; flags may come before or after the reference.
func parseArgs(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	help := defineFlags(fs, o)
	o.help = help
	var refs []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return o, errHelp
			}
			return nil, flagError(fs, err)
		}
		if fs.NArg() == 0 {
			break
		}
		refs = append(refs, fs.Arg(0))
		args = fs.Args()[1:]
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "format":
			o.formatSet = true
		case "manifest-format":
			o.manifestFormatSet = true
		case "jobs":
			o.jobsSet = true
		}
	})
	storeCmds := 0
	for _, on := range []bool{o.list, o.gc, o.check, o.deleteName != ""} {
		if on {
			storeCmds++
		}
	}
	switch {
	case storeCmds > 1:
		return nil, &usageError{"--list, --delete, --gc and --check are one command each"}
	case storeCmds == 1 && (o.output == "" || len(refs) > 0 || o.format != "oci"):
		return nil, &usageError{"--list, --delete, --gc and --check work on an OCI layout: --output DIR, and no reference"}
	case len(refs) > 1:
		return nil, &usageError{fmt.Sprintf("one reference expected, got %d: %s", len(refs), strings.Join(refs, " "))}
	case o.format != "oci" && o.format != "docker-archive":
		return nil, &usageError{fmt.Sprintf("--format %q: want oci or docker-archive", o.format)}
	case o.formatSet && o.output == "":
		return nil, &usageError{"--format needs --output PATH"}
	case o.manifestFormat != "oci" && o.manifestFormat != "v2s2" && o.manifestFormat != "v2s1":
		return nil, &usageError{fmt.Sprintf("--manifest-format %q: want oci, v2s2 or v2s1", o.manifestFormat)}
	case o.manifestFormatSet && (o.output == "" || o.format != "oci"):
		return nil, &usageError{"--manifest-format chooses the manifest written into --output PATH --format oci"}
	case o.jobsSet && o.jobs < 1:
		return nil, &usageError{fmt.Sprintf("--jobs %d: want at least 1", o.jobs)}
	case o.resolve && o.output != "":
		return nil, &usageError{"--resolve downloads no blob, so it cannot be combined with --output"}
	case o.resolve && o.json:
		return nil, &usageError{"--resolve prints only the digest; drop --json to use it, or --resolve to get the model"}
	case o.all && o.platform != "":
		return nil, &usageError{"--all pulls every platform; drop --platform, or --all"}
	case o.all && (o.output == "" || o.format != "oci"):
		return nil, &usageError{"--all stores an index, so it needs --output DIR --format oci"}
	case o.all && o.manifestFormat == "v2s1":
		return nil, &usageError{"--all stores an index, which schema 1 does not have: drop --manifest-format v2s1"}
	case o.unpack != "" && o.snapshots != "":
		return nil, &usageError{"--unpack and --snapshots are one or the other"}
	case (o.unpack != "" || o.snapshots != "") && (o.resolve || o.all || o.format != "oci"):
		return nil, &usageError{"--unpack and --snapshots apply one platform's layers: not with --resolve, --all or --format docker-archive"}
	case o.ingestExpiry < 0:
		return nil, &usageError{"--ingest-expiry must not be negative"}
	case o.dropBlobs && (o.output == "" || o.unpack == "" && o.snapshots == ""):
		return nil, &usageError{"--drop-blobs deletes applied layers from --output DIR: it needs --output and --unpack or --snapshots"}
	case o.net.check() != "":
		return nil, &usageError{o.net.check()}
	case o.xfer.check() != "":
		return nil, &usageError{o.xfer.check()}
	case o.net.plan && len(refs) != 1:
		return nil, &usageError{"--plan needs a reference"}
	case o.trust.check(storeCmds > 0) != "":
		return nil, &usageError{o.trust.check(storeCmds > 0)}
	}
	if len(refs) == 1 {
		o.reference = refs[0]
	}
	return o, nil
}

// interrupted is the cause of a context cancelled by a signal.
type interrupted struct{ sig os.Signal }

func (i *interrupted) Error() string { return "interrupted by " + signalName(i.sig) }

// status is the exit status for a command ended by sig: 128 plus its number, as shells
// report it.
func (i *interrupted) status() int {
	if s, ok := i.sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 130
}

func signalName(sig os.Signal) string {
	switch sig {
	case os.Interrupt:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}

// sameSignal is how long after the first SIGINT or SIGTERM another one is taken as the
// same interrupt delivered twice, not a second one. timeout(1) signals the command and
// then its process group, and kill -- -PGID with a shell that forwards does the same, a
// few microseconds apart; when the second lands after the handler has run, it would end
// the pull without its grace and lose what it was receiving. A person's second Ctrl-C
// comes later than this.
var sameSignal = 200 * time.Millisecond

// withSignals returns a context cancelled, with an *interrupted cause, by the first
// SIGINT or SIGTERM; a second one ends the process at once, as if no handler were set,
// unless it comes within sameSignal of the first (then it is the same interrupt).
func withSignals() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			cancel(&interrupted{s})
		case <-done:
			return
		}
		same := time.NewTimer(sameSignal)
		defer same.Stop()
		for {
			select {
			case <-sigs: // the first one delivered again
			case <-same.C:
				signal.Reset(os.Interrupt, syscall.SIGTERM)
				return
			case <-done:
				return
			}
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(nil)
	}
}

// isUsage reports whether err is the user's mistake on the command line: a usage error,
// or a reference that does not parse (nothing was asked of a registry).
func isUsage(err error) bool {
	var ue *usageError
	var ie *pullkit.InvalidError
	return errors.As(err, &ue) || (errors.As(err, &ie) && ie.What == "reference")
}

// run is the whole program, callable from tests.
func run(args []string, stdout, stderr io.Writer) int {
	// Every line printed is escaped; the progress display (drawn on the terminal itself)
	// escapes what it draws.
	term := stderr
	stdout, stderr = newSafeWriter(stdout), newSafeWriter(stderr)
	o, err := parseArgs(args)
	if errors.Is(err, errHelp) {
		o.help.write(stdout, synopsis)
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "pull: "+oneLine(err.Error())+" (see pull --help)")
		return 2
	}
	if f, ok := term.(*os.File); ok && isTerminal(f) {
		o.term = f
	}
	ctx, stop := withSignals()
	defer stop()

	var call []puller.PullOption
	if o.platform != "" {
		p, err := platforms.Parse(o.platform)
		if err != nil {
			fmt.Fprintln(stderr, "pull: --platform: "+oneLine(err.Error())+" (see pull --help)")
			return 2
		}
		call = append(call, puller.WithPlatform(p))
	}
	if o.all {
		call = append(call, puller.WithAllPlatforms())
	}
	call = append(call, puller.WithDiffIDCheck(o.checkDiffIDs))
	if o.jobsSet {
		call = append(call, puller.WithJobs(o.jobs))
	}
	call = append(call, o.xfer.options()...)
	copts := []puller.Option{puller.WithPlainHTTP(o.plainHTTP)}
	netOpts, err := o.net.options(o.reference)
	if err != nil {
		fmt.Fprintln(stderr, "pull: "+oneLine(err.Error()))
		return 2
	}
	copts = append(copts, netOpts...)
	trustOpts, trustCall, err := o.trust.options()
	if err != nil {
		fmt.Fprintln(stderr, "pull: "+oneLine(err.Error()))
		return 2
	}
	copts, call = append(copts, trustOpts...), append(call, trustCall...)

	switch {
	case o.list || o.gc || o.check || o.deleteName != "":
		err = storeCommand(ctx, o, stdout)
	case o.net.plan:
		var c *puller.Client
		if c, err = puller.New(copts...); err == nil {
			var plan *puller.Plan
			if plan, err = c.Plan(o.reference); err == nil {
				_, err = io.WriteString(stdout, plan.String())
			}
		}
	case o.reference == "":
		err = runDemo(ctx, o, copts, call, stdout)
	default:
		var c *puller.Client
		if c, err = puller.New(copts...); err == nil {
			err = pullOne(ctx, o, c, call, o.reference, stdout)
		}
	}
	if err == nil {
		return 0
	}
	var sig *interrupted
	if errors.As(context.Cause(ctx), &sig) {
		msg := "pull: " + sig.Error()
		if o.partial != "" {
			msg += "; the partial downloads in " + o.partial + " are kept, and the same command resumes them"
		}
		fmt.Fprintln(stderr, msg)
		return sig.status()
	}
	msg := oneLine(err.Error())
	if errors.Is(err, pullkit.ErrDenied) && strings.Contains(msg, "plain HTTP") {
		msg += " (use --plain-http to allow it)"
	}
	if isUsage(err) {
		fmt.Fprintln(stderr, "pull: "+msg+" (a reference is [registry/]repository[:tag|@digest])")
		return 2
	}
	if o.partial != "" {
		msg += " (the partial downloads in " + o.partial + " are kept for the next run)"
	}
	fmt.Fprintln(stderr, "pull: "+msg)
	return 1
}

// pullOne pulls ref and prints it as o asks.
func pullOne(ctx context.Context, o *options, c *puller.Client, call []puller.PullOption, ref string, stdout io.Writer) error {
	if _, err := name.ParseReference(ref); err != nil {
		// Not a reference: the client says why, before any request or any file is made.
		_, err = c.Resolve(ctx, ref)
		return err
	}
	if o.resolve {
		res, err := c.Resolve(ctx, ref, call...)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, res.Manifest.Digest)
		return err
	}
	var img *manifest.Image
	var written string
	var err error
	switch {
	case o.unpack != "" || o.snapshots != "":
		img, written, err = unpackOutput(ctx, o, c, call, ref)
	case o.output != "":
		img, written, err = writeOutput(ctx, o, c, call, ref, o.output)
	default:
		img, err = c.Inspect(ctx, ref, call...)
	}
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		m := jsonModel(img)
		m.Verified = jsonTrust(o.trust.verified)
		return enc.Encode(m)
	}
	printImage(stdout, img)
	printTrust(stdout, o.trust.verified)
	if written != "" {
		_, err = fmt.Fprintln(stdout, "  written    "+written)
	} else {
		_, err = fmt.Fprintln(stdout, "  "+notDownloaded)
	}
	return err
}

// notDownloaded ends the summary of an image that was only inspected.
const notDownloaded = "layers     not downloaded: only the manifests and config were fetched (--output PATH, --unpack DIR or --snapshots DIR downloads them)"

// printImage writes the human summary of img. Every string in it came from the network
// (or the user) and is escaped and bounded as it is printed.
func printImage(w io.Writer, img *manifest.Image) {
	fmt.Fprintf(w, "%s\n", clean(img.Reference))
	fmt.Fprintf(w, "  digest     %s  %s\n", clean(string(img.Digest)), clean(img.MediaType))
	if img.RegistryDigest != "" && img.RegistryDigest != img.Digest {
		fmt.Fprintf(w, "  registry   %s  (the digest this registry answers to: pin by it here)\n", clean(string(img.RegistryDigest)))
	}
	if img.Manifest.Digest != img.Digest {
		fmt.Fprintf(w, "  manifest   %s  %s, %d bytes\n", clean(string(img.Manifest.Digest)), clean(img.Manifest.MediaType), img.Manifest.Size)
	}
	if img.Platform != nil {
		fmt.Fprintf(w, "  platform   %s\n", img.Platform) // Platform.String escapes
	}
	if img.Config.Digest != "" {
		fmt.Fprintf(w, "  config     %s  %s, %d bytes\n", clean(string(img.Config.Digest)), clean(img.Config.MediaType), img.Config.Size)
	} else {
		fmt.Fprintf(w, "  config     none served (schema 1: synthesised from its history when written)\n")
	}
	var empty int
	var total int64
	known := true
	for _, l := range img.Layers {
		if l.Empty {
			empty++
		}
		if size := layerSize(l); size < 0 {
			known = false
		} else {
			total += size
		}
	}
	size := fmt.Sprintf("%d bytes", total)
	if !known {
		size = "sizes not in the manifest (schema 1: known once downloaded)"
	}
	fmt.Fprintf(w, "  layers     %d (%d empty), %s, base first\n", len(img.Layers), empty, size)
	for i, l := range img.Layers {
		line := fmt.Sprintf("    %d  %s  %s", i+1, clean(string(l.Digest)), clean(l.MediaType))
		if size := layerSize(l); size >= 0 {
			line += fmt.Sprintf(", %d bytes", size)
		}
		if l.DiffID != "" {
			line += ", diffID " + clean(l.DiffID.String())
		}
		if l.Empty {
			line += ", empty"
		}
		fmt.Fprintln(w, line)
	}
}

// layerSize is l's size: the manifest's, or the one a pull learnt; schema 1's empty
// layer (the well-known empty gzip, which a pull does not fetch) is 32 bytes; -1 when
// unknown (schema 1, inspected).
func layerSize(l manifest.Layer) int64 {
	if l.Size < 0 && l.Digest == manifest.EmptyGzipLayer {
		return int64(len(emptyGzipLayer))
	}
	return l.Size
}

// clean escapes and bounds a string from the network for printing.
func clean(s string) string { return text.Clean(s, 300) }

// oneLine folds an error onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// jsonImage is the --json contract (README, "The CLI"): the model, layers base first.
// RegistryDigest is the digest the registry answers to when it is not Digest (signed
// schema 1 on a registry that indexes manifests by the sha256 of their bytes). Config is
// left out when the image has none yet (schema 1 inspected: its config is synthesised
// when it is written).
type jsonImage struct {
	Reference      string              `json:"reference"`
	Digest         digest.Digest       `json:"digest"`
	RegistryDigest digest.Digest       `json:"registryDigest,omitempty"`
	MediaType      string              `json:"mediaType"`
	Manifest       jsonRef             `json:"manifest"`
	Platform       *platforms.Platform `json:"platform,omitempty"`
	Config         *jsonRef            `json:"config,omitempty"`
	Layers         []jsonLayer         `json:"layers"`
	// Verified is what --policy or --verify-key accepted (absent without them).
	Verified *jsonVerified `json:"verified,omitempty"`
}

// jsonRef is a manifest or config as --json prints it.
type jsonRef struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
}

// jsonLayer is a layer as --json prints it: manifest.Layer with the size left out while
// it is unknown (schema 1 states no sizes; a pull with --output learns them).
type jsonLayer struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      *int64        `json:"size,omitempty"`
	DiffID    digest.Digest `json:"diffID,omitempty"`
	URLs      []string      `json:"urls,omitempty"`
	Empty     bool          `json:"empty"`
}

func ref(d manifest.Descriptor) jsonRef {
	return jsonRef{Digest: d.Digest, MediaType: d.MediaType, Size: d.Size}
}

// jsonModel is img in the --json shape.
func jsonModel(img *manifest.Image) jsonImage {
	out := jsonImage{Reference: img.Reference, Digest: img.Digest, MediaType: img.MediaType,
		Manifest: ref(img.Manifest), Platform: img.Platform, Layers: []jsonLayer{}}
	if img.RegistryDigest != img.Digest {
		out.RegistryDigest = img.RegistryDigest
	}
	if img.Config.Digest != "" {
		c := ref(img.Config)
		out.Config = &c
	}
	for _, l := range img.Layers {
		jl := jsonLayer{Digest: l.Digest, MediaType: l.MediaType, DiffID: l.DiffID, URLs: l.URLs, Empty: l.Empty}
		if size := layerSize(l); size >= 0 {
			jl.Size = &size
		}
		out.Layers = append(out.Layers, jl)
	}
	return out
}
