// Package records keeps one small JSON file per key in a directory, written
// atomically: a temporary file in the same directory is written and fsynced,
// renamed over the final name, and the directory is fsynced. A reader sees
// either the previous record or the new one, never a torn write, and a crash
// at any instant loses at most the write in progress.
//
// Every operation touches one file only: the cost does not grow with the
// number of records. Keys are not validated here beyond being a single plain
// path element; callers pass keys they have validated (volume IDs).
//
// Error contract:
//   - Get of a missing key returns an error wrapping ErrNotFound.
//   - Delete of a missing key succeeds.
//   - A record that cannot be decoded is reported with ErrCorrupt by Get and
//     by List (List keeps going and returns the others).
//   - Any other error is an I/O error from the operating system.
package records

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const (
	suffix    = ".json"
	tmpPrefix = ".tmp-"
)

var (
	// ErrNotFound is returned (wrapped) by Get for a key with no record.
	ErrNotFound = errors.New("record not found")
	// ErrCorrupt is returned (wrapped) for a record that does not decode.
	ErrCorrupt = errors.New("record corrupt")
)

// Store is a directory of records. It is safe for concurrent use on
// different keys; callers serialize writers of one key (per-volume lock).
type Store struct {
	dir string
}

// Open creates dir if needed, removes temporary files left by a crash, and
// returns a Store on it.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create record directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read record directory: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			// A write that never reached its rename: the previous record,
			// if any, is still in place.
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("remove stale temporary record: %w", err)
			}
		}
	}
	return &Store{dir: dir}, nil
}

// Dir is the directory holding the records.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(key string) (string, error) {
	if key == "" || key == "." || key == ".." || strings.ContainsAny(key, "/\x00") || strings.HasPrefix(key, ".") {
		return "", fmt.Errorf("invalid record key %q", key)
	}
	return filepath.Join(s.dir, key+suffix), nil
}

// Put stores v (JSON-encoded) under key, replacing any previous record.
// When Put returns nil the record is durable.
func (s *Store) Put(key string, v any) error {
	final, err := s.path(key)
	if err != nil {
		return err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode record %s: %w", key, err)
	}
	f, err := os.CreateTemp(s.dir, tmpPrefix+key+"-")
	if err != nil {
		return fmt.Errorf("write record %s: %w", key, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write record %s: %w", key, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync record %s: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close record %s: %w", key, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("rename record %s: %w", key, err)
	}
	ok = true
	return syncDir(s.dir)
}

// Get decodes the record under key into v.
func (s *Store) Get(key string, v any) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return fmt.Errorf("read record %s: %w", key, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
	}
	return nil
}

// Delete removes the record under key. A missing record is not an error.
// When Delete returns nil the removal is durable.
func (s *Store) Delete(key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete record %s: %w", key, err)
	}
	return syncDir(s.dir)
}

// Keys lists the keys of all records, sorted. It reads the directory, so it
// is O(n): for start-up and listing, never for a single-volume operation.
func (s *Store) Keys() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read record directory: %w", err)
	}
	keys := make([]string, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, suffix) || !e.Type().IsRegular() {
			continue
		}
		keys = append(keys, strings.TrimSuffix(n, suffix))
	}
	sort.Strings(keys)
	return keys, nil
}

// syncDir fsyncs a directory so that entries created, renamed or removed in
// it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
