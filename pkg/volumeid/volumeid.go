// Package volumeid generates hostvol volume IDs and validates IDs received
// in requests before anything derived from them can reach the filesystem.
//
// A volume ID is "hv-" followed by 32 lowercase hex digits: the first 128
// bits of SHA-256 over the CSI volume name. Deriving the ID from the name
// makes CreateVolume idempotent by name with a single O(1) record lookup and
// no name index that could disagree with the records after a crash.
//
// A snapshot ID has the same form with "hs-" (SnapshotFromName and
// ValidateSnapshot), so that neither kind of ID can be taken for the other.
// Its first 8 hex digits name the node that holds it (SnapshotNodeTag) and
// the other 24 the snapshot name: snapshots live on their source volume's
// node, and a restore asked of another node can tell "on another node"
// (the claim must be placed elsewhere) from "no such snapshot".
package volumeid

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
)

const (
	prefix         = "hv-"
	snapshotPrefix = "hs-"
	hexLen         = 32
	// Len is the length of every ID hostvol generates.
	Len = len(prefix) + hexLen
	// MaxLen is the longest ID accepted at all (the CSI spec's limit for
	// identifiers a plugin returns is 128 bytes).
	MaxLen = 128
)

var (
	// ErrMalformed marks an ID that can never be valid: empty, too long, or
	// holding characters that could be interpreted as a path ("/", "..",
	// NUL, control characters). Callers answer INVALID_ARGUMENT.
	ErrMalformed = errors.New("malformed volume ID")
	// ErrForeign marks a harmless-looking ID that hostvol did not generate.
	// No such volume can exist: callers answer NOT_FOUND (or OK for
	// DeleteVolume, which the spec makes idempotent).
	ErrForeign = errors.New("not a hostvol volume ID")
)

// FromName returns the volume ID for a CSI volume name.
func FromName(name string) string { return fromName(prefix, name) }

// SnapshotFromName returns the ID of the snapshot name made on node.
func SnapshotFromName(node, name string) string {
	sum := sha256.Sum256([]byte(name))
	return snapshotPrefix + NodeTag(node) + hex.EncodeToString(sum[:(hexLen-nodeTagLen)/2])
}

// nodeTagLen is the number of hex digits of a snapshot ID that name its
// node.
const nodeTagLen = 8

// NodeTag is the part of the snapshot IDs made on node that names it: the
// first 32 bits of SHA-256 over the node ID. Two nodes of one cluster share
// a tag with a chance of about n²/2³³ (n nodes); a restore asked of the
// wrong one of them finds no snapshot and answers NOT_FOUND.
func NodeTag(node string) string {
	sum := sha256.Sum256([]byte("node\x00" + node))
	return hex.EncodeToString(sum[:nodeTagLen/2])
}

// SnapshotNodeTag returns the node tag of a valid snapshot ID.
func SnapshotNodeTag(id string) string {
	return id[len(snapshotPrefix) : len(snapshotPrefix)+nodeTagLen]
}

func fromName(prefix, name string) string {
	sum := sha256.Sum256([]byte(name))
	return prefix + hex.EncodeToString(sum[:hexLen/2])
}

// Validate returns nil when id has the exact form hostvol generates for
// volumes, and an error wrapping ErrMalformed or ErrForeign otherwise. Only
// IDs that pass Validate may be used to build paths.
func Validate(id string) error { return validate(prefix, id) }

// ValidateSnapshot is Validate for snapshot IDs: a volume ID is ErrForeign
// here, as a snapshot ID is there.
func ValidateSnapshot(id string) error { return validate(snapshotPrefix, id) }

func validate(prefix, id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(id) > MaxLen {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(id), MaxLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c < 0x20 || c == 0x7f || c == '/' || c == '\\' || c >= 0x80 {
			return fmt.Errorf("%w: byte %#x at offset %d", ErrMalformed, c, i)
		}
	}
	if id == "." || id == ".." || strings.Contains(id, "..") {
		return fmt.Errorf("%w: contains \"..\"", ErrMalformed)
	}
	if len(id) != Len || !strings.HasPrefix(id, prefix) {
		return fmt.Errorf("%w: %s", ErrForeign, untrusted.Quote(id))
	}
	for i := len(prefix); i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w: %s", ErrForeign, untrusted.Quote(id))
		}
	}
	return nil
}
