package minimise

// The wire-level minimiser: what the gateway does to a provider's reply
// (decode, DropUnknown, Trim, ClearNamedOnly, deterministic marshal, decode
// again, Released) done in one pass over the reply's wire bytes, without
// decoding it into a message.
//
// It is held to that reflective sequence by a differential fuzz test
// (wire_test.go): for every input and field sets, either both refuse, or
// the bytes it emits decode to a message equal to the reference's, with the
// same released paths and the same count of unknown fields; and the
// bytes are those proto.Marshal writes for what they carry (no layout or
// value encoding of the provider's choice leaves: see emit).
//
// An enum value its enum does not define is an unknown field, as for
// DropUnknown (proto/unknownfields): the protobuf module keeps the number,
// open enum or closed, and it would carry 32 bits of the provider's
// choice. A singular field whose value (the last one, as decoding leaves
// it) is undefined is dropped as if absent, an undefined element of a list
// is dropped from it, and each is counted with the unknown fields, kept or
// not. A lookup in the enum's set (unknownfields.EnumOf, built once per
// enum) per value; nothing is allocated.
//
// It covers the message types whose every message (at any depth) has no
// group, map, oneof (proto3 optional fields are fine), required field,
// extension range or weak field, and is no message set: the ministries'
// replies. For any other type WirePlanFor returns nil and the caller uses
// the reflective path.

import (
	"errors"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/proto/eidfield"
	"github.com/jisr-bus/jisr/proto/unknownfields"
)

// ErrInvalidReply is returned for bytes that proto.Unmarshal would refuse
// for the plan's message type.
var ErrInvalidReply = errors.New("minimise: not a valid encoding of the message type")

// recursionLimit is proto.Unmarshal's: messages nested deeper are refused.
const recursionLimit = protowire.DefaultRecursionLimit

// wmsg is what the wire pass needs of one message type, by field number.
type wmsg struct {
	dense  []int16 // field index by number, -1 where none (numbers below len)
	sparse map[protowire.Number]int
	fields []wfield
	byNum  []int // field indexes in the order of their numbers (proto.Marshal's)
	// lastWins: a singular enum field here, or under a singular message
	// field, so that which value decoding keeps (the last; occurrences of a
	// message merged) decides what is counted unknown: two occurrences of
	// a message of this type are not counted one by one.
	lastWins bool
	mergeSub bool // a singular message field of a lastWins type
}

type wfield struct {
	fd        protoreflect.FieldDescriptor
	name      string
	kind      protoreflect.Kind
	wt        protowire.Type // the wire type of one value
	list      bool
	packable  bool // a repeated scalar that may come packed
	packed    bool // a packable field that proto.Marshal writes packed
	utf8      bool // a string whose bytes proto.Unmarshal checks
	implicit  bool // implicit presence: a zero value is not populated
	namedOnly bool
	enum      *unknownfields.Enum // for enum fields: the numbers the enum defines
	msg       *wmsg               // for message fields; set once all types are built
}

// merges is whether f is a singular message field whose occurrences must
// be merged before their undefined enum values are counted.
func (f *wfield) merges() bool { return f.msg != nil && !f.list && f.msg.lastWins }

func (w *wmsg) index(num protowire.Number) int {
	if int(num) < len(w.dense) {
		return int(w.dense[num])
	}
	if i, ok := w.sparse[num]; ok {
		return i
	}
	return -1
}

var wmsgs sync.Map // protoreflect.MessageDescriptor → *wmsg, or nil where not eligible

// wireMsg returns md's wire description, or nil when md (or a message under
// it) uses a feature the wire pass does not cover.
func wireMsg(md protoreflect.MessageDescriptor) *wmsg {
	if v, ok := wmsgs.Load(md); ok {
		w, _ := v.(*wmsg)
		return w
	}
	built := map[protoreflect.MessageDescriptor]*wmsg{}
	w := buildWire(md, built)
	if w == nil {
		wmsgs.Store(md, (*wmsg)(nil))
		return nil
	}
	setLastWins(built)
	for d, x := range built {
		wmsgs.LoadOrStore(d, x)
	}
	v, _ := wmsgs.Load(md)
	w, _ = v.(*wmsg)
	return w
}

