package manifest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/pullkit/pullkit"
)

// SignSchema1 signs a schema 1 manifest payload with key and returns the signed document
// in libtrust's "pretty JWS" form, as a registry or containers/image writes it: the
// payload up to its closing brace, then a "signatures" member holding one signature
// whose protected header carries formatLength, formatTail and the signing time. The
// indentation of the payload is kept (compact payloads stay compact), so the canonical
// digest of the result is sha256(payload).
//
// payload must be a JSON object with at least one member and no "signatures" member.
// key must be an EC key on P-256, P-384 or P-521 (signing ES256, ES384 or ES512) or an
// RSA key (signing RS256, as libtrust does). With a nil chain the header carries the
// public key as a jwk; otherwise it carries the chain as x5c, and chain[0] must hold
// key's public key.
func SignSchema1(payload []byte, key crypto.Signer, chain []*x509.Certificate) ([]byte, error) {
	return signSchema1(payload, key, chain, "", time.Now())
}

// jwkEC and jwkRSA are the jwk members libtrust writes, in its (sorted) order.
type jwkEC struct {
	Crv string `json:"crv"`
	Kid string `json:"kid"`
	Kty string `json:"kty"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

type jwkRSA struct {
	E   string `json:"e"`
	Kid string `json:"kid"`
	Kty string `json:"kty"`
	N   string `json:"n"`
}

// signSchema1 is SignSchema1 with the algorithm ("" for the key's default) and the
// signing time chosen by the caller.
func signSchema1(payload []byte, key crypto.Signer, chain []*x509.Certificate, alg string, now time.Time) ([]byte, error) {
	badPayload := func(format string, args ...any) error {
		return &pullkit.InvalidError{What: MediaTypeDockerSchema1, Reason: "cannot sign schema 1 payload: " + fmt.Sprintf(format, args...)}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err != nil || obj == nil {
		return nil, &pullkit.InvalidError{What: MediaTypeDockerSchema1, Reason: "cannot sign schema 1 payload: not a JSON object", Err: err}
	}
	if len(obj) == 0 {
		return nil, badPayload("the JSON object is empty, want at least one member")
	}
	if _, ok := obj["signatures"]; ok {
		return nil, badPayload(`payload already has a "signatures" member`)
	}
	if key == nil {
		return nil, &pullkit.UnsupportedError{What: MediaTypeDockerSchema1Signed, Reason: "no signing key"}
	}
	notSpace := func(r rune) bool { return !strings.ContainsRune(" \t\r\n", r) }
	closing := bytes.LastIndexFunc(payload, notSpace) // the object's '}' (the payload is valid JSON)
	formatLength := bytes.LastIndexFunc(payload[:closing], notSpace) + 1
	formatTail := payload[formatLength:]

	pub := key.Public()
	keyID, err := LibtrustKeyID(pub)
	if err != nil {
		return nil, &pullkit.UnsupportedError{What: MediaTypeDockerSchema1Signed, Reason: fmt.Sprintf("signing key %T: %v", pub, err)}
	}
	var jwk any
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		point, err := k.Bytes()
		if err != nil {
			return nil, &pullkit.UnsupportedError{What: MediaTypeDockerSchema1Signed, Reason: fmt.Sprintf("signing key %s: %v", keyID, err)}
		}
		size := (len(point) - 1) / 2
		if alg == "" {
			alg = map[int]string{32: "ES256", 48: "ES384", 66: "ES512"}[size]
		}
		jwk = jwkEC{Crv: k.Curve.Params().Name, Kid: keyID, Kty: "EC",
			X: base64.RawURLEncoding.EncodeToString(point[1 : 1+size]),
			Y: base64.RawURLEncoding.EncodeToString(point[1+size:])}
	case *rsa.PublicKey:
		if alg == "" {
			alg = "RS256"
		}
		jwk = jwkRSA{E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()), Kid: keyID, Kty: "RSA",
			N: base64.RawURLEncoding.EncodeToString(k.N.Bytes())}
	default:
		return nil, &pullkit.UnsupportedError{What: MediaTypeDockerSchema1Signed, Reason: fmt.Sprintf("signing key %s is %T, want EC (P-256, P-384, P-521) or RSA", keyID, pub)}
	}
	a, err := jwsAlgorithmFor(alg, pub)
	if err != nil {
		return nil, &pullkit.UnsupportedError{What: MediaTypeDockerSchema1Signed, Reason: fmt.Sprintf("signing key %s: %v", keyID, err)}
	}

	header := jwsHeader{Alg: a.name}
	if len(chain) == 0 {
		if header.JWK, err = json.Marshal(jwk); err != nil {
			return nil, fmt.Errorf("schema 1 signing: encoding jwk of key %s: %w", keyID, err)
		}
	} else {
		for i, c := range chain {
			if c == nil {
				return nil, &pullkit.InvalidError{What: MediaTypeDockerSchema1Signed, Reason: fmt.Sprintf("cannot sign schema 1 payload: chain[%d] is nil", i)}
			}
			header.X5C = append(header.X5C, base64.StdEncoding.EncodeToString(c.Raw))
		}
		if leaf, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !leaf.Equal(pub) {
			return nil, &pullkit.InvalidError{What: MediaTypeDockerSchema1Signed, Reason: fmt.Sprintf("cannot sign schema 1 payload: chain[0] does not hold the signing key %s", keyID)}
		}
	}

	protectedJSON, err := json.Marshal(struct {
		FormatLength int    `json:"formatLength"`
		FormatTail   string `json:"formatTail"`
		Time         string `json:"time"`
	}{formatLength, base64.RawURLEncoding.EncodeToString(formatTail), now.UTC().Format(time.RFC3339)})
	if err != nil {
		return nil, fmt.Errorf("schema 1 signing: encoding protected header: %w", err)
	}
	protected := base64.RawURLEncoding.EncodeToString(protectedJSON)
	input := protected + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := key.Sign(rand.Reader, a.digestOf([]byte(input)), a.hash)
	if err != nil {
		return nil, fmt.Errorf("schema 1 signing with key %s (%s) failed: %w", keyID, a.name, err)
	}
	if k, ok := pub.(*ecdsa.PublicKey); ok {
		// crypto.Signer returns ASN.1 for ECDSA; JWS wants r||s, each of the curve's size.
		var rs struct{ R, S *big.Int }
		if rest, err := asn1.Unmarshal(sig, &rs); err != nil || len(rest) != 0 || rs.R == nil || rs.S == nil {
			return nil, fmt.Errorf("schema 1 signing with key %s: signer returned a malformed ECDSA signature: %w", keyID, err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		if rs.R.Sign() <= 0 || rs.S.Sign() <= 0 || rs.R.BitLen() > 8*size || rs.S.BitLen() > 8*size {
			return nil, fmt.Errorf("schema 1 signing with key %s: signer returned an out-of-range ECDSA signature", keyID)
		}
		sig = make([]byte, 2*size)
		rs.R.FillBytes(sig[:size])
		rs.S.FillBytes(sig[size:])
	}
	sigs := []jwsSignature{{Header: header, Signature: base64.RawURLEncoding.EncodeToString(sig), Protected: protected}}

	// libtrust keeps the payload's indentation: "{\n<indent>\"key\"..." means pretty.
	indent := ""
	if len(payload) > 2 && payload[0] == '{' && payload[1] == '\n' {
		if q := bytes.IndexByte(payload[1:], '"'); q > 0 {
			indent = string(payload[2 : q+1])
		}
	}
	var sigJSON []byte
	if indent != "" {
		sigJSON, err = json.MarshalIndent(sigs, indent, indent)
	} else {
		sigJSON, err = json.Marshal(sigs)
	}
	if err != nil {
		return nil, fmt.Errorf("schema 1 signing: encoding signatures: %w", err)
	}
	var buf bytes.Buffer
	buf.Grow(formatLength + len(sigJSON) + len(indent) + 20)
	buf.Write(payload[:formatLength])
	if indent != "" {
		buf.WriteString(",\n" + indent + `"signatures": `)
		buf.Write(sigJSON)
		buf.WriteString("\n}")
	} else {
		buf.WriteString(`,"signatures":`)
		buf.Write(sigJSON)
		buf.WriteString("}")
	}
	return buf.Bytes(), nil
}
