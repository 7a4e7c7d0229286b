package svid_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/certs/svid"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("jisr.internal")
	serverID = spiffeid.RequireFromPath(td, "/nats")
	clientID = spiffeid.RequireFromPath(td, "/member/cnss")
)

func newCA(t *testing.T) *devca.CA {
	t.Helper()
	ca, err := devca.New(td)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *devca.CA, id spiffeid.ID, opts ...devca.IssueOption) *x509svid.SVID {
	t.Helper()
	s, err := ca.Issue(id, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFileSourceReloadsAndKeepsLastGood(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	dir := t.TempDir()
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	first := issue(t, ca, clientID)
	devca.WriteSVID(dir, first)
	changed := make(chan struct{}, 4)
	ctx := t.Context()
	src, err := svid.Open(ctx, dir, clientID, nil)
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
	certFile, keyFile := svid.Paths(dir, clientID)
	refused := make(chan struct{}, 1) // the poller read files it could not load
	logs := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) {
		t.Log(strings.TrimSuffix(string(p), "\n"))
		if strings.Contains(string(p), "do not load") {
			select {
			case refused <- struct{}{}:
			default:
			}
		}
	}), nil))
	fs, err := svid.NewFileSource(ctx, certFile, keyFile, svid.BundlePath(dir), svid.WithPollInterval(20*time.Millisecond), svid.WithOnChange(func() { changed <- struct{}{} }), svid.WithLogger(logs))
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	second := issue(t, ca, clientID)
	devca.WriteSVID(dir, second)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("no reload after the files changed")
	}
	got, _ := fs.GetX509SVID()
	if got.Certificates[0].SerialNumber.Cmp(second.Certificates[0].SerialNumber) != 0 {
		t.Fatal("the reloaded SVID is not the new one")
	}
	os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"), 0o600)
	select {
	case <-refused:
	case <-time.After(10 * time.Second):
		t.Fatal("the poller did not try the corrupt files")
	}
	got, _ = fs.GetX509SVID()
	if got.Certificates[0].SerialNumber.Cmp(second.Certificates[0].SerialNumber) != 0 {
		t.Fatal("a corrupt rewrite replaced the last good SVID")
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := svid.Open(context.Background(), dir, clientID, nil); err == nil {
		t.Fatal("opened missing files")
	}
	ca := newCA(t)
	ca.Save(dir)
	s := issue(t, ca, spiffeid.RequireFromPath(td, "/member/tax"))
	// Files of tax placed where cnss's should be.
	c, k := svid.Paths(dir, clientID)
	certPEM, keyPEM, _ := s.Marshal()
	os.MkdirAll(dir+"/svid", 0o700)
	os.WriteFile(c, certPEM, 0o600)
	os.WriteFile(k, keyPEM, 0o600)
	if _, err := svid.Open(context.Background(), dir, clientID, nil); !errors.Is(err, svid.ErrWrongID) {
		t.Fatalf("err = %v", err)
	}
}

// handshake runs one TLS handshake over loopback and returns both errors.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		err = c.(*tls.Conn).Handshake()
		if err == nil {
			_, err = io.ReadAll(c)
		}
		done <- err
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", lis.Addr().String(), client)
	if err == nil {
		// TLS 1.3: the server's verdict on our certificate arrives on first read.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() || err == io.EOF {
			err = nil
		}
		c.Close()
	}
	return <-done, err
}

func TestSPIFFEMutualTLS(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	srv := svid.NewStatic(issue(t, ca, serverID), ca.Bundle())
	cli := svid.NewStatic(issue(t, ca, clientID), ca.Bundle())
	if serr, cerr := handshake(t, svid.ServerTLS(srv, tlsconfig.AuthorizeID(clientID)), svid.ClientTLS(cli, tlsconfig.AuthorizeID(serverID))); serr != nil || cerr != nil {
		t.Fatalf("good handshake failed: %v / %v", serr, cerr)
	}
	// The client expects another server identity.
	if _, cerr := handshake(t, svid.ServerTLS(srv, tlsconfig.AuthorizeAny()), svid.ClientTLS(cli, tlsconfig.AuthorizeID(clientID))); cerr == nil {
		t.Fatal("client accepted the wrong server identity")
	}
	// The server expects another client identity.
	if serr, _ := handshake(t, svid.ServerTLS(srv, tlsconfig.AuthorizeID(serverID)), svid.ClientTLS(cli, tlsconfig.AuthorizeAny())); serr == nil {
		t.Fatal("server accepted the wrong client identity")
	}
}

