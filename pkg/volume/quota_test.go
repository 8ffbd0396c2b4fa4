package volume_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// These tests run as any user: quota.Fake keeps project IDs (from the real
// allocator) and limits in memory. test/quota and test/vmtests run the same
// paths against btrfs, XFS and ext4.

// openLimited opens and loads a Manager on e whose pools are limited by q.
func (e *env) openLimited(t *testing.T, q quota.System) *volume.Manager {
	t.Helper()
	m, err := volume.New(volume.Config{NodeID: "node", StateDir: e.stateDir, Pools: []*pool.Pool{e.pool}, Mounter: e.mounter, Quota: q})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	require.NoError(t, m.Load())
	return m
}

func unlimitedFake() *quota.Fake {
	f := quota.NewFake()
	f.Method = quota.None
	return f
}

func TestSizeLimitPolicy(t *testing.T) {
	withInodes := func(r volume.CreateRequest, n int64) volume.CreateRequest {
		r.InodeLimit = n
		return r
	}
	withPolicy := func(r volume.CreateRequest, sl volume.SizeLimit) volume.CreateRequest {
		r.SizeLimit = sl
		return r
	}
	noInodes := quota.NewFake()
	noInodes.NoInodeLimits = true
	cases := []struct {
		name        string
		q           quota.System
		req         volume.CreateRequest
		wantErr     error
		wantLimited bool
	}{
		{name: "enforcing_pool_required", q: quota.NewFake(), req: withPolicy(req("v"), volume.SizeLimitRequired), wantLimited: true},
		{name: "enforcing_pool_optional_is_limited_too", q: quota.NewFake(), req: withPolicy(req("v"), volume.SizeLimitOptional), wantLimited: true},
		{name: "unlimited_pool_required", q: unlimitedFake(), req: withPolicy(req("v"), volume.SizeLimitRequired), wantErr: volume.ErrNoSizeLimit},
		{name: "unlimited_pool_optional", q: unlimitedFake(), req: withPolicy(req("v"), volume.SizeLimitOptional)},
		{name: "unlimited_pool_unset_is_optional", q: unlimitedFake(), req: req("v")},
		{name: "no_quota_system_required", q: nil, req: withPolicy(req("v"), volume.SizeLimitRequired), wantErr: volume.ErrNoSizeLimit},
		{name: "inode_limit_required_without_inode_limits", q: noInodes, req: withInodes(withPolicy(req("v"), volume.SizeLimitRequired), 100), wantErr: volume.ErrNoSizeLimit},
		{name: "inode_limit_optional_without_inode_limits", q: noInodes, req: withInodes(withPolicy(req("v"), volume.SizeLimitOptional), 100), wantLimited: true},
		{name: "inode_limit_required", q: quota.NewFake(), req: withInodes(withPolicy(req("v"), volume.SizeLimitRequired), 100), wantLimited: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			m := e.openLimited(t, tc.q)
			v, err := m.Controller.Create(tc.req)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.ErrorIs(t, err, volume.ErrNotAllowed, "FAILED_PRECONDITION")
				require.Contains(t, err.Error(), `pool "default"`)
				require.NoDirExists(t, e.pool.DirPath(volumeid.FromName(tc.req.Name)))
				require.Empty(t, keys(t, e.records(t)), "nothing is written for a refused volume")
				require.ErrorIs(t, m.Controller.CheckSizeLimit(pool.DefaultName, tc.req.SizeLimit, tc.req.InodeLimit), volume.ErrNoSizeLimit)
				return
			}
			require.NoError(t, err)
			require.NoError(t, m.Controller.CheckSizeLimit(pool.DefaultName, tc.req.SizeLimit, tc.req.InodeLimit))
			require.Equal(t, tc.wantLimited, v.Quota != nil, "limited: %+v", v.Quota)
			got, err := m.Controller.Get(v.ID)
			require.NoError(t, err)
			require.Equal(t, v, got, "the record carries the limit")
			if f, ok := tc.q.(*quota.Fake); ok && v.Quota != nil {
				l, ok := f.Limits(v.Quota.ProjectID)
				require.True(t, ok)
				want := quota.Limits{Bytes: v.CapacityBytes}
				if !f.NoInodeLimits {
					want.Inodes = tc.req.InodeLimit
				}
				require.Equal(t, want, l)
			}
			require.NoError(t, m.Controller.Delete(v.ID))
		})
	}
}

func TestSizeLimitIsPartOfIdempotency(t *testing.T) {
	e := newEnv(t)
	m := e.openLimited(t, quota.NewFake())
	r := req("v")
	r.SizeLimit = volume.SizeLimitRequired
	v, err := m.Controller.Create(r)
	require.NoError(t, err)
	again, err := m.Controller.Create(r)
	require.NoError(t, err)
	require.Equal(t, v, again)
	opt := r
	opt.SizeLimit = volume.SizeLimitOptional
	_, err = m.Controller.Create(opt)
	require.ErrorIs(t, err, volume.ErrAlreadyExists, "same name, other sizeLimit")
	inodes := r
	inodes.InodeLimit = 10
	_, err = m.Controller.Create(inodes)
	require.ErrorIs(t, err, volume.ErrAlreadyExists, "same name, other inodeLimit")
	unset := req("u")
	_, err = m.Controller.Create(unset)
	require.NoError(t, err)
	unset.SizeLimit = volume.SizeLimitOptional
	_, err = m.Controller.Create(unset)
	require.NoError(t, err, "an unset sizeLimit is optional")
}

