package store_test

import (
	"testing"

	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/store/storetest"
)

func TestLayoutConformance(t *testing.T) {
	for _, tc := range []struct {
		name         string
		direct, sync bool
	}{{"direct", true, false}, {"buffered", false, false}, {"sync", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store {
				l, err := store.OpenLayout(t.TempDir(), store.WithDirectIO(tc.direct), store.WithSync(tc.sync))
				if err != nil {
					t.Fatal(err)
				}
				return l
			})
		})
	}
}
