package subject

import (
	"strings"
	"testing"
)

// BenchmarkParseQuery is the gateway's side of the subject: parse and
// check the query subject, then derive the provider subject from it.
func BenchmarkParseQuery(b *testing.B) {
	s, err := Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry", Method: "GetPerson", CKey: strings.Repeat("A", 52)}.Subject()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		q, err := ParseQuery(s)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := q.ProviderSubject(); err != nil {
			b.Fatal(err)
		}
	}
}
