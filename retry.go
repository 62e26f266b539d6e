package pullkit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// RetryPolicy says how hard a pull tries before it gives up. One value serves every place
// that retries: a request that failed or was refused with 5xx or 429, a manifest or config
// whose body broke off, a blob whose transfer stopped moving or did not verify.
type RetryPolicy struct {
	// Attempts is how many tries in all one request, or one blob without progress, gets
	// (1: no retries).
	Attempts int
	// Backoff is the first wait between tries; each later one doubles, with jitter.
	Backoff time.Duration
	// MaxBackoff caps a wait between tries.
	MaxBackoff time.Duration
	// MaxRetryAfter is the longest wait a registry's 429 Retry-After may impose; a
	// registry that asks for longer gets an error at once, carrying what it asked.
	MaxRetryAfter time.Duration
}

// DefaultRetryPolicy is the policy of a client made without one: 4 tries, waits from
// 250 ms doubling to at most 10 s, and 429 waits of up to 60 s.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{Attempts: 4, Backoff: 250 * time.Millisecond, MaxBackoff: 10 * time.Second, MaxRetryAfter: 60 * time.Second}
}

// Validate reports a policy that cannot be used, with an error wrapping ErrInvalid.
func (p RetryPolicy) Validate() error {
	switch {
	case p.Attempts < 1:
		return &InvalidError{What: "retry policy", Reason: fmt.Sprintf("Attempts %d: want at least 1", p.Attempts)}
	case p.Backoff < 0 || p.MaxBackoff < 0 || p.MaxRetryAfter < 0:
		return &InvalidError{What: "retry policy", Reason: "negative duration"}
	case p.MaxBackoff < p.Backoff:
		return &InvalidError{What: "retry policy", Reason: fmt.Sprintf("MaxBackoff %v is less than Backoff %v", p.MaxBackoff, p.Backoff)}
	}
	return nil
}

// Delay is the wait before try number attempt+1 after attempt failed tries (attempt >= 1):
// Backoff doubled attempt-1 times, capped at MaxBackoff, with full jitter in [d/2, d].
func (p RetryPolicy) Delay(attempt int) time.Duration {
	d := p.Backoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Sleep waits for d or until ctx is done, returning ctx's error in that case.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
