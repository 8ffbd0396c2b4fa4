package main

// The floor (--floor): the work a node does for a loop volume, done directly
// with the tools a human would use and no driver in between. Per cycle:
// create a sparse image file in the pool directory, mkfs it with exactly
// hostvol's options (fsutil.MkfsArgs), `losetup --find --show` it, `mount`
// the device at a staging directory and `mount --bind` that at a target;
// then the reverse: `umount` the target, `umount` the staging directory,
// `losetup -d` the device and remove the image. It is what a driver cannot
// beat without doing less, so a driver's cycle over the floor's is its cost.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
)

// floorSteps are the individual steps of a floor cycle, in order.
var floorSteps = []phase{phImage, phMkfs, phAttach, phMount, phBind, phUnbind, phUmount, phDetach, phRemove}

// floorPhases are reported by a floor run: the CSI-equivalent spans first
// (create = image+mkfs, stage = attach+mount, publish = bind, unpublish =
// unbind, unstage = umount+detach, delete = remove), with the same names and
// order as a CSI run so the two compare line by line, then the steps.
var floorPhases = append(append([]phase{}, measuredPhases...), floorSteps...)

// floorSetup checks the floor's configuration and tools and prepares the
// pool directory. It returns the filesystem type to make.
func floorSetup(cfg *config) (string, error) {
	fsType, err := fsutil.Check(cfg.fsType)
	if err != nil {
		return "", err
	}
	if cfg.size < fsutil.MinSize[fsType] {
		return "", fmt.Errorf("--size %d is too small for %s (at least %d)", cfg.size, fsType, fsutil.MinSize[fsType])
	}
	mkfs, _, _ := fsutil.MkfsArgs(fsType, "")
	for _, tool := range []string{mkfs, "losetup", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("floor needs %s: %w", tool, err)
		}
	}
	if err := os.MkdirAll(cfg.poolDir, 0o750); err != nil {
		return "", err
	}
	return fsType, nil
}

// deviceOf is "major:minor" of the filesystem that holds path, to check that
// the floor's pool and the driver's share a disk.
func deviceOf(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "?"
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
}

func printFloor(w io.Writer, cfg *config, fsType, targetDir string) {
	mkfs, args, _ := fsutil.MkfsArgs(fsType, "IMAGE")
	losetup := "losetup --find --show"
	if cfg.directIO {
		losetup += " --direct-io=on"
	}
	fmt.Fprintf(w, "floor fs-type=%s size=%d pool-dir=%s pool-dev=%s\n", fsType, cfg.size, cfg.poolDir, deviceOf(cfg.poolDir))
	fmt.Fprintf(w, "floor commands mkfs=%q losetup=%q mount=%q bind=%q\n",
		mkfs+" "+strings.Join(args, " "), losetup+" IMAGE", "mount -t "+fsType+" DEVICE STAGING", "mount --bind STAGING TARGET")
	fmt.Fprintf(w, "run n=%d c=%d timeout=%s name-prefix=%s target-dir=%s\n",
		cfg.n, cfg.c, cfg.timeout, cfg.namePrefix, targetDir)
}

// runFloor runs cfg.n floor cycles on cfg.c workers. Cancelling ctx stops
// new cycles; those in flight finish and release what they set up.
func (r *runner) runFloor(ctx context.Context, fsType string) *result {
	res := &result{cfg: r.cfg, info: r.info, phases: floorPhases, counted: floorSteps, floor: true}
	start := time.Now()
	ws := r.pool(ctx, r.cfg.n, func(w *worker, i int) {
		w.floorCycle(fmt.Sprintf("%s-%d", r.cfg.namePrefix, i), fsType)
	})
	res.wall = time.Since(start)
	res.merge(ws)
	res.interrupted = ctx.Err() != nil
	return res
}

// floorCycle is one cycle of the floor. Whatever fails, everything the
// cycle made is released before it returns: the deferred cleanup undoes
// each step that succeeded and makes one attempt to undo the one that
// failed (a timed-out mount or losetup may have taken effect).
func (w *worker) floorCycle(name, fsType string) {
	dir := filepath.Join(w.r.targetDir, name)
	v := &floorVolume{
		w:       w,
		name:    name,
		fsType:  fsType,
		dir:     dir,
		staging: filepath.Join(dir, "staging"),
		target:  filepath.Join(dir, "mnt"),
		image:   filepath.Join(w.r.cfg.poolDir, name+".img"),
		group:   phCreate,
	}
	ok := false
	defer func() {
		if !ok {
			v.release()
		}
	}()

	start := time.Now()
	if !v.up() {
		w.floorFailed(v.group, phUp)
		return
	}
	w.stats[phUp].samples.Add(time.Since(start))
	t := time.Now()
	if !v.down() {
		w.floorFailed(v.group, phDown)
		return
	}
	w.stats[phDown].samples.Add(time.Since(t))
	w.stats[phCycle].samples.Add(time.Since(start))
	ok = true
}

