package policy_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/trust/policy"
)

// fedoraPolicy is the shape of the policy.json distributions ship: GPG for Red Hat's
// registries, anything elsewhere.
const fedoraPolicy = `{
    "default": [{"type": "insecureAcceptAnything"}],
    "transports": {
        "docker": {
            "registry.access.redhat.com": [{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release", "/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-beta"]}],
            "registry.redhat.io": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release"}]
        },
        "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}
    }
}`

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, doc, err string
	}{
		{"fedora", fedoraPolicy, ""},
		{"sigstore keys", `{"default":[{"type":"reject"}],"transports":{"docker":{"quay.io/org":[{"type":"sigstoreSigned","keyPaths":["/a.pub","/b.pub"],"signedIdentity":{"type":"matchRepository"}}]}}}`, ""},
		{"fulcio", `{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"/ca.pem","oidcIssuer":"https://o","subjectEmail":"a@b"},"rekorPublicKeyPath":"/r.pub"}]}`, ""},
		{"pki", `{"default":[{"type":"sigstoreSigned","pki":{"caRootsPath":"/ca.pem","subjectHostname":"h.example"}}]}`, ""},
		{"wildcard and remap", `{"default":[{"type":"reject"}],"transports":{"docker":{"*.example.com":[{"type":"sigstoreSigned","keyData":"YQ==","signedIdentity":{"type":"remapIdentity","prefix":"mirror.example.com/team","signedPrefix":"docker.io/team"}}]}}}`, ""},
		{"exactReference", `{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"exactReference","dockerReference":"docker.io/library/busybox:1"}}]}`, ""},
		{"empty default", `{"default":[]}`, `"default"`},
		{"no default", `{}`, `"default"`},
		{"unknown field", `{"default":[{"type":"reject"}],"defualt":[]}`, "unknown field"},
		{"unknown requirement field", `{"default":[{"type":"reject","keyPath":"/k"}]}`, "takes no other fields"},
		{"unknown type", `{"default":[{"type":"signedByMagic"}]}`, "unknown requirement type"},
		{"two key sources", `{"default":[{"type":"sigstoreSigned","keyPath":"/k","keyData":"YQ=="}]}`, "at most one of"},
		{"keys and fulcio", `{"default":[{"type":"sigstoreSigned","keyPath":"/k","fulcio":{"caPath":"/c","oidcIssuer":"i","subjectEmail":"e"},"rekorPublicKeyPath":"/r"}]}`, "only one of"},
		{"fulcio without rekor", `{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"/c","oidcIssuer":"i","subjectEmail":"e"}}]}`, "Rekor"},
		{"fulcio without email", `{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"/c","oidcIssuer":"i"},"rekorPublicKeyPath":"/r"}]}`, "subjectEmail"},
		{"no key at all", `{"default":[{"type":"sigstoreSigned"}]}`, "needs one of"},
		{"bad scope", `{"default":[{"type":"reject"}],"transports":{"docker":{"https://quay.io":[{"type":"reject"}]}}}`, "scope"},
		{"bad identity", `{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"matchAnything"}}]}`, "unknown signedIdentity type"},
		{"exactReference without tag", `{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"exactReference","dockerReference":"busybox"}}]}`, "tag or digest"},
		{"trailing data", `{"default":[{"type":"reject"}]} {}`, "data after"},
		{"not json", `default: reject`, "not a containers-policy.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := policy.Parse([]byte(tc.doc))
			if tc.err == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if !errors.Is(err, pullkit.ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want ErrInvalid saying %q", err, tc.err)
			}
		})
	}
}

// TestNewVerifierKeys: keys are read when the verifier is built; a missing or bad key
// file is an error then, naming the requirement.
func TestNewVerifierKeys(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t)
	good := filepath.Join(dir, "k.pub")
	if err := os.WriteFile(good, k.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.pub")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{good: "", bad: "public key 1", filepath.Join(dir, "missing"): "no such file"} {
		p, err := policy.Parse([]byte(`{"default":[{"type":"sigstoreSigned","keyPath":"` + path + `"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		_, err = policy.NewVerifier(p)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "default, requirement 1")) {
			t.Errorf("%s: err = %v, want %q", filepath.Base(path), err, want)
		}
	}
}

// TestScopes: the most specific scope wins, down to *.domain, the transport default and
// the default.
func TestScopes(t *testing.T) {
	p, err := policy.Parse([]byte(`{"default":[{"type":"reject"}],"transports":{"docker":{
		"registry.example.com/team/app:v1":[{"type":"insecureAcceptAnything"}],
		"registry.example.com/team/app":[{"type":"reject"}],
		"registry.example.com/team":[{"type":"insecureAcceptAnything"}],
		"registry.example.com":[{"type":"reject"}],
		"*.example.com":[{"type":"insecureAcceptAnything"}],
		"docker.io/library":[{"type":"insecureAcceptAnything"}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]string{
		"registry.example.com/team/app:v1":   "registry.example.com/team/app:v1",
		"registry.example.com/team/app:v2":   "registry.example.com/team/app",
		"registry.example.com/team/other:v1": "registry.example.com/team",
		"registry.example.com/solo:v1":       "registry.example.com",
		"other.example.com/x:v1":             "*.example.com",
		"a.b.example.com:5000/x:v1":          "*.example.com",
		"docker.io/library/busybox:1":        "docker.io/library",
		"quay.io/x:v1":                       "default",
	} {
		if got := policy.ScopeFor(p, ref); got != want {
			t.Errorf("%s: scope %q, want %q", ref, got, want)
		}
	}
}
