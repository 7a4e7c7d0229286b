package unknownfields_test

import (
	"testing"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/proto/unknownfields"
)

// BenchmarkDrop is what the gateway (request and reply) and the provider
// side of the adapter (request and reply) do to every payload.
func BenchmarkDrop(b *testing.B) {
	m := &civilv1.GetPersonResponse{Person: &civilv1.Person{Eid: "BK1",
		Names:      &civilv1.Names{Latin: &jisrv1.Name{Given: "Amina", Family: "El Idrissi"}, Arabic: &jisrv1.Name{Given: "a", Family: "b"}},
		Birth:      &civilv1.Birth{Date: &jisrv1.Date{Year: 1990, Month: 2, Day: 3}, Place: &jisrv1.Place{Commune: "c"}},
		FatherName: "Mohammed"}}
	b.ReportAllocs()
	for b.Loop() {
		if unknownfields.Drop(m.ProtoReflect()) != 0 {
			b.Fatal("dropped")
		}
	}
}
