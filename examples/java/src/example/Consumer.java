package example;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.protobuf.Any;
import com.google.rpc.ErrorInfo;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.MetadataUtils;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import jisr.cnss.v1.Cnss.GetAmoCoverageRequest;
import jisr.cnss.v1.Cnss.GetAmoCoverageResponse;
import jisr.cnss.v1.SocialSecurityGrpc;

/**
 * The health ministry's client in Java: it calls CNSS's
 * jisr.cnss.v1.SocialSecurity/GetAmoCoverage through its own adapter (the
 * health adapter), with a purpose and the citizen's consent token, and reads
 * every refusal's google.rpc.ErrorInfo (docs/errors.md).
 *
 * <pre>./run.sh ../../var/demo.json</pre>
 *
 * It prints one line per call: "allowed ..." or "refused CODE REASON: message".
 */
public final class Consumer {
  private static final Metadata.Key<byte[]> DETAILS =
      Metadata.Key.of("grpc-status-details-bin", Metadata.BINARY_BYTE_MARSHALLER);
  private static final Metadata.Key<String> PURPOSE =
      Metadata.Key.of("jisr-purpose", Metadata.ASCII_STRING_MARSHALLER);
  private static final Metadata.Key<String> CONSENT =
      Metadata.Key.of("jisr-consent", Metadata.ASCII_STRING_MARSHALLER);

  /** The jisr ErrorInfo reason of a refusal, or "". */
  static String reason(StatusRuntimeException e) throws Exception {
    Metadata trailers = e.getTrailers();
    if (trailers == null || !trailers.containsKey(DETAILS)) {
      return "";
    }
    com.google.rpc.Status st = com.google.rpc.Status.parseFrom(trailers.get(DETAILS));
    for (Any d : st.getDetailsList()) {
      if (d.is(ErrorInfo.class)) {
        ErrorInfo info = d.unpack(ErrorInfo.class);
        if (info.getDomain().equals("jisr")) {
          return info.getReason();
        }
      }
    }
    return "";
  }

  /** CamelCase of a gRPC code, as Go and the docs write it. */
  static String code(io.grpc.Status.Code c) {
    StringBuilder b = new StringBuilder();
    for (String w : c.name().split("_")) {
      b.append(w.charAt(0)).append(w.substring(1).toLowerCase());
    }
    return b.toString();
  }

  static void call(ManagedChannel ch, String what, String eid, String purpose, String token) throws Exception {
    Metadata md = new Metadata();
    md.put(PURPOSE, purpose);
    if (token != null) {
      md.put(CONSENT, token);
    }
    SocialSecurityGrpc.SocialSecurityBlockingStub stub = SocialSecurityGrpc.newBlockingStub(ch)
        .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md))
        .withDeadlineAfter(10, TimeUnit.SECONDS);
    try {
      GetAmoCoverageResponse r = stub.getAmoCoverage(GetAmoCoverageRequest.newBuilder().setEid(eid).build());
      System.out.printf("%s: allowed covered=%b until %d-%02d-%02d%n", what, r.getCoverage().getCovered(),
          r.getCoverage().getValidUntil().getYear(), r.getCoverage().getValidUntil().getMonth(),
          r.getCoverage().getValidUntil().getDay());
    } catch (StatusRuntimeException e) {
      System.out.printf("%s: refused %s %s: %s%n", what, code(e.getStatus().getCode()), reason(e),
          e.getStatus().getDescription());
    }
  }

  public static void main(String[] args) throws Exception {
    String demoPath = args.length > 0 ? args[0] : "var/demo.json";
    JsonObject demo = JsonParser.parseString(Files.readString(Path.of(demoPath))).getAsJsonObject();
    String adapter = demo.getAsJsonObject("endpoints").get("adapter/health").getAsString();
    JsonObject tok = null;
    for (JsonElement t : demo.getAsJsonArray("tokens")) {
      JsonObject o = t.getAsJsonObject();
      if (o.get("consumer").getAsString().equals("health") && o.get("provider").getAsString().equals("cnss")
          && o.getAsJsonArray("methods").toString().contains("\"GetAmoCoverage\"")) {
        tok = o;
      }
    }
    if (tok == null) {
      throw new IllegalStateException("no health -> cnss GetAmoCoverage token in " + demoPath);
    }
    // Plaintext to the adapter on loopback (the sidecar case); off loopback
    // the adapter serves mTLS with the member's SVID (docs/integrate.md).
    ManagedChannel ch = NettyChannelBuilder.forTarget(adapter).usePlaintext().build();
    try {
      String eid = tok.get("citizen").getAsString();
      String purpose = tok.get("purpose").getAsString();
      call(ch, "with consent", eid, purpose, tok.get("token").getAsString());
      call(ch, "without consent", eid, purpose, null);
      call(ch, "bad eID", "n\u017f389813", purpose, tok.get("token").getAsString());
    } finally {
      ch.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }
}
