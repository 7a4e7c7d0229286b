// Package catalog resolves the services named in the federation file to the
// protobuf descriptors linked into this binary: for each method, its request
// and response types and the request field that carries the citizen's eID.
//
// Invariant: a Catalog is complete or not built at all — every service the
// federation names is linked in, and every method of it has exactly one eID
// field — so the query path never meets a method it cannot place.
package catalog

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/proto/eidfield"
	_ "github.com/jisr-bus/jisr/proto/services" // links every jisr service into the binary
)

// Sentinel errors.
var (
	ErrUnknownMethod = errors.New("catalog: unknown service or method")
	ErrMalformed     = errors.New("catalog: malformed request payload")
	ErrNoEID         = errors.New("catalog: request carries no eID")
)

// Method is one callable method of a federation service.
type Method struct {
	Service      string // full protobuf service name
	ServiceToken string // its subject token
	Name         string
	FullMethod   string // gRPC path: /package.Service/Method
	Desc         protoreflect.MethodDescriptor
	Input        protoreflect.MessageType
	Output       protoreflect.MessageType
	EID          protoreflect.FieldDescriptor
	Predicate    bool
}

// Catalog indexes the federation's methods.
type Catalog struct {
	byToken  map[[2]string]*Method
	byFull   map[string]*Method
	services []protoreflect.ServiceDescriptor
}

// New builds the catalog of every service the federation names.
func New(fed *federation.Federation) (*Catalog, error) {
	c := &Catalog{byToken: map[[2]string]*Method{}, byFull: map[string]*Method{}}
	for _, svc := range fed.Services() {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
		if err != nil {
			return nil, fmt.Errorf("catalog: service %s is in the federation file but not linked into this binary: %w", svc, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("catalog: %s is not a service", svc)
		}
		c.services = append(c.services, sd)
		tok := subject.ServiceToken(svc)
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			if md.IsStreamingClient() || md.IsStreamingServer() {
				return nil, fmt.Errorf("catalog: %s/%s streams; jisr methods are unary", svc, md.Name())
			}
			in, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
			if err != nil {
				return nil, fmt.Errorf("catalog: %s/%s input: %w", svc, md.Name(), err)
			}
			out, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
			if err != nil {
				return nil, fmt.Errorf("catalog: %s/%s output: %w", svc, md.Name(), err)
			}
			eid, err := eidfield.Lookup(md)
			if err != nil {
				return nil, fmt.Errorf("catalog: %s/%s: %w", svc, md.Name(), err)
			}
			m := &Method{
				Service: svc, ServiceToken: tok, Name: string(md.Name()),
				FullMethod: "/" + svc + "/" + string(md.Name()),
				Desc:       md, Input: in, Output: out, EID: eid,
				Predicate: eidfield.IsPredicate(md),
			}
			c.byToken[[2]string{tok, m.Name}] = m
			c.byFull[m.FullMethod] = m
		}
	}
	if err := c.checkRules(fed); err != nil {
		return nil, err
	}
	return c, nil
}

// checkRules makes sure every rule names methods the service has and field
// paths that exist in the reply of at least one of those methods, so a typo
// in the federation file stops the process instead of silently releasing
// nothing (or refusing everything).
func (c *Catalog) checkRules(fed *federation.Federation) error {
	for _, r := range fed.Rules {
		tok := subject.ServiceToken(r.Service)
		var outs []protoreflect.MessageDescriptor
		for _, name := range r.Methods {
			m, ok := c.byToken[[2]string{tok, name}]
			if !ok {
				return fmt.Errorf("catalog: rule %s: %s has no method %s", r.Name, r.Service, name)
			}
			outs = append(outs, m.Desc.Output())
		}
		for _, path := range r.Fields {
			if !slices.ContainsFunc(outs, func(md protoreflect.MessageDescriptor) bool { return hasPath(md, path) }) {
				return fmt.Errorf("catalog: rule %s: field %q is in no reply of %v", r.Name, path, r.Methods)
			}
		}
	}
	return nil
}

func hasPath(md protoreflect.MessageDescriptor, path string) bool {
	for _, name := range strings.Split(path, ".") {
		if md == nil {
			return false
		}
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return false
		}
		md = fd.Message()
	}
	return true
}

// Lookup finds a method by its subject tokens.
func (c *Catalog) Lookup(serviceToken, method string) (*Method, error) {
	m, ok := c.byToken[[2]string{serviceToken, method}]
	if !ok {
		return nil, ErrUnknownMethod
	}
	return m, nil
}

// ByFullMethod finds a method by its gRPC path (/package.Service/Method).
func (c *Catalog) ByFullMethod(fullMethod string) (*Method, error) {
	m, ok := c.byFull[fullMethod]
	if !ok {
		return nil, ErrUnknownMethod
	}
	return m, nil
}

// Services returns the descriptors of every federation service, sorted by name.
func (c *Catalog) Services() []protoreflect.ServiceDescriptor {
	return slices.Clone(c.services)
}

// Methods returns every method, in service then declaration order.
func (c *Catalog) Methods() []*Method {
	var out []*Method
	for _, sd := range c.services {
		for i := 0; i < sd.Methods().Len(); i++ {
			out = append(out, c.byFull["/"+string(sd.FullName())+"/"+string(sd.Methods().Get(i).Name())])
		}
	}
	return out
}

// Decode parses a request payload and returns it with its raw eID. The eID
// is returned for normalisation and hashing only; callers must never log it.
func (m *Method) Decode(payload []byte) (proto.Message, string, error) {
	msg := m.Input.New().Interface()
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(payload, msg); err != nil {
		return nil, "", ErrMalformed
	}
	eid := msg.ProtoReflect().Get(m.EID).String()
	if eid == "" {
		return nil, "", ErrNoEID
	}
	return msg, eid, nil
}
