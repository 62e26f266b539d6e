package pullkittest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"time"

	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
)

// Format is a manifest format the builders write.
type Format int

// The formats. PushImage takes the image formats, PushIndex the two index formats.
const (
	// Schema2 is a Docker schema 2 image manifest with a Docker config.
	Schema2 Format = iota + 1
	// OCI is an OCI image manifest with an OCI config.
	OCI
	// Schema1 is a signed Docker schema 1 manifest (libtrust JWS, the registry's key),
	// served under its canonical digest, which is not the sha256 of its bytes.
	Schema1
	// Schema1Unsigned is an unsigned schema 1 manifest (v1+json), which distribution
	// refuses to store but old registries served.
	Schema1Unsigned
	// ManifestList is a Docker manifest list of Schema2 images.
	ManifestList
	// OCIIndex is an OCI image index of OCI images, with attestations on request.
	OCIIndex
)

// MediaType is the format's manifest media type.
func (f Format) MediaType() string {
	switch f {
	case Schema2:
		return manifest.MediaTypeDockerSchema2
	case OCI:
		return manifest.MediaTypeOCIManifest
	case Schema1:
		return manifest.MediaTypeDockerSchema1Signed
	case Schema1Unsigned:
		return manifest.MediaTypeDockerSchema1
	case ManifestList:
		return manifest.MediaTypeDockerManifestList
	case OCIIndex:
		return manifest.MediaTypeOCIIndex
	}
	return ""
}

// String names the format as the constants do.
func (f Format) String() string {
	switch f {
	case Schema2:
		return "Schema2"
	case OCI:
		return "OCI"
	case Schema1:
		return "Schema1"
	case Schema1Unsigned:
		return "Schema1Unsigned"
	case ManifestList:
		return "ManifestList"
	case OCIIndex:
		return "OCIIndex"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// Media types the builders use that the manifest package does not name.
const (
	mediaTypeEmpty  = "application/vnd.oci.empty.v1+json"
	mediaTypeInToto = "application/vnd.in-toto+json"
	slsaProvenance  = "https://slsa.dev/provenance/v0.2"
)

// created is the time every built image says it was made, so that builds are the same
// from one run to the next.
var created = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// emptyGzipLayer is the 32-byte gzip of an empty tar whose digest is
// manifest.EmptyGzipLayer; schema 1 lists it for steps that change no file.
var emptyGzipLayer = []byte{31, 139, 8, 0, 0, 9, 110, 136, 0, 255, 98, 24, 5, 163, 96, 20, 140, 88, 0, 8, 0, 0, 255, 255, 46, 175, 181, 239, 0, 4, 0, 0}

// Blob is a blob the kit built: its descriptor and bytes.
type Blob struct {
	manifest.Descriptor
	// Data is the blob as served.
	Data []byte
}

func newBlob(mediaType string, data []byte) Blob {
	return Blob{Descriptor: manifest.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}, Data: data}
}

// Layer is a layer blob the kit built.
type Layer struct {
	Blob
	// DiffID is the sha256 of the uncompressed tar (equal to Digest when uncompressed).
	DiffID digest.Digest
	// Compression is how Data is compressed.
	Compression manifest.Compression
}

// RandomLayer builds a layer: a tar holding one file of size pseudo-random bytes drawn
// from seed (the same seed, size and compression give the same bytes, hence digests,
// every time), compressed with c. Its media type is the OCI one for c; PushImage uses the
// Docker ones in Docker manifests. Put it with Registry.PutBlob to build manifests by
// hand.
func RandomLayer(seed uint64, size int, c manifest.Compression) Layer {
	content := make([]byte, max(size, 0))
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	for i := 0; i < len(content); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(content); j++ {
			content[i+j] = byte(v >> (8 * j))
		}
	}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	hdrs := []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "pullkittest/", Mode: 0o755, ModTime: created, Format: tar.FormatUSTAR},
		{Typeflag: tar.TypeReg, Name: fmt.Sprintf("pullkittest/%016x.bin", seed), Mode: 0o644, Size: int64(len(content)), ModTime: created, Format: tar.FormatUSTAR},
	}
	for i, h := range hdrs {
		must(tw.WriteHeader(h))
		if i == 1 {
			_, err := tw.Write(content)
			must(err)
		}
	}
	must(tw.Close())
	plain := tb.Bytes()
	l := Layer{DiffID: digest.FromBytes(plain), Compression: c}
	switch c {
	case manifest.Gzip:
		var gb bytes.Buffer
		zw, err := gzip.NewWriterLevel(&gb, gzip.BestSpeed)
		must(err)
		_, err = zw.Write(plain)
		must(err)
		must(zw.Close())
		l.Blob = newBlob(manifest.MediaTypeOCILayerGzip, gb.Bytes())
	case manifest.Zstd:
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
		must(err)
		l.Blob = newBlob(manifest.MediaTypeOCILayerZstd, enc.EncodeAll(plain, nil))
		must(enc.Close())
	default:
		l.Compression = manifest.Uncompressed
		l.Blob = newBlob(manifest.MediaTypeOCILayer, plain)
	}
	return l
}

