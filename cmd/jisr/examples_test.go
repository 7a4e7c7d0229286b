//go:build examples

package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/cmd/internal/dev"
)

// TestExamples builds and runs the examples of docs/integrate.md against a
// real `jisr dev`: each provider backend (Go, Python) replaces the
// reference CNSS backend (--backend cnss=…), and the other language's
// consumer calls it through the health adapter, reading each refusal's
// google.rpc.ErrorInfo; the Java provider and consumer too. `make test-examples`
// (mk/examples.mk) runs it; it needs Go and Debian's protobuf-compiler,
// python3-grpcio, python3-grpc-tools, python3-protobuf, and for Java
// default-jdk-headless, protobuf-compiler-grpc-java-plugin, libgrpc-java,
// libprotobuf-java, libnetty-java, libperfmark-java, libgoogle-gson-java.
func TestExamples(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	// Go: an outside module (GOWORK=off), the proto module by a replace.
	for _, p := range []string{"provider", "consumer"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, "go-"+p), "./"+p)
		cmd.Dir = filepath.Join(root, "examples", "go")
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building the Go %s: %v\n%s", p, err, out)
		}
	}
	// Python: stubs from protoc and grpc_tools.
	if out, err := exec.Command(filepath.Join(root, "examples", "python", "gen.sh")).CombinedOutput(); err != nil {
		t.Fatalf("examples/python/gen.sh: %v\n%s", err, out)
	}
	// Java: stubs from protoc and Debian's grpc_java_plugin, jars from
	// Debian's packages.
	if out, err := exec.Command(filepath.Join(root, "examples", "java", "build.sh")).CombinedOutput(); err != nil {
		t.Fatalf("examples/java/build.sh: %v\n%s", err, out)
	}
	py := filepath.Join(root, "examples", "python")
	for _, c := range []struct {
		name     string
		provider []string
		consumer func(demo string) []string
	}{
		{"python provider, go consumer",
			[]string{"/usr/bin/python3", "-u", filepath.Join(py, "provider.py"), "--listen"},
			func(demo string) []string { return []string{filepath.Join(bin, "go-consumer"), "-demo", demo} }},
		{"go provider, python consumer",
			[]string{filepath.Join(bin, "go-provider"), "-listen"},
			func(demo string) []string {
				return []string{"/usr/bin/python3", filepath.Join(py, "consumer.py"), "--demo", demo}
			}},
		{"go provider, java consumer",
			[]string{filepath.Join(bin, "go-provider"), "-listen"},
			func(demo string) []string { return []string{filepath.Join(root, "examples", "java", "run.sh"), demo} }},
		{"java provider, python consumer",
			[]string{filepath.Join(root, "examples", "java", "provider.sh")},
			func(demo string) []string {
				return []string{"/usr/bin/python3", filepath.Join(py, "consumer.py"), "--demo", demo}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := freeLoopback(t)
			var provOut lockedBuffer
			prov := exec.Command(c.provider[0], append(c.provider[1:], addr)...)
			prov.Stdout, prov.Stderr = &provOut, &provOut
			if err := prov.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = prov.Process.Kill(); _ = prov.Wait() })
			bustest.Eventually(t, 30*time.Second, func() error {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					return fmt.Errorf("the provider does not listen yet: %v\n%s", err, provOut.String())
				}
				return c.Close()
			})
			f := startDevWith(t, nil, func(o *dev.Options) { o.Backends = map[string]string{"cnss": addr} })
			demo := filepath.Join(f.g.DataDir, "demo.json")
			args := c.consumer(demo)
			out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %v\n%s", args, err, out)
			}
			for _, want := range []string{
				"with consent: allowed covered=true until 2027-12-31",
				"without consent: refused Unauthenticated CONSENT_REQUIRED: rule health-amo-coverage requires explicit_request",
				"bad eID: refused InvalidArgument BAD_EID:",
			} {
				if !strings.Contains(string(out), want) {
					t.Errorf("the consumer's output lacks %q:\n%s", want, out)
				}
			}
			if !strings.Contains(provOut.String(), "health") || !strings.Contains(provOut.String(), "care-eligibility") {
				t.Errorf("the provider did not see jisr-consumer and jisr-purpose:\n%s", provOut.String())
			}
		})
	}
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
