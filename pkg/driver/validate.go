package driver

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// maxNameLen bounds CreateVolume names. Names are hashed into IDs and never
// reach the filesystem; the bound only keeps records small.
const maxNameLen = 1024

// maxPathLen bounds target and staging paths (Linux PATH_MAX).
const maxPathLen = 4096

// errNoVolumeID answers a request without a volume ID. Handlers check that
// every required field is present before judging the ID's format, so a
// missing field is INVALID_ARGUMENT whatever the ID.
var errNoVolumeID = status.Error(codes.InvalidArgument, "volume ID is required")

// checkVolumeID validates a volume ID from a request: missing or malformed
// IDs are INVALID_ARGUMENT, IDs hostvol never generates are NOT_FOUND.
func checkVolumeID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if err := volumeid.Validate(id); err != nil {
		return status.Errorf(codeFor(err), "volume ID %q: %v", id, err)
	}
	return nil
}

// checkPath validates a target or staging path: required, absolute, no NUL,
// bounded. It returns the cleaned path.
func checkPath(what, p, volID string) (string, error) {
	if p == "" {
		return "", status.Errorf(codes.InvalidArgument, "volume %s: %s is required", volID, what)
	}
	if len(p) > maxPathLen || strings.ContainsRune(p, 0) || !filepath.IsAbs(p) {
		return "", status.Errorf(codes.InvalidArgument, "volume %s: %s %q must be an absolute path", volID, what, p)
	}
	c := filepath.Clean(p)
	if c == "/" {
		return "", status.Errorf(codes.InvalidArgument, "volume %s: %s must not be /", volID, what)
	}
	return c, nil
}

// modeInfo describes what an access mode allows.
type modeInfo struct {
	writer       bool // may write
	singleWriter bool // ReadWriteOncePod: one publish at a time
}

func accessMode(m csi.VolumeCapability_AccessMode_Mode) (modeInfo, error) {
	switch m {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER:
		return modeInfo{writer: true}, nil
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER:
		return modeInfo{writer: true, singleWriter: true}, nil
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return modeInfo{}, nil
	default:
		return modeInfo{}, fmt.Errorf("access mode %s is not supported", m)
	}
}

// checkCapability validates one volume capability for a directory volume
// and returns its access mode's properties.
func checkCapability(c *csi.VolumeCapability) (modeInfo, error) {
	if c == nil {
		return modeInfo{}, fmt.Errorf("volume capability is required")
	}
	if c.GetAccessMode() == nil {
		return modeInfo{}, fmt.Errorf("access mode is required")
	}
	mi, err := accessMode(c.GetAccessMode().GetMode())
	if err != nil {
		return modeInfo{}, err
	}
	switch at := c.GetAccessType().(type) {
	case *csi.VolumeCapability_Mount:
		// Directory volumes have no filesystem of their own: fs_type is
		// ignored (the pool's filesystem is what the pod sees).
		if _, err := mountFlags(at.Mount.GetMountFlags()); err != nil {
			return modeInfo{}, err
		}
	case *csi.VolumeCapability_Block:
		return modeInfo{}, fmt.Errorf("block access is not supported for directory volumes")
	default:
		return modeInfo{}, fmt.Errorf("access type (mount or block) is required")
	}
	return mi, nil
}

// checkCapabilities validates a list of capabilities (CreateVolume,
// ValidateVolumeCapabilities) and reports whether they are all reader-only.
func checkCapabilities(caps []*csi.VolumeCapability) (readerOnly bool, err error) {
	if len(caps) == 0 {
		return false, fmt.Errorf("volume capabilities are required")
	}
	readerOnly = true
	for _, c := range caps {
		mi, err := checkCapability(c)
		if err != nil {
			return false, err
		}
		if mi.writer {
			readerOnly = false
		}
	}
	return readerOnly, nil
}

// allowedMountFlags are the per-mount options a bind mount can honour. Any
// other option (or one that would undo read-only) is refused: a StorageClass
// must not be able to pass arbitrary options to mount(8).
var allowedMountFlags = map[string]bool{
	"ro": true, "rw": true,
	"nosuid": true, "nodev": true, "noexec": true, "exec": true,
	"noatime": true, "nodiratime": true, "relatime": true, "strictatime": true,
	"nosymfollow": true,
}

// mountFlags validates mount flags; each may also be a comma-separated list.
func mountFlags(in []string) ([]string, error) {
	var out []string
	for _, f := range in {
		for _, o := range strings.Split(f, ",") {
			o = strings.TrimSpace(o)
			if o == "" || o == "bind" {
				continue
			}
			if !allowedMountFlags[o] {
				return nil, fmt.Errorf("mount flag %q is not supported (supported: ro, rw, nosuid, nodev, noexec, exec, noatime, nodiratime, relatime, strictatime, nosymfollow)", o)
			}
			out = append(out, o)
		}
	}
	return out, nil
}

// hasFlag reports whether flags contain f.
func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}
