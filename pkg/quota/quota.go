// Package quota puts hard size limits on the directory volumes of a pool,
// with what the pool's filesystem offers:
//
//   - XFS and ext4: project quotas. Each volume directory gets a project ID
//     of its own (FS_IOC_FSSETXATTR with FS_XFLAG_PROJINHERIT, so that
//     everything created below inherits it) and a hard block limit (and an
//     inode limit when asked) set with quotactl on the pool's filesystem.
//   - btrfs: each volume directory is a subvolume, limited by a limit on its
//     level-0 qgroup (0/<subvolume ID>).
//
// Detection runs once per pool at start-up (System.Open); a filesystem that
// offers neither (or has them switched off) gets an Enforcer whose method
// is None. It is the only code in hostvol that calls quotactl or the btrfs
// ioctls; New builds the real System, NewFake one for unprivileged tests.
package quota

import (
	"errors"
	"fmt"
	"os"
)

// Method is how a pool limits its directory volumes.
type Method string

// Methods.
const (
	// None: the pool's filesystem cannot enforce a limit (or its quotas
	// are off).
	None Method = "none"
	// XFSProject: XFS project quota (mounted with prjquota or pquota).
	XFSProject Method = "xfs-project"
	// Ext4Project: ext4 project quota (the project and quota features,
	// mounted with prjquota).
	Ext4Project Method = "ext4-project"
	// BtrfsQgroup: a btrfs subvolume per volume with a qgroup limit
	// (quotas enabled on the filesystem).
	BtrfsQgroup Method = "btrfs-qgroup"
	// FakeProject is the Fake's method: project IDs and limits kept in
	// memory.
	FakeProject Method = "fake-project"
)

// Project IDs hostvol allocates: from FirstProjectID up, lowest free first,
// so that the small IDs admins pick by hand (/etc/projid) never collide.
const (
	FirstProjectID uint32 = 100000
	LastProjectID  uint32 = 1<<31 - 1
)

// Handle names what limits one directory. It is stored in the volume's
// record, so that start-up can find what a crash left behind.
type Handle struct {
	Method Method `json:"method"`
	// ProjectID is the directory's project (XFS, ext4).
	ProjectID uint32 `json:"projectID,omitempty"`
	// SubvolumeID is the directory's btrfs subvolume, whose qgroup is
	// 0/SubvolumeID; 0 until the subvolume exists.
	SubvolumeID uint64 `json:"subvolumeID,omitempty"`
}

func (h Handle) String() string {
	switch {
	case h.ProjectID != 0:
		return fmt.Sprintf("%s %d", h.Method, h.ProjectID)
	case h.SubvolumeID != 0:
		return fmt.Sprintf("%s 0/%d", h.Method, h.SubvolumeID)
	}
	return string(h.Method)
}

// Limits are hard limits; 0 is no limit.
type Limits struct {
	Bytes  int64
	Inodes int64
}

// Usage is what a directory holds, from quota accounting.
type Usage struct {
	Bytes int64
	// Inodes is the number of files and directories; valid only when
	// InodesKnown (btrfs qgroups count bytes only).
	Inodes      int64
	InodesKnown bool
}

// Info says how a pool's directories are limited.
type Info struct {
	Method Method
	// Filesystem is the pool's filesystem type: xfs, ext4, btrfs, tmpfs...
	Filesystem string
	// InodeLimits reports whether Limits.Inodes is enforced.
	InodeLimits bool
	// Reason explains a None method ("ext4 mounted without prjquota"), or
	// adds a note to another.
	Reason string
}

// Enforcer limits the directory volumes of one pool. Callers serialize the
// calls that concern one directory; calls for different directories may run
// in parallel.
type Enforcer interface {
	// Info says how, and on which filesystem. It does not change.
	Info() Info
	// Reserve picks what a new directory of owner (a volume ID) will be
	// limited by, before the directory exists: a free project ID, or
	// nothing yet on btrfs. The handle is held until Release.
	Reserve(owner string) (Handle, error)
	// Adopt marks a handle read from a volume record as held by owner, so
	// that Reserve never hands it out again. It fails if another owner
	// holds it.
	Adopt(owner string, h Handle) error
	// Release gives a handle back once no record holds it any more.
	Release(h Handle)
	// MakeDir creates the directory name in the open directory parent: a
	// plain directory for project quotas, a subvolume on btrfs.
	MakeDir(parent *os.File, name string, mode os.FileMode) error
	// Apply ties the new directory dir (open) to h and sets its limits. It
	// returns h completed (the subvolume ID on btrfs).
	Apply(dir *os.File, h Handle, l Limits) (Handle, error)
	// Identify completes h from its existing directory (the subvolume ID
	// of a btrfs directory made by a creation a crash interrupted).
	Identify(dir *os.File, h Handle) (Handle, error)
	// SetLimits changes the limits of a directory Apply has set up.
	SetLimits(h Handle, l Limits) error
	// Usage reads what a directory holds from quota accounting: no walk.
	Usage(h Handle) (Usage, error)
	// Clear removes what h holds in the filesystem (a project's limits, a
	// qgroup) once its directory is gone. Clearing twice is not an error.
	Clear(h Handle) error
	// Close releases the enforcer's descriptors.
	Close() error
}

// System opens the enforcer of a pool.
type System interface {
	// Open detects how the filesystem of the directory path can limit
	// directories and returns its enforcer (method None when it cannot).
	// An error means the detection itself failed (path unreadable).
	Open(path string) (Enforcer, error)
}

// ErrUnsupported is returned by the None enforcer, and for a handle of
// another method than the enforcer's.
var ErrUnsupported = errors.New("size limits are not supported on this pool")

// ErrExhausted is returned by Reserve when no project ID is free.
var ErrExhausted = errors.New("no free project ID")

// ErrBusy is returned by Clear when the filesystem is not done with the
// directory yet (btrfs: a deleted subvolume the cleaner has not dropped);
// calling Clear again later succeeds.
var ErrBusy = errors.New("quota busy")

// Unenforced is an enforcer for a pool that limits nothing.
func Unenforced(filesystem, reason string) Enforcer {
	return unenforced{info: Info{Method: None, Filesystem: filesystem, Reason: reason}}
}

type unenforced struct{ info Info }

func (u unenforced) Info() Info { return u.info }
func (u unenforced) Reserve(string) (Handle, error) {
	return Handle{}, u.err()
}
func (u unenforced) Adopt(string, Handle) error { return nil }
func (u unenforced) Release(Handle)             {}
func (u unenforced) MakeDir(*os.File, string, os.FileMode) error {
	return u.err()
}
func (u unenforced) Apply(*os.File, Handle, Limits) (Handle, error) {
	return Handle{}, u.err()
}
func (u unenforced) Identify(_ *os.File, h Handle) (Handle, error) { return h, nil }
func (u unenforced) SetLimits(Handle, Limits) error                { return u.err() }
func (u unenforced) Usage(Handle) (Usage, error)                   { return Usage{}, u.err() }
func (u unenforced) Clear(Handle) error                            { return nil }
func (u unenforced) Close() error                                  { return nil }

func (u unenforced) err() error {
	return fmt.Errorf("%w (%s: %s)", ErrUnsupported, u.info.Filesystem, u.info.Reason)
}

// checkMethod refuses a handle made by another method.
func checkMethod(want Method, h Handle) error {
	if h.Method != want {
		return fmt.Errorf("%w: handle %s belongs to %s, this pool uses %s", ErrUnsupported, h, h.Method, want)
	}
	return nil
}