func must(err error) {
	if err != nil {
		panic("pullkittest: " + err.Error())
	}
}

// Manifest is a manifest the kit stored: where, under which digest, and its bytes.
type Manifest struct {
	// Repo is the repository it was pushed to.
	Repo string
	// Tag is the tag that points at it, "" when it was pushed by digest only.
	Tag string
	// MediaType is its Content-Type.
	MediaType string
	// Digest is the digest the registry answers to: for signed schema 1 the canonical
	// digest of the signed payload, otherwise sha256 of Raw.
	Digest digest.Digest
	// Raw is the document as served.
	Raw []byte

	host string
}

// Descriptor describes the manifest, for an index entry or an artifact's subject.
func (m *Manifest) Descriptor() manifest.Descriptor {
	return manifest.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Raw))}
}

// Ref is the manifest's reference by digest: host/repo@digest.
func (m *Manifest) Ref() string { return m.host + "/" + m.Repo + "@" + m.Digest.String() }

// Image is an image manifest the kit built and pushed, with its config and layers.
type Image struct {
	Manifest
	// Format is the manifest's format.
	Format Format
	// Platform is what the config says the image is for.
	Platform platforms.Platform
	// Config is the config blob (zero for schema 1, which has none).
	Config Blob
	// Layers are the layer blobs, base first (for an attestation manifest, its in-toto
	// statements). Schema 1's empty layers are not among them.
	Layers []Layer
}

// Descriptor describes the image with its platform, as an index entry does.
func (i *Image) Descriptor() manifest.Descriptor {
	d := i.Manifest.Descriptor()
	p := i.Platform.Clone()
	d.Platform = &p
	return d
}

// Index is a manifest list or OCI index the kit built and pushed, with its images.
type Index struct {
	Manifest
	// Format is ManifestList or OCIIndex.
	Format Format
	// Images are the platform images, in index order.
	Images []*Image
	// Attestations are BuildKit's attestation manifests (platform unknown/unknown,
	// annotated vnd.docker.reference.type: attestation-manifest), one per image, in
	// index order after the images: Attestations[i] refers to Images[i].
	Attestations []*Image
}

// Artifact is an OCI artifact the kit built and pushed: an OCI image manifest with an
// artifactType and a subject, as signatures, SBOMs and attestations are pushed by OCI
// 1.1 tools.
type Artifact struct {
	Manifest
	// ArtifactType is the manifest's artifactType.
	ArtifactType string
	// Subject is the descriptor of the manifest it refers to.
	Subject manifest.Descriptor
	// Config is the empty config ({} as application/vnd.oci.empty.v1+json).
	Config Blob
	// Blobs are its layers.
	Blobs []Blob
}

// Descriptor describes the artifact with its artifact type, as the referrers API lists it.
func (a *Artifact) Descriptor() manifest.Descriptor {
	d := a.Manifest.Descriptor()
	d.ArtifactType = a.ArtifactType
	return d
}

// BuildOption configures PushImage, PushIndex or PushArtifact. An option that does not
// apply to the builder it is given to makes it panic, rather than be ignored.
type BuildOption func(*build)

type build struct {
	layers, size  int
	compression   manifest.Compression
	platform      *platforms.Platform
	platforms     []platforms.Platform
	attestations  bool
	seed          uint64
	seedSet       bool
	annotations   map[string]string
	artifactBlobs []Blob
}

