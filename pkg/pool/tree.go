package pool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
)

// maxTreeDepth caps how deep a tree copy goes. The walk is iterative (no
// recursion), but it holds two descriptors per level of the directory it is
// in; a deeper tree is refused with ErrTooDeep rather than running the
// process out of descriptors. 1024 levels of one-letter names already make
// a path of 2 KiB, past what most tools handle.
const maxTreeDepth = 1024

// ErrTooDeep is returned by a tree copy whose source nests directories
// deeper than it copies.
var ErrTooDeep = errors.New("directory tree too deep to copy")

// fileKey names an inode of the source, to find its other links.
type fileKey struct{ dev, ino uint64 }

// dirFrame is a directory of the walk: open on both sides.
type dirFrame struct {
	src, dst *os.File
	st       unix.Stat_t // the source directory's, taken before listing it
	path     string      // relative to the destination root
	names    []string
	next     int
}

// treeCopier copies one tree into another.
type treeCopier struct {
	ctx     context.Context
	o       CopyOptions
	dstRoot *os.File
	// links maps each source inode with more than one link (not a
	// directory) to the path of its first copy under dstRoot.
	links map[fileKey]string
	done  int64 // bytes of file data copied
	hit   bool  // the failpoint has been passed
}

// copyTree copies the contents of the directory src into the directory dst
// (both open; the caller closes them), then gives dst src's owner, mode,
// extended attributes and times. It never follows a symlink and never opens
// anything but regular files and directories: symlinks are made again with
// their target verbatim, FIFOs, devices and sockets by mknod, and further
// links of an inode as links to its first copy. Each item gets its owner,
// then its extended attributes, then its mode (chown clears set-ID bits),
// then its times; a directory's times are set after its contents. It checks
// ctx between files (and copySparse between chunks), and ends with one
// syncfs of dst's filesystem: cheaper than fsyncing every file, and it
// covers the directories too. It returns the bytes of file data copied
// (the data regions copySparse copies; a reflinked file's allocated bytes).
func copyTree(ctx context.Context, src, dst *os.File, o CopyOptions) (int64, error) {
	c := &treeCopier{ctx: ctx, o: o, dstRoot: dst, links: map[fileKey]string{}}
	root := &dirFrame{src: src, dst: dst}
	if err := unix.Fstat(int(src.Fd()), &root.st); err != nil {
		return 0, &os.PathError{Op: "fstat", Path: src.Name(), Err: err}
	}
	names, err := src.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	root.names = names
	stack := []*dirFrame{root}
	defer func() {
		for i, f := range stack {
			if i > 0 { // the caller closes the roots
				f.src.Close()
				f.dst.Close()
			}
		}
	}()
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		if f.next < len(f.names) {
			name := f.names[f.next]
			f.next++
			if err := ctx.Err(); err != nil {
				return c.done, err
			}
			child, err := c.copyEntry(f, name, len(stack))
			if err != nil {
				return c.done, err
			}
			if child != nil {
				stack = append(stack, child)
			}
			continue
		}
		// The directory is complete: its metadata last, so that its times
		// stay.
		if err := setMetaFd(f.src, f.dst, &f.st); err != nil {
			return c.done, fmt.Errorf("%s: %w", displayPath(f.path), err)
		}
		if len(stack) > 1 {
			f.src.Close()
			f.dst.Close()
		}
		stack = stack[:len(stack)-1]
	}
	if !c.hit {
		failpoint.Hit("snapshot-mid-copy")
	}
	if err := unix.Syncfs(int(dst.Fd())); err != nil {
		return c.done, &os.SyscallError{Syscall: "syncfs", Err: err}
	}
	return c.done, nil
}

func displayPath(rel string) string {
	if rel == "" {
		return "/"
	}
	return rel
}

