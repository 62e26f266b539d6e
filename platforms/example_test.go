package platforms_test

import (
	"fmt"

	"github.com/pullkit/pullkit/platforms"
)

// Parse normalises what users type; Only matches with the rules engines expect.
func ExampleOnly() {
	want, _ := platforms.Parse("linux/arm64")
	fmt.Println(want)
	m := platforms.Only(want)
	for _, s := range []string{"linux/aarch64", "linux/arm64/v8", "linux/arm/v7", "linux/amd64"} {
		p, _ := platforms.Parse(s)
		fmt.Println(s, m.Match(p))
	}
	v7, _ := platforms.Parse("linux/arm/v7")
	v6, _ := platforms.Parse("linux/arm/v6")
	// On an arm/v7 host, v6 images run, and v7 ones are preferred.
	fmt.Println(platforms.Only(v7).Match(v6), platforms.Only(v7).Less(v7, v6))
	// Output:
	// linux/arm64/v8
	// linux/aarch64 true
	// linux/arm64/v8 true
	// linux/arm/v7 false
	// linux/amd64 false
	// true true
}
