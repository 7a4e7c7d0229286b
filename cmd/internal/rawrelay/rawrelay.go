// Package rawrelay is the independent baseline of `make bench-ghz`: the
// same two NATS hops as a jisr query, on plain NATS (a server of its own, no
// TLS, no identities), with none of jisr's code on the way — only nats.go,
// nats-server and gRPC. Each role runs as its own process (`jisr
// raw-relay nats|front|relay|responder`):
//
//	ghz ─gRPC→ front ─NATS→ relay ─NATS→ responder
//
// The front takes CivilRegistry/GetPerson calls (reflection on, for ghz)
// and sends the request bytes and the call's jisr-purpose and jisr-consent
// metadata as one NATS request, as the consumer adapter does; the relay
// forwards it to the responder and answers with a reply of the consumer's
// size, as the gateway does; the responder answers with a reply of the
// provider's size, as the provider adapter does. Replies are valid
// GetPersonResponse messages of exactly the sizes given, so ghz counts them
// as successes. It is a measurement harness, not part of the federation:
// it checks nothing.
package rawrelay

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/loopback"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"

	_ "google.golang.org/grpc/encoding/proto" // the codec delegated to for reflection
)

const (
	queries   = "raw.q"
	providers = "raw.p"
)

// NATS runs a plain NATS server on 127.0.0.1 (a free port), writes "url
// <url>" to out once it accepts clients, and stops when ctx ends.
func NATS(ctx context.Context, out io.Writer) error {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, MaxPayload: 8 << 20})
	if err != nil {
		return err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return errors.New("rawrelay: NATS did not start")
	}
	fmt.Fprintf(out, "url %s\n", s.ClientURL())
	<-ctx.Done()
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

// Responder answers every request on raw.p.> with a GetPersonResponse of
// size bytes.
func Responder(ctx context.Context, url string, size int, out io.Writer) error {
	payload, err := PersonOfSize(size)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, nats.Name("raw-responder"))
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := nc.QueueSubscribe(providers+".>", "responder", func(m *nats.Msg) { _ = m.Respond(payload) })
	if err != nil {
		return err
	}
	return ready(ctx, nc, sub, out, "responder")
}

// Relay forwards every request on raw.q.> to raw.p.<the rest> with its data
// and headers, and answers the asker with a GetPersonResponse of size bytes
// once the responder has answered.
func Relay(ctx context.Context, url string, size int, out io.Writer) error {
	payload, err := PersonOfSize(size)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, nats.Name("raw-relay"))
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := nc.QueueSubscribe(queries+".>", "relay", func(m *nats.Msg) {
		go func() {
			fwd := &nats.Msg{Subject: providers + strings.TrimPrefix(m.Subject, queries), Data: m.Data, Header: m.Header}
			if _, err := nc.RequestMsg(fwd, 10*time.Second); err != nil {
				return
			}
			_ = m.Respond(payload)
		}()
	})
	if err != nil {
		return err
	}
	return ready(ctx, nc, sub, out, "relay")
}

func ready(ctx context.Context, nc *nats.Conn, sub *nats.Subscription, out io.Writer, role string) error {
	_ = sub.SetPendingLimits(1<<16, 256<<20)
	if err := nc.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s ready\n", role)
	<-ctx.Done()
	return nil
}

// Front serves CivilRegistry/GetPerson on listen (plaintext, loopback) and
// sends each call as a NATS request on raw.q.cnss.civil-registry.<service>.
// GetPerson.<52 characters derived from the request>, the shape and size of
// a jisr query subject. It writes "listening <addr>" once serving.
func Front(ctx context.Context, url, listen string, out io.Writer) error {
	nc, err := nats.Connect(url, nats.Name("raw-front"))
	if err != nil {
		return err
	}
	defer nc.Close()
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	sd := civilv1.CivilRegistry_ServiceDesc
	desc := &grpc.ServiceDesc{ServiceName: sd.ServiceName, HandlerType: (*any)(nil), Metadata: sd.Metadata,
		Methods: []grpc.MethodDesc{{MethodName: "GetPerson", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(frame)
			if err := dec(in); err != nil {
				return nil, err
			}
			sum := sha256.Sum256(in.b)
			msg := &nats.Msg{Subject: queries + ".cnss.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson." + key.EncodeToString(sum[:]), Data: in.b, Header: nats.Header{}}
			for _, k := range []string{"jisr-purpose", "jisr-consent"} {
				if v := metadata.ValueFromIncomingContext(ctx, k); len(v) > 0 {
					msg.Header.Set(k, v[0])
				}
			}
			if _, ok := ctx.Deadline(); !ok {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
			}
			reply, err := nc.RequestMsgWithContext(ctx, msg)
			if err != nil {
				return nil, status.FromContextError(err).Err()
			}
			return &frame{b: reply.Data}, nil
		}}}}
	s := grpc.NewServer(grpc.ForceServerCodecV2(codec{proto: encoding.GetCodecV2("proto")}))
	s.RegisterService(desc, struct{}{})
	reflection.Register(s)
	go func() { <-ctx.Done(); s.Stop() }()
	fmt.Fprintf(out, "listening %s\n", lis.Addr())
	if err := s.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