// Layers makes images of n random layers, each a tar of size bytes of content (the
// default is 2 layers of 1 KiB). n may be 0: an image with no layers.
func Layers(n, size int) BuildOption {
	if n < 0 || size < 0 {
		panic(fmt.Sprintf("pullkittest: Layers(%d, %d): negative", n, size))
	}
	return func(b *build) { b.layers, b.size = n, size }
}

// Compression compresses layers with c (gzip by default). Docker schema 2 manifests name
// a zstd layer with the OCI zstd media type, as BuildKit writes them.
func Compression(c manifest.Compression) BuildOption {
	return func(b *build) { b.compression = c }
}

// Platform is the platform of the image PushImage builds (linux/amd64 by default).
func Platform(p platforms.Platform) BuildOption {
	return func(b *build) { p = p.Clone(); b.platform = &p }
}

// Platforms are the platforms of the images PushIndex builds, in index order
// (linux/amd64 and linux/arm64/v8 by default).
func Platforms(ps ...platforms.Platform) BuildOption {
	return func(b *build) {
		b.platforms = []platforms.Platform{}
		for _, p := range ps {
			b.platforms = append(b.platforms, p.Clone())
		}
	}
}

// Attestations adds BuildKit's attestation manifests to an OCIIndex: one per image,
// platform unknown/unknown, holding an in-toto SLSA provenance statement about it.
func Attestations() BuildOption { return func(b *build) { b.attestations = true } }

// Seed chooses the pseudo-random layer content (by default it derives from the
// repository and tag, so distinct pushes differ and a repeated one is the same).
func Seed(seed uint64) BuildOption { return func(b *build) { b.seed, b.seedSet = seed, true } }

// Annotations are the manifest's (or index's) annotations.
func Annotations(a map[string]string) BuildOption {
	return func(b *build) { b.annotations = maps.Clone(a) }
}

// ArtifactBlob adds a blob of mediaType holding data to an artifact (by default it has
// one small JSON blob of its artifact type).
func ArtifactBlob(mediaType string, data []byte) BuildOption {
	return func(b *build) {
		b.artifactBlobs = append(b.artifactBlobs, newBlob(mediaType, append([]byte(nil), data...)))
	}
}

func newBuild(repo, tag string, opts []BuildOption) *build {
	b := &build{layers: 2, size: 1024, compression: manifest.Gzip}
	for _, o := range opts {
		if o != nil {
			o(b)
		}
	}
	if !b.seedSet {
		h := fnv.New64a()
		h.Write([]byte(repo + "\x00" + tag))
		b.seed = h.Sum64()
	}
	return b
}

// subSeed derives a seed for one part of a build.
func subSeed(seed uint64, parts ...any) uint64 {
	h := fnv.New64a()
	fmt.Fprint(h, seed)
	for _, p := range parts {
		fmt.Fprint(h, "/", p)
	}
	return h.Sum64()
}

// marshal encodes a manifest document: indented with three spaces for Docker's formats,
// as docker push writes them, compact for OCI's.
func marshal(v any, docker bool) []byte {
	var b []byte
	var err error
	if docker {
		b, err = json.MarshalIndent(v, "", "   ")
	} else {
		b, err = json.Marshal(v)
	}
	must(err)
	return b
}

type imageConfig struct {
	Created      string `json:"created"`
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	OSVersion    string `json:"os.version,omitempty"`
	Variant      string `json:"variant,omitempty"`
	Config       struct {
		Env []string `json:"Env,omitempty"`
		Cmd []string `json:"Cmd,omitempty"`
	} `json:"config"`
	RootFS struct {
		Type    string          `json:"type"`
		DiffIDs []digest.Digest `json:"diff_ids"`
	} `json:"rootfs"`
	History []configHistory `json:"history,omitempty"`
}

type configHistory struct {
	Created    string `json:"created"`
	CreatedBy  string `json:"created_by"`
	EmptyLayer bool   `json:"empty_layer,omitempty"`
}

type imageManifest struct {
	SchemaVersion int                   `json:"schemaVersion"`
	MediaType     string                `json:"mediaType"`
	ArtifactType  string                `json:"artifactType,omitempty"`
	Config        manifest.Descriptor   `json:"config"`
	Layers        []manifest.Descriptor `json:"layers"`
	Subject       *manifest.Descriptor  `json:"subject,omitempty"`
	Annotations   map[string]string     `json:"annotations,omitempty"`
}

