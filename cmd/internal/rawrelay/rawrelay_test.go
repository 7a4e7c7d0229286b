package rawrelay

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/loopback"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// The relay and the responder answer with valid replies of exactly the
// sizes the full path carries.
func TestPersonOfSizeIsExactAndValid(t *testing.T) {
	for n := 15; n <= 400; n++ {
		b, err := PersonOfSize(n)
		if err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		if len(b) != n {
			t.Fatalf("%d: %d bytes", n, len(b))
		}
		var r civilv1.GetPersonResponse
		if err := proto.Unmarshal(b, &r); err != nil || r.GetPerson().GetEid() == "" {
			t.Fatalf("%d: not a GetPersonResponse: %v", n, err)
		}
	}
}

// TestProbeRefusesPlaintextOffLoopback: the probe speaks plaintext gRPC
// only to loopback (jisr dev's adapter and backend); another address is
// refused before anything is dialled or sent.
func TestProbeRefusesPlaintextOffLoopback(t *testing.T) {
	var out bytes.Buffer
	err := Probe(context.Background(), "192.0.2.1:50051", "127.0.0.1:1", "AB123456", "p", "token", &out)
	if !errors.Is(err, loopback.ErrPlaintext) {
		t.Fatalf("Probe to a routable address: %v, want ErrPlaintext", err)
	}
	if out.Len() != 0 {
		t.Fatalf("Probe wrote %q after a refusal", out.String())
	}
}
