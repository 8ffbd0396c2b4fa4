package volume

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
)

// BenchmarkCreateDelete measures a create + delete of a directory volume
// with 10 and 5000 volumes already present.
func BenchmarkCreateDelete(b *testing.B) {
	for _, existing := range []int{10, 5000} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			dir := b.TempDir()
			pd := filepath.Join(dir, "pool")
			if err := os.Mkdir(pd, 0o755); err != nil {
				b.Fatal(err)
			}
			p, err := pool.Open(pool.Spec{Name: pool.DefaultName, Path: pd})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			m, err := New(Config{NodeID: "n", StateDir: filepath.Join(dir, "state"), Pools: []*pool.Pool{p}, Mounter: mount.NewFakeMounter(nil)})
			if err != nil {
				b.Fatal(err)
			}
			if err := m.Load(); err != nil {
				b.Fatal(err)
			}
			for i := 0; i < existing; i++ {
				if _, err := m.Controller.Create(CreateRequest{Name: fmt.Sprintf("existing-%d", i), Kind: KindDir, Pool: pool.DefaultName, RequiredBytes: 1 << 20}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				v, err := m.Controller.Create(CreateRequest{Name: fmt.Sprintf("bench-%d", i), Kind: KindDir, Pool: pool.DefaultName, RequiredBytes: 1 << 20})
				if err != nil {
					b.Fatal(err)
				}
				if err := m.Controller.Delete(v.ID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
