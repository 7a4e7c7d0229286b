package federation

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Diff lists, one line each, what changes from a to b: members and rules
// added, removed or changed, and the trust domain, eID format and limits.
func Diff(a, b *Federation) []string {
	var out []string
	if a.TrustDomain != b.TrustDomain {
		out = append(out, fmt.Sprintf("~ trust domain %s → %s", a.TrustDomain, b.TrustDomain))
	}
	if a.EID.Pattern.String() != b.EID.Pattern.String() || a.EID.MaxLength != b.EID.MaxLength {
		out = append(out, fmt.Sprintf("~ eID format %s (max %d) → %s (max %d)", a.EID.Pattern, a.EID.MaxLength, b.EID.Pattern, b.EID.MaxLength))
	}
	if a.Limits != b.Limits {
		out = append(out, fmt.Sprintf("~ default limits %+v → %+v", a.Limits, b.Limits))
	}
	am, bm := map[string]*Member{}, map[string]*Member{}
	for _, m := range a.Members {
		am[m.Name] = m
	}
	for _, m := range b.Members {
		bm[m.Name] = m
		old, ok := am[m.Name]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("+ member %s (%s) provides [%s]", m.Name, m.Title, strings.Join(m.Provides, " ")))
		case !reflect.DeepEqual(old, m):
			out = append(out, fmt.Sprintf("~ member %s: provides [%s] → [%s], limits %+v → %+v", m.Name,
				strings.Join(old.Provides, " "), strings.Join(m.Provides, " "), old.Limits, m.Limits))
		}
	}
	for _, m := range a.Members {
		if bm[m.Name] == nil {
			out = append(out, fmt.Sprintf("- member %s", m.Name))
		}
	}
	ar, br := map[string]*Rule{}, map[string]*Rule{}
	for _, r := range a.Rules {
		ar[r.Name] = r
	}
	for _, r := range b.Rules {
		br[r.Name] = r
		old, ok := ar[r.Name]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("+ rule %s: %s → %s %s [%s] (%s; %s)", r.Name, r.Consumer, r.Provider, r.Service,
				strings.Join(r.Methods, " "), r.LegalBasis, strings.Join(r.Purposes, " ")))
		case !reflect.DeepEqual(old, r):
			out = append(out, "~ rule "+r.Name+": "+ruleChanges(old, r))
		}
	}
	for _, r := range a.Rules {
		if br[r.Name] == nil {
			out = append(out, fmt.Sprintf("- rule %s: %s → %s %s", r.Name, r.Consumer, r.Provider, r.Service))
		}
	}
	return out
}

func ruleChanges(a, b *Rule) string {
	var ch []string
	list := func(what string, x, y []string) {
		if !slices.Equal(x, y) {
			ch = append(ch, fmt.Sprintf("%s [%s] → [%s]", what, strings.Join(x, " "), strings.Join(y, " ")))
		}
	}
	list("methods", a.Methods, b.Methods)
	list("fields", a.Fields, b.Fields)
	list("purposes", a.Purposes, b.Purposes)
	if a.LegalBasis != b.LegalBasis || a.Law != b.Law {
		ch = append(ch, fmt.Sprintf("legal basis %s %q → %s %q", a.LegalBasis, a.Law, b.LegalBasis, b.Law))
	}
	if a.Consumer != b.Consumer || a.Provider != b.Provider || a.Service != b.Service {
		ch = append(ch, fmt.Sprintf("%s → %s %s became %s → %s %s", a.Consumer, a.Provider, a.Service, b.Consumer, b.Provider, b.Service))
	}
	if len(ch) == 0 {
		ch = append(ch, "parameters, limits or log delay")
	}
	return strings.Join(ch, "; ")
}