type indexManifest struct {
	SchemaVersion int                   `json:"schemaVersion"`
	MediaType     string                `json:"mediaType"`
	Manifests     []manifest.Descriptor `json:"manifests"`
	Annotations   map[string]string     `json:"annotations,omitempty"`
}

// buildImage builds (without storing) an image of format f for p.
func (r *Registry) buildImage(repo, tag string, f Format, p platforms.Platform, seed uint64, b *build) *Image {
	img := &Image{Manifest: Manifest{Repo: repo, Tag: tag, host: r.Host()}, Format: f, Platform: p}
	cfg := imageConfig{Created: created.Format(time.RFC3339), Architecture: p.Architecture, OS: p.OS, OSVersion: p.OSVersion, Variant: p.Variant}
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cfg.Config.Cmd = []string{"/bin/sh"}
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = []digest.Digest{}
	docker := f != OCI
	var descs []manifest.Descriptor
	for i := 0; i < b.layers; i++ {
		l := RandomLayer(subSeed(seed, p.String(), i), b.size, b.compression)
		if docker {
			switch l.Compression {
			case manifest.Gzip:
				l.MediaType = manifest.MediaTypeDockerLayer
			case manifest.Uncompressed:
				l.MediaType = manifest.MediaTypeDockerLayerUncompressed
			}
		}
		img.Layers = append(img.Layers, l)
		descs = append(descs, l.Descriptor)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		cfg.History = append(cfg.History, configHistory{Created: cfg.Created, CreatedBy: fmt.Sprintf("pullkittest layer %d", i+1)})
	}
	if b.layers == 0 {
		cfg.History = []configHistory{{Created: cfg.Created, CreatedBy: "pullkittest: no layers", EmptyLayer: true}}
	}
	configType := manifest.MediaTypeOCIConfig
	if docker {
		configType = manifest.MediaTypeDockerConfig
	}
	img.Config = newBlob(configType, marshal(cfg, false))
	m := imageManifest{SchemaVersion: 2, MediaType: Schema2.MediaType(), Config: img.Config.Descriptor, Layers: descs, Annotations: b.annotations}
	if m.Layers == nil {
		m.Layers = []manifest.Descriptor{}
	}
	if f == OCI {
		m.MediaType = OCI.MediaType()
	}
	img.MediaType = m.MediaType
	img.Raw = marshal(m, docker)
	img.Digest = digest.FromBytes(img.Raw)
	if f == Schema1 || f == Schema1Unsigned {
		r.toSchema1Image(img, tag)
	}
	return img
}

// toSchema1Image turns a built schema 2 image into signed (or unsigned) schema 1 with
// manifest.ToSchema1, signed with the registry's key as distribution signs.
func (r *Registry) toSchema1Image(img *Image, tag string) {
	parsed, err := manifest.Parse(img.Raw, img.MediaType)
	must(err)
	signed, err := manifest.ToSchema1(parsed, img.Config.Data, img.Repo, tag, r.schema1Signer())
	must(err)
	s1, err := manifest.Parse(signed, manifest.MediaTypeDockerSchema1Signed)
	must(err)
	img.Raw, img.MediaType, img.Digest = signed, manifest.MediaTypeDockerSchema1Signed, s1.Digest
	if img.Format == Schema1Unsigned {
		img.Raw, img.MediaType, img.Digest = s1.Schema1.Payload, manifest.MediaTypeDockerSchema1, digest.FromBytes(s1.Schema1.Payload)
	}
	img.Config = Blob{}
}

// storeImageLocked puts an image's blobs and manifest; tag "" stores it by digest.
func (r *Registry) storeImageLocked(img *Image) {
	rp := r.repo(img.Repo)
	put := func(data []byte) {
		d := digest.FromBytes(data)
		if _, ok := r.blobs[d]; !ok {
			r.blobs[d] = data
		}
		rp.blobs[d] = true
	}
	for _, l := range img.Layers {
		put(l.Data)
	}
	if img.Config.Data != nil {
		put(img.Config.Data)
	}
	if img.Format == Schema1 || img.Format == Schema1Unsigned {
		put(emptyGzipLayer) // named by throwaway steps
	}
	m, err := newStoredManifest(img.MediaType, img.Raw)
	must(err)
	r.putManifestLocked(img.Repo, img.Tag, m)
}

