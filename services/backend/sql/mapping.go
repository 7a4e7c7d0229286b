package sql

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/jisr-bus/jisr/proto/eidfield"
)

// predicateColumn names the value of a predicate's expression.
const predicateColumn = "jisr_predicate"

// dateMessage is the reply type a DATE column fills.
const dateMessage = "jisr.v1.Date"

type path []protoreflect.FieldDescriptor

func (p path) String() string {
	s := make([]string, len(p))
	for i, fd := range p {
		s[i] = string(fd.Name())
	}
	return strings.Join(s, ".")
}

// column is one result column and the reply field it fills.
type column struct {
	name   string
	target path // from the reply's root
}

// method is one mapped method, compiled against its descriptors.
type method struct {
	name, full string
	in, out    protoreflect.MessageType
	eid        protoreflect.FieldDescriptor
	params     []path
	sql        string
	cols       []column // in the order of the result's columns once prepared
	anchor     path     // the repeated message field one row fills; nil: one row
}

// compile resolves a method's mapping against the service's descriptors.
func compile(sd protoreflect.ServiceDescriptor, name string, m Method, types func(protoreflect.MessageDescriptor) protoreflect.MessageType) (*method, error) {
	md := sd.Methods().ByName(protoreflect.Name(name))
	if md == nil {
		return nil, fmt.Errorf("%w: methods.%s: %s has no such method", ErrConfig, name, sd.FullName())
	}
	if md.IsStreamingClient() || md.IsStreamingServer() {
		return nil, fmt.Errorf("%w: methods.%s streams; jisr methods are unary", ErrConfig, name)
	}
	eid, err := eidfield.Lookup(md)
	if err != nil {
		return nil, fmt.Errorf("%w: methods.%s: %v", ErrConfig, name, err)
	}
	c := &method{name: name, full: "/" + string(sd.FullName()) + "/" + name,
		in: types(md.Input()), out: types(md.Output()), eid: eid, sql: m.SQL}
	for i, p := range m.Params {
		fp, err := resolve(md.Input(), p)
		if err != nil {
			return nil, fmt.Errorf("%w: methods.%s.params[%d]: %v", ErrConfig, name, i, err)
		}
		if slices.ContainsFunc(fp, func(fd protoreflect.FieldDescriptor) bool { return fd.IsList() || fd.IsMap() }) ||
			fp[len(fp)-1].Kind() == protoreflect.MessageKind {
			return nil, fmt.Errorf("%w: methods.%s.params[%d]: %s is not a single scalar field", ErrConfig, name, i, p)
		}
		c.params = append(c.params, fp)
	}
	cols := m.Columns
	if m.Predicate != "" {
		field := m.Field
		if field == "" {
			if field, err = onlyBool(md.Output()); err != nil {
				return nil, fmt.Errorf("%w: methods.%s: %v", ErrConfig, name, err)
			}
		}
		c.sql = "SELECT (" + m.Predicate + ") AS " + predicateColumn + " FROM " + m.From
		cols = map[string]string{predicateColumn: field}
	}
	for col, target := range cols {
		fp, err := resolve(md.Output(), target)
		if err != nil {
			return nil, fmt.Errorf("%w: methods.%s.columns.%s: %v", ErrConfig, name, col, err)
		}
		var anchor path
		for i, fd := range fp[:len(fp)-1] {
			if fd.IsMap() {
				return nil, fmt.Errorf("%w: methods.%s.columns.%s: maps are not supported", ErrConfig, name, col)
			}
			if fd.IsList() {
				if anchor != nil {
					return nil, fmt.Errorf("%w: methods.%s.columns.%s: %s goes through two repeated fields", ErrConfig, name, col, target)
				}
				anchor = fp[:i+1]
			}
		}
		if last := fp[len(fp)-1]; last.IsMap() || (last.IsList() && last.Kind() == protoreflect.MessageKind) ||
			(last.Kind() == protoreflect.MessageKind && last.Message().FullName() != dateMessage) {
			return nil, fmt.Errorf("%w: methods.%s.columns.%s: %s is a message; map columns to its fields", ErrConfig, name, col, target)
		}
		if anchor != nil {
			if c.anchor != nil && c.anchor.String() != anchor.String() {
				return nil, fmt.Errorf("%w: methods.%s: rows fill both %s and %s", ErrConfig, name, c.anchor, anchor)
			}
			c.anchor = anchor
		}
		c.cols = append(c.cols, column{name: col, target: fp})
	}
	return c, nil
}

