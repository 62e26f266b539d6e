// Package hosts reads a hosts directory, the layout containerd (config_path, ctr
// --hosts-dir) and Docker (/etc/docker/certs.d) use to say how each registry is reached:
//
//	DIR/<host>_<port>_/hosts.toml   (containerd's spelling of a port), or
//	DIR/<host[:port]>/hosts.toml    (docker.io for Docker Hub), else
//	DIR/_default/hosts.toml         for every registry without a directory of its own,
//
// and, in a directory without hosts.toml, Docker's certificate files: *.crt (root CAs)
// and *.cert with the *.key of the same name (client certificates).
//
// hosts.toml has a top-level `server` (the registry itself, asked last; the registry's
// own host when absent) and `[host."URL"]` tables (mirrors, asked first, in the order the
// file lists them). Each has `capabilities` (pull, resolve, push, referrers; all by
// default), `ca` (a path or a list), `client` (a path, a list of paths, or a list of
// [cert, key] pairs), `skip_verify`, `[header]` (a string or a list of strings per name),
// `override_path` (the URL's path is the API root, no /v2 added) and `dial_timeout` (a
// Go duration). Relative paths are relative to the file's directory. A URL without a
// scheme is https.
//
// The package yields a neutral model (Config, Host); puller turns it into endpoints.
package hosts

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Capabilities are what a host may be asked to do.
type Capabilities uint8

// The capabilities of hosts.toml.
const (
	Pull Capabilities = 1 << iota
	Resolve
	Push
	Referrers
)

// All is every capability: what a host has when hosts.toml does not say.
const All = Pull | Resolve | Push | Referrers

func (c Capabilities) String() string {
	var s []string
	for _, n := range []struct {
		c    Capabilities
		name string
	}{{Pull, "pull"}, {Resolve, "resolve"}, {Push, "push"}, {Referrers, "referrers"}} {
		if c&n.c != 0 {
			s = append(s, n.name)
		}
	}
	return strings.Join(s, ",")
}

// Host is one endpoint of a registry's namespace.
type Host struct {
	// Entry says what chose it: `server = "…"`, `host."…"`, or "certificate files".
	Entry string
	// Server is true for the top-level server (asked after every host entry).
	Server bool
	// Scheme, Host and Path make its URL; Host is "" for a server that hosts.toml does
	// not name (the registry's own). Path is the API root ("/v2" unless OverridePath).
	Scheme, Host, Path string
	// Capabilities are what it may be asked.
	Capabilities Capabilities
	// CA are root CA files; Client are [certificate, key] files (key "" when the
	// certificate file holds it too).
	CA     []string
	Client [][2]string
	// SkipVerify is skip_verify when set.
	SkipVerify *bool
	// Header is sent with every request to it.
	Header http.Header
	// OverridePath says Path is the API root as given.
	OverridePath bool
	// DialTimeout bounds a connection's set-up (0: not set).
	DialTimeout time.Duration
}

// Config is a registry's hosts directory, read.
type Config struct {
	// Dir is the directory that applied; File is its hosts.toml ("" when it has only
	// certificate files).
	Dir, File string
	// Hosts are the host entries in order, then the server.
	Hosts []Host
}

// Default is the directory that applies to every registry without its own.
const Default = "_default"

