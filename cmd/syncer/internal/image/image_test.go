package image

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func inputs(t *testing.T) Options {
	dir := t.TempDir()
	bin := filepath.Join(dir, "syncer")
	ca := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(bin, []byte("\x7fELF static syncer"), 0o755))
	require.NoError(t, os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644))
	return Options{Binary: bin, CAFile: ca, Version: "v0.1.0", Arch: "amd64"}
}

// untar unpacks an archive written by WriteArchive.
func untar(t *testing.T, archive, dir string) {
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(t, err)
		p := filepath.Join(dir, hdr.Name)
		if hdr.Typeflag == tar.TypeDir {
			require.NoError(t, os.MkdirAll(p, 0o755))
			continue
		}
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, data, 0o644))
	}
}

func TestArchiveIsARunnableNonrootImageWithOneBinaryLayer(t *testing.T) {
	out := filepath.Join(t.TempDir(), "image.tar")
	img, err := Build(inputs(t))
	require.NoError(t, err)
	require.NoError(t, WriteArchive(img, out))

	dir := t.TempDir()
	untar(t, out, dir)
	idx, err := layout.ImageIndexFromPath(dir)
	require.NoError(t, err)
	m, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Len(t, m.Manifests, 1)
	got, err := idx.Image(m.Manifests[0].Digest)
	require.NoError(t, err)

	cfg, err := got.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "65532:65532", cfg.Config.User)
	assert.Equal(t, []string{"/usr/local/bin/syncer"}, cfg.Config.Entrypoint)
	assert.Equal(t, "linux", cfg.OS)
	assert.Equal(t, "v0.1.0", cfg.Config.Labels["org.opencontainers.image.version"])

	layers, err := got.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 2, "base layer and binary layer")
	links := map[string]string{}
	files := func(i int) map[string]int64 {
		rc, err := layers[i].Uncompressed()
		require.NoError(t, err)
		defer rc.Close()
		out := map[string]int64{}
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				return out
			}
			require.NoError(t, err)
			switch hdr.Typeflag {
			case tar.TypeReg:
				out[hdr.Name] = hdr.Mode
			case tar.TypeSymlink:
				links[hdr.Name] = hdr.Linkname
			}
		}
	}
	assert.Equal(t, map[string]int64{"usr/local/bin/syncer": 0o755}, files(1), "the binary layer holds the binary only")
	assert.Equal(t, map[string]string{"ko-app/syncer": "/usr/local/bin/syncer"}, links, "kcp's generated Deployment runs /ko-app/syncer")
	assert.Contains(t, files(0), "etc/ssl/certs/ca-certificates.crt")
	assert.Contains(t, files(0), "etc/passwd")
}

func TestBuildIsReproducible(t *testing.T) {
	in := inputs(t)
	a, err := Build(in)
	require.NoError(t, err)
	b, err := Build(in)
	require.NoError(t, err)
	da, err := a.Digest()
	require.NoError(t, err)
	db, err := b.Digest()
	require.NoError(t, err)
	assert.Equal(t, da, db)
}

func TestMissingInputsAreNamed(t *testing.T) {
	in := inputs(t)
	in.Binary = "/does/not/exist"
	_, err := Build(in)
	require.ErrorContains(t, err, "read binary")
}
