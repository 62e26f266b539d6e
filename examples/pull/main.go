// Command pull pulls a container image the way an engine needs it: it resolves the
// reference, negotiates and verifies the manifests, picks the platform, verifies the
// config, and prints the normalised model, or writes the image to disk.
//
//	pull [--platform os/arch[/variant] | --all] [--output PATH --format oci|docker-archive] [--jobs N]
//	     [--manifest-format oci|v2s2|v2s1] [--check-diffids] [--direct-io=false] [--unpack DIR | --snapshots DIR]
//	     [--json] [--resolve] [--plain-http] [--policy FILE | --verify-key FILE] REFERENCE
//	pull --output DIR (--list | --delete NAME | --gc [--ingest-expiry DURATION] | --check)
//	pull        # no reference: start an in-process registry seeded from testdata, pull each
//
// It is a thin shell over the library: puller.Client's Resolve, Inspect and Pull, and
// store.Layout's names, GC and Check.
//
// It exits 0 on success and non-zero with one line on stderr otherwise.
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

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/trust"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
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
	// progressOut is where progress is drawn: stderr when it is a terminal, else nil.
	progressOut io.Writer

	// Trust (issue 21): a containers-policy.json, or one public key; what was verified.
	policy, verifyKey string
	verified          *trust.Result
}

// usageError is a command-line mistake (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

const usage = "usage: pull [--platform os/arch[/variant] | --all] [--output PATH --format oci|docker-archive] [--jobs N] [--manifest-format oci|v2s2|v2s1] [--check-diffids] [--direct-io=false] [--unpack DIR | --snapshots DIR] [--json] [--resolve] [--plain-http] [--policy FILE | --verify-key FILE] [REFERENCE]\n" +
	"       pull --output DIR (--list | --delete NAME | --gc [--ingest-expiry DURATION] | --check)"

// parseArgs reads the flags; flags may come before or after the reference.
func parseArgs(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.platform, "platform", "", "platform to choose from a list or index, os/arch[/variant]")
	fs.BoolVar(&o.all, "all", false, "with --output, pull every platform of an index and store the index")
	fs.StringVar(&o.output, "output", "", "write the image to PATH")
	fs.StringVar(&o.format, "format", "oci", "format of --output: oci or docker-archive")
	fs.IntVar(&o.jobs, "jobs", layers.DefaultJobs, "requests in flight at most for --output")
	fs.StringVar(&o.manifestFormat, "manifest-format", "oci", "image manifest written into an OCI layout: oci, v2s2 or v2s1")
	fs.BoolVar(&o.json, "json", false, "print the image model as JSON")
	fs.BoolVar(&o.resolve, "resolve", false, "print the platform manifest's digest; download no blob")
	fs.BoolVar(&o.plainHTTP, "plain-http", false, "allow plain HTTP to a registry that is not on loopback")
	fs.BoolVar(&o.checkDiffIDs, "check-diffids", false, "with --output, decompress each layer and check it against the config's diff_ids")
	fs.BoolVar(&o.directIO, "direct-io", true, "with --output, write blobs of 1 MiB and more with O_DIRECT where the file system allows it (false: through the page cache)")
	fs.StringVar(&o.unpack, "unpack", "", "apply the layers, while they download, to a new root filesystem directory DIR")
	fs.StringVar(&o.snapshots, "snapshots", "", "apply the layers, while they download, to overlay snapshots by chain ID in DIR (shared layers are unpacked once)")
	fs.BoolVar(&o.list, "list", false, "list the images named in the OCI layout --output DIR")
	fs.StringVar(&o.deleteName, "delete", "", "remove the name NAME from the OCI layout --output DIR (its blobs stay until --gc)")
	fs.BoolVar(&o.gc, "gc", false, "remove from the OCI layout --output DIR every blob no name reaches, and stale partial downloads")
	fs.DurationVar(&o.ingestExpiry, "ingest-expiry", store.DefaultIngestExpiry, "with --gc, how old a partial download must be to be removed")
	fs.BoolVar(&o.check, "check", false, "re-hash every blob of the OCI layout --output DIR and remove the damaged ones")
	// Trust (issue 21).
	fs.StringVar(&o.policy, "policy", "", "verify the image with the containers-policy.json FILE before any layer is fetched")
	fs.StringVar(&o.verifyKey, "verify-key", "", "verify the image is signed (cosign, bundle or .sig) by the public key in FILE before any layer is fetched")
	var refs []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &usageError{usage}
			}
			return nil, &usageError{fmt.Sprintf("%s (%s)", strings.TrimSpace(err.Error()), usage)}
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
	case o.jobs < 1:
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
	case o.policy != "" && o.verifyKey != "":
		return nil, &usageError{"--policy and --verify-key are one or the other (put the key in the policy)"}
	case (o.policy != "" || o.verifyKey != "") && storeCmds > 0:
		return nil, &usageError{"--policy and --verify-key verify a pull: not with --list, --delete, --gc or --check"}
	}
	if len(refs) == 1 {
		o.reference = refs[0]
	}
	return o, nil
}

