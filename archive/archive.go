// Package archive writes an image as a docker-archive tar: the format `docker save` wrote
// before Docker 25, which `docker load`, skopeo (docker-archive:) and most other tools read.
//
// It is a package of its own because writing that format is neither parsing (package
// manifest, which computes the legacy v1 ids the archive is named by) nor transfer
// (package layers, which fetches and verifies the blobs the archive is made from).
//
// The archive holds, in the order docker's directory walk gives:
//
//	<config hex>.json          the image config, byte for byte
//	<v1 id>/VERSION            "1.0"
//	<v1 id>/json               the legacy image JSON docker writes for that layer
//	<v1 id>/layer.tar          the layer, uncompressed (a symlink to the first copy
//	                           when the same diffID appears twice)
//	manifest.json              [{"Config":…,"RepoTags":[…],"Layers":["<v1 id>/layer.tar",…]}]
//	repositories               {"repo":{"tag":"<top v1 id>"}}, only when there are tags
//
// The output is deterministic: uid/gid 0, modes and mtimes as docker sets them (the
// config's created time, whole seconds, for the config and layer folders; the Unix epoch
// for manifest.json and repositories).
package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

// Errors of this package wrap the module's sentinels: pullkit.ErrInvalid for an
// inconsistent DockerImage, a config that does not parse or a layer that does not
// decompress; pullkit.ErrSizeMismatch for a layer whose content is not the size it was
// said to be; pullkit.ErrDigestMismatch for a layer whose content is not the diffID the
// config names.

// DockerImage is what WriteDockerArchive needs to write one image.
type DockerImage struct {
	// RepoTags name the image, e.g. "busybox:latest", "docker.io/library/busybox" or
	// "quay.io/org/app:v1". A name without a tag gets "latest"; digest references are
	// refused. Docker Hub names are written in docker's short form ("busybox:latest",
	// "org/app:v1"). No tags gives an untagged archive (no repositories file).
	RepoTags []string
	// Config is the image config, byte for byte as fetched; its rootfs.diff_ids decide
	// the layers.
	Config []byte
	// Layers are the image's layers, base first, one per rootfs.diff_ids entry.
	Layers []Layer
}

// Layer is one layer of a DockerImage.
type Layer struct {
	// DiffID is the layer's diffID if the caller knows it; when set it must be the one
	// the config names at this position. The content is checked against the config's
	// diffID either way.
	DiffID digest.Digest
	// Size is the size of the uncompressed tar when known, 0 when not (a layer tar is
	// never empty). When it is unknown the layer is read twice: once to measure and
	// verify it, once to write it.
	Size int64
	// Open returns the uncompressed layer tar from its start; it may be called more than
	// once. Uncompressed turns a stored (compressed) blob into what Open must return.
	Open func() (io.ReadCloser, error)
}

// manifestItem is one entry of manifest.json, with docker's field names and order.
type manifestItem struct {
	Config   string
	RepoTags []string
	Layers   []string
}

const (
	legacyVersion    = "1.0"
	modeFile         = 0o100644 // regular file, rw-r--r--, with the type bits docker keeps
	modeDir          = 0o040755
	modeSymlink      = 0o120777
	manifestFileName = "manifest.json"
	reposFileName    = "repositories"
)

// entry is one top-level member of the archive (a file or a layer folder), written in
// name order as docker's directory walk does.
type entry struct {
	name  string
	write func(tw *tar.Writer) error
}

