package fsutil

import (
	"context"
	"sync"
)

// Fake is a stateful Interface for unprivileged unit tests: it records
// which paths were formatted with what and which mounts were grown.
type Fake struct {
	mu        sync.Mutex
	Formatted map[string]string // path -> filesystem type
	Grown     []string          // mount paths, in order
	// GrownOffline are devices grown while unmounted, in order.
	GrownOffline []string
	// Err, when set, is returned by every call.
	Err error
}

// Format records the filesystem type for path.
func (f *Fake) Format(_ context.Context, fsType, path string) error {
	if _, err := Check(fsType); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	if f.Formatted == nil {
		f.Formatted = map[string]string{}
	}
	f.Formatted[path] = fsType
	return nil
}

// GrowOffline records an offline grow of an ext4 device.
func (f *Fake) GrowOffline(_ context.Context, fsType, device string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return false, f.Err
	}
	if t, _ := Check(fsType); t != Ext4 {
		return false, nil
	}
	f.GrownOffline = append(f.GrownOffline, device)
	return true, nil
}

// Grow records the mount path.
func (f *Fake) Grow(_ context.Context, _, _, mountPath string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	f.Grown = append(f.Grown, mountPath)
	return nil
}
