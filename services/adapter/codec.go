package adapter

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec delegated to below
)

// frame is a request or reply payload carried as opaque bytes: the adapter
// never needs the full message, only the eID field it reads once.
type frame struct {
	b   []byte
	out [1]mem.Buffer // what Marshal returns, kept in the frame: no slice of its own
}

// codec passes frames through untouched and delegates every other message
// (health, reflection) to gRPC's protobuf codec. It is set per server and per
// call (ForceServerCodecV2 / ForceCodecV2), never registered globally.
type codec struct{ proto encoding.CodecV2 }

func newCodec() codec { return codec{proto: encoding.GetCodecV2("proto")} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*frame); ok {
		f.out[0] = mem.SliceBuffer(f.b)
		return f.out[:], nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*frame); ok {
		f.b = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (c codec) Name() string { return "proto" }
