package manifest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/dockerv1"
	"github.com/pullkit/pullkit/platforms"
)

// Schema1 holds what only a Docker schema 1 manifest carries.
type Schema1 struct {
	// Name is the repository name written in the manifest (informational; it may be stale).
	Name string
	// Tag is the tag written in the manifest.
	Tag string
	// Architecture is the manifest's architecture field as written (for example
	// "x86_64"); Manifest.Platform carries the normalised form.
	Architecture string
	// History holds the parsed v1Compatibility entries, base first, one per entry of
	// Manifest.Layers (History[i] describes Layers[i]); adjacent duplicate ids are dropped.
	History []Schema1History
	// Payload is what Manifest.Digest is the sha256 of: the signed JWS payload (the
	// document with its signatures cut out) for a signed manifest, the document itself
	// for an unsigned one. Every field of the model was read from it.
	Payload []byte
	// Signatures describes each verified signature, in document order, a signature
	// repeated byte for byte once (nil when unsigned).
	Signatures []Schema1Signature
}

// Schema1History is one v1Compatibility entry of a schema 1 manifest: the legacy v1
// image JSON of one layer.
type Schema1History struct {
	// ID is the legacy v1 image id (64 lowercase hex digits).
	ID string
	// Parent is the v1 id of the entry below this one; empty for the base.
	Parent string
	// Created is when the layer was created (zero when the entry does not say).
	Created time.Time
	// Author is the entry's author.
	Author string
	// Comment is the entry's comment.
	Comment string
	// CreatedBy is the entry's container_config.Cmd joined with spaces, as Docker
	// writes it into a config's history.
	CreatedBy string
	// Throwaway is the entry's "throwaway" flag.
	Throwaway bool
	// Empty is true when the layer changes nothing: Throwaway, or the blob is
	// EmptyGzipLayer. It equals the Empty flag of the matching Layer.
	Empty bool
	// OS is the entry's "os" field.
	OS string
	// Architecture is the entry's "architecture" field.
	Architecture string
	// Variant is the entry's "variant" field.
	Variant string
	// DockerVersion is the entry's "docker_version" field.
	DockerVersion string
	// V1Compatibility is the entry's v1Compatibility string exactly as the manifest has it.
	V1Compatibility string
}

// Schema1Signature describes one verified libtrust signature of a schema 1 manifest.
// A valid signature proves that the payload was not changed since the key signed it,
// not that the key is trusted.
type Schema1Signature struct {
	// KeyID is the libtrust key id computed from the verifying key (never the jwk's own "kid").
	KeyID string
	// Algorithm is the JWS algorithm: ES256, ES384, ES512, RS256, RS384 or RS512.
	Algorithm string
	// Chain is true when the key came from an x5c certificate chain (whose structure was
	// checked, but whose trust was not) rather than from a jwk.
	Chain bool
}

// MaxSchema1Signatures is how many signatures a signed schema 1 manifest may carry; more
// is a *SignatureError (pullkit.ErrInvalid).
const MaxSchema1Signatures = 16

// Signature check names, as reported in SignatureError.Check.
const (
	checkSignatures      = "signatures"
	checkProtected       = "protected header"
	checkFormatLength    = "formatLength"
	checkPayload         = "payload"
	checkKey             = "key"
	checkSignature       = "signature"
	checkPayloadMismatch = "payload mismatch"
)

// jwsSignature is one entry of a libtrust "pretty JWS" signatures array.
type jwsSignature struct {
	Header    jwsHeader `json:"header"`
	Signature string    `json:"signature"`
	Protected string    `json:"protected"`
}

// jwsHeader is the unprotected header of a libtrust signature.
type jwsHeader struct {
	JWK json.RawMessage `json:"jwk,omitempty"`
	Alg string          `json:"alg"`
	X5C []string        `json:"x5c,omitempty"`
}

