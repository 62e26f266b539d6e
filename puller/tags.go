package puller

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/layers"
)

// Bounds of a tags listing: what a registry can make Tags read.
const (
	// MaxTags is the most tags Tags returns; a repository with more is an error
	// wrapping pullkit.ErrTooLarge (a paginated listing past it is not followed).
	MaxTags = 100_000
	// maxTagPages bounds the pages followed, whatever each holds.
	maxTagPages = 1_000
)

// tagsPageSize is how many tags Tags asks a registry for per page (its n); the tests
// make it small to see the pages followed.
var tagsPageSize = 1_000

// repositoryOf reads repo as a repository ("registry/repository", docker.io and library/
// implied), or takes the repository of a reference ("registry/repository:tag").
func repositoryOf(repo string) (name.Repository, error) {
	r, err := name.NewRepository(repo)
	if err == nil {
		return r, nil
	}
	ref, rerr := parseRef(repo)
	if rerr != nil {
		return name.Repository{}, pullkit.Wrap(repo, pullkit.OpParseReference, "", &pullkit.InvalidError{What: "repository", Reason: text.Clean(err.Error(), 300)})
	}
	return ref.Context(), nil
}

// repoEndpoints returns the endpoints configured for repo (read as repositoryOf reads
// it) and the reference they were chosen for (its "latest" tag: configuration chooses
// by repository). A failure is a *pullkit.Error with Op op naming repo.
func (c *Client) repoEndpoints(repo, op string) ([]*endpoint, name.Tag, error) {
	r, err := repositoryOf(repo)
	if err != nil {
		return nil, name.Tag{}, err
	}
	t := r.Tag("latest")
	eps, err := c.endpoints(t.String(), t, nil)
	if err != nil {
		return nil, t, pullkit.Wrap(repo, op, "", err)
	}
	return eps, t, nil
}

// Tags lists the tags of repo ("registry/repository", or a reference, whose repository is
// taken), in the order the registry gives them (distribution sorts them), following its
// pages (the Link rel="next" header) up to MaxTags. It uses the client's credentials and
// mirrors and configured hosts (asked first, in order, those that may resolve a tag, as
// Resolve asks them: a mirror's list may lag the registry's). A repository the registry does not have is pullkit.ErrNotFound. Errors
// are a *pullkit.Error with Op pullkit.OpListTags naming repo.
func (c *Client) Tags(ctx context.Context, repo string) ([]string, error) {
	eps, t, err := c.repoEndpoints(repo, pullkit.OpListTags)
	if err != nil {
		return nil, err
	}
	var last error
	// The endpoints that may resolve a tag (hosts.toml's capabilities) may list them.
	for _, ep := range alive(askable(eps, t)) {
		tags, err := ep.tags(ctx)
		if err == nil {
			return tags, nil
		}
		last = pullkit.WrapDetail(repo, pullkit.OpListTags, ep.via(), "", err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// tags lists the repository's tags on the endpoint, page after page.
func (ep *endpoint) tags(ctx context.Context) ([]string, error) {
	u := ep.url("tags", "list") + "?n=" + strconv.Itoa(tagsPageSize)
	seen := map[string]bool{}
	var out []string
	for page := 0; u != ""; page++ {
		if page >= maxTagPages || seen[u] {
			return nil, &pullkit.InvalidError{What: "tags list", Reason: fmt.Sprintf("the registry's pages do not end (%d followed)", page)}
		}
		seen[u] = true
		resp, ri, err := ep.request(ctx, http.MethodGet, u, http.Header{"Accept": {"application/json"}}, reqInfo{step: "tags list", what: "tags"})
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			err := statusError(resp, ri, "the repository's tags", ep.c.now())
			resp.Body.Close()
			return nil, err
		}
		raw, err := readCapped(resp, ep.c.maxManifest, "tags list")
		next := resp.Header.Get("Link")
		reqURL := resp.Request.URL
		resp.Body.Close()
		if err != nil {
			return nil, connError(ctx, err)
		}
		var body struct {
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(raw, &body); err != nil {
			return nil, &pullkit.InvalidError{What: "tags list", Reason: "not JSON", Err: err}
		}
		if len(out)+len(body.Tags) > MaxTags {
			return nil, &pullkit.TooLargeError{What: "tags list", Limit: MaxTags, Size: -1}
		}
		out = append(out, body.Tags...)
		if u, err = nextPage(reqURL, next); err != nil {
			return nil, err
		}
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

// nextPage reads a Link header's rel="next" URL (RFC 8288), resolved against the page's
// own; "" when there is none. A next page on another host is refused: the listing stays
// with the registry (and its credentials) that started it.
func nextPage(base *url.URL, link string) (string, error) {
	for _, part := range strings.Split(link, ",") {
		target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
		if !ok || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
			continue
		}
		rel := false
		for _, p := range strings.Split(params, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(k, "rel") && strings.EqualFold(strings.Trim(v, `"`), "next") {
				rel = true
			}
		}
		if !rel {
			continue
		}
		ref, err := url.Parse(strings.TrimSuffix(strings.TrimPrefix(target, "<"), ">"))
		if err != nil {
			return "", &pullkit.InvalidError{What: "tags list", Reason: "Link " + text.Clean(target, 200), Err: err}
		}
		next := base.ResolveReference(ref)
		if next.Host != base.Host || next.Scheme != base.Scheme {
			return "", fmt.Errorf("%w: the tags list's next page is on %s, not %s", pullkit.ErrDenied, text.Clean(next.Host, 100), text.Clean(base.Host, 100))
		}
		return next.String(), nil
	}
	return "", nil
}

// BlobFetcher returns the layers.Fetcher of repo's blobs ("registry/repository", or a
// reference, whose repository is taken) with this client's credentials, mirrors (asked
// first, then the registry), retries, deadlines and guards, for a caller that runs
// layers.Fetch itself: its own plan of blobs, its own store, its own progress. It is a
// layers.Restarter (a blob whose bytes did not verify is asked of the next endpoint
// first), and it fetches a foreign layer from its descriptor's URLs when the registry
// lacks it.
func (c *Client) BlobFetcher(repo string) (layers.Fetcher, error) {
	eps, _, err := c.repoEndpoints(repo, pullkit.OpFetchBlob)
	if err != nil {
		return nil, err
	}
	var pull []*endpoint // the endpoints that may pull (hosts.toml's capabilities)
	for _, ep := range eps {
		if ep.pull {
			pull = append(pull, ep)
		}
	}
	if len(pull) == 0 {
		return nil, pullkit.Wrap(repo, pullkit.OpFetchBlob, "", fmt.Errorf("%w: no endpoint configured for %s may pull", pullkit.ErrDenied, text.Clean(repo, 200)))
	}
	return &blobSource{eps: pull}, nil
}
