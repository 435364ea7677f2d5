// Command mkworkload builds the test workload (hack/workload) as a static
// binary and writes it as an OCI image archive, ready for
// "attest run -archive".
//
//	go run ./hack/mkworkload -o workload.tar [-name rigos.test/workload:1]
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/rigos/rigos/internal/ociarchive"
)

func main() {
	out := flag.String("o", "workload.tar", "archive to write")
	name := flag.String("name", ociarchive.WorkloadName, "image name in the archive")
	flag.Parse()
	if err := ociarchive.WriteWorkload(*out, *name); err != nil {
		fmt.Fprintln(os.Stderr, "mkworkload:", err)
		os.Exit(1)
	}
	fmt.Println(*out)
}