// jwkKey holds the members of a JSON Web Key that libtrust writes (kid is ignored).
type jwkKey struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// schema1Document is the part of a schema 1 payload the model is built from.
type schema1Document struct {
	SchemaVersion int    `json:"schemaVersion"`
	Name          string `json:"name"`
	Tag           string `json:"tag"`
	Architecture  string `json:"architecture"`
	FSLayers      []struct {
		BlobSum digest.Digest `json:"blobSum"`
	} `json:"fsLayers"`
	History []struct {
		V1Compatibility string `json:"v1Compatibility"`
	} `json:"history"`
}

// v1Compat is the part of a v1Compatibility entry that parsing needs.
type v1Compat struct {
	ID              string    `json:"id"`
	Parent          string    `json:"parent"`
	Created         time.Time `json:"created"`
	Author          string    `json:"author"`
	Comment         string    `json:"comment"`
	Throwaway       bool      `json:"throwaway"`
	OS              string    `json:"os"`
	Architecture    string    `json:"architecture"`
	Variant         string    `json:"variant"`
	DockerVersion   string    `json:"docker_version"`
	ContainerConfig struct {
		Cmd dockerv1.StrSlice `json:"Cmd"`
	} `json:"container_config"`
}

// parseSchema1 parses a schema 1 manifest, signed when the document has a "signatures"
// member (whatever Content-Type it was served with), unsigned otherwise. Signatures are
// verified and every field is read from the signed payload only.
func parseSchema1(raw []byte) (*Manifest, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		if err == nil {
			err = errors.New("got null")
		}
		return nil, &pullkit.InvalidError{What: MediaTypeDockerSchema1, Reason: "schema 1 document is not a JSON object", Err: err}
	}
	mediaType := MediaTypeDockerSchema1
	payload := raw
	var sigs []Schema1Signature
	if sigJSON, ok := top["signatures"]; ok {
		mediaType = MediaTypeDockerSchema1Signed
		var err error
		if payload, sigs, err = verifySchema1(raw, sigJSON); err != nil {
			return nil, err
		}
	}
	dgst := digest.FromBytes(payload)
	invalid := func(err error, format string, args ...any) error {
		return &pullkit.InvalidError{What: mediaType, Reason: "manifest " + dgst.String() + ": " + fmt.Sprintf(format, args...), Err: err}
	}

	var doc schema1Document
	if err := json.Unmarshal(payload, &doc); err != nil {
		return nil, invalid(err, "cannot decode payload")
	}
	if doc.SchemaVersion != 1 {
		return nil, invalid(nil, "schemaVersion is %d, want 1", doc.SchemaVersion)
	}
	n := len(doc.FSLayers)
	if n != len(doc.History) {
		return nil, invalid(nil, "%d fsLayers but %d history entries, want as many", n, len(doc.History))
	}
	if n == 0 {
		return nil, invalid(nil, "no fsLayers, want at least one")
	}

	// Entries are newest first here, as in the document.
	compat := make([]v1Compat, n)
	for i := range doc.History {
		if err := doc.FSLayers[i].BlobSum.Validate(); err != nil {
			return nil, invalid(err, "fsLayers[%d] blobSum %q is not a valid digest", i, doc.FSLayers[i].BlobSum)
		}
		if err := json.Unmarshal([]byte(doc.History[i].V1Compatibility), &compat[i]); err != nil {
			return nil, invalid(err, "history[%d] v1Compatibility is not a valid v1 image JSON object", i)
		}
		if !isV1ID(compat[i].ID) {
			return nil, invalid(nil, "history[%d] id %q is not 64 lowercase hex digits", i, compat[i].ID)
		}
	}
	if p := compat[n-1].Parent; p != "" {
		return nil, invalid(nil, "base history entry (history[%d]) has parent %q, want none", n-1, p)
	}
	seen := make(map[string]int, n)
	for i := range compat {
		id := compat[i].ID
		if i > 0 && id == compat[i-1].ID {
			continue
		}
		if j, dup := seen[id]; dup {
			return nil, invalid(nil, "v1 id %s appears at history[%d] and again at history[%d], not adjacent", id, j, i)
		}
		seen[id] = i
	}
	drop := make([]bool, n)
	for i := n - 2; i >= 0; i-- {
		if compat[i].ID == compat[i+1].ID {
			drop[i] = true // keep the older of two adjacent duplicates, as docker does
			continue
		}
		if compat[i].Parent != compat[i+1].ID {
			return nil, invalid(nil, "history[%d] has parent %q, want %s (the id of history[%d])", i, compat[i].Parent, compat[i+1].ID, i+1)
		}
	}

	s1 := &Schema1{
		Name:         doc.Name,
		Tag:          doc.Tag,
		Architecture: doc.Architecture,
		Payload:      payload,
		Signatures:   sigs,
	}
	var layers []Layer
	newest := -1
	for i := n - 1; i >= 0; i-- {
		if drop[i] {
			continue
		}
		newest = i
		c := &compat[i]
		blob := doc.FSLayers[i].BlobSum
		empty := c.Throwaway || blob == EmptyGzipLayer
		layers = append(layers, Layer{Digest: blob, MediaType: MediaTypeDockerLayer, Size: -1, Empty: empty})
		s1.History = append(s1.History, Schema1History{
			ID:              c.ID,
			Parent:          c.Parent,
			Created:         c.Created,
			Author:          c.Author,
			Comment:         c.Comment,
			CreatedBy:       strings.Join(c.ContainerConfig.Cmd, " "),
			Throwaway:       c.Throwaway,
			Empty:           empty,
			OS:              c.OS,
			Architecture:    c.Architecture,
			Variant:         c.Variant,
			DockerVersion:   c.DockerVersion,
			V1Compatibility: doc.History[i].V1Compatibility,
		})
	}
	top1 := compat[newest]
	platform := &platforms.Platform{OS: top1.OS, Architecture: normaliseArch(doc.Architecture), Variant: top1.Variant}
	if platform.OS == "" {
		platform.OS = "linux"
	}
	if platform.Architecture == "" {
		platform.Architecture = normaliseArch(top1.Architecture)
	}
	return &Manifest{
		Kind:      KindImage,
		MediaType: mediaType,
		Digest:    dgst,
		Raw:       raw,
		Layers:    layers,
		Platform:  platform,
		Schema1:   s1,
	}, nil
}

