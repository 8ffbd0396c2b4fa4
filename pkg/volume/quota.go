package volume

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
)

// SizeLimit is a StorageClass's sizeLimit: what CreateVolume does with a
// directory volume when its pool cannot enforce a hard limit. Where the
// pool can, the limit is enforced either way.
type SizeLimit string

const (
	// SizeLimitRequired refuses the volume (FAILED_PRECONDITION). It is
	// the StorageClass default.
	SizeLimitRequired SizeLimit = "required"
	// SizeLimitOptional accepts the volume without a hard limit.
	SizeLimitOptional SizeLimit = "optional"
)

// orOptional is the policy of a request or record that names none.
func (s SizeLimit) orOptional() SizeLimit {
	if s == "" {
		return SizeLimitOptional
	}
	return s
}

// ErrNoSizeLimit: the pool cannot enforce the limits a directory volume's
// class requires. It wraps ErrNotAllowed (FAILED_PRECONDITION).
var ErrNoSizeLimit error = noSizeLimitError{}

type noSizeLimitError struct{}

func (noSizeLimitError) Error() string { return "size limit cannot be enforced" }

func (noSizeLimitError) Unwrap() error { return ErrNotAllowed }

// quotas are the size enforcers of the pools, by pool name: how each
// limits directory volumes. Both sides use them: the controller sets and
// clears limits, the node reads usage for stats and health.
type quotas struct {
	enforcers map[string]quota.Enforcer
}

// openEnforcers detects, once per pool, how it limits directory volumes,
// and logs it. Shared pools are not limited: project IDs are allocated per
// node, and their filesystems (NFS, CephFS) offer neither method. A
// detection that fails leaves the pool unlimited (classes that require a
// limit are then refused there), with the error in the log.
func newQuotas(sys quota.System, pools []*pool.Pool) *quotas {
	q := &quotas{enforcers: make(map[string]quota.Enforcer, len(pools))}
	for _, p := range pools {
		var enf quota.Enforcer
		switch {
		case sys == nil:
			enf = quota.Unenforced("unknown", "no quota system configured")
		case p.Shared:
			enf = quota.Unenforced("shared", "shared pools are not limited: project IDs and qgroups are per node")
		default:
			var err error
			if enf, err = sys.Open(p.Path); err != nil {
				klog.ErrorS(err, "Detecting the pool's size enforcement failed", "pool", p.Name, "path", p.Path)
				enf = quota.Unenforced("unknown", err.Error())
			}
		}
		q.enforcers[p.Name] = enf
		info := enf.Info()
		kv := []any{"pool", p.Name, "path", p.Path, "method", info.Method, "filesystem", info.Filesystem, "inodeLimits", info.InodeLimits}
		if info.Reason != "" {
			kv = append(kv, "reason", info.Reason)
		}
		klog.InfoS("Pool size enforcement", kv...)
	}
	return q
}

// close releases what the enforcers hold open (a descriptor of each
// limited pool, which keeps its filesystem busy). Call it once, after the
// last operation.
func (q *quotas) close() error {
	var errs []error
	for _, enf := range q.enforcers {
		errs = append(errs, enf.Close())
	}
	return errors.Join(errs...)
}

// Enforcement says how the named pool limits directory volumes.
func (q *quotas) Enforcement(poolName string) (quota.Info, error) {
	enf := q.enforcers[poolName]
	if enf == nil {
		return quota.Info{}, fmt.Errorf("%w: %q", ErrPoolUnavailable, poolName)
	}
	return enf.Info(), nil
}

// CheckSizeLimit reports whether a directory volume with these limits can
// be created in the pool: ErrNoSizeLimit when the class requires a limit
// the pool cannot enforce.
func (c *Controller) CheckSizeLimit(poolName string, sl SizeLimit, inodeLimit int64) error {
	p := c.pools[poolName]
	if p == nil {
		return fmt.Errorf("%w: %q", ErrPoolUnavailable, poolName)
	}
	_, err := c.sizeLimitFor(p, sl, inodeLimit)
	return err
}

// sizeLimitFor decides whether a new directory volume of the pool is
// limited (enforce), or refuses it when the class requires what the pool
// cannot do.
func (q *quotas) sizeLimitFor(p *pool.Pool, sl SizeLimit, inodeLimit int64) (enforce bool, err error) {
	info := q.enforcers[p.Name].Info()
	required := sl.orOptional() == SizeLimitRequired
	if info.Method == quota.None {
		if required {
			return false, fmt.Errorf("%w: pool %q (%s) cannot enforce a size limit on directory volumes: %s; "+
				"the StorageClass parameter sizeLimit: optional accepts volumes without one", ErrNoSizeLimit, p.Name, info.Filesystem, info.Reason)
		}
		return false, nil
	}
	if inodeLimit > 0 && !info.InodeLimits && required {
		return false, fmt.Errorf("%w: pool %q (%s, %s) cannot limit inodes (inodeLimit needs XFS or ext4 project quotas); "+
			"the StorageClass parameter sizeLimit: optional accepts volumes with their size limited only", ErrNoSizeLimit, p.Name, info.Filesystem, info.Method)
	}
	return true, nil
}