func buildWire(md protoreflect.MessageDescriptor, built map[protoreflect.MessageDescriptor]*wmsg) *wmsg {
	if w, ok := built[md]; ok {
		return w
	}
	if md.ExtensionRanges().Len() > 0 || md.RequiredNumbers().Len() > 0 || md.IsMapEntry() ||
		md.Options() != nil && isMessageSet(md) {
		return nil
	}
	w := &wmsg{}
	built[md] = w // before the fields: a recursive type finds itself
	fields := md.Fields()
	maxDense := 0
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.IsMap() || fd.IsWeak() || fd.Kind() == protoreflect.GroupKind || fd.IsExtension() {
			return nil
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			return nil
		}
		f := wfield{fd: fd, name: string(fd.Name()), kind: fd.Kind(), list: fd.IsList(),
			namedOnly: eidfield.IsNamedOnly(fd)}
		switch f.kind {
		case protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Sint32Kind,
			protoreflect.Uint32Kind, protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
			f.wt, f.packable = protowire.VarintType, f.list
		case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
			f.wt, f.packable = protowire.Fixed32Type, f.list
		case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
			f.wt, f.packable = protowire.Fixed64Type, f.list
		case protoreflect.StringKind:
			f.wt, f.utf8 = protowire.BytesType, enforceUTF8(fd)
		case protoreflect.BytesKind:
			f.wt = protowire.BytesType
		case protoreflect.MessageKind:
			f.wt = protowire.BytesType
			if f.msg = buildWire(fd.Message(), built); f.msg == nil {
				return nil
			}
		default:
			return nil
		}
		f.implicit = !f.list && !fd.HasPresence() && f.kind != protoreflect.MessageKind
		if f.kind == protoreflect.EnumKind {
			f.enum = unknownfields.EnumOf(fd.Enum())
		}
		f.packed = f.packable && fd.IsPacked()
		if n := int(fd.Number()); n < 1024 && n+1 > maxDense {
			maxDense = n + 1
		}
		w.fields = append(w.fields, f)
	}
	w.byNum = make([]int, len(w.fields))
	for i := range w.byNum {
		w.byNum[i] = i
	}
	slices.SortFunc(w.byNum, func(a, b int) int { return int(w.fields[a].fd.Number()) - int(w.fields[b].fd.Number()) })
	w.dense = make([]int16, maxDense)
	for i := range w.dense {
		w.dense[i] = -1
	}
	for i := range w.fields {
		n := w.fields[i].fd.Number()
		if int(n) < maxDense {
			w.dense[n] = int16(i)
		} else {
			if w.sparse == nil {
				w.sparse = map[protowire.Number]int{}
			}
			w.sparse[n] = i
		}
	}
	return w
}

// setLastWins sets lastWins and mergeSub on the types of one build (a
// fixed point: types may be recursive).
func setLastWins(built map[protoreflect.MessageDescriptor]*wmsg) {
	for changed := true; changed; {
		changed = false
		for _, w := range built {
			for i := range w.fields {
				f := &w.fields[i]
				if !w.lastWins && !f.list && (f.enum != nil || f.msg != nil && f.msg.lastWins) {
					w.lastWins, changed = true, true
				}
			}
		}
	}
	for _, w := range built {
		for i := range w.fields {
			w.mergeSub = w.mergeSub || w.fields[i].merges()
		}
	}
}

func isMessageSet(md protoreflect.MessageDescriptor) bool {
	ms, ok := md.Options().(interface{ GetMessageSetWireFormat() bool })
	return ok && ms.GetMessageSetWireFormat()
}

// enforceUTF8 is whether proto.Unmarshal refuses a string field's invalid
// UTF-8 (internal/strs.EnforceUTF8 of the protobuf module).
func enforceUTF8(fd protoreflect.FieldDescriptor) bool {
	if fd.Syntax() == protoreflect.Editions {
		if e, ok := fd.(interface{ EnforceUTF8() bool }); ok {
			return e.EnforceUTF8()
		}
	}
	return fd.Syntax() == protoreflect.Proto3
}

// A wnode is what the pass does to each field of one message type at one
// path, for one plan's field sets: keep it (emit, list its path) or drop
// it (validate only).
type wnode struct {
	m     *wmsg
	keep  []bool
	paths []string
	subs  []atomic.Pointer[wnode] // for kept message fields, built when first reached
	depth int
}

// WirePlan minimises replies of one message type to one pair of field sets
// (the agreed fields, and the rule's own fields that name named_only ones).
type WirePlan struct {
	fields, named []string
	root          *wnode
	nodes         atomic.Int32
}

func (p *WirePlan) node(m *wmsg, prefix string, depth int) *wnode {
	n := &wnode{m: m, depth: depth, keep: make([]bool, len(m.fields)),
		paths: make([]string, len(m.fields)), subs: make([]atomic.Pointer[wnode], len(m.fields))}
	for i := range m.fields {
		f := &m.fields[i]
		path := prefix + f.name
		n.paths[i] = path
		keep := p.fields == nil || anyCovers(path, p.fields) ||
			f.kind == protoreflect.MessageKind && coversAny(path, p.fields)
		if f.namedOnly {
			// Trim with a nil set clears every named_only field; otherwise
			// a path must name it (or a field under it), in both sets.
			keep = keep && p.fields != nil && coversAny(path, p.fields) && coversAny(path, p.named)
		}
		n.keep[i] = keep
	}
	return n
}

// sub returns the node of kept message field i of n, or nil past the
// depth (or number of nodes) that plans reach.
func (p *WirePlan) sub(n *wnode, i int) *wnode {
	if s := n.subs[i].Load(); s != nil {
		return s
	}
	if n.depth+1 >= maxWireDepth || p.nodes.Add(1) > maxWireNodes {
		return nil
	}
	s := p.node(n.m.fields[i].msg, n.paths[i]+".", n.depth+1)
	if !n.subs[i].CompareAndSwap(nil, s) {
		s = n.subs[i].Load()
	}
	return s
}