// normaliseArch maps the kernel's architecture names that schema 1 manifests sometimes
// carry to the GOARCH names the rest of the ecosystem uses.
func normaliseArch(arch string) string {
	switch arch {
	case "x86_64", "x86-64":
		return "amd64"
	case "aarch64":
		return "arm64"
	}
	return arch
}

// isV1ID reports whether id is a legacy v1 image id: 64 lowercase hex digits.
func isV1ID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// b64urlDecode decodes unpadded base64url, tolerating the padding libtrust also accepts.
func b64urlDecode(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// signedPayloadDigest is the digest (by alg) of the payload a signed schema 1 document's
// first signature says it signs, without verifying anything, or "" when raw is not such a
// document.
func signedPayloadDigest(raw []byte, alg digest.Algorithm) digest.Digest {
	var top struct {
		Signatures []struct {
			Protected string `json:"protected"`
		} `json:"signatures"`
	}
	if json.Unmarshal(raw, &top) != nil || len(top.Signatures) == 0 || !alg.Available() {
		return ""
	}
	protected, err := b64urlDecode(top.Signatures[0].Protected)
	if err != nil {
		return ""
	}
	var prot struct {
		FormatLength int64  `json:"formatLength"`
		FormatTail   string `json:"formatTail"`
	}
	if json.Unmarshal(protected, &prot) != nil || prot.FormatLength < 0 || prot.FormatLength > int64(len(raw)) {
		return ""
	}
	tail, err := b64urlDecode(prot.FormatTail)
	if err != nil {
		return ""
	}
	d := alg.Digester()
	d.Hash().Write(raw[:prot.FormatLength])
	d.Hash().Write(tail)
	return d.Digest()
}

// verifySchema1 verifies every libtrust signature of a signed schema 1 document and
// returns the payload they all sign.
//
// A document carries at most MaxSchema1Signatures signatures (registries write one, a
// re-signing chain a few), and a signature repeated byte for byte is verified, and
// reported, once: each verification hashes the whole payload, so a manifest at the size
// cap made of copies of one signature would otherwise cost tens of CPU-seconds.
func verifySchema1(raw []byte, sigJSON json.RawMessage) ([]byte, []Schema1Signature, error) {
	var entries []json.RawMessage
	if err := json.Unmarshal(sigJSON, &entries); err != nil {
		return nil, nil, &SignatureError{Check: checkSignatures, Err: fmt.Errorf("signatures is not an array of JWS signatures: %w", err)}
	}
	if len(entries) == 0 {
		return nil, nil, &SignatureError{Check: checkSignatures, Err: errors.New("signatures is empty, want at least one")}
	}
	if len(entries) > MaxSchema1Signatures {
		return nil, nil, &SignatureError{Check: checkSignatures, Err: fmt.Errorf("%d signatures, more than the %d a manifest may carry", len(entries), MaxSchema1Signatures)}
	}
	sigs := make([]jwsSignature, 0, len(entries))
	index := make([]int, 0, len(entries)) // each distinct signature's place in the document
	for i, e := range entries {
		if slices.ContainsFunc(entries[:i], func(prev json.RawMessage) bool { return bytes.Equal(prev, e) }) {
			continue
		}
		var sig jwsSignature
		if err := json.Unmarshal(e, &sig); err != nil {
			return nil, nil, &SignatureError{Check: checkSignatures, Index: i, Err: fmt.Errorf("signature is not a JWS signature: %w", err)}
		}
		sigs = append(sigs, sig)
		index = append(index, i)
	}
	var payload []byte
	out := make([]Schema1Signature, 0, len(sigs))
	for k, sig := range sigs {
		i := index[k]
		fail := func(check, keyID string, err error) error {
			return &SignatureError{Check: check, KeyID: keyID, Index: i, Err: err}
		}
		protected, err := b64urlDecode(sig.Protected)
		if err != nil {
			return nil, nil, fail(checkProtected, "", fmt.Errorf("protected header is not base64url: %w", err))
		}
		var prot struct {
			FormatLength json.RawMessage `json:"formatLength"`
			FormatTail   *string         `json:"formatTail"`
		}
		if err := json.Unmarshal(protected, &prot); err != nil {
			return nil, nil, fail(checkProtected, "", fmt.Errorf("protected header is not a JSON object: %w", err))
		}
		if prot.FormatTail == nil {
			return nil, nil, fail(checkProtected, "", errors.New("protected header has no formatTail"))
		}
		tail, err := b64urlDecode(*prot.FormatTail)
		if err != nil {
			return nil, nil, fail(checkProtected, "", fmt.Errorf("formatTail is not base64url: %w", err))
		}
		if len(prot.FormatLength) == 0 {
			return nil, nil, fail(checkFormatLength, "", errors.New("protected header has no formatLength"))
		}
		fl, err := strconv.ParseInt(string(prot.FormatLength), 10, 64)
		if err != nil || fl < 0 || fl > int64(len(raw)) {
			return nil, nil, fail(checkFormatLength, "", fmt.Errorf("formatLength %.40q is not an integer in [0, %d] (the document's length)", prot.FormatLength, len(raw)))
		}
		p := make([]byte, 0, int(fl)+len(tail))
		p = append(append(p, raw[:fl]...), tail...)
		pd := digest.FromBytes(p)
		if k == 0 {
			if t := bytes.TrimLeft(p, " \t\r\n"); len(t) == 0 || t[0] != '{' || !json.Valid(p) {
				return nil, nil, fail(checkPayload, "", fmt.Errorf("payload %s (document[:%d] + formatTail %q) is not a JSON object", pd, fl, tail))
			}
			payload = p
		} else if !bytes.Equal(p, payload) {
			return nil, nil, fail(checkPayloadMismatch, "", fmt.Errorf("payload %s differs from signature 0's payload %s", pd, digest.FromBytes(payload)))
		}

		pub, chain, err := jwsPublicKey(sig.Header)
		if err != nil {
			return nil, nil, fail(checkKey, "", fmt.Errorf("payload %s: %w", pd, err))
		}
		keyID, err := LibtrustKeyID(pub)
		if err != nil {
			return nil, nil, fail(checkKey, "", fmt.Errorf("payload %s: %w", pd, err))
		}
		alg, err := jwsAlgorithmFor(sig.Header.Alg, pub)
		if err != nil {
			return nil, nil, fail(checkKey, keyID, fmt.Errorf("payload %s: %w", pd, err))
		}
		sigBytes, err := b64urlDecode(sig.Signature)
		if err != nil {
			return nil, nil, fail(checkSignature, keyID, fmt.Errorf("payload %s: signature is not base64url: %w", pd, err))
		}
		input := sig.Protected + "." + base64.RawURLEncoding.EncodeToString(p)
		if err := alg.verify(pub, []byte(input), sigBytes); err != nil {
			return nil, nil, fail(checkSignature, keyID, fmt.Errorf("payload %s: %w", pd, err))
		}
		out = append(out, Schema1Signature{KeyID: keyID, Algorithm: alg.name, Chain: chain})
	}
	return payload, out, nil
}

// jwsPublicKey returns the key a signature header names: the leaf of its x5c chain
// when it has one (as libtrust prefers), else its jwk.
func jwsPublicKey(h jwsHeader) (crypto.PublicKey, bool, error) {
	if len(h.X5C) > 0 {
		certs := make([]*x509.Certificate, len(h.X5C))
		for i, s := range h.X5C {
			der, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return nil, true, fmt.Errorf("x5c[%d] is not base64: %w", i, err)
			}
			if certs[i], err = x509.ParseCertificate(der); err != nil {
				return nil, true, fmt.Errorf("x5c[%d]: %w", i, err)
			}
		}
		for i := 0; i+1 < len(certs); i++ {
			if !bytes.Equal(certs[i].RawIssuer, certs[i+1].RawSubject) {
				return nil, true, fmt.Errorf("x5c[%d] issuer %q is not x5c[%d] subject %q, want a chain", i, certs[i].Issuer, i+1, certs[i+1].Subject)
			}
		}
		switch pub := certs[0].PublicKey.(type) {
		case *ecdsa.PublicKey, *rsa.PublicKey:
			return pub, true, nil
		default:
			return nil, true, fmt.Errorf("x5c[0] has a %T key, want EC or RSA", pub)
		}
	}
	if len(h.JWK) == 0 || string(h.JWK) == "null" {
		return nil, false, errors.New("header has neither jwk nor x5c")
	}
	var k jwkKey
	if err := json.Unmarshal(h.JWK, &k); err != nil {
		return nil, false, fmt.Errorf("jwk: %w", err)
	}
	switch k.Kty {
	case "EC":
		curve, size := curveByName(k.Crv)
		if curve == nil {
			return nil, false, fmt.Errorf("jwk crv %q is not P-256, P-384 or P-521", k.Crv)
		}
		x, errX := b64urlDecode(k.X)
		y, errY := b64urlDecode(k.Y)
		if errX != nil || errY != nil || len(x) > size || len(y) > size || len(x) == 0 || len(y) == 0 {
			return nil, false, fmt.Errorf("jwk %s x/y are not base64url coordinates of at most %d bytes", k.Crv, size)
		}
		point := make([]byte, 1+2*size)
		point[0] = 4
		copy(point[1+size-len(x):1+size], x)
		copy(point[1+2*size-len(y):], y)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return nil, false, fmt.Errorf("jwk %s point: %w", k.Crv, err)
		}
		return pub, false, nil
	case "RSA":
		n, errN := b64urlDecode(k.N)
		e, errE := b64urlDecode(k.E)
		if errN != nil || errE != nil || len(e) == 0 || len(e) > 4 {
			return nil, false, errors.New("jwk RSA n/e are not base64url big-endian integers (e at most 4 bytes)")
		}
		var exp int64
		for _, b := range e {
			exp = exp<<8 | int64(b)
		}
		mod := new(big.Int).SetBytes(n)
		if bits := mod.BitLen(); bits < 1024 || bits > 16384 || exp < 3 || exp&1 == 0 || exp > 1<<31-1 {
			return nil, false, fmt.Errorf("jwk RSA key (%d bits, e=%d) is not usable, want 1024 to 16384 bits and an odd e >= 3", bits, exp)
		}
		return &rsa.PublicKey{N: mod, E: int(exp)}, false, nil
	default:
		return nil, false, fmt.Errorf("jwk kty %q is not EC or RSA", k.Kty)
	}
}

