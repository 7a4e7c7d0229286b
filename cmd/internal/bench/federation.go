package bench

import (
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// liftedLimits are the fair-share limits every member gets in the bench's
// copy of the federation: the most the federation file allows. The bench
// measures the path, not the limiter: with the demo's limits (cnss: 10,000
// queries a second) a machine of many cores measured the token bucket —
// a flat 10,000 queries/s and tens of thousands of RATE_LIMITED refusals —
// instead of the gateway. The limiter itself is covered by the gateway's
// tests.
var liftedLimits = [][2]string{
	{"queries_per_second", "1000000"},
	{"burst", "1000000"},
	{"in_flight", "100000"},
	{"events_per_second", "1000000"},
}

// liftFederation writes a copy of the federation file src into dir, every
// member's limits set to liftedLimits (max_request_bytes kept), with the
// files beside src (the descriptor sets it names) copied along, and
// returns the copy's path.
func liftFederation(src, dir string) (string, error) {
	raw, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return "", fmt.Errorf("%s: %w", src, err)
	}
	members := mappingValue(root(&doc), "members")
	if members == nil || members.Kind != yaml.SequenceNode || len(members.Content) == 0 {
		return "", fmt.Errorf("%s: no members to lift the limits of", src)
	}
	for _, m := range members.Content {
		if m.Kind != yaml.MappingNode {
			return "", fmt.Errorf("%s: line %d: a member is not a mapping", src, m.Line)
		}
		limits := mappingValue(m, "limits")
		if limits == nil {
			limits = &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "limits"}, limits)
		}
		if limits.Kind != yaml.MappingNode {
			return "", fmt.Errorf("%s: line %d: limits is not a mapping", src, limits.Line)
		}
		for _, kv := range liftedLimits {
			setScalar(limits, kv[0], kv[1])
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return "", err
	}
	fedDir := filepath.Join(dir, "federation")
	if err := os.MkdirAll(fedDir, 0o755); err != nil {
		return "", err
	}
	beside, err := os.ReadDir(filepath.Dir(src))
	if err != nil {
		return "", err
	}
	for _, e := range beside {
		if !e.Type().IsRegular() || e.Name() == filepath.Base(src) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(filepath.Dir(src), e.Name()))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(fedDir, e.Name()), data, 0o644); err != nil {
			return "", err
		}
	}
	path := filepath.Join(fedDir, filepath.Base(src))
	return path, os.WriteFile(path, out, 0o644)
}

func root(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0]
	}
	return doc
}

// mappingValue is the value of key in the mapping m, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// setScalar sets key to the plain scalar value in the mapping m, adding it
// where it is missing.
func setScalar(m *yaml.Node, key, value string) {
	if v := mappingValue(m, key); v != nil {
		*v = yaml.Node{Kind: yaml.ScalarNode, Value: value}
		return
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &yaml.Node{Kind: yaml.ScalarNode, Value: value})
}
