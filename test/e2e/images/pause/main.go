// Command pause is the pod sandbox ("pause") image of the e2e cluster: it
// holds the pod's namespaces and does nothing until it is told to stop.
// containerd runs it as its sandbox image (test/e2e/conf/containerd.toml);
// the real one cannot be pulled here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		// Reap orphans: pause is PID 1 of a shared PID namespace.
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGCHLD)
		for range ch {
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}()
	<-c
}