// curveByName returns the NIST curve a jwk "crv" names and its coordinate size in bytes.
func curveByName(name string) (elliptic.Curve, int) {
	switch name {
	case "P-256":
		return elliptic.P256(), 32
	case "P-384":
		return elliptic.P384(), 48
	case "P-521":
		return elliptic.P521(), 66
	}
	return nil, 0
}

// jwsAlgorithm is one of the JWS algorithms libtrust signs with.
type jwsAlgorithm struct {
	name  string
	hash  crypto.Hash
	curve string // "" for RSA
}

var jwsAlgorithms = []jwsAlgorithm{
	{"ES256", crypto.SHA256, "P-256"},
	{"ES384", crypto.SHA384, "P-384"},
	{"ES512", crypto.SHA512, "P-521"},
	{"RS256", crypto.SHA256, ""},
	{"RS384", crypto.SHA384, ""},
	{"RS512", crypto.SHA512, ""},
}

// jwsAlgorithmFor returns the algorithm named alg, checking that pub can verify it.
func jwsAlgorithmFor(alg string, pub crypto.PublicKey) (jwsAlgorithm, error) {
	for _, a := range jwsAlgorithms {
		if a.name != alg {
			continue
		}
		switch k := pub.(type) {
		case *ecdsa.PublicKey:
			if a.curve == "" {
				return a, fmt.Errorf("alg %s needs an RSA key, the key is EC %s", alg, k.Curve.Params().Name)
			}
			if k.Curve.Params().Name != a.curve {
				return a, fmt.Errorf("alg %s needs an EC %s key, the key is EC %s", alg, a.curve, k.Curve.Params().Name)
			}
		case *rsa.PublicKey:
			if a.curve != "" {
				return a, fmt.Errorf("alg %s needs an EC %s key, the key is RSA", alg, a.curve)
			}
		default:
			return a, fmt.Errorf("unsupported key type %T", pub)
		}
		return a, nil
	}
	return jwsAlgorithm{}, fmt.Errorf("alg %q is not one of ES256, ES384, ES512, RS256, RS384, RS512", alg)
}