var key = base32.StdEncoding.WithPadding(base32.NoPadding)

// Sizes are the bytes of one GetPerson call on each hop of the full path.
type Sizes struct {
	Request       int `json:"request"`        // the request message
	Reply         int `json:"reply"`          // the consumer's reply, after minimisation
	ProviderReply int `json:"provider_reply"` // the backend's reply
}

// Probe makes one GetPerson call through the consumer adapter at adapter
// (with purpose and token) and one straight to the backend at backend, and
// writes their sizes as JSON: the relay and responder then carry the same.
func Probe(ctx context.Context, adapter, backend, eid, purpose, token string, out io.Writer) error {
	size := func(addr string, md ...string) (int, error) {
		// Plaintext only to loopback: the sidecar case of jisr dev's
		// adapter and backend; anything else is refused.
		creds, err := loopback.ClientCredentials(addr, nil)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", addr, err)
		}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return 0, err
		}
		defer cc.Close()
		cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, md...), 30*time.Second)
		defer cancel()
		r, err := civilv1.NewCivilRegistryClient(cc).GetPerson(cctx, &civilv1.GetPersonRequest{Eid: eid})
		if err != nil {
			return 0, fmt.Errorf("GetPerson at %s: %w", addr, err)
		}
		return proto.Size(r), nil
	}
	var s Sizes
	var err error
	s.Request = proto.Size(&civilv1.GetPersonRequest{Eid: eid})
	if s.Reply, err = size(adapter, "jisr-purpose", purpose, "jisr-consent", token); err != nil {
		return err
	}
	if s.ProviderReply, err = size(backend, "jisr-purpose", purpose, "jisr-consumer", "cnss"); err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(s)
}

// PersonOfSize is a GetPersonResponse encoded in exactly n bytes (n ≥ 15).
func PersonOfSize(n int) ([]byte, error) {
	// A length prefix growing by a byte can step over n with one padded
	// field: sex (2 bytes) and a second name (3 bytes) fill the gap.
	for pad := 0; pad <= n; pad++ {
		for more := range 4 {
			b, err := proto.Marshal(&civilv1.GetPersonResponse{Person: &civilv1.Person{Eid: "AB123456",
				FatherName: strings.Repeat("x", pad), Sex: civilv1.Sex(more & 1), MotherName: strings.Repeat("y", more>>1)}})
			if err != nil {
				return nil, err
			}
			if len(b) == n {
				return b, nil
			}
		}
	}
	// n = 130 lies between a 127-byte person under a one-byte length and a
	// 128-byte one under two: write 127 under a two-byte (non-minimal, valid)
	// length.
	for pad := 0; pad <= n; pad++ {
		p, err := proto.Marshal(&civilv1.Person{Eid: "AB123456", FatherName: strings.Repeat("x", pad)})
		if err != nil {
			return nil, err
		}
		if len(p) == n-3 && len(p) < 128 {
			return append([]byte{0x0a, byte(len(p)) | 0x80, 0}, p...), nil
		}
	}
	return nil, fmt.Errorf("rawrelay: no GetPersonResponse of %d bytes", n)
}

// frame carries a payload as opaque bytes; other messages (reflection) go
// to gRPC's protobuf codec.
type frame struct{ b []byte }

type codec struct{ proto encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*frame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f.b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*frame); ok {
		f.b = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (codec) Name() string { return "proto" }
