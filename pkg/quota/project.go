package quota

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// projectEnforcer limits directories with XFS or ext4 project quotas.
type projectEnforcer struct {
	info Info
	pool *os.File // the pool directory, held open for quotactl_fd
	q    quotactlTarget
	ids  *projectIDs
	ext4 bool // ext4 takes the VFS commands (Q_SETQUOTA), XFS its own
}

// maxForeignSkips bounds how many IDs used outside hostvol Reserve skips
// in one call before it gives up.
const maxForeignSkips = 1000

func (e *projectEnforcer) Info() Info { return e.info }

// Reserve takes the lowest free project ID. An ID that already has usage or
// limits on the filesystem belongs to someone else (an admin's project, or
// data whose record was lost): it is skipped and never handed out.
func (e *projectEnforcer) Reserve(owner string) (Handle, error) {
	for range maxForeignSkips {
		id, err := e.ids.take(owner)
		if err != nil {
			return Handle{}, err
		}
		d, err := e.get(id)
		if err != nil {
			e.ids.release(owner, id)
			return Handle{}, fmt.Errorf("read quota of project %d: %w", id, err)
		}
		if d.used.Bytes == 0 && d.used.Inodes == 0 && d.limits == (Limits{}) {
			return Handle{Method: e.info.Method, ProjectID: id}, nil
		}
		klog.InfoS("Skipping a project ID that is in use outside hostvol", "projectID", id, "usedBytes", d.used.Bytes, "usedInodes", d.used.Inodes, "limitBytes", d.limits.Bytes, "limitInodes", d.limits.Inodes)
		e.ids.markForeign(id)
	}
	return Handle{}, fmt.Errorf("%w: %d project IDs in a row are in use outside hostvol", ErrExhausted, maxForeignSkips)
}

func (e *projectEnforcer) Adopt(owner string, h Handle) error {
	if err := checkMethod(e.info.Method, h); err != nil {
		return err
	}
	if h.ProjectID == 0 {
		return fmt.Errorf("handle %s has no project ID", h)
	}
	return e.ids.adopt(owner, h.ProjectID)
}

func (e *projectEnforcer) Release(h Handle) {
	if h.Method != e.info.Method || h.ProjectID == 0 {
		return
	}
	if owner, ok := e.ids.holder(h.ProjectID); ok {
		e.ids.release(owner, h.ProjectID)
	}
}

// MakeDir makes a plain directory: a project quota needs nothing more.
func (e *projectEnforcer) MakeDir(parent *os.File, name string, mode os.FileMode) error {
	return mkdirAt(parent, name, mode)
}

// mkdirAt is mkdirat(2): name in the open directory parent.
func mkdirAt(parent *os.File, name string, mode os.FileMode) error {
	if err := unix.Mkdirat(int(parent.Fd()), name, uint32(mode.Perm())); err != nil {
		return &os.PathError{Op: "mkdir", Path: name, Err: err}
	}
	return nil
}

// Apply sets the limits first and the directory's project second, so that
// the directory never belongs to a project without its limit.
func (e *projectEnforcer) Apply(dir *os.File, h Handle, l Limits) (Handle, error) {
	if err := e.SetLimits(h, l); err != nil {
		return Handle{}, err
	}
	if err := setProject(int(dir.Fd()), h.ProjectID); err != nil {
		return Handle{}, err
	}
	return h, nil
}

func (e *projectEnforcer) Identify(_ *os.File, h Handle) (Handle, error) { return h, nil }

func (e *projectEnforcer) SetLimits(h Handle, l Limits) error {
	if err := checkMethod(e.info.Method, h); err != nil {
		return err
	}
	if h.ProjectID == 0 {
		return fmt.Errorf("handle %s has no project ID", h)
	}
	if err := e.set(h.ProjectID, l); err != nil {
		return fmt.Errorf("set limits of project %d: %w", h.ProjectID, err)
	}
	return nil
}

func (e *projectEnforcer) Usage(h Handle) (Usage, error) {
	if err := checkMethod(e.info.Method, h); err != nil {
		return Usage{}, err
	}
	d, err := e.get(h.ProjectID)
	if err != nil {
		return Usage{}, fmt.Errorf("read quota of project %d: %w", h.ProjectID, err)
	}
	return d.used, nil
}

// Clear removes the project's limits. With its files gone and no limits,
// the kernel forgets the project's quota entry.
func (e *projectEnforcer) Clear(h Handle) error {
	if h.ProjectID == 0 {
		return nil
	}
	return e.SetLimits(h, Limits{})
}

func (e *projectEnforcer) Close() error { return e.pool.Close() }

// dquot is one project's quota entry.
type dquot struct {
	used   Usage
	limits Limits
}

func (e *projectEnforcer) get(id uint32) (dquot, error) {
	if e.ext4 {
		var dq ifDqblk
		if err := e.q.call(prjCmd(qGetQuota), id, unsafe.Pointer(&dq)); err != nil {
			return dquot{}, err
		}
		return dquot{
			used:   Usage{Bytes: int64(dq.CurSpace), Inodes: int64(dq.CurInodes), InodesKnown: true},
			limits: Limits{Bytes: int64(dq.BHardlimit) * vfsBlock, Inodes: int64(dq.IHardlimit)},
		}, nil
	}
	var dq fsDiskQuota
	err := e.q.call(prjCmd(qXGetQuota), id, unsafe.Pointer(&dq))
	if errors.Is(err, unix.ENOENT) {
		// XFS has no entry for a project without files or limits.
		return dquot{used: Usage{InodesKnown: true}}, nil
	}
	if err != nil {
		return dquot{}, err
	}
	return dquot{
		used:   Usage{Bytes: int64(dq.Bcount) * basicBlock, Inodes: int64(dq.Icount), InodesKnown: true},
		limits: Limits{Bytes: int64(dq.BlkHardlimit) * basicBlock, Inodes: int64(dq.InoHardlimit)},
	}, nil
}

// set sets the hard limits and clears the soft ones (a write fails at the
// hard limit, with no grace period in between). Byte limits round up to
// the interface's unit.
func (e *projectEnforcer) set(id uint32, l Limits) error {
	if l.Bytes < 0 || l.Inodes < 0 {
		return fmt.Errorf("negative limits %+v", l)
	}
	if e.ext4 {
		dq := ifDqblk{
			BHardlimit: uint64((l.Bytes + vfsBlock - 1) / vfsBlock),
			IHardlimit: uint64(l.Inodes),
			Valid:      qifLimits,
		}
		return e.q.call(prjCmd(qSetQuota), id, unsafe.Pointer(&dq))
	}
	dq := fsDiskQuota{
		Version:      fsDquotVersion,
		Flags:        fsProjQuota,
		Fieldmask:    fsDqBHard | fsDqBSoft | fsDqIHard | fsDqISoft,
		ID:           id,
		BlkHardlimit: uint64((l.Bytes + basicBlock - 1) / basicBlock),
		InoHardlimit: uint64(l.Inodes),
	}
	return e.q.call(prjCmd(qXSetQLim), id, unsafe.Pointer(&dq))
}
