package catalog

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
)

// Metadata keys of a provider's NATS micro registration.
const (
	MetaMember   = "jisr.member"
	MetaServices = "jisr.services" // the protobuf services, comma-separated
	MetaDigests  = "jisr.digests"  // their DescriptorDigests, in the same order
	MetaMethods  = "jisr.methods"  // Service/Method, comma-separated; predicates end in "?"
	MetaSubject  = "jisr.subject"  // where the gateway asks it
)

// Register announces a member's provider side as a NATS micro service
// (name subject.DiscoveryName(member)) with its services, their descriptor
// digests and methods in the metadata, for `jisr services --live`. It takes
// no requests itself: the provider's queries keep their own subscription,
// where the reply subject is checked before the backend is called. Only the
// operator may send discovery requests (bus/natsconf).
func (c *Catalog) Register(nc *nats.Conn, fed *federation.Federation, member string) (micro.Service, error) {
	m, err := fed.Member(member)
	if err != nil {
		return nil, err
	}
	var svcs, digests, methods []string
	version := "0.0.0"
	for _, o := range c.Directory(fed) {
		if o.Member != member {
			continue
		}
		svcs, digests = append(svcs, o.Service), append(digests, o.Digest)
		version = MajorVersion(o.Service)
		for _, meth := range o.Methods {
			name := meth.Service + "/" + meth.Name
			if meth.Predicate {
				name += "?"
			}
			methods = append(methods, name)
		}
	}
	if len(svcs) == 0 {
		return nil, fmt.Errorf("catalog: %s provides no service", member)
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        subject.DiscoveryName(member),
		Version:     version,
		Description: m.Title,
		Metadata: map[string]string{
			MetaMember:   member,
			MetaServices: strings.Join(svcs, ","),
			MetaDigests:  strings.Join(digests, ","),
			MetaMethods:  strings.Join(methods, ","),
			MetaSubject:  subject.ProviderQueries(member),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: register %s: %w", member, err)
	}
	return svc, nil
}