// A plan's nodes are kept for the messages it reaches, to a depth and a
// number that no ministry's reply comes near (they nest five deep); a
// reply that goes deeper (a recursive type, nested on purpose) is
// minimised by the reflective path instead (ErrTooDeep).
const (
	maxWireDepth = 12
	maxWireNodes = 1024
)

// ErrTooDeep is returned for a reply whose kept messages nest deeper than
// the plan reaches: the caller minimises it with the reflective path.
var ErrTooDeep = errors.New("minimise: the reply nests deeper than the wire plan reaches")

var wirePlans = struct {
	sync.RWMutex
	m map[protoreflect.MessageDescriptor]map[string]*WirePlan
	n int
}{m: map[protoreflect.MessageDescriptor]map[string]*WirePlan{}}

// WirePlanFor returns the wire plan for replies of type md trimmed to
// fields, with the named_only fields that named does not name cleared (as
// Trim(fields) then ClearNamedOnly(named)), or nil when md is a type the
// wire pass does not cover. Plans are compiled once per descriptor and
// field sets (bounded as Trim's are).
func WirePlanFor(md protoreflect.MessageDescriptor, fields, named []string) *WirePlan {
	w := wireMsg(md)
	if w == nil {
		return nil
	}
	bp := keyPool.Get().(*[]byte)
	k := appendPathsKey((*bp)[:0], fields)
	k = appendPathsKey(k, named)
	wirePlans.RLock()
	p, ok := wirePlans.m[md][string(k)]
	n := wirePlans.n
	wirePlans.RUnlock()
	if !ok {
		p = &WirePlan{fields: slices.Clone(fields), named: slices.Clone(named)}
		p.root = p.node(w, "", 0)
		if n < maxPlans {
			wirePlans.Lock()
			byPaths := wirePlans.m[md]
			if byPaths == nil {
				byPaths = map[string]*WirePlan{}
				wirePlans.m[md] = byPaths
			}
			if q, dup := byPaths[string(k)]; dup {
				p = q
			} else {
				byPaths[string(k)] = p
				wirePlans.n++
			}
			wirePlans.Unlock()
		}
	}
	*bp = k
	keyPool.Put(bp)
	return p
}

// appendPathsKey appends a prefix-free encoding of paths: no two pairs of
// field sets share a key, whatever bytes their paths hold.
func appendPathsKey(k []byte, paths []string) []byte {
	if paths == nil {
		return append(k, 0xff) // nil (no restriction) differs from empty (nothing)
	}
	k = protowire.AppendVarint(append(k, 0xfe), uint64(len(paths)))
	for _, a := range paths {
		k = protowire.AppendVarint(k, uint64(len(a)))
		k = append(k, a...)
	}
	return k
}

// wstate is one reply's pass.
type wstate struct {
	p        *WirePlan
	out      []byte
	released []string
	unknown  int
}

// Apply minimises one reply: it returns the bytes to send, the paths they
// release (Released of those bytes decoded), and how many unknown fields it
// dropped at every depth, or ErrInvalidReply where proto.Unmarshal would
// refuse the reply. The bytes are a new slice; reply is not modified.
func (p *WirePlan) Apply(reply []byte) (out []byte, released []string, unknown int, err error) {
	st := wstate{p: p, out: make([]byte, 0, len(reply)), released: make([]string, 0, 16)}
	if _, err := st.message(reply, p.root, 1); err != nil {
		return nil, nil, 0, err
	}
	if len(st.released) == 0 {
		return st.out, nil, st.unknown, nil
	}
	slices.Sort(st.released)
	return st.out, slices.Compact(st.released), st.unknown, nil
}

