// Command attest is the RigOS verifier: it enrols rigs, challenges them
// at random times, appraises their TPM evidence against signed reference
// manifests and keeps each node's trust state.
//
//	attest [serve] -config attest.json     run the verifier
//	attest devinit -dir DIR                write a development setup
//	attest nodes|watch|node|revoke|accept-firmware -admin SOCK ...
//	attest run -node ID -id W -archive image.tar [flags] [-- args]
//	attest stop -node ID -id W
package main

import (
	"fmt"
	"os"

	"github.com/rigos/rigos/attest/internal/cli"
)

func main() {
	if err := cli.Run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "attest:", err)
		os.Exit(1)
	}
}