// floorVolume is the volume of one floor cycle: its paths, its device and
// what is in place, for the cleanup. A step's flag is set before the step
// runs, so a failed step is undone too (undoing what is not there is
// harmless: the cleanup checks first).
type floorVolume struct {
	w                            *worker
	name, fsType                 string
	dir, staging, target, image  string
	dev                          string
	madeDir, madeImage           bool
	attaching, mounting, binding bool
	group                        phase // the CSI-equivalent span under way, for its failure count
}

// release undoes what the cycle has in place, after a failure.
func (v *floorVolume) release() {
	w := v.w
	if v.binding {
		w.floorRelease(v.name, v.target, true)
	}
	if v.mounting {
		w.floorRelease(v.name, v.staging, true)
	}
	if v.attaching {
		w.floorDetach(v.name, v.dev, v.image)
	}
	if v.madeImage {
		if err := os.Remove(v.image); err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.r.log.printf("warning: volume=%s image not removed: %v", v.name, err)
		}
	}
	if v.madeDir {
		w.removePaths(v.target, v.staging, v.dir)
	}
}

// up makes the directories a CO makes, then runs the create, stage and
// publish spans.
func (v *floorVolume) up() bool {
	// The CO's part, as in a CSI cycle: the per-cycle and staging
	// directories. The plugin's part (the target) is in bind.
	if err := os.Mkdir(v.dir, 0o750); err != nil {
		v.w.localError(v.name, err)
		return false
	}
	v.madeDir = true
	if err := os.Mkdir(v.staging, 0o750); err != nil {
		v.w.localError(v.name, err)
		return false
	}
	return v.span(phCreate, v.create) && v.span(phStage, v.stage) && v.span(phPublish, v.publish)
}

// down runs the unpublish, unstage and delete spans, then removes the
// directories a CO makes.
func (v *floorVolume) down() bool {
	if !v.span(phUnpublish, v.unpublish) || !v.span(phUnstage, v.unstage) || !v.span(phDelete, v.remove) {
		return false
	}
	// The CO's part: the per-cycle directories, as in a CSI cycle.
	v.w.removePaths(v.staging, v.dir)
	v.madeDir = false
	return true
}

// span runs the steps of the CSI-equivalent span p and records the span's
// latency if they all succeed.
func (v *floorVolume) span(p phase, steps func() bool) bool {
	t := time.Now()
	v.group = p
	if !steps() {
		return false
	}
	v.w.stats[p].samples.Add(time.Since(t))
	return true
}

// run runs the command name with args as step p.
func (v *floorVolume) run(p phase, name string, args ...string) bool {
	return v.w.step(p, v.name, func(ctx context.Context) error {
		_, err := runCommand(ctx, name, args...)
		return err
	}) == nil
}

// create is the create span: image and mkfs.
func (v *floorVolume) create() bool {
	v.madeImage = true
	if v.w.step(phImage, v.name, func(context.Context) error { return createSparse(v.image, v.w.r.cfg.size) }) != nil {
		return false
	}
	mkfs, args, err := fsutil.MkfsArgs(v.fsType, v.image)
	if err != nil {
		v.w.localError(v.name, err)
		return false
	}
	return v.run(phMkfs, mkfs, args...)
}

// stage is the stage span: attach and mount.
func (v *floorVolume) stage() bool {
	v.attaching = true
	losetup := []string{"--find", "--show"}
	if v.w.r.cfg.directIO {
		losetup = append(losetup, "--direct-io=on")
	}
	if v.w.step(phAttach, v.name, func(ctx context.Context) error {
		out, err := runCommand(ctx, "losetup", append(losetup, v.image)...)
		v.dev = strings.TrimSpace(out)
		if err == nil && !strings.HasPrefix(v.dev, "/dev/") {
			err = fmt.Errorf("losetup printed %q, not a device", out)
		}
		return err
	}) != nil {
		return false
	}
	v.mounting = true
	return v.run(phMount, "mount", "-t", v.fsType, v.dev, v.staging)
}

// publish is the publish span: bind.
func (v *floorVolume) publish() bool {
	v.binding = true
	return v.w.step(phBind, v.name, func(ctx context.Context) error {
		// The plugin creates the target (CSI); hostvol does it in
		// NodePublishVolume too.
		if err := os.Mkdir(v.target, 0o750); err != nil {
			return err
		}
		_, err := runCommand(ctx, "mount", "--bind", v.staging, v.target)
		return err
	}) == nil
}

