package puller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pullkit/pullkit"
)

// TestDialerKeepsRegistriesOffLoopback runs the default transport's dialer with a
// resolver that sends test names to loopback and link-local addresses (and resolves
// nothing else, so no traffic leaves loopback): for a registry that is not on loopback,
// every name that resolves there is refused before a connection, the registry's own
// name included (DNS rebinding must not make a reference a request to the host's own
// services); a loopback registry reaches loopback names.
func TestDialerKeepsRegistriesOffLoopback(t *testing.T) {
	var accepted atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)

	saved := lookupIPAddr
	defer func() { lookupIPAddr = saved }()
	lookupIPAddr = func(ctx context.Context, host string) ([]net.IPAddr, error) {
		switch host {
		case "evil.test", "registry.example", "rebind.example":
			return []net.IPAddr{{IP: net.IPv4(127, 0, 0, 1)}}, nil
		case "metadata.test":
			return []net.IPAddr{{IP: net.IPv4(169, 254, 169, 254)}}, nil
		}
		return nil, &net.DNSError{Err: "no such host (test resolver)", Name: host, IsNotFound: true}
	}
	dial := newBaseTransport(DefaultTimeouts(), nil, nil, nil).DialContext
	for _, tc := range []struct {
		origin, addr string
		ok           bool
	}{
		{"registry.example", "evil.test:" + port, false},
		{"registry.example", "metadata.test:80", false},
		{"rebind.example", "rebind.example:" + port, false},
		{"127.0.0.1:5000", "evil.test:" + port, true},
		{"localhost:5000", "evil.test:" + port, true},
		{"", "evil.test:" + port, true},
	} {
		ctx := withInfo(context.Background(), &reqInfo{origin: tc.origin})
		before := accepted.Load()
		c, err := dial(ctx, "tcp", tc.addr)
		if c != nil {
			c.Close()
		}
		switch {
		case tc.ok && err != nil:
			t.Errorf("registry %q, dial %s: %v, want a connection", tc.origin, tc.addr, err)
		case !tc.ok && (err == nil || !errors.Is(err, pullkit.ErrDenied)):
			t.Errorf("registry %q, dial %s: %v, want ErrDenied", tc.origin, tc.addr, err)
		case !tc.ok:
			time.Sleep(10 * time.Millisecond)
			if accepted.Load() != before {
				t.Errorf("registry %q, dial %s: refused, yet a connection was made", tc.origin, tc.addr)
			}
			t.Logf("registry %q, dial %s: %v", tc.origin, tc.addr, err)
		}
	}
}

// TestRealmAllowed checks the token realm rule without the network: on a private or
// loopback address only for a registry on one; never plain HTTP elsewhere; never
// link-local.
func TestRealmAllowed(t *testing.T) {
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	a := &authTransport{c: c}
	for _, tc := range []struct {
		registry, realm string
		ok              bool
	}{
		{"10.0.0.5:5000", "https://10.0.0.6/token", true},
		{"10.0.0.5:5000", "https://192.168.1.2:8443/token", true},
		{"192.168.1.2", "https://127.0.0.1:5001/token", true},
		{"127.0.0.1:5000", "http://127.0.0.1:5001/token", true},
		{"localhost:5000", "http://127.0.0.1:5001/token", true},
		{"[::1]:5000", "http://[::1]:5001/token", true},
		{"registry.example", "https://auth.example/token", true},
		{"registry.example", "https://10.0.0.6/token", false},
		{"registry.example", "https://127.0.0.1/token", false},
		{"registry.example", "https://localhost/token", false},
		{"registry.example", "http://auth.example/token", false},
		{"10.0.0.5:5000", "https://169.254.169.254/token", false},
		{"10.0.0.5:5000", "ftp://10.0.0.6/token", false},
	} {
		u, err := url.Parse(tc.realm)
		if err != nil {
			t.Fatal(err)
		}
		err = a.realmAllowed(tc.registry, u)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, pullkit.ErrDenied)) {
			t.Errorf("registry %s, realm %s: %v, want allowed %v", tc.registry, tc.realm, err, tc.ok)
		}
	}
}