// onlyBool names the reply's one bool field, a predicate's answer.
func onlyBool(md protoreflect.MessageDescriptor) (string, error) {
	var found []string
	for i := 0; i < md.Fields().Len(); i++ {
		if fd := md.Fields().Get(i); fd.Kind() == protoreflect.BoolKind && !fd.IsList() {
			found = append(found, string(fd.Name()))
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("predicate: %s has %d bool fields; name one with field", md.FullName(), len(found))
	}
	return found[0], nil
}

// resolve reads a dotted field path (protobuf field names).
func resolve(md protoreflect.MessageDescriptor, p string) (path, error) {
	var out path
	for i, name := range strings.Split(p, ".") {
		if md == nil {
			return nil, fmt.Errorf("%s: %s is not a message", p, out)
		}
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return nil, fmt.Errorf("%s: %s has no field %q", p, md.FullName(), name)
		}
		out = append(out, fd)
		md = nil
		if fd.Kind() == protoreflect.MessageKind && i < len(strings.Split(p, "."))-1 {
			md = fd.Message()
		}
	}
	return out, nil
}

// checkPrepared checks the database's description of a method's statement
// against its mapping, and orders the columns as the result has them.
func (c *method) checkPrepared(sd *pgconn.StatementDescription) error {
	if len(sd.ParamOIDs) != len(c.params) {
		return fmt.Errorf("%w: methods.%s: the query takes %d parameters, params names %d", ErrConfig, c.name, len(sd.ParamOIDs), len(c.params))
	}
	for i, oid := range sd.ParamOIDs {
		if err := compatible(oid, c.params[i][len(c.params[i])-1]); err != nil {
			return fmt.Errorf("%w: methods.%s: $%d: %v", ErrConfig, c.name, i+1, err)
		}
	}
	byName := map[string]column{}
	for _, col := range c.cols {
		byName[col.name] = col
	}
	ordered := make([]column, 0, len(sd.Fields))
	for _, f := range sd.Fields {
		col, ok := byName[f.Name]
		if !ok {
			return fmt.Errorf("%w: methods.%s: the query returns column %q, which columns does not map (or returns it twice)", ErrConfig, c.name, f.Name)
		}
		delete(byName, f.Name)
		if err := compatible(f.DataTypeOID, col.target[len(col.target)-1]); err != nil {
			return fmt.Errorf("%w: methods.%s: column %q → %s: %v", ErrConfig, c.name, f.Name, col.target, err)
		}
		ordered = append(ordered, col)
	}
	for name := range byName {
		return fmt.Errorf("%w: methods.%s: columns maps %q, which the query does not return", ErrConfig, c.name, name)
	}
	c.cols = ordered
	return nil
}

// The PostgreSQL types a mapping may use, by class.
var oidClass = map[uint32]string{
	16: "bool", 20: "int", 21: "int", 23: "int", 700: "float", 701: "float",
	25: "text", 1043: "text", 1042: "text", 19: "text",
	1082: "date", 1114: "date", 1184: "date",
	1000: "bool[]", 1005: "int[]", 1007: "int[]", 1016: "int[]", 1009: "text[]", 1015: "text[]",
}

// compatible says whether a PostgreSQL type fills (or is bound from) a field.
func compatible(oid uint32, fd protoreflect.FieldDescriptor) error {
	class, ok := oidClass[oid]
	if !ok {
		return fmt.Errorf("PostgreSQL type OID %d is not supported (bool, integers, floats, text, date, timestamp and their arrays are)", oid)
	}
	want := kindClass(fd)
	if fd.IsList() {
		want = append([]string(nil), want...)
		for i := range want {
			want[i] += "[]"
		}
	}
	if !slices.Contains(want, class) {
		return fmt.Errorf("a %s column cannot fill %s (%s)", class, fd.FullName(), fd.Kind())
	}
	return nil
}

func kindClass(fd protoreflect.FieldDescriptor) []string {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return []string{"bool"}
	case protoreflect.StringKind:
		return []string{"text"}
	case protoreflect.EnumKind:
		return []string{"int", "text"}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return []string{"float", "int"}
	case protoreflect.MessageKind:
		if fd.Message().FullName() == dateMessage {
			return []string{"date"}
		}
		return nil
	case protoreflect.BytesKind:
		return nil
	}
	return []string{"int"} // every integer kind
}

// param reads a request field as a value to bind.
func param(req protoreflect.Message, p path) any {
	m := req
	for _, fd := range p[:len(p)-1] {
		m = m.Get(fd).Message()
	}
	fd := p[len(p)-1]
	v := m.Get(fd)
	if fd.Kind() == protoreflect.EnumKind {
		return int32(v.Enum())
	}
	return v.Interface()
}

