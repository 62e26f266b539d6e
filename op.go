package pullkit

// The steps an Error names in its Op. Every *Error a pullkit package returns has one of
// these (or "" when the step is the caller's own), so that a program branches on the
// step that failed by comparing, not by matching words in messages:
//
//	var pe *pullkit.Error
//	if errors.As(err, &pe) && pe.Op == pullkit.OpFetchManifest { … }
//
// What a message says beside the step (the platform of an index's entry, the mirror that
// was asked, an image name, whether a blob is a layer or a config) is in Error.Detail,
// which is for people. The values are the words messages print; they do not change.
const (
	// Steps of a pull, a resolve and an inspect (package puller).

	// OpParseReference: the reference given is not one (ErrInvalid).
	OpParseReference = "parse reference"
	// OpResolve: Resolve could not turn the reference into a platform's manifest.
	OpResolve = "resolve"
	// OpFetchManifest: fetching or verifying a manifest or an index, the one the
	// reference names or an index's entry (Detail names the platform, or the mirror).
	OpFetchManifest = "fetch manifest"
	// OpChoosePlatform: no entry of an index is for the platform (ErrNoMatch), or the
	// index holds nothing that can be pulled (ErrUnsupported).
	OpChoosePlatform = "choose platform"
	// OpCheckPlatform: an image that is not in an index is for another platform than
	// the one the pull is for (ErrNoMatch).
	OpCheckPlatform = "check platform"
	// OpFetchConfig: fetching or verifying an image's config.
	OpFetchConfig = "fetch config"
	// OpParseConfig: an image's config (fetched or synthesised) does not parse.
	OpParseConfig = "parse config"
	// OpBuildModel: the manifest and config do not make an image model (a layer count
	// that does not match the config's diffIDs, say).
	OpBuildModel = "build image model"
	// OpCheckDiffID: a layer's uncompressed content is not the diffID its config names.
	OpCheckDiffID = "check diffID"
	// OpConvert: converting a manifest to the format asked for.
	OpConvert = "convert manifest"
	// OpStoreManifest: writing a manifest or an index into the store.
	OpStoreManifest = "store manifest"
	// OpStoreConfig: writing a config (fetched or synthesised) into the store.
	OpStoreConfig = "store config"
	// OpNameImage: naming the pulled image in the store (Detail is the name).
	OpNameImage = "name image"
	// OpLease: starting a lease or adding blobs to it.
	OpLease = "lease"
	// OpReferrers: listing the referrers of a manifest.
	OpReferrers = "list referrers"
	// OpListTags: listing a repository's tags.
	OpListTags = "list tags"
	// OpPlan: Client.Plan could not work out where a reference is fetched from (the
	// configuration refuses it, say).
	OpPlan = "plan"
	// OpVerify: the client's trust.Verifier refused the image (ErrUntrusted), or could
	// not decide; nothing past its manifests and signatures was fetched.
	OpVerify = "verify"

	// Steps of a transfer (package layers; Detail says "layer" or "config").

	// OpFetchBlob: a blob's bytes could not be had from the registry (or arrived too
	// many, or too long).
	OpFetchBlob = "fetch blob"
	// OpVerifyBlob: the bytes received do not hash to the blob's digest, or are not its
	// size.
	OpVerifyBlob = "verify blob"
	// OpTee: a layers.Tee refused the bytes (unpacking while downloading, say).
	OpTee = "tee"

	// Steps of a store (package store), also met inside a pull.

	// OpOpenStore: opening a store (a layout directory that is not one, say).
	OpOpenStore = "open store"
	// OpStatBlob: Info of a blob.
	OpStatBlob = "stat blob"
	// OpReadBlob: opening or reading a blob (and a writer's Absorb of the bytes it holds).
	OpReadBlob = "read blob"
	// OpOpenWriter: Writer, the start of a blob's ingest.
	OpOpenWriter = "open writer"
	// OpWriteBlob: Write, WriteAt or Truncate of a writer (a write past a known size, say).
	OpWriteBlob = "write blob"
	// OpCommitBlob: Commit of a writer (the bytes do not verify, say).
	OpCommitBlob = "commit blob"
	// OpDeleteBlob: Delete of a blob.
	OpDeleteBlob = "delete blob"
	// OpWalkBlobs: Walk over a store's blobs.
	OpWalkBlobs = "walk blobs"
	// OpPutImage: PutImage of a name.
	OpPutImage = "put image"
	// OpLookUpImage: Image of a name.
	OpLookUpImage = "look up image"
	// OpListImages: Images.
	OpListImages = "list images"
	// OpDeleteImage: DeleteImage of a name.
	OpDeleteImage = "delete image"
	// OpLoadImage: turning a stored name back into the image model.
	OpLoadImage = "load image"
	// OpGC: garbage collection.
	OpGC = "gc"
	// OpCheck: checking every blob against its digest.
	OpCheck = "check"

	// Steps of unpacking (package unpack).

	// OpUnpack: applying a layer to a root filesystem or a snapshot.
	OpUnpack = "unpack layer"
)
