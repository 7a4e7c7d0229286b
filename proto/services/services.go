// Package services links every jisr ministry service into the binary and
// lists their descriptors; the gateway and the adapter give them to the
// catalogue (bus/catalog), which takes descriptors as input.
package services

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	civilregistryv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	cnssv1 "github.com/jisr-bus/jisr/proto/gen/jisr/cnss/v1"
	healthv1 "github.com/jisr-bus/jisr/proto/gen/jisr/health/v1"
	taxv1 "github.com/jisr-bus/jisr/proto/gen/jisr/tax/v1"
)

// All returns the descriptors of the ministry services.
func All() []protoreflect.ServiceDescriptor {
	return []protoreflect.ServiceDescriptor{
		civilregistryv1.File_jisr_civilregistry_v1_civilregistry_proto.Services().Get(0),
		taxv1.File_jisr_tax_v1_tax_proto.Services().Get(0),
		cnssv1.File_jisr_cnss_v1_cnss_proto.Services().Get(0),
		healthv1.File_jisr_health_v1_health_proto.Services().Get(0),
	}
}
