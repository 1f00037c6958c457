// Command imagebuild writes the syncer's OCI image archive (make image).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/tmc-syncer/syncer/cmd/syncer/internal/image"
)

func main() {
	var o image.Options
	var out string
	flag.StringVar(&o.Binary, "binary", "bin/syncer-linux", "static syncer binary")
	flag.StringVar(&o.CAFile, "ca-file", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to ship")
	flag.StringVar(&o.Version, "version", "dev", "image version label")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "architecture of the binary")
	flag.StringVar(&out, "out", "bin/syncer-image.tar", "OCI archive to write")
	flag.Parse()
	img, err := image.Build(o)
	if err == nil {
		err = image.WriteArchive(img, out)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagebuild: %v\n", err)
		os.Exit(1)
	}
	digest, _ := img.Digest()
	fmt.Printf("%s %s\n", out, digest)
}
