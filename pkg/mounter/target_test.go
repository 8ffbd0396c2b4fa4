package mounter_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
)

// TestMakeMountPoint: missing directories are made, an existing directory
// (or file, for block) is taken as it is, and a symlink at the end, one on
// the way that would have to be created, or the wrong type is refused
// without anything being made where a link points. Any user.
func TestMakeMountPoint(t *testing.T) {
	dir := t.TempDir()
	elsewhere := filepath.Join(dir, "elsewhere")
	require.NoError(t, os.Mkdir(elsewhere, 0o755))
	linkDir := filepath.Join(dir, "linkdir") // an existing ancestor that is a symlink: allowed
	require.NoError(t, os.Symlink(elsewhere, linkDir))
	require.NoError(t, os.Symlink(elsewhere, filepath.Join(dir, "final-link")))
	require.NoError(t, os.Symlink(filepath.Join(elsewhere, "nothing"), filepath.Join(dir, "dangling")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o644))

	mp, err := mounter.MakeMountPoint(filepath.Join(dir, "a", "b", "target"), false)
	require.NoError(t, err)
	require.True(t, mp.Created)
	require.DirExists(t, filepath.Join(dir, "a", "b", "target"))
	mp, err = mounter.MakeMountPoint(filepath.Join(dir, "a", "b", "target"), false)
	require.NoError(t, err)
	require.False(t, mp.Created, "an existing directory is used")

	mp, err = mounter.MakeMountPoint(filepath.Join(linkDir, "t"), false)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(elsewhere, "t"), mp.Real, "the real path resolves the admin's symlink")

	mp, err = mounter.MakeMountPoint(filepath.Join(dir, "blk", "dev"), true)
	require.NoError(t, err)
	fi, err := os.Lstat(filepath.Join(dir, "blk", "dev"))
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular() && fi.Size() == 0, "an empty file for a block device")

	for name, tc := range map[string]struct {
		path string
		file bool
		want error
	}{
		"final_symlink_dir":      {path: filepath.Join(dir, "final-link"), want: mounter.ErrSymlink},
		"final_symlink_file":     {path: filepath.Join(dir, "final-link"), file: true, want: mounter.ErrSymlink},
		"dangling_symlink_block": {path: filepath.Join(dir, "dangling"), file: true, want: mounter.ErrSymlink},
		"dangling_ancestor":      {path: filepath.Join(dir, "dangling", "x"), want: mounter.ErrSymlink},
		"file_for_dir":           {path: filepath.Join(dir, "file"), want: mounter.ErrWrongType},
		"dir_for_file":           {path: elsewhere, file: true, want: mounter.ErrWrongType},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := mounter.MakeMountPoint(tc.path, tc.file)
			require.ErrorIs(t, err, tc.want)
		})
	}
	_, err = os.Lstat(filepath.Join(elsewhere, "nothing"))
	require.ErrorIs(t, err, os.ErrNotExist, "nothing created through a dangling link")
	_, err = os.Lstat(filepath.Join(elsewhere, "x"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestRemoveMountPoint removes only an empty directory, or with file an
// empty regular file; anything else stays. Any user.
func TestRemoveMountPoint(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, setup func(p string)) string {
		p := filepath.Join(dir, name)
		setup(p)
		return p
	}
	emptyDir := mk("empty", func(p string) { require.NoError(t, os.Mkdir(p, 0o755)) })
	fullDir := mk("full", func(p string) {
		require.NoError(t, os.Mkdir(p, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(p, "x"), []byte("x"), 0o644))
	})
	emptyFile := mk("emptyfile", func(p string) { require.NoError(t, os.WriteFile(p, nil, 0o644)) })
	dataFile := mk("datafile", func(p string) { require.NoError(t, os.WriteFile(p, []byte("data"), 0o644)) })
	link := mk("link", func(p string) { require.NoError(t, os.Symlink(emptyDir, p)) })

	for _, tc := range []struct {
		path    string
		file    bool
		removed bool
	}{
		{path: link, removed: false},
		{path: fullDir, removed: false},
		{path: dataFile, file: true, removed: false},
		{path: emptyFile, file: false, removed: false},
		{path: emptyFile, file: true, removed: true},
		{path: emptyDir, removed: true},
		{path: filepath.Join(dir, "missing"), removed: true},
	} {
		removed, reason, err := mounter.RemoveMountPoint(tc.path, tc.file)
		require.NoError(t, err)
		require.Equal(t, tc.removed, removed, "%s (file=%v): %s", tc.path, tc.file, reason)
		_, statErr := os.Lstat(tc.path)
		require.Equal(t, tc.removed, os.IsNotExist(statErr), "%s", tc.path)
	}
	require.FileExists(t, filepath.Join(fullDir, "x"))
}

// TestShows proves identity with real mounts: a bind of a directory shows
// it and not a sibling; a symlink to the mount is not a mount; a missing
// path shows nothing.
func TestShows(t *testing.T) {
	requireRoot(t)
	d := mkdirs(t, "src", "other", "target")
	src, other, target := d[0], d[1], d[2]
	dir := filepath.Dir(src)
	m := mounter.New(nil)
	ok, err := m.MountRoot(target)
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, unix.Mount(src, target, "", unix.MS_BIND, ""))
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
	ok, err = m.MountRoot(target)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = m.Shows(target, src)
	require.NoError(t, err)
	require.True(t, ok, "a bind mount shows its source")
	ok, err = m.Shows(target, other)
	require.NoError(t, err)
	require.False(t, ok, "nor another directory")
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(target, link))
	ok, err = m.MountRoot(link)
	require.NoError(t, err)
	require.False(t, ok, "a symlink to a mount is not followed")
	ok, err = m.Shows(filepath.Join(dir, "missing"), src)
	require.NoError(t, err)
	require.False(t, ok)

	// A bind whose source directory is removed: only ShowsDeletedDir knows.
	require.NoError(t, os.Remove(filepath.Join(src)))
	ok, err = m.Shows(target, src)
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = m.ShowsDeletedDir(target)
	require.NoError(t, err)
	require.True(t, ok)
}