// copyEntry copies the entry name of the directory f. For a directory it
// makes the copy and returns its frame, for the walk to fill.
func (c *treeCopier) copyEntry(f *dirFrame, name string, depth int) (*dirFrame, error) {
	sfd, dfd := int(f.src.Fd()), int(f.dst.Fd())
	rel := filepath.Join(f.path, name)
	var st unix.Stat_t
	if err := unix.Fstatat(sfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil // removed since the listing (a live source)
		}
		return nil, &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFDIR {
		return c.copyDir(f, name, rel, &st, depth)
	}
	var key fileKey
	if st.Nlink > 1 {
		key = fileKey{dev: st.Dev, ino: st.Ino}
		if first, ok := c.links[key]; ok {
			if err := unix.Linkat(int(c.dstRoot.Fd()), first, dfd, name, 0); err != nil {
				return nil, &os.LinkError{Op: "link", Old: first, New: rel, Err: err}
			}
			return nil, nil
		}
	}
	var err error
	switch typ {
	case unix.S_IFREG:
		err = c.copyRegular(f, name, &st)
	case unix.S_IFLNK:
		err = copySymlink(f, name, &st)
	default: // FIFO, character or block device, socket
		err = unix.Mknodat(dfd, name, typ|0o600, int(st.Rdev))
		if err == nil {
			err = setMetaAt(f.src, f.dst, name, &st)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	if st.Nlink > 1 {
		c.links[key] = rel
	}
	return nil, nil
}

// copyDir makes the directory name and opens it on both sides. Its mode
// is owner-only until its contents are in.
func (c *treeCopier) copyDir(f *dirFrame, name, rel string, st *unix.Stat_t, depth int) (*dirFrame, error) {
	if depth >= maxTreeDepth {
		return nil, fmt.Errorf("%w: %s is %d directories deep", ErrTooDeep, rel, depth)
	}
	if err := unix.Mkdirat(int(f.dst.Fd()), name, 0o700); err != nil {
		return nil, &os.PathError{Op: "mkdir", Path: rel, Err: err}
	}
	src, err := openSource(f.src, name, unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	dst, err := openAt(f.dst, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		src.Close()
		return nil, err
	}
	names, err := src.Readdirnames(-1)
	if err != nil {
		src.Close()
		dst.Close()
		return nil, err
	}
	return &dirFrame{src: src, dst: dst, st: *st, path: rel, names: names}, nil
}

// copyRegular copies a regular file's data (by FICLONE when asked and the
// file allows, else region by region keeping holes) and its metadata. The
// source is opened O_NONBLOCK: were it swapped for a FIFO since the lstat,
// the open does not hang, and fstat refuses it.
func (c *treeCopier) copyRegular(f *dirFrame, name string, st *unix.Stat_t) error {
	src, err := openSource(f.src, name, unix.O_NONBLOCK)
	if err != nil {
		return err
	}
	defer src.Close()
	var now unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &now); err != nil {
		return err
	}
	if now.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("changed from a regular file during the copy (mode %#o)", now.Mode)
	}
	dst, err := openAt(f.dst, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer dst.Close()
	cloned := false
	if c.o.Reflink {
		switch err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); {
		case err == nil:
			cloned = true
			c.done += min(now.Blocks*512, now.Size)
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL), errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOTTY):
			// This file cannot be cloned (btrfs nodatacow, say): copy it.
		default:
			return &os.PathError{Op: "FICLONE", Path: name, Err: err}
		}
	}
	if !cloned {
		base := c.done
		var progress func(int64)
		if c.o.Progress != nil {
			progress = func(n int64) { c.o.Progress(base + n) }
		}
		n, err := copySparse(c.ctx, dst, src, now.Size, progress)
		c.done += n
		if err != nil {
			return err
		}
	}
	if c.o.Progress != nil {
		c.o.Progress(c.done)
	}
	if !c.hit {
		c.hit = true
		failpoint.Hit("snapshot-mid-copy")
	}
	return setMetaFd(src, dst, st)
}

// copySymlink makes the symlink again with the same target (never read
// through) and its owner, extended attributes and times.
func copySymlink(f *dirFrame, name string, st *unix.Stat_t) error {
	buf := make([]byte, max(st.Size+1, 256))
	for {
		n, err := unix.Readlinkat(int(f.src.Fd()), name, buf)
		if err != nil {
			return &os.PathError{Op: "readlink", Path: name, Err: err}
		}
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	if err := unix.Symlinkat(string(buf), int(f.dst.Fd()), name); err != nil {
		return &os.PathError{Op: "symlink", Path: name, Err: err}
	}
	return setMetaAt(f.src, f.dst, name, st)
}

// openSource opens the entry name of the source directory dir for reading,
// never following a symlink, and without touching its access time
// (O_NOATIME, which needs the file's owner or CAP_FOWNER: without, the
// open is tried again without it).
func openSource(dir *os.File, name string, flags int) (*os.File, error) {
	f, err := openAt(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME|flags, 0)
	if errors.Is(err, unix.EPERM) {
		f, err = openAt(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|flags, 0)
	}
	return f, err
}

func openAt(dir *os.File, name string, flags int, mode uint32) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, flags|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// setMetaFd gives the open file or directory dst the owner, extended
// attributes, mode and times of src (open too; st is its stat).
func setMetaFd(src, dst *os.File, st *unix.Stat_t) error {
	fd := int(dst.Fd())
	if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
		return &os.PathError{Op: "fchown", Path: dst.Name(), Err: err}
	}
	if err := copyXattrs(fdXattrs(int(src.Fd())), fdXattrs(fd)); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, st.Mode&0o7777); err != nil {
		return &os.PathError{Op: "fchmod", Path: dst.Name(), Err: err}
	}
	return futimens(fd, st)
}

