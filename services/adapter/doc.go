// Package adapter is jisr's one generic adapter. Its consumer side serves
// every federation service over gRPC to the member's own backend and sends
// each call as a NATS request on jisr.q.<member>.…; its provider side takes
// jisr.p.<member>.… requests from the gateway and calls the member's backend
// over gRPC.
//
// Invariant: the adapter never sees another member's subjects (its NATS
// permissions forbid it) and never puts the eID anywhere but the payload:
// the subject carries the ckey, status messages are fixed texts.
package adapter
