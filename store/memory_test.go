package store_test

import (
	"testing"

	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/store/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return store.NewMemory() })
}