// TestProjectIDsConcurrentCreate creates 16 volumes at once: each gets a
// project ID of its own, the lowest ones.
func TestProjectIDsConcurrentCreate(t *testing.T) {
	e := newEnv(t)
	f := quota.NewFake()
	m := e.openLimited(t, f)
	const n = 16
	vols := make([]volume.Volume, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vols[i], errs[i] = m.Controller.Create(req(fmt.Sprintf("vol-%02d", i)))
		}()
	}
	wg.Wait()
	var ids []uint32
	for i := range n {
		require.NoError(t, errs[i])
		require.NotNil(t, vols[i].Quota)
		ids = append(ids, vols[i].Quota.ProjectID)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for i, id := range ids {
		require.Equal(t, quota.FirstProjectID+uint32(i), id, "distinct IDs, lowest first: %v", ids)
	}
	require.Len(t, f.Limited(), n)
}

// TestProjectIDLifecycle: an ID is held while any record names it, also
// across a restart, and is free again, its limits cleared, once the
// volume is deleted.
func TestProjectIDLifecycle(t *testing.T) {
	e := newEnv(t)
	f := quota.NewFake()
	m := e.openLimited(t, f)
	a, err := m.Controller.Create(req("a"))
	require.NoError(t, err)
	b, err := m.Controller.Create(req("b"))
	require.NoError(t, err)
	require.Equal(t, quota.FirstProjectID, a.Quota.ProjectID)
	require.Equal(t, quota.FirstProjectID+1, b.Quota.ProjectID)

	require.NoError(t, m.Controller.Delete(a.ID))
	_, limited := f.Limits(a.Quota.ProjectID)
	require.False(t, limited, "the deleted volume's limits are cleared")
	require.False(t, f.Held(a.Quota.ProjectID), "and its ID released")
	c, err := m.Controller.Create(req("c"))
	require.NoError(t, err)
	require.Equal(t, a.Quota.ProjectID, c.Quota.ProjectID, "the lowest free ID is reused")

	// A restart: the allocator is rebuilt from the records.
	f2 := quota.NewFake()
	m2 := e.openLimited(t, f2)
	require.True(t, f2.Held(b.Quota.ProjectID))
	require.True(t, f2.Held(c.Quota.ProjectID))
	d, err := m2.Controller.Create(req("d"))
	require.NoError(t, err)
	require.Equal(t, quota.FirstProjectID+2, d.Quota.ProjectID, "never an ID a record holds")
	for _, id := range []string{b.ID, c.ID, d.ID} {
		require.NoError(t, m2.Controller.Delete(id))
	}
	require.Empty(t, f2.Limited())
	for id := quota.FirstProjectID; id < quota.FirstProjectID+3; id++ {
		require.False(t, f2.Held(id))
	}
}

// TestLoadClearsInterruptedQuotas: records a crash left "creating" or
// "deleting" hold their project IDs until start-up has removed their data
// and cleared their limits; then the IDs are free.
func TestLoadClearsInterruptedQuotas(t *testing.T) {
	e := newEnv(t)
	s := e.records(t)
	f := quota.NewFake()
	ready := record("ready", volume.StateReady)
	ready.Quota = &quota.Handle{Method: quota.FakeProject, ProjectID: quota.FirstProjectID + 1}
	creating := record("creating", volume.StateCreating)
	creating.Quota = &quota.Handle{Method: quota.FakeProject, ProjectID: quota.FirstProjectID}
	deleting := record("deleting", volume.StateDeleting)
	deleting.Quota = &quota.Handle{Method: quota.FakeProject, ProjectID: quota.FirstProjectID + 2}
	for _, v := range []volume.Volume{ready, creating, deleting} {
		require.NoError(t, s.Put(v.ID, v))
		require.NoError(t, os.Mkdir(e.pool.DirPath(v.ID), 0o777))
		require.NoError(t, os.WriteFile(filepath.Join(e.pool.DirPath(v.ID), "f"), []byte("x"), 0o644))
	}
	// What the interrupted operations had set.
	enf, err := f.Open(e.poolDir)
	require.NoError(t, err)
	for _, v := range []volume.Volume{ready, creating, deleting} {
		require.NoError(t, enf.SetLimits(*v.Quota, quota.Limits{Bytes: mib}))
	}

	m := e.openLimited(t, f)
	for _, v := range []volume.Volume{creating, deleting} {
		require.NoDirExists(t, e.pool.DirPath(v.ID))
		_, limited := f.Limits(v.Quota.ProjectID)
		require.False(t, limited, "%s: limits cleared", v.Name)
		require.False(t, f.Held(v.Quota.ProjectID), "%s: ID released", v.Name)
	}
	require.True(t, f.Held(ready.Quota.ProjectID))
	_, limited := f.Limits(ready.Quota.ProjectID)
	require.True(t, limited)
	v, err := m.Controller.Create(req("new"))
	require.NoError(t, err)
	require.Equal(t, quota.FirstProjectID, v.Quota.ProjectID, "the rolled-back creation's ID is free again")
}

