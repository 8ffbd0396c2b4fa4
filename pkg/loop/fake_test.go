package loop

import (
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// The Fake needs no privilege: these run as any user.

func TestFakeLifecycle(t *testing.T) {
	fk := NewFake()
	dir := t.TempDir()
	a, imgA := newImage(t, dir, "a.img", 8*mib)
	b, imgB := newImage(t, dir, "b.img", 4*mib)

	devA, err := fk.Attach(a, AttachOptions{DirectIO: true})
	require.NoError(t, err)
	require.Equal(t, "/dev/loop0", devA)
	devB, err := fk.Attach(b, AttachOptions{})
	require.NoError(t, err)
	require.Equal(t, "/dev/loop1", devB)
	require.Equal(t, 2, fk.Attaches())
	require.Equal(t, map[string]Image{devA: imgA, devB: imgB}, fk.Attached())

	_, err = fk.Attach(a, AttachOptions{})
	require.Error(t, err, "attaching an attached image breaks the caller's contract")
	require.Equal(t, 2, fk.Attaches())

	got, err := fk.Find(imgA, devA)
	require.NoError(t, err)
	require.Equal(t, devA, got)
	require.Zero(t, fk.Scans(), "a right hint needs no scan")
	for _, hint := range []string{"", devB, "/dev/loop9"} {
		got, err = fk.Find(imgA, hint)
		require.NoError(t, err)
		require.Equal(t, devA, got, "hint %q", hint)
	}
	require.Equal(t, 3, fk.Scans())

	requireRefresh(t, fk, devA, a, 8*mib, 16*mib)

	require.NoError(t, fk.Detach(devA))
	require.NoError(t, fk.Detach(devA), "detaching twice is fine")
	require.Equal(t, 1, fk.Detaches())
	got, err = fk.Find(imgA, devA)
	require.NoError(t, err)
	require.Empty(t, got)
	_, err = fk.Size(devA)
	require.ErrorIs(t, err, ErrNotAttached)
	require.ErrorIs(t, fk.Refresh(devA), ErrNotAttached)

	// The lowest free device is taken again, as LOOP_CTL_GET_FREE does.
	devA2, err := fk.Attach(a, AttachOptions{})
	require.NoError(t, err)
	require.Equal(t, devA, devA2)
}

func TestFakeSetError(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		op   Op
		call func(fk *Fake, x *fakeFixture) error
	}{
		{name: "find", op: OpFind, call: func(fk *Fake, x *fakeFixture) error { _, err := fk.Find(x.img, x.dev); return err }},
		{name: "attach", op: OpAttach, call: func(fk *Fake, x *fakeFixture) error { _, err := fk.Attach(x.other, AttachOptions{}); return err }},
		{name: "detach", op: OpDetach, call: func(fk *Fake, x *fakeFixture) error { return fk.Detach(x.dev) }},
		{name: "refresh", op: OpRefresh, call: func(fk *Fake, x *fakeFixture) error { return fk.Refresh(x.dev) }},
		{name: "size", op: OpSize, call: func(fk *Fake, x *fakeFixture) error { _, err := fk.Size(x.dev); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fk := NewFake()
			x := newFakeFixture(t, fk)
			fk.SetError(tc.op, boom)
			require.ErrorIs(t, tc.call(fk, x), boom)
			require.ErrorIs(t, tc.call(fk, x), boom, "until cleared")
			require.Equal(t, map[string]Image{x.dev: x.img}, fk.Attached(), "a failed call changes nothing")
			require.Equal(t, 1, fk.Attaches())
			require.Zero(t, fk.Detaches())
			fk.SetError(tc.op, nil)
			require.NoError(t, tc.call(fk, x))
		})
	}
}

// fakeFixture is one image attached to a Fake and one not.
type fakeFixture struct {
	img   Image
	dev   string
	other *os.File
}

func newFakeFixture(t *testing.T, fk *Fake) *fakeFixture {
	t.Helper()
	dir := t.TempDir()
	f, img := newImage(t, dir, "vol.img", mib)
	other, _ := newImage(t, dir, "other.img", mib)
	dev, err := fk.Attach(f, AttachOptions{})
	require.NoError(t, err)
	return &fakeFixture{img: img, dev: dev, other: other}
}
