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
	info := filteredInfo{s: s, a: a}
	res := filteredFiles{a: a}
	opts := reflection.ServerOptions{Services: info, DescriptorResolver: res, ExtensionResolver: protoregistry.GlobalTypes}
	v1reflectiongrpc.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	v1alphareflectiongrpc.RegisterServerReflectionServer(s, reflection.NewServer(opts))
}

// visible is what reflection shows under the federation version in force:
// the callable services and the files they need.
type visible struct {
	services map[string]bool // every catalogue service: true when callable
	files    map[string]bool
	// loaded holds the visible files not linked into jisr (a member's
	// descriptor set, bus/descset).
	loaded *protoregistry.Files
}

func (a *Adapter) visible() visible {
	st := a.fs.Load()
	allowed := catalog.Callable(st.fed, a.cfg.Member)
	v := visible{services: map[string]bool{}, files: map[string]bool{}, loaded: new(protoregistry.Files)}
	var walk func(fd protoreflect.FileDescriptor)
	walk = func(fd protoreflect.FileDescriptor) {
		if v.files[fd.Path()] {
			return
		}
		v.files[fd.Path()] = true
		if linked, err := protoregistry.GlobalFiles.FindFileByPath(fd.Path()); err != nil || linked != fd {
			_ = v.loaded.RegisterFile(fd)
		}
		for i := 0; i < fd.Imports().Len(); i++ {
			walk(fd.Imports().Get(i).FileDescriptor)
		}
	}
	for _, sd := range st.cat.Services() {
		ok := slices.Contains(allowed, string(sd.FullName()))
		v.services[string(sd.FullName())] = ok
		if ok {
			walk(sd.ParentFile())
		}
	}
	return v
}

// filteredInfo lists the server's services but the hidden ones.
// filteredInfo lists the server's own services (health, reflection, events,
// consent requests) and the catalogue services the member may call under
// the version in force, those a later version added included.
type filteredInfo struct {
	s *grpc.Server
	a *Adapter
}

func (f filteredInfo) GetServiceInfo() map[string]grpc.ServiceInfo {
	v := f.a.visible()
	out := map[string]grpc.ServiceInfo{}
	for name, si := range f.s.GetServiceInfo() {
		// A federation service (of the version in force, or of the one the
		// server was built with) shows only while callable.
		if callable, inCatalogue := v.services[name]; callable || !inCatalogue && !f.a.builtWith[name] {
			out[name] = si
		}
	}
	for _, sd := range f.a.fs.Load().cat.Services() {
		name := string(sd.FullName())
		if _, ok := out[name]; ok || !v.services[name] {
			continue
		}
		si := grpc.ServiceInfo{Metadata: sd.ParentFile().Path()}
		for i := 0; i < sd.Methods().Len(); i++ {
			si.Methods = append(si.Methods, grpc.MethodInfo{Name: string(sd.Methods().Get(i).Name())})
		}
		out[name] = si
	}
	return out
}

// filteredFiles resolves only the files of the callable services, their
// imports, and the health and reflection services' files.
type filteredFiles struct{ a *Adapter }

func (f filteredFiles) visible(fd protoreflect.FileDescriptor) bool {
	p := fd.Path()
	return f.a.visible().files[p] || p == "grpc/health/v1/health.proto" || p == "grpc/reflection/v1/reflection.proto" || p == "grpc/reflection/v1alpha/reflection.proto"
}

func (f filteredFiles) FindFileByPath(p string) (protoreflect.FileDescriptor, error) {
	if fd, err := f.a.visible().loaded.FindFileByPath(p); err == nil {
		return fd, nil
	}
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
	if d, err := f.a.visible().loaded.FindDescriptorByName(name); err == nil {
		return d, nil
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		return nil, err
	}
	if !f.visible(d.ParentFile()) {
		return nil, fmt.Errorf("%s: %w", name, protoregistry.NotFound)
	}
	return d, nil
}
