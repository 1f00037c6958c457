package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "syncer: not yet assembled (see the cmd/syncer issue)")
	os.Exit(1)
}
