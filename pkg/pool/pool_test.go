package pool

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSpec(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    Spec
		wantErr bool
	}{
		{name: "plain", in: "default=/var/lib/hostvol/pool", want: Spec{Name: "default", Path: "/var/lib/hostvol/pool"}},
		{name: "shared", in: "nfs=/mnt/nfs,shared", want: Spec{Name: "nfs", Path: "/mnt/nfs", Shared: true}},
		{name: "no_equals", in: "default", wantErr: true},
		{name: "relative", in: "a=pool", wantErr: true},
		{name: "unclean", in: "a=/x/../y", wantErr: true},
		{name: "trailing_slash", in: "a=/x/", wantErr: true},
		{name: "root", in: "a=/", wantErr: true},
		{name: "upper_name", in: "Fast=/x", wantErr: true},
		{name: "empty_name", in: "=/x", wantErr: true},
		{name: "slash_in_name", in: "a/b=/x", wantErr: true},
		{name: "unknown_option", in: "a=/x,fast", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSpec(tc.in)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.in, got.String())
		})
	}
}

func TestOpenRequiresExistingPath(t *testing.T) {
	_, err := Open(Spec{Name: "a", Path: filepath.Join(t.TempDir(), "missing")})
	require.Error(t, err)
}

func TestDirLifecycle(t *testing.T) {
	p, err := Open(Spec{Name: "a", Path: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	id := "hv-00000000000000000000000000000001"

	ok, err := p.DirExists(id)
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, p.CreateDir(id))
	require.ErrorIs(t, p.CreateDir(id), os.ErrExist)
	fi, err := os.Stat(p.DirPath(id))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o777), fi.Mode().Perm())

	st, err := p.DirStats(id)
	require.NoError(t, err)
	require.Positive(t, st.TotalBytes)

	require.NoError(t, p.RemoveDir(id))
	require.NoError(t, p.RemoveDir(id), "removing a missing directory succeeds")
	ok, err = p.DirExists(id)
	require.NoError(t, err)
	require.False(t, ok)
}

// A symlink planted inside a volume that points outside of it must not be
// followed when the volume is removed or its statistics are read.
func TestSymlinkInsideVolumeIsNotFollowed(t *testing.T) {
	p, err := Open(Spec{Name: "a", Path: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	id := "hv-00000000000000000000000000000002"
	require.NoError(t, p.CreateDir(id))

	outside := t.TempDir()
	precious := filepath.Join(outside, "precious")
	require.NoError(t, os.WriteFile(precious, []byte("keep me"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(outside, "dir"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "dir", "file"), []byte("keep me too"), 0o600))
	require.NoError(t, os.Symlink(outside, filepath.Join(p.DirPath(id), "escape")))
	require.NoError(t, os.Symlink(precious, filepath.Join(p.DirPath(id), "file-link")))
	require.NoError(t, os.Symlink("../../../../..", filepath.Join(p.DirPath(id), "up")))

	_, err = p.DirStats(id)
	require.NoError(t, err)

	require.NoError(t, p.RemoveDir(id))
	data, err := os.ReadFile(precious)
	require.NoError(t, err)
	require.Equal(t, "keep me", string(data))
	_, err = os.Stat(filepath.Join(outside, "dir", "file"))
	require.NoError(t, err)
}

// If the volume directory itself is replaced by a symlink (someone with host
// access), statistics and existence checks refuse it rather than follow it.
func TestVolumeDirReplacedBySymlink(t *testing.T) {
	p, err := Open(Spec{Name: "a", Path: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	id := "hv-00000000000000000000000000000003"
	require.NoError(t, os.Symlink(t.TempDir(), p.DirPath(id)))
	_, err = p.DirExists(id)
	require.Error(t, err)
	_, err = p.DirStats(id)
	require.Error(t, err)
}

// volumes/ and images/ are 0700, also in pools made with other modes
// (0711 before), whatever the umask; a volume's own directory stays 0777.
func TestLayoutModes(t *testing.T) {
	cases := []struct {
		name string
		mode os.FileMode // of existing volumes/ and images/; 0: none yet
	}{
		{name: "new_pool"},
		{name: "earlier_0711", mode: 0o711},
		{name: "world_readable", mode: 0o755},
		{name: "setgid", mode: os.ModeSetgid | 0o775},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.mode != 0 {
				for _, d := range []string{"volumes", "images"} {
					require.NoError(t, os.Mkdir(filepath.Join(dir, d), 0o700))
					require.NoError(t, os.Chmod(filepath.Join(dir, d), tc.mode))
				}
			}
			p, err := Open(Spec{Name: "a", Path: dir})
			require.NoError(t, err)
			t.Cleanup(func() { _ = p.Close() })
			for _, d := range []string{"volumes", "images"} {
				fi, err := os.Lstat(filepath.Join(dir, d))
				require.NoError(t, err)
				require.True(t, fi.IsDir())
				require.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), d)
				require.Zero(t, fi.Mode()&(os.ModeSetgid|os.ModeSetuid|os.ModeSticky), d)
			}
			id := "hv-00000000000000000000000000000001"
			require.NoError(t, p.CreateDir(id))
			fi, err := os.Stat(p.DirPath(id))
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o777), fi.Mode().Perm(), "pods of any UID write to the data")
		})
	}
}

func TestValidName(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{name: "default", in: "default"},
		{name: "one_char", in: "a"},
		{name: "digits", in: "0"},
		{name: "dash_inside", in: "fast-ssd-2"},
		{name: "longest", in: strings.Repeat("a", 63)},
		{name: "empty", in: "", wantErr: true},
		{name: "too_long", in: strings.Repeat("a", 64), wantErr: true},
		{name: "upper", in: "Fast", wantErr: true},
		{name: "leading_dash", in: "-a", wantErr: true},
		{name: "trailing_dash", in: "a-", wantErr: true},
		{name: "dot", in: "a.b", wantErr: true},
		{name: "dot_dot", in: "..", wantErr: true},
		{name: "slash", in: "a/b", wantErr: true},
		{name: "underscore", in: "a_b", wantErr: true},
		{name: "space", in: "a b", wantErr: true},
		{name: "newline", in: "a\n", wantErr: true},
		{name: "nul", in: "a\x00", wantErr: true},
		{name: "non_ascii", in: "poól", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidName(tc.in)
			if !tc.wantErr {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), strconv.Quote(tc.in))
		})
	}
	t.Run("hostile_length", func(t *testing.T) {
		err := ValidName(strings.Repeat("a", 10<<10))
		require.Error(t, err)
		require.Less(t, len(err.Error()), 1024, "a 10 KB name costs a short message")
	})
}
