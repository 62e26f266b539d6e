package inflate

import "context"

// HoldWorkers makes every worker call hold before it decodes its part, until the
// function it returns is called (tests pin with it what a reader that waits for no
// worker finds).
func HoldWorkers(hold func()) (restore func()) {
	old := beforeDecode
	beforeDecode = hold
	return func() { beforeDecode = old }
}

// HoldPastHalf makes every worker call hold (with its part's context, which ends if the
// part is dropped) once it decoded past half of its part, a reader that is not Patient
// wait until a part's worker is there (or done) before it looks at the part, and call
// waited when it then waits for the worker (tests pin with it that such a reader waits
// for a worker past half rather than drop its part).
func HoldPastHalf(hold func(context.Context), waited func()) (restore func()) {
	oldHold, oldWaited := heldPastHalf, readerWaits
	heldPastHalf, readerWaits = hold, waited
	return func() { heldPastHalf, readerWaits = oldHold, oldWaited }
}
