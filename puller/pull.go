package puller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/store"
)

// tree is what a reference named, with its image manifests, fetched and verified.
type tree struct {
	named   *manifest.Manifest
	served  digest.Digest // the digest the registry answers to for named
	images  []treeImage
	primary int            // the image the matcher prefers
	eps     []*endpoint    // where content is fetched from, in order (contentFrom)
	logical name.Reference // the reference the store names it by (a short name's candidate)
}

type treeImage struct {
	m     *manifest.Manifest
	entry *manifest.Descriptor // named's entry for m, when named is an index
}

// fetchTree fetches what r names on the endpoints, in order, until one serves it.
//
// A tag is resolved only by endpoints that may resolve it; the manifests it leads to and
// every blob are then fetched by digest from the endpoints that may pull (contentFrom),
// mirrors first.
func (c *Client) fetchTree(ctx context.Context, ref string, r name.Reference, o *pullOptions) (*tree, error) {
	eps, err := c.endpoints(ref, r, o)
	if err != nil {
		return nil, pullkit.Wrap(ref, pullkit.OpFetchManifest, "", err)
	}
	var last error
	for _, ep := range alive(askable(eps, r)) {
		content := contentFrom(eps, ep, r)
		t, err := c.fetchTreeOn(ctx, ep, content, r, o)
		if err == nil {
			t.eps, t.logical = content, ep.logical
			return t, nil
		}
		last = pullkit.WrapDetail(ref, pullkit.OpFetchManifest, ep.via(), "", err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

func (c *Client) fetchTreeOn(ctx context.Context, ep *endpoint, content []*endpoint, r name.Reference, o *pullOptions) (*tree, error) {
	t := &tree{}
	var err error
	switch r := r.(type) {
	case name.Digest:
		d, perr := digest.Parse(r.DigestStr())
		if perr != nil {
			return nil, &pullkit.InvalidError{What: "reference", Reason: "digest " + r.DigestStr(), Err: perr}
		}
		if t.named, err = ep.manifestByDigest(ctx, d); err != nil {
			return nil, pullkit.Wrap("", pullkit.OpFetchManifest, d, err)
		}
		t.served = d
	default:
		if t.named, t.served, err = ep.manifestByTag(ctx, r.Identifier()); err != nil {
			return nil, err
		}
	}
	what := "manifest"
	if t.named.Kind == manifest.KindIndex {
		what = "index"
	}
	o.emit(pullkit.Event{Kind: pullkit.EventVerified, What: what, Digest: t.named.Digest, Done: int64(len(t.named.Raw)), Total: int64(len(t.named.Raw))})
	if t.named.Kind != manifest.KindIndex {
		t.images = []treeImage{{m: t.named}}
		return t, nil
	}
	if o.all {
		return t, c.fetchAll(ctx, content, t, o)
	}
	idx := t.named
	for depth := 0; ; depth++ {
		if depth >= maxIndexDepth {
			return nil, pullkit.Wrap("", pullkit.OpChoosePlatform, idx.Digest, &pullkit.InvalidError{What: "index", Reason: fmt.Sprintf("indexes nested more than %d deep", maxIndexDepth)})
		}
		d, err := manifest.Choose(idx, o.matcher)
		if err != nil {
			return nil, pullkit.Wrap("", pullkit.OpChoosePlatform, "", err)
		}
		m, err := c.child(ctx, content, d, o)
		if err != nil {
			return nil, err
		}
		if m.Kind == manifest.KindImage {
			t.images = []treeImage{{m: m, entry: &d}}
			return t, nil
		}
		idx = m
	}
}

// child fetches the manifest an index entry names from the content endpoints in order,
// checking its size against the entry.
func (c *Client) child(ctx context.Context, content []*endpoint, d manifest.Descriptor, o *pullOptions) (*manifest.Manifest, error) {
	op, detail := pullkit.OpFetchManifest, "for "+platformString(d.Platform)
	if d.Size > c.maxManifest {
		return nil, pullkit.WrapDetail("", op, detail, d.Digest, &pullkit.TooLargeError{What: "manifest", Limit: c.maxManifest, Size: d.Size})
	}
	var m *manifest.Manifest
	var err error
	for _, ep := range alive(content) {
		if m, err = ep.manifestByDigest(ctx, d.Digest); err == nil || !nextEndpoint(ctx, err) {
			break
		}
	}
	if err != nil {
		return nil, pullkit.WrapDetail("", op, detail, d.Digest, err)
	}
	if d.Size > 0 && int64(len(m.Raw)) != d.Size {
		return nil, pullkit.WrapDetail("", op, detail, d.Digest, &pullkit.SizeMismatchError{What: "manifest", Want: d.Size, Got: int64(len(m.Raw)), Source: "body (the index's entry says " + fmt.Sprint(d.Size) + ")"})
	}
	o.emit(pullkit.Event{Kind: pullkit.EventVerified, What: "manifest", Digest: d.Digest, Done: int64(len(m.Raw)), Total: int64(len(m.Raw))})
	return m, nil
}

func platformString(p *platforms.Platform) string {
	if p == nil {
		return "the index's only entry"
	}
	return p.String()
}

// fetchAll fetches every image of an index (attestations and other non-images aside).
func (c *Client) fetchAll(ctx context.Context, content []*endpoint, t *tree, o *pullOptions) error {
	var entries []manifest.Descriptor
	for _, d := range t.named.Manifests {
		if d.Platform == nil || d.Annotations["vnd.docker.reference.type"] != "" ||
			d.Platform.OS == "unknown" || d.Platform.Architecture == "unknown" || isIndexType(d.MediaType) {
			continue
		}
		switch d.MediaType {
		case "", manifest.MediaTypeOCIManifest, manifest.MediaTypeDockerSchema2, manifest.MediaTypeDockerSchema1, manifest.MediaTypeDockerSchema1Signed:
			entries = append(entries, d)
		}
	}
	if len(entries) == 0 {
		return pullkit.Wrap("", pullkit.OpChoosePlatform, t.named.Digest, &pullkit.UnsupportedError{What: "index", Reason: "no image entries with a platform"})
	}
	t.images = make([]treeImage, len(entries))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range entries {
		d := entries[i]
		g.Go(func() error {
			m, err := c.child(gctx, content, d, o)
			if err != nil {
				return err
			}
			if m.Kind != manifest.KindImage {
				return pullkit.Wrap("", pullkit.OpFetchManifest, d.Digest, &pullkit.UnsupportedError{What: m.MediaType, Reason: "an index inside an index, pulled with every platform"})
			}
			t.images[i] = treeImage{m: m, entry: &d}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if d, err := manifest.Choose(t.named, o.matcher); err == nil {
		for i, e := range entries {
			if e.Digest == d.Digest {
				t.primary = i
			}
		}
	}
	return nil
}

// configOf fetches, verifies and parses an image's config, from the endpoints in order.
func (c *Client) configOf(ctx context.Context, t *tree, m *manifest.Manifest, o *pullOptions) ([]byte, *manifest.ImageConfig, error) {
	desc := *m.Config
	var raw []byte
	var err error
	for _, ep := range alive(t.eps) {
		// The next endpoint is asked when one lacks the config, cannot be reached, or
		// kept serving bytes that do not verify.
		raw, err = ep.document(ctx, desc, "config")
		if err == nil || !nextEndpoint(ctx, err) {
			break
		}
	}
	if err != nil {
		return nil, nil, pullkit.Wrap("", pullkit.OpFetchConfig, desc.Digest, err)
	}
	cfg, err := manifest.ParseConfig(raw)
	if err != nil {
		return nil, nil, pullkit.Wrap("", pullkit.OpParseConfig, desc.Digest, err)
	}
	o.emit(pullkit.Event{Kind: pullkit.EventVerified, What: "config", Digest: desc.Digest, Done: int64(len(raw)), Total: int64(len(raw))})
	return raw, cfg, nil
}

// Inspect returns the model of the image ref names (the platform's, or with
// WithAllPlatforms every platform's) from its manifests and config, downloading no
// layer and storing nothing. With a verifier, the image is verified before its config
// is fetched.
func (c *Client) Inspect(ctx context.Context, ref string, opts ...PullOption) (*manifest.Image, error) {
	o, err := callOptions(opts)
	if err != nil {
		return nil, err
	}
	ctx = withProgress(ctx, o.progress)
	r, err := c.parse(ref)
	if err != nil {
		return nil, err
	}
	t, err := c.fetchTree(ctx, ref, r, o)
	if err != nil {
		return nil, err
	}
	if err := c.verifyTree(ctx, ref, t.logical, t, o); err != nil {
		return nil, err
	}
	imgs := make([]*manifest.Image, len(t.images))
	for i, ti := range t.images {
		var cfgDesc *manifest.Descriptor
		var cfg *manifest.ImageConfig
		if ti.m.Config != nil {
			if _, cfg, err = c.configOf(ctx, t, ti.m, o); err != nil {
				return nil, pullkit.Wrap(ref, "", "", err)
			}
			cfgDesc = ti.m.Config
		}
		if !o.all {
			if err := checkImagePlatform(o, ti.m, cfg); err != nil {
				return nil, pullkit.Wrap(ref, pullkit.OpCheckPlatform, ti.m.Digest, err)
			}
		}
		if imgs[i], err = manifest.NewImage(ref, t.named, ti.m, ti.entry, cfgDesc, cfg); err != nil {
			return nil, pullkit.Wrap(ref, pullkit.OpBuildModel, ti.m.Digest, err)
		}
		imgs[i].RegistryDigest = t.served
	}
	return primary(t, imgs, o), nil
}

// checkImagePlatform checks an image against the platform the call is for: its
// config's, or a schema 1 manifest's own.
func checkImagePlatform(o *pullOptions, m *manifest.Manifest, cfg *manifest.ImageConfig) error {
	if cfg != nil {
		return checkPlatform(o, cfg)
	}
	if m.Platform != nil && !o.matcher.Match(*m.Platform) {
		return &platforms.NoMatchError{Want: platforms.Describe(o.matcher), Offered: []platforms.Platform{*m.Platform}}
	}
	return nil
}

// primary returns the image a call describes: with every platform, the preferred one
// carrying the others.
func primary(t *tree, imgs []*manifest.Image, o *pullOptions) *manifest.Image {
	if !o.all {
		return imgs[0]
	}
	p := *imgs[t.primary]
	p.Platforms = imgs
	return &p
}

// Pull pulls the image ref names into st and returns its model: every blob verified,
// then the image named last, so that a crash never leaves a name pointing at missing
// blobs.
//
// It fetches the manifest (one request for a tag, with the registry's
// Docker-Content-Digest checked; a verified GET for a digest), the platform's image
// manifest from an index (every platform's, with WithAllPlatforms), then the config and
// the layers at once, through layers.Fetch (resumable, concurrent, verified), with a lease
// on every blob so that garbage collection cannot take them meanwhile. It stores the
// image manifest in the format asked for (WithFormat; OCI by default, converted from
// Docker's), schema 1 converted with a config synthesised from the layers' diffIDs, and
// with every platform the index too; and names it by the full reference
// (registry/repository:tag, or @digest), replacing only that name's entry.
//
// When the reference names an index (a multi-platform tag), each platform's image pulled
// is also named by its platform name (store.PlatformName: "registry/repo:tag@linux/arm64/v8"),
// so that a pull of a second platform, which moves the reference's name, leaves the first
// reachable; a pull of every platform names the index by the reference and each image by
// its platform name (what umoci unpacks). Every entry carries, in
// store.AnnotationRegistryDigest and store.AnnotationRegistryManifest, the digests the
// registry served, which a conversion to OCI changes; store.Load reads it all back.
//
// The model has the layers base first with sizes and (when known) diffIDs, what was
// served (Digest, Manifest) and what was stored (Stored, Name). Errors are a
// *pullkit.Error naming the reference, the step and the digest.
//
// With a verifier (WithVerifier), the image is verified once its manifests are, before
// the lease, the config or any layer: a refused image (pullkit.ErrUntrusted) leaves
// nothing in st.
func (c *Client) Pull(ctx context.Context, ref string, st store.Store, opts ...PullOption) (*manifest.Image, error) {
	o, err := callOptions(opts)
	if err != nil {
		return nil, err
	}
	ctx = withProgress(ctx, o.progress)
	if st == nil {
		return nil, &pullkit.InvalidError{What: "Pull", Reason: "nil store"}
	}
	if o.all && o.format == FormatSchema1 {
		return nil, &pullkit.UnsupportedError{What: "Pull", Reason: "every platform in schema 1: schema 1 has no index"}
	}
	r, err := c.parse(ref)
	if err != nil {
		return nil, err
	}
	t, err := c.fetchTree(ctx, ref, r, o)
	if err != nil {
		return nil, err
	}
	if err := c.verifyTree(ctx, ref, t.logical, t, o); err != nil {
		return nil, err
	}
	p := &pull{c: c, o: o, t: t, st: st, ref: ref, r: t.logical}
	img, err := p.run(ctx)
	if err != nil {
		return nil, pullkit.Wrap(ref, "", "", err)
	}
	return img, nil
}

// pull is one Pull's state once its manifests are fetched.
type pull struct {
	c     *Client
	o     *pullOptions
	t     *tree
	st    store.Store
	ref   string
	r     name.Reference
	lease store.Lease

	configs []configResult
}

type configResult struct {
	raw []byte
	cfg *manifest.ImageConfig
}

func (p *pull) run(ctx context.Context) (*manifest.Image, error) {
	// A schema 1 manifest says its own platform: check it before any blob is fetched.
	for _, ti := range p.t.images {
		if ti.m.Schema1 != nil && !p.o.all {
			if err := checkImagePlatform(p.o, ti.m, nil); err != nil {
				return nil, pullkit.Wrap("", pullkit.OpCheckPlatform, ti.m.Digest, err)
			}
		}
	}
	if err := p.checkFormat(); err != nil {
		return nil, err
	}
	lease, err := p.st.Lease(ctx)
	if err != nil {
		return nil, pullkit.Wrap("", pullkit.OpLease, "", err)
	}
	defer lease.Release()
	p.lease = lease
	if err := lease.Add(ctx, p.digests()...); err != nil {
		return nil, pullkit.Wrap("", pullkit.OpLease, "", err)
	}

	// The plan: every config (each digest once) and every layer. The transfer's own
	// plan, of the layers alone, is replaced by it (see pullkit.Event).
	blobs, at := p.layerBlobs()
	firstOf := p.configOwners()
	p.plan(blobs, firstOf)

	// Configs and layers at once: a config that fails (or names another platform)
	// cancels the layers.
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p.configs = make([]configResult, len(p.t.images))
	var cfgErr error
	var wg sync.WaitGroup
	var once sync.Once
	for i, ti := range p.t.images {
		if ti.m.Config == nil || firstOf[i] != i {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.config(lctx, i)
			if err != nil {
				once.Do(func() { cfgErr = err })
				cancel(err)
			}
		}()
	}
	shareConfigs := func() {
		for i, f := range firstOf {
			if f >= 0 && f != i {
				p.configs[i] = p.configs[f]
			}
		}
	}
	if p.o.tees != nil || p.o.skip != nil {
		// Tees and skips want the diffIDs up front (snapshots are named by chain ID): the
		// configs first, then the layers.
		wg.Wait()
		if cfgErr != nil {
			p.cancelPlanned(blobs, cfgErr)
			return nil, cfgErr
		}
		shareConfigs()
		if p.o.tees != nil {
			p.addTees(blobs, at)
		}
		if p.o.skip != nil {
			blobs, at = p.skipLayers(blobs, at)
		}
	}
	fetcher := &blobSource{eps: p.t.eps, progress: p.o.progress, conns: p.o.conns}
	results, ferr := layers.Fetch(lctx, fetcher, p.st, blobs, p.o.transfer(p.c.retry, p.layerProgress())...)
	wg.Wait()
	if cfgErr != nil {
		return nil, cfgErr
	}
	if ferr != nil {
		return nil, ferr
	}
	shareConfigs()

	imgs := make([]*manifest.Image, len(p.t.images))
	stored := make([]manifest.Descriptor, len(p.t.images))
	for i := range p.t.images {
		img, desc, err := p.store(ctx, i, results, at)
		if err != nil {
			return nil, err
		}
		imgs[i], stored[i] = img, desc
	}
	target := stored[0]
	if p.o.all {
		if target, err = p.storeIndex(ctx, stored); err != nil {
			return nil, err
		}
	}
	img := primary(p.t, imgs, p.o)
	img.Name = fullName(p.r)
	// When the reference names an index, each platform's image by its platform name,
	// then the reference's name: a second platform of a tag moves the reference's name,
	// never the first one's own.
	for i, pi := range imgs {
		if pi.Platform == nil || p.t.named.Kind != manifest.KindIndex {
			continue
		}
		if n := store.PlatformName(img.Name, *pi.Platform); n != "" {
			if err := p.name(ctx, n, p.registryAnnotations(stored[i], pi)); err != nil {
				return nil, err
			}
		}
	}
	target = p.registryAnnotations(target, img)
	if err := p.name(ctx, img.Name, target); err != nil {
		return nil, err
	}
	img.Stored = target
	return img, nil
}

// registryAnnotations returns d with the annotations that keep what the registry served
// (store.AnnotationRegistryDigest, store.AnnotationRegistryManifest) for image img.
func (p *pull) registryAnnotations(d manifest.Descriptor, img *manifest.Image) manifest.Descriptor {
	a := make(map[string]string, len(d.Annotations)+2)
	for k, v := range d.Annotations {
		a[k] = v
	}
	a[store.AnnotationRegistryDigest] = p.t.served.String()
	a[store.AnnotationRegistryManifest] = img.Manifest.Digest.String()
	d.Annotations = a
	return d
}

// name names target in the store.
func (p *pull) name(ctx context.Context, name string, target manifest.Descriptor) error {
	if err := p.st.PutImage(ctx, store.Image{Name: name, Target: target}); err != nil {
		return pullkit.WrapDetail("", pullkit.OpNameImage, name, target.Digest, err)
	}
	return nil
}

// checkFormat refuses, before any blob is fetched, a format that an image manifest
// cannot be converted to (a zstd layer has no Docker schema 2 spelling), rather than
// after every layer was downloaded. Schema 1 images convert to either format.
func (p *pull) checkFormat() error {
	to := ""
	switch p.o.format {
	case FormatOCI:
		to = manifest.MediaTypeOCIManifest
	case FormatDocker:
		to = manifest.MediaTypeDockerSchema2
	default:
		return nil
	}
	for _, ti := range p.t.images {
		if ti.m.Schema1 != nil {
			continue
		}
		if _, err := manifest.ConvertImage(ti.m, to); err != nil {
			return pullkit.WrapDetail("", pullkit.OpConvert, "to "+p.o.format.String(), ti.m.Digest, err)
		}
	}
	return nil
}

// digests lists every blob the pull will read or write that is known now.
func (p *pull) digests() []digest.Digest {
	out := []digest.Digest{p.t.named.Digest, p.t.served}
	for _, ti := range p.t.images {
		out = append(out, ti.m.Digest, digest.FromBytes(ti.m.Raw))
		if ti.m.Config != nil {
			out = append(out, ti.m.Config.Digest)
		}
		for _, l := range ti.m.Layers {
			out = append(out, l.Digest)
		}
	}
	return out
}

// configOwners returns, for each image, the index of the first image with the same
// config digest (itself, most often), or -1 for an image without a config: a config two
// platforms share is fetched once.
func (p *pull) configOwners() []int {
	out := make([]int, len(p.t.images))
	seen := map[digest.Digest]int{}
	for i, ti := range p.t.images {
		out[i] = -1
		if ti.m.Config == nil {
			continue
		}
		if f, ok := seen[ti.m.Config.Digest]; ok {
			out[i] = f
			continue
		}
		seen[ti.m.Config.Digest] = i
		out[i] = i
	}
	return out
}

// plan reports the pull's EventPlanned, over the configs the pull fetches and the
// layers of blobs (each digest once), then the configs' EventQueued (the transfer
// reports the layers').
func (p *pull) plan(blobs []layers.Blob, firstOf []int) {
	if p.o.progress == nil {
		return
	}
	seen := map[digest.Digest]bool{}
	var total int64
	n := 0
	add := func(d manifest.Descriptor) {
		if seen[d.Digest] {
			return
		}
		seen[d.Digest] = true
		n++
		if total >= 0 && d.Size >= 0 {
			total += d.Size
		} else {
			total = -1
		}
	}
	for i, f := range firstOf {
		if f == i {
			add(*p.t.images[i].m.Config)
		}
	}
	for _, b := range blobs {
		add(b.Desc)
	}
	p.o.emit(pullkit.Event{Kind: pullkit.EventPlanned, Total: total, Blobs: n})
	for i, f := range firstOf {
		if f == i {
			c := p.t.images[i].m.Config
			p.o.emit(pullkit.Event{Kind: pullkit.EventQueued, What: "config", Digest: c.Digest, Total: c.Size})
		}
	}
}

// layerProgress is the progress function given to the transfer: the pull's own, without
// the transfer's plan (the pull reported its own, with the configs).
func (p *pull) layerProgress() func(pullkit.Event) {
	fn := p.o.progress
	if fn == nil {
		return nil
	}
	return func(ev pullkit.Event) {
		if ev.Kind != pullkit.EventPlanned {
			fn(ev)
		}
	}
}

// cancelPlanned reports the end of the layers of the plan when the pull fails before
// their transfer starts: each queued, then cancelled by cause.
func (p *pull) cancelPlanned(blobs []layers.Blob, cause error) {
	seen := map[digest.Digest]bool{}
	for _, b := range blobs {
		if seen[b.Desc.Digest] {
			continue
		}
		seen[b.Desc.Digest] = true
		p.o.emit(pullkit.Event{Kind: pullkit.EventQueued, What: "layer", Digest: b.Desc.Digest, Total: b.Desc.Size})
		p.o.emit(pullkit.Event{Kind: pullkit.EventCancelled, What: "layer", Digest: b.Desc.Digest, Total: b.Desc.Size, Err: cause})
	}
}

// config fetches image i's config (or reads it from the store, which has it verified
// under its name), checks its platform and stores it. Its events end with
// EventSkipped, EventVerified, EventFailed or EventCancelled.
func (p *pull) config(ctx context.Context, i int) error {
	ti := p.t.images[i]
	c := *ti.m.Config
	var raw []byte
	var cfg *manifest.ImageConfig
	var err error
	if b, rerr := store.ReadBlob(ctx, p.st, c.Digest, p.c.maxManifest); rerr == nil && int64(len(b)) == c.Size {
		raw = b
		p.o.emit(pullkit.Event{Kind: pullkit.EventSkipped, What: "config", Digest: c.Digest, Done: int64(len(b)), Total: int64(len(b))})
		if cfg, err = manifest.ParseConfig(b); err != nil {
			return pullkit.Wrap("", pullkit.OpParseConfig, c.Digest, err)
		}
	} else {
		p.o.emit(pullkit.Event{Kind: pullkit.EventStarted, What: "config", Digest: c.Digest, Total: c.Size})
		if raw, cfg, err = p.c.configOf(ctx, p.t, ti.m, p.o); err != nil {
			kind := pullkit.EventFailed
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				kind = pullkit.EventCancelled
			}
			p.o.emit(pullkit.Event{Kind: kind, What: "config", Digest: c.Digest, Total: c.Size, Err: err})
			return err
		}
	}
	if !p.o.all {
		if err := checkImagePlatform(p.o, ti.m, cfg); err != nil {
			return pullkit.Wrap("", pullkit.OpCheckPlatform, ti.m.Digest, err)
		}
	}
	if err := store.WriteBlob(ctx, p.st, *ti.m.Config, raw); err != nil {
		return pullkit.Wrap("", pullkit.OpStoreConfig, ti.m.Config.Digest, err)
	}
	p.configs[i] = configResult{raw: raw, cfg: cfg}
	return nil
}

// layerBlobs lists the layers of every image to fetch, and where each sits: image and
// layer index. Schema 1 throwaway layers are skipped unless schema 1 is stored as served
// (their blob is the empty gzip, and no conversion lists them).
func (p *pull) layerBlobs() ([]layers.Blob, [][2]int) {
	var blobs []layers.Blob
	var at [][2]int
	for i, ti := range p.t.images {
		s1 := ti.m.Schema1
		for k, l := range ti.m.Layers {
			if s1 != nil && p.o.format != FormatSchema1 && k < len(s1.History) && s1.History[k].Throwaway {
				continue
			}
			blobs = append(blobs, layers.Blob{Desc: l.Descriptor(), DiffID: s1 != nil || p.o.diffIDs})
			at = append(at, [2]int{i, k})
		}
	}
	return blobs, at
}

// addTees gives each layer of blobs its tee, once the configs are known: tees are told
// of the layers with their diffIDs, from the config.
func (p *pull) addTees(blobs []layers.Blob, at [][2]int) {
	known := p.knownLayers()
	for n := range blobs {
		i, k := at[n][0], at[n][1]
		blobs[n].Tee = p.o.tees(k, known[i][k])
	}
}

// knownLayers is what tees and skips are told of each image's layers: with diffIDs, from
// the config when there is one.
func (p *pull) knownLayers() [][]manifest.Layer {
	known := make([][]manifest.Layer, len(p.t.images))
	for i, ti := range p.t.images {
		known[i] = ti.m.Layers
		if cfg := p.configs[i].cfg; cfg != nil {
			if img, err := manifest.NewImage(p.ref, p.t.named, ti.m, ti.entry, ti.m.Config, cfg); err == nil {
				known[i] = img.Layers
			}
		}
	}
	return known
}

// skipLayers leaves out of the transfer the layers WithSkipLayers's fn says are not
// needed (after the tees, which it may depend on). They were planned: each is reported
// queued and then skipped, nothing downloaded, as the progress contract wants every
// planned blob to end.
func (p *pull) skipLayers(blobs []layers.Blob, at [][2]int) ([]layers.Blob, [][2]int) {
	known := p.knownLayers()
	var keptB []layers.Blob
	var keptAt [][2]int
	seen := map[digest.Digest]bool{}
	for n, b := range blobs {
		i, k := at[n][0], at[n][1]
		if p.o.skip(k, known[i][k]) {
			if seen[b.Desc.Digest] {
				continue
			}
			seen[b.Desc.Digest] = true
			p.o.emit(pullkit.Event{Kind: pullkit.EventQueued, What: "layer", Digest: b.Desc.Digest, Total: b.Desc.Size})
			p.o.emit(pullkit.Event{Kind: pullkit.EventSkipped, What: "layer", Digest: b.Desc.Digest, Done: b.Desc.Size, Total: b.Desc.Size})
			continue
		}
		keptB = append(keptB, b)
		keptAt = append(keptAt, at[n])
	}
	return keptB, keptAt
}

// store builds image i's model from what the transfer learnt and stores its manifest in
// the format asked for, returning the model and the stored manifest's descriptor.
func (p *pull) store(ctx context.Context, i int, results []layers.Result, at [][2]int) (*manifest.Image, manifest.Descriptor, error) {
	ti := p.t.images[i]
	m := ti.m
	cr := p.configs[i]
	var cfgDesc *manifest.Descriptor
	if m.Config != nil {
		cfgDesc = m.Config
	}
	img, err := manifest.NewImage(p.ref, p.t.named, m, ti.entry, cfgDesc, cr.cfg)
	if err != nil {
		return nil, manifest.Descriptor{}, pullkit.Wrap("", pullkit.OpBuildModel, m.Digest, err)
	}
	img.RegistryDigest = p.t.served
	for k, res := range results {
		if at[k][0] != i {
			continue
		}
		l := &img.Layers[at[k][1]]
		if l.Size < 0 {
			l.Size = res.Desc.Size
		}
		if res.DiffID == "" {
			continue
		}
		if l.DiffID != "" && l.DiffID != res.DiffID {
			return nil, manifest.Descriptor{}, pullkit.WrapDetail("", pullkit.OpCheckDiffID, "of layer "+fmt.Sprint(at[k][1]+1), l.Digest,
				&pullkit.DigestMismatchError{What: "uncompressed layer", Want: l.DiffID, Got: res.DiffID})
		}
		l.DiffID = res.DiffID
	}
	if m.Schema1 != nil {
		return p.storeSchema1(ctx, img, m)
	}
	raw, mediaType := m.Raw, m.MediaType
	switch p.o.format {
	case FormatOCI:
		mediaType = manifest.MediaTypeOCIManifest
		raw, err = manifest.ConvertImage(m, mediaType)
	case FormatDocker:
		mediaType = manifest.MediaTypeDockerSchema2
		raw, err = manifest.ConvertImage(m, mediaType)
	case FormatSchema1:
		repo, tag := p.r.Context().RepositoryStr(), "latest"
		if t, ok := p.r.(name.Tag); ok {
			tag = t.TagStr()
		}
		mediaType = manifest.MediaTypeDockerSchema1Signed
		raw, err = manifest.ToSchema1(m, cr.raw, repo, tag, nil)
	}
	if err != nil {
		return nil, manifest.Descriptor{}, pullkit.WrapDetail("", pullkit.OpConvert, "to "+p.o.format.String(), m.Digest, err)
	}
	desc, err := p.put(ctx, mediaType, raw, img.Platform)
	return img, desc, err
}

// storeSchema1 stores a schema 1 image: converted to schema 2 or OCI with a config
// synthesised from the diffIDs (layer media types read from the blobs, since schema 1
// calls every layer gzip), or as served for FormatSchema1.
func (p *pull) storeSchema1(ctx context.Context, img *manifest.Image, m *manifest.Manifest) (*manifest.Image, manifest.Descriptor, error) {
	if p.o.format == FormatSchema1 {
		desc, err := p.put(ctx, m.MediaType, m.Raw, img.Platform)
		return img, desc, err
	}
	for k := range img.Layers {
		l := &img.Layers[k]
		if k < len(m.Schema1.History) && m.Schema1.History[k].Throwaway {
			continue
		}
		mt, err := sniffLayerType(ctx, p.st, l.Digest)
		if err != nil {
			return nil, manifest.Descriptor{}, pullkit.Wrap("", pullkit.OpReadBlob, l.Digest, err)
		}
		l.MediaType = mt
	}
	to := manifest.MediaTypeOCIManifest
	if p.o.format == FormatDocker || p.o.format == FormatAsServed {
		to = manifest.MediaTypeDockerSchema2
	}
	mraw, craw, err := manifest.FromSchema1(m, img.Layers, to)
	if err != nil {
		return nil, manifest.Descriptor{}, pullkit.WrapDetail("", pullkit.OpConvert, "from schema 1", m.Digest, err)
	}
	cdesc := manifest.Descriptor{MediaType: manifest.MediaTypeOCIConfig, Digest: digest.FromBytes(craw), Size: int64(len(craw))}
	if to == manifest.MediaTypeDockerSchema2 {
		cdesc.MediaType = manifest.MediaTypeDockerConfig
	}
	if err := p.lease.Add(ctx, cdesc.Digest); err != nil {
		return nil, manifest.Descriptor{}, pullkit.Wrap("", pullkit.OpLease, "", err)
	}
	if err := store.WriteBlob(ctx, p.st, cdesc, craw); err != nil {
		return nil, manifest.Descriptor{}, pullkit.WrapDetail("", pullkit.OpStoreConfig, "(synthesised)", cdesc.Digest, err)
	}
	cfg, err := manifest.ParseConfig(craw)
	if err != nil {
		return nil, manifest.Descriptor{}, pullkit.WrapDetail("", pullkit.OpParseConfig, "(synthesised)", cdesc.Digest, err)
	}
	img.Config = cdesc
	img.Runtime = cfg.Runtime
	desc, err := p.put(ctx, to, mraw, img.Platform)
	return img, desc, err
}

// sniffLayerType says what a stored layer blob really is.
func sniffLayerType(ctx context.Context, st store.Provider, d digest.Digest) (string, error) {
	ra, err := st.ReaderAt(ctx, d)
	if err != nil {
		return "", err
	}
	defer ra.Close()
	head := make([]byte, 4)
	n, err := ra.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	switch manifest.DetectCompression(head[:n]) {
	case manifest.Gzip:
		return manifest.MediaTypeDockerLayer, nil
	case manifest.Zstd:
		return manifest.MediaTypeOCILayerZstd, nil
	}
	return manifest.MediaTypeDockerLayerUncompressed, nil
}

// put stores a manifest or index blob and returns its descriptor.
func (p *pull) put(ctx context.Context, mediaType string, raw []byte, plat *platforms.Platform) (manifest.Descriptor, error) {
	desc := manifest.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
	if err := p.lease.Add(ctx, desc.Digest); err != nil {
		return desc, pullkit.Wrap("", pullkit.OpLease, "", err)
	}
	if err := store.WriteBlob(ctx, p.st, desc, raw); err != nil {
		return desc, pullkit.Wrap("", pullkit.OpStoreManifest, desc.Digest, err)
	}
	if plat != nil {
		pl := plat.Clone()
		desc.Platform = &pl
	}
	return desc, nil
}

// storeIndex stores the index of every platform's stored manifest.
func (p *pull) storeIndex(ctx context.Context, stored []manifest.Descriptor) (manifest.Descriptor, error) {
	if p.o.format == FormatAsServed {
		same := true
		for i, d := range stored {
			same = same && d.Digest == p.t.images[i].entry.Digest
		}
		if same && len(stored) == len(p.t.named.Manifests) {
			return p.put(ctx, p.t.named.MediaType, p.t.named.Raw, nil)
		}
	}
	mt := manifest.MediaTypeOCIIndex
	if p.o.format == FormatDocker || p.o.format == FormatAsServed {
		mt = manifest.MediaTypeDockerManifestList
		for _, d := range stored {
			if d.MediaType == manifest.MediaTypeOCIManifest {
				mt = manifest.MediaTypeOCIIndex
			}
		}
	}
	raw, err := manifest.NewIndex(mt, stored)
	if err != nil {
		return manifest.Descriptor{}, pullkit.WrapDetail("", pullkit.OpConvert, "to an index", "", err)
	}
	return p.put(ctx, mt, raw, nil)
}