// setMetaAt gives the entry name of dst (a symlink, FIFO, device or
// socket, never followed nor opened) the owner, extended attributes, mode
// and times of the entry name of src (st is its lstat).
func setMetaAt(src, dst *os.File, name string, st *unix.Stat_t) error {
	dfd := int(dst.Fd())
	if err := unix.Fchownat(dfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "lchown", Path: name, Err: err}
	}
	// The l*xattr calls through the directories' descriptors: the
	// directory is the one open, and the last component is not followed.
	if err := copyXattrs(pathXattrs(procPath(src, name)), pathXattrs(procPath(dst, name))); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		// The entry was just made by mknod in a directory only this copy
		// writes to, so the name still is that FIFO or device.
		if err := unix.Fchmodat(dfd, name, st.Mode&0o7777, 0); err != nil {
			return &os.PathError{Op: "chmod", Path: name, Err: err}
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(dfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: name, Err: err}
	}
	return nil
}

// futimens sets the times of the open fd (utimensat with a NULL path,
// which x/sys does not offer): to the nanosecond, on any kind of file.
func futimens(fd int, st *unix.Stat_t) error {
	ts := [2]unix.Timespec{st.Atim, st.Mtim}
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return &os.SyscallError{Syscall: "utimensat", Err: e}
	}
	return nil
}

func procPath(dir *os.File, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(int(dir.Fd())) + "/" + name
}

// xattrIO lists, reads and writes the extended attributes of one file: by
// its descriptor, or, when path is set, by a path whose last component is
// not followed (l*xattr).
type xattrIO struct {
	fd   int
	path string
}

func fdXattrs(fd int) xattrIO        { return xattrIO{fd: fd} }
func pathXattrs(path string) xattrIO { return xattrIO{path: path} }

func (x xattrIO) list(d []byte) (int, error) {
	if x.path != "" {
		return unix.Llistxattr(x.path, d)
	}
	return unix.Flistxattr(x.fd, d)
}

func (x xattrIO) get(attr string, d []byte) (int, error) {
	if x.path != "" {
		return unix.Lgetxattr(x.path, attr, d)
	}
	return unix.Fgetxattr(x.fd, attr, d)
}

func (x xattrIO) set(attr string, d []byte) error {
	if x.path != "" {
		return unix.Lsetxattr(x.path, attr, d, 0)
	}
	return unix.Fsetxattr(x.fd, attr, d, 0)
}

// copyXattrs copies every extended attribute of src to dst: user.*,
// trusted.*, security.* and the POSIX ACLs (system.posix_acl_access and
// _default) alike. A filesystem without extended attributes has none to
// copy.
func copyXattrs(src, dst xattrIO) error {
	names, err := readXattr(src.list)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return nil
	}
	if err != nil {
		return &os.SyscallError{Syscall: "listxattr", Err: err}
	}
	for _, attr := range strings.Split(string(names), "\x00") {
		if attr == "" {
			continue
		}
		val, err := readXattr(func(d []byte) (int, error) { return src.get(attr, d) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the listing
		}
		if err != nil {
			return fmt.Errorf("getxattr %s: %w", attr, err)
		}
		if err := dst.set(attr, val); err != nil {
			return fmt.Errorf("setxattr %s: %w", attr, err)
		}
	}
	return nil
}

// readXattr calls read for the size, then for the value, again if the
// value grew in between.
func readXattr(read func(dest []byte) (int, error)) ([]byte, error) {
	for {
		n, err := read(nil)
		if err != nil || n == 0 {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = read(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
