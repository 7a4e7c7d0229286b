package adapter

import (
	"unicode/utf8"

	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/proto/unknownfields"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxCleanDepth bounds wireClean's recursion; deeper payloads take the
// decoding path (whose own limit then applies).
const maxCleanDepth = 32

// wireClean reports whether b is a proto3 message of type md that
// proto.Unmarshal accepts with no unknown field at any level: every field
// number known and of its declared wire type, strings valid UTF-8, enum
// values defined by their enum (unknownfields.Drop drops the others),
// nested messages clean too. It reads the wire bytes without decoding them into a
// message, so that a payload the provider side passes through untouched
// costs no allocation. It answers false whenever it is not sure (another
// syntax, groups, a malformed varint, a depth over maxCleanDepth): the
// caller then decodes the payload, drops what is unknown and re-encodes it,
// as before.
func wireClean(md protoreflect.MessageDescriptor, b []byte, depth int) bool {
	if depth > maxCleanDepth || md.Syntax() != protoreflect.Proto3 {
		return false
	}
	fields := md.Fields()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		fd := fields.ByNumber(num)
		if fd == nil {
			return false // unknown: decode and drop
		}
		switch typ {
		case protowire.VarintType:
			if !varintKind(fd.Kind()) {
				return false
			}
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			if n >= 0 && !definedEnum(fd, x) {
				return false
			}
		case protowire.Fixed32Type:
			if !fixed32Kind(fd.Kind()) {
				return false
			}
			_, n = protowire.ConsumeFixed32(b)
		case protowire.Fixed64Type:
			if !fixed64Kind(fd.Kind()) {
				return false
			}
			_, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n < 0 || !cleanBytes(fd, v, depth) {
				return false
			}
		default: // groups and reserved wire types
			return false
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// cleanBytes checks the value of a length-delimited field.
func cleanBytes(fd protoreflect.FieldDescriptor, v []byte, depth int) bool {
	switch k := fd.Kind(); {
	case k == protoreflect.StringKind:
		return utf8.Valid(v)
	case k == protoreflect.BytesKind:
		return true
	case k == protoreflect.MessageKind: // map entries too
		return wireClean(fd.Message(), v, depth+1)
	case fd.IsList() && varintKind(k): // packed
		for len(v) > 0 {
			x, n := protowire.ConsumeVarint(v)
			if n < 0 || !definedEnum(fd, x) {
				return false
			}
			v = v[n:]
		}
		return true
	case fd.IsList() && fixed32Kind(k):
		return len(v)%4 == 0
	case fd.IsList() && fixed64Kind(k):
		return len(v)%8 == 0
	}
	return false
}

// definedEnum reports whether varint x, as a value of fd, is not an enum
// value that fd's enum does not define.
func definedEnum(fd protoreflect.FieldDescriptor, x uint64) bool {
	return fd.Kind() != protoreflect.EnumKind || unknownfields.EnumOf(fd.Enum()).Defines(protoreflect.EnumNumber(int32(x)))
}

func varintKind(k protoreflect.Kind) bool {
	switch k {
	case protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Sint32Kind,
		protoreflect.Uint32Kind, protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
		return true
	}
	return false
}

func fixed32Kind(k protoreflect.Kind) bool {
	return k == protoreflect.Fixed32Kind || k == protoreflect.Sfixed32Kind || k == protoreflect.FloatKind
}

func fixed64Kind(k protoreflect.Kind) bool {
	return k == protoreflect.Fixed64Kind || k == protoreflect.Sfixed64Kind || k == protoreflect.DoubleKind
}

// requestEID is m.Decode's eID, read from the wire bytes when the request
// is clean (wireClean) and its eID a plain top-level string field: the
// last occurrence wins, as in proto.Unmarshal. Any other request is
// decoded by m.Decode, which also names what is wrong with it.
func requestEID(m *catalog.Method, b []byte) (string, error) {
	fd := m.EID
	if fd.Kind() != protoreflect.StringKind || fd.IsList() || fd.ContainingOneof() != nil ||
		fd.ContainingMessage() != m.Input.Descriptor() || !wireClean(m.Input.Descriptor(), b, 0) {
		_, raw, err := m.Decode(b)
		return raw, err
	}
	var eid []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:] // a clean payload parses
		if num == fd.Number() && typ == protowire.BytesType {
			eid, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		b = b[n:]
	}
	if len(eid) == 0 {
		return "", catalog.ErrNoEID
	}
	return string(eid), nil
}
