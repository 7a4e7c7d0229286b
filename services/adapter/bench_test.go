package adapter_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/adapter"
)

// The benchmarks below measure one adapter hop each over real NATS (the
// embedded server, mTLS) and real gRPC on loopback. Allocations are those of
// the whole process: the load (client), the embedded NATS server and the
// other end of the hop too, so compare them before and after a change, not
// against `jisr bench`'s per-process figures.

// benchPerson is about the size of the reference backend's GetPerson reply.
var benchPerson = &civilv1.GetPersonResponse{Person: &civilv1.Person{
	Eid:        "AB123456",
	Names:      &civilv1.Names{Latin: &jisrv1.Name{Given: "Amina", Family: "El Idrissi"}, Arabic: &jisrv1.Name{Given: "أمينة", Family: "الإدريسي"}},
	Sex:        2,
	Birth:      &civilv1.Birth{Date: &jisrv1.Date{Year: 1984, Month: 3, Day: 9}},
	FatherName: "Mohammed",
	MotherName: "Fatima",
}}

type fixedRegistry struct {
	civilv1.UnimplementedCivilRegistryServer
}

func (fixedRegistry) GetPerson(context.Context, *civilv1.GetPersonRequest) (*civilv1.GetPersonResponse, error) {
	return benchPerson, nil
}

const benchParallelism = 16 // goroutines per GOMAXPROCS: c=32 on two cores

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runParallel runs call b.N times from benchParallelism goroutines per
// GOMAXPROCS and reports the process's CPU time per call (cpu-ns/op: less
// sensitive than ns/op to the other users of a shared machine).
func runParallel(b *testing.B, call func() error) {
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := call(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkProviderHop: the gateway's request on jisr.p.… → provider
// adapter → backend gRPC → the reply on the gateway's inbox.
func BenchmarkProviderHop(b *testing.B) {
	env := bustest.Start(b, bustest.WithoutJetStream())
	ctx := context.Background()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	bs := grpc.NewServer()
	civilv1.RegisterCivilRegistryServer(bs, fixedRegistry{})
	go bs.Serve(lis)
	b.Cleanup(bs.Stop)
	prov, err := adapter.New(adapter.Config{Member: "civil-registry", Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(b, "civil-registry"), Backend: lis.Addr().String(), Log: bustest.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	if err := prov.StartProvider(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { prov.Stop(ctx) })
	gw := env.Connect(b, "gateway")
	subj, err := subject.Query{Provider: "civil-registry", Service: subject.ServiceToken("jisr.civilregistry.v1.CivilRegistry"), Method: "GetPerson", CKey: env.Keyer.CKey("AB123456")}.ProviderSubject()
	if err != nil {
		b.Fatal(err)
	}
	data, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: "AB123456"})
	runParallel(b, func() error {
		_, err := bus.Call(ctx, gw, &nats.Msg{Subject: subj, Data: data, Header: nats.Header{bus.HeaderPurpose: {"eligibility"}, bus.HeaderConsumer: {"cnss"}}})
		return err
	})
}

// BenchmarkConsumerHop: a backend's gRPC call → consumer adapter → the
// query on jisr.q.… → a responder on the gateway's connection answering with
// a GetPerson reply.
func BenchmarkConsumerHop(b *testing.B) {
	env := bustest.Start(b, bustest.WithoutJetStream())
	ctx := context.Background()
	reply, _ := proto.Marshal(benchPerson)
	gw := env.Connect(b, "gateway")
	sub, err := gw.QueueSubscribe(subject.QueryPrefix+".>", "gateway", func(m *nats.Msg) {
		_ = bus.RespondFrom(m, reply, nil, "gw-1")
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sub.Unsubscribe() })
	if err := bus.Flush(ctx, gw); err != nil {
		b.Fatal(err)
	}
	cons, err := adapter.New(adapter.Config{Member: "cnss", Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(b, "cnss"), Log: bustest.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	srv := cons.GRPCServer()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	b.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	client := civilv1.NewCivilRegistryClient(cc)
	cctx := metadata.AppendToOutgoingContext(ctx, bus.MetadataPurpose, "eligibility", bus.MetadataConsent, "v2.eyJhbGciOiJFZERTQSJ9.a-consent-token-of-a-realistic-length-for-the-header-cost.signature-part")
	runParallel(b, func() error {
		_, err := client.GetPerson(cctx, &civilv1.GetPersonRequest{Eid: "AB123456"})
		return err
	})
}