// message emits the kept fields of the message encoded in b, at nesting
// depth (1 for the reply itself), and reports whether it released any
// path. A kept field out of the layout proto.Marshal writes (a singular
// field more than once: a scalar's last value wins, a message's
// occurrences merge; fields out of number order; a list cut into chunks or
// packed where the schema does not pack it, or the reverse) sends the
// message to messageMerged: a scan of its tags finds them first, so no
// work is done twice.
func (st *wstate) message(b []byte, n *wnode, depth int) (bool, error) {
	if depth > recursionLimit {
		return false, ErrInvalidReply
	}
	var seenSmall, underSmall [2]uint64 // singular fields seen; message fields with a path released under them
	seen, under := seenSmall[:], underSmall[:]
	if nf := len(n.m.fields); nf > 128 {
		seen, under = make([]uint64, (nf+63)/64), make([]uint64, (nf+63)/64)
	}
	prev := protowire.Number(0)
	for c := b; len(c) > 0; {
		num, wt, tl := protowire.ConsumeTag(c)
		if tl < 0 || num > protowire.MaxValidNumber {
			return false, ErrInvalidReply
		}
		vl := protowire.ConsumeFieldValue(num, wt, c[tl:])
		if vl < 0 {
			return false, ErrInvalidReply
		}
		c = c[tl+vl:]
		i := n.m.index(num)
		if i < 0 {
			continue
		}
		if !n.keep[i] {
			// A dropped message sent twice is counted merged (messageMerged).
			if n.m.mergeSub && wt == protowire.BytesType && n.m.fields[i].merges() {
				if seen[i/64]&(1<<(i%64)) != 0 {
					return st.messageMerged(b, n, depth)
				}
				seen[i/64] |= 1 << (i % 64)
			}
			continue
		}
		f := &n.m.fields[i]
		if wt != f.wt && !(f.packable && wt == protowire.BytesType) {
			continue // an unknown field
		}
		// What leaves is what proto.Marshal writes: kept fields in the order
		// of their numbers, each once, a packed list in one chunk and an
		// unpacked one value by value. The order and chunks the provider
		// chose must not leave (they could carry what minimisation
		// removes), so any other layout goes to messageMerged.
		if num < prev || num == prev && (!f.list || f.packed) || f.packable && (wt == protowire.BytesType) != f.packed {
			return st.messageMerged(b, n, depth)
		}
		prev = num
	}
	var presentSmall, listSmall, undefSmall [2]uint64 // message fields present; repeated scalars released; singular enums undefined
	presentMsg, listRel, undef := presentSmall[:], listSmall[:], undefSmall[:]
	if len(seen) > 2 {
		presentMsg, listRel, undef = make([]uint64, len(seen)), make([]uint64, len(seen)), make([]uint64, len(seen))
	}
	any := false
	for len(b) > 0 {
		i, f, wt, tl, vl, err := st.field(b, n, depth, undef)
		if err != nil {
			return false, err
		}
		chunk := b[:tl+vl]
		b = b[tl+vl:]
		if f == nil {
			continue
		}
		if !n.keep[i] {
			if f.kind == protoreflect.MessageKind {
				if err := st.skipMessage(chunk[tl:], f.msg, depth+1, true); err != nil {
					return false, err
				}
			}
			continue
		}
		switch {
		case f.kind == protoreflect.MessageKind:
			v, _ := protowire.ConsumeBytes(chunk[tl:])
			rel, err := st.subMessage(f.fd.Number(), v, n, i, depth)
			if err != nil {
				return false, err
			}
			presentMsg[i/64] |= 1 << (i % 64)
			if rel {
				under[i/64] |= 1 << (i % 64)
			}
		case f.list:
			if populated(f, wt, chunk[tl:]) {
				st.emit(f, wt, chunk[tl:])
				if listRel[i/64]&(1<<(i%64)) == 0 {
					listRel[i/64] |= 1 << (i % 64)
					st.released = append(st.released, n.paths[i])
				}
				any = true
			}
		default:
			if populated(f, wt, chunk[tl:]) {
				st.emit(f, wt, chunk[tl:])
				st.released = append(st.released, n.paths[i])
				any = true
			}
		}
	}
	for i := range n.m.fields {
		if presentMsg[i/64]&(1<<(i%64)) != 0 {
			any = true
			if under[i/64]&(1<<(i%64)) == 0 {
				st.released = append(st.released, n.paths[i])
			}
		}
	}
	st.countUndefined(undef)
	return any, nil
}

// countUndefined counts, as unknown, the singular enum fields of one
// message whose last value is undefined.
func (st *wstate) countUndefined(undef []uint64) {
	for _, w := range undef {
		st.unknown += bits.OnesCount64(w)
	}
}

// field reads the field at the start of b, in a message of n's type: its
// index and schema, wire type, and the lengths of its tag and value. A
// number n does not know, or a known number with another wire type, is an
// unknown field: counted, and returned with a nil f for the caller to skip.
// An enum field's undefined values are counted (enumValues, with undef).
func (st *wstate) field(b []byte, n *wnode, depth int, undef []uint64) (i int, f *wfield, wt protowire.Type, tl, vl int, err error) {
	num, wt, tl := protowire.ConsumeTag(b)
	if tl < 0 || num > protowire.MaxValidNumber {
		return 0, nil, 0, 0, 0, ErrInvalidReply
	}
	if i = n.m.index(num); i < 0 {
		if vl = protowire.ConsumeFieldValue(num, wt, b[tl:]); vl < 0 {
			return 0, nil, 0, 0, 0, ErrInvalidReply
		}
		st.unknown++
		return i, nil, wt, tl, vl, nil
	}
	f = &n.m.fields[i]
	vl, ok, err := st.check(f, wt, b[tl:], depth)
	if err != nil {
		return 0, nil, 0, 0, 0, err
	}
	if !ok {
		st.unknown++
		return i, nil, wt, tl, vl, nil
	}
	if f.enum != nil {
		st.enumValues(f, i, wt, b[tl:tl+vl], undef)
	}
	return i, f, wt, tl, vl, nil
}

