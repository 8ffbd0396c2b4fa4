//go:build !race

package crash

// raceEnabled: see race_on_test.go.
const raceEnabled = false
