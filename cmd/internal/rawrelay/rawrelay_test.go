package rawrelay

import (
	"testing"

	"google.golang.org/protobuf/proto"

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