// Dir returns the directory under root for host (host[:port], "docker.io" for Docker
// Hub): root/host_port_, root/host:port, root/_default, the first that exists; "" when
// none does.
func Dir(root, host string) (string, error) {
	var cands []string
	if i := strings.LastIndex(host, ":"); i > 0 && !strings.HasSuffix(host, "]") {
		cands = append(cands, host[:i]+"_"+host[i+1:]+"_")
	}
	cands = append(cands, host, Default)
	for _, c := range cands {
		if c == "" || c == "." || c == ".." || strings.ContainsAny(c, `/\`) {
			continue
		}
		p := filepath.Join(root, c)
		st, err := os.Stat(p)
		if err == nil && st.IsDir() {
			return p, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	return "", nil
}

// Load reads the directory under root that applies to host; nil when none does.
func Load(root, host string) (*Config, error) {
	dir, err := Dir(root, host)
	if err != nil || dir == "" {
		return nil, err
	}
	return LoadDir(dir)
}

// maxFile bounds hosts.toml.
const maxFile = 1 << 20

// LoadDir reads one host directory: its hosts.toml, or without one its certificate
// files.
func LoadDir(dir string) (*Config, error) {
	file := filepath.Join(dir, "hosts.toml")
	st, err := os.Stat(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return loadCerts(dir)
	case err != nil:
		return nil, err
	case st.Size() > maxFile:
		return nil, fmt.Errorf("%s: %d bytes, more than %d", file, st.Size(), maxFile)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return loadCerts(dir)
	}
	c, err := Parse(dir, b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	c.File = file
	return c, nil
}

// loadCerts reads Docker's certificate files of dir: *.crt are root CAs, *.cert are
// client certificates with the *.key of the same name.
func loadCerts(dir string) (*Config, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	h := Host{Entry: "certificate files in " + dir, Server: true, Scheme: "https", Path: "/v2", Capabilities: All}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		n := e.Name()
		switch {
		case strings.HasSuffix(n, ".crt"):
			h.CA = append(h.CA, filepath.Join(dir, n))
		case strings.HasSuffix(n, ".cert"):
			key := strings.TrimSuffix(n, ".cert") + ".key"
			pair := [2]string{filepath.Join(dir, n), ""}
			if _, err := os.Stat(filepath.Join(dir, key)); err == nil {
				pair[1] = filepath.Join(dir, key) // else the .cert file holds its key too
			}
			h.Client = append(h.Client, pair)
		}
	}
	return &Config{Dir: dir, Hosts: []Host{h}}, nil
}

// fileHost is one table of hosts.toml (the top level, or a host entry).
type fileHost struct {
	Capabilities []string       `toml:"capabilities"`
	CA           any            `toml:"ca"`
	Client       any            `toml:"client"`
	SkipVerify   *bool          `toml:"skip_verify"`
	Header       map[string]any `toml:"header"`
	OverridePath bool           `toml:"override_path"`
	DialTimeout  string         `toml:"dial_timeout"`
}

// Parse reads hosts.toml's bytes; dir is the directory relative paths are in.
func Parse(dir string, data []byte) (*Config, error) {
	var f struct {
		fileHost
		Server string              `toml:"server"`
		Host   map[string]fileHost `toml:"host"`
	}
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return nil, err
	}
	// The host entries in the file's order (the decoder's map has none).
	var order []string
	seen := map[string]bool{}
	for _, k := range md.Keys() {
		if len(k) >= 2 && k[0] == "host" && !seen[k[1]] {
			seen[k[1]] = true
			order = append(order, k[1])
		}
	}
	c := &Config{Dir: dir}
	for _, name := range order {
		h, err := parseHost(name, dir, f.Host[name])
		if err != nil {
			return nil, fmt.Errorf("host %q: %w", name, err)
		}
		h.Entry = fmt.Sprintf("host.%q", name)
		c.Hosts = append(c.Hosts, h)
	}
	h, err := parseHost(f.Server, dir, f.fileHost)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	h.Server = true
	h.Entry = fmt.Sprintf("server = %q", f.Server)
	if f.Server == "" {
		h.Entry = "server (the registry itself)"
	}
	c.Hosts = append(c.Hosts, h)
	return c, nil
}

func parseHost(server, dir string, fh fileHost) (Host, error) {
	h := Host{Scheme: "https", Path: "/v2", OverridePath: fh.OverridePath, SkipVerify: fh.SkipVerify}
	if server != "" {
		s := server
		if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
			if strings.Contains(s, "://") {
				return h, fmt.Errorf("%q: only http and https URLs", server)
			}
			s = "https://" + s
		}
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return h, fmt.Errorf("%q is not a registry URL", server)
		}
		h.Scheme, h.Host = u.Scheme, u.Host
		p := u.Path
		if p != "" && p != "/" {
			p = path.Clean(p)
			if !fh.OverridePath && !strings.HasSuffix(p, "/v2") {
				p += "/v2"
			}
		} else if fh.OverridePath {
			p = ""
		} else {
			p = "/v2"
		}
		h.Path = strings.TrimSuffix(p, "/")
	}
	if len(fh.Capabilities) == 0 {
		h.Capabilities = All
	}
	for _, c := range fh.Capabilities {
		switch strings.ToLower(c) {
		case "pull":
			h.Capabilities |= Pull
		case "resolve":
			h.Capabilities |= Resolve
		case "push":
			h.Capabilities |= Push
		case "referrers":
			h.Capabilities |= Referrers
		default:
			return h, fmt.Errorf("unknown capability %q", c)
		}
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	switch ca := fh.CA.(type) {
	case nil:
	case string:
		h.CA = []string{abs(ca)}
	case []any:
		for _, v := range ca {
			s, ok := v.(string)
			if !ok {
				return h, fmt.Errorf("ca: %v is not a path", v)
			}
			h.CA = append(h.CA, abs(s))
		}
	default:
		return h, fmt.Errorf("ca: want a path or a list of paths")
	}
	switch cl := fh.Client.(type) {
	case nil:
	case string:
		h.Client = [][2]string{{abs(cl), ""}}
	case []any:
		for _, v := range cl {
			switch p := v.(type) {
			case string:
				h.Client = append(h.Client, [2]string{abs(p), ""})
			case []any:
				if len(p) != 2 {
					return h, fmt.Errorf("client: a pair must be [certificate, key]")
				}
				cert, ok1 := p[0].(string)
				key, ok2 := p[1].(string)
				if !ok1 || !ok2 || cert == "" {
					return h, fmt.Errorf("client: a pair must be two paths")
				}
				pair := [2]string{abs(cert), ""}
				if key != "" {
					pair[1] = abs(key)
				}
				h.Client = append(h.Client, pair)
			default:
				return h, fmt.Errorf("client: %v is not a path or a pair", v)
			}
		}
	default:
		return h, fmt.Errorf("client: want a path, a list of paths or a list of pairs")
	}
	if len(fh.Header) > 0 {
		h.Header = http.Header{}
		for k, v := range fh.Header {
			if k == "" || strings.ContainsAny(k, " \t\r\n:") {
				return h, fmt.Errorf("header %q: not a header name", k)
			}
			ck := textproto.CanonicalMIMEHeaderKey(k)
			add := func(s string) error {
				if strings.ContainsAny(s, "\r\n\x00") {
					return fmt.Errorf("header %q: a value spans lines", k)
				}
				h.Header[ck] = append(h.Header[ck], s)
				return nil
			}
			switch val := v.(type) {
			case string:
				if err := add(val); err != nil {
					return h, err
				}
			case []any:
				for _, x := range val {
					s, ok := x.(string)
					if !ok {
						return h, fmt.Errorf("header %q: %v is not a string", k, x)
					}
					if err := add(s); err != nil {
						return h, err
					}
				}
			default:
				return h, fmt.Errorf("header %q: want a string or a list of strings", k)
			}
		}
	}
	if fh.DialTimeout != "" {
		d, err := time.ParseDuration(fh.DialTimeout)
		if err != nil || d <= 0 {
			return h, fmt.Errorf("dial_timeout %q: want a positive duration such as \"1s\"", fh.DialTimeout)
		}
		h.DialTimeout = d
	}
	return h, nil
}
