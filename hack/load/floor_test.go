package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// phaseOrder returns the phase names of the report's phase= lines, in order.
func phaseOrder(out string) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "phase=") {
			names = append(names, strings.TrimPrefix(f[0], "phase="))
		}
	}
	return names
}

// assertFloorClean checks that a floor run left nothing behind: no mounts
// under targetDir, no loop device on an image in poolDir, no files in
// either.
func assertFloorClean(t *testing.T, targetDir, poolDir string) {
	t.Helper()
	if m := testutil.MountsUnder(t, targetDir); len(m) > 0 {
		t.Errorf("mounts left under %s: %v", targetDir, m)
		testutil.UnmountUnder(t, targetDir)
	}
	out, err := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").Output()
	if err != nil {
		t.Fatalf("losetup --list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[1], poolDir+"/") {
			t.Errorf("loop device left attached: %s", line)
			if err := exec.Command("losetup", "-d", f[0]).Run(); err != nil {
				t.Errorf("losetup -d %s: %v", f[0], err)
			}
		}
	}
	for _, dir := range []string{targetDir, poolDir} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) > 0 {
			t.Errorf("%s not empty: %v", dir, entries)
		}
	}
}

func TestFloor(t *testing.T) {
	testutil.RequireRoot(t)
	targetDir, poolDir := t.TempDir(), t.TempDir()
	out := runTool(t, "--floor", "--size", "16Mi", "--n", "4", "--c", "2", "--target-dir", targetDir, "--pool-dir", poolDir, "--json")
	if out.code != exitOK {
		t.Fatalf("exit code %d", out.code)
	}
	assertFloorClean(t, targetDir, poolDir)

	want := []string{"create", "stage", "publish", "unpublish", "unstage", "delete", "cycle", "up", "down",
		"image", "mkfs", "attach", "mount", "bind", "unbind", "umount", "detach", "remove"}
	if got := phaseOrder(out.stdout); !slices.Equal(got, want) {
		t.Errorf("phases %v, want %v", got, want)
	}
	for _, p := range want {
		wantField(t, out.stdout, "phase="+p, "count", "4")
		wantField(t, out.stdout, "phase="+p, "errors", "0")
	}
	wantField(t, out.stdout, "summary", "ok", "4")
	wantField(t, out.stdout, "summary", "errors", "0")
	// The same mkfs as hostvol.
	if !strings.Contains(out.stdout, `mkfs="mkfs.ext4 -F -q -m 0 -E lazy_itable_init=1,lazy_journal_init=1,nodiscard IMAGE"`) {
		t.Error("floor header does not show hostvol's mkfs command")
	}
	if jr := lastJSONLine(t, out.stdout); !jr.Floor || jr.CyclesOK != 4 || len(jr.Phases) != len(want) || jr.SetupPhases != nil {
		t.Errorf("unexpected JSON report %+v", jr)
	}
}

// A step that fails half-way through the cycle: what the cycle set up
// (image, loop device, staging mount, bind mount) is still released.
func TestFloorFailureReleasesEverything(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name, phase, group, half string
		// fail reports whether to fail this command; seen holds state.
		fail func(seen map[string]bool, name string, args []string) bool
	}{
		{"bind", "bind", "publish", "up", func(_ map[string]bool, name string, args []string) bool {
			return name == "mount" && slices.Contains(args, "--bind")
		}},
		// Every plain umount of the target fails: the cleanup falls back to
		// umount -l.
		{"unbind", "unbind", "unpublish", "down", func(_ map[string]bool, name string, args []string) bool {
			return name == "umount" && len(args) == 1 && filepath.Base(args[0]) == "mnt"
		}},
		// The step's losetup -d fails, the cleanup's (the next one) works.
		{"detach", "detach", "unstage", "down", func(seen map[string]bool, name string, args []string) bool {
			if name != "losetup" || len(args) != 2 || args[0] != "-d" {
				return false
			}
			seen["odd"] = !seen["odd"]
			return seen["odd"]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := runCommand
			t.Cleanup(func() { runCommand = saved })
			var mu sync.Mutex
			seen := map[string]bool{}
			runCommand = func(ctx context.Context, name string, args ...string) (string, error) {
				mu.Lock()
				fail := tc.fail(seen, name, args)
				mu.Unlock()
				if fail {
					return "", errors.New("injected failure")
				}
				return command(ctx, name, args...)
			}
			targetDir, poolDir := t.TempDir(), filepath.Join(t.TempDir(), "images")
			out := runTool(t, "--floor", "--size", "16Mi", "--n", "2", "--target-dir", targetDir, "--pool-dir", poolDir)
			if out.code != exitErrors {
				t.Fatalf("exit code %d, want %d", out.code, exitErrors)
			}
			assertFloorClean(t, targetDir, poolDir)
			wantField(t, out.stdout, "phase="+tc.phase, "errors", "2")
			wantField(t, out.stdout, "phase="+tc.group, "errors", "2")
			wantField(t, out.stdout, "phase="+tc.half, "errors", "2")
			wantField(t, out.stdout, "phase=cycle", "errors", "2")
			wantField(t, out.stdout, "summary", "failed", "2")
			wantField(t, out.stdout, "summary", "errors", "2")
			if !strings.Contains(out.stdout, "error phase="+tc.phase+" code=Internal count=2") {
				t.Errorf("no error line for %s", tc.phase)
			}
		})
	}
}

func TestFloorSetupErrors(t *testing.T) {
	out := runTool(t, "--floor", "--size", "1Mi", "--target-dir", t.TempDir())
	if out.code != exitSetup || !strings.Contains(out.stderr, "too small") {
		t.Errorf("exit code %d, want %d with a size error", out.code, exitSetup)
	}
	out = runTool(t, "--floor", "--size", "1Gi", "--fs-type", "btrfs", "--target-dir", t.TempDir())
	if out.code != exitSetup || !strings.Contains(out.stderr, "unsupported") {
		t.Errorf("exit code %d, want %d with an unsupported-type error", out.code, exitSetup)
	}
}
