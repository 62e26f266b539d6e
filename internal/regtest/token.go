package regtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TokenServer is a bearer-token issuer in httptest for a registry started WithToken:
// it hands ES256 JWTs (x5c-signed by a throwaway CA the registry trusts) granting the
// scopes asked for, to clients that present User / Password (or to anyone, when
// Anonymous is set). It records every scope requested.
type TokenServer struct {
	// Service and Issuer are the values the registry is configured with.
	Service, Issuer string
	// CertPEM is the certificate the registry trusts for tokens.
	CertPEM []byte
	// Anonymous makes the server issue tokens without credentials.
	Anonymous bool

	key  *ecdsa.PrivateKey
	cert []byte
	srv  *httptest.Server

	mu       sync.Mutex
	scopes   []string
	requests int
}

// NewTokenServer starts a token server for the test.
func NewTokenServer(t testing.TB) *TokenServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "regtest token issuer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ts := &TokenServer{
		Service: "regtest-registry",
		Issuer:  "regtest-issuer",
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:     key,
		cert:    der,
	}
	ts.srv = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.srv.Close)
	return ts
}

// Realm is the token endpoint's URL. It names the host "localhost", not 127.0.0.1:
// go-containerregistry refuses realms on private or loopback IP literals other than
// the registry's own host (an SSRF guard).
func (ts *TokenServer) Realm() string {
	return "http://localhost:" + strconv.Itoa(ts.srv.Listener.Addr().(*net.TCPAddr).Port) + "/token"
}

// Scopes returns every scope requested so far.
func (ts *TokenServer) Scopes() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.scopes...)
}

// Requests returns how many token requests were answered (granted or not).
func (ts *TokenServer) Requests() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.requests
}

func (ts *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/token" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	ts.mu.Lock()
	ts.requests++
	ts.scopes = append(ts.scopes, q["scope"]...)
	ts.mu.Unlock()
	user, pass, ok := r.BasicAuth()
	subject := user
	switch {
	case ok && user == User && pass == Password:
	case !ok && ts.Anonymous:
		subject = ""
	default:
		w.Header().Set("WWW-Authenticate", `Basic realm="regtest-token"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
		return
	}
	if q.Get("service") != ts.Service {
		http.Error(w, `{"errors":[{"code":"DENIED","message":"unknown service"}]}`, http.StatusBadRequest)
		return
	}
	type access struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	}
	grants := []access{}
	for _, scope := range q["scope"] {
		for _, s := range strings.Fields(scope) {
			parts := strings.Split(s, ":")
			if len(parts) < 3 {
				continue
			}
			grants = append(grants, access{
				Type:    parts[0],
				Name:    strings.Join(parts[1:len(parts)-1], ":"),
				Actions: strings.Split(parts[len(parts)-1], ","),
			})
		}
	}
	now := time.Now()
	token, err := ts.sign(map[string]any{
		"iss":    ts.Issuer,
		"sub":    subject,
		"aud":    ts.Service,
		"exp":    now.Add(5 * time.Minute).Unix(),
		"nbf":    now.Add(-time.Minute).Unix(),
		"iat":    now.Unix(),
		"jti":    rand.Text(),
		"access": grants,
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": token, "expires_in": 300, "issued_at": now.UTC().Format(time.RFC3339)})
}

// sign makes a compact ES256 JWS with the certificate in x5c.
func (ts *TokenServer) sign(claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]any{
		"typ": "JWT",
		"alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(ts.cert)},
	})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}
