package testutil

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/loop"
)

// CleanupUnder registers, in t.Cleanup, the release of every mount at or
// below dir and of every loop device whose backing file is below dir.
// Register it right after making dir and before anything is mounted or
// attached: cleanups run last-registered first, so it then runs after the
// drivers have stopped and before dir is removed.
func CleanupUnder(t testing.TB, dir string) {
	t.Helper()
	t.Cleanup(func() { ReleaseUnder(t, dir) })
}

// ReleaseUnder unmounts every mount at or below dir and detaches every loop
// device whose backing file is below dir, and reports (t.Errorf) whatever
// it could not release. Mounts may nest in loop devices and loop devices in
// mounts (a pool that is itself a filesystem on a loop device, holding the
// images of attached volumes), so it works in rounds: unmount what holds no
// attached image, detach what is not mounted, again.
func ReleaseUnder(t testing.TB, dir string) {
	t.Helper()
	lm := loop.New()
	for round := 0; round < 4; round++ {
		loops, err := LoopsUnder(dir)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		mounts := MountsUnder(t, dir)
		if len(loops) == 0 && len(mounts) == 0 {
			return
		}
		for _, m := range mounts {
			if holdsBackingFile(m, loops) {
				continue // detach its loop devices first
			}
			if err := unix.Unmount(m, 0); err != nil {
				// Busy (a process inside): detach it from the tree; the
				// kernel finishes when the last user goes.
				_ = unix.Unmount(m, unix.MNT_DETACH)
			}
		}
		sources := mountSources(t)
		if loops, err = LoopsUnder(dir); err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for dev := range loops {
			if sources[dev] && round < 3 {
				continue // still mounted: next round
			}
			if err := lm.Detach(dev); err != nil {
				t.Logf("cleanup: detach %s: %v", dev, err)
			}
		}
	}
	if loops, err := LoopsUnder(dir); err != nil || len(loops) > 0 {
		t.Errorf("cleanup: loop devices left attached to images under %s: %v %v", dir, loops, err)
	}
	if mounts := MountsUnder(t, dir); len(mounts) > 0 {
		t.Errorf("cleanup: mounts left under %s: %v", dir, mounts)
	}
}

// holdsBackingFile reports whether an attached loop device's backing file
// lives at or below the mount point m.
func holdsBackingFile(m string, loops map[string]string) bool {
	for _, b := range loops {
		if strings.HasPrefix(b, m+"/") {
			return true
		}
	}
	return false
}

// LoopsUnder returns the attached loop devices (/dev/loopN) whose backing
// file is below dir, with that file's path, from
// /sys/block/loopN/loop/backing_file.
func LoopsUnder(dir string) (map[string]string, error) {
	all, err := AttachedLoops()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for dev, b := range all {
		if strings.HasPrefix(b, dir+"/") {
			out[dev] = b
		}
	}
	return out, nil
}

// LoopsFor returns the loop devices attached to the file at path, sorted.
func LoopsFor(path string) ([]string, error) {
	all, err := AttachedLoops()
	if err != nil {
		return nil, err
	}
	var out []string
	for dev, b := range all {
		if b == path {
			out = append(out, dev)
		}
	}
	sort.Strings(out)
	return out, nil
}

// AttachedLoops maps every attached loop device to its backing file's path
// as sysfs shows it (" (deleted)" removed).
func AttachedLoops() (map[string]string, error) {
	paths, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			continue // detached meanwhile (by this or another process)
		}
		if err != nil {
			return nil, err
		}
		name := filepath.Base(filepath.Dir(filepath.Dir(p)))
		out["/dev/"+name] = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), " (deleted)")
	}
	return out, nil
}

// RequireLoopsOf returns the loop devices attached to the image at path,
// as sysfs lists them, and requires that losetup agrees.
func RequireLoopsOf(t testing.TB, path string) []string {
	t.Helper()
	devs, err := LoopsFor(path)
	if err != nil {
		t.Fatalf("loop devices of %s: %v", path, err)
	}
	if l := LosetupFor(t, path); !slices.Equal(devs, l) {
		t.Fatalf("loop devices of %s: sysfs lists %v, losetup -j %v", path, devs, l)
	}
	return devs
}

// LosetupFor returns the devices `losetup -j path` lists.
func LosetupFor(t testing.TB, path string) []string {
	t.Helper()
	out, err := exec.Command("losetup", "-j", path).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -j %s: %v: %s", path, err, out)
	}
	var devs []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if dev, _, ok := strings.Cut(l, ":"); ok {
			devs = append(devs, dev)
		}
	}
	return devs
}

// mountSources returns the sources (devices) of all mounts in this
// process's mount namespace.
func mountSources(t testing.TB) map[string]bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... optional fields - fstype source superopts
		_, after, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fields := strings.Fields(after); len(fields) >= 2 {
			out[fields[1]] = true
		}
	}
	return out
}

// UnmountUnder unmounts every mount point at or below dir, deepest first.
// Real-mount tests register it with t.Cleanup so that a failing test leaves
// no mount behind.
func UnmountUnder(t testing.TB, dir string) {
	t.Helper()
	for _, m := range MountsUnder(t, dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Errorf("cleanup: unmount %s: %v", m, err)
		}
	}
}

// MountsUnder lists mount points at or below dir, deepest first.
func MountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMountinfo undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			n := 0
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				n = n*8 + int(c-'0')
			}
			if ok {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
