// Package vmtests holds tests that must run as root in a throwaway VM
// booting Debian's stock kernel (test/vm/run.sh): things the development
// host or a CI container cannot do, such as growing a mounted ext4
// filesystem (needs CAP_SYS_RESOURCE) or XFS and ext4 project quotas
// (kernel features a host kernel may lack). Outside the VM every test skips.
//
//	test/vm/run.sh ./test/vmtests -test.v
//	make vm-test
package vmtests

import (
	"os"
	"testing"
)

// InVMEnv is set to 1 by the VM's init (test/vm/init.sh).
const InVMEnv = "HOSTVOL_IN_VM"

// RequireVM skips a test unless it runs inside the test VM: these tests
// format, mount and grow real filesystems and rely on kernel features and
// capabilities a development host may lack.
func RequireVM(t testing.TB) {
	t.Helper()
	if os.Getenv(InVMEnv) != "1" {
		t.Skipf("skipping %s: runs only inside the test VM (test/vm/run.sh ./test/vmtests, or make vm-test); %s=1 is not set", t.Name(), InVMEnv)
	}
}
