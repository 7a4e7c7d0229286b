module example.org/ministry/jisr-examples

go 1.26.0

require (
	github.com/jisr-bus/jisr/proto v0.0.0-00010101000000-000000000000
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1
	google.golang.org/grpc v1.85.0
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// github.com/jisr-bus/jisr/proto is not published (the Go module proxy
// answers 403 "not available" for it, and the repository is not public):
// point it at a checkout of jisr. See docs/integrate.md, "Go".
replace github.com/jisr-bus/jisr/proto => ../../proto
