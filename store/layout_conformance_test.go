package store_test

import (
	"testing"

	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/store/storetest"
)

func TestLayoutConformance(t *testing.T) {
	for _, direct := range []bool{true, false} {
		name := "direct"
		if !direct {
			name = "buffered"
		}
		t.Run(name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store {
				l, err := store.OpenLayout(t.TempDir(), store.WithDirectIO(direct))
				if err != nil {
					t.Fatal(err)
				}
				return l
			})
		})
	}
}
