// Command consumer is the health ministry's client in Go: it calls CNSS's
// jisr.cnss.v1.SocialSecurity/GetAmoCoverage through its own adapter (the
// health adapter), with a purpose and the citizen's consent token, and
// reads every refusal's google.rpc.ErrorInfo (docs/errors.md).
//
//	go run ./consumer -demo ../../var/demo.json
//
// It prints one line per call: "allowed ..." or "refused <code> <reason>:
// <message>".
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"slices"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cnssv1 "github.com/jisr-bus/jisr/proto/gen/jisr/cnss/v1"
)

// demoFile is the part of var/demo.json (written by `jisr dev`) read here.
type demoFile struct {
	Endpoints map[string]string `json:"endpoints"`
	Tokens    []demoToken       `json:"tokens"`
}

type demoToken struct {
	Citizen, Consumer, Provider, Purpose, Token string
	Methods                                     []string
}

// reason returns the jisr ErrorInfo of a gRPC error: its reason, or "".
func reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == "jisr" {
			return ei.GetReason()
		}
	}
	return ""
}

func main() {
	demoPath := flag.String("demo", "var/demo.json", "var/demo.json of a running `jisr dev` (make run)")
	adapter := flag.String("adapter", "", "the health adapter's gRPC address (default: from -demo)")
	flag.Parse()
	b, err := os.ReadFile(*demoPath)
	if err != nil {
		log.Fatalf("%v (start the federation with `make run`; it writes var/demo.json)", err)
	}
	var demo demoFile
	if err := json.Unmarshal(b, &demo); err != nil {
		log.Fatal(err)
	}
	if *adapter == "" {
		*adapter = demo.Endpoints["adapter/health"]
	}
	i := slices.IndexFunc(demo.Tokens, func(t demoToken) bool {
		return t.Consumer == "health" && t.Provider == "cnss" && slices.Contains(t.Methods, "GetAmoCoverage")
	})
	if i < 0 {
		log.Fatal("no health → cnss GetAmoCoverage token in " + *demoPath)
	}
	tok := demo.Tokens[i]

	// Plaintext to the adapter on loopback (the sidecar case); off loopback
	// the adapter serves mTLS with the member's SVID (docs/integrate.md),
	// which this example does not do: it refuses rather than send a
	// citizen's eID and a consent token in the clear.
	if !onLoopback(*adapter) {
		log.Fatalf("--adapter %s: this example speaks plaintext, to a loopback address only (127.0.0.1, ::1, localhost)", *adapter)
	}
	cc, err := grpc.NewClient(*adapter, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	client := cnssv1.NewSocialSecurityClient(cc)

	call := func(what, eid string, md ...string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
		resp, err := client.GetAmoCoverage(ctx, &cnssv1.GetAmoCoverageRequest{Eid: eid})
		_, isStatus := status.FromError(err)
		switch {
		case err == nil:
			fmt.Printf("%s: allowed covered=%v until %d-%02d-%02d\n", what, resp.GetCoverage().GetCovered(),
				resp.GetCoverage().GetValidUntil().GetYear(), resp.GetCoverage().GetValidUntil().GetMonth(), resp.GetCoverage().GetValidUntil().GetDay())
		case isStatus:
			fmt.Printf("%s: refused %s %s: %s\n", what, status.Code(err), reason(err), status.Convert(err).Message())
		default:
			fmt.Printf("%s: error %v\n", what, err)
		}
	}
	call("with consent", tok.Citizen, "jisr-purpose", tok.Purpose, "jisr-consent", tok.Token)
	call("without consent", tok.Citizen, "jisr-purpose", tok.Purpose)
	call("bad eID", "nſ389813", "jisr-purpose", tok.Purpose, "jisr-consent", tok.Token)
}

// onLoopback reports whether addr (host:port) names this host's loopback.
func onLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
