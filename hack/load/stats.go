package main

import (
	"maps"
	"math"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
)

// Samples keeps every recorded duration so percentiles are exact rather than
// estimated. It is not safe for concurrent use: each worker owns its own
// Samples and they are merged after the run.
type Samples struct {
	d      []time.Duration
	sorted bool
}

// Add records one duration.
func (s *Samples) Add(d time.Duration) {
	s.d = append(s.d, d)
	s.sorted = false
}

// Merge appends all samples of o to s.
func (s *Samples) Merge(o *Samples) {
	if len(o.d) == 0 {
		return
	}
	s.d = append(s.d, o.d...)
	s.sorted = false
}

// Len returns the number of samples.
func (s *Samples) Len() int { return len(s.d) }

func (s *Samples) sort() {
	if !s.sorted {
		slices.Sort(s.d)
		s.sorted = true
	}
}

// Percentile returns the p-th percentile using the nearest-rank method: the
// smallest sample such that at least p percent of all samples are less than
// or equal to it. p is clamped to [0, 100]; p <= 0 yields the minimum and
// p = 100 the maximum. With no samples it returns 0.
func (s *Samples) Percentile(p float64) time.Duration {
	n := len(s.d)
	if n == 0 {
		return 0
	}
	s.sort()
	// p*n/100 rather than (p/100)*n keeps the product exact for integral p,
	// so e.g. p=99, n=100 gives rank 99 and not 100.
	rank := int(math.Ceil(p * float64(n) / 100))
	rank = min(max(rank, 1), n)
	return s.d[rank-1]
}

// Max returns the largest sample, or 0 with no samples.
func (s *Samples) Max() time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	s.sort()
	return s.d[len(s.d)-1]
}

// Summary is the digest printed for one phase.
type Summary struct {
	Count         int
	P50, P90, P99 time.Duration
	Max           time.Duration
}

// Summary computes count, p50, p90, p99 and max.
func (s *Samples) Summary() Summary {
	return Summary{
		Count: s.Len(),
		P50:   s.Percentile(50),
		P90:   s.Percentile(90),
		P99:   s.Percentile(99),
		Max:   s.Max(),
	}
}

// phaseStats aggregates one phase: latencies of successful operations,
// failures by gRPC code (with the first message seen per code as an
// example) and the number of Aborted retries.
type phaseStats struct {
	samples  Samples
	failed   int
	codes    map[codes.Code]int
	examples map[codes.Code]string
	retries  int
}

// addError counts one failed operation under code c.
func (ps *phaseStats) addError(c codes.Code, msg string) {
	ps.failed++
	if ps.codes == nil {
		ps.codes = map[codes.Code]int{}
		ps.examples = map[codes.Code]string{}
	}
	ps.codes[c]++
	if _, ok := ps.examples[c]; !ok {
		ps.examples[c] = msg
	}
}

// merge adds o into ps, keeping the existing example message per code.
func (ps *phaseStats) merge(o *phaseStats) {
	ps.samples.Merge(&o.samples)
	ps.failed += o.failed
	ps.retries += o.retries
	for c, n := range o.codes {
		if ps.codes == nil {
			ps.codes = map[codes.Code]int{}
			ps.examples = map[codes.Code]string{}
		}
		ps.codes[c] += n
		if _, ok := ps.examples[c]; !ok {
			ps.examples[c] = o.examples[c]
		}
	}
}

// sortedCodes returns the codes with failures in numeric order, so output
// is deterministic.
func (ps *phaseStats) sortedCodes() []codes.Code {
	return slices.Sorted(maps.Keys(ps.codes))
}
