//go:build race

package natstest

// RaceDetector reports whether the tests run under the race detector.
const RaceDetector = true
