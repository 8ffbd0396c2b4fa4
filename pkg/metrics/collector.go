package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// storageCollector reads the pool and volume figures when Prometheus
// scrapes: one statfs per pool, the promised bytes and volume counts from
// memory. Nothing per volume.
type storageCollector struct {
	src                          Storage
	capacity, free, promised, vs *prometheus.Desc
	copies, copyRemaining        *prometheus.Desc
}

func newStorageCollector(src Storage) *storageCollector {
	pool := []string{"pool"}
	return &storageCollector{
		src: src,
		capacity: prometheus.NewDesc("hostvol_pool_capacity_bytes",
			"Size of the pool's filesystem.", pool, nil),
		free: prometheus.NewDesc("hostvol_pool_free_bytes",
			"Bytes of the pool's filesystem available to hostvol (statfs f_bavail), promised or not.", pool, nil),
		promised: prometheus.NewDesc("hostvol_pool_promised_bytes",
			"Bytes the pool's volumes may still grow into: what hostvol keeps free for them (shared pools: the volumes this node knows of).", pool, nil),
		copies: prometheus.NewDesc("hostvol_snapshot_copies",
			"Snapshots being copied into the pool in the background (pools that can neither reflink nor btrfs-snapshot the volume).", pool, nil),
		copyRemaining: prometheus.NewDesc("hostvol_snapshot_copy_remaining_bytes",
			"Bytes the pool's background snapshot copies still have to copy.", pool, nil),
		vs: prometheus.NewDesc("hostvol_volumes",
			"Ready volumes in this node's node-local pools, by kind (dir, loop, block).", []string{"kind"}, nil),
	}
}

func (c *storageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.capacity
	ch <- c.free
	ch <- c.promised
	ch <- c.vs
	ch <- c.copies
	ch <- c.copyRemaining
}

func (c *storageCollector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range c.src.PoolFigures() {
		ch <- prometheus.MustNewConstMetric(c.promised, prometheus.GaugeValue, float64(f.PromisedBytes), f.Name)
		ch <- prometheus.MustNewConstMetric(c.copies, prometheus.GaugeValue, float64(f.SnapshotCopies), f.Name)
		ch <- prometheus.MustNewConstMetric(c.copyRemaining, prometheus.GaugeValue, float64(f.SnapshotCopyRemainingBytes), f.Name)
		if f.Err != nil {
			// The scrape still serves everything else; the handler logs
			// this and counts it in promhttp_metric_handler_errors_total.
			ch <- prometheus.NewInvalidMetric(c.capacity, fmt.Errorf("pool %q: %w", f.Name, f.Err))
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(f.CapacityBytes), f.Name)
		ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(f.FreeBytes), f.Name)
	}
	counts := c.src.VolumeCounts()
	for _, k := range volume.Kinds {
		ch <- prometheus.MustNewConstMetric(c.vs, prometheus.GaugeValue, float64(counts[k]), string(k))
	}
}
