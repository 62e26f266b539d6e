package pullkit_test

import (
	"context"
	"testing"

	"github.com/pullkit/pullkit"
)

func TestErrorText(t *testing.T) {
	for _, tc := range []struct {
		err  *pullkit.Error
		want string
	}{
		{&pullkit.Error{Reference: "r:1", Op: "fetch layer", Digest: "sha256:ab", Err: pullkit.ErrNotFound}, "r:1: fetch layer sha256:ab: not found"},
		{&pullkit.Error{Reference: "r:1", Err: context.Canceled}, "r:1: context canceled"},
		{&pullkit.Error{Reference: "r:1", Digest: "sha256:ab", Err: context.Canceled}, "r:1: sha256:ab: context canceled"},
		{&pullkit.Error{Op: "check", Err: pullkit.ErrInvalid}, "check: invalid"},
		{&pullkit.Error{Reference: "r\x1b[31m:1", Op: "resolve", Err: pullkit.ErrDenied}, `r\x1b[31m:1: resolve: denied`},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%#v: %q, want %q", tc.err, got, tc.want)
		}
	}
}
