//go:build !race

package productdb

const raceEnabled = false
