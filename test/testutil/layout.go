package testutil

import (
	"path/filepath"
	"strings"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
)

// Names of the state directory's layout that no package exports: the
// volume manager keeps node states in <state>/node and the staging mounts
// of inline loop volumes in <state>/ephemeral, and pkg/records names a
// record <key>.json. Tests spell them here only.
const (
	nodeStatesDir = "node"
	inlineDir     = "ephemeral"
	recordSuffix  = ".json"
)

// Layout is where a driver keeps the volumes of one pool: records and node
// states in its state directory, data and images in the pool. The paths
// come from pkg/pool wherever it answers.
type Layout struct {
	StateDir string
	Pool     *pool.Pool
}

// LayoutAt is the layout of a node-local pool at poolPath that this process
// has not opened (a driver in another process serves it). Only its path
// methods may be used.
func LayoutAt(stateDir, poolPath string) Layout {
	return Layout{StateDir: stateDir, Pool: &pool.Pool{Spec: pool.Spec{Name: pool.DefaultName, Path: poolPath}}}
}

// RecordsDir holds the pool's volume records.
func (l Layout) RecordsDir() string { return l.Pool.RecordsDir(l.StateDir) }

// RecordPath is the record file of volume id.
func (l Layout) RecordPath(id string) string {
	return filepath.Join(l.RecordsDir(), RecordFile(id))
}

// RecordFile is the name of volume id's record file.
func RecordFile(id string) string { return id + recordSuffix }

// RecordKey is the volume ID of a record file name, and whether name is
// one (temporary files start with a dot).
func RecordKey(name string) (string, bool) {
	if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, recordSuffix) {
		return "", false
	}
	return strings.TrimSuffix(name, recordSuffix), true
}

// NodeStatesDir holds what the node records about staged volumes.
func (l Layout) NodeStatesDir() string { return filepath.Join(l.StateDir, nodeStatesDir) }

// NodeStatePath is the node state file of volume id.
func (l Layout) NodeStatePath(id string) string {
	return filepath.Join(l.NodeStatesDir(), RecordFile(id))
}

// InlineDir holds the staging mounts of inline loop volumes.
func (l Layout) InlineDir() string { return filepath.Join(l.StateDir, inlineDir) }

// DataDir is the data directory of directory volume id.
func (l Layout) DataDir(id string) string { return l.Pool.DirPath(id) }

// DataRoot holds the pool's directory volumes.
func (l Layout) DataRoot() string { return filepath.Dir(l.Pool.DirPath("x")) }

// ImagePath is the image file of loop or block volume id.
func (l Layout) ImagePath(id string) string { return l.Pool.ImagePath(id) }

// ImagesDir holds the pool's image files.
func (l Layout) ImagesDir() string { return filepath.Dir(l.Pool.ImagePath("x")) }

// ImageID is the volume ID of an image file name in ImagesDir.
func (l Layout) ImageID(name string) string {
	return strings.TrimSuffix(name, filepath.Ext(l.Pool.ImagePath("x")))
}
