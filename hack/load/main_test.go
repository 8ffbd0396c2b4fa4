package main

import (
	"io"
	"testing"
)

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"--endpoint", "unix:///x.sock", "--param", "a=b", "--param", "c=d=e", "--size", "2Mi"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.endpoint != "unix:///x.sock" || cfg.n != 1000 || cfg.c != 1 || cfg.e != 0 || cfg.size != 2<<20 ||
		cfg.accessType != "mount" || cfg.stage != "auto" || cfg.timeout.String() != "30s" {
		t.Errorf("unexpected config %+v", cfg)
	}
	if got := formatMap(cfg.params); got != "a=b,c=d=e" {
		t.Errorf("params = %q", got)
	}
	if len(cfg.namePrefix) != len("load-")+6 {
		t.Errorf("default name prefix %q", cfg.namePrefix)
	}

	floor, err := parseFlags([]string{"--floor", "--size", "1Gi", "--fs-type", "ext4", "--pool-dir", "/p", "--direct-io"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !floor.floor || floor.endpoint != "" || floor.size != 1<<30 || floor.fsType != "ext4" || floor.poolDir != "/p" || !floor.directIO {
		t.Errorf("unexpected floor config %+v", floor)
	}

	defaults, err := parseFlags([]string{"--endpoint", "/x.sock"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if defaults.size != 1<<20 {
		t.Errorf("default size = %d, want 1MiB", defaults.size)
	}

	for _, bad := range [][]string{
		{},
		{"--endpoint", "/x", "--c", "0"},
		{"--endpoint", "/x", "--n", "-1"},
		{"--endpoint", "/x", "--access-type", "file"},
		{"--endpoint", "/x", "--access-type", "block", "--fs-type", "ext4"},
		{"--endpoint", "/x", "--stage", "sometimes"},
		{"--endpoint", "/x", "--param", "novalue"},
		{"--endpoint", "/x", "--timeout", "0s"},
		{"--endpoint", "/x", "extra"},
		{"--endpoint", "/x", "--pool-dir", "/p"},
		{"--endpoint", "/x", "--direct-io"},
		{"--endpoint", "x.sock"},
		{"--endpoint", "http://x"},
		{"--floor"},
		{"--floor", "--size", "1Gi", "--endpoint", "/x"},
		{"--floor", "--size", "1Gi", "--e", "3"},
		{"--floor", "--size", "1Gi", "--param", "type=loop"},
		{"--floor", "--size", "1Gi", "--access-type", "block"},
		{"--floor", "--size", "1Gi", "--stage", "never"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want error", bad)
		}
	}
}
