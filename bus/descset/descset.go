// Package descset loads the service descriptors a federation version names
// at run time: protobuf descriptor sets (`buf build -o x.binpb`, or protoc
// --descriptor_set_out --include_imports) referenced from the federation
// file by name and SHA-256 digest, and carried inside the signed bundle. A
// member joins with its descriptor set; no jisr rebuild is needed.
//
// Invariant: a set is used only when its digest is the one the federation
// file names, and it may not redefine a file or a service linked into jisr
// (the reference ministries stay as compiled). The services it defines are
// then checked like the compiled ones by catalog.New: an eID field option
// on every method's request, and every rule's methods and fields present.
package descset

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

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
// Files already linked into jisr (jisr/v1/options.proto, google/protobuf/…)
// resolve to the linked ones; a file of the set that redefines a linked
// service is refused.
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
		if _, err := protoregistry.GlobalFiles.FindFileByPath(fdp.GetName()); err == nil {
			continue // linked into jisr: the linked one is used
		}
		fd, err := protodesc.NewFile(fdp, res)
		if err != nil {
			return nil, fmt.Errorf("descset: %s: %w", fdp.GetName(), err)
		}
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			if _, err := protoregistry.GlobalFiles.FindDescriptorByName(sd.FullName()); err == nil {
				return nil, fmt.Errorf("descset: %s redefines %s, which is linked into jisr", fdp.GetName(), sd.FullName())
			}
			out = append(out, sd)
		}
		if err := local.RegisterFile(fd); err != nil {
			return nil, fmt.Errorf("descset: %s: %w", fdp.GetName(), err)
		}
	}
	return out, nil
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
// files beside the federation file) and checked against their digests.
func Services(fed *federation.Federation, sets map[string][]byte, linked []protoreflect.ServiceDescriptor) ([]protoreflect.ServiceDescriptor, error) {
	out := append([]protoreflect.ServiceDescriptor(nil), linked...)
	seen := map[protoreflect.FullName]string{}
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
				return nil, fmt.Errorf("descset: %s is defined by both %s and %s", sd.FullName(), other, ref.File)
			}
			seen[sd.FullName()] = ref.File
			out = append(out, sd)
		}
	}
	return out, nil
}