// limitedBy names what limits a volume's size, for logs.
func limitedBy(v Volume) string {
	switch {
	case v.Kind.HasImage():
		return "image size"
	case v.Quota == nil:
		return "nothing"
	}
	return v.Quota.String()
}

// limitsOf are the limits the enforcer sets for a volume of size bytes.
func limitsOf(enf quota.Enforcer, v Volume, size int64) quota.Limits {
	l := quota.Limits{Bytes: size}
	if enf.Info().InodeLimits {
		l.Inodes = v.InodeLimit
	}
	return l
}

// enforcerOf returns the enforcer that limits v, or nil when v has no
// limit or its pool no longer offers the method that made it (quotas
// switched off since; Load logs it): then v is treated as unlimited.
func (q *quotas) enforcerOf(v Volume) quota.Enforcer {
	if v.Quota == nil {
		return nil
	}
	enf := q.enforcers[v.Pool]
	if enf == nil || enf.Info().Method != v.Quota.Method {
		return nil
	}
	return enf
}

// adoptQuota marks the project ID of a record as held (Load), so that no
// other volume is given it while the record exists, whatever its state.
func (q *quotas) adoptQuota(v Volume) {
	if v.Quota == nil {
		return
	}
	enf := q.enforcerOf(v)
	if enf == nil {
		klog.ErrorS(nil, "Volume was limited by a method its pool no longer offers; treating it as unlimited", "volumeID", v.ID, "pool", v.Pool, "volumeMethod", v.Quota.Method)
		return
	}
	if err := enf.Adopt(v.ID, *v.Quota); err != nil {
		klog.ErrorS(err, "Volume record's size limit conflicts with another record", "volumeID", v.ID, "pool", v.Pool, "quota", v.Quota.String())
	}
}

// reserveQuota gives a new directory volume what will limit it (v.Quota)
// when the pool enforces limits; the returned release gives it back if
// the volume's "creating" record is never written.
func (q *quotas) reserveQuota(p *pool.Pool, v *Volume, enforce bool) (release func(), err error) {
	if !enforce {
		return func() {}, nil
	}
	enf := q.enforcers[p.Name]
	h, err := enf.Reserve(v.ID)
	if err != nil {
		return nil, fmt.Errorf("volume %s: reserve a size limit in pool %q: %w", v.ID, p.Name, err)
	}
	v.Quota = &h
	return func() { enf.Release(h) }, nil
}

// createLimitedDir makes a limited directory volume's data: the directory
// (a subvolume on btrfs) and its limits. It returns the volume with its
// quota handle completed; on error, what it got to, for the rollback.
func (q *quotas) createLimitedDir(p *pool.Pool, v Volume) (Volume, error) {
	enf := q.enforcerOf(v)
	if enf == nil {
		return v, fmt.Errorf("%w: pool %q no longer offers %s", ErrNoSizeLimit, p.Name, v.Quota.Method)
	}
	if err := p.CreateDirWith(v.ID, enf.MakeDir); err != nil {
		// An existing directory is left for the rollback, which finds
		// and clears what limits it.
		return v, fmt.Errorf("create data of %s: %w", v.ID, err)
	}
	return limitDir(p, enf, v)
}

// limitDir applies enf's limits at the volume's capacity to the existing
// data directory of v, and returns v with its quota handle completed.
func limitDir(p *pool.Pool, enf quota.Enforcer, v Volume) (Volume, error) {
	dir, err := p.OpenDir(v.ID)
	if err != nil {
		return v, fmt.Errorf("open data of %s: %w", v.ID, err)
	}
	defer dir.Close()
	h, err := enf.Apply(dir, *v.Quota, limitsOf(enf, v, v.CapacityBytes))
	if err != nil {
		return v, fmt.Errorf("limit %s to %d bytes: %w", v.ID, v.CapacityBytes, err)
	}
	v.Quota = &h
	return v, nil
}

