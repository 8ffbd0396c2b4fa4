package records

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

type rec struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

func TestPutGetDelete(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "records"))
	require.NoError(t, err)

	var got rec
	require.True(t, errors.Is(s.Get("a", &got), ErrNotFound))

	require.NoError(t, s.Put("a", rec{Name: "first", N: 1}))
	require.NoError(t, s.Put("a", rec{Name: "second", N: 2}))
	require.NoError(t, s.Get("a", &got))
	require.Equal(t, rec{Name: "second", N: 2}, got)

	require.NoError(t, s.Delete("a"))
	require.NoError(t, s.Delete("a"), "deleting a missing record succeeds")
	require.True(t, errors.Is(s.Get("a", &got), ErrNotFound))
}

func TestRestartSeesRecordsAndDropsTemporaries(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "records")
	s, err := Open(dir)
	require.NoError(t, err)
	require.NoError(t, s.Put("b", rec{Name: "b"}))
	require.NoError(t, s.Put("a", rec{Name: "a"}))
	// A crash between CreateTemp and Rename leaves a temporary file.
	require.NoError(t, os.WriteFile(filepath.Join(dir, tmpPrefix+"c-123"), []byte("{tor"), 0o600))

	s2, err := Open(dir)
	require.NoError(t, err)
	keys, err := s2.Keys()
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, keys)
	_, err = os.Stat(filepath.Join(dir, tmpPrefix+"c-123"))
	require.True(t, errors.Is(err, os.ErrNotExist))
	var got rec
	require.NoError(t, s2.Get("b", &got))
	require.Equal(t, "b", got.Name)
}

func TestCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "x"+suffix), []byte("{not json"), 0o600))
	var got rec
	require.True(t, errors.Is(s.Get("x", &got), ErrCorrupt))
}

func TestInvalidKeys(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	for _, k := range []string{"", ".", "..", "../x", "a/b", "a\x00b", ".hidden"} {
		require.Error(t, s.Put(k, rec{}), "key %q", k)
		require.Error(t, s.Get(k, &rec{}), "key %q", k)
		require.Error(t, s.Delete(k), "key %q", k)
	}
}

func TestConcurrentWritersOfDifferentKeys(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			key := string(rune('a' + i))
			for j := 0; j < 20; j++ {
				require.NoError(t, s.Put(key, rec{Name: key, N: j}))
			}
		}(i)
	}
	wg.Wait()
	keys, err := s.Keys()
	require.NoError(t, err)
	require.Len(t, keys, 16)
	var got rec
	require.NoError(t, s.Get("c", &got))
	require.Equal(t, 19, got.N)
}
