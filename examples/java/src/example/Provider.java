package example;

import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.netty.NettyServerBuilder;
import io.grpc.stub.StreamObserver;
import java.net.InetSocketAddress;
import jisr.cnss.v1.Cnss.AmoCoverage;
import jisr.cnss.v1.Cnss.AmoScheme;
import jisr.cnss.v1.Cnss.GetAmoCoverageRequest;
import jisr.cnss.v1.Cnss.GetAmoCoverageResponse;
import jisr.cnss.v1.Cnss.IsInsuredRequest;
import jisr.cnss.v1.Cnss.IsInsuredResponse;
import jisr.cnss.v1.SocialSecurityGrpc;
import jisr.v1.Types.Date;

/**
 * A ministry's own CNSS backend in Java: the gRPC service
 * jisr.cnss.v1.SocialSecurity, which the cnss adapter calls for the gateway's
 * decided queries (docs/integrate.md).
 *
 * <pre>./build.sh && ./provider.sh 127.0.0.1:9003
 * jisr dev --backend cnss=127.0.0.1:9003</pre>
 *
 * The eID it receives is the federation's normalised form (trimmed,
 * upper-case ASCII): compare it as it is. Status messages never carry
 * citizen data. The standard health service answers SERVING (the adapter's
 * /readyz asks it).
 */
public final class Provider {
  static final Metadata.Key<String> CONSUMER = Metadata.Key.of("jisr-consumer", Metadata.ASCII_STRING_MARSHALLER);
  static final Metadata.Key<String> PURPOSE = Metadata.Key.of("jisr-purpose", Metadata.ASCII_STRING_MARSHALLER);
  static final Context.Key<String> ASKER = Context.key("asker");

  /** Reads jisr-consumer and jisr-purpose into the call's context. */
  static final class JisrMetadata implements ServerInterceptor {
    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata md, ServerCallHandler<Q, R> next) {
      Context ctx = Context.current().withValue(ASKER, md.get(CONSUMER) + " for " + md.get(PURPOSE));
      return Contexts.interceptCall(ctx, call, md, next);
    }
  }

  /** A toy AMO register: every eID is affiliated except those beginning with ZZ. Never log the eID. */
  static boolean affiliated(String eid) {
    System.out.println("query from " + ASKER.get());
    System.out.flush();
    return !eid.isEmpty() && !eid.startsWith("ZZ");
  }

  static final class Register extends SocialSecurityGrpc.SocialSecurityImplBase {
    @Override
    public void getAmoCoverage(GetAmoCoverageRequest req, StreamObserver<GetAmoCoverageResponse> out) {
      if (!affiliated(req.getEid())) {
        out.onError(Status.NOT_FOUND.withDescription("no AMO affiliate with this eID").asRuntimeException());
        return;
      }
      out.onNext(GetAmoCoverageResponse.newBuilder().setCoverage(AmoCoverage.newBuilder()
          .setCovered(true).setScheme(AmoScheme.AMO_SCHEME_SALARIED)
          .setValidUntil(Date.newBuilder().setYear(2027).setMonth(12).setDay(31))).build());
      out.onCompleted();
    }

    @Override
    public void isInsured(IsInsuredRequest req, StreamObserver<IsInsuredResponse> out) {
      out.onNext(IsInsuredResponse.newBuilder().setInsured(affiliated(req.getEid())).build());
      out.onCompleted();
    }
  }

  /** The standard health service (generated from examples/proto/grpc/health/v1/health.proto). */
  static final class Health extends HealthGrpc.HealthImplBase {
    @Override
    public void check(HealthCheckRequest req, StreamObserver<HealthCheckResponse> out) {
      out.onNext(HealthCheckResponse.newBuilder().setStatus(HealthCheckResponse.ServingStatus.SERVING).build());
      out.onCompleted();
    }
  }

  public static void main(String[] args) throws Exception {
    String listen = args.length > 0 ? args[0] : "127.0.0.1:9003";
    int colon = listen.lastIndexOf(':');
    // Plaintext: keep it on loopback, next to the adapter.
    Server server = NettyServerBuilder
        .forAddress(new InetSocketAddress(listen.substring(0, colon), Integer.parseInt(listen.substring(colon + 1))))
        .addService(ServerInterceptors.intercept(new Register(), new JisrMetadata()))
        .addService(new Health())
        .build()
        .start();
    System.out.println("CNSS backend listening on " + listen);
    System.out.flush();
    server.awaitTermination();
  }
}
