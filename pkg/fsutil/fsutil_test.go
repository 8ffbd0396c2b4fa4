package fsutil_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	utilexec "k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

func TestCheck(t *testing.T) {
	for in, want := range map[string]string{"": fsutil.Ext4, "ext4": fsutil.Ext4, "xfs": fsutil.XFS} {
		got, err := fsutil.Check(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	for _, bad := range []string{"ext3", "btrfs", "EXT4", "ext4 ", "../x", "vfat"} {
		_, err := fsutil.Check(bad)
		require.True(t, errors.Is(err, fsutil.ErrUnsupported), bad)
	}
}

// Format makes a real filesystem on a sparse image file (mkfs runs as any
// user on a file it owns).
func TestFormatImageFile(t *testing.T) {
	for _, fsType := range []string{fsutil.Ext4, fsutil.XFS} {
		t.Run(fsType, func(t *testing.T) {
			name, _, err := fsutil.MkfsArgs(fsType, "x")
			require.NoError(t, err)
			testutil.RequireTools(t, name)
			img := filepath.Join(t.TempDir(), "img")
			f, err := os.Create(img)
			require.NoError(t, err)
			require.NoError(t, f.Truncate(fsutil.MinSize[fsType]))
			require.NoError(t, f.Close())

			require.NoError(t, fsutil.New(utilexec.New()).Format(context.Background(), fsType, img))
			out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "TYPE", img).Output()
			require.NoError(t, err)
			require.Equal(t, fsType, strings.TrimSpace(string(out)))
			// Sparse: formatting must not allocate the whole image.
			var st os.FileInfo
			st, err = os.Stat(img)
			require.NoError(t, err)
			require.Equal(t, fsutil.MinSize[fsType], st.Size())
		})
	}
}

func TestFormatErrorCarriesOutput(t *testing.T) {
	err := fsutil.New(utilexec.New()).Format(context.Background(), fsutil.Ext4, filepath.Join(t.TempDir(), "missing", "img"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "mkfs.ext4")
}

// A tool that reports ENOSPC (in the C locale run sets) fails with
// ErrNoSpace, whatever its exit status; any other failure does not.
func TestFormatNoSpace(t *testing.T) {
	cases := []struct {
		name   string
		output string
		want   bool
	}{
		{name: "mkfs_ext4", output: "Warning: could not erase sector 2: No space left on device\nmkfs.ext4: No space left on device while writing out and closing file system", want: true},
		{name: "mkfs_xfs", output: "mkfs.xfs: libxfs_device_zero write failed: No space left on device", want: true},
		{name: "other_failure", output: "mkfs.ext4: Device size reported to be zero.", want: false},
		{name: "no_output", output: "", want: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fe := &testingexec.FakeExec{}
			fe.CommandScript = append(fe.CommandScript, func(cmd string, args ...string) utilexec.Cmd {
				return &testingexec.FakeCmd{CombinedOutputScript: []testingexec.FakeAction{
					func() ([]byte, []byte, error) {
						return []byte(tc.output), nil, &testingexec.FakeExitError{Status: 1}
					},
				}}
			})
			err := fsutil.New(fe).Format(t.Context(), fsutil.Ext4, "/pool/images/x.img")
			require.Error(t, err)
			require.Equal(t, tc.want, errors.Is(err, fsutil.ErrNoSpace), "%v", err)
			require.Contains(t, err.Error(), tc.output, "the tool's output stays in the error")
		})
	}
}