// run is the whole program, callable from tests.
func run(args []string, stdout, stderr io.Writer) int {
	// Every line printed is escaped; the progress display (drawn on the terminal itself)
	// escapes what it draws.
	term := stderr
	stdout, stderr = newSafeWriter(stdout), newSafeWriter(stderr)
	o, err := parseArgs(args)
	if err != nil {
		fmt.Fprintln(stderr, "pull: "+oneLine(err.Error()))
		return 2
	}
	if f, ok := term.(*os.File); ok && isTerminal(f) {
		o.progressOut = term
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var call []puller.PullOption
	if o.platform != "" {
		p, err := platforms.Parse(o.platform)
		if err != nil {
			fmt.Fprintln(stderr, "pull: --platform: "+oneLine(err.Error()))
			return 2
		}
		call = append(call, puller.WithPlatform(p))
	}
	if o.all {
		call = append(call, puller.WithAllPlatforms())
	}
	call = append(call, puller.WithDiffIDCheck(o.checkDiffIDs), puller.WithJobs(o.jobs))
	copts := []puller.Option{puller.WithPlainHTTP(o.plainHTTP)}
	if v, err := verifierFor(o); err != nil {
		fmt.Fprintln(stderr, "pull: "+oneLine(err.Error()))
		return 2
	} else if v != nil {
		copts = append(copts, puller.WithVerifier(v))
		call = append(call, puller.WithVerified(func(r *trust.Result) { o.verified = r }))
	}

	switch {
	case o.list || o.gc || o.check || o.deleteName != "":
		err = storeCommand(ctx, o, stdout)
	case o.reference == "":
		err = runDemo(ctx, o, copts, call, stdout)
	default:
		var c *puller.Client
		if c, err = puller.New(copts...); err == nil {
			err = pullOne(ctx, o, c, call, o.reference, stdout)
		}
	}
	if err != nil {
		msg := oneLine(err.Error())
		if errors.Is(err, pullkit.ErrDenied) && strings.Contains(msg, "plain HTTP") {
			msg += " (use --plain-http to allow it)"
		}
		fmt.Fprintln(stderr, "pull: "+msg)
		return 1
	}
	return 0
}

// pullOne pulls ref and prints it as o asks.
func pullOne(ctx context.Context, o *options, c *puller.Client, call []puller.PullOption, ref string, stdout io.Writer) error {
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
		m.Verified = jsonTrust(o.verified)
		return enc.Encode(m)
	}
	printImage(stdout, img)
	printTrust(stdout, o.verified)
	if written != "" {
		_, err = fmt.Fprintln(stdout, "  written    "+written)
	}
	return err
}

// printImage writes the human summary of img. Every string in it came from the network
// (or the user) and is escaped and bounded as it is printed.
func printImage(w io.Writer, img *manifest.Image) {
	fmt.Fprintf(w, "%s\n", clean(img.Reference))
	fmt.Fprintf(w, "  digest     %s  %s\n", clean(string(img.Digest)), clean(img.MediaType))
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
		if l.Size < 0 {
			known = false
		} else {
			total += l.Size
		}
	}
	size := fmt.Sprintf("%d bytes", total)
	if !known {
		size = "sizes not in the manifest (schema 1)"
	}
	fmt.Fprintf(w, "  layers     %d (%d empty), %s, base first\n", len(img.Layers), empty, size)
	for i, l := range img.Layers {
		line := fmt.Sprintf("    %d  %s  %s", i+1, clean(string(l.Digest)), clean(l.MediaType))
		if l.Size >= 0 {
			line += fmt.Sprintf(", %d bytes", l.Size)
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

// clean escapes and bounds a string from the network for printing.
func clean(s string) string { return text.Clean(s, 300) }

// oneLine folds an error onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// jsonImage is the --json contract (DESIGN.md): the model, layers base first.
type jsonImage struct {
	Reference string              `json:"reference"`
	Digest    digest.Digest       `json:"digest"`
	MediaType string              `json:"mediaType"`
	Manifest  jsonRef             `json:"manifest"`
	Platform  *platforms.Platform `json:"platform,omitempty"`
	Config    jsonRef             `json:"config"`
	Layers    []manifest.Layer    `json:"layers"`
	// Verified is what --policy or --verify-key accepted (absent without them).
	Verified *jsonVerified `json:"verified,omitempty"`
}

// jsonRef is a manifest or config as --json prints it.
type jsonRef struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
}

func ref(d manifest.Descriptor) jsonRef {
	return jsonRef{Digest: d.Digest, MediaType: d.MediaType, Size: d.Size}
}

// jsonModel is img in the --json shape.
func jsonModel(img *manifest.Image) jsonImage {
	layers := img.Layers
	if layers == nil {
		layers = []manifest.Layer{}
	}
	return jsonImage{Reference: img.Reference, Digest: img.Digest, MediaType: img.MediaType,
		Manifest: ref(img.Manifest), Platform: img.Platform, Config: ref(img.Config), Layers: layers}
}
