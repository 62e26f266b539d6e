package puller

import (
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Redirects to blob storage. Registries answer a blob GET with a redirect to a CDN or an
// object store, whose URL is signed and expires within minutes. The URL a blob was
// redirected to is kept for the call, so that its later requests (the parts of a split
// blob, a resume) go there directly, one round trip and one registry request fewer each,
// and without the registry's credentials (they never leave the registry's host). A URL
// is asked for again from the registry when its expiry (read from the URL, where it says)
// is near, or when blob storage refuses it (403 or 401: expired, or signed for another
// client); the transfer goes on from the byte it reached.

// expiryMargin is how long before a signed URL's stated expiry it is asked for again
// (a quarter of its life when that is less): storage checks the signature when a request
// starts, so a request must start before it, with room for the round trip.
const expiryMargin = 5 * time.Second

// location is where a blob was redirected to.
type location struct {
	u       *url.URL
	got     time.Time // when the registry gave it
	expires time.Time // zero when the URL does not say
}

// usable reports whether the URL may still start a request at now (on the client's
// clock, which tests set).
func (l *location) usable(now time.Time) bool {
	if l.expires.IsZero() {
		return true
	}
	margin := min(expiryMargin, l.expires.Sub(l.got)/4)
	return now.Add(margin).Before(l.expires)
}

// locations are the redirects of one call, per endpoint and blob.
type locations struct {
	mu sync.Mutex
	m  map[locKey]*location
}

type locKey struct {
	ep *endpoint
	d  digest.Digest
}

func (ls *locations) get(ep *endpoint, d digest.Digest) *location {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.m[locKey{ep, d}]
}

func (ls *locations) put(ep *endpoint, d digest.Digest, u *url.URL, now time.Time) {
	l := &location{u: u, got: now}
	l.expires, _ = urlExpiry(u)
	ls.mu.Lock()
	if ls.m == nil {
		ls.m = map[locKey]*location{}
	}
	ls.m[locKey{ep, d}] = l
	ls.mu.Unlock()
}

// forget drops l, if it is still the location of (ep, d).
func (ls *locations) forget(ep *endpoint, d digest.Digest, l *location) {
	ls.mu.Lock()
	if ls.m[locKey{ep, d}] == l {
		delete(ls.m, locKey{ep, d})
	}
	ls.mu.Unlock()
}

// urlExpiry reads when a signed URL expires, from the parameters the common signing
// schemes put in its query: AWS Signature V4 (X-Amz-Date and X-Amz-Expires), Google
// Cloud Storage V4 (X-Goog-Date and X-Goog-Expires), Azure shared access signatures (se,
// with sig), CloudFront's and S3's V2 Expires (Unix seconds), and Docker Hub's CDN
// (verify=<Unix seconds>-<signature>). Parameter names are matched without regard to
// case; a URL that says nothing, or says it badly, has no known expiry.
func urlExpiry(u *url.URL) (time.Time, bool) {
	if u == nil || u.RawQuery == "" {
		return time.Time{}, false
	}
	q := map[string]string{}
	for _, kv := range strings.Split(u.RawQuery, "&") {
		k, v, _ := strings.Cut(kv, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			continue
		}
		k = strings.ToLower(k)
		if _, dup := q[k]; !dup {
			q[k] = v
		}
	}
	for _, p := range []string{"x-amz", "x-goog"} {
		if date, ok := q[p+"-date"]; ok {
			if secs, ok := q[p+"-expires"]; ok {
				t, err := time.Parse("20060102T150405Z", date)
				n, nerr := strconv.ParseInt(secs, 10, 64)
				if err == nil && nerr == nil && n >= 0 && n <= 1<<31 {
					return t.Add(time.Duration(n) * time.Second), true
				}
			}
		}
	}
	if se, ok := q["se"]; ok {
		if _, signed := q["sig"]; signed {
			for _, layout := range []string{time.RFC3339, "2006-01-02T15:04Z", "2006-01-02"} {
				if t, err := time.Parse(layout, se); err == nil {
					return t, true
				}
			}
		}
	}
	if v, ok := q["expires"]; ok {
		if t, ok := unixSeconds(v); ok {
			return t, true
		}
	}
	if v, ok := q["verify"]; ok {
		if head, _, found := strings.Cut(v, "-"); found {
			if t, ok := unixSeconds(head); ok {
				return t, true
			}
		}
	}
	return time.Time{}, false
}

// unixSeconds reads a Unix time in seconds: 1-12 ASCII digits.
func unixSeconds(s string) (time.Time, bool) {
	if s == "" || len(s) > 12 {
		return time.Time{}, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return time.Time{}, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}