// PushImage builds an image of format f (Schema2, OCI, Schema1 or Schema1Unsigned) and
// pushes its blobs and manifest to repo, tagged tag ("" for by digest only). It returns
// what it pushed. It panics on a format or option that cannot make an image.
func (r *Registry) PushImage(repo, tag string, f Format, opts ...BuildOption) *Image {
	checkRepo(repo)
	checkTag(tag)
	b := newBuild(repo, tag, opts)
	switch {
	case f != Schema2 && f != OCI && f != Schema1 && f != Schema1Unsigned:
		panic(fmt.Sprintf("pullkittest: PushImage: %v is not an image format", f))
	case b.platforms != nil || b.attestations || b.artifactBlobs != nil:
		panic("pullkittest: PushImage: Platforms, Attestations and ArtifactBlob apply to PushIndex and PushArtifact")
	case b.annotations != nil && (f == Schema1 || f == Schema1Unsigned):
		panic("pullkittest: PushImage: schema 1 has no annotations")
	}
	p := platforms.Platform{OS: "linux", Architecture: "amd64"}
	if b.platform != nil {
		p = *b.platform
	}
	img := r.buildImage(repo, tag, f, p, b.seed, b)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.storeImageLocked(img)
	return img
}

func checkTag(tag string) {
	if tag != "" && !tagPattern.MatchString(tag) {
		panic(fmt.Sprintf("pullkittest: %q is not a valid tag", tag))
	}
}

// PushIndex builds an index of format f (ManifestList of Schema2 images, or OCIIndex of
// OCI images), one image per platform, pushes the images by digest and the index tagged
// tag, and returns what it pushed. Layers, Compression and Seed apply to every image.
func (r *Registry) PushIndex(repo, tag string, f Format, opts ...BuildOption) *Index {
	checkRepo(repo)
	checkTag(tag)
	b := newBuild(repo, tag, opts)
	switch {
	case f != ManifestList && f != OCIIndex:
		panic(fmt.Sprintf("pullkittest: PushIndex: %v is not an index format", f))
	case b.platform != nil || b.artifactBlobs != nil:
		panic("pullkittest: PushIndex: Platform and ArtifactBlob apply to PushImage and PushArtifact; use Platforms")
	case b.attestations && f != OCIIndex:
		panic("pullkittest: PushIndex: attestations need an OCIIndex (BuildKit writes them with OCI media types only)")
	}
	ps := b.platforms
	if len(ps) == 0 {
		ps = []platforms.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}}
	}
	child := Schema2
	if f == OCIIndex {
		child = OCI
	}
	childBuild := *b
	childBuild.annotations = nil
	idx := &Index{Manifest: Manifest{Repo: repo, Tag: tag, MediaType: f.MediaType(), host: r.Host()}, Format: f}
	doc := indexManifest{SchemaVersion: 2, MediaType: f.MediaType(), Manifests: []manifest.Descriptor{}, Annotations: b.annotations}
	for _, p := range ps {
		img := r.buildImage(repo, "", child, p, subSeed(b.seed, "platform", p.String()), &childBuild)
		idx.Images = append(idx.Images, img)
		doc.Manifests = append(doc.Manifests, img.Descriptor())
	}
	if b.attestations {
		for _, img := range idx.Images {
			att := r.buildAttestation(img)
			idx.Attestations = append(idx.Attestations, att)
			d := att.Manifest.Descriptor()
			d.Annotations = map[string]string{
				"vnd.docker.reference.digest": img.Digest.String(),
				"vnd.docker.reference.type":   "attestation-manifest",
			}
			d.Platform = &platforms.Platform{OS: "unknown", Architecture: "unknown"}
			doc.Manifests = append(doc.Manifests, d)
		}
	}
	idx.Raw = marshal(doc, f == ManifestList)
	idx.Digest = digest.FromBytes(idx.Raw)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, img := range append(append([]*Image(nil), idx.Images...), idx.Attestations...) {
		r.storeImageLocked(img)
	}
	m, err := newStoredManifest(idx.MediaType, idx.Raw)
	must(err)
	r.putManifestLocked(repo, tag, m)
	return idx
}

