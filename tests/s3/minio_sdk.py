"""The MinIO Python SDK: put_object, get_object, stat_object, list_objects (recursive and
not), remove_object, and a multipart upload by a large put_object."""

import datetime
import hashlib
import io
import os

from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error

from common import done, eq, fetch

mc = Minio(os.environ["MKV_S3_HOST"], access_key=os.environ["AWS_ACCESS_KEY_ID"],
           secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], secure=False, region="us-east-1")
B = "minio"
eq(mc.bucket_exists(B), False, "bucket_exists before")
mc.make_bucket(B)
eq(mc.bucket_exists(B), True, "bucket_exists after")

r = mc.put_object(B, "dir/hello.txt", io.BytesIO(b"hello minio"), 11, content_type="text/plain",
                  metadata={"x-amz-meta-kind": "greeting"})
eq(r.etag, hashlib.md5(b"hello minio").hexdigest(), "put_object etag")
for key, data in [("dir/sub/deep.txt", b"deep"), ("top.txt", b"top"), ("dir/empty", b"")]:
    mc.put_object(B, key, io.BytesIO(data), len(data))

got = mc.get_object(B, "dir/hello.txt")
try:
    eq(got.read(), b"hello minio", "get_object")
finally:
    got.close()
    got.release_conn()
got = mc.get_object(B, "dir/hello.txt", offset=6, length=5)
eq(got.read(), b"minio", "get_object range")
got.close()
got.release_conn()

st = mc.stat_object(B, "dir/hello.txt")
eq((st.size, st.etag, st.content_type), (11, hashlib.md5(b"hello minio").hexdigest(), "text/plain"), "stat_object")
eq(st.metadata.get("x-amz-meta-kind"), "greeting", "stat_object metadata")

# (the SDK yields a page's objects before its common prefixes)
flat = sorted((o.object_name, o.is_dir) for o in mc.list_objects(B))
eq(flat, [("dir/", True), ("top.txt", False)], "list_objects")
deep = [(o.object_name, o.size) for o in mc.list_objects(B, recursive=True)]
eq(deep, [("dir/empty", 0), ("dir/hello.txt", 11), ("dir/sub/deep.txt", 4), ("top.txt", 3)], "recursive")
eq(sorted(o.object_name for o in mc.list_objects(B, prefix="dir/")), ["dir/empty", "dir/hello.txt", "dir/sub/"],
   "prefix")
eq([o.object_name for o in mc.list_objects(B, prefix="dir/", recursive=True, start_after="dir/hello.txt")],
   ["dir/sub/deep.txt"], "start_after")

# a multipart upload: 12 MiB in parts of 5 MiB, from a stream of unknown length too
big = os.urandom(1 << 20) * 12
r = mc.put_object(B, "big.bin", io.BytesIO(big), len(big), part_size=5 << 20)
assert r.etag.endswith("-3"), r.etag
r = mc.put_object(B, "stream.bin", io.BytesIO(big), -1, part_size=5 << 20)
assert r.etag.endswith("-3"), r.etag
for key in ["big.bin", "stream.bin"]:
    got = mc.get_object(B, key)
    eq(hashlib.md5(got.read()).hexdigest(), hashlib.md5(big).hexdigest(), key)
    got.close()
    got.release_conn()
    eq(mc.stat_object(B, key).size, len(big), key + " size")
eq(list(mc.list_incomplete_uploads(B)) if hasattr(mc, "list_incomplete_uploads") else [], [], "no uploads left")

# files, a server-side copy, presigned URLs (SigV4)
home = os.environ["HOME"]
with open(f"{home}/up.txt", "wb") as f:
    f.write(b"from a file")
mc.fput_object(B, "files/up.txt", f"{home}/up.txt")
mc.fget_object(B, "files/up.txt", f"{home}/down.txt")
eq(open(f"{home}/down.txt", "rb").read(), b"from a file", "fput/fget")
r = mc.copy_object(B, "files/copy.txt", CopySource(B, "files/up.txt"))
eq(r.etag, hashlib.md5(b"from a file").hexdigest(), "copy_object etag")
url = mc.presigned_get_object(B, "files/copy.txt", expires=datetime.timedelta(minutes=5))
eq(fetch(url)[:2], (200, b"from a file"), "presigned_get_object")
url = mc.presigned_put_object(B, "files/presigned.txt", expires=datetime.timedelta(minutes=5))
eq(fetch(url, "PUT", b"put by URL")[0], 200, "presigned_put_object")
eq(mc.stat_object(B, "files/presigned.txt").size, 10, "what the presigned PUT stored")
for key in ["files/up.txt", "files/copy.txt", "files/presigned.txt"]:
    mc.remove_object(B, key)

mc.remove_object(B, "dir/hello.txt")
mc.remove_object(B, "dir/hello.txt")  # again: no error
try:
    mc.stat_object(B, "dir/hello.txt")
    raise AssertionError("stat_object of a removed object succeeded")
except S3Error as e:
    eq(e.code, "NoSuchKey", "stat_object after remove")
errors = list(mc.remove_objects(B, [__import__("minio.deleteobjects").deleteobjects.DeleteObject(k)
                                    for k in ["dir/empty", "dir/sub/deep.txt", "top.txt", "big.bin", "stream.bin"]]))
eq(errors, [], "remove_objects")
eq(list(mc.list_objects(B, recursive=True)), [], "emptied")
mc.remove_bucket(B)
eq(mc.bucket_exists(B), False, "bucket_exists after remove_bucket")

# a client given no region asks a bucket's location before its first request to it:
# buckets are implicit (S3.md), so one never created answers the server's region and the
# PutObject into it works (it was 404 NoSuchBucket, and put_object failed)
plain = Minio(os.environ["MKV_S3_HOST"], access_key=os.environ["AWS_ACCESS_KEY_ID"],
              secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], secure=False)
plain.put_object("never-made", "k", io.BytesIO(b"implicit"), 8)
got = plain.get_object("never-made", "k")
eq(got.read(), b"implicit", "put_object into a bucket never created, no region given")
got.close()
got.release_conn()
plain.remove_object("never-made", "k")
done()