// digestOf hashes input with the algorithm's hash.
func (a jwsAlgorithm) digestOf(input []byte) []byte {
	switch a.hash {
	case crypto.SHA384:
		h := sha512.Sum384(input)
		return h[:]
	case crypto.SHA512:
		h := sha512.Sum512(input)
		return h[:]
	default:
		h := sha256.Sum256(input)
		return h[:]
	}
}

// verify checks a JWS signature (r||s for EC, PKCS #1 v1.5 for RSA) over input.
func (a jwsAlgorithm) verify(pub crypto.PublicKey, input, sig []byte) error {
	h := a.digestOf(input)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return fmt.Errorf("%s signature is %d bytes, want %d", a.name, len(sig), 2*size)
		}
		r := new(big.Int).SetBytes(sig[:size])
		s := new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(k, h, r, s) {
			return fmt.Errorf("%s signature does not verify", a.name)
		}
		return nil
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(k, a.hash, h, sig); err != nil {
			return fmt.Errorf("%s signature does not verify: %w", a.name, err)
		}
		return nil
	}
	return fmt.Errorf("unsupported key type %T", pub)
}

// LibtrustKeyID returns the libtrust key id of a public key, as Docker prints it and as
// schema 1 jwk headers carry it in "kid": the sha256 of the key's DER PKIX encoding,
// truncated to 240 bits, base32-encoded in 12 groups of 4 joined by ':'.
func LibtrustKeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("libtrust key id: %w", err)
	}
	sum := sha256.Sum256(der)
	s := base32.StdEncoding.EncodeToString(sum[:30]) // 240 bits: 48 characters, no padding
	groups := make([]string, 0, 12)
	for i := 0; i < len(s); i += 4 {
		groups = append(groups, s[i:i+4])
	}
	return strings.Join(groups, ":"), nil
}

