# The single jisr binary, for every component (nats-server, gateway, adapter,
# backend, nats init): docker build -t ghcr.io/jisr-bus/jisr:0.1.0 .
# The Helm chart (deploy/helm/jisr) runs it non-root with a read-only root
# file system; the SVIDs come from the SPIFFE Workload API, keys from Secrets.
FROM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# Module downloads first, cached while only sources change.
COPY go.work go.work.sum ./
COPY proto/go.mod proto/go.sum proto/
COPY certs/go.mod certs/go.sum certs/
COPY bus/go.mod bus/go.sum bus/
COPY gateway/go.mod gateway/go.sum gateway/
COPY services/go.mod services/go.sum services/
COPY cmd/go.mod cmd/go.sum cmd/
RUN cd cmd && go mod download
COPY proto proto
COPY certs certs
COPY bus bus
COPY gateway gateway
COPY services services
COPY cmd cmd
RUN cd cmd && go build -trimpath -ldflags=-s -o /out/jisr ./jisr

# Static, no shell, uid 65532 (nonroot).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/jisr /usr/local/bin/jisr
COPY deploy/federation.yaml deploy/*.binpb /etc/jisr/federation/
USER 65532:65532
ENV JISR_FEDERATION=/etc/jisr/federation/federation.yaml JISR_CERTS=/etc/jisr/keys JISR_DATA=/data
ENTRYPOINT ["/usr/local/bin/jisr"]
