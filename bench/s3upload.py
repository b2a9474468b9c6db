#!/usr/bin/env python3
"""One multipart upload of a file through S3, as boto3 does it (upload_file: parts in
parallel threads), timed; prints one JSON line. Run with the venv's python (boto3).

  s3upload.py ENDPOINT BUCKET KEY FILE [PART_MIB]
"""
import json
import sys
import time

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config


def main():
    endpoint, bucket, key, path = sys.argv[1:5]
    part = int(sys.argv[5]) if len(sys.argv) > 5 else 8
    # a master without -s3-keys takes any signature; boto3 only needs some key to sign with
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="bench", aws_secret_access_key="bench",
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    # boto3's defaults but for the part size: 10 parts in flight
    cfg = TransferConfig(multipart_threshold=part << 20, multipart_chunksize=part << 20)
    # when CompleteMultipartUpload goes out and its answer is back: the parts' phase and
    # Complete's (the master streaming the parts into the key's replicas) apart
    # (a before-call handler that returns something answers the call in its place: None)
    marks = {}

    def mark(name):
        def handler(**_):
            marks.setdefault(name, time.monotonic())
        return handler

    s3.meta.events.register("before-call.s3.CompleteMultipartUpload", mark("c0"))
    s3.meta.events.register("after-call.s3.CompleteMultipartUpload", mark("c1"))
    t0 = time.monotonic()
    s3.upload_file(path, bucket, key, Config=cfg)
    secs = time.monotonic() - t0
    head = s3.head_object(Bucket=bucket, Key=key)
    print(json.dumps({"seconds": round(secs, 3), "parts_seconds": round(marks["c0"] - t0, 3),
                      "complete_seconds": round(marks["c1"] - marks["c0"], 3),
                      "size": head["ContentLength"], "etag": head["ETag"],
                      "part_mib": part, "threads": cfg.max_request_concurrency}))


if __name__ == "__main__":
    main()
