package hosts

import (
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The examples of containerd's docs/hosts.md, read as they are.
const (
	docsSimple = `server = "https://docker.io"

[host."https://registry-1.docker.io"]
  capabilities = ["pull", "resolve"]
`
	docsLocalMirror = `server = "https://registry-1.docker.io"    # Exclude this to not use upstream

[host."https://public-mirror.example.com"]
  capabilities = ["pull"]                  # Requires less trust, won't resolve tag to digest from this host
[host."https://docker-mirror.internal"]
  capabilities = ["pull", "resolve"]
  ca = "docker-mirror.crt"                 # Or absolute path /etc/containerd/certs.d/docker.io/docker-mirror.crt
`
	docsDefaultMirror = `[host."https://registry.example.com"]
  capabilities = ["pull", "resolve"]
`
	docsOnlyMirror = `server = "https://registry.example.com"
`
	docsBypassTLS = `server = "https://registry-1.docker.io"

[host."http://192.168.31.250:5000"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
`
	docsFields = `[host."https://mirror.registry"]
  capabilities = ["pull"]
  ca = "/etc/certs/mirror.pem"
  skip_verify = false
  [host."https://mirror.registry".header]
    x-custom-2 = ["value1", "value2"]

[host."https://mirror-bak.registry/us"]
  capabilities = ["pull"]
  skip_verify = true

[host."http://mirror.registry"]
  capabilities = ["pull"]

[host."https://test-1.registry"]
  capabilities = ["pull", "resolve", "push"]
  ca = ["/etc/certs/test-1-ca.pem", "/etc/certs/special.pem"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"],["/etc/certs/client.pem", ""]]

[host."https://test-2.registry"]
  client = "/etc/certs/client.pem"

[host."https://test-3.registry"]
  client = ["/etc/certs/client-1.pem", "/etc/certs/client-2.pem"]

[host."https://non-compliant-mirror.registry/v2/upstream"]
  capabilities = ["pull"]
  override_path = true
`
	docsTopLevel = `server = "https://docker.io"
capabilities =  ["pull", "resolve", "push"]
ca = ["/etc/certs/test-1-ca.pem", "/etc/certs/special.pem"]
client = [["/etc/certs/client.cert", "/etc/certs/client.key"],["/etc/certs/client.pem", ""]]
skip_verify = false
override_path = false
dial_timeout = "1s"

[header]
  x-custom-1 = "custom header"
  x-custom-1-2 = "another custom header"
`
	docsNested = `[host."http://mirror.registry"]
  capabilities = ["pull"]
  [host."http://double-mirror.registry"]
    capabilities = ["pull"]
`
)

// short is what a test checks of a Host.
type short struct {
	URL    string
	Caps   string
	Server bool
}

func brief(c *Config) []short {
	var out []short
	for _, h := range c.Hosts {
		out = append(out, short{URL: h.Scheme + "://" + h.Host + h.Path, Caps: h.Capabilities.String(), Server: h.Server})
	}
	return out
}

func TestParseDocsExamples(t *testing.T) {
	f := false
	tr := true
	for _, tc := range []struct {
		name  string
		toml  string
		want  []short
		check func(t *testing.T, c *Config)
	}{
		{"simple default host config for docker", docsSimple, []short{
			{"https://registry-1.docker.io/v2", "pull,resolve", false},
			{"https://docker.io/v2", "pull,resolve,push,referrers", true}}, nil},
		{"local mirror for docker", docsLocalMirror, []short{
			{"https://public-mirror.example.com/v2", "pull", false},
			{"https://docker-mirror.internal/v2", "pull,resolve", false},
			{"https://registry-1.docker.io/v2", "pull,resolve,push,referrers", true}},
			func(t *testing.T, c *Config) {
				if got := c.Hosts[1].CA; len(got) != 1 || got[0] != filepath.Join("/etc/containerd/certs.d/docker.io", "docker-mirror.crt") {
					t.Errorf("relative ca = %v, want it under the file's directory", got)
				}
			}},
		{"default mirror for all registries", docsDefaultMirror, []short{
			{"https://registry.example.com/v2", "pull,resolve", false},
			{"https://" + "/v2", "pull,resolve,push,referrers", true}}, nil},
		{"only the mirror", docsOnlyMirror, []short{{"https://registry.example.com/v2", "pull,resolve,push,referrers", true}}, nil},
		{"bypass TLS verification", docsBypassTLS, []short{
			{"http://192.168.31.250:5000/v2", "pull,resolve,push", false},
			{"https://registry-1.docker.io/v2", "pull,resolve,push,referrers", true}},
			func(t *testing.T, c *Config) {
				if c.Hosts[0].SkipVerify == nil || !*c.Hosts[0].SkipVerify {
					t.Error("skip_verify not read")
				}
			}},
		{"every host field", docsFields, []short{
			{"https://mirror.registry/v2", "pull", false},
			{"https://mirror-bak.registry/us/v2", "pull", false},
			{"http://mirror.registry/v2", "pull", false},
			{"https://test-1.registry/v2", "pull,resolve,push", false},
			{"https://test-2.registry/v2", "pull,resolve,push,referrers", false},
			{"https://test-3.registry/v2", "pull,resolve,push,referrers", false},
			{"https://non-compliant-mirror.registry/v2/upstream", "pull", false},
			{"https://" + "/v2", "pull,resolve,push,referrers", true}},
			func(t *testing.T, c *Config) {
				h := c.Hosts[0]
				if !reflect.DeepEqual(h.Header, http.Header{"X-Custom-2": {"value1", "value2"}}) || !reflect.DeepEqual(h.CA, []string{"/etc/certs/mirror.pem"}) || h.SkipVerify == nil || *h.SkipVerify != f {
					t.Errorf("mirror.registry = %+v", h)
				}
				if want := [][2]string{{"/etc/certs/client.cert", "/etc/certs/client.key"}, {"/etc/certs/client.pem", ""}}; !reflect.DeepEqual(c.Hosts[3].Client, want) {
					t.Errorf("client pairs = %v, want %v", c.Hosts[3].Client, want)
				}
				if want := [][2]string{{"/etc/certs/client.pem", ""}}; !reflect.DeepEqual(c.Hosts[4].Client, want) {
					t.Errorf("client path = %v", c.Hosts[4].Client)
				}
				if want := [][2]string{{"/etc/certs/client-1.pem", ""}, {"/etc/certs/client-2.pem", ""}}; !reflect.DeepEqual(c.Hosts[5].Client, want) {
					t.Errorf("client paths = %v", c.Hosts[5].Client)
				}
				if c.Hosts[1].SkipVerify == nil || *c.Hosts[1].SkipVerify != tr {
					t.Error("mirror-bak skip_verify not read")
				}
			}},
		{"top-level fields", docsTopLevel, []short{{"https://docker.io/v2", "pull,resolve,push", true}},
			func(t *testing.T, c *Config) {
				h := c.Hosts[0]
				if h.DialTimeout != time.Second || len(h.CA) != 2 || len(h.Client) != 2 ||
					!reflect.DeepEqual(h.Header, http.Header{"X-Custom-1": {"custom header"}, "X-Custom-1-2": {"another custom header"}}) {
					t.Errorf("server = %+v", h)
				}
			}},
		{"nested tables are two hosts (TOML does not nest by indentation)", docsNested, []short{
			{"http://mirror.registry/v2", "pull", false},
			{"http://double-mirror.registry/v2", "pull", false},
			{"https://" + "/v2", "pull,resolve,push,referrers", true}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("/etc/containerd/certs.d/docker.io", []byte(tc.toml))
			if err != nil {
				t.Fatal(err)
			}
			if got := brief(c); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("hosts\n got %+v\nwant %+v", got, tc.want)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	for name, toml := range map[string]string{
		"unknown capability": "[host.\"https://m\"]\ncapabilities = [\"fly\"]\n",
		"bad dial_timeout":   "dial_timeout = \"soon\"\n",
		"ca not a path":      "ca = 3\n",
		"client pair of 3":   "client = [[\"a\", \"b\", \"c\"]]\n",
		"header value type":  "[header]\nx = 3\n",
		"header newline":     "[header]\nx = \"a\\r\\nInjected: yes\"\n",
		"server scheme":      "server = \"ftp://x\"\n",
		"server with query":  "server = \"https://x/?a=b\"\n",
		"not TOML":           "server = \n",
	} {
		if _, err := Parse("/d", []byte(toml)); err == nil {
			t.Errorf("%s: parsed %q", name, toml)
		}
	}
}

func TestDirAndCerts(t *testing.T) {
	root := t.TempDir()
	mk := func(dir string, files ...string) {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(root, dir, f), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("reg.example_5000_")
	mk("reg.example:5000")
	mk("other.example:5000", "ca.crt", "client.cert", "client.key", "lone.cert", "notes.txt")
	mk(Default)
	for host, want := range map[string]string{
		"reg.example:5000":   "reg.example_5000_",
		"other.example:5000": "other.example:5000",
		"docker.io":          Default,
		"../etc":             Default,
	} {
		got, err := Dir(root, host)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("Dir(%s) = %q, %v; want %s", host, got, err, want)
		}
	}
	c, err := Load(root, "other.example:5000")
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(root, "other.example:5000")
	h := c.Hosts[0]
	if c.File != "" || !h.Server || h.Host != "" || !reflect.DeepEqual(h.CA, []string{filepath.Join(d, "ca.crt")}) ||
		!reflect.DeepEqual(h.Client, [][2]string{{filepath.Join(d, "client.cert"), filepath.Join(d, "client.key")}, {filepath.Join(d, "lone.cert"), ""}}) {
		t.Errorf("certs.d = %+v", c)
	}
	if !strings.Contains(h.Entry, "certificate files") {
		t.Errorf("entry = %q", h.Entry)
	}
	empty := t.TempDir()
	if c, err := Load(empty, "x.example"); c != nil || err != nil {
		t.Errorf("no directory: %v, %v", c, err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{docsSimple, docsLocalMirror, docsDefaultMirror, docsOnlyMirror, docsBypassTLS, docsFields, docsTopLevel, docsNested} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("/d", b)
		if err != nil {
			return
		}
		if len(c.Hosts) == 0 || !c.Hosts[len(c.Hosts)-1].Server {
			t.Fatalf("parsed without a server last: %+v", c)
		}
		for _, h := range c.Hosts {
			if h.Scheme != "http" && h.Scheme != "https" {
				t.Fatalf("scheme %q", h.Scheme)
			}
			for k, vs := range h.Header {
				for _, v := range vs {
					if strings.ContainsAny(k+v, "\r\n") {
						t.Fatalf("header %q: %q spans lines", k, v)
					}
				}
			}
		}
	})
}
