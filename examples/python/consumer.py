#!/usr/bin/env python3
"""The health ministry's client in Python: it calls CNSS's
jisr.cnss.v1.SocialSecurity/GetAmoCoverage through its own adapter (the
health adapter), with a purpose and the citizen's consent token, and reads
every refusal's google.rpc.ErrorInfo (docs/errors.md).

    ./gen.sh && /usr/bin/python3 consumer.py --demo ../../var/demo.json

It prints one line per call: "allowed ..." or "refused <code> <reason>:
<message>".
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402
from jisr.cnss.v1 import cnss_pb2, cnss_pb2_grpc  # noqa: E402


def error_info(err):
    """The jisr ErrorInfo of a refusal: (reason, domain), or ("", "").
    gRPC carries the google.rpc.Status in the grpc-status-details-bin
    trailer; its details are Any messages."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            st = status_pb2.Status.FromString(value)
            for any_ in st.details:
                if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    any_.Unpack(info)
                    if info.domain == "jisr":
                        return info.reason, info.domain
    return "", ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", default="var/demo.json", help="var/demo.json of a running `jisr dev` (make run)")
    ap.add_argument("--adapter", default="", help="the health adapter's gRPC address (default: from --demo)")
    args = ap.parse_args()
    try:
        with open(args.demo) as f:
            demo = json.load(f)
    except OSError as e:
        sys.exit(f"{e} (start the federation with `make run`; it writes var/demo.json)")
    adapter = args.adapter or demo["endpoints"]["adapter/health"]
    tok = next(t for t in demo["tokens"]
               if t["consumer"] == "health" and t["provider"] == "cnss" and "GetAmoCoverage" in t["methods"])

    # Plaintext to the adapter on loopback (the sidecar case); off loopback
    # the adapter serves mTLS with the member's SVID (docs/integrate.md).
    with grpc.insecure_channel(adapter) as channel:
        client = cnss_pb2_grpc.SocialSecurityStub(channel)

        def call(what, eid, metadata):
            try:
                resp = client.GetAmoCoverage(cnss_pb2.GetAmoCoverageRequest(eid=eid), metadata=metadata, timeout=10)
                v = resp.coverage.valid_until
                print(f"{what}: allowed covered={str(resp.coverage.covered).lower()} until {v.year}-{v.month:02d}-{v.day:02d}")
            except grpc.RpcError as err:
                reason, _ = error_info(err)
                code = "".join(w.capitalize() for w in err.code().name.split("_"))
                print(f"{what}: refused {code} {reason}: {err.details()}")

        call("with consent", tok["citizen"], [("jisr-purpose", tok["purpose"]), ("jisr-consent", tok["token"])])
        call("without consent", tok["citizen"], [("jisr-purpose", tok["purpose"])])
        call("bad eID", "nſ389813", [("jisr-purpose", tok["purpose"]), ("jisr-consent", tok["token"])])


if __name__ == "__main__":
    main()
