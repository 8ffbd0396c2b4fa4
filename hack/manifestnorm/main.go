// Command manifestnorm writes each Kubernetes object of a YAML stream as
// canonical JSON (sorted keys, two-space indent) into its own file,
// DIR/<kind>.<namespace>.<name>.json, so that two renderings of the same
// objects (kustomize build, helm template) can be compared with diff -r.
//
//	manifestnorm -out DIR [-drop-label KEY]... < objects.yaml
//
// Normalization, and nothing more: labels named by -drop-label are removed
// from metadata.labels and from a pod template's labels (helm.sh/chart and
// the like, which only one renderer sets); null values, empty maps and
// empty lists are removed (Kubernetes reads them as absent; Helm templates
// produce them). Lists keep their order. Two objects with the same kind,
// namespace and name are an error.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	out := flag.String("out", "", "directory to write the objects into (created; must be empty)")
	var drop stringList
	flag.Var(&drop, "drop-label", "label key to remove (repeatable)")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: manifestnorm -out DIR [-drop-label KEY]... < objects.yaml")
		os.Exit(2)
	}
	if err := run(os.Stdin, *out, drop); err != nil {
		fmt.Fprintf(os.Stderr, "manifestnorm: %v\n", err)
		os.Exit(1)
	}
}

func run(in io.Reader, dir string, drop []string) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	objs, err := normalize(data, drop)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if entries, err := os.ReadDir(dir); err != nil {
		return err
	} else if len(entries) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	for name, body := range objs {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// normalize returns each object of a YAML stream as canonical JSON, keyed
// by its file name.
func normalize(data []byte, drop []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for i, doc := range splitDocuments(data) {
		var obj any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if obj == nil {
			continue // only comments or nothing
		}
		m, ok := obj.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("document %d: not an object", i+1)
		}
		dropLabels(m, drop)
		m, _ = prune(m).(map[string]any)
		name, err := fileName(m)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("document %d: %s appears twice", i+1, strings.TrimSuffix(name, ".json"))
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(m); err != nil { // maps are written with sorted keys
			return nil, err
		}
		out[name] = b.Bytes()
	}
	return out, nil
}

// splitDocuments splits a YAML stream at its "---" separator lines.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if t := bytes.TrimRight(line, " \t\r\n"); bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.Write(line)
	}
	return append(docs, cur.Bytes())
}

// fileName is <kind>.<namespace>.<name>.json; the namespace is "_" for
// cluster-scoped objects.
func fileName(m map[string]any) (string, error) {
	kind, _ := m["kind"].(string)
	meta, _ := m["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	if kind == "" || name == "" {
		return "", errors.New("object without kind or metadata.name")
	}
	if ns == "" {
		ns = "_"
	}
	return kind + "." + ns + "." + name + ".json", nil
}

// dropLabels removes the keys from the object's labels and, for workloads,
// from spec.template.metadata.labels.
func dropLabels(m map[string]any, keys []string) {
	del := func(labels any) {
		if l, ok := labels.(map[string]any); ok {
			for _, k := range keys {
				delete(l, k)
			}
		}
	}
	if meta, ok := m["metadata"].(map[string]any); ok {
		del(meta["labels"])
	}
	if spec, ok := m["spec"].(map[string]any); ok {
		if tmpl, ok := spec["template"].(map[string]any); ok {
			if meta, ok := tmpl["metadata"].(map[string]any); ok {
				del(meta["labels"])
			}
		}
	}
}

// prune removes nulls, empty maps and empty lists, innermost first, so a
// map left empty by pruning goes too. It returns nil for a value that is
// itself empty.
func prune(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if p := prune(e); p == nil {
				delete(t, k)
			} else {
				t[k] = p
			}
		}
		if len(t) == 0 {
			return nil
		}
		return t
	case []any:
		out := t[:0]
		for _, e := range t {
			if p := prune(e); p != nil {
				out = append(out, p)
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	default:
		return v
	}
}
