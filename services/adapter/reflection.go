package adapter

import (
	"fmt"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/jisr-bus/jisr/bus/catalog"
)

// registerReflection serves gRPC reflection that shows the consumer side only
// the services its member may call under some access rule (and health and
// reflection themselves): neither listing nor resolving a file or a symbol
// reveals another one. Calls to the others still reach the gateway, which
// refuses and audits them.
func (a *Adapter) registerReflection(s *grpc.Server) {
	allowed := catalog.Callable(a.cfg.Federation, a.cfg.Member)
	files := map[string]bool{}
	var walk func(fd protoreflect.FileDescriptor)
	walk = func(fd protoreflect.FileDescriptor) {
		if files[fd.Path()] {
			return
		}
		files[fd.Path()] = true
		for i := 0; i < fd.Imports().Len(); i++ {
			walk(fd.Imports().Get(i).FileDescriptor)
		}
	}
	for _, sd := range a.cat.Services() {
		if slices.Contains(allowed, string(sd.FullName())) {
			walk(sd.ParentFile())
		}
	}
	info := filteredInfo{s: s, hide: func(name string) bool {
		for _, sd := range a.cat.Services() {
			if string(sd.FullName()) == name {
				return !slices.Contains(allowed, name)
			}
		}
		return false
	}}
	res := filteredFiles{files: files}
	opts := reflection.ServerOptions{Services: info, DescriptorResolver: res, ExtensionResolver: protoregistry.GlobalTypes}
	v1reflectiongrpc.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	v1alphareflectiongrpc.RegisterServerReflectionServer(s, reflection.NewServer(opts))
}

// filteredInfo lists the server's services but the hidden ones.
type filteredInfo struct {
	s    *grpc.Server
	hide func(string) bool
}

func (f filteredInfo) GetServiceInfo() map[string]grpc.ServiceInfo {
	out := map[string]grpc.ServiceInfo{}
	for name, si := range f.s.GetServiceInfo() {
		if !f.hide(name) {
			out[name] = si
		}
	}
	return out
}

// filteredFiles resolves only the files of the callable services, their
// imports, and the health and reflection services' files.
type filteredFiles struct{ files map[string]bool }

func (f filteredFiles) visible(fd protoreflect.FileDescriptor) bool {
	p := fd.Path()
	return f.files[p] || p == "grpc/health/v1/health.proto" || p == "grpc/reflection/v1/reflection.proto" || p == "grpc/reflection/v1alpha/reflection.proto"
}

func (f filteredFiles) FindFileByPath(p string) (protoreflect.FileDescriptor, error) {
	fd, err := protoregistry.GlobalFiles.FindFileByPath(p)
	if err != nil {
		return nil, err
	}
	if !f.visible(fd) {
		return nil, fmt.Errorf("%s: %w", p, protoregistry.NotFound)
	}
	return fd, nil
}

func (f filteredFiles) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		return nil, err
	}
	if !f.visible(d.ParentFile()) {
		return nil, fmt.Errorf("%s: %w", name, protoregistry.NotFound)
	}
	return d, nil
}