// buildAttestation builds BuildKit's attestation manifest for img: an OCI manifest whose
// one layer is an in-toto statement of SLSA provenance with img as its subject.
func (r *Registry) buildAttestation(img *Image) *Image {
	type subject struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	}
	statement := marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v0.1",
		"predicateType": slsaProvenance,
		"subject": []subject{{
			Name:   "pkg:docker/" + img.Repo + "?platform=" + img.Platform.OS + "%2F" + img.Platform.Architecture,
			Digest: map[string]string{img.Digest.Algorithm().String(): img.Digest.Encoded()},
		}},
		"predicate": map[string]any{
			"builder":   map[string]string{"id": "pullkittest"},
			"buildType": "https://mobyproject.org/buildkit@v1",
		},
	}, false)
	layer := Layer{Blob: newBlob(mediaTypeInToto, statement), Compression: manifest.Uncompressed}
	layer.Annotations = map[string]string{"in-toto.io/predicate-type": slsaProvenance}
	layer.DiffID = layer.Digest
	cfg := imageConfig{Architecture: "unknown", OS: "unknown", Created: created.Format(time.RFC3339)}
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = []digest.Digest{layer.Digest}
	att := &Image{
		Manifest: Manifest{Repo: img.Repo, MediaType: manifest.MediaTypeOCIManifest, host: r.Host()},
		Format:   OCI,
		Platform: platforms.Platform{OS: "unknown", Architecture: "unknown"},
		Config:   newBlob(manifest.MediaTypeOCIConfig, marshal(cfg, false)),
		Layers:   []Layer{layer},
	}
	att.Raw = marshal(imageManifest{SchemaVersion: 2, MediaType: manifest.MediaTypeOCIManifest,
		Config: att.Config.Descriptor, Layers: []manifest.Descriptor{layer.Descriptor}}, false)
	att.Digest = digest.FromBytes(att.Raw)
	return att
}

// PushArtifact builds an OCI artifact of artifactType (for example
// "application/spdx+json" for an SBOM, or "application/vnd.dev.cosign.artifact.sig.v1+json"
// for a signature) whose subject is subject (pass img.Descriptor()), pushes it to repo by
// digest, and returns it. The referrers API lists it under the subject's digest (or, with
// WithoutReferrersAPI, the tag sha256-<hex> of the subject indexes it). ArtifactBlob and
// Annotations apply.
func (r *Registry) PushArtifact(repo string, subject manifest.Descriptor, artifactType string, opts ...BuildOption) *Artifact {
	checkRepo(repo)
	b := newBuild(repo, "", opts)
	switch {
	case artifactType == "":
		panic("pullkittest: PushArtifact: empty artifactType")
	case subject.Digest.Validate() != nil:
		panic(fmt.Sprintf("pullkittest: PushArtifact: subject digest %q: %v", subject.Digest, subject.Digest.Validate()))
	case b.platform != nil || b.platforms != nil || b.attestations:
		panic("pullkittest: PushArtifact: Platform, Platforms and Attestations apply to images and indexes")
	}
	a := &Artifact{
		Manifest:     Manifest{Repo: repo, MediaType: manifest.MediaTypeOCIManifest, host: r.Host()},
		ArtifactType: artifactType,
		Subject:      manifest.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Config:       newBlob(mediaTypeEmpty, []byte("{}")),
		Blobs:        b.artifactBlobs,
	}
	if a.Blobs == nil {
		a.Blobs = []Blob{newBlob(artifactType, marshal(map[string]string{
			"artifactType": artifactType, "subject": subject.Digest.String(),
		}, false))}
	}
	annotations := map[string]string{"org.opencontainers.image.created": created.Format(time.RFC3339)}
	maps.Copy(annotations, b.annotations)
	doc := imageManifest{SchemaVersion: 2, MediaType: manifest.MediaTypeOCIManifest, ArtifactType: artifactType,
		Config: a.Config.Descriptor, Subject: &a.Subject, Annotations: annotations}
	for _, bl := range a.Blobs {
		doc.Layers = append(doc.Layers, bl.Descriptor)
	}
	a.Raw = marshal(doc, false)
	a.Digest = digest.FromBytes(a.Raw)
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.repo(repo)
	for _, bl := range append([]Blob{a.Config}, a.Blobs...) {
		if _, ok := r.blobs[bl.Digest]; !ok {
			r.blobs[bl.Digest] = bl.Data
		}
		rp.blobs[bl.Digest] = true
	}
	m, err := newStoredManifest(a.MediaType, a.Raw)
	must(err)
	r.putManifestLocked(repo, "", m)
	return a
}
