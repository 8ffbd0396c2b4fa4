// Package metrics holds the end-to-end test of hostvol's HTTP endpoint: a
// driver with fakes (any user) served over gRPC with the metrics
// interceptor, and /metrics and /healthz scraped over HTTP, as Prometheus
// and the kubelet would. See metrics_test.go.
package metrics
