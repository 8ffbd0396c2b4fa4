package quota

import (
	"fmt"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

func TestStructSizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"fsxattr", unsafe.Sizeof(fsxattr{}), 28},
		{"fs_disk_quota", unsafe.Sizeof(fsDiskQuota{}), 112},
		{"if_dqblk", unsafe.Sizeof(ifDqblk{}), 72},
		{"fs_quota_statv", unsafe.Sizeof(fsQuotaStatv{}), 160},
		{"btrfs_ioctl_vol_args", unsafe.Sizeof(btrfsVolArgs{}), 4096},
		{"btrfs_ioctl_ino_lookup_args", unsafe.Sizeof(btrfsInoLookupArgs{}), 4096},
		{"btrfs_ioctl_qgroup_limit_args", unsafe.Sizeof(btrfsQgroupLimitArgs{}), 48},
		{"btrfs_ioctl_qgroup_create_args", unsafe.Sizeof(btrfsQgroupCreateArgs{}), 16},
		{"btrfs_ioctl_fs_info_args", unsafe.Sizeof(btrfsFsInfoArgs{}), 1024},
		{"btrfs_ioctl_vol_args_v2", unsafe.Sizeof(btrfsVolArgsV2{}), 4096},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, tc.got) })
	}
}

// ioc is the kernel's _IOC(dir, type, nr, size), to check the constants.
func ioc(dir, typ, nr, size uintptr) uintptr { return dir<<30 | size<<16 | typ<<8 | nr }

func TestIoctlNumbers(t *testing.T) {
	const w, r = 1, 2
	require.EqualValues(t, ioc(r, 'X', 31, unsafe.Sizeof(fsxattr{})), fsIocFsgetxattr)
	require.EqualValues(t, ioc(w, 'X', 32, unsafe.Sizeof(fsxattr{})), fsIocFssetxattr)
	require.EqualValues(t, ioc(0, 0x94, 8, 0), btrfsIocSync)
	require.EqualValues(t, ioc(w, 0x94, 14, unsafe.Sizeof(btrfsVolArgs{})), btrfsIocSubvolCreate)
	require.EqualValues(t, ioc(w, 0x94, 15, unsafe.Sizeof(btrfsVolArgs{})), btrfsIocSnapDestroy)
	require.EqualValues(t, ioc(w, 0x94, 23, unsafe.Sizeof(btrfsVolArgsV2{})), btrfsIocSnapCreateV2)
	require.EqualValues(t, ioc(w|r, 0x94, 18, unsafe.Sizeof(btrfsInoLookupArgs{})), uintptr(btrfsIocInoLookup))
	require.EqualValues(t, ioc(r, 0x94, 31, unsafe.Sizeof(btrfsFsInfoArgs{})), uintptr(btrfsIocFsInfo))
	require.EqualValues(t, ioc(w, 0x94, 42, unsafe.Sizeof(btrfsQgroupCreateArgs{})), btrfsIocQgroupCreate)
	require.EqualValues(t, ioc(r, 0x94, 43, unsafe.Sizeof(btrfsQgroupLimitArgs{})), uintptr(btrfsIocQgroupLimit))
}

func TestProjectIDsLowestFree(t *testing.T) {
	ids := newProjectIDs(100, 110)
	for want := uint32(100); want < 104; want++ {
		got, err := ids.take(fmt.Sprint("v", want))
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	ids.release("v101", 101)
	ids.release("v102", 102)
	got, err := ids.take("a")
	require.NoError(t, err)
	require.EqualValues(t, 101, got, "the lowest released ID comes first")
	got, err = ids.take("b")
	require.NoError(t, err)
	require.EqualValues(t, 102, got)
	got, err = ids.take("c")
	require.NoError(t, err)
	require.EqualValues(t, 104, got)
}

func TestProjectIDsReleaseOnlyByOwner(t *testing.T) {
	ids := newProjectIDs(100, 110)
	id, err := ids.take("owner")
	require.NoError(t, err)
	ids.release("someone-else", id)
	owner, held := ids.holder(id)
	require.True(t, held, "an ID is released only by its holder")
	require.Equal(t, "owner", owner)
	ids.release("owner", id)
	_, held = ids.holder(id)
	require.False(t, held)
	ids.release("owner", id) // twice is harmless
	got, err := ids.take("x")
	require.NoError(t, err)
	require.Equal(t, id, got)
	got, err = ids.take("y")
	require.NoError(t, err)
	require.Equal(t, id+1, got, "a double release must not hand the ID out twice")
}

// TestProjectIDsAdopt loads IDs from records in any order (as Load reads
// them): they are never handed out, and the gaps between them are.
func TestProjectIDsAdopt(t *testing.T) {
	ids := newProjectIDs(100, 200)
	require.NoError(t, ids.adopt("v105", 105))
	require.NoError(t, ids.adopt("v102", 102))
	require.NoError(t, ids.adopt("v100", 100))
	require.NoError(t, ids.adopt("v105", 105), "adopting again for the same owner is fine")
	require.Error(t, ids.adopt("other", 105), "an ID held by another volume")
	require.NoError(t, ids.adopt("manual", 7), "an ID outside the range is held, not allocated around")
	var got []uint32
	for range 5 {
		id, err := ids.take("new")
		require.NoError(t, err)
		got = append(got, id)
	}
	require.Equal(t, []uint32{101, 103, 104, 106, 107}, got)
	ids.release("manual", 7)
	id, err := ids.take("new")
	require.NoError(t, err)
	require.EqualValues(t, 108, id, "an ID outside the range never enters it")
}

func TestProjectIDsForeign(t *testing.T) {
	ids := newProjectIDs(100, 110)
	id, err := ids.take("v")
	require.NoError(t, err)
	ids.markForeign(id)
	ids.release("v", id)
	owner, held := ids.holder(id)
	require.True(t, held, "an ID used outside hostvol stays held")
	require.Equal(t, "", owner)
	next, err := ids.take("w")
	require.NoError(t, err)
	require.Equal(t, id+1, next)
}

func TestProjectIDsExhausted(t *testing.T) {
	ids := newProjectIDs(100, 102)
	for range 3 {
		_, err := ids.take("v")
		require.NoError(t, err)
	}
	_, err := ids.take("v")
	require.ErrorIs(t, err, ErrExhausted)
	ids.release("v", 101)
	id, err := ids.take("w")
	require.NoError(t, err)
	require.EqualValues(t, 101, id)
}

// TestProjectIDsConcurrent takes and releases IDs from many goroutines:
// no ID is ever held twice at once.
func TestProjectIDsConcurrent(t *testing.T) {
	ids := newProjectIDs(FirstProjectID, LastProjectID)
	const workers, rounds = 16, 200
	var (
		mu   sync.Mutex
		live = map[uint32]string{}
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				owner := fmt.Sprintf("w%d-%d", w, i)
				id, err := ids.take(owner)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if other, dup := live[id]; dup {
					mu.Unlock()
					errs <- fmt.Errorf("ID %d handed to %s while %s holds it", id, owner, other)
					return
				}
				live[id] = owner
				mu.Unlock()
				if i%3 != 0 {
					mu.Lock()
					delete(live, id)
					mu.Unlock()
					ids.release(owner, id)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	// Freed IDs were reused: lowest free first, no ID ever went above
	// what was held at once (the survivors plus one in flight per worker).
	require.Len(t, live, workers*((rounds+2)/3))
	for id := range live {
		require.Less(t, id, FirstProjectID+uint32(len(live)+workers))
	}
}
