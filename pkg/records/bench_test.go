package records

import (
	"fmt"
	"testing"
)

// BenchmarkPut measures one durable record write (write, fsync, rename,
// fsync of the directory) with 10 and 5000 other records present: the cost
// must not depend on how many records exist.
func BenchmarkPut(b *testing.B) {
	for _, existing := range []int{10, 5000} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			s, err := Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < existing; i++ {
				if err := s.Put(fmt.Sprintf("e%06d", i), rec{Name: "x"}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.Put("bench", rec{Name: "bench", N: i}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
