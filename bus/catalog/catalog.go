// Package catalog resolves the services named in the federation file to the
// protobuf service descriptors it is given (bus/descset: those of the
// descriptor sets the federation file names): for each method, its request and
// response types and the request field that carries the citizen's eID.
//
// Invariant: a Catalog is complete or not built at all — every service the
// federation names is among the descriptors, and every method of it has exactly one eID
// field — so the query path never meets a method it cannot place.
package catalog

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/proto/eidfield"
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

// Param is one request field whose value an access rule fixes: a
// predicate's parameter, marked (jisr.v1.parameter).
type Param struct {
	Field protoreflect.FieldDescriptor
	Value protoreflect.Value
}

// Catalog indexes the federation's methods.
type Catalog struct {
	byToken  map[[2]string]*Method
	byFull   map[string]*Method
	services []protoreflect.ServiceDescriptor
	params   map[paramKey][]Param
}

type paramKey struct {
	rule   *federation.Rule
	method string // FullMethod
}

// New builds the catalog of every service the federation names, from the
// service descriptors given (bus/descset: those of the federation's
// descriptor sets); their request and response types are the linked Go
// types where a descriptor is the linked one, dynamic ones otherwise.
func New(fed *federation.Federation, services []protoreflect.ServiceDescriptor) (*Catalog, error) {
	byName := make(map[string]protoreflect.ServiceDescriptor, len(services))
	for _, sd := range services {
		byName[string(sd.FullName())] = sd
	}
	c := &Catalog{byToken: map[[2]string]*Method{}, byFull: map[string]*Method{}, params: map[paramKey][]Param{}}
	for _, svc := range fed.Services() {
		sd, ok := byName[svc]
		if !ok {
			return nil, fmt.Errorf("catalog: service %s is in the federation file but has no descriptor (no descriptor set of the federation defines it)", svc)
		}
		c.services = append(c.services, sd)
		tok := subject.ServiceToken(svc)
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			if md.IsStreamingClient() || md.IsStreamingServer() {
				return nil, fmt.Errorf("catalog: %s/%s streams; jisr methods are unary", svc, md.Name())
			}
			in, out := messageType(md.Input()), messageType(md.Output())
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

// messageType is the linked Go type of a message, or a dynamic one for a
// service loaded at run time from a descriptor set (bus/descset).
func messageType(md protoreflect.MessageDescriptor) protoreflect.MessageType {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName()); err == nil && mt.Descriptor() == md {
		return mt
	}
	return dynamicpb.NewMessageType(md)
}

// checkRules makes sure every rule names methods the service has and field
// paths that exist in the reply of at least one of those methods, so a typo
// in the federation file stops the process instead of silently releasing
// nothing (or refusing everything).
func (c *Catalog) checkRules(fed *federation.Federation) error {
	for _, r := range fed.Rules {
		tok := subject.ServiceToken(r.Service)
		var outs []protoreflect.MessageDescriptor
		used := map[string]bool{}
		for _, name := range r.Methods {
			m, ok := c.byToken[[2]string{tok, name}]
			if !ok {
				return fmt.Errorf("catalog: rule %s: %s has no method %s", r.Name, r.Service, name)
			}
			outs = append(outs, m.Desc.Output())
			params, err := ruleParams(r, m, used)
			if err != nil {
				return err
			}
			if params != nil {
				c.params[paramKey{r, m.FullMethod}] = params
			}
		}
		for name := range r.Params {
			if !used[name] {
				return fmt.Errorf("catalog: rule %s: params.%s is no parameter of %v (a request field marked (jisr.v1.parameter))", r.Name, name, r.Methods)
			}
		}
		for _, path := range r.Fields {
			if !slices.ContainsFunc(outs, func(md protoreflect.MessageDescriptor) bool { return hasPath(md, path) }) {
				return fmt.Errorf("catalog: rule %s: field %q is in no reply of %v", r.Name, path, r.Methods)
			}
		}
	}
	return nil
}

// ruleParams resolves the parameters rule r fixes for m. Every parameter
// field of m's request must have a value in the rule: a predicate whose
// parameter the caller chose could be asked again and again to narrow the
// hidden value down. The names it uses are marked in used.
func ruleParams(r *federation.Rule, m *Method, used map[string]bool) ([]Param, error) {
	var out []Param
	fields := m.Desc.Input().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !eidfield.IsParameter(fd) {
			continue
		}
		raw, ok := r.Params[string(fd.Name())]
		if !ok {
			return nil, fmt.Errorf("catalog: rule %s: %s needs params.%s: a predicate's parameter is fixed by the access rule", r.Name, m.Name, fd.Name())
		}
		v, err := paramValue(fd, raw)
		if err != nil {
			return nil, fmt.Errorf("catalog: rule %s: params.%s: %w", r.Name, fd.Name(), err)
		}
		used[string(fd.Name())] = true
		out = append(out, Param{Field: fd, Value: v})
	}
	return out, nil
}

// paramValue parses a rule's parameter value for a singular scalar field.
func paramValue(fd protoreflect.FieldDescriptor, raw string) (protoreflect.Value, error) {
	if fd.Cardinality() == protoreflect.Repeated || fd.Message() != nil {
		return protoreflect.Value{}, errors.New("a parameter is a singular scalar field")
	}
	var v protoreflect.Value
	var err error
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		var n int64
		n, err = strconv.ParseInt(raw, 10, 32)
		v = protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		var n int64
		n, err = strconv.ParseInt(raw, 10, 64)
		v = protoreflect.ValueOfInt64(n)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		var n uint64
		n, err = strconv.ParseUint(raw, 10, 32)
		v = protoreflect.ValueOfUint32(uint32(n))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		var n uint64
		n, err = strconv.ParseUint(raw, 10, 64)
		v = protoreflect.ValueOfUint64(n)
	case protoreflect.BoolKind:
		var b bool
		b, err = strconv.ParseBool(raw)
		v = protoreflect.ValueOfBool(b)
	case protoreflect.StringKind:
		v = protoreflect.ValueOfString(raw)
	case protoreflect.EnumKind:
		ev := fd.Enum().Values().ByName(protoreflect.Name(raw))
		if ev == nil {
			return protoreflect.Value{}, fmt.Errorf("%q is no value of %s", raw, fd.Enum().FullName())
		}
		v = protoreflect.ValueOfEnum(ev.Number())
	default:
		return protoreflect.Value{}, fmt.Errorf("%s parameters are not supported", fd.Kind())
	}
	if err != nil {
		return protoreflect.Value{}, fmt.Errorf("%q is not a %s", raw, fd.Kind())
	}
	return v, nil
}

// Params returns the request fields that rule r fixes for m, with their
// values (nil when m has no parameter).
func (c *Catalog) Params(r *federation.Rule, m *Method) []Param {
	return c.params[paramKey{r, m.FullMethod}]
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
