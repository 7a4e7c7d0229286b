package federation_test

import (
	"fmt"

	"github.com/jisr-bus/jisr/bus/federation"
)

// Parse reads a federation file (Load reads it from disk): the trust domain,
// the members and the services each provides, and the access rules. Every
// member gets its SPIFFE ID, and every rule is checked against the members.
func ExampleParse() {
	fed, err := federation.Parse([]byte(`
trust_domain: jisr.internal
eid: {pattern: "[A-Z]{1,2}[0-9]{1,6}", max_length: 8}
members:
  - name: civil-registry
    provides: [jisr.civilregistry.v1.CivilRegistry]
  - name: cnss
rules:
  - name: pension-continuity
    consumer: cnss
    provider: civil-registry
    service: jisr.civilregistry.v1.CivilRegistry
    methods: [IsAlive]
    purposes: [pension-continuity]
    legal_basis: mandate
    law: "Dahir 1-72-184, art. 49"
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range fed.Members {
		fmt.Println(m.Name, m.ID, m.Provides)
	}
	r := fed.Rules[0]
	fmt.Printf("%s: %s → %s %v for %v, %s (%s)\n", r.Name, r.Consumer, r.Provider, r.Methods, r.Purposes, r.LegalBasis, r.Law)
	fmt.Println(fed.Providers("jisr.civilregistry.v1.CivilRegistry")[0].Name)

	// A rule naming a member the file does not declare is refused.
	_, err = federation.Parse([]byte(`
trust_domain: jisr.internal
eid: {pattern: "[A-Z]{1,2}[0-9]{1,6}", max_length: 8}
members: [{name: cnss}]
rules: [{name: r, consumer: tax, provider: cnss, service: a.B, methods: [M], purposes: [p], legal_basis: consent}]
`))
	fmt.Println(err != nil)
	// Output:
	// civil-registry spiffe://jisr.internal/member/civil-registry [jisr.civilregistry.v1.CivilRegistry]
	// cnss spiffe://jisr.internal/member/cnss []
	// pension-continuity: cnss → civil-registry [IsAlive] for [pension-continuity], mandate (Dahir 1-72-184, art. 49)
	// civil-registry
	// true
}
