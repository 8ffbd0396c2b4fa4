// Package loop attaches image files to loop devices, finds and detaches them.
// It is the only code in hostvol that touches loop devices: the volume backend
// for loop-file volumes (an image file per volume) uses it through Manager,
// New builds the real one (ioctls on /dev/loop-control and /dev/loopN, sysfs
// under /sys/block) and NewFake an in-memory one for unprivileged tests.
package loop

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrNotAttached is returned (wrapped) by Refresh and Size for a
// loop device that has no backing file, or that does not exist at all.
var ErrNotAttached = errors.New("loop device not attached")

// ErrBusy is returned (wrapped) by Detach when the device is still open
// elsewhere (mounted, or held by a process): the kernel then only marks the
// device to detach itself on its last close. Calling Detach again after the
// holder is gone succeeds.
var ErrBusy = errors.New("loop device busy")

// Image identifies a backing file by device and inode: paths can differ
// between mount namespaces (the node plugin's container and the host), the
// device and inode numbers do not. Path is for messages only.
type Image struct {
	Dev, Ino uint64
	Path     string
}

// Same reports whether i and o are the same file (Path is ignored).
func (i Image) Same(o Image) bool { return i.Dev == o.Dev && i.Ino == o.Ino }

func (i Image) String() string {
	return fmt.Sprintf("%s (dev %d, ino %d)", i.Path, i.Dev, i.Ino)
}

// ImageOf identifies the open file f (fstat). Path is f.Name().
func ImageOf(f *os.File) (Image, error) {
	fi, err := f.Stat()
	if err != nil {
		return Image{}, fmt.Errorf("stat image %s: %w", f.Name(), err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Image{}, fmt.Errorf("stat image %s: no device and inode numbers", f.Name())
	}
	// st_dev is encoded like the kernel's lo_device (new_encode_dev), so the
	// two compare directly. The conversions matter where Dev and Ino are
	// 32-bit (some 32-bit architectures).
	return Image{Dev: uint64(st.Dev), Ino: uint64(st.Ino), Path: f.Name()}, nil
}

// AttachOptions tune Attach.
type AttachOptions struct {
	// DirectIO asks the loop device to bypass the page cache for its backing
	// file (no double caching). When the kernel or the backing filesystem
	// refuses, the device is attached with buffered I/O
	// (/sys/block/loopN/loop/dio says which).
	DirectIO bool
}

// Manager attaches, finds and detaches loop devices. Its methods are safe for
// concurrent use; the caller serialises work on one image (a per-volume lock).
type Manager interface {
	// Find returns the /dev/loopN backed by img, or "" if none. hint is a
	// device this image was last attached to ("" if unknown): it is checked
	// first (O(1)); only if it does not match are all loop devices scanned.
	// An error means Find could not tell: the image may be attached.
	Find(img Image, hint string) (string, error)
	// Attach attaches the open backing file to a free loop device and
	// returns its path. The caller guarantees (per-volume lock and Find
	// first) that the image is not attached already, and may close backing
	// afterwards: the device keeps its own reference.
	Attach(backing *os.File, opts AttachOptions) (string, error)
	// Detach detaches the device. A device that is not attached, or does
	// not exist, is not an error. A device still open elsewhere gives
	// ErrBusy. Pass what Find returned under the per-volume lock, never a
	// remembered path: once this image's device is detached, another
	// process may attach its own file to the same device, and Detach
	// cannot tell.
	Detach(dev string) error
	// Refresh makes the device pick up its backing file's current size.
	Refresh(dev string) error
	// Size returns the device size in bytes.
	Size(dev string) (int64, error)
	// List returns every attached loop device with its backing file's
	// identity, in device number order. It reads every device: for
	// start-up, never for one volume's operation. Devices it could not
	// read are named in the error, returned with the others.
	List() ([]Attachment, error)
}

// Attachment is an attached loop device and its backing file.
type Attachment struct {
	Device string // /dev/loopN
	Image  Image  // Path: the backing file as the attacher named it
}