// TestTLS12IsRefused: every configuration jisr builds (gRPC mTLS server and
// client, the NATS server) refuses a peer that offers TLS 1.2 at most, with
// an otherwise valid SVID.
func TestTLS12IsRefused(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	srv := svid.NewStatic(issue(t, ca, serverID), ca.Bundle())
	cli := svid.NewStatic(issue(t, ca, clientID), ca.Bundle())
	tls12 := func() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12} }
	oldClient := tls12()
	tlsconfig.HookMTLSClientConfig(oldClient, cli, cli, tlsconfig.AuthorizeID(serverID))
	oldServer := tls12()
	tlsconfig.HookMTLSServerConfig(oldServer, srv, srv, tlsconfig.AuthorizeID(clientID))
	natsConf, err := svid.NATSServerTLS(srv, td)
	if err != nil {
		t.Fatal(err)
	}
	// The same peers speaking TLS 1.2 and 1.3 shake hands, so a refusal below
	// is the version's.
	both := tls12()
	both.MaxVersion = tls.VersionTLS13
	tlsconfig.HookMTLSClientConfig(both, cli, cli, tlsconfig.AuthorizeID(serverID))
	if serr, cerr := handshake(t, svid.ServerTLS(srv, tlsconfig.AuthorizeID(clientID)), both); serr != nil || cerr != nil {
		t.Fatalf("a TLS 1.3 handshake failed: %v / %v", serr, cerr)
	}
	for _, tc := range []struct {
		name           string
		server, client *tls.Config
		serverSide     bool // the refusing side is the server
	}{
		{"gRPC server, TLS 1.2 client", svid.ServerTLS(srv, tlsconfig.AuthorizeID(clientID)), oldClient, true},
		{"NATS server, TLS 1.2 client", natsConf, oldClient, true},
		{"client, TLS 1.2 server", oldServer, svid.ClientTLS(cli, tlsconfig.AuthorizeID(serverID)), false},
	} {
		serr, cerr := handshake(t, tc.server, tc.client)
		if serr == nil || cerr == nil {
			t.Errorf("%s: handshake went through (%v / %v)", tc.name, serr, cerr)
		}
		if got := tc.server.MinVersion; tc.serverSide && got != tls.VersionTLS13 {
			t.Errorf("%s: MinVersion %x", tc.name, got)
		}
	}
}

func TestNATSServerTLSRefusesBadClients(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	other := newCA(t)
	srv := svid.NewStatic(issue(t, ca, serverID), ca.Bundle())
	conf, err := svid.NATSServerTLS(srv, td)
	if err != nil {
		t.Fatal(err)
	}
	client := func(s *x509svid.SVID) *tls.Config {
		return svid.ClientTLS(svid.NewStatic(s, ca.Bundle()), tlsconfig.AuthorizeID(serverID))
	}
	if serr, cerr := handshake(t, conf, client(issue(t, ca, clientID))); serr != nil || cerr != nil {
		t.Fatalf("good client refused: %v / %v", serr, cerr)
	}
	for name, s := range map[string]*x509svid.SVID{
		"another CA": issue(t, other, clientID),
		"expired":    issue(t, ca, clientID, devca.WithNotBefore(time.Now().Add(-2*time.Hour)), devca.WithTTL(time.Hour)),
	} {
		if serr, _ := handshake(t, conf, client(s)); serr == nil {
			t.Errorf("%s: the server accepted the client", name)
		}
	}
	// No client certificate at all.
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if serr, _ := handshake(t, conf, noCert); serr == nil {
		t.Error("the server accepted a client without a certificate")
	}
}

func TestRotationWithoutRestart(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	dir := t.TempDir()
	ca.Save(dir)
	devca.WriteSVID(dir, issue(t, ca, serverID))
	c, k := svid.Paths(dir, serverID)
	fs, err := svid.NewFileSource(context.Background(), c, k, svid.BundlePath(dir), svid.WithPollInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	conf, _ := svid.NATSServerTLS(fs, td)
	lis, _ := tls.Listen("tcp", "127.0.0.1:0", conf)
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	cli := svid.ClientTLS(svid.NewStatic(issue(t, ca, clientID), ca.Bundle()), tlsconfig.AuthorizeID(serverID))
	serialSeen := func() string {
		conn, err := tls.Dial("tcp", lis.Addr().String(), cli)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serialSeen()
	rotated := issue(t, ca, serverID)
	devca.WriteSVID(dir, rotated)
	eventually(t, 10*time.Second, "the listener kept serving the old certificate", func() bool { return serialSeen() != before })
	if serialSeen() != rotated.Certificates[0].SerialNumber.String() {
		t.Fatal("not the rotated certificate")
	}
	exp, _ := svid.ExpiresAt(fs)
	if !exp.Equal(rotated.Certificates[0].NotAfter) {
		t.Fatal("svid.ExpiresAt is not the current SVID's")
	}
}

func TestPaths(t *testing.T) {
	c, k := svid.Paths("/d", spiffeid.RequireFromPath(td, "/member/cnss"))
	if c != "/d/svid/member-cnss.pem" || k != "/d/svid/member-cnss.key" {
		t.Fatalf("%s %s", c, k)
	}
}

// writerFunc is an io.Writer that hands each write to a function.
type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

// eventually polls cond until it holds and fails with what after timeout.
// (certs cannot import bus, whose bustest.Eventually this mirrors.)
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := 2 * time.Millisecond; !cond(); wait = min(2*wait, 100*time.Millisecond) {
		if !time.Now().Before(deadline) {
			t.Fatal(what)
		}
		time.Sleep(wait)
	}
}