// enumValues counts what DropUnknown counts of one checked occurrence b
// of enum field f (index i): each value of a list that the enum does not
// define; for a singular field, whose last value decides, it records in
// undef whether this value is undefined, for countUndefined.
func (st *wstate) enumValues(f *wfield, i int, wt protowire.Type, b []byte, undef []uint64) {
	if !f.list {
		if x, _ := protowire.ConsumeVarint(b); f.enum.Defines(protoreflect.EnumNumber(int32(x))) {
			undef[i/64] &^= 1 << (i % 64)
		} else {
			undef[i/64] |= 1 << (i % 64)
		}
		return
	}
	if wt == protowire.BytesType {
		b, _ = protowire.ConsumeBytes(b)
	}
	for len(b) > 0 {
		x, k := protowire.ConsumeVarint(b)
		if !f.enum.Defines(protoreflect.EnumNumber(int32(x))) {
			st.unknown++
		}
		b = b[k:]
	}
}

// subMessage emits kept message field i of n holding v (one element or the
// merged occurrences) and reports whether a path under it was released.
func (st *wstate) subMessage(num protowire.Number, v []byte, n *wnode, i, depth int) (bool, error) {
	st.out = protowire.AppendTag(st.out, num, protowire.BytesType)
	at := len(st.out)
	st.out = append(st.out, 0) // the length, one byte while it fits
	sub := st.p.sub(n, i)
	if sub == nil {
		return false, ErrTooDeep
	}
	rel, err := st.message(v, sub, depth+1)
	if err != nil {
		return false, err
	}
	l := len(st.out) - at - 1
	if l < 0x80 {
		st.out[at] = byte(l)
		return rel, nil
	}
	sz := protowire.SizeVarint(uint64(l))
	for k := 1; k < sz; k++ {
		st.out = append(st.out, 0)
	}
	copy(st.out[at+sz:], st.out[at+1:at+1+l])
	protowire.AppendVarint(st.out[at:at], uint64(l))
	return rel, nil
}

// messageMerged is message for a message whose kept fields are not laid
// out as proto.Marshal writes them (rare from a Go provider). It checks
// every field, then emits each kept field once, in number order, as
// decoding would leave it: a scalar's last value, a message's occurrences
// merged (their bytes concatenated, which is how proto merges them), a
// repeated field's values in order, packed in one chunk or one by one as
// the schema says.
func (st *wstate) messageMerged(b []byte, n *wnode, depth int) (bool, error) {
	type occ struct {
		i     int
		wt    protowire.Type
		tl    int
		chunk []byte
	}
	var occs []occ
	undef := make([]uint64, (len(n.m.fields)+63)/64)
	for len(b) > 0 {
		i, f, wt, tl, vl, err := st.field(b, n, depth, undef)
		if err != nil {
			return false, err
		}
		chunk := b[:tl+vl]
		b = b[tl+vl:]
		switch {
		case f == nil:
		case f.kind == protoreflect.MessageKind && !n.keep[i] && f.merges():
			// Dropped, but counted merged (below): each occurrence must
			// decode on its own.
			if err := st.skipMessage(chunk[tl:], f.msg, depth+1, false); err != nil {
				return false, err
			}
			occs = append(occs, occ{i, wt, tl, chunk})
		case f.kind == protoreflect.MessageKind && !n.keep[i]:
			if err := st.skipMessage(chunk[tl:], f.msg, depth+1, true); err != nil {
				return false, err
			}
		case f.kind == protoreflect.MessageKind:
			// Each occurrence must decode on its own (their concatenation
			// could hide a truncated one); emitting counts the unknown.
			if depth+1 > recursionLimit {
				return false, ErrInvalidReply
			}
			v, _ := protowire.ConsumeBytes(chunk[tl:])
			if err := st.validate(v, f.msg, depth+1, false); err != nil {
				return false, err
			}
			occs = append(occs, occ{i, wt, tl, chunk})
		case n.keep[i]:
			occs = append(occs, occ{i, wt, tl, chunk})
		}
	}
	st.countUndefined(undef)
	any := false
	for _, i := range n.m.byNum {
		f := &n.m.fields[i]
		if !n.keep[i] {
			if f.merges() {
				// The occurrences of a dropped message, merged, counted
				// as DropUnknown counts the decoded one.
				var merged []byte
				for j := range occs {
					if o := &occs[j]; o.i == i {
						w, _ := protowire.ConsumeBytes(o.chunk[o.tl:])
						merged = append(merged, w...)
					}
				}
				if err := st.validate(merged, f.msg, depth+1, true); err != nil {
					return false, err
				}
			}
			continue
		}
		var last *occ
		count := 0
		for j := range occs {
			if occs[j].i == i {
				last = &occs[j]
				count++
			}
		}
		if last == nil {
			continue
		}
		switch {
		case f.kind == protoreflect.MessageKind:
			rel := false
			if f.list {
				for j := range occs {
					if o := &occs[j]; o.i == i {
						v, _ := protowire.ConsumeBytes(o.chunk[o.tl:])
						r, err := st.subMessage(f.fd.Number(), v, n, i, depth)
						if err != nil {
							return false, err
						}
						rel = rel || r
					}
				}
			} else {
				v, _ := protowire.ConsumeBytes(last.chunk[last.tl:])
				if count > 1 {
					var merged []byte
					for j := range occs {
						if o := &occs[j]; o.i == i {
							w, _ := protowire.ConsumeBytes(o.chunk[o.tl:])
							merged = append(merged, w...)
						}
					}
					v = merged
				}
				r, err := st.subMessage(f.fd.Number(), v, n, i, depth)
				if err != nil {
					return false, err
				}
				rel = r
			}
			any = true
			if !rel {
				st.released = append(st.released, n.paths[i])
			}
		case f.list:
			// Every value, in order, as proto.Marshal writes the list.
			var vals []byte
			count := 0
			for j := range occs {
				if o := &occs[j]; o.i == i {
					vals, count = appendValues(vals, count, f, o.wt, o.chunk[o.tl:])
				}
			}
			if count == 0 {
				continue
			}
			if f.packed {
				st.out = protowire.AppendBytes(protowire.AppendTag(st.out, f.fd.Number(), protowire.BytesType), vals)
			} else {
				for v := vals; len(v) > 0; {
					k := protowire.ConsumeFieldValue(f.fd.Number(), f.wt, v)
					st.out = append(protowire.AppendTag(st.out, f.fd.Number(), f.wt), v[:k]...)
					v = v[k:]
				}
			}
			st.released = append(st.released, n.paths[i])
			any = true
		default:
			if populated(f, last.wt, last.chunk[last.tl:]) {
				st.emit(f, last.wt, last.chunk[last.tl:])
				st.released = append(st.released, n.paths[i])
				any = true
			}
		}
	}
	return any, nil
}

