// Command init is RigOS's PID 1. All of its logic is in
// init/internal/pid1.
package main

import "github.com/rigos/rigos/init/internal/pid1"

func main() { pid1.Main() }