// SynthesizeConfig synthesises the Docker image config of a schema 1 image the way Docker and
// containers/image do when they convert schema 1: the newest v1Compatibility without
// id, parent, Size, parent_id, layer_id and throwaway, plus "rootfs" (diffIDs, one per
// layer not marked throwaway, base first) and "history" (one entry per layer, base first,
// with empty_layer set for throwaway layers). Only the throwaway flag counts here, as for
// docker and skopeo: an unflagged empty-gzip layer (hello-world 2015's CMD step) is
// Empty in the model but still has a diffID, so the config and image ID match theirs. Entries written by Docker older than 1.8.3 are
// first re-encoded through the v1 image structure, as both do. The output is
// deterministic (keys sorted).
func (s *Schema1) SynthesizeConfig(diffIDs []digest.Digest) ([]byte, error) {
	if s == nil || len(s.History) == 0 {
		return nil, &pullkit.InvalidError{What: MediaTypeDockerSchema1, Reason: "schema 1 config: no history, want at least one entry"}
	}
	invalid := func(err error, format string, args ...any) error {
		return &pullkit.InvalidError{What: MediaTypeDockerSchema1, Reason: "schema 1 config for v1 image " + s.History[len(s.History)-1].ID + ": " + fmt.Sprintf(format, args...), Err: err}
	}
	kept := 0
	for _, h := range s.History {
		if !h.Throwaway {
			kept++
		}
	}
	if len(diffIDs) != kept {
		return nil, invalid(nil, "got %d diffIDs, want %d (one per layer not marked throwaway)", len(diffIDs), kept)
	}
	for i, d := range diffIDs {
		if err := d.Validate(); err != nil {
			return nil, invalid(err, "diffIDs[%d] %q is not a valid digest", i, d)
		}
	}
	newest := s.History[len(s.History)-1]
	conf := []byte(newest.V1Compatibility)
	if newest.DockerVersion != "" && dockerVersionLess(newest.DockerVersion, "1.8.3") {
		var img dockerv1.Image
		if err := json.Unmarshal(conf, &img); err != nil {
			return nil, invalid(err, "cannot decode v1Compatibility of docker %s", newest.DockerVersion)
		}
		var err error
		if conf, err = json.Marshal(&img); err != nil {
			return nil, invalid(err, "cannot re-encode v1Compatibility")
		}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(conf, &obj); err != nil || obj == nil {
		return nil, invalid(err, "v1Compatibility is not a JSON object")
	}
	for _, k := range []string{"id", "parent", "Size", "parent_id", "layer_id", "throwaway"} {
		delete(obj, k)
	}
	type rootFS struct {
		Type    string          `json:"type"`
		DiffIDs []digest.Digest `json:"diff_ids,omitempty"`
	}
	type historyEntry struct {
		Created    time.Time `json:"created"`
		Author     string    `json:"author,omitempty"`
		CreatedBy  string    `json:"created_by,omitempty"`
		Comment    string    `json:"comment,omitempty"`
		EmptyLayer bool      `json:"empty_layer,omitempty"`
	}
	hist := make([]historyEntry, len(s.History))
	for i, h := range s.History {
		hist[i] = historyEntry{Created: h.Created, Author: h.Author, CreatedBy: h.CreatedBy, Comment: h.Comment, EmptyLayer: h.Throwaway}
	}
	rfs, err := json.Marshal(rootFS{Type: "layers", DiffIDs: diffIDs})
	if err != nil {
		return nil, invalid(err, "cannot encode rootfs")
	}
	hj, err := json.Marshal(hist)
	if err != nil {
		return nil, invalid(err, "cannot encode history")
	}
	obj["rootfs"] = rfs
	obj["history"] = hj
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, invalid(err, "cannot encode config")
	}
	return out, nil
}

// dockerVersionLess compares dotted versions the way Docker's API version helper does:
// numerically, part by part, a non-numeric part counting as 0.
func dockerVersionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}
