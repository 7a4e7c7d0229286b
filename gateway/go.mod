module github.com/jisr-bus/jisr/gateway

go 1.26

require (
	github.com/jisr-bus/jisr/bus v0.0.0-00010101000000-000000000000
	github.com/jisr-bus/jisr/certs v0.0.0-00010101000000-000000000000
	github.com/jisr-bus/jisr/proto v0.0.0-00010101000000-000000000000
)

require google.golang.org/protobuf v1.36.12 // indirect

replace (
	github.com/jisr-bus/jisr/bus => ../bus
	github.com/jisr-bus/jisr/certs => ../certs
	github.com/jisr-bus/jisr/proto => ../proto
)
