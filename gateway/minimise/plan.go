package minimise

import (
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/proto/eidfield"
)

// A plan is what Trim or ClearNamedOnly does to each field of one message
// type for one set of paths, decided once: the paths' prefixes are compared
// when the plan is compiled, not on every reply.
type plan struct {
	fields []step
}

type action uint8

const (
	actKeep    action = iota + 1 // released: list its path, apply sub (named_only clearing)
	actDescend                   // apply sub to the value(s)
	actClear                     // clear the field
)

type step struct {
	fd   protoreflect.FieldDescriptor
	act  action
	path string // the field's path, for actKeep
	sub  *plan  // for actKeep (named_only clearing under it) and actDescend
	list bool
}

// apply runs a plan that lists nothing (named_only clearing).
func apply(m protoreflect.Message, p *plan) { apply1(m, p, nil) }

func apply1(m protoreflect.Message, p *plan, released *[]string) {
	if p == nil {
		return
	}
	for i := range p.fields {
		s := &p.fields[i]
		if !m.Has(s.fd) {
			continue
		}
		switch s.act {
		case actClear:
			m.Clear(s.fd)
		case actKeep:
			if released != nil {
				*released = append(*released, s.path)
			}
			if s.sub != nil {
				applyValue(m, s, nil)
			}
		case actDescend:
			applyValue(m, s, released)
		}
	}
}

func applyValue(m protoreflect.Message, s *step, released *[]string) {
	if s.list {
		l := m.Get(s.fd).List()
		for i := 0; i < l.Len(); i++ {
			apply1(l.Get(i).Message(), s.sub, released)
		}
		return
	}
	apply1(m.Get(s.fd).Message(), s.sub, released)
}

func anyCovers(p string, paths []string) bool { // some path covers p
	for _, a := range paths {
		if covers(a, p) {
			return true
		}
	}
	return false
}

func coversAny(p string, paths []string) bool { // p covers some path
	for _, a := range paths {
		if covers(p, a) {
			return true
		}
	}
	return false
}

// compileTrim is Trim's plan for md at prefix: trim to paths, then clear the
// named_only fields that no path names.
func compileTrim(md protoreflect.MessageDescriptor, prefix string, paths []string) *plan {
	p := &plan{}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		path := prefix + string(fd.Name())
		s := step{fd: fd, path: path, list: fd.IsList()}
		msg := fd.Message() != nil && !fd.IsMap()
		switch {
		case anyCovers(path, paths):
			// A path names this field or one above it; were it one above,
			// the parent would have been kept whole, so a named_only field
			// here is named and stays.
			s.act = actKeep
			if msg {
				s.sub = compileNamedOnly(fd.Message(), path+".", paths)
			}
		case msg && coversAny(path, paths):
			s.act, s.sub = actDescend, compileTrim(fd.Message(), path+".", paths)
		default:
			s.act = actClear
		}
		p.fields = append(p.fields, s)
	}
	return p
}

// compileNamedOnly is clearNamedOnly's plan for md at prefix: nil when it
// has nothing to do.
func compileNamedOnly(md protoreflect.MessageDescriptor, prefix string, paths []string) *plan {
	if !hasNamedOnly(md) {
		return nil
	}
	if !anyHasPrefix(paths, prefix) {
		// No path reaches under prefix: every named_only field below is
		// cleared, whatever the prefix. One plan per type serves them all
		// (and ends the recursion of recursive types).
		return clearAllPlan(md)
	}
	p := &plan{}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		path := prefix + string(fd.Name())
		switch {
		case eidfield.IsNamedOnly(fd) && !coversAny(path, paths):
			p.fields = append(p.fields, step{fd: fd, act: actClear})
		case fd.Message() != nil && !fd.IsMap():
			if sub := compileNamedOnly(fd.Message(), path+".", paths); sub != nil {
				p.fields = append(p.fields, step{fd: fd, act: actDescend, sub: sub, list: fd.IsList()})
			}
		}
	}
	return p
}

func anyHasPrefix(paths []string, prefix string) bool {
	for _, a := range paths {
		if strings.HasPrefix(a, prefix) {
			return true
		}
	}
	return false
}

// The plans are kept by message descriptor, not by name: a federation
// version may bring a message of the same name with other fields (a
// ministry's new schema, bus/descset), and a plan holds the field
// descriptors of the message it was compiled for.
var (
	clearAllMu sync.Mutex
	clearAll   = map[protoreflect.MessageDescriptor]*plan{}
)

// clearAllPlan clears every named_only field of md and of the messages
// under it (maps aside).
func clearAllPlan(md protoreflect.MessageDescriptor) *plan {
	clearAllMu.Lock()
	defer clearAllMu.Unlock()
	return clearAllLocked(md)
}

