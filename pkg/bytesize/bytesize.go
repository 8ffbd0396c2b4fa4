// Package bytesize reads a byte count written as a Kubernetes quantity
// (1073741824, 1Gi, 512Mi, 1.5Gi, 1G), the way a PVC's storage request is
// written. StorageClass and inline volume parameters, the driver's flags,
// the client and the load tool all read sizes through it, so they accept
// the same forms and refuse them with the same message.
package bytesize

import (
	"flag"
	"fmt"
	"math"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
)

// Forms says what Parse accepts; every error of Parse ends with it.
const Forms = "want a whole number of bytes, plain (1073741824) or as a Kubernetes quantity (1Gi, 512Mi, 1.5Gi, 1G)"

// Parse returns the number of bytes s stands for. It refuses what is not a
// quantity, a negative size, a fraction of a byte ("100m" is a tenth of a
// byte, not 100Mi) and a size int64 cannot hold. Zero is a valid result:
// callers that need a positive size say so in their own words. s is quoted
// and cut in the error (untrusted.Quote), since it may come from a request.
func Parse(s string) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("size %s: %s", untrusted.Quote(s), Forms)
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("size %s is negative: %s", untrusted.Quote(s), Forms)
	}
	// ParseQuantity clamps what it cannot hold to MaxInt64, so MaxInt64
	// itself is refused too.
	if q.CmpInt64(math.MaxInt64) >= 0 {
		return 0, fmt.Errorf("size %s is too large (at most %d bytes): %s", untrusted.Quote(s), int64(math.MaxInt64-1), Forms)
	}
	// Value rounds a fraction up: a whole number of bytes is what it
	// rounded back to.
	n := q.Value()
	if q.Cmp(*resource.NewQuantity(n, resource.BinarySI)) != 0 {
		return 0, fmt.Errorf("size %s is not a whole number of bytes (the suffix m is milli, Mi is mebi): %s", untrusted.Quote(s), Forms)
	}
	return n, nil
}

// Var defines a flag on fs whose value, given as Parse reads it, is stored
// in *p. The value *p holds when Var is called is the flag's default.
func Var(fs *flag.FlagSet, p *int64, name, usage string) {
	fs.Var((*value)(p), name, usage)
}

// value is a flag.Value over an int64 byte count.
type value int64

func (v *value) String() string {
	if v == nil {
		return "0"
	}
	// The shortest quantity Parse reads back as *v: 1Gi, 1500, 1536Mi.
	return resource.NewQuantity(int64(*v), resource.BinarySI).String()
}

func (v *value) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return err
	}
	*v = value(n)
	return nil
}

var _ flag.Value = (*value)(nil)