// unpublish is the unpublish span: unbind.
func (v *floorVolume) unpublish() bool {
	if v.w.step(phUnbind, v.name, func(ctx context.Context) error {
		if _, err := runCommand(ctx, "umount", v.target); err != nil {
			return err
		}
		return os.Remove(v.target)
	}) != nil {
		return false
	}
	v.binding = false
	return true
}

// unstage is the unstage span: umount and detach.
func (v *floorVolume) unstage() bool {
	if !v.run(phUmount, "umount", v.staging) {
		return false
	}
	v.mounting = false
	if !v.run(phDetach, "losetup", "-d", v.dev) {
		return false
	}
	v.attaching = false
	return true
}

// remove is the delete span: the remove step.
func (v *floorVolume) remove() bool {
	if v.w.step(phRemove, v.name, func(context.Context) error { return os.Remove(v.image) }) != nil {
		return false
	}
	v.madeImage = false
	return true
}

// floorFailed counts a failure of the CSI-equivalent span group, of the
// half (phUp or phDown) it is in, and of the cycle. The step that failed
// has counted its error already.
func (w *worker) floorFailed(group, half phase) {
	w.stats[group].failed++
	w.stats[half].failed++
	w.stats[phCycle].failed++
}

// step runs fn as phase p with the per-command timeout and records its
// latency, or the error (code DeadlineExceeded for a timeout, Internal
// otherwise). Contexts derive from context.Background so that an interrupt
// never cuts a cycle short.
func (w *worker) step(p phase, name string, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), w.r.cfg.timeout)
	defer cancel()
	start := time.Now()
	err := fn(ctx)
	if err != nil {
		c := codes.Internal
		if ctx.Err() != nil {
			c = codes.DeadlineExceeded
		}
		w.stats[p].addError(c, err.Error())
		w.r.log.printf("error: phase=%s volume=%s code=%s: %v", p, name, c, err)
		return err
	}
	w.stats[p].samples.Add(time.Since(start))
	return nil
}

// createSparse creates path as a sparse file of size bytes, as `truncate -s`
// does, failing if it exists.
func createSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runCommand runs the floor's commands; tests replace it to inject failures.
var runCommand = command

// command runs name with args (LC_ALL=C, as hostvol runs mkfs) and returns
// its stdout; a failure's error includes stderr.
func command(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// Its own process group: a Ctrl-C at the terminal stops the tool from
	// starting cycles but must not kill a mount or losetup half-way.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// cleanupTimeout bounds each command of the cleanup after a failure.
const cleanupTimeout = 30 * time.Second

// floorRelease unmounts path if it is a mount point (after a failure).
// When lazy is set and a plain umount fails, it detaches lazily (umount -l)
// so that nothing stays mounted under the target directory.
func (w *worker) floorRelease(name, path string, lazy bool) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	for range 2 { // a bind mount over the same path twice, at worst
		mounted, err := isMountPoint(path)
		if err != nil {
			w.r.log.printf("warning: volume=%s cannot tell whether %s is mounted: %v", name, path, err)
			return
		}
		if !mounted {
			return
		}
		if _, err := runCommand(ctx, "umount", path); err != nil {
			if !lazy {
				w.r.log.printf("warning: volume=%s left mounted: %v", name, err)
				return
			}
			if _, err := runCommand(ctx, "umount", "-l", path); err != nil {
				w.r.log.printf("warning: volume=%s left mounted: %v", name, err)
				return
			}
		}
	}
}

// floorDetach detaches dev if known, and every loop device still backed by
// image (a losetup that failed or timed out may have attached one anyway).
func (w *worker) floorDetach(name, dev, image string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if dev != "" {
		_, _ = runCommand(ctx, "losetup", "-d", dev) // what is left attached is found and reported below
	}
	if _, err := os.Stat(image); err != nil {
		return // no image, no device on it (none that losetup -j finds)
	}
	out, err := runCommand(ctx, "losetup", "--list", "--noheadings", "--output", "NAME", "--associated", image)
	if err != nil {
		w.r.log.printf("warning: volume=%s cannot list loop devices of %s: %v", name, image, err)
		return
	}
	for _, d := range strings.Fields(out) {
		if _, err := runCommand(ctx, "losetup", "-d", d); err != nil {
			w.r.log.printf("warning: volume=%s loop device left attached: %v", name, err)
		}
	}
}

// isMountPoint reports whether path is the mount point of an entry in
// /proc/self/mountinfo.
func isMountPoint(path string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID parent major:minor root mountpoint ...; octal escapes for
		// space, tab, newline and backslash.
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == path {
			return true, nil
		}
	}
	return false, sc.Err()
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}