// check validates one value of known field f whose tag has wire type wt:
// it returns the value's length, and ok=false where the wire type is not
// the field's (proto.Unmarshal keeps such a field as an unknown one). A
// message value is not looked into here.
func (st *wstate) check(f *wfield, wt protowire.Type, b []byte, depth int) (int, bool, error) {
	if f.packable && wt == protowire.BytesType {
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return 0, false, ErrInvalidReply
		}
		for len(v) > 0 {
			var m int
			switch f.wt {
			case protowire.VarintType:
				_, m = protowire.ConsumeVarint(v)
			case protowire.Fixed32Type:
				_, m = protowire.ConsumeFixed32(v)
			default:
				_, m = protowire.ConsumeFixed64(v)
			}
			if m < 0 {
				return 0, false, ErrInvalidReply
			}
			v = v[m:]
		}
		return n, true, nil
	}
	if wt != f.wt {
		n := protowire.ConsumeFieldValue(f.fd.Number(), wt, b)
		if n < 0 {
			return 0, false, ErrInvalidReply
		}
		return n, false, nil
	}
	var n int
	switch wt {
	case protowire.VarintType:
		_, n = protowire.ConsumeVarint(b)
	case protowire.Fixed32Type:
		_, n = protowire.ConsumeFixed32(b)
	case protowire.Fixed64Type:
		_, n = protowire.ConsumeFixed64(b)
	default:
		var v []byte
		v, n = protowire.ConsumeBytes(b)
		if n >= 0 && f.utf8 && !utf8.Valid(v) {
			return 0, false, ErrInvalidReply
		}
	}
	if n < 0 {
		return 0, false, ErrInvalidReply
	}
	return n, true, nil
}

// emit appends kept non-message field f, whose checked value b came with
// wire type wt, as proto.Marshal encodes the value decoding leaves: a
// minimal tag, length and varints, an int32, uint32, sint32 or enum's low
// 32 bits, a bool's 0 or 1. The provider's own bytes never leave as they
// came: what a decoder ignores in them (high bits, padding) could carry
// what minimisation removes, to a consumer that reads the raw bytes.
func (st *wstate) emit(f *wfield, wt protowire.Type, b []byte) {
	num := f.fd.Number()
	if f.packable && wt == protowire.BytesType {
		v, _ := protowire.ConsumeBytes(b)
		if f.wt != protowire.VarintType {
			st.out = protowire.AppendVarint(protowire.AppendTag(st.out, num, wt), uint64(len(v)))
			for w := fixedWidth(f.wt); len(v) > 0; v = v[w:] {
				st.out = appendFixed(st.out, f, v[:w])
			}
			return
		}
		size := 0
		for c := v; len(c) > 0; {
			x, n := protowire.ConsumeVarint(c)
			if f.defines(x) {
				size += protowire.SizeVarint(canonVarint(f.kind, x))
			}
			c = c[n:]
		}
		st.out = protowire.AppendVarint(protowire.AppendTag(st.out, num, wt), uint64(size))
		for len(v) > 0 {
			x, n := protowire.ConsumeVarint(v)
			if f.defines(x) {
				st.out = protowire.AppendVarint(st.out, canonVarint(f.kind, x))
			}
			v = v[n:]
		}
		return
	}
	st.out = protowire.AppendTag(st.out, num, wt)
	switch wt {
	case protowire.VarintType:
		x, _ := protowire.ConsumeVarint(b)
		st.out = protowire.AppendVarint(st.out, canonVarint(f.kind, x))
	case protowire.Fixed32Type:
		st.out = appendFixed(st.out, f, b[:4])
	case protowire.Fixed64Type:
		st.out = appendFixed(st.out, f, b[:8])
	default:
		v, _ := protowire.ConsumeBytes(b)
		st.out = protowire.AppendBytes(st.out, v)
	}
}

