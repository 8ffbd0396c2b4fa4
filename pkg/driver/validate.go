package driver

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
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
	if err := volume.CheckID(id); err != nil {
		return status.Errorf(codeFor(err), "volume ID %s: %v", untrusted.Quote(id), err)
	}
	return nil
}

// checkPath validates a target or staging path: required, absolute, no NUL,
// bounded. It returns the cleaned path.
func checkPath(what, p, volID string) (string, error) {
	if p == "" {
		return "", status.Errorf(codes.InvalidArgument, "volume %s: %s is required", untrusted.Quote(volID), what)
	}
	if len(p) > maxPathLen || strings.ContainsRune(p, 0) || !filepath.IsAbs(p) {
		return "", status.Errorf(codes.InvalidArgument, "volume %s: %s %s must be an absolute path", untrusted.Quote(volID), what, untrusted.Quote(p))
	}
	c := filepath.Clean(p)
	if c == "/" {
		return "", status.Errorf(codes.InvalidArgument, "volume %s: %s must not be /", untrusted.Quote(volID), what)
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

// capInfo is what a validated volume capability says.
type capInfo struct {
	modeInfo
	block  bool
	fsType string   // as asked (mount only); "" if none
	flags  []string // validated mount flags
}

// capabilityOf validates a request's volume capability: INVALID_ARGUMENT
// naming the volume.
func capabilityOf(id string, c *csi.VolumeCapability) (capInfo, error) {
	ci, err := checkCapability(c)
	if err != nil {
		return capInfo{}, status.Errorf(codes.InvalidArgument, "volume %s: %v", untrusted.Quote(id), err)
	}
	return ci, nil
}

// optionalCapability is capabilityOf for a request where the capability
// may be left out.
func optionalCapability(id string, c *csi.VolumeCapability) error {
	if c == nil {
		return nil
	}
	_, err := capabilityOf(id, c)
	return err
}

// requiredPath checks a request's volume ID is present and validates a
// required path of it (checkPath), in that order: required fields are
// judged before the ID's format (checkVolumeID).
func requiredPath(id, what, p string) (string, error) {
	if id == "" {
		return "", errNoVolumeID
	}
	return checkPath(what, p, id)
}

// pathAndCapability checks a request's required path (requiredPath), then
// its volume capability (capabilityOf).
func pathAndCapability(id, what, p string, c *csi.VolumeCapability) (string, capInfo, error) {
	path, err := requiredPath(id, what, p)
	if err != nil {
		return "", capInfo{}, err
	}
	ci, err := capabilityOf(id, c)
	return path, ci, err
}

// checkCapability validates one volume capability.
func checkCapability(c *csi.VolumeCapability) (capInfo, error) {
	if c == nil {
		return capInfo{}, fmt.Errorf("volume capability is required")
	}
	if c.GetAccessMode() == nil {
		return capInfo{}, fmt.Errorf("access mode is required")
	}
	mi, err := accessMode(c.GetAccessMode().GetMode())
	if err != nil {
		return capInfo{}, err
	}
	ci := capInfo{modeInfo: mi}
	switch at := c.GetAccessType().(type) {
	case *csi.VolumeCapability_Mount:
		if ci.flags, err = mountFlags(at.Mount.GetMountFlags()); err != nil {
			return capInfo{}, err
		}
		if t := at.Mount.GetFsType(); t != "" {
			// Directory volumes ignore it (the pool's filesystem is what
			// the pod sees); loop volumes are made with it.
			if _, err := fsutil.Check(t); err != nil {
				return capInfo{}, err
			}
			ci.fsType = t
		}
	case *csi.VolumeCapability_Block:
		ci.block = true
	default:
		return capInfo{}, fmt.Errorf("access type (mount or block) is required")
	}
	return ci, nil
}

// volumeShape is what CreateVolume's capabilities ask for.
type volumeShape struct {
	readerOnly   bool   // only reader-only modes
	singleWriter bool   // only SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod)
	block        bool   // raw block access
	multiNode    bool   // some multi-node writer mode
	multiReader  bool   // MULTI_NODE_READER_ONLY
	fsType       string // from the mount capabilities ("" if none)
}

// checkCapabilities validates the capabilities of a CreateVolume (or
// ValidateVolumeCapabilities): all mount or all block, one fs_type.
func checkCapabilities(caps []*csi.VolumeCapability) (volumeShape, error) {
	if len(caps) == 0 {
		return volumeShape{}, fmt.Errorf("volume capabilities are required")
	}
	sh := volumeShape{readerOnly: true, singleWriter: true}
	for i, c := range caps {
		ci, err := checkCapability(c)
		if err != nil {
			return volumeShape{}, err
		}
		if i > 0 && ci.block != sh.block {
			return volumeShape{}, fmt.Errorf("block and mount access cannot be mixed in one volume")
		}
		sh.block = ci.block
		if ci.writer {
			sh.readerOnly = false
		}
		switch c.GetAccessMode().GetMode() {
		case csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER:
			sh.multiNode = true
		case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
			sh.multiReader = true
		}
		if !ci.singleWriter {
			sh.singleWriter = false
		}
		if ci.fsType != "" {
			if sh.fsType != "" && sh.fsType != ci.fsType {
				return volumeShape{}, fmt.Errorf("capabilities ask for two filesystems, %s and %s", sh.fsType, ci.fsType)
			}
			sh.fsType = ci.fsType
		}
	}
	return sh, nil
}

// bindFlags are the per-mount options a bind mount can honour.
var bindFlags = map[string]bool{
	"ro": true, "rw": true,
	"nosuid": true, "nodev": true, "noexec": true, "exec": true,
	"noatime": true, "nodiratime": true, "relatime": true, "strictatime": true,
	"nosymfollow": true,
}

// fsFlags are the further options accepted for mounting a loop volume's
// filesystem at the staging path.
var fsFlags = map[string]bool{
	"discard": true, "nodiscard": true, "lazytime": true, "nolazytime": true,
	"sync": true, "dirsync": true,
}

// mountFlags validates mount flags; each may also be a comma-separated
// list. Anything outside the whitelist is refused: a StorageClass must not
// pass arbitrary options (or suid/dev) to mount(8).
func mountFlags(in []string) ([]string, error) {
	var out []string
	for _, f := range in {
		for _, o := range strings.Split(f, ",") {
			o = strings.TrimSpace(o)
			if o == "" || o == "bind" {
				continue
			}
			if !bindFlags[o] && !fsFlags[o] {
				return nil, fmt.Errorf("mount flag %s is not supported (supported: ro, rw, nosuid, nodev, noexec, exec, noatime, nodiratime, relatime, strictatime, nosymfollow, discard, nodiscard, lazytime, nolazytime, sync, dirsync)", untrusted.Quote(o))
			}
			out = append(out, o)
		}
	}
	return out, nil
}

// onlyBindFlags keeps the flags a bind mount applies.
func onlyBindFlags(flags []string) []string {
	var out []string
	for _, f := range flags {
		if bindFlags[f] {
			out = append(out, f)
		}
	}
	return out
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

// reply answers an RPC whose work is one call that returns only an error:
// its (empty) response, or the error.
func reply[R any](resp *R, err error) (*R, error) {
	if err != nil {
		return nil, err
	}
	return resp, nil
}
