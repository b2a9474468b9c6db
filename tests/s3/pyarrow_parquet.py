"""pyarrow's S3FileSystem: a 2,000,000-row parquet table written (pyarrow writes every file
as a multipart upload, aws-chunked with a CRC64NVME trailer even over http) and read back
equal; directories (folder markers), file info and listing. `anonymous` as the first
argument: no credentials, as minikeyvalue's users run it (else signed); the second, if
any, is the number of rows."""

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from common import ARGS, Recorder, done, eq

anonymous = ARGS[:1] == ["anonymous"]
creds = {"anonymous": True} if anonymous else {
    "access_key": os.environ["AWS_ACCESS_KEY_ID"], "secret_key": os.environ["AWS_SECRET_ACCESS_KEY"]}
wire = Recorder()
fs = pafs.S3FileSystem(endpoint_override=wire.host, scheme="http", region="us-east-1",
                       allow_bucket_creation=True, allow_bucket_deletion=True, **creds)

B = "pyarrow"
fs.create_dir(B)
fs.create_dir(f"{B}/tables/empty-dir")  # a folder marker: PUT /pyarrow/tables/empty-dir/

n = int(ARGS[1]) if len(ARGS) > 1 else 2_000_000
table = pa.table({
    "id": pa.array(range(n), pa.int64()),
    "value": pc.random(n, initializer=7),
    "label": pa.array([f"row-{i % 1000}" for i in range(n)]),
})
path = f"{B}/tables/t1/data.parquet"
pq.write_table(table, path, filesystem=fs, row_group_size=max(n // 4, 1))

# what pyarrow sent: a multipart upload whose parts are aws-chunked with a CRC64NVME
# trailer (anonymous ones with no x-amz-content-sha256), and a folder marker
assert wire.find("POST", "/pyarrow/tables/t1/data.parquet?uploads"), wire.heads
parts = [h for m, t, h in wire.heads if m == "PUT" and t.startswith("/pyarrow/tables/t1/data.parquet?")
         and "uploadId=" in t and "partNumber=" in t]
assert parts, wire.heads
assert all(p.get("content-encoding") == "aws-chunked" and p.get("x-amz-trailer") == "x-amz-checksum-crc64nvme"
           for p in parts), parts
if anonymous:
    assert all("x-amz-content-sha256" not in p and "authorization" not in p for p in parts), parts
marker = wire.find("PUT", "/pyarrow/tables/empty-dir/")
eq([m.get("content-length") for m in marker], ["0"], "a folder marker")

info = fs.get_file_info(path)
eq(info.type, pafs.FileType.File, "written file type")
assert info.size > (5 << 20 if n >= 2_000_000 else 0), info.size  # 2M rows: more than one part
back = pq.read_table(path, filesystem=fs)
assert back.equals(table), "the table read back differs"
eq(back.num_rows, n, "rows")

# a second, small file and the listing pyarrow makes of the folder
pq.write_table(table.slice(0, 10), f"{B}/tables/t1/small.parquet", filesystem=fs)
listed = sorted((i.path, i.type) for i in fs.get_file_info(pafs.FileSelector(f"{B}/tables", recursive=True)))
eq(listed, [
    (f"{B}/tables/empty-dir", pafs.FileType.Directory),
    (f"{B}/tables/t1", pafs.FileType.Directory),
    (f"{B}/tables/t1/data.parquet", pafs.FileType.File),
    (f"{B}/tables/t1/small.parquet", pafs.FileType.File),
], "listing")
eq(pq.read_table(f"{B}/tables/t1/small.parquet", filesystem=fs).equals(table.slice(0, 10)), True, "small file")
ds = pq.ParquetDataset(f"{B}/tables/t1", filesystem=fs)
eq(ds.read().num_rows, n + 10, "the folder as a dataset")

fs.delete_file(f"{B}/tables/t1/small.parquet")
eq(fs.get_file_info(f"{B}/tables/t1/small.parquet").type, pafs.FileType.NotFound, "deleted")

# a hive-partitioned dataset, read back whole
small = pa.table({"k": [i % 3 for i in range(3000)], "v": list(range(3000))})
pads.write_dataset(small, f"{B}/ds", format="parquet", partitioning=["k"], filesystem=fs)
files = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(f"{B}/ds", recursive=True)) if i.is_file)
eq(files, [f"{B}/ds/{k}/part-0.parquet" for k in range(3)], "dataset files")
back = pads.dataset(f"{B}/ds", format="parquet", partitioning=["k"], filesystem=fs).to_table()
eq(sorted(back.column("v").to_pylist()), list(range(3000)), "dataset rows")

# random access (ranged GETs), server-side copy and move, directory deletes
raw = bytes(range(256)) * 1000
with fs.open_output_stream(f"{B}/raw.bin") as f:
    f.write(raw)
with fs.open_input_file(f"{B}/raw.bin") as f:
    eq(f.size(), len(raw), "random access size")
    f.seek(100_000)
    eq(f.read(5), raw[100_000:100_005], "random access read")
fs.copy_file(f"{B}/raw.bin", f"{B}/copy.bin")
fs.move(f"{B}/copy.bin", f"{B}/moved.bin")
eq([i.type for i in fs.get_file_info([f"{B}/copy.bin", f"{B}/moved.bin"])],
   [pafs.FileType.NotFound, pafs.FileType.File], "copy then move")
with fs.open_input_stream(f"{B}/moved.bin") as f:
    eq(f.read(), raw, "the moved file")
fs.delete_dir(f"{B}/ds")
eq(fs.get_file_info(f"{B}/ds").type, pafs.FileType.NotFound, "delete_dir")
fs.delete_dir_contents(B)
eq(fs.get_file_info(pafs.FileSelector(B, recursive=True)), [], "delete_dir_contents")
done()
