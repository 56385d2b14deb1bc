// Package ssetest is the test kit shared by ssemesh's packages: an SSE
// client over a real HTTP connection (Dial, Client), a scripted upstream
// that plays SSE responses (Serve, Script, Response), waits for conditions
// (Eventually, Await, Poll) and a logrus logger that writes to the test log
// (Logger, BufferedLogger).
//
// It imports nothing of ssemesh but internal/sse, so every package can use
// it in its tests.
package ssetest
