package puller

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/pullkittest"
)

// TestTags lists a repository's tags page after page (the pages made small so that
// several are followed), refuses a next page on another host, and reports a missing
// repository as ErrNotFound naming it.
func TestTags(t *testing.T) {
	old := tagsPageSize
	tagsPageSize = 2
	defer func() { tagsPageSize = old }()

	reg := pullkittest.NewRegistry(t)
	var want []string
	for i := range 5 {
		tag := fmt.Sprintf("v%d", i)
		reg.PushImage("team/app", tag, pullkittest.OCI)
		want = append(want, tag)
	}
	c, _ := testClient(t)
	got, err := c.Tags(t.Context(), reg.Host()+"/team/app")
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Tags = %v, %v; want %v", got, err, want)
	}
	pages := reg.Count(pullkittest.Match{Route: pullkittest.RouteTags})
	if pages != 3 {
		t.Errorf("%d pages asked for, want 3 of at most 2 tags", pages)
	}
	// A reference's repository is taken.
	if got, err := c.Tags(t.Context(), reg.Ref("team/app:v1")); err != nil || len(got) != 5 {
		t.Errorf("Tags of a reference = %v, %v", got, err)
	}

	_, err = c.Tags(t.Context(), reg.Host()+"/team/absent")
	var pe *pullkit.Error
	if !errors.Is(err, pullkit.ErrNotFound) || !errors.As(err, &pe) || pe.Op != pullkit.OpListTags || !strings.Contains(err.Error(), "team/absent") {
		t.Errorf("Tags of a missing repository: %v, want ErrNotFound at %q naming it", err, pullkit.OpListTags)
	}

	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", `<http://other.example/v2/x/tags/list?last=a>; rel="next"`)
		fmt.Fprint(w, `{"name":"x","tags":["a"]}`)
	}))
	defer elsewhere.Close()
	if _, err := c.Tags(t.Context(), strings.TrimPrefix(elsewhere.URL, "http://")+"/x"); !errors.Is(err, pullkit.ErrDenied) {
		t.Errorf("a next page on another host: %v, want ErrDenied", err)
	}
	loop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", `</v2/x/tags/list?n=2>; rel="next"`)
		fmt.Fprint(w, `{"name":"x","tags":[]}`)
	}))
	defer loop.Close()
	if _, err := c.Tags(t.Context(), strings.TrimPrefix(loop.URL, "http://")+"/x"); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("pages that never end: %v, want ErrInvalid", err)
	}
}

func TestNextPage(t *testing.T) {
	base, _ := http.NewRequest("GET", "https://r.example/v2/app/tags/list?n=2", nil)
	for _, tc := range []struct{ link, want string }{
		{"", ""},
		{`</v2/app/tags/list?n=2&last=b>; rel="next"`, "https://r.example/v2/app/tags/list?n=2&last=b"},
		{`<https://r.example/v2/app/tags/list?last=c>; rel=next`, "https://r.example/v2/app/tags/list?last=c"},
		{`</a>; rel="prev", </b>; rel="next"`, "https://r.example/b"},
		{`garbage`, ""},
	} {
		got, err := nextPage(base.URL, tc.link)
		if err != nil || got != tc.want {
			t.Errorf("nextPage(%q) = %q, %v; want %q", tc.link, got, err, tc.want)
		}
	}
}
