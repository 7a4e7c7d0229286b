#!/usr/bin/env python3
"""A ministry's own CNSS backend in Python: the gRPC service
jisr.cnss.v1.SocialSecurity, which the cnss adapter calls for the gateway's
decided queries (docs/integrate.md).

    ./gen.sh && /usr/bin/python3 provider.py --listen 127.0.0.1:9003
    jisr dev --backend cnss=127.0.0.1:9003

It shows the service to implement, the metadata a backend receives
(jisr-consumer, jisr-purpose), the eID it receives (already normalised by
the gateway: trimmed, upper-case ASCII), errors without citizen data and the
standard health service (the adapter's /readyz asks it).
"""
import argparse
import os
import sys
from concurrent import futures

GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen")
sys.path.insert(0, GEN)

import grpc  # noqa: E402

# The health stubs are generated into gen/grpc/health/v1 (package
# grpc.health.v1): let the installed grpc package find them.
grpc.__path__.append(os.path.join(GEN, "grpc"))
from grpc.health.v1 import health_pb2, health_pb2_grpc  # noqa: E402  (generated from examples/proto)
from jisr.cnss.v1 import cnss_pb2, cnss_pb2_grpc  # noqa: E402
from jisr.v1 import types_pb2  # noqa: E402


def affiliated(context, eid):
    """A toy AMO register: every eID is affiliated except those beginning with ZZ.
    The eID is the federation's normalised form, compared as it is. Never
    log it."""
    md = dict(context.invocation_metadata())
    print("query from", md.get("jisr-consumer"), "for", md.get("jisr-purpose"), flush=True)
    return eid != "" and not eid.startswith("ZZ")


class Health(health_pb2_grpc.HealthServicer):
    """The standard health service: the adapter's /readyz asks Check("")."""

    def Check(self, request, context):
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class Register(cnss_pb2_grpc.SocialSecurityServicer):
    def GetAmoCoverage(self, request, context):
        if not affiliated(context, request.eid):
            # No citizen data in a status message: the gateway passes on
            # only the code (PROVIDER_NOT_FOUND).
            context.abort(grpc.StatusCode.NOT_FOUND, "no AMO affiliate with this eID")
        return cnss_pb2.GetAmoCoverageResponse(coverage=cnss_pb2.AmoCoverage(
            covered=True, scheme=cnss_pb2.AMO_SCHEME_SALARIED,
            valid_until=types_pb2.Date(year=2027, month=12, day=31)))

    def IsInsured(self, request, context):
        return cnss_pb2.IsInsuredResponse(insured=affiliated(context, request.eid))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:9003", help="keep plaintext on loopback, next to the adapter")
    args = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    cnss_pb2_grpc.add_SocialSecurityServicer_to_server(Register(), server)
    health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        sys.exit("cannot listen on " + args.listen)
    server.start()
    print("CNSS backend listening on", args.listen, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