// fill sets the columns of one row into the reply; first is whether this is
// the first row (fields outside the anchor are set from it).
func (c *method) fill(reply protoreflect.Message, values []any, first bool) error {
	var elem protoreflect.Message
	if c.anchor != nil {
		list := mutable(reply, c.anchor[:len(c.anchor)-1]).Mutable(c.anchor[len(c.anchor)-1]).List()
		elem = list.NewElement().Message()
		list.Append(protoreflect.ValueOfMessage(elem))
	}
	for i, col := range c.cols {
		if values[i] == nil {
			continue // NULL: the field stays unset
		}
		root, target := reply, col.target
		if c.anchor != nil && len(target) > len(c.anchor) && target[:len(c.anchor)].String() == c.anchor.String() {
			root, target = elem, target[len(c.anchor):]
		} else if !first {
			continue
		}
		m := mutable(root, target[:len(target)-1])
		fd := target[len(target)-1]
		if fd.IsList() {
			arr, ok := values[i].([]any)
			if !ok {
				return fmt.Errorf("column %q: %T is no array", col.name, values[i])
			}
			list := m.Mutable(fd).List()
			for _, a := range arr {
				if a == nil {
					continue
				}
				v, err := convert(fd, a, m)
				if err != nil {
					return fmt.Errorf("column %q: %w", col.name, err)
				}
				list.Append(v)
			}
			continue
		}
		v, err := convert(fd, values[i], m)
		if err != nil {
			return fmt.Errorf("column %q: %w", col.name, err)
		}
		m.Set(fd, v)
	}
	return nil
}

// mutable walks (creating) singular message fields.
func mutable(m protoreflect.Message, p path) protoreflect.Message {
	for _, fd := range p {
		m = m.Mutable(fd).Message()
	}
	return m
}

// convert turns a value pgx decoded into a field's value.
func convert(fd protoreflect.FieldDescriptor, v any, parent protoreflect.Message) (protoreflect.Value, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if s, ok := v.(string); ok {
			return protoreflect.ValueOfString(s), nil
		}
	case protoreflect.BoolKind:
		if b, ok := v.(bool); ok {
			return protoreflect.ValueOfBool(b), nil
		}
	case protoreflect.EnumKind:
		if s, ok := v.(string); ok {
			ev := fd.Enum().Values().ByName(protoreflect.Name(s))
			if ev == nil {
				return protoreflect.Value{}, fmt.Errorf("%s has no value %q", fd.Enum().FullName(), s)
			}
			return protoreflect.ValueOfEnum(ev.Number()), nil
		}
		if n, ok := asInt(v); ok {
			if fd.Enum().Values().ByNumber(protoreflect.EnumNumber(n)) == nil || n > math.MaxInt32 || n < math.MinInt32 {
				return protoreflect.Value{}, fmt.Errorf("%s has no value %d", fd.Enum().FullName(), n)
			}
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n)), nil
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if n, ok := asInt(v); ok && n >= math.MinInt32 && n <= math.MaxInt32 {
			return protoreflect.ValueOfInt32(int32(n)), nil
		}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if n, ok := asInt(v); ok {
			return protoreflect.ValueOfInt64(n), nil
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if n, ok := asInt(v); ok && n >= 0 && n <= math.MaxUint32 {
			return protoreflect.ValueOfUint32(uint32(n)), nil
		}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if n, ok := asInt(v); ok && n >= 0 {
			return protoreflect.ValueOfUint64(uint64(n)), nil
		}
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		f, ok := v.(float64)
		if g, is32 := v.(float32); is32 {
			f, ok = float64(g), true
		}
		if n, isInt := asInt(v); isInt {
			f, ok = float64(n), true
		}
		if ok && fd.Kind() == protoreflect.FloatKind {
			return protoreflect.ValueOfFloat32(float32(f)), nil
		}
		if ok {
			return protoreflect.ValueOfFloat64(f), nil
		}
	case protoreflect.MessageKind:
		if t, ok := v.(time.Time); ok {
			d := newMessage(parent, fd)
			f := d.Descriptor().Fields()
			d.Set(f.ByName("year"), protoreflect.ValueOfInt32(int32(t.Year())))
			d.Set(f.ByName("month"), protoreflect.ValueOfInt32(int32(t.Month())))
			d.Set(f.ByName("day"), protoreflect.ValueOfInt32(int32(t.Day())))
			return protoreflect.ValueOfMessage(d), nil
		}
	}
	return protoreflect.Value{}, fmt.Errorf("a %T cannot fill %s (%s)", v, fd.FullName(), fd.Kind())
}

func newMessage(parent protoreflect.Message, fd protoreflect.FieldDescriptor) protoreflect.Message {
	if parent != nil {
		return parent.NewField(fd).Message()
	}
	return dynamicpb.NewMessage(fd.Message())
}

func asInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	}
	return 0, false
}