// WriteDockerArchive writes img to w as a docker-archive tar (see the package doc). Every
// layer's content is checked against the config's diffID and the size it was given; on
// an error w holds a partial archive.
func WriteDockerArchive(w io.Writer, img DockerImage) error {
	cfgDigest := digest.FromBytes(img.Config)
	fail := func(format string, args ...any) error {
		return fmt.Errorf("docker-archive of config %s: %s: %w", cfgDigest, fmt.Sprintf(format, args...), pullkit.ErrInvalid)
	}
	legacy, err := V1Layers(img.Config)
	if err != nil {
		return fmt.Errorf("docker-archive: %w", err)
	}
	if len(img.Layers) != len(legacy) {
		return fail("%d layers given, config has %d diff_ids", len(img.Layers), len(legacy))
	}
	for i, l := range img.Layers {
		if l.Open == nil {
			return fail("layer %d (%s) has no opener", i, legacy[i].DiffID)
		}
		if l.DiffID != "" && l.DiffID != legacy[i].DiffID {
			return fail("layer %d has diffID %s, config says %s", i, l.DiffID, legacy[i].DiffID)
		}
		if l.Size < 0 {
			return fail("layer %d (%s) has negative size %d", i, legacy[i].DiffID, l.Size)
		}
	}
	tags, repos, err := familiarTags(img.RepoTags)
	if err != nil {
		return fmt.Errorf("docker-archive of config %s: %w", cfgDigest, err)
	}
	if len(legacy) > 0 {
		top := legacy[len(legacy)-1].ID.Encoded()
		for _, t := range tags {
			repos[t.repo][t.tag] = top
		}
	} else {
		repos = nil // no layer, so no v1 id for a tag to name; manifest.json still names them
	}
	mtime := createdTime(img.Config)

	var entries []entry
	cfgName := cfgDigest.Encoded() + ".json"
	entries = append(entries, entry{cfgName, func(tw *tar.Writer) error {
		return writeFile(tw, cfgName, mtime, img.Config)
	}})
	item := manifestItem{Config: cfgName, Layers: []string{}}
	firstPath := map[digest.Digest]string{} // diffID -> first layer.tar holding it
	for i := range legacy {
		l, in := legacy[i], img.Layers[i]
		dir := l.ID.Encoded()
		layerPath := dir + "/layer.tar"
		item.Layers = append(item.Layers, layerPath)
		link, dup := firstPath[l.DiffID]
		if !dup {
			firstPath[l.DiffID] = layerPath
		}
		entries = append(entries, entry{dir, func(tw *tar.Writer) error {
			if err := writeHeader(tw, &tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: modeDir, ModTime: mtime}); err != nil {
				return err
			}
			if err := writeFile(tw, dir+"/VERSION", mtime, []byte(legacyVersion)); err != nil {
				return err
			}
			if err := writeFile(tw, dir+"/json", mtime, l.JSON); err != nil {
				return err
			}
			if dup {
				return writeHeader(tw, &tar.Header{Typeflag: tar.TypeSymlink, Name: layerPath, Linkname: "../" + link, Mode: modeSymlink, ModTime: mtime})
			}
			if err := writeLayer(tw, layerPath, mtime, in, i, l.DiffID); err != nil {
				return fmt.Errorf("docker-archive of config %s: %w", cfgDigest, err)
			}
			return nil
		}})
	}
	for _, t := range tags {
		item.RepoTags = append(item.RepoTags, t.String())
	}
	manifestJSON, err := encodeJSON([]manifestItem{item})
	if err != nil {
		return err
	}
	entries = append(entries, entry{manifestFileName, func(tw *tar.Writer) error {
		return writeFile(tw, manifestFileName, time.Unix(0, 0), manifestJSON)
	}})
	if len(repos) > 0 {
		reposJSON, err := encodeJSON(repos)
		if err != nil {
			return err
		}
		entries = append(entries, entry{reposFileName, func(tw *tar.Writer) error {
			return writeFile(tw, reposFileName, time.Unix(0, 0), reposJSON)
		}})
	}

	sort.Slice(entries, func(a, b int) bool { return entries[a].name < entries[b].name })
	tw := tar.NewWriter(w)
	for _, e := range entries {
		if err := e.write(tw); err != nil {
			return err
		}
	}
	return tw.Close()
}

// encodeJSON encodes v as docker does (json.Encoder: HTML-escaped, newline-terminated).
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// createdTime is the mtime docker gives the config file and layer folders: the config's
// created time in whole seconds, or the epoch when it has none (or one before the epoch,
// which a ustar header cannot hold).
func createdTime(config []byte) time.Time {
	var c struct {
		Created time.Time `json:"created"`
	}
	epoch := time.Unix(0, 0)
	if json.Unmarshal(config, &c) != nil || c.Created.Before(epoch) {
		return epoch
	}
	return c.Created.Truncate(time.Second)
}