// TestFailedApplyRollsBack: when the limit cannot be set, nothing of the
// volume is left: no directory, no record, no limit, no held ID.
func TestFailedApplyRollsBack(t *testing.T) {
	e := newEnv(t)
	f := quota.NewFake()
	f.ApplyErr = errors.New("injected: quotactl failed")
	m := e.openLimited(t, f)
	_, err := m.Controller.Create(req("v"))
	require.ErrorContains(t, err, "injected")
	require.NoDirExists(t, e.pool.DirPath(volumeid.FromName("v")))
	require.Empty(t, keys(t, e.records(t)))
	require.Empty(t, f.Limited())
	require.False(t, f.Held(quota.FirstProjectID))
	f.ApplyErr = nil
	v, err := m.Controller.Create(req("v"))
	require.NoError(t, err)
	require.Equal(t, quota.FirstProjectID, v.Quota.ProjectID)
}

func TestExpandRaisesLimit(t *testing.T) {
	e := newEnv(t)
	f := quota.NewFake()
	m := e.openLimited(t, f)
	r := req("v")
	r.InodeLimit = 50
	v, err := m.Controller.Create(r)
	require.NoError(t, err)
	size, nodeStep, err := m.Controller.Expand(v.ID, 4*mib, 0)
	require.NoError(t, err)
	require.False(t, nodeStep, "a limited directory grows without a node step")
	require.Equal(t, 4*mib, size)
	l, _ := f.Limits(v.Quota.ProjectID)
	require.Equal(t, quota.Limits{Bytes: 4 * mib, Inodes: 50}, l)
	_, _, err = m.Controller.Expand(v.ID, mib, 2*mib)
	require.ErrorIs(t, err, volume.ErrOutOfRange, "no shrinking")
	l, _ = f.Limits(v.Quota.ProjectID)
	require.Equal(t, 4*mib, l.Bytes)
}

// TestLimitedStatsAndPromises: NodeGetVolumeStats and promised capacity of
// a limited directory come from its quota usage.
func TestLimitedStatsAndPromises(t *testing.T) {
	e := newEnv(t)
	f := quota.NewFake()
	m := e.openLimited(t, f)
	r := req("v")
	r.RequiredBytes = 8 * mib
	r.InodeLimit = 100
	v, err := m.Controller.Create(r)
	require.NoError(t, err)
	target := filepath.Join(e.dir, "target")
	require.NoError(t, m.Node.Publish(publishReq(v.ID, target)))

	f.SetUsage(v.Quota.ProjectID, quota.Usage{Bytes: 3 * mib, Inodes: 7})
	st, err := m.Node.Stats(v.ID, target)
	require.NoError(t, err)
	require.Equal(t, volume.Stats{
		TotalBytes: 8 * mib, UsedBytes: 3 * mib, AvailableBytes: 5 * mib,
		TotalInodes: 100, UsedInodes: 7, FreeInodes: 93,
	}, st)

	f.SetUsage(v.Quota.ProjectID, quota.Usage{Bytes: 9 * mib, Inodes: 101})
	st, err = m.Node.Stats(v.ID, target)
	require.NoError(t, err)
	require.Zero(t, st.AvailableBytes, "over the limit (ext4 lets CAP_SYS_RESOURCE exceed it): none available")
	require.Zero(t, st.FreeInodes)

	// Promised capacity: what the volume may still grow into, read at
	// start-up (and by the periodic refresh) from its quota usage.
	require.NoError(t, m.Node.Unpublish(v.ID, target))
	promised := func(usage int64) int64 {
		f.SetUsage(v.Quota.ProjectID, quota.Usage{Bytes: usage})
		for _, pf := range e.openLimited(t, f).Controller.PoolFigures() {
			if pf.Name == pool.DefaultName {
				return pf.PromisedBytes
			}
		}
		t.Fatal("no figures for the default pool")
		return 0
	}
	require.Equal(t, 6*mib, promised(2*mib))
	require.Equal(t, 2*mib, promised(6*mib))
	require.Zero(t, promised(9*mib), "a volume over its limit promises nothing more")
}

func TestEnforcementReported(t *testing.T) {
	e := newEnv(t)
	m := e.openLimited(t, unlimitedFake())
	info, err := m.Controller.Enforcement(pool.DefaultName)
	require.NoError(t, err)
	require.Equal(t, quota.None, info.Method)
	require.NotEmpty(t, info.Reason)
	_, err = m.Controller.Enforcement("nope")
	require.ErrorIs(t, err, volume.ErrPoolUnavailable)
}
