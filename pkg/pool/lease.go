package pool

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Leases say which node has a shared pool's image attached. Two kernels
// that mount one ext4 or XFS image at once corrupt it, and nothing else
// stops a second node: the image is a plain file every node can open. A
// node takes the lease before it attaches the image and gives it back
// after it detached it; a node that finds another's lease does not attach.
//
// A lease is a file <pool>/.hostvol/leases/<volume ID> holding the node's
// name, created whole or not at all: written under a temporary name, then
// link(2)ed to its final name, which fails if a lease is there already
// (atomic on local filesystems, NFS and CephFS alike; the classic NFS lock
// file technique). Leases never expire: a node that vanished with the
// image attached keeps it until an admin, sure the node is gone, removes
// the file. Expiry would hand the image to a second node while a
// partitioned first one still writes to it.
const leasesDir = ".hostvol/leases"

// ErrLeaseHeld is returned (wrapped) when another node holds the lease.
var ErrLeaseHeld = errors.New("held by another node")

type leaseFile struct {
	Node  string    `json:"node"`
	Since time.Time `json:"since"`
}

// LeasePath is the host path of a volume's lease. id must be a validated
// volume ID.
func (p *Pool) LeasePath(id string) string {
	return filepath.Join(p.Path, leasesDir, id)
}

// AcquireLease takes the lease of a volume's image for node. It returns
// acquired=true when it made the lease now, false when node held it
// already; a lease of another node is ErrLeaseHeld naming that node.
func (p *Pool) AcquireLease(id, node string) (acquired bool, err error) {
	if err := p.root.MkdirAll(leasesDir, 0o755); err != nil {
		return false, fmt.Errorf("lease of %s: %w", id, err)
	}
	data, err := json.Marshal(leaseFile{Node: node, Since: time.Now().UTC().Truncate(time.Second)})
	if err != nil {
		return false, err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(leasesDir, ".tmp-"+id+"-"+hex.EncodeToString(rnd[:]))
	f, err := p.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return false, fmt.Errorf("lease of %s: %w", id, err)
	}
	defer p.root.Remove(tmp) //nolint:errcheck // the link, if made, keeps the file
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return false, fmt.Errorf("lease of %s: %w", id, werr)
	}
	err = p.root.Link(tmp, filepath.Join(leasesDir, id))
	if errors.Is(err, os.ErrExist) {
		holder, herr := p.LeaseHolder(id)
		if herr != nil {
			return false, herr
		}
		if holder == node {
			return false, nil
		}
		return false, fmt.Errorf("image of %s in pool %q: lease %s %w %q", id, p.Name, p.LeasePath(id), ErrLeaseHeld, holder)
	}
	if err != nil {
		return false, fmt.Errorf("lease of %s: %w", id, err)
	}
	return true, p.syncDir(leasesDir)
}

// LeaseHolder returns the node holding a volume's lease, or "".
func (p *Pool) LeaseHolder(id string) (string, error) {
	b, err := p.root.ReadFile(filepath.Join(leasesDir, id))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("lease of %s: %w", id, err)
	}
	var l leaseFile
	if err := json.Unmarshal(b, &l); err != nil || l.Node == "" {
		// Never written torn (link of a complete file), so this is not
		// ours: treat it as held, and say by what.
		return fmt.Sprintf("(unreadable lease %s)", p.LeasePath(id)), nil
	}
	return l.Node, nil
}

// ReleaseLease gives back node's lease of a volume's image. A lease that
// is missing, or held by another node, is left as it is.
func (p *Pool) ReleaseLease(id, node string) error {
	holder, err := p.LeaseHolder(id)
	if err != nil || holder != node {
		return err
	}
	if err := p.root.Remove(filepath.Join(leasesDir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release lease of %s: %w", id, err)
	}
	return p.syncDir(leasesDir)
}

// Leases lists the volume IDs that have a lease in the pool.
func (p *Pool) Leases() ([]string, error) {
	f, err := p.root.Open(leasesDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if !strings.HasPrefix(n, ".") {
			out = append(out, n)
		}
	}
	return out, nil
}
