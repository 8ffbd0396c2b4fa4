//go:build race

package crash

// raceEnabled: the test binary is built with -race, so the driver under
// test is built with -race too and any data race in it stops it.
const raceEnabled = true
