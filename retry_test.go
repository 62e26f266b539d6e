package pullkit_test

import (
	"errors"
	"testing"
	"time"

	"github.com/pullkit/pullkit"
)

// TestRetryPolicyDelay: waits double from Backoff, are capped at MaxBackoff and jittered
// in [d/2, d].
func TestRetryPolicyDelay(t *testing.T) {
	p := pullkit.RetryPolicy{Attempts: 5, Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 5: time.Second, 30: time.Second} {
		for range 20 {
			if d := p.Delay(attempt); d < want/2 || d > want {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
	if d := (pullkit.RetryPolicy{Attempts: 2}).Delay(1); d != 0 {
		t.Errorf("no backoff: Delay = %v, want 0", d)
	}
}

func TestRetryPolicyValidate(t *testing.T) {
	if err := pullkit.DefaultRetryPolicy().Validate(); err != nil {
		t.Fatalf("default policy: %v", err)
	}
	for _, p := range []pullkit.RetryPolicy{
		{Attempts: 0},
		{Attempts: 1, Backoff: -time.Second},
		{Attempts: 1, Backoff: time.Second, MaxBackoff: time.Millisecond},
		{Attempts: 1, MaxRetryAfter: -1},
	} {
		if err := p.Validate(); !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid", p, err)
		}
	}
}
