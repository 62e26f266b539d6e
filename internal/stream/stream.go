// Package stream tells the transport which requests belong to one stream of a transfer:
// the requests one part of a blob sends one after the other (the next one asked for
// while the last one's answer is still arriving). Under HTTP/2 the transport gives a
// stream's request the connection the stream used last when it is idle, and, when
// every connection it may open is busy, shares the stream's own rather than another
// stream's (see puller's lanes). It is internal: a Fetcher written elsewhere loses
// nothing without it.
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