// removeDir removes a directory volume's data. A btrfs subvolume whose ID
// the record lacks (a creation a crash interrupted) is identified first,
// and its ID written to the record before the subvolume goes, so that its
// qgroup can be removed after a crash at any later step.
func (q *quotas) removeDir(s *records.Store, p *pool.Pool, v Volume) (Volume, error) {
	if enf := q.enforcerOf(v); enf != nil && v.Quota.SubvolumeID == 0 && v.Quota.Method == quota.BtrfsQgroup {
		dir, err := p.OpenDir(v.ID)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return v, fmt.Errorf("open data of %s: %w", v.ID, err)
		default:
			h, err := enf.Identify(dir, *v.Quota)
			dir.Close()
			if err != nil {
				return v, fmt.Errorf("identify data of %s: %w", v.ID, err)
			}
			if h != *v.Quota {
				v.Quota = &h
				if err := s.Put(v.ID, v); err != nil {
					return v, err
				}
			}
		}
	}
	return v, p.RemoveDir(v.ID)
}

// clearQuota removes what limited a volume whose data is gone.
func (q *quotas) clearQuota(v Volume) error {
	enf := q.enforcerOf(v)
	if enf == nil {
		return nil
	}
	if err := enf.Clear(*v.Quota); err != nil {
		if errors.Is(err, quota.ErrBusy) {
			return fmt.Errorf("%w: volume %s: %v", ErrBusy, v.ID, err)
		}
		return fmt.Errorf("clear size limit of %s (%s): %w", v.ID, v.Quota, err)
	}
	return nil
}

// releaseQuota gives a deleted volume's project ID back.
func (q *quotas) releaseQuota(v Volume) {
	if enf := q.enforcerOf(v); enf != nil {
		enf.Release(*v.Quota)
	}
}

// setQuotaSize changes a limited directory volume's limit to size bytes.
func (q *quotas) setQuotaSize(v Volume, size int64) error {
	enf := q.enforcerOf(v)
	if enf == nil {
		return nil
	}
	if err := enf.SetLimits(*v.Quota, limitsOf(enf, v, size)); err != nil {
		return fmt.Errorf("limit %s to %d bytes: %w", v.ID, size, err)
	}
	return nil
}

// quotaUsage is what a limited directory volume holds, from quota
// accounting; ok is false for a volume without a limit.
func (q *quotas) quotaUsage(v Volume) (u quota.Usage, ok bool, err error) {
	enf := q.enforcerOf(v)
	if enf == nil {
		return quota.Usage{}, false, nil
	}
	u, err = enf.Usage(*v.Quota)
	return u, true, err
}

// limitedDirStats are NodeGetVolumeStats' figures for a limited directory
// volume: its own usage against its limit, with no walk. Without an inode
// limit the volume may use every free inode of its pool's filesystem;
// btrfs qgroups count no inodes, so those stay zero there.
func (q *quotas) limitedDirStats(p *pool.Pool, v Volume) (Stats, bool, error) {
	u, ok, err := q.quotaUsage(v)
	if !ok || err != nil {
		return Stats{}, ok, err
	}
	st := Stats{
		TotalBytes:     v.CapacityBytes,
		UsedBytes:      u.Bytes,
		AvailableBytes: max(v.CapacityBytes-u.Bytes, 0),
	}
	if !u.InodesKnown {
		return st, true, nil
	}
	st.UsedInodes = u.Inodes
	if v.InodeLimit > 0 && q.enforcers[v.Pool].Info().InodeLimits {
		st.TotalInodes = v.InodeLimit
		st.FreeInodes = max(v.InodeLimit-u.Inodes, 0)
		return st, true, nil
	}
	fs, err := p.DirStats(v.ID)
	if err != nil {
		return Stats{}, true, fmt.Errorf("stat data of %s: %w", v.ID, err)
	}
	st.FreeInodes = fs.FreeInodes
	st.TotalInodes = u.Inodes + fs.FreeInodes
	return st, true, nil
}

// quotaExhaustedBytes: a limited directory whose quota leaves less than
// this available takes no more data. Quota accounting is exact, and the
// kernel refuses the write that crosses the limit: measured after such a
// refusal, btrfs left 16 KiB, ext4 3 KiB, XFS nothing.
const quotaExhaustedBytes = 64 << 10

// limitExhausted says why a limited directory volume's limit takes no
// more data ("its size limit has 12 KiB available of 10.0 MiB"), or "".
func (q *quotas) limitExhausted(p *pool.Pool, v Volume) (string, error) {
	st, ok, err := q.limitedDirStats(p, v)
	if !ok || err != nil {
		return "", err
	}
	var out []string
	if st.AvailableBytes < quotaExhaustedBytes {
		out = append(out, fmt.Sprintf("has %s available of %s", fmtBytes(st.AvailableBytes), fmtBytes(st.TotalBytes)))
	}
	if v.InodeLimit > 0 && st.TotalInodes == v.InodeLimit && st.FreeInodes == 0 {
		out = append(out, fmt.Sprintf("has no free inode of %d", v.InodeLimit))
	}
	if len(out) == 0 {
		return "", nil
	}
	return fmt.Sprintf("its size limit (%s) %s", v.Quota, strings.Join(out, " and ")), nil
}
