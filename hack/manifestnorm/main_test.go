package main

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	stream := `# Source: a comment-only document
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: sa
  namespace: ns
  labels:
    keep: "yes"
    helm.sh/chart: hostvol-0.1.0
  annotations: {}
secrets: []
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ds, namespace: ns}
spec:
  template:
    metadata:
      labels: {helm.sh/chart: x}
    spec:
      nodeSelector: null
      containers:
        - {name: a, args: [--b, --a], resources: {}}
`
	objs, err := normalize([]byte(stream), []string{"helm.sh/chart"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ServiceAccount.ns.sa.json": `{
  "apiVersion": "v1",
  "kind": "ServiceAccount",
  "metadata": {
    "labels": {
      "keep": "yes"
    },
    "name": "sa",
    "namespace": "ns"
  }
}
`,
		"DaemonSet.ns.ds.json": `{
  "apiVersion": "apps/v1",
  "kind": "DaemonSet",
  "metadata": {
    "name": "ds",
    "namespace": "ns"
  },
  "spec": {
    "template": {
      "spec": {
        "containers": [
          {
            "args": [
              "--b",
              "--a"
            ],
            "name": "a"
          }
        ]
      }
    }
  }
}
`,
	}
	if len(objs) != len(want) {
		t.Fatalf("got %d objects, want %d", len(objs), len(want))
	}
	for name, body := range want {
		if got := string(objs[name]); got != body {
			t.Errorf("%s:\n%s\nwant:\n%s", name, got, body)
		}
	}
}

func TestNormalizeErrors(t *testing.T) {
	for _, tc := range []struct{ name, stream, want string }{
		{"duplicate", "kind: A\nmetadata: {name: x}\n---\nkind: A\nmetadata: {name: x}\n", "appears twice"},
		{"no_name", "kind: A\nmetadata: {}\n", "without kind or metadata.name"},
		{"not_an_object", "- a\n", "not an object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := normalize([]byte(tc.stream), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
