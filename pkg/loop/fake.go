package loop

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Op names a Manager method, for Fake.SetError.
type Op string

// The Manager methods.
const (
	OpFind    Op = "Find"
	OpAttach  Op = "Attach"
	OpDetach  Op = "Detach"
	OpRefresh Op = "Refresh"
	OpSize    Op = "Size"
	OpList    Op = "List"
)

// Fake is a Manager in memory, for tests that run as any user. It keeps
// state like the kernel does: which image is attached to which /dev/loopN
// (Attach takes the lowest free N, as LOOP_CTL_GET_FREE does), each device's
// size (the backing file's at Attach, and again at Refresh). It is stricter
// than the kernel in one way: attaching an image that is attached already
// fails, because the caller promises Find first. Use a new Fake per test.
type Fake struct {
	mu       sync.Mutex
	devices  map[string]*fakeDevice // by "/dev/loopN"
	errs     map[Op]error
	attaches int
	detaches int
	scans    int
}

type fakeDevice struct {
	img  Image
	size int64
}

var _ Manager = (*Fake)(nil)

// NewFake returns a Fake with no device attached.
func NewFake() *Fake {
	return &Fake{devices: make(map[string]*fakeDevice), errs: make(map[Op]error)}
}

// SetError makes every call of op fail with err, without any effect, until
// SetError(op, nil). A Detach failing this way leaves the device attached,
// as a real ErrBusy does.
func (f *Fake) SetError(op Op, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.errs, op)
		return
	}
	f.errs[op] = err
}

// Attaches counts successful Attach calls.
func (f *Fake) Attaches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attaches
}

// Detaches counts Detach calls that detached a device.
func (f *Fake) Detaches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.detaches
}

// Scans counts Find calls that could not answer from their hint and looked
// at every device.
func (f *Fake) Scans() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.scans
}

// Attached returns a copy of the attached devices: device path -> image.
func (f *Fake) Attached() map[string]Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]Image, len(f.devices))
	for dev, d := range f.devices {
		out[dev] = d.img
	}
	return out
}

// Find looks at hint, then at every device in number order.
func (f *Fake) Find(img Image, hint string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errs[OpFind]; err != nil {
		return "", err
	}
	if d, ok := f.devices[hint]; ok && d.img.Same(img) {
		return hint, nil
	}
	f.scans++
	for _, dev := range f.sortedDevices() {
		if f.devices[dev].img.Same(img) {
			return dev, nil
		}
	}
	return "", nil
}

// Attach records backing (identified by fstat) on the lowest free device.
func (f *Fake) Attach(backing *os.File, _ AttachOptions) (string, error) {
	img, err := ImageOf(backing)
	if err != nil {
		return "", err
	}
	fi, err := backing.Stat()
	if err != nil {
		return "", fmt.Errorf("attach %s: %w", backing.Name(), err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errs[OpAttach]; err != nil {
		return "", err
	}
	for dev, d := range f.devices {
		if d.img.Same(img) {
			return "", fmt.Errorf("fake loop: attach %s: already attached to %s (the caller must Find first)", img, dev)
		}
	}
	n := 0
	for f.devices[fakeDev(n)] != nil {
		n++
	}
	dev := fakeDev(n)
	f.devices[dev] = &fakeDevice{img: img, size: fi.Size()}
	f.attaches++
	return dev, nil
}

// Detach forgets dev; an unknown device is not an error.
func (f *Fake) Detach(dev string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errs[OpDetach]; err != nil {
		return err
	}
	if _, ok := f.devices[dev]; ok {
		delete(f.devices, dev)
		f.detaches++
	}
	return nil
}

// Refresh takes the size of the file at the image's path now.
func (f *Fake) Refresh(dev string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errs[OpRefresh]; err != nil {
		return err
	}
	d, err := f.device(dev)
	if err != nil {
		return fmt.Errorf("refresh: %w", err)
	}
	fi, err := os.Stat(d.img.Path)
	if err != nil {
		return fmt.Errorf("refresh %s: %w", dev, err)
	}
	d.size = fi.Size()
	return nil
}

// Size returns the size recorded at Attach or the last Refresh.
func (f *Fake) Size(dev string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errs[OpSize]; err != nil {
		return 0, err
	}
	d, err := f.device(dev)
	if err != nil {
		return 0, fmt.Errorf("size: %w", err)
	}
	return d.size, nil
}

// List returns the attached devices in number order.
func (f *Fake) List() ([]Attachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errs[OpList]; err != nil {
		return nil, err
	}
	out := make([]Attachment, 0, len(f.devices))
	for _, dev := range f.sortedDevices() {
		out = append(out, Attachment{Device: dev, Image: f.devices[dev].img})
	}
	return out, nil
}

func (f *Fake) device(dev string) (*fakeDevice, error) {
	d, ok := f.devices[dev]
	if !ok {
		return nil, fmt.Errorf("%s: %w", dev, ErrNotAttached)
	}
	return d, nil
}

func (f *Fake) sortedDevices() []string {
	devs := make([]string, 0, len(f.devices))
	for dev := range f.devices {
		devs = append(devs, dev)
	}
	sort.Slice(devs, func(i, j int) bool { return fakeNum(devs[i]) < fakeNum(devs[j]) })
	return devs
}

func fakeDev(n int) string { return devDir + "/loop" + strconv.Itoa(n) }

func fakeNum(dev string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(dev, devDir+"/loop"))
	return n
}
