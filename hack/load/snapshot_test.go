package main

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestFillPlan(t *testing.T) {
	tests := []struct {
		name       string
		total, per int64
		want       []int64
	}{
		{"exact", 128, 64, []int64{64, 64}},
		{"remainder", 130, 64, []int64{64, 64, 2}},
		{"smaller_than_one_file", 10, 64, []int64{10}},
		{"nothing", 0, 64, nil},
		{"bad_per", 10, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := fillPlan(tc.total, tc.per); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("fillPlan(%d, %d) = %v, want %v", tc.total, tc.per, got, tc.want)
			}
		})
	}
}

func TestFillWriteAndCheck(t *testing.T) {
	dir := t.TempDir()
	plan := []int64{3*fillBlockSize + 5, 100}
	seed := fillSeed("test", 1)
	if err := writeFill(dir, plan, seed); err != nil {
		t.Fatal(err)
	}
	if err := checkFill(dir, plan, seed); err != nil {
		t.Fatalf("checkFill of what was written: %v", err)
	}
	if err := checkFill(dir, plan, fillSeed("test", 2)); err == nil {
		t.Error("checkFill with another round's seed succeeded")
	}
	// Files differ from each other, and blocks within a file too.
	a, err := os.ReadFile(filepath.Join(dir, fillName(0)))
	if err != nil {
		t.Fatal(err)
	}
	if string(a[:100]) == string(a[fillBlockSize:fillBlockSize+100]) {
		t.Error("blocks 0 and 1 of a file start alike")
	}
	// A changed last block is found.
	f, err := os.OpenFile(filepath.Join(dir, fillName(0)), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{a[len(a)-1] ^ 1}, int64(len(a)-1)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := checkFill(dir, plan, seed); err == nil || !strings.Contains(err.Error(), "block 3") {
		t.Errorf("checkFill after changing the last byte = %v, want block 3 differs", err)
	}
	if err := checkFill(dir, []int64{100, 100}, seed); err == nil {
		t.Error("checkFill with wrong sizes succeeded")
	}
}

func TestMountAt(t *testing.T) {
	info := strings.Join([]string{
		"22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
		"40 22 7:3 / /var/tmp/b/staging rw,relatime shared:20 - ext4 /dev/loop3 rw",
		"41 22 7:1 /volumes/hv-1 /var/tmp/b/mnt\\040x rw,relatime shared:21 - btrfs /dev/loop1 rw",
		"42 40 7:5 / /var/tmp/b/staging rw,relatime shared:22 - xfs /dev/loop5 rw",
		"43 22 0:5 / /bad rw -",
	}, "\n")
	tests := []struct {
		name, path string
		want       mountEntry
		wantErr    bool
	}{
		{"top_of_stacked_mounts", "/var/tmp/b/staging", mountEntry{root: "/", fsType: "xfs", source: "/dev/loop5"}, false},
		{"bind_of_a_directory_escaped", "/var/tmp/b/mnt x", mountEntry{root: "/volumes/hv-1", fsType: "btrfs", source: "/dev/loop1"}, false},
		{"not_mounted", "/var/tmp/b", mountEntry{}, true},
		{"malformed", "/bad", mountEntry{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mountAt(strings.NewReader(info), tc.path)
			if (err != nil) != tc.wantErr {
				t.Fatalf("mountAt(%q) error = %v, want error %v", tc.path, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("mountAt(%q) = %+v, want %+v", tc.path, got, tc.want)
			}
		})
	}
}

func TestLoopBackingFile(t *testing.T) {
	sys := t.TempDir()
	write := func(dev, content string) {
		t.Helper()
		d := filepath.Join(sys, dev, "loop")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "backing_file"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("loop3", "/pool/images/hv-1.img\n")
	write("loop4", "/pool/images/hv-2.img (deleted)\n")
	write("loop6", "relative.img\n")
	tests := []struct {
		name, dev, want string
		wantErr         bool
	}{
		{"attached", "/dev/loop3", "/pool/images/hv-1.img", false},
		{"deleted_image", "/dev/loop4", "", true},
		{"relative_path", "/dev/loop6", "", true},
		{"not_attached", "/dev/loop5", "", true},
		{"not_a_loop_device", "/dev/vda", "", true},
		{"bare_loop", "/dev/loop", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loopBackingFile(sys, tc.dev)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("loopBackingFile(%q) = %q, %v; want %q, error %v", tc.dev, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseSnapshotFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"--endpoint", "/x.sock", "--snapshot", "--size", "1Gi", "--fill", "512Mi",
		"--copy-dir", "/pool/copy", "--snapshot-from", "staged", "--baseline", "image", "--poll", "50ms", "--n", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.snapshot || cfg.fill != 512<<20 || cfg.copyDir != "/pool/copy" || cfg.snapshotFrom != fromStaged ||
		cfg.baseline != baselineImage || cfg.poll.String() != "50ms" || cfg.n != 3 {
		t.Errorf("unexpected snapshot config %+v", cfg)
	}
	defaults, err := parseFlags([]string{"--endpoint", "/x.sock", "--snapshot", "--size", "1Gi", "--copy-dir", "rel"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if defaults.fill != 512<<20 || defaults.snapshotFrom != fromPublished || defaults.baseline != baselineTree ||
		!filepath.IsAbs(defaults.copyDir) {
		t.Errorf("unexpected snapshot defaults %+v", defaults)
	}

	ok := []string{"--endpoint", "/x", "--snapshot", "--size", "1Gi", "--copy-dir", "/c"}
	for _, bad := range [][]string{
		{"--endpoint", "/x", "--snapshot", "--size", "1Gi"},
		append(ok[:len(ok):len(ok)], "--fill", "1Gi"),
		append(ok[:len(ok):len(ok)], "--fill", "0"),
		append(ok[:len(ok):len(ok)], "--c", "2"),
		append(ok[:len(ok):len(ok)], "--e", "3"),
		append(ok[:len(ok):len(ok)], "--keep-existing"),
		append(ok[:len(ok):len(ok)], "--access-type", "block"),
		append(ok[:len(ok):len(ok)], "--snapshot-from", "nowhere"),
		append(ok[:len(ok):len(ok)], "--baseline", "tar"),
		append(ok[:len(ok):len(ok)], "--poll", "0s"),
		append(ok[:len(ok):len(ok)], "--floor"),
		{"--endpoint", "/x", "--copy-dir", "/c"},
		{"--endpoint", "/x", "--fill", "1Mi"},
		{"--floor", "--size", "1Gi", "--baseline", "image"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want error", bad)
		}
	}
	if _, err := parseFlags(append(ok[:len(ok):len(ok)], "--c", "1"), io.Discard); err != nil {
		t.Errorf("--c 1 with --snapshot: %v", err)
	}
}
