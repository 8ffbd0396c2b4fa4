package main

import (
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

func ms1(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// samplesOf returns 1..n ms, added in shuffled order so sorting is exercised.
func samplesOf(n int) *Samples {
	s := &Samples{}
	for _, i := range rand.Perm(n) {
		s.Add(ms1(i + 1))
	}
	return s
}

func TestPercentileNearestRank(t *testing.T) {
	tests := []struct {
		name string
		s    *Samples
		p    float64
		want time.Duration
	}{
		{"empty", &Samples{}, 50, 0},
		{"single p0", samplesOf(1), 0, ms1(1)},
		{"single p50", samplesOf(1), 50, ms1(1)},
		{"single p100", samplesOf(1), 100, ms1(1)},
		// 1..10: rank = ceil(p*10/100).
		{"10 p0", samplesOf(10), 0, ms1(1)},
		{"10 p10", samplesOf(10), 10, ms1(1)},
		{"10 p11", samplesOf(10), 11, ms1(2)},
		{"10 p50", samplesOf(10), 50, ms1(5)},
		{"10 p90", samplesOf(10), 90, ms1(9)},
		{"10 p99", samplesOf(10), 99, ms1(10)},
		{"10 p100", samplesOf(10), 100, ms1(10)},
		// 1..100: the p-th percentile is exactly p ms.
		{"100 p1", samplesOf(100), 1, ms1(1)},
		{"100 p50", samplesOf(100), 50, ms1(50)},
		{"100 p90", samplesOf(100), 90, ms1(90)},
		{"100 p99", samplesOf(100), 99, ms1(99)},
		{"100 p99.5", samplesOf(100), 99.5, ms1(100)},
		{"100 p100", samplesOf(100), 100, ms1(100)},
		// 1..1000: p99 = 990, p99.9 = 999.
		{"1000 p99", samplesOf(1000), 99, ms1(990)},
		{"1000 p99.9", samplesOf(1000), 99.9, ms1(999)},
		// 1..3: p50 = ceil(1.5) = 2nd, p90 = ceil(2.7) = 3rd.
		{"3 p50", samplesOf(3), 50, ms1(2)},
		{"3 p90", samplesOf(3), 90, ms1(3)},
		{"out of range low", samplesOf(10), -5, ms1(1)},
		{"out of range high", samplesOf(10), 150, ms1(10)},
	}
	for _, tt := range tests {
		if got := tt.s.Percentile(tt.p); got != tt.want {
			t.Errorf("%s: Percentile(%v) = %v, want %v", tt.name, tt.p, got, tt.want)
		}
	}
}

func TestPercentileDuplicates(t *testing.T) {
	s := &Samples{}
	for _, v := range []int{5, 1, 5, 5, 1, 9} { // sorted: 1 1 5 5 5 9
		s.Add(ms1(v))
	}
	for p, want := range map[float64]int{0: 1, 33: 1, 34: 5, 50: 5, 83: 5, 84: 9, 100: 9} {
		if got := s.Percentile(p); got != ms1(want) {
			t.Errorf("Percentile(%v) = %v, want %v", p, got, ms1(want))
		}
	}
}

func TestSummary(t *testing.T) {
	got := samplesOf(200).Summary()
	want := Summary{Count: 200, P50: ms1(100), P90: ms1(180), P99: ms1(198), Max: ms1(200)}
	if got != want {
		t.Errorf("Summary = %+v, want %+v", got, want)
	}
	if got := (&Samples{}).Summary(); got != (Summary{}) {
		t.Errorf("empty Summary = %+v, want zero", got)
	}
}

func TestAddAfterPercentileResorts(t *testing.T) {
	s := &Samples{}
	s.Add(ms1(10))
	s.Add(ms1(20))
	if got := s.Max(); got != ms1(20) {
		t.Fatalf("Max = %v, want 20ms", got)
	}
	s.Add(ms1(1))
	if got := s.Percentile(1); got != ms1(1) {
		t.Errorf("min after Add = %v, want 1ms", got)
	}
	if got := s.Max(); got != ms1(20) {
		t.Errorf("Max after Add = %v, want 20ms", got)
	}
}

func TestSamplesMerge(t *testing.T) {
	a, b := &Samples{}, &Samples{}
	for i := 1; i <= 50; i++ {
		a.Add(ms1(2 * i)) // evens
		b.Add(ms1(2*i - 1))
	}
	a.Percentile(50) // sort a before merging
	a.Merge(b)
	a.Merge(&Samples{})
	if a.Len() != 100 {
		t.Fatalf("Len = %d, want 100", a.Len())
	}
	if got := a.Percentile(90); got != ms1(90) {
		t.Errorf("p90 after merge = %v, want 90ms", got)
	}
}

func TestPhaseStatsMerge(t *testing.T) {
	var total, a, b phaseStats
	a.samples.Add(ms1(1))
	a.addError(codes.Internal, "first")
	a.retries = 2
	b.samples.Add(ms1(3))
	b.addError(codes.Internal, "second")
	b.addError(codes.Aborted, "aborted")
	b.retries = 1
	total.merge(&a)
	total.merge(&b)
	total.merge(&phaseStats{})

	if total.samples.Len() != 2 || total.failed != 3 || total.retries != 3 {
		t.Errorf("len=%d failed=%d retries=%d, want 2 3 3", total.samples.Len(), total.failed, total.retries)
	}
	if total.codes[codes.Internal] != 2 || total.codes[codes.Aborted] != 1 {
		t.Errorf("codes = %v", total.codes)
	}
	if total.examples[codes.Internal] != "first" {
		t.Errorf("example = %q, want the first one seen", total.examples[codes.Internal])
	}
	if got := total.sortedCodes(); len(got) != 2 || got[0] != codes.Aborted || got[1] != codes.Internal {
		t.Errorf("sortedCodes = %v, want [Aborted Internal]", got)
	}
}
