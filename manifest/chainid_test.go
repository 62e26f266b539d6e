package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

func TestChainIDs(t *testing.T) {
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	spec := func(parent, d digest.Digest) digest.Digest {
		h := sha256.Sum256([]byte(string(parent) + " " + string(d)))
		return digest.Digest("sha256:" + hex.EncodeToString(h[:]))
	}
	ab := spec(a, b)
	tests := []struct {
		name string
		in   []digest.Digest
		want []digest.Digest
	}{
		{"none", nil, []digest.Digest{}},
		{"one layer is its diffID", []digest.Digest{a}, []digest.Digest{a}},
		{"two", []digest.Digest{a, b}, []digest.Digest{a, ab}},
		{"three", []digest.Digest{a, b, c}, []digest.Digest{a, ab, spec(ab, c)}},
		{"order matters", []digest.Digest{b, a}, []digest.Digest{b, spec(b, a)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ChainIDs(tc.in)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if ab == spec(b, a) {
		t.Error("chain of a,b equals chain of b,a")
	}
}
