#!/usr/bin/env python3
"""Reads a folded-stack file (inferno-collapse-perf --all) and prints where the CPU went:
the top functions by self time, the share of each part of the program (the first frame,
from the leaf up, that belongs to a known part), and the syscalls by inclusive time.

  top.py get_hit.folded[.gz] [N]
  top.py --merge-threads < raw.folded > merged.folded
      (one root for the master's runtime threads mkv-0, mkv-1, …: their stacks are the
      same code, so the graph reads better summed than side by side)
"""
import collections
import gzip
import re
import sys

# first match, walking from the leaf towards the root, owns the sample
PARTS = [
    ("kernel (TCP, io_uring, scheduler)", lambda f: f.endswith("_[k]")),
    ("allocation (mimalloc/malloc)", lambda f: re.match(r"_?mi_|__rust_(re|de)?alloc|(__libc_)?(malloc|free|realloc|calloc|cfree)$|operator (new|delete)", f)),
    ("md5 (placement, Content-Md5)", lambda f: f.startswith(("md5::", "mkv::md5")) or "<md5::" in f or "<mkv::md5" in f),
    ("RocksDB", lambda f: "rocksdb::" in f or "librocksdb" in f),
    ("mkv HTTP parse/write (mkv::http)", lambda f: f.startswith("mkv::http") or "<mkv::http" in f or f.startswith("httparse") or "<httparse" in f),
    ("mkv placement", lambda f: f.startswith("mkv::placement")),
    ("mkv volume client", lambda f: f.startswith("mkv::volume") or "<mkv::volume" in f),
    ("mkv handlers, connection loop, rest of mkv", lambda f: f.startswith("mkv::") or "<mkv::" in f),
    ("monoio runtime", lambda f: "monoio::" in f or "io_uring::" in f),
]


def merge_threads():
    merged = collections.Counter()
    for line in sys.stdin:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if stack:
            merged[re.sub(r"^mkv-\d+;", "mkv runtime threads;", stack)] += int(n)
    for stack in sorted(merged):
        print(f"{stack} {merged[stack]}")


def main():
    if sys.argv[1] == "--merge-threads":
        return merge_threads()
    path = sys.argv[1]
    n_top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    self_t = collections.Counter()
    parts = collections.Counter()
    syscalls = collections.Counter()
    total = 0
    lines = gzip.open(path, "rt") if path.endswith(".gz") else open(path)
    for line in lines:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        self_t[frames[-1]] += n
        for f in reversed(frames):
            owner = next((name for name, match in PARTS if match(f)), None)
            if owner:
                parts[owner] += n
                break
        else:
            parts["other (libc, unresolved)"] += n
        for f in set(frames):
            m = re.match(r"__(?:x64|do)_sys_(\w+)_\[k\]$", f)
            if m:
                syscalls[m.group(1)] += n
    if not total:
        sys.exit(f"{path}: no samples")
    print(f"{path}: total weight {total} (perf sample periods)\n")
    print(f"top {n_top} functions by self time:")
    for f, n in self_t.most_common(n_top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print("\nself time by part (leaf attributed to the nearest known caller):")
    for name, n in parts.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\nsyscalls, inclusive (everything under them, kernel TCP work included):")
    for name, n in syscalls.most_common(6):
        print(f"  {100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
