// Package descset loads the service descriptors a federation version names
// at run time: protobuf descriptor sets (`buf build -o x.binpb`, or protoc
// --descriptor_set_out --include_imports) referenced from the federation
// file by name and SHA-256 digest, and carried inside the signed bundle. A
// member joins with its descriptor set; no jisr rebuild is needed.
//
// Invariant: a set is used only when its digest is the one the federation
// file names. Every ministry's services come from a set, the four reference
// ministries' included (deploy/<member>.binpb): bus and gateway link no
// ministry's schema. Where a binary happens to link a file of a set (a
// reference backend's generated code, jisr's own jisr/v1 options and the
// well-known types), the linked one is used if the set's copy is the same
// file, so the generated Go types serve it; a file that differs is built
// from the set, and its messages are dynamic (dynamicpb). The services it
// defines are then checked by catalog.New: an eID field option on every
// method's request (read from the descriptor's options), and every rule's
// methods and fields present.
package descset

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/jisr-bus/jisr/bus/federation"
)

// ErrDigest: a set's content is not the one the federation file names.
var ErrDigest = errors.New("descset: descriptor set digest mismatch")

// Digest is the hex SHA-256 of a descriptor set, as the federation file
// names it (sha256:).
func Digest(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// Parse reads one descriptor set and returns the services it defines.
// jisr's own files (jisr/v1/…) and the well-known types (google/protobuf/…)
// resolve to the linked ones; any other file resolves to the linked one
// only if it is the same file, else it is built from the set.
func Parse(raw []byte) ([]protoreflect.ServiceDescriptor, error) {
	var set descriptorpb.FileDescriptorSet
	// The linked types resolve the extensions (jisr.v1.eid) in the options.
	if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("descset: not a FileDescriptorSet: %w", err)
	}
	local := new(protoregistry.Files)
	res := chain{local}
	var out []protoreflect.ServiceDescriptor
	for _, fdp := range set.GetFile() {
		if linked, err := protoregistry.GlobalFiles.FindFileByPath(fdp.GetName()); err == nil && (protocolFile(fdp.GetName()) || sameFile(linked, fdp)) {
			for i := 0; i < linked.Services().Len(); i++ {
				out = append(out, linked.Services().Get(i))
			}
			continue
		}
		fd, err := protodesc.NewFile(fdp, res)
		if err != nil {
			return nil, fmt.Errorf("descset: %s: %w", fdp.GetName(), err)
		}
		for i := 0; i < fd.Services().Len(); i++ {
			out = append(out, fd.Services().Get(i))
		}
		if err := local.RegisterFile(fd); err != nil {
			return nil, fmt.Errorf("descset: %s: %w", fdp.GetName(), err)
		}
	}
	return out, nil
}

// protocolFile: a file of jisr's protocol (its options and shared types) or
// a well-known type, always the linked one.
func protocolFile(name string) bool {
	return strings.HasPrefix(name, "jisr/v1/") || strings.HasPrefix(name, "google/protobuf/")
}

// sameFile reports whether a set's file is the linked one: equal once the
// source information and the builder's own unknown fields (buf marks its
// files with one) are left out.
func sameFile(linked protoreflect.FileDescriptor, fdp *descriptorpb.FileDescriptorProto) bool {
	got := proto.Clone(fdp).(*descriptorpb.FileDescriptorProto)
	got.SourceCodeInfo = nil
	got.ProtoReflect().SetUnknown(nil)
	want := protodesc.ToFileDescriptorProto(linked)
	want.SourceCodeInfo = nil
	return proto.Equal(got, want)
}

// chain resolves in the set's files first, then in the linked ones.
type chain struct{ local *protoregistry.Files }

func (c chain) FindFileByPath(p string) (protoreflect.FileDescriptor, error) {
	if fd, err := c.local.FindFileByPath(p); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(p)
}

func (c chain) FindDescriptorByName(n protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := c.local.FindDescriptorByName(n); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(n)
}

// Services returns linked plus the services of every descriptor set the
// federation names, taken from sets (name → content: a bundle's, or the
// files beside the federation file) and checked against their digests. A
// service defined twice is refused, unless it is the very same descriptor
// (a linked one given in linked and resolved from a set).
func Services(fed *federation.Federation, sets map[string][]byte, linked []protoreflect.ServiceDescriptor) ([]protoreflect.ServiceDescriptor, error) {
	out := append([]protoreflect.ServiceDescriptor(nil), linked...)
	seen := map[protoreflect.FullName]protoreflect.ServiceDescriptor{}
	from := map[protoreflect.FullName]string{}
	for _, sd := range linked {
		seen[sd.FullName()], from[sd.FullName()] = sd, "the services given"
	}
	for _, ref := range fed.DescriptorSets {
		raw, ok := sets[ref.File]
		if !ok {
			return nil, fmt.Errorf("descset: the federation names descriptor set %s, which is not given", ref.File)
		}
		if got := Digest(raw); got != ref.SHA256 {
			return nil, fmt.Errorf("%w: %s is sha256:%s, the federation file names sha256:%s", ErrDigest, ref.File, got, ref.SHA256)
		}
		svcs, err := Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref.File, err)
		}
		for _, sd := range svcs {
			if other, dup := seen[sd.FullName()]; dup {
				if other == sd {
					continue
				}
				return nil, fmt.Errorf("descset: %s is defined by both %s and %s", sd.FullName(), from[sd.FullName()], ref.File)
			}
			seen[sd.FullName()], from[sd.FullName()] = sd, ref.File
			out = append(out, sd)
		}
	}
	return out, nil
}
