//go:build race

package inflate_test

// Under the race detector the decoders run ten times slower: the corpus shrinks.
func init() { shrink = 8 }
