package testutil

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// WriteUntilRefused writes up to max bytes to a new file at path in 64 KiB
// chunks and fsyncs it, and returns how many bytes write(2) accepted and
// the error that stopped it (nil if all of max was written and synced).
func WriteUntilRefused(path string, max int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i*7 + 1) // not zeros: nothing may compress or skip them
	}
	var total int64
	for total < max {
		n, err := f.Write(buf[:min(int64(len(buf)), max-total)])
		total += int64(n)
		if err != nil {
			f.Close()
			return total, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return total, err
	}
	return total, f.Close()
}

// Errno is the errno inside err, or 0.
func Errno(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// WithoutCapSysResource runs fn on a locked OS thread whose effective
// capabilities lack CAP_SYS_RESOURCE, restoring them afterwards. The VFS
// quota code (ext4) lets that capability exceed hard limits; a pod's
// processes do not have it. Capabilities are per thread on Linux, so only
// code fn runs on this goroutine is affected.
func WithoutCapSysResource(t testing.TB, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatalf("capget: %v", err)
	}
	orig := data
	data[0].Effective &^= 1 << unix.CAP_SYS_RESOURCE
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		t.Fatalf("capset: %v", err)
	}
	defer func() {
		if err := unix.Capset(&hdr, &orig[0]); err != nil {
			panic(fmt.Sprintf("restore capabilities: %v", err))
		}
	}()
	fn()
}

// FreeBytes is what statfs says unprivileged users may still write on the
// filesystem at path.
func FreeBytes(t testing.TB, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatalf("statfs %s: %v", path, err)
	}
	return int64(st.Bavail) * st.Bsize
}