func clearAllLocked(md protoreflect.MessageDescriptor) *plan {
	if p, ok := clearAll[md]; ok {
		return p
	}
	p := &plan{}
	clearAll[md] = p // before the fields: a recursive type finds itself
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch {
		case eidfield.IsNamedOnly(fd):
			p.fields = append(p.fields, step{fd: fd, act: actClear})
		case fd.Message() != nil && !fd.IsMap() && hasNamedOnly(fd.Message()):
			p.fields = append(p.fields, step{fd: fd, act: actDescend, sub: clearAllLocked(fd.Message()), list: fd.IsList()})
		}
	}
	return p
}

// The compiled plans, by message type, kind and paths. The paths come from
// the federation's rules and the consent tokens' fields: few sets in
// practice, and the cache is bounded all the same (past maxPlans a plan is
// compiled for each call and not kept).
const maxPlans = 4096

var plans = struct {
	sync.RWMutex
	m map[protoreflect.MessageDescriptor]map[string]*plan // by descriptor, then kind and paths
	n int
}{m: map[protoreflect.MessageDescriptor]map[string]*plan{}}

var keyPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

func cached(kind byte, md protoreflect.MessageDescriptor, paths []string, compile func() *plan) *plan {
	bp := keyPool.Get().(*[]byte)
	k := appendPathsKey(append((*bp)[:0], kind), paths) // prefix-free: ["a", "b"] is not ["a\x00b"]
	plans.RLock()
	p, ok := plans.m[md][string(k)]
	n := plans.n
	plans.RUnlock()
	if !ok {
		p = compile()
		if n < maxPlans {
			plans.Lock()
			byPaths := plans.m[md]
			if byPaths == nil {
				byPaths = map[string]*plan{}
				plans.m[md] = byPaths
			}
			if _, dup := byPaths[string(k)]; !dup {
				byPaths[string(k)] = p
				plans.n++
			}
			plans.Unlock()
		}
	}
	*bp = k
	keyPool.Put(bp)
	return p
}

func trimPlan(md protoreflect.MessageDescriptor, paths []string) *plan {
	return cached('t', md, paths, func() *plan { return compileTrim(md, "", paths) })
}

func namedOnlyPlan(md protoreflect.MessageDescriptor, paths []string) *plan {
	return cached('n', md, paths, func() *plan { return compileNamedOnly(md, "", paths) })
}

// releaseNode lists, for Released, the fields of one message type at one
// depth with their paths; the nodes under it are built when first reached.
type releaseNode struct {
	fields []releaseField
}

type releaseField struct {
	fd   protoreflect.FieldDescriptor
	path string
	leaf bool // a scalar, enum, repeated scalar or map field
	list bool
	sub  atomic.Pointer[releaseNode]
}

// maxPlanDepth bounds the release plans kept for a recursive message
// nested deep; below it Released builds its paths as it goes.
const maxPlanDepth = 16

var releasePlans sync.Map // protoreflect.MessageDescriptor → *releaseNode

func releasePlan(md protoreflect.MessageDescriptor) *releaseNode {
	if n, ok := releasePlans.Load(md); ok {
		return n.(*releaseNode)
	}
	n, _ := releasePlans.LoadOrStore(md, newReleaseNode(md, ""))
	return n.(*releaseNode)
}

func newReleaseNode(md protoreflect.MessageDescriptor, prefix string) *releaseNode {
	n := &releaseNode{}
	fields := md.Fields()
	n.fields = make([]releaseField, fields.Len())
	for i := range n.fields {
		fd := fields.Get(i)
		f := &n.fields[i]
		f.fd, f.path = fd, prefix+string(fd.Name())
		f.leaf = fd.Message() == nil || fd.IsMap()
		f.list = fd.IsList()
	}
	return n
}

func releasedPlanned(m protoreflect.Message, n *releaseNode, depth int, out *[]string) {
	for i := range n.fields {
		f := &n.fields[i]
		if !m.Has(f.fd) {
			continue
		}
		if f.leaf {
			*out = append(*out, f.path)
			continue
		}
		before := len(*out)
		sub := f.sub.Load()
		if sub == nil && depth < maxPlanDepth {
			sub = newReleaseNode(f.fd.Message(), f.path+".")
			if !f.sub.CompareAndSwap(nil, sub) {
				sub = f.sub.Load()
			}
		}
		v := m.Get(f.fd)
		if f.list {
			l := v.List()
			for j := 0; j < l.Len(); j++ {
				releasedAt(l.Get(j).Message(), f, sub, depth, out)
			}
		} else {
			releasedAt(v.Message(), f, sub, depth, out)
		}
		if len(*out) == before {
			*out = append(*out, f.path)
		}
	}
}

func releasedAt(m protoreflect.Message, f *releaseField, sub *releaseNode, depth int, out *[]string) {
	if sub != nil {
		releasedPlanned(m, sub, depth+1, out)
		return
	}
	released(m, f.path+".", out)
}
