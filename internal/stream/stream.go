// Package stream tells the transport which requests belong to one stream of a transfer:
// the requests one part of a blob sends one after the other (the next one asked for
// while the last one's answer is still arriving). Under HTTP/2 the transport sends a
// stream's requests over the same connection, so that the next answer takes over the
// connection the last one is leaving rather than share another stream's (see
// puller's lanes). It is internal: a Fetcher written elsewhere loses nothing without it.
package stream

import "context"

type key struct{}

// With returns ctx carrying id, a comparable value that names the stream (a pointer
// to the part, say).
func With(ctx context.Context, id any) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// Of returns the stream ctx names, or nil.
func Of(ctx context.Context) any {
	return ctx.Value(key{})
}
