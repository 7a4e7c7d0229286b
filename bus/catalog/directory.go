package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/jisr-bus/jisr/bus/federation"
)

// Offer is one service a member provides, as the directory lists it.
type Offer struct {
	Member, Title string
	Service       string
	Digest        string // DescriptorDigest of the service
	Methods       []*Method
}

// Grant is what one access rule lets a consumer call.
type Grant struct {
	Rule       string
	Provider   string
	Service    string
	Methods    []string
	Predicates []string // those of Methods that are predicates
	Fields     []string // empty: the whole reply
	Purposes   []string
	LegalBasis string
	Law        string
}

// Directory lists every member's services with their methods and digests,
// in the federation file's order.
func (c *Catalog) Directory(fed *federation.Federation) []Offer {
	var out []Offer
	for _, m := range fed.Members {
		for _, svc := range m.Provides {
			o := Offer{Member: m.Name, Title: m.Title, Service: svc}
			for _, sd := range c.services {
				if string(sd.FullName()) == svc {
					o.Digest = DescriptorDigest(sd)
				}
			}
			for _, meth := range c.Methods() {
				if meth.Service == svc {
					o.Methods = append(o.Methods, meth)
				}
			}
			out = append(out, o)
		}
	}
	return out
}

// Grants lists what consumer may call: one Grant per access rule.
func (c *Catalog) Grants(fed *federation.Federation, consumer string) []Grant {
	var out []Grant
	for _, r := range fed.Rules {
		if r.Consumer != consumer {
			continue
		}
		g := Grant{Rule: r.Name, Provider: r.Provider, Service: r.Service, Methods: r.Methods,
			Fields: r.Fields, Purposes: r.Purposes, LegalBasis: r.LegalBasis, Law: r.Law}
		for _, name := range r.Methods {
			if m, err := c.ByFullMethod("/" + r.Service + "/" + name); err == nil && m.Predicate {
				g.Predicates = append(g.Predicates, name)
			}
		}
		out = append(out, g)
	}
	return out
}

// Callable lists the services consumer may call under some rule, sorted.
func Callable(fed *federation.Federation, consumer string) []string {
	var out []string
	for _, r := range fed.Rules {
		if r.Consumer == consumer && !slices.Contains(out, r.Service) {
			out = append(out, r.Service)
		}
	}
	sort.Strings(out)
	return out
}

// DescriptorDigest is "sha256:<hex>" of the deterministic encoding of the
// FileDescriptorSet holding the service's file and every file it imports,
// sorted by path: two parties with the same digest agree on the whole schema
// of the service, options (eID field, predicates) included.
func DescriptorDigest(sd protoreflect.ServiceDescriptor) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(DescriptorSet(sd))
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// DescriptorSet is the service's file and its imports, sorted by path.
func DescriptorSet(sd protoreflect.ServiceDescriptor) *descriptorpb.FileDescriptorSet {
	seen := map[string]protoreflect.FileDescriptor{}
	var walk func(fd protoreflect.FileDescriptor)
	walk = func(fd protoreflect.FileDescriptor) {
		if _, ok := seen[fd.Path()]; ok {
			return
		}
		seen[fd.Path()] = fd
		for i := 0; i < fd.Imports().Len(); i++ {
			walk(fd.Imports().Get(i).FileDescriptor)
		}
	}
	walk(sd.ParentFile())
	paths := make([]string, 0, len(seen))
	for p := range seen {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	set := &descriptorpb.FileDescriptorSet{}
	for _, p := range paths {
		set.File = append(set.File, protodesc.ToFileDescriptorProto(seen[p]))
	}
	return set
}

// MajorVersion reads a service's API version from its package
// (jisr.civilregistry.v1 → "1.0.0"), the version NATS micro advertises.
func MajorVersion(service string) string {
	parts := strings.Split(service, ".")
	for i := len(parts) - 1; i >= 0; i-- {
		if p := parts[i]; len(p) > 1 && p[0] == 'v' {
			if n, err := strconv.Atoi(p[1:]); err == nil && n >= 0 {
				return strconv.Itoa(n) + ".0.0"
			}
		}
	}
	return "0.0.0"
}
