// manifestnorm is its own module, so the driver's go.mod does not carry a
// YAML library only `make verify` uses.
module github.com/seed3e7d50b2/hostvol/hack/manifestnorm

go 1.26

require sigs.k8s.io/yaml v1.6.0

require go.yaml.in/yaml/v2 v2.4.2 // indirect
