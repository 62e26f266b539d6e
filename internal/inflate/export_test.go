package inflate

// HoldWorkers makes every worker call hold before it decodes its part, until the
// function it returns is called (tests pin with it what a reader that waits for no
// worker finds).
func HoldWorkers(hold func()) (restore func()) {
	old := beforeDecode
	beforeDecode = hold
	return func() { beforeDecode = old }
}
