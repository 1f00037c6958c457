// Package image builds the syncer's OCI image archive without a container daemon:
// a base layer (CA certificates, the nonroot user) and a layer holding only the
// static binary, with fixed timestamps so the same inputs give the same digest.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Where things live in the image.
const (
	BinaryPath = "/usr/local/bin/syncer"
	// KCPBinaryPath is where kcp's generated syncer Deployment runs the syncer
	// (`command: [/ko-app/syncer]`, ko's layout): a symlink to BinaryPath, so that
	// kcp's install runs this image unmodified.
	KCPBinaryPath = "/ko-app/syncer"
	CAPath        = "/etc/ssl/certs/ca-certificates.crt"
	User          = "65532:65532"
)

// Options are the inputs of an image.
type Options struct {
	Binary  string // path of the static syncer binary
	CAFile  string // CA bundle to ship
	Version string
	Arch    string // GOARCH of the binary
	// Created is the image's creation time; zero means the Unix epoch (reproducible).
	Created time.Time
}

// Build returns the image.
func Build(o Options) (v1.Image, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("read binary: %w", err)
	}
	ca, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	base, err := layer(map[string]file{
		CAPath:        {data: ca, mode: 0o644},
		"/etc/passwd": {data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"), mode: 0o644},
		"/etc/group":  {data: []byte("root:x:0:\nnonroot:x:65532:\n"), mode: 0o644},
	})
	if err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	binLayer, err := layer(map[string]file{BinaryPath: {data: bin, mode: 0o755}, KCPBinaryPath: {link: BinaryPath, mode: 0o777}})
	if err != nil {
		return nil, fmt.Errorf("binary layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, base, binLayer)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", o.Arch
	cfg.Created = v1.Time{Time: o.Created.UTC()}
	cfg.Config.User = User
	cfg.Config.Entrypoint = []string{BinaryPath}
	cfg.Config.Env = []string{"SSL_CERT_FILE=" + CAPath}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":   "tmc-syncer",
		"org.opencontainers.image.version": o.Version,
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return mutate.CreatedAt(img, v1.Time{Time: o.Created.UTC()})
}

// WriteArchive writes img as an OCI image layout packed into one tar file (an
// "oci-archive", which podman, skopeo and containerd import).
func WriteArchive(img v1.Image, out string) error {
	dir, err := os.MkdirTemp("", "tmc-syncer-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write OCI layout: %w", err)
	}
	if err := p.AppendImage(img); err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := tarDir(f, dir); err != nil {
		_ = f.Close()
		return fmt.Errorf("pack %s: %w", out, err)
	}
	return f.Close()
}

type file struct {
	data []byte
	mode int64
	// link, when set, makes the entry a symlink to it.
	link string
}

// layer packs files into a layer with fixed owners and timestamps.
func layer(files map[string]file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	dirs := map[string]bool{}
	for _, n := range names {
		for d := filepath.Dir(n); d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	dirList := make([]string, 0, len(dirs))
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	for _, d := range dirList {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, n := range names {
		f := files[n]
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: n[1:], Mode: f.mode, Size: int64(len(f.data)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if f.link != "" {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeSymlink, f.link, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}

// tarDir packs a directory tree into w, sorted, with fixed timestamps.
func tarDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	var paths []string
	if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != dir {
			paths = append(paths, p)
		}
		return err
	}); err != nil {
		return err
	}
	sort.Strings(paths)
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Mode: 0o644, Format: tar.FormatPAX}
		if info.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			continue
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return tw.Close()
}