// appendValues appends to vals the values of list field f in one checked
// occurrence b (packed, or one value) in their canonical encoding, and
// counts them.
func appendValues(vals []byte, count int, f *wfield, wt protowire.Type, b []byte) ([]byte, int) {
	if f.packable && wt == protowire.BytesType {
		b, _ = protowire.ConsumeBytes(b)
	} else if f.wt == protowire.BytesType { // a string or bytes value
		v, _ := protowire.ConsumeBytes(b)
		return protowire.AppendBytes(vals, v), count + 1
	} else {
		b = b[:protowire.ConsumeFieldValue(f.fd.Number(), wt, b)]
	}
	for len(b) > 0 {
		switch f.wt {
		case protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			b = b[n:]
			if !f.defines(x) {
				continue // an undefined enum value: unknown (counted by field)
			}
			vals = protowire.AppendVarint(vals, canonVarint(f.kind, x))
		case protowire.Fixed32Type:
			vals, b = appendFixed(vals, f, b[:4]), b[4:]
		default:
			vals, b = appendFixed(vals, f, b[:8]), b[8:]
		}
		count++
	}
	return vals, count
}

func fixedWidth(wt protowire.Type) int {
	if wt == protowire.Fixed32Type {
		return 4
	}
	return 8
}

// appendFixed appends one fixed-width value of f (b, 4 or 8 bytes), a NaN
// float or double as one NaN: a NaN's 22 or 51 payload bits mean nothing
// to a reader and could carry anything.
func appendFixed(out []byte, f *wfield, b []byte) []byte {
	switch f.kind {
	case protoreflect.FloatKind:
		if x, _ := protowire.ConsumeFixed32(b); x&0x7f800000 == 0x7f800000 && x&0x007fffff != 0 {
			return protowire.AppendFixed32(out, 0x7fc00000)
		}
	case protoreflect.DoubleKind:
		if x, _ := protowire.ConsumeFixed64(b); x&0x7ff0000000000000 == 0x7ff0000000000000 && x&0x000fffffffffffff != 0 {
			return protowire.AppendFixed64(out, 0x7ff8000000000001) // math.NaN()
		}
	}
	return append(out, b...)
}

// canonVarint is the varint proto.Marshal writes for the value that
// decoding a varint x as a field of kind k leaves.
func canonVarint(k protoreflect.Kind, x uint64) uint64 {
	switch k {
	case protoreflect.BoolKind:
		if x != 0 {
			return 1
		}
		return 0
	case protoreflect.Int32Kind, protoreflect.EnumKind:
		return uint64(int64(int32(x))) // sign-extended, as proto.Marshal writes it
	case protoreflect.Uint32Kind, protoreflect.Sint32Kind:
		return uint64(uint32(x))
	}
	return x
}

// defines reports whether varint x, as a value of f, is not an enum value
// that f's enum does not define (true for any other kind).
func (f *wfield) defines(x uint64) bool {
	return f.enum == nil || f.enum.Defines(protoreflect.EnumNumber(int32(x)))
}

// populated reports whether a checked value (or packed values) of a kept
// non-message field leaves the field populated once decoded and unknown
// values dropped: an implicit-presence scalar's zero does not, nor does an
// empty packed list, nor an enum value the enum does not define (nor a
// list of them).
func populated(f *wfield, wt protowire.Type, b []byte) bool {
	if f.list {
		if f.packable && wt == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			if f.enum == nil {
				return len(v) > 0
			}
			for len(v) > 0 {
				x, n := protowire.ConsumeVarint(v)
				if f.defines(x) {
					return true
				}
				v = v[n:]
			}
			return false
		}
	}
	if f.enum != nil && wt == protowire.VarintType {
		if x, _ := protowire.ConsumeVarint(b); !f.defines(x) {
			return false
		}
	}
	if f.list || !f.implicit {
		return true
	}
	switch f.kind {
	case protoreflect.BoolKind, protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
		v, _ := protowire.ConsumeVarint(b)
		return v != 0
	case protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Uint32Kind:
		v, _ := protowire.ConsumeVarint(b)
		return uint32(v) != 0 // proto keeps the low 32 bits
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		v, _ := protowire.ConsumeFixed32(b)
		return v != 0 // a float's -0 and NaN are populated, as proto has it
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		v, _ := protowire.ConsumeFixed64(b)
		return v != 0
	default: // string, bytes
		v, _ := protowire.ConsumeBytes(b)
		return len(v) > 0
	}
}