func writeHeader(tw *tar.Writer, h *tar.Header) error {
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("docker-archive: write %s: %w", h.Name, err)
	}
	return nil
}

func writeFile(tw *tar.Writer, name string, mtime time.Time, data []byte) error {
	if err := writeHeader(tw, &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: modeFile, Size: int64(len(data)), ModTime: mtime}); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("docker-archive: write %s: %w", name, err)
	}
	return nil
}

// writeLayer streams layer i into the archive, checking its size and diffID.
func writeLayer(tw *tar.Writer, name string, mtime time.Time, l Layer, i int, diffID digest.Digest) error {
	size := l.Size
	if size == 0 {
		// Measure (and verify) first: a tar header needs the size before the content.
		n, err := copyVerified(io.Discard, l, i, diffID, -1)
		if err != nil {
			return err
		}
		size = n
	}
	if err := writeHeader(tw, &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: modeFile, Size: size, ModTime: mtime}); err != nil {
		return err
	}
	_, err := copyVerified(tw, l, i, diffID, size)
	return err
}

// copyVerified copies the layer's content to w, exactly size bytes when size >= 0, and
// checks the sha256 of what it read against diffID. It returns the number of bytes read.
func copyVerified(w io.Writer, l Layer, i int, diffID digest.Digest, size int64) (int64, error) {
	rc, err := l.Open()
	if err != nil {
		return 0, fmt.Errorf("open layer %d (%s): %w", i, diffID, err)
	}
	defer rc.Close()
	h := sha256.New()
	src := io.TeeReader(rc, h)
	var n int64
	if size < 0 {
		n, err = io.Copy(w, src)
	} else {
		n, err = io.CopyN(w, src, size)
		if err == io.EOF {
			return n, fmt.Errorf("layer %d (%s): %w: want %d bytes, content has %d", i, diffID, pullkit.ErrSizeMismatch, size, n)
		}
		if err == nil {
			var one [1]byte
			m, rerr := io.ReadFull(rc, one[:])
			if m > 0 {
				return n, fmt.Errorf("layer %d (%s): %w: want %d bytes, content is longer", i, diffID, pullkit.ErrSizeMismatch, size)
			}
			if rerr != io.EOF {
				err = rerr
			}
		}
	}
	if err != nil {
		return n, fmt.Errorf("read layer %d (%s): %w", i, diffID, err)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != diffID {
		return n, fmt.Errorf("layer %d: %w", i, &pullkit.DigestMismatchError{What: "uncompressed layer (diffID)", Want: diffID, Got: got})
	}
	return n, nil
}

// repoTag is one tag in docker's short (familiar) form.
type repoTag struct{ repo, tag string }

func (t repoTag) String() string { return t.repo + ":" + t.tag }

// familiarTags parses the tags, drops repeats, and returns them in docker's familiar form
// with the repositories map (one empty tag map per repository) they will fill.
func familiarTags(in []string) ([]repoTag, map[string]map[string]string, error) {
	var out []repoTag
	repos := map[string]map[string]string{}
	seen := map[repoTag]bool{}
	for _, s := range in {
		if strings.Contains(s, "@") {
			return nil, nil, fmt.Errorf("repo tag %q is a digest reference, want name:tag: %w", s, pullkit.ErrInvalid)
		}
		t, err := name.NewTag(s)
		if err != nil {
			return nil, nil, fmt.Errorf("repo tag %q, want name:tag: %w: %w", s, pullkit.ErrInvalid, err)
		}
		repo := t.RepositoryStr()
		if t.RegistryStr() == name.DefaultRegistry {
			if rest, ok := strings.CutPrefix(repo, "library/"); ok && !strings.Contains(rest, "/") {
				repo = rest
			}
		} else {
			repo = t.RegistryStr() + "/" + repo
		}
		rt := repoTag{repo, t.TagStr()}
		if seen[rt] {
			continue
		}
		seen[rt] = true
		out = append(out, rt)
		if repos[repo] == nil {
			repos[repo] = map[string]string{}
		}
	}
	return out, repos, nil
}
