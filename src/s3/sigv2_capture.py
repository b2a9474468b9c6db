# Captures what botocore puts on the wire when it signs with Signature Version 2 (its
# default for presigned URLs on a custom endpoint, and Config(signature_version='s3') for
# requests), at a frozen time: the vectors of sigv2.rs's tests. Nothing is sent anywhere.
import json
from unittest import mock

import boto3
import botocore.auth
from botocore.awsrequest import AWSResponse
from botocore.config import Config

FROZEN = 1714564800  # 2024-05-01T12:00:00Z
captured = []


class Raw:
    def stream(self, **kw):
        yield b""

    def read(self, *a, **kw):
        return b""


def before_send(request, **kw):
    url = request.url.split("://", 1)[1]
    text = lambda v: v.decode() if isinstance(v, bytes) else v
    captured.append([request.method, url[url.index("/"):],
                     [[k, text(v)] for k, v in request.headers.items() if k != "User-Agent"
                      and not k.startswith("amz-sdk")]])
    return AWSResponse(request.url, 200, {}, Raw())


def client(**cfg):
    c = boto3.client("s3", endpoint_url="http://127.0.0.1:3000", aws_access_key_id="mkvtestkey",
                     aws_secret_access_key="mkv/test+secret", region_name="us-east-1",
                     config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **cfg))
    c.meta.events.register("before-send.s3", before_send)
    return c


with mock.patch("time.time", return_value=FROZEN):
    v2 = client(signature_version="s3", request_checksum_calculation="when_required")
    v2.get_object(Bucket="b12", Key="dir/a b+c!~*()'é.txt")
    v2.put_object(Bucket="b12", Key="k", Body=b"hello", ContentType="text/plain", ContentMD5="XUFAKrxLKna5cZ2REBfFkg==",
                  Metadata={"color": "blue", "Two": "x  y"})
    v2.list_objects(Bucket="b12", Prefix="a b/", Delimiter="/")
    v2.create_multipart_upload(Bucket="b12", Key="big")
    v2.list_parts(Bucket="b12", Key="big", UploadId="u-1")
    v2.get_object(Bucket="b12", Key="k", ResponseContentType="text/x y", ResponseContentDisposition="attachment")
    presign = client()
    urls = [
        presign.generate_presigned_url("get_object", Params={"Bucket": "b12", "Key": "a b+c/é"}, ExpiresIn=600),
        presign.generate_presigned_url("get_object", Params={"Bucket": "b12", "Key": "k", "ResponseContentType": "text/x y"},
                                       ExpiresIn=600),
        presign.generate_presigned_url("put_object", Params={"Bucket": "b12", "Key": "up"}, ExpiresIn=600),
    ]
print(json.dumps({"requests": captured, "presigned": urls}, indent=1, ensure_ascii=False))