// skipMessage validates a message that is not kept, as proto.Unmarshal
// would decode it, and counts its unknown fields where count is set
// (DropUnknown counts them before Trim drops the field).
func (st *wstate) skipMessage(b []byte, m *wmsg, depth int, count bool) error {
	if depth > recursionLimit {
		return ErrInvalidReply
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return ErrInvalidReply
	}
	return st.validate(v, m, depth, count)
}

// validate checks the message encoded in b at depth (and every message in
// it), counting its unknown fields where count is set.
func (st *wstate) validate(b []byte, m *wmsg, depth int, count bool) error {
	if depth > recursionLimit {
		return ErrInvalidReply
	}
	if !count || !m.lastWins {
		return st.validate1(b, m, depth, count, nil)
	}
	var undefSmall [2]uint64
	undef := undefSmall[:]
	if len(m.fields) > 128 {
		undef = make([]uint64, (len(m.fields)+63)/64)
	}
	if m.mergeSub && sentTwice(b, m) {
		return st.validateMerged(b, m, depth, undef)
	}
	if err := st.validate1(b, m, depth, true, undef); err != nil {
		return err
	}
	st.countUndefined(undef)
	return nil
}

// sentTwice reports whether a singular message field that must be counted
// merged (wfield.merges) occurs more than once in b (which validate1
// checks: here a malformed field only ends the scan).
func sentTwice(b []byte, m *wmsg) bool {
	var seenSmall [2]uint64
	seen := seenSmall[:]
	if len(m.fields) > 128 {
		seen = make([]uint64, (len(m.fields)+63)/64)
	}
	for len(b) > 0 {
		num, wt, tl := protowire.ConsumeTag(b)
		if tl < 0 {
			return false
		}
		vl := protowire.ConsumeFieldValue(num, wt, b[tl:])
		if vl < 0 {
			return false
		}
		b = b[tl+vl:]
		if i := m.index(num); i >= 0 && wt == protowire.BytesType && m.fields[i].merges() {
			if seen[i/64]&(1<<(i%64)) != 0 {
				return true
			}
			seen[i/64] |= 1 << (i % 64)
		}
	}
	return false
}

// validateMerged is validate, counting, for a message where a singular
// message field that must be counted merged occurs more than once (rare:
// a hostile reply): each occurrence is checked on its own, then their
// merge is counted.
func (st *wstate) validateMerged(b []byte, m *wmsg, depth int, undef []uint64) error {
	var merged map[int][]byte
	for c := b; len(c) > 0; {
		num, wt, tl := protowire.ConsumeTag(c)
		if tl < 0 || num > protowire.MaxValidNumber {
			return ErrInvalidReply
		}
		vl := protowire.ConsumeFieldValue(num, wt, c[tl:])
		if vl < 0 {
			return ErrInvalidReply
		}
		if i := m.index(num); i >= 0 && wt == protowire.BytesType && m.fields[i].merges() {
			if depth+1 > recursionLimit {
				return ErrInvalidReply
			}
			v, _ := protowire.ConsumeBytes(c[tl:])
			if err := st.validate1(v, m.fields[i].msg, depth+1, false, nil); err != nil {
				return err
			}
			if merged == nil {
				merged = map[int][]byte{}
			}
			merged[i] = append(merged[i], v...)
		} else if err := st.validate1(c[:tl+vl], m, depth, true, undef); err != nil {
			return err
		}
		c = c[tl+vl:]
	}
	st.countUndefined(undef)
	for i, v := range merged {
		if err := st.validate(v, m.fields[i].msg, depth+1, true); err != nil {
			return err
		}
	}
	return nil
}

// validate1 is validate's pass over the fields of b, recording in undef
// (where count is set and the type has singular enum fields) which of
// them end undefined, for the caller to count.
func (st *wstate) validate1(b []byte, m *wmsg, depth int, count bool, undef []uint64) error {
	for len(b) > 0 {
		num, wt, tl := protowire.ConsumeTag(b)
		if tl < 0 || num > protowire.MaxValidNumber {
			return ErrInvalidReply
		}
		i := m.index(num)
		if i < 0 {
			vl := protowire.ConsumeFieldValue(num, wt, b[tl:])
			if vl < 0 {
				return ErrInvalidReply
			}
			if count {
				st.unknown++
			}
			b = b[tl+vl:]
			continue
		}
		f := &m.fields[i]
		vl, ok, err := st.check(f, wt, b[tl:], depth)
		if err != nil {
			return err
		}
		switch {
		case !ok:
			if count {
				st.unknown++
			}
		case f.kind == protoreflect.MessageKind:
			v, _ := protowire.ConsumeBytes(b[tl:])
			if err := st.validate(v, f.msg, depth+1, count); err != nil {
				return err
			}
		case f.enum != nil && count && (f.list || undef != nil): // a singular enum makes its type lastWins: validate passes undef
			st.enumValues(f, i, wt, b[tl:tl+vl], undef)
		}
		b = b[tl+vl:]
	}
	return nil
}
