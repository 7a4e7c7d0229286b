package adapter

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// WorkloadsOf authorizes the member's own workloads: its adapter
// (spiffe://td/member/m) and anything under it (spiffe://td/member/m/backend).
// An adapter and its backend authorize each other with it.
func WorkloadsOf(td spiffeid.TrustDomain, member string) tlsconfig.Authorizer {
	base := "/member/" + member
	return tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if id.MemberOf(td) && (id.Path() == base || strings.HasPrefix(id.Path(), base+"/")) {
			return nil
		}
		return fmt.Errorf("%s is not a workload of member %s", id, member)
	})
}
