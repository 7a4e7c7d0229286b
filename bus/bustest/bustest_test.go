package bustest_test

import (
	"bytes"
	"os"
	"testing"
)

// Each module's tests read the demo federation from their own testdata, and
// the test bus embeds one more copy. This is the one test that looks outside
// its module: it keeps every copy equal to deploy/federation.yaml.
func TestFederationCopiesMatchDeploy(t *testing.T) {
	t.Parallel()
	want, err := os.ReadFile("../../deploy/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path   string
		suffix bool // the embedded copy drops the file's header comment
	}{
		{"federation.yaml", true},
		{"../testdata/federation.yaml", false},
		{"../../gateway/testdata/federation.yaml", false},
		{"../../cmd/testdata/federation.yaml", false},
	} {
		got, err := os.ReadFile(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if c.suffix && (len(got) == 0 || !bytes.HasSuffix(want, got)) || !c.suffix && !bytes.Equal(got, want) {
			t.Errorf("%s differs from deploy/federation.yaml: copy it again", c.path)
		}
	}
	// And the reference ministries' descriptor sets it names, beside each
	// copy (`make descriptors` writes them all).
	for _, name := range []string{"civil-registry.binpb", "tax.binpb", "cnss.binpb", "health.binpb"} {
		want, err := os.ReadFile("../../deploy/" + name)
		if err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{"", "../testdata/", "../../gateway/testdata/", "../../cmd/testdata/"} {
			if got, err := os.ReadFile(dir + name); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s%s differs from deploy/%s (%v): run make descriptors", dir, name, name, err)
			}
		}
	}
}
