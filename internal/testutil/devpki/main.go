// Command devpki writes a development PKI shaped like the one the Octavia
// controller issues (used by the demo and benchmarks, never by the agent):
//
//	go run ./internal/testutil/devpki DIR AMPHORA_ID
package main

import (
	"fmt"
	"os"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: devpki DIR AMPHORA_ID")
		os.Exit(2)
	}
	if _, err := testutil.NewPKI(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "devpki:", err)
		os.Exit(1)
	}
}
