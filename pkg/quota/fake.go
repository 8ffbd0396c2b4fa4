package quota

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
)

// Fake is a System for tests that run as any user. Every pool it opens
// uses method FakeProject: project IDs from the same allocator the real
// project quotas use, limits kept in memory (nothing is enforced by a
// kernel), plain directories whose usage is measured by walking them (what
// a fake may do and a node must not), unless SetUsage says otherwise. All
// pools share one ID space, as pools on one filesystem do. Set Method to None (or a path's entry in ByPath)
// for pools that cannot enforce. The zero value is not usable: NewFake.
type Fake struct {
	// Method is what Open gives a pool: FakeProject (default) or None.
	Method Method
	// ByPath overrides Method for the pools at these paths.
	ByPath map[string]Method
	// NoInodeLimits makes enforcing pools unable to limit inodes (like btrfs).
	NoInodeLimits bool
	// ApplyErr, when set, makes Apply fail with it (after the directory
	// exists), to test rollback.
	ApplyErr error

	mu     sync.Mutex
	ids    *projectIDs
	limits map[uint32]Limits
	usage  map[uint32]Usage
	dirs   map[uint32]string // the directory of each project, for the walk
}

// NewFake returns a Fake whose pools all enforce.
func NewFake() *Fake {
	return &Fake{
		Method: FakeProject,
		ids:    newProjectIDs(FirstProjectID, LastProjectID),
		limits: map[uint32]Limits{},
		usage:  map[uint32]Usage{},
		dirs:   map[uint32]string{},
	}
}

// Open returns a fake enforcer for the pool at path.
func (f *Fake) Open(path string) (Enforcer, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	f.mu.Lock()
	m, ok := f.ByPath[path]
	if !ok {
		m = f.Method
	}
	f.mu.Unlock()
	if m == None {
		return Unenforced("fakefs", "the fake filesystem of this pool cannot enforce limits"), nil
	}
	return &fakeEnforcer{f: f, info: Info{Method: FakeProject, Filesystem: "fakefs", InodeLimits: !f.NoInodeLimits}}, nil
}

// SetUsage sets what the project's directory holds, as quota accounting
// would report it.
func (f *Fake) SetUsage(projectID uint32, u Usage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u.InodesKnown = true
	f.usage[projectID] = u
}

// Limits returns the limits set for a project, if any.
func (f *Fake) Limits(projectID uint32) (Limits, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.limits[projectID]
	return l, ok
}

// Limited lists the projects that have limits, in order: after every
// volume is deleted, none.
func (f *Fake) Limited() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]uint32, 0, len(f.limits))
	for id := range f.limits {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Held reports whether the allocator holds a project ID.
func (f *Fake) Held(projectID uint32) bool {
	_, ok := f.ids.holder(projectID)
	return ok
}

type fakeEnforcer struct {
	f    *Fake
	info Info
}

func (e *fakeEnforcer) Info() Info { return e.info }

func (e *fakeEnforcer) Reserve(owner string) (Handle, error) {
	id, err := e.f.ids.take(owner)
	if err != nil {
		return Handle{}, err
	}
	return Handle{Method: FakeProject, ProjectID: id}, nil
}

func (e *fakeEnforcer) Adopt(owner string, h Handle) error {
	if err := checkMethod(FakeProject, h); err != nil {
		return err
	}
	return e.f.ids.adopt(owner, h.ProjectID)
}

func (e *fakeEnforcer) Release(h Handle) {
	if owner, ok := e.f.ids.holder(h.ProjectID); ok {
		e.f.ids.release(owner, h.ProjectID)
	}
}

// MakeDir makes a plain directory, as the project enforcer does.
func (e *fakeEnforcer) MakeDir(parent *os.File, name string, mode os.FileMode) error {
	return mkdirAt(parent, name, mode)
}

func (e *fakeEnforcer) Apply(dir *os.File, h Handle, l Limits) (Handle, error) {
	if e.f.ApplyErr != nil {
		return Handle{}, e.f.ApplyErr
	}
	if err := e.SetLimits(h, l); err != nil {
		return Handle{}, err
	}
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", dir.Fd()))
	if err != nil {
		return Handle{}, err
	}
	e.f.mu.Lock()
	e.f.dirs[h.ProjectID] = path
	e.f.mu.Unlock()
	return h, nil
}

func (e *fakeEnforcer) Identify(_ *os.File, h Handle) (Handle, error) { return h, nil }

func (e *fakeEnforcer) SetLimits(h Handle, l Limits) error {
	if err := checkMethod(FakeProject, h); err != nil {
		return err
	}
	if l.Inodes > 0 && !e.info.InodeLimits {
		return fmt.Errorf("%w: this fake pool cannot limit inodes", ErrUnsupported)
	}
	e.f.mu.Lock()
	defer e.f.mu.Unlock()
	e.f.limits[h.ProjectID] = l
	return nil
}

func (e *fakeEnforcer) Usage(h Handle) (Usage, error) {
	if err := checkMethod(FakeProject, h); err != nil {
		return Usage{}, err
	}
	e.f.mu.Lock()
	u, ok := e.f.usage[h.ProjectID]
	dir := e.f.dirs[h.ProjectID]
	e.f.mu.Unlock()
	if ok || dir == "" {
		u.InodesKnown = true
		return u, nil
	}
	return walkUsage(dir)
}

// walkUsage adds up what the files below dir occupy, as quota accounting
// counts them (allocated blocks, one inode each), never following links.
func walkUsage(dir string) (Usage, error) {
	u := Usage{InodesKnown: true}
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			u.Bytes += st.Blocks * 512
		}
		u.Inodes++
		return nil
	})
	return u, err
}

func (e *fakeEnforcer) Clear(h Handle) error {
	e.f.mu.Lock()
	defer e.f.mu.Unlock()
	delete(e.f.limits, h.ProjectID)
	delete(e.f.usage, h.ProjectID)
	delete(e.f.dirs, h.ProjectID)
	return nil
}

func (e *fakeEnforcer) Close() error { return nil }
