//! S3 with the clients people use (S3.md): boto3, the AWS CLI, rclone, s3cmd, the MinIO
//! SDK and pyarrow, each run as a subprocess against a real master over real nginx volumes,
//! plus what only raw requests can show (a PUT cut half way, overwrites under readers,
//! signatures refused, a restart between parts).
//!
//! The Python clients live in a venv that `bin/deps --test` (run by `bin/test`) makes under
//! the build folder; rclone is Debian's. The client scripts are in tests/s3/, each asserting
//! what it sees and exiting non-zero on the first difference.

mod common;

use common::layout::Layout;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

// ---- clients ---------------------------------------------------------------------------

/// The venv of bin/deps: `${CARGO_TARGET_DIR:-target}/venv`, found from this test binary
/// (`<target>/<profile>/deps/s3-…`), or `MKV_VENV`.
fn venv() -> PathBuf {
    let dir = match std::env::var_os("MKV_VENV") {
        Some(v) => PathBuf::from(v),
        None => std::env::current_exe().expect("current_exe").ancestors().nth(3).expect("a target folder").join("venv"),
    };
    assert!(
        dir.join("bin/python").exists(),
        "the S3 test clients are not installed in {}: run ./bin/deps --test (./bin/test does)",
        dir.display()
    );
    dir
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3")
}

const ACCESS: &str = "mkvtestaccess";
const SECRET: &str = "mkv/test+secret";

/// What every client process gets: the endpoint, credentials, a home of its own (no
/// ~/.aws, ~/.s3cfg or rclone.conf of the machine's), and never a lookup of EC2's
/// metadata service.
struct Env {
    home: TempDir,
    vars: Vec<(String, String)>,
}

impl Env {
    fn new(master: &str) -> Env {
        Env::with_keys(master, ACCESS, SECRET)
    }

    fn with_keys(master: &str, access: &str, secret: &str) -> Env {
        let home = TempDir::new("s3home");
        let none = home.path().join("none").display().to_string();
        let vars = [
            ("MKV_S3_ENDPOINT", format!("http://{master}")),
            ("MKV_S3_HOST", master.to_string()),
            ("HOME", home.path().display().to_string()),
            ("AWS_ACCESS_KEY_ID", access.into()),
            ("AWS_SECRET_ACCESS_KEY", secret.into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_CONFIG_FILE", none.clone()),
            ("AWS_SHARED_CREDENTIALS_FILE", none),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("PYTHONDONTWRITEBYTECODE", "1".into()),
            ("PYTHONUNBUFFERED", "1".into()),
            ("RCLONE_CONFIG", "/dev/null".into()),
        ];
        Env { home, vars: vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect() }
    }

    fn set(&mut self, name: &str, value: &str) {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.into(), value.into()));
    }

    fn dir(&self) -> &Path {
        self.home.path()
    }
}

/// What a client process printed.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `program args` in `env` to its end, killed (its whole process group) after `limit`.
fn run(env: &Env, program: &Path, args: &[&str], limit: Duration) -> Output {
    run_with(env, &[], program, args, limit)
}

/// [`run`] with more environment variables (they win over `env`'s).
fn run_with(env: &Env, more: &[(&str, &str)], program: &Path, args: &[&str], limit: Duration) -> Output {
    // only what the test sets: the machine's AWS_CA_BUNDLE alone breaks rclone over http
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C.UTF-8")
        .envs(env.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(more.iter().copied())
        .current_dir(env.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = Vec::new();
            let _ = pipe.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for a client") {
            break s;
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) of the process group this test started
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            timed_out = true;
            break child.wait().expect("wait for a killed client");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = Output { code: status.code(), stdout: out.join().unwrap(), stderr: err.join().unwrap() };
    assert!(!timed_out, "{} {args:?} ran past {limit:?}:\n{output:?}", program.display());
    output
}

/// Runs a client and requires exit status 0.
fn ok(env: &Env, program: &Path, args: &[&str], limit: Duration) -> Output {
    let out = run(env, program, args, limit);
    assert_eq!(out.code, Some(0), "{} {args:?} failed:\n{out:?}", program.display());
    out
}

/// Runs tests/s3/<script> with the venv's python; it must print `OK` last.
fn python(env: &Env, script: &str, args: &[&str], limit: Duration) -> Output {
    let path = scripts().join(script);
    let mut all = vec![path.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = ok(env, &venv().join("bin/python"), &all, limit);
    assert_eq!(out.stdout.lines().last(), Some("OK"), "{script} did not finish:\n{out:?}");
    out
}

fn aws(env: &Env, args: &[&str]) -> Output {
    let endpoint = env.vars.iter().find(|(k, _)| k == "MKV_S3_ENDPOINT").unwrap().1.clone();
    let mut all = vec!["--endpoint-url", &endpoint];
    all.extend_from_slice(args);
    ok(env, &venv().join("bin/aws"), &all, Duration::from_secs(60))
}

/// rclone with the remote `mkv:` made of environment variables.
fn rclone(env: &Env, args: &[&str]) -> Output {
    let endpoint = env.vars.iter().find(|(k, _)| k == "MKV_S3_ENDPOINT").unwrap().1.clone();
    let remote = [
        ("RCLONE_CONFIG_MKV_TYPE", "s3"),
        ("RCLONE_CONFIG_MKV_PROVIDER", "Other"),
        ("RCLONE_CONFIG_MKV_ENDPOINT", endpoint.as_str()),
        ("RCLONE_CONFIG_MKV_ACCESS_KEY_ID", ACCESS),
        ("RCLONE_CONFIG_MKV_SECRET_ACCESS_KEY", SECRET),
        ("RCLONE_CONFIG_MKV_REGION", "us-east-1"),
        ("RCLONE_CONFIG_MKV_FORCE_PATH_STYLE", "true"),
    ];
    let out = run_with(env, &remote, Path::new("rclone"), args, Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "rclone {args:?} failed:\n{out:?}");
    out
}

/// s3cmd on the master of `env`, with the test's keys (its config, in `env`'s home, says
/// nothing else: host, path style and http are on the command line).
fn s3cmd(env: &Env, args: &[&str]) -> Output {
    let cfg = env.dir().join("s3cfg");
    fs::write(&cfg, format!("[default]\naccess_key = {ACCESS}\nsecret_key = {SECRET}\n")).unwrap();
    let host = env.vars.iter().find(|(k, _)| k == "MKV_S3_HOST").unwrap().1.clone();
    let (s3cmd, cfg) = (venv().join("bin/s3cmd").display().to_string(), cfg.display().to_string());
    let (host, bucket_host) = (format!("--host={host}"), format!("--host-bucket={host}"));
    let mut all = vec![s3cmd.as_str(), "-c", &cfg, &host, &bucket_host, "--no-ssl"];
    all.extend_from_slice(args);
    ok(env, &venv().join("bin/python"), &all, Duration::from_secs(60))
}

// ---- the cluster -----------------------------------------------------------------------

/// Three volumes and a master on 2 threads, as the other integration tests run it.
fn cluster(extra: &[&str]) -> Cluster {
    let mut args = vec!["-threads", "2"];
    args.extend_from_slice(extra);
    Cluster::new(3, &args)
}

/// A cluster that requires signatures from `ACCESS`/`SECRET` (`-s3-keys`); the file is
/// kept by the returned TempDir.
fn keyed_cluster() -> (Cluster, TempDir) {
    let dir = TempDir::new("s3keys");
    let file = dir.path().join("keys");
    fs::write(&file, format!("# test keys\n{ACCESS} {SECRET}\nother-access other-secret\n")).unwrap();
    let c = cluster(&["-s3-keys", file.to_str().unwrap()]);
    (c, dir)
}

/// Files of temporary writes and parts left on any volume (`_tmp/`, `_parts/`).
fn leftovers(c: &Cluster) -> Vec<String> {
    c.volumes.iter().flat_map(|v| v.files()).filter(|f| f.contains("_tmp/") || f.contains("_parts/")).collect()
}

// ---- boto3 -----------------------------------------------------------------------------

#[test]
fn boto3_objects_with_default_checksums() {
    let c = cluster(&[]);
    python(&Env::new(&c.addr()), "boto3_objects.py", &[], Duration::from_secs(60));
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[test]
fn boto3_objects_as_over_https_aws_chunked_with_crc32_trailers() {
    let c = cluster(&[]);
    python(&Env::new(&c.addr()), "boto3_objects.py", &["https"], Duration::from_secs(60));
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[test]
fn boto3_listings_v1_v2_paging_delimiters_and_url_encoding() {
    let c = cluster(&[]);
    python(&Env::new(&c.addr()), "boto3_listings.py", &[], Duration::from_secs(60));
}

#[test]
fn boto3_buckets_and_delete_objects() {
    let c = cluster(&[]);
    python(&Env::new(&c.addr()), "boto3_buckets.py", &[], Duration::from_secs(60));
}

/// Upload ids the multipart script printed, and no part file left of any.
fn multipart(https: bool) {
    let c = cluster(&[]);
    let args: &[&str] = if https { &["https"] } else { &[] };
    let out = python(&Env::new(&c.addr()), "boto3_multipart.py", args, Duration::from_secs(60));
    let ids: Vec<&str> = out.stdout.lines().find_map(|l| l.strip_prefix("UPLOADS ")).unwrap().split(' ').collect();
    assert_eq!(ids.len(), 6, "{out:?}");
    assert_eq!(leftovers(&c), Vec::<String>::new(), "abort and complete leave no part file behind");
}

#[test]
fn boto3_multipart_upload_list_abort_complete() {
    multipart(false);
}

#[test]
fn boto3_multipart_as_over_https() {
    multipart(true);
}

// ---- the AWS CLI, rclone, s3cmd, the MinIO SDK, pyarrow ---------------------------------

/// Writes `files` (relative path, bytes) under `dir`.
fn write_tree(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }
}

/// Bytes that differ from offset to offset (so a misplaced piece shows).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed as u32).to_le_bytes()[2]).collect()
}

#[test]
fn aws_cli_cp_sync_ls_rm() {
    let c = cluster(&[]);
    let env = Env::new(&c.addr());
    let local = env.dir().join("local");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("small.txt", b"small file\n".to_vec()),
        ("big.bin", pattern(20 << 20, 1)), // over the CLI's 8 MiB multipart threshold
        ("sub/nested.txt", b"nested\n".to_vec()),
        ("sub/with space.txt", b"spaced\n".to_vec()),
        ("empty", Vec::new()),
    ];
    write_tree(&local, &files);
    let l = |name: &str| local.join(name).display().to_string();

    aws(&env, &["s3", "mb", "s3://cli"]);
    aws(&env, &["s3", "cp", &l("small.txt"), "s3://cli/single/small.txt"]);
    aws(&env, &["s3", "cp", &l("big.bin"), "s3://cli/single/big.bin"]);
    let head = aws(&env, &["s3api", "head-object", "--bucket", "cli", "--key", "single/big.bin"]);
    let head: serde_json::Value = serde_json::from_str(&head.stdout).unwrap();
    assert_eq!(head["ContentLength"], 20 << 20);
    assert!(head["ETag"].as_str().unwrap().ends_with("-3\""), "multipart ETag: {head}");
    let back = env.dir().join("back.bin");
    aws(&env, &["s3", "cp", "s3://cli/single/big.bin", back.to_str().unwrap()]);
    assert!(fs::read(&back).unwrap() == files[1].1, "the multipart object read back differs");
    let out = aws(&env, &["s3", "cp", "s3://cli/single/small.txt", "-"]);
    assert_eq!(out.stdout, "small file\n");

    // sync up, then again (nothing to do), then one file changed
    let out = aws(&env, &["s3", "sync", local.to_str().unwrap(), "s3://cli/synced/"]);
    assert_eq!(out.stdout.matches("upload:").count(), files.len(), "{out:?}");
    let out = aws(&env, &["s3", "sync", local.to_str().unwrap(), "s3://cli/synced/"]);
    assert_eq!(out.stdout.matches("upload:").count(), 0, "a second sync uploads nothing: {out:?}");
    thread::sleep(Duration::from_millis(1100)); // the CLI compares times to the second
    fs::write(local.join("sub/nested.txt"), b"nested, changed\n").unwrap();
    let out = aws(&env, &["s3", "sync", local.to_str().unwrap(), "s3://cli/synced/"]);
    assert_eq!(out.stdout.matches("upload:").count(), 1, "{out:?}");
    assert!(out.stdout.contains("s3://cli/synced/sub/nested.txt"), "{out:?}");

    // ls: buckets, one level, recursive
    let out = aws(&env, &["s3", "ls"]);
    assert!(out.stdout.trim_end().ends_with(" cli"), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    let out = aws(&env, &["s3", "ls", "s3://cli/"]);
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert_eq!(lines, ["PRE single/", "PRE synced/"], "{out:?}");
    let out = aws(&env, &["s3", "ls", "--recursive", "s3://cli/synced/"]);
    let mut listed: Vec<(u64, String)> = out
        .stdout
        .lines()
        .map(|l| {
            // 2024-01-01 00:00:00   12345 synced/name with spaces
            let rest = l[19..].trim_start();
            let (size, name) = rest.split_once(' ').unwrap();
            (size.parse().unwrap(), name.to_string())
        })
        .collect();
    listed.sort();
    let mut want: Vec<(u64, String)> = vec![
        (0, "synced/empty".into()),
        (7, "synced/sub/with space.txt".into()),
        (11, "synced/small.txt".into()),
        (16, "synced/sub/nested.txt".into()),
        (20 << 20, "synced/big.bin".into()),
    ];
    want.sort();
    assert_eq!(listed, want, "{out:?}");

    // sync down into an empty folder: the same tree
    let down = env.dir().join("down");
    aws(&env, &["s3", "sync", "s3://cli/synced/", down.to_str().unwrap()]);
    for (name, data) in &files {
        let want = if *name == "sub/nested.txt" { b"nested, changed\n".to_vec() } else { data.clone() };
        assert!(fs::read(down.join(name)).unwrap() == want, "{name} synced down differs");
    }

    // server-side: a 20 MiB copy (the CLI copies it in parts, UploadPartCopy), a move
    aws(&env, &["s3", "cp", "s3://cli/single/big.bin", "s3://cli/copied/big.bin"]);
    aws(&env, &["s3", "mv", "s3://cli/copied/big.bin", "s3://cli/moved/big.bin"]);
    let head = aws(&env, &["s3api", "head-object", "--bucket", "cli", "--key", "moved/big.bin"]);
    let head: serde_json::Value = serde_json::from_str(&head.stdout).unwrap();
    assert_eq!(head["ContentLength"], 20 << 20, "{head}");
    let moved = env.dir().join("moved.bin");
    aws(&env, &["s3", "cp", "s3://cli/moved/big.bin", moved.to_str().unwrap()]);
    assert!(fs::read(&moved).unwrap() == files[1].1, "the copied and moved object differs");
    aws(&env, &["s3", "rm", "s3://cli/moved/big.bin"]);

    let out = aws(&env, &["s3", "rm", "--recursive", "s3://cli/synced/"]);
    assert_eq!(out.stdout.matches("delete:").count(), files.len(), "{out:?}");
    let out = aws(&env, &["s3", "ls", "--recursive", "s3://cli/"]);
    let names: Vec<&str> = out.stdout.lines().map(|l| l.rsplit(' ').next().unwrap()).collect();
    assert_eq!(names, ["single/big.bin", "single/small.txt"], "{out:?}");
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[test]
fn rclone_copy_check_ls_with_multipart() {
    let c = cluster(&[]);
    let env = Env::new(&c.addr());
    let local = env.dir().join("tree");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty.txt", Vec::new()),
        ("one.txt", b"1".to_vec()),
        ("k.bin", pattern(1000, 2)),
        ("dir/mib.bin", pattern(1 << 20, 3)),
        ("dir/deeper/six.bin", pattern(6 << 20, 4)),
        ("multi.bin", pattern(12 << 20, 5)), // over the cutoff below: a multipart upload
    ];
    write_tree(&local, &files);
    let src = local.to_str().unwrap();
    // rclone's cutoff is 200 MiB by default; 5 MiB makes the 12 MiB file go in 3 parts
    let flags = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"];
    let mut args = vec!["copy", src, "mkv:rclone/tree"];
    args.extend_from_slice(&flags);
    rclone(&env, &args);
    let out = rclone(&env, &["check", src, "mkv:rclone/tree"]);
    assert!(out.stderr.contains("0 differences found"), "{out:?}");
    assert!(out.stderr.contains(&format!("{} matching files", files.len())), "{out:?}");
    let out = rclone(&env, &["ls", "mkv:rclone"]);
    let mut listed: Vec<(u64, String)> = out
        .stdout
        .lines()
        .map(|l| {
            let (size, name) = l.trim_start().split_once(' ').unwrap();
            (size.parse().unwrap(), name.to_string())
        })
        .collect();
    listed.sort();
    let mut want: Vec<(u64, String)> = files.iter().map(|(n, d)| (d.len() as u64, format!("tree/{n}"))).collect();
    want.sort();
    assert_eq!(listed, want, "{out:?}");
    // the multipart object's ETag is S3's, and rclone's own MD5 rides along as metadata
    let out = rclone(&env, &["md5sum", "mkv:rclone/tree/multi.bin"]);
    let md5 = format!("{:x}", <md5::Md5 as md5::Digest>::digest(&files[5].1));
    assert!(out.stdout.starts_with(&md5), "{out:?}");
    // copied back: the same bytes
    let back = env.dir().join("back");
    rclone(&env, &["copy", "mkv:rclone/tree", back.to_str().unwrap()]);
    for (name, data) in &files {
        assert!(fs::read(back.join(name)).unwrap() == *data, "{name} copied back differs");
    }
    // server-side copy and move, sync deleting what the source lacks, bucket commands
    rclone(&env, &["copyto", "mkv:rclone/tree/multi.bin", "mkv:rclone/copies/multi.bin"]);
    rclone(&env, &["moveto", "mkv:rclone/copies/multi.bin", "mkv:rclone/copies/moved.bin"]);
    rclone(&env, &["copyto", "mkv:rclone/tree/one.txt", "mkv:rclone/copies/one.txt"]);
    let out = rclone(&env, &["lsf", "-R", "mkv:rclone/copies"]);
    assert_eq!(out.stdout, "moved.bin\none.txt\n", "{out:?}");
    let out = rclone(&env, &["md5sum", "mkv:rclone/copies/moved.bin"]);
    assert!(out.stdout.starts_with(&md5), "the copied multipart object's MD5: {out:?}");
    assert_eq!(rclone(&env, &["cat", "mkv:rclone/copies/one.txt"]).stdout, "1");
    fs::remove_file(local.join("dir/mib.bin")).unwrap();
    let out = rclone(&env, &["sync", src, "mkv:rclone/tree", "-v"]);
    assert!(out.stderr.contains("dir/mib.bin: Deleted"), "{out:?}");
    let out = rclone(&env, &["check", src, "mkv:rclone/tree"]);
    assert!(out.stderr.contains("0 differences found"), "{out:?}");
    rclone(&env, &["mkdir", "mkv:rclone-made"]);
    let out = rclone(&env, &["lsd", "mkv:"]);
    let buckets: Vec<&str> = out.stdout.lines().map(|l| l.rsplit(' ').next().unwrap()).collect();
    assert_eq!(buckets, ["rclone", "rclone-made"], "{out:?}");
    rclone(&env, &["rmdir", "mkv:rclone-made"]);
    rclone(&env, &["purge", "mkv:rclone/tree"]);
    rclone(&env, &["purge", "mkv:rclone/copies"]);
    let out = rclone(&env, &["ls", "mkv:rclone"]);
    assert_eq!(out.stdout, "");
    // rclone made the bucket (CreateBucket): it stays, empty, until purged itself
    assert!(rclone(&env, &["lsd", "mkv:"]).stdout.trim_end().ends_with(" rclone"));
    rclone(&env, &["purge", "mkv:rclone"]);
    assert_eq!(rclone(&env, &["lsd", "mkv:"]).stdout, "", "no bucket left");
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[test]
fn s3cmd_mb_put_ls_get_del() {
    let c = cluster(&[]);
    let env = Env::new(&c.addr());
    let s3cmd = |args: &[&str]| s3cmd(&env, args);
    let local = env.dir().join("f");
    write_tree(&local, &[("a.txt", b"hello s3cmd\n".to_vec()), ("big.bin", pattern(17 << 20, 6))]);
    let a = local.join("a.txt").display().to_string();
    let big = local.join("big.bin").display().to_string();

    s3cmd(&["mb", "s3://s3cmd"]);
    s3cmd(&["put", &a, "s3://s3cmd/dir/a.txt"]);
    s3cmd(&["put", &big, "s3://s3cmd/big.bin"]); // over its 15 MiB chunk: multipart
    s3cmd(&["put", &a, "s3://s3cmd/top.txt"]);
    let out = s3cmd(&["ls"]);
    assert!(out.stdout.trim_end().ends_with("s3://s3cmd"), "{out:?}");
    let out = s3cmd(&["ls", "s3://s3cmd"]);
    let lines: Vec<String> = out.stdout.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    assert_eq!(lines[0], "DIR s3://s3cmd/dir/", "{out:?}");
    assert!(lines[1].ends_with(&format!("{} s3://s3cmd/big.bin", 17 << 20)), "{out:?}");
    assert!(lines[2].ends_with("12 s3://s3cmd/top.txt"), "{out:?}");
    let out = s3cmd(&["ls", "-r", "s3://s3cmd"]);
    assert_eq!(out.stdout.lines().count(), 3, "{out:?}");
    assert!(out.stdout.contains("s3://s3cmd/dir/a.txt"), "{out:?}");

    let got = env.dir().join("got");
    s3cmd(&["get", "s3://s3cmd/dir/a.txt", got.to_str().unwrap()]);
    assert_eq!(fs::read(&got).unwrap(), b"hello s3cmd\n");
    let got_big = env.dir().join("got-big");
    s3cmd(&["get", "s3://s3cmd/big.bin", got_big.to_str().unwrap()]);
    assert!(fs::read(&got_big).unwrap() == pattern(17 << 20, 6), "big.bin read back differs");

    // server-side copy and move, info, and a sync that finds nothing to do the second time
    s3cmd(&["cp", "s3://s3cmd/dir/a.txt", "s3://s3cmd/copy/a.txt"]);
    s3cmd(&["mv", "s3://s3cmd/copy/a.txt", "s3://s3cmd/copy/moved.txt"]);
    let out = s3cmd(&["info", "s3://s3cmd/copy/moved.txt"]);
    assert!(out.stdout.contains("File size: 12") && out.stdout.contains(&md5_hex(b"hello s3cmd\n")), "{out:?}");
    let out = s3cmd(&["sync", &format!("{}/", local.display()), "s3://s3cmd/synced/"]);
    assert_eq!(out.stdout.matches("upload:").count(), 2, "{out:?}");
    let out = s3cmd(&["sync", &format!("{}/", local.display()), "s3://s3cmd/synced/"]);
    assert_eq!(out.stdout.matches("upload:").count(), 0, "a second sync uploads nothing: {out:?}");
    s3cmd(&["del", "--recursive", "--force", "s3://s3cmd/synced/"]);
    s3cmd(&["del", "s3://s3cmd/copy/moved.txt"]);

    s3cmd(&["del", "s3://s3cmd/dir/a.txt"]);
    s3cmd(&["del", "s3://s3cmd/big.bin"]);
    let out = s3cmd(&["ls", "-r", "s3://s3cmd"]);
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert!(out.stdout.contains("s3://s3cmd/top.txt"), "{out:?}");
    s3cmd(&["del", "s3://s3cmd/top.txt"]);
    s3cmd(&["rb", "s3://s3cmd"]);
    let out = s3cmd(&["ls"]);
    assert_eq!(out.stdout, "", "{out:?}");
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[test]
fn minio_sdk_objects_listings_multipart() {
    let c = cluster(&[]);
    python(&Env::new(&c.addr()), "minio_sdk.py", &[], Duration::from_secs(60));
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[test]
fn pyarrow_writes_and_reads_a_two_million_row_parquet_table_anonymously() {
    let c = cluster(&[]);
    python(&Env::new(&c.addr()), "pyarrow_parquet.py", &["anonymous"], Duration::from_secs(120));
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

// ---- raw S3 requests -------------------------------------------------------------------

/// What makes a request S3's without signing it (a cluster without `-s3-keys`).
const UNSIGNED: (&str, &str) = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");

fn s3_put(addr: &str, path: &str, body: &[u8]) -> Response {
    request(addr, "PUT", path, &[UNSIGNED], body)
}

fn s3_get(addr: &str, path: &str) -> Response {
    request(addr, "GET", path, &[UNSIGNED], b"")
}

/// Reads from `s` until what came satisfies `done` (or the server closed), within TIMEOUT.
fn read_until(s: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut text = String::new();
    while !done(&text) {
        assert!(Instant::now() < deadline, "timed out; so far: {text:?}");
        let r = read_raw(s, Duration::from_millis(100));
        text += &r.text();
        if r.closed {
            break;
        }
    }
    text
}

fn md5_hex(data: &[u8]) -> String {
    format!("{:x}", <md5::Md5 as md5::Digest>::digest(data))
}

fn md5_b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(<md5::Md5 as md5::Digest>::digest(data))
}

/// The text of the first `<tag>…</tag>` in an XML answer.
fn xml_field<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("no <{tag}> in {xml}")) + open.len();
    &xml[start..start + xml[start..].find("</").unwrap()]
}

/// One writer alternates two values on one key for 4 s while three readers GET it through
/// S3: every read must be one whole value, with that value's ETag.
fn overwrites_under_readers(a_len: usize, b_len: usize) {
    let c = cluster(&[]);
    let addr = c.addr();
    let a = vec![b'a'; a_len];
    let b = vec![b'b'; b_len];
    assert_eq!(s3_put(&addr, "/race/key", &a).status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (addr, stop, reads) = (addr.clone(), stop.clone(), reads.clone());
            thread::spawn(move || {
                let mut client = Client::connect(&addr);
                let mut seen = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = client.request("GET", "/race/key", &[UNSIGNED], b"");
                    assert_eq!(r.status, 200, "a read during overwrites: {r:?}");
                    let whole = |v: u8, n: usize| r.body.len() == n && r.body.iter().all(|&x| x == v);
                    assert!(
                        whole(b'a', a_len) || whole(b'b', b_len),
                        "a mixed or cut read: {} bytes, {} of 'a', {} of 'b'",
                        r.body.len(),
                        r.body.iter().filter(|&&x| x == b'a').count(),
                        r.body.iter().filter(|&&x| x == b'b').count()
                    );
                    let etag = r.header("etag").unwrap().to_string();
                    let want = format!("\"{}\"", md5_hex(&r.body));
                    assert_eq!(etag, want, "the ETag answered is not the bytes'");
                    *seen.entry(r.body[0]).or_insert(0) += 1;
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();
    let began = Instant::now();
    let mut writes = 0;
    let mut writer = Client::connect(&addr);
    while began.elapsed() < Duration::from_secs(4) {
        let value = if writes % 2 == 0 { &b } else { &a };
        let r = writer.request("PUT", "/race/key", &[UNSIGNED], value);
        assert_eq!(r.status, 200, "overwrite {writes}: {r:?}");
        writes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen: BTreeMap<u8, usize> = BTreeMap::new();
    for r in readers {
        for (k, n) in r.join().expect("a reader failed") {
            *seen.entry(k).or_default() += n;
        }
    }
    assert!(writes >= 4, "only {writes} overwrites in 4 s");
    assert!(seen.len() == 2, "the readers saw only {seen:?} over {writes} overwrites");
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

/// Values of different sizes: a reader that read the old record while the MOVEs ran finds
/// every replica's size wrong and answers 500 (what fails today).
#[test]
fn overwrites_under_concurrent_readers_are_never_mixed() {
    overwrites_under_readers(3 << 20, 5 << 20);
}

/// Values of one size: the same reader would send the new bytes under the old ETag.
#[test]
fn overwrites_of_one_size_under_concurrent_readers_keep_their_etags() {
    overwrites_under_readers(4 << 20, 4 << 20);
}

/// A key rewritten faster than a replica answers a read: every try of the read sees the
/// record change under it (a sweep's 50 writers on 12 keys). That answered `500
/// InternalError "the master failed"`; it is `503 SlowDown`, which clients retry, and the
/// read is whole once the writes pause.
#[test]
fn a_read_outpaced_by_overwrites_is_slow_down_not_internal_error() {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let slow = Arc::new(AtomicBool::new(false));
    let on: Vec<String> = vols
        .iter()
        .map(|v| {
            let slow = slow.clone();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            proxy(listener, v.addr(), 64 << 10, move |bytes| {
                if slow.load(Ordering::Relaxed) && bytes.starts_with(b"GET /") {
                    thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();
    let master = Master::start_on(&on, &["-replicas", "3"]);
    let addr = master.addr();
    let values: Vec<Vec<u8>> = (0..2).map(|i| pattern(4096, i)).collect();
    assert_eq!(s3_put(&addr, "/churn/k", &values[0]).status, 200);
    slow.store(true, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (addr, stop, values) = (addr.clone(), stop.clone(), values.clone());
        thread::spawn(move || {
            let mut c = Client::connect(&addr);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = c.request("PUT", "/churn/k", &[UNSIGNED], &values[n % 2]);
                assert!(r.status == 200 || r.status == 503, "{} {}", r.status, r.text());
                n += 1;
            }
            n
        })
    };
    let mut reader = Client::connect(&addr);
    for _ in 0..3 {
        let r = reader.request("GET", "/churn/k", &[UNSIGNED], b"");
        match r.status {
            200 => assert!(values.contains(&r.body), "a mixed value"),
            503 => assert!(r.text().contains("<Code>SlowDown</Code>"), "{}", r.text()),
            s => panic!("a read outpaced by overwrites: {s} {}", r.text()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().expect("the writer failed") > 10);
    slow.store(false, Ordering::Relaxed);
    let r = s3_get(&addr, "/churn/k");
    assert_eq!(r.status, 200);
    assert!(values.contains(&r.body));
}

/// Every S3 answer carries `Date`, as S3's do (the sweep saw none), errors too.
#[test]
fn s3_answers_carry_a_date() {
    let c = cluster(&[]);
    let addr = c.addr();
    assert_eq!(s3_put(&addr, "/dated/k", b"v").status, 200);
    for r in [s3_get(&addr, "/dated/k"), s3_get(&addr, "/dated/missing"), s3_get(&addr, "/dated?list-type=2")] {
        let date = r.header("date").unwrap_or_else(|| panic!("no Date: {r:?}"));
        // IMF-fixdate: `Thu, 03 Dec 2026 09:30:00 GMT`
        assert!(date.len() == 29 && date.ends_with(" GMT") && &date[3..5] == ", ", "{date}");
    }
}

/// A GetObject that read the record just before a DELETE took the files found every
/// replica answering 404 and said `500 InternalError` (about one read in 500 here), with
/// every volume healthy: it is the key that is gone, `404 NoSuchKey`.
#[test]
fn a_read_racing_a_delete_gets_the_value_or_no_such_key() {
    let c = cluster(&[]);
    let addr = c.addr();
    let value = vec![b'v'; 64 << 10];
    // the bucket lives on while the key comes and goes (else NoSuchBucket, rightly)
    assert_eq!(s3_put(&addr, "/race/stays", b"x").status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (addr, stop, value) = (addr.clone(), stop.clone(), value.clone());
            thread::spawn(move || {
                let mut client = Client::connect(&addr);
                let (mut whole, mut gone) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let r = client.request("GET", "/race/gone", &[UNSIGNED], b"");
                    match r.status {
                        200 if r.body == value => whole += 1,
                        404 if r.text().contains("<Code>NoSuchKey</Code>") => gone += 1,
                        _ => panic!("a read racing a DELETE: {} {:?}", r.status, r.text()),
                    }
                }
                (whole, gone)
            })
        })
        .collect();
    let began = Instant::now();
    let mut writer = Client::connect(&addr);
    let mut rounds = 0;
    while began.elapsed() < Duration::from_secs(5) {
        assert_eq!(writer.request("PUT", "/race/gone", &[], &value).status, 201);
        assert_eq!(writer.request("DELETE", "/race/gone", &[], b"").status, 204);
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut whole, mut gone) = (0, 0);
    for r in readers {
        let (w, g) = r.join().expect("a reader failed");
        whole += w;
        gone += g;
    }
    assert!(rounds >= 20 && whole > 0 && gone > 0, "{rounds} rounds, {whole} reads whole, {gone} gone");
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[test]
fn a_put_cut_half_way_leaves_the_old_value_whole() {
    let c = cluster(&[]);
    let addr = c.addr();
    let old = pattern(2 << 20, 9);
    assert_eq!(s3_put(&addr, "/cut/key", &old).status, 200);
    for size in [600 << 10, 8 << 20] {
        // the head promises `size` bytes; half of them come, then the socket closes
        let mut s = TcpStream::connect(&addr).unwrap();
        let head = format!(
            "PUT /cut/key HTTP/1.1\r\nHost: mkv\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nContent-Length: {size}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&vec![b'n'; size / 2]).unwrap();
        thread::sleep(Duration::from_millis(200));
        drop(s);
        thread::sleep(Duration::from_millis(300));
        let r = s3_get(&addr, "/cut/key");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body == old, "after a PUT of {size} bytes cut half way: {} bytes, not the old value", r.body.len());
        assert_eq!(r.header("etag"), Some(format!("\"{}\"", md5_hex(&old)).as_str()));
    }
    // aws-chunked inside Transfer-Encoding: chunked (as pyarrow and boto3 over https), cut
    // after a few chunks
    let mut s = TcpStream::connect(&addr).unwrap();
    let head = "PUT /cut/key HTTP/1.1\r\nHost: mkv\r\nContent-Encoding: aws-chunked\r\n\
                Transfer-Encoding: chunked\r\nx-amz-decoded-content-length: 8388608\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    for _ in 0..3 {
        let chunk = format!("100000\r\n{}\r\n", "c".repeat(1 << 20));
        let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
        s.write_all(framed.as_bytes()).unwrap();
    }
    thread::sleep(Duration::from_millis(200));
    drop(s);
    thread::sleep(Duration::from_millis(300));
    assert!(s3_get(&addr, "/cut/key").body == old, "after an aws-chunked PUT cut after 3 MiB");
    // an UploadPart cut half way: no part recorded, none left on the volumes
    let r = request(&addr, "POST", "/cut/mp?uploads", &[UNSIGNED], b"");
    let id = xml_field(&r.text(), "UploadId").to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    let head = format!(
        "PUT /cut/mp?partNumber=1&uploadId={id} HTTP/1.1\r\nHost: mkv\r\n\
         x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nContent-Length: {}\r\n\r\n",
        6 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![b'p'; 3 << 20]).unwrap();
    thread::sleep(Duration::from_millis(200));
    drop(s);
    thread::sleep(Duration::from_millis(300));
    let r = s3_get(&addr, &format!("/cut/mp?uploadId={id}"));
    assert_eq!((r.status, r.text().matches("<Part>").count()), (200, 0), "{r:?}");
    wait_until("the cut PUTs' temporary and part files to go", TIMEOUT, || leftovers(&c).is_empty());
    assert_eq!(request(&addr, "DELETE", &format!("/cut/mp?uploadId={id}"), &[UNSIGNED], b"").status, 204);
    // the key is not left claimed: the next overwrite works
    assert_eq!(s3_put(&addr, "/cut/key", b"new").status, 200);
    assert_eq!(s3_get(&addr, "/cut/key").body, b"new");
}

/// An `aws-chunked` body whose chunks end, framing whole, short of its
/// `x-amz-decoded-content-length`: the client's fault, `400 IncompleteBody`, nothing stored
/// (PutObject small and streamed, and UploadPart). It was `500 InternalError`, which SDKs
/// retry as the server's fault (found from outside by a helper).
#[test]
fn an_aws_chunked_body_shorter_than_its_decoded_length_is_400() {
    let c = cluster(&[]);
    let addr = c.addr();
    let old = pattern(5000, 4);
    assert_eq!(s3_put(&addr, "/short/key", &old).status, 200);
    let r = request(&addr, "POST", "/short/mp?uploads", &[UNSIGNED], b"");
    let id = xml_field(&r.text(), "UploadId").to_string();
    let part = format!("/short/mp?partNumber=1&uploadId={id}");
    for sent in [11usize, 3 << 20] {
        let data = pattern(sent, 5);
        let mut body = Vec::new();
        for piece in data.chunks(1 << 20) {
            body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let declared = (sent + 1).to_string();
        let headers = [
            ("Content-Encoding", "aws-chunked"),
            ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            ("x-amz-decoded-content-length", declared.as_str()),
        ];
        for path in ["/short/key", part.as_str()] {
            let r = request(&addr, "PUT", path, &headers, &body);
            assert_eq!(r.status, 400, "{sent} bytes of {declared} to {path}: {r:?}");
            assert!(r.text().contains("<Code>IncompleteBody</Code>"), "{r:?}");
        }
        assert!(s3_get(&addr, "/short/key").body == old, "after {sent} bytes of {declared}");
    }
    // far shorter than declared (the volumes were asked for the whole length), and a body
    // with no chunk framing at all
    let signed = format!("5;chunk-signature={0}\r\nhello\r\n0;chunk-signature={0}\r\n\r\n", "0".repeat(64));
    for (body, declared) in
        [(signed.as_bytes(), "5000000000"), (signed.as_bytes(), "1000000000000000000"), (b"hello".as_slice(), "5")]
    {
        let headers = [
            ("Content-Encoding", "aws-chunked"),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
            ("x-amz-decoded-content-length", declared),
        ];
        let r = request(&addr, "PUT", "/short/key", &headers, body);
        assert_eq!(r.status, 400, "{declared}: {r:?}");
    }
    assert!(s3_get(&addr, "/short/key").body == old);
    let r = s3_get(&addr, &format!("/short/mp?uploadId={id}"));
    assert_eq!((r.status, r.text().matches("<Part>").count()), (200, 0), "{r:?}");
    wait_until("the short PUTs' temporary and part files to go", TIMEOUT, || leftovers(&c).is_empty());
}

/// A part still arriving when its upload is aborted or completed (boto3 and the AWS CLI
/// abort after one part failed while others are in flight): it is refused, and its files do
/// not outlive the upload (they were left for good: a part of no upload, never deleted).
#[test]
fn a_part_arriving_after_its_upload_ended_leaves_nothing() {
    let c = cluster(&[]);
    let addr = c.addr();
    for end in ["abort", "complete"] {
        let r = request(&addr, "POST", "/late/mp?uploads", &[UNSIGNED], b"");
        let id = xml_field(&r.text(), "UploadId").to_string();
        let first = pattern(5 << 20, 3);
        let r = s3_put(&addr, &format!("/late/mp?partNumber=1&uploadId={id}"), &first);
        assert_eq!(r.status, 200, "{r:?}");
        let tag = r.header("etag").unwrap().to_string();
        // part 2: half its body now, the rest once the upload has ended
        let size = 2 << 20;
        let mut s = TcpStream::connect(&addr).unwrap();
        let head = format!(
            "PUT /late/mp?partNumber=2&uploadId={id} HTTP/1.1\r\nHost: mkv\r\n\
             x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nContent-Length: {size}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&vec![b'l'; size / 2]).unwrap();
        thread::sleep(Duration::from_millis(200));
        let r = if end == "abort" {
            request(&addr, "DELETE", &format!("/late/mp?uploadId={id}"), &[UNSIGNED], b"")
        } else {
            let doc = format!(
                "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{tag}</ETag></Part>\
                 </CompleteMultipartUpload>"
            );
            request(&addr, "POST", &format!("/late/mp?uploadId={id}"), &[UNSIGNED], doc.as_bytes())
        };
        assert!(r.status == 200 || r.status == 204, "{end}: {r:?}");
        s.write_all(&vec![b'l'; size / 2]).unwrap();
        let answer = read_until(&mut s, |t| t.contains("</Error>") || t.contains("ETag"));
        assert!(answer.starts_with("HTTP/1.1 404"), "{end}: the late part: {answer}");
        assert!(answer.contains("NoSuchUpload"), "{end}: the late part: {answer}");
        assert_eq!(leftovers(&c), Vec::<String>::new(), "{end}: files left");
    }
    assert!(s3_get(&addr, "/late/mp").body == pattern(5 << 20, 3), "the completed object");
}

/// A GET or HEAD that carries a body (legal HTTP, if odd): the body is read and dropped, not
/// parsed as the next request on the connection. It was, for every answer streamed out
/// (GetObject 200/206/304, a native listing): `JUNK!GET …` came back `405`, a body that is
/// itself a request was answered as one (request smuggling behind a proxy that forwards it).
#[test]
fn a_body_sent_with_a_get_is_not_taken_for_the_next_request() {
    let c = cluster(&[]);
    let addr = c.addr();
    assert_eq!(s3_put(&addr, "/getbody/obj", b"hello world").status, 200);
    let next =
        "GET /getbody/obj HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nConnection: close\r\n\r\n";
    let smuggled = "GET /getbody/obj HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\r\n";
    let cases = [
        ("GET", "/getbody/obj", "", 200),
        ("GET", "/getbody/obj", "Range: bytes=0-4\r\n", 206),
        ("GET", "/getbody/obj", "If-None-Match: *\r\n", 304),
        ("HEAD", "/getbody/obj", "", 200),
        ("GET", "/getbody?list-type=2", "", 200),
        ("GET", "/getbody/?list", "", 200),
    ];
    for (method, path, extra, status) in cases {
        for body in ["JUNK!", smuggled] {
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n{extra}\
                 Content-Length: {}\r\n\r\n{body}{next}",
                body.len()
            );
            let r = raw(&addr, head.as_bytes(), Duration::from_secs(5));
            let text = r.text();
            let statuses: Vec<&str> = text.match_indices("HTTP/1.1 ").map(|(i, _)| &text[i + 9..i + 12]).collect();
            let what = format!("{method} {path} {extra:?} with a {} byte body", body.len());
            assert_eq!(statuses, [status.to_string().as_str(), "200"], "{what}: {text}");
            assert!(r.closed, "{what}: the connection closes after the second answer");
            assert!(text.ends_with("hello world"), "{what}: {text}");
        }
    }
    // a small chunked body the same (read and dropped up to 64 KiB, as after an early answer)
    let head = format!(
        "GET /getbody/obj HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nJUNK!\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n{next}",
        smuggled.len()
    );
    let r = raw(&addr, head.as_bytes(), Duration::from_secs(5));
    let text = r.text();
    assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
    assert!(r.status() == Some(200) && r.closed && text.ends_with("hello world"), "{text}");
}

/// GetObjects of one key take turns over its replicas (each GET of a hot key used to read
/// the first live one): one replica altered on disk (same size) shows in about a third of
/// the reads, the others in the rest. (A test of turns, not a case verify would miss: a
/// replica altered so stays unnoticed only until `verify -deep`.)
#[test]
fn get_object_reads_take_turns_over_the_replicas() {
    let c = cluster(&["-subvolumes", "1"]);
    let addr = c.addr();
    let value = pattern(300 << 10, 5);
    assert_eq!(s3_put(&addr, "/spread/key", &value).status, 200);
    let files = Layout::of(&c, 3, 1).files("/spread/key");
    let (i, path) = &files[1];
    let altered = pattern(300 << 10, 6);
    fs::write(c.volumes[*i].dir().join(path), &altered).unwrap();
    let (mut seen_altered, mut seen_value) = (0, 0);
    for _ in 0..30 {
        let r = s3_get(&addr, "/spread/key");
        assert_eq!(r.status, 200, "{r:?}");
        if r.body == altered {
            seen_altered += 1;
        } else if r.body == value {
            seen_value += 1;
        }
    }
    // each thread takes its own turns (a connection lands on either): a third of its reads,
    // give or take one, go to each replica
    assert!((8..=12).contains(&seen_altered), "{seen_altered} of 30 reads of the altered replica");
    assert_eq!(seen_altered + seen_value, 30);
}

/// An upload aborted while a volume holding its parts is down: the parts' files on that
/// volume go once it is back, without a restart or a verify (they stayed for good, and the
/// log said `mkv verify -repair` would delete them, which it never does).
#[test]
fn parts_kept_by_a_volume_down_at_abort_are_deleted_when_it_is_back() {
    let mut c = cluster(&["-subvolumes", "1"]);
    let addr = c.addr();
    let r = request(&addr, "POST", "/down/mp?uploads", &[UNSIGNED], b"");
    let id = xml_field(&r.text(), "UploadId").to_string();
    for n in 1..=2 {
        let r = s3_put(&addr, &format!("/down/mp?partNumber={n}&uploadId={id}"), &pattern(1 << 20, n as u8));
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(leftovers(&c).len(), 6, "two parts on three volumes");
    c.volumes[0].stop();
    let r = request(&addr, "DELETE", &format!("/down/mp?uploadId={id}"), &[UNSIGNED], b"");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(request(&addr, "GET", &format!("/down/mp?uploadId={id}"), &[UNSIGNED], b"").status, 404);
    c.volumes[0].start();
    wait_until("the down volume's part files deleted", TIMEOUT, || leftovers(&c).is_empty());
}

/// A Complete whose part files are gone from every volume (a snapshot restored, a volume
/// emptied) while every volume answers was `503 ServiceUnavailable`, which SDKs retry for
/// ever: it is a final `400 InvalidPart`, and the upload stays for an Abort.
#[test]
fn a_complete_whose_parts_are_gone_from_every_volume_is_invalid_part() {
    let c = cluster(&["-subvolumes", "1"]);
    let addr = c.addr();
    let r = request(&addr, "POST", "/lost/mp?uploads", &[UNSIGNED], b"");
    let id = xml_field(&r.text(), "UploadId").to_string();
    let r = s3_put(&addr, &format!("/lost/mp?partNumber=1&uploadId={id}"), &pattern(1 << 20, 1));
    let etag = r.header("etag").unwrap().to_string();
    for v in &c.volumes {
        for f in v.files().iter().filter(|f| f.contains("_parts/")) {
            std::fs::remove_file(v.dir().join(f)).unwrap();
        }
    }
    let doc = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    );
    let r = request(&addr, "POST", &format!("/lost/mp?uploadId={id}"), &[UNSIGNED], doc.as_bytes());
    assert_eq!((r.status, xml_field(&r.text(), "Code")), (400, "InvalidPart"), "{r:?}");
    assert_eq!(request(&addr, "GET", &format!("/lost/mp?uploadId={id}"), &[UNSIGNED], b"").status, 200);
    assert_eq!(s3_get(&addr, "/lost/mp").status, 404);
}

/// DeleteObject with a volume down that holds a replica answered `503`, which `aws s3 rm`,
/// rclone and boto3 retry and then give up on, though S3 always takes a delete. The object
/// is gone at once (GET 404, not listed, DeleteObjects too) and its files on the volume that
/// was down are deleted by the master once it is back, as a failed PUT's are.
#[test]
fn delete_object_with_a_volume_down_is_taken_and_finished_when_it_is_back() {
    let mut c = cluster(&["-subvolumes", "1"]);
    let addr = c.addr();
    for k in ["one", "two", "kept"] {
        assert_eq!(s3_put(&addr, &format!("/gone/{k}"), k.as_bytes()).status, 200);
    }
    c.volumes[0].stop();
    let r = request(&addr, "DELETE", "/gone/one", &[UNSIGNED], b"");
    assert_eq!(r.status, 204, "{r:?}");
    let doc = "<Delete><Object><Key>two</Key></Object></Delete>";
    let r =
        request(&addr, "POST", "/gone?delete", &[UNSIGNED, ("content-md5", &md5_b64(doc.as_bytes()))], doc.as_bytes());
    assert!(r.status == 200 && r.text().contains("<Deleted><Key>two</Key>"), "{r:?}");
    for k in ["one", "two"] {
        assert_eq!(s3_get(&addr, &format!("/gone/{k}")).status, 404, "{k}");
        assert_eq!(get(&addr, &format!("/gone/{k}")).status, 404, "{k}");
    }
    let listed = s3_get(&addr, "/gone?list-type=2").text();
    assert!(
        listed.contains("<Key>kept</Key>") && !listed.contains("<Key>one</Key>") && !listed.contains("<Key>two</Key>"),
        "{listed}"
    );
    assert_eq!(s3_get(&addr, "/gone/kept").body, b"kept");
    c.volumes[0].start();
    // the two keys' files (and any marker) on every volume go; the kept one's stay
    let kept = common::layout::key_path("/gone/kept");
    let named = |f: &String| !f.ends_with(kept.rsplit('/').next().unwrap());
    wait_until("the deleted objects' files are gone", Duration::from_secs(15), || {
        c.volumes.iter().all(|v| !v.files().iter().any(named))
            && get(&addr, "/?unlinked").text() == r#"{"next":"","keys":[]}"#
    });
    assert!(
        c.volumes.iter().all(|v| v.files().len() == 1),
        "{:?}",
        c.volumes.iter().map(|v| v.files()).collect::<Vec<_>>()
    );
}

/// ListMultipartUploads gives the uploads of one key in the order they were started, as S3
/// does; they came in the order of their ids, which were random. S3 also pages them by ids
/// "lexicographically greater" than the marker: ids that sort as they were made keep both.
#[test]
fn uploads_of_one_key_are_listed_in_the_order_they_were_started() {
    let c = cluster(&[]);
    let addr = c.addr();
    let ids: Vec<String> = (0..8)
        .map(|i| {
            if i == 4 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let r = request(&addr, "POST", "/order/same?uploads", &[UNSIGNED], b"");
            xml_field(&r.text(), "UploadId").to_string()
        })
        .collect();
    let listed = |query: &str| -> Vec<String> {
        let text = s3_get(&addr, &format!("/order?uploads{query}")).text();
        text.split("<UploadId>").skip(1).map(|s| s[..s.find('<').unwrap()].to_string()).collect()
    };
    assert_eq!(listed(""), ids);
    // pages of three, each after the last one given
    let mut paged = Vec::new();
    let mut marker = String::new();
    loop {
        let page = listed(&format!("&max-uploads=3&key-marker=same&upload-id-marker={marker}"));
        let page = if marker.is_empty() { listed("&max-uploads=3") } else { page };
        if page.is_empty() {
            break;
        }
        marker = page.last().unwrap().clone();
        paged.extend(page);
    }
    assert_eq!(paged, ids);
}

/// A browser-form upload (S3's PostObject: `POST /bucket`, a `multipart/form-data` body
/// with the policy and its signature in the form, no S3 header) was taken for a native
/// request and answered `405` in plain text; S3.md has what mkv does not implement answer
/// `501 NotImplemented`. A bare POST stays native (`405`).
#[test]
fn a_browser_form_upload_is_s3s_not_implemented() {
    let c = cluster(&[]);
    let addr = c.addr();
    let form = "--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n--XyZ\r\n\
                Content-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nbody\r\n--XyZ--\r\n";
    let r = request(&addr, "POST", "/forms", &[("content-type", "multipart/form-data; boundary=XyZ")], form.as_bytes());
    assert_eq!((r.status, xml_field(&r.text(), "Code")), (501, "NotImplemented"), "{r:?}");
    assert_eq!(request(&addr, "POST", "/forms/k", &[], b"x").status, 405);
    assert_eq!(s3_get(&addr, "/forms/k").status, 404, "nothing stored");
}

/// An overwrite that failed on a hung volume leaves its replacement pending until that
/// volume answers; a DeleteObject meanwhile tried to settle it first and answered `503` for
/// as long as the volume hung. An unconditional delete takes the replacement with it.
#[test]
fn delete_object_after_an_overwrite_failed_on_a_hung_volume_is_taken() {
    let c = cluster(&["-subvolumes", "1"]);
    let addr = c.addr();
    assert_eq!(s3_put(&addr, "/pend/a", b"old").status, 200);
    c.volumes[1].pause();
    let r = s3_put(&addr, "/pend/a", &pattern(1 << 20, 4));
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(s3_get(&addr, "/pend/a").body, b"old", "the old value stays");
    let r = request(&addr, "DELETE", "/pend/a", &[UNSIGNED], b"");
    c.volumes[1].resume();
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(s3_get(&addr, "/pend/a").status, 404);
    let path = common::layout::key_path("/pend/a");
    let name = path.rsplit('/').next().unwrap().to_string();
    wait_until("the object's files are gone", Duration::from_secs(15), || {
        c.volumes.iter().all(|v| !v.files().iter().any(|f| f.ends_with(&name)))
            && get(&addr, "/?unlinked").text() == r#"{"next":"","keys":[]}"#
    });
}

/// An overwrite whose volume died at its MOVE leaves the new value's temporary file there;
/// a delete of the key meanwhile took the pending replacement with it and forgot that file,
/// which stayed for good once the volume was back (an orphan to verify). The temporary
/// files are now deleted with the key's, by the master, once the volume is back.
#[test]
fn a_delete_after_an_overwrite_died_at_its_move_leaves_no_temporary_file() {
    let (vols, dying, master) = dying_first_volume(b"MOVE ");
    let addr = master.addr();
    assert_eq!(s3_put(&addr, "/died/k", b"old").status, 200);
    dying.arm();
    let r = s3_put(&addr, "/died/k", &pattern(100 << 10, 5));
    assert_eq!(r.status, 503, "{r:?}");
    assert!(vols[0].files().iter().any(|f| f.contains("_tmp/")), "the new value's file waits: {:?}", vols[0].files());
    let r = request(&addr, "DELETE", "/died/k", &[UNSIGNED], b"");
    assert_eq!(r.status, 204, "{r:?}");
    assert!(dying.dead(), "the delete came while the volume was dead");
    wait_until("every file of the key to go", Duration::from_secs(20), || {
        vols.iter().all(|v| v.files().is_empty()) && get(&addr, "/?unlinked").text() == r#"{"next":"","keys":[]}"#
    });
}

/// A delete that reaches no volume of the key (all of them down) cannot leave the unlink
/// marker that makes a `rebuild` restore the key unlinked: taken (`204`), the object came
/// back live from a rebuild. It is `503` (clients retry), and the master still ends it
/// once a volume is back.
#[test]
fn delete_object_reaching_no_volume_of_the_key_is_refused() {
    let mut c = cluster(&["-replicas", "1", "-subvolumes", "1"]);
    let addr = c.addr();
    assert_eq!(s3_put(&addr, "/alone/k", b"value").status, 200);
    let holder = get(&addr, "/alone/k").header("key-volumes").unwrap().to_string();
    let i = c.volumes.iter().position(|v| v.addr() == holder).unwrap();
    c.volumes[i].stop();
    let r = request(&addr, "DELETE", "/alone/k", &[UNSIGNED], b"");
    assert_eq!((r.status, xml_field(&r.text(), "Code")), (503, "ServiceUnavailable"), "{r:?}");
    c.volumes[i].start();
    let name = common::layout::key_path("/alone/k").rsplit('/').next().unwrap().to_string();
    wait_until("the master ends the delete", Duration::from_secs(15), || {
        !c.volumes[i].files().iter().any(|f| f.ends_with(&name))
            && get(&addr, "/?unlinked").text() == r#"{"next":"","keys":[]}"#
    });
    assert_eq!(request(&addr, "DELETE", "/alone/k", &[UNSIGNED], b"").status, 204);
}

/// With `-md5sum=false` a value's MD5 is neither computed nor stored (the master's CPU is
/// what it saves). A Complete hashed the whole object all the same, a second MD5 pass over
/// every byte for nothing: its record kept one. Its ETag (from the parts') is unchanged.
#[test]
fn a_complete_under_md5sum_false_stores_no_digest() {
    let c = cluster(&["-md5sum=false"]);
    let addr = c.addr();
    let r = request(&addr, "POST", "/plain/mp?uploads", &[UNSIGNED], b"");
    let id = xml_field(&r.text(), "UploadId").to_string();
    let body = pattern(1 << 20, 3);
    let r = s3_put(&addr, &format!("/plain/mp?partNumber=1&uploadId={id}"), &body);
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", md5_hex(&body)), "a part's ETag is its MD5 all the same");
    let doc = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    );
    let r = request(&addr, "POST", &format!("/plain/mp?uploadId={id}"), &[UNSIGNED], doc.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(&addr, "/plain/mp");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("content-md5"), None, "{r:?}");
    let r = s3_get(&addr, "/plain/mp");
    assert!(r.status == 200 && r.body == body, "{} {} bytes", r.status, r.body.len());
    assert!(r.header("etag").is_some_and(|t| t.ends_with("-1\"")), "{r:?}");
}

/// A part uploaded again replaces the first upload's files. Those on a volume down at that
/// moment stayed for good (the delete's error was dropped); they go once it is back.
#[test]
fn a_replaced_parts_files_kept_by_a_volume_down_are_deleted_when_it_is_back() {
    let mut c = cluster(&["-subvolumes", "1"]);
    let r = request(&c.addr(), "POST", "/again/mp?uploads", &[UNSIGNED], b"");
    let id = xml_field(&r.text(), "UploadId").to_string();
    let part = format!("/again/mp?partNumber=1&uploadId={id}");
    assert_eq!(s3_put(&c.addr(), &part, &pattern(1 << 20, 1)).status, 200);
    assert_eq!(leftovers(&c).len(), 3, "one part on three volumes");
    // the part goes again while volume 0 is down: onto the other two, the master's volumes
    // now (a part is never written to fewer replicas than placed)
    c.volumes[0].stop();
    let others: Vec<String> = c.volumes[1..].iter().map(Volume::addr).collect();
    c.master.restart_with(&others, &["-threads", "2", "-subvolumes", "1", "-replicas", "2"]);
    let r = s3_put(&c.addr(), &part, &pattern(1 << 20, 2));
    assert_eq!(r.status, 200, "{r:?}");
    c.volumes[0].start();
    wait_until("the replaced part's file deleted from the volume that was down", TIMEOUT, || {
        !c.volumes[0].files().iter().any(|f| f.contains("_parts/"))
    });
    assert_eq!(leftovers(&c).len(), 2, "the new part on the two volumes");
    let r = s3_get(&c.addr(), &format!("/again/mp?uploadId={id}"));
    assert_eq!(r.text().matches("<Part>").count(), 1, "{r:?}");
}

/// A PutObject with 120 user metadata entries (boto3 sends a header each; 600 bytes of
/// the 2 KiB allowed) is stored and its metadata answered; it was `431` past 64 headers.
#[test]
fn many_user_metadata_headers_are_kept() {
    let c = cluster(&[]);
    let addr = c.addr();
    assert_eq!(s3_put(&addr, "/many", b"").status, 200);
    let names: Vec<String> = (0..120).map(|i| format!("x-amz-meta-k{i:03}")).collect();
    let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    headers.push(UNSIGNED);
    let r = request(&addr, "PUT", "/many/k", &headers, b"value");
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(&addr, "HEAD", "/many/k", &[UNSIGNED], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let kept = r.headers.iter().filter(|(n, v)| n.starts_with("x-amz-meta-k") && v == "v").count();
    assert_eq!(kept, 120, "{r:?}");
}

/// A user metadata value outside US-ASCII is answered as S3 answers it, RFC 2047
/// (`=?UTF-8?B?…?=`): raw UTF-8 in a header is read as Latin-1 by clients (boto3 gave
/// `hÃ©llo`). An ASCII value, and one already so encoded, come back as sent.
#[test]
fn non_ascii_user_metadata_is_answered_rfc_2047_encoded() {
    let c = cluster(&[]);
    let addr = c.addr();
    let headers = [
        ("x-amz-meta-uni", "héllo wörld"),
        ("x-amz-meta-plain", "a b"),
        ("x-amz-meta-enc", "=?UTF-8?B?w6k=?="),
        UNSIGNED,
    ];
    assert_eq!(request(&addr, "PUT", "/meta/k", &headers, b"value").status, 200);
    for method in ["HEAD", "GET"] {
        let r = request(&addr, method, "/meta/k", &[UNSIGNED], b"");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-amz-meta-uni"), Some("=?UTF-8?B?aMOpbGxvIHfDtnJsZA==?="), "{r:?}");
        assert_eq!(r.header("x-amz-meta-plain"), Some("a b"), "{r:?}");
        assert_eq!(r.header("x-amz-meta-enc"), Some("=?UTF-8?B?w6k=?="), "{r:?}");
    }
}

/// S3's conditional writes hold beyond PutObject: `If-None-Match`/`If-Match` on
/// CompleteMultipartUpload and on CopyObject's destination, `If-Match` on DeleteObject and
/// an `<ETag>` in DeleteObjects. They were ignored: the write or delete happened anyway.
#[test]
fn conditional_writes_hold_for_copies_completes_and_deletes() {
    let c = cluster(&[]);
    let addr = c.addr();
    let tag = |v: &[u8]| format!("\"{}\"", md5_hex(v));
    assert_eq!(s3_put(&addr, "/cond", b"").status, 200);
    for (k, v) in [("/cond/a", b"one"), ("/cond/b", b"two"), ("/cond/c", b"six")] {
        assert_eq!(s3_put(&addr, k, v).status, 200);
    }
    // CopyObject's destination
    let copy =
        |cond: (&str, &str)| request(&addr, "PUT", "/cond/b", &[UNSIGNED, ("x-amz-copy-source", "/cond/a"), cond], b"");
    let r = copy(("If-None-Match", "*"));
    assert_eq!(r.status, 412, "{r:?}");
    assert!(r.text().contains("<Code>PreconditionFailed</Code>"), "{r:?}");
    assert_eq!(copy(("If-Match", "\"0123\"")).status, 412);
    assert_eq!(s3_get(&addr, "/cond/b").body, b"two");
    assert_eq!(copy(("If-Match", &tag(b"two"))).status, 200);
    assert_eq!(s3_get(&addr, "/cond/b").body, b"one");
    // DeleteObject: a wrong ETag keeps the object; a missing object fails `If-Match` (AWS
    // since 2025-09: `*` is how a client asks "only if it exists"), and without one is 204
    let delete = |k: &str, etag: &str| request(&addr, "DELETE", k, &[UNSIGNED, ("If-Match", etag)], b"").status;
    assert_eq!(delete("/cond/a", "\"0123\""), 412);
    assert_eq!(s3_get(&addr, "/cond/a").status, 200);
    assert_eq!(delete("/cond/a", &tag(b"one")), 204);
    assert_eq!(s3_get(&addr, "/cond/a").status, 404);
    let r = request(&addr, "DELETE", "/cond/a", &[UNSIGNED, ("If-Match", &tag(b"one"))], b"");
    assert_eq!((r.status, xml_field(&r.text(), "Code")), (404, "NoSuchKey"), "{r:?}");
    assert_eq!(delete("/cond/a", "*"), 404);
    assert_eq!(request(&addr, "DELETE", "/cond/a", &[UNSIGNED], b"").status, 204);
    // DeleteObjects: per object
    let doc = format!(
        "<Delete><Object><Key>b</Key><ETag>\"0123\"</ETag></Object><Object><Key>c</Key><ETag>{}</ETag></Object></Delete>",
        tag(b"six")
    );
    let r = request(&addr, "POST", "/cond?delete", &[UNSIGNED], doc.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text();
    assert!(text.contains("<Error><Key>b</Key><Code>PreconditionFailed</Code>"), "{text}");
    assert!(text.contains("<Deleted><Key>c</Key></Deleted>"), "{text}");
    assert_eq!(s3_get(&addr, "/cond/b").status, 200);
    assert_eq!(s3_get(&addr, "/cond/c").status, 404);
    // CompleteMultipartUpload onto an existing key: refused, the upload stays to be
    // completed again
    let r = request(&addr, "POST", "/cond/b?uploads", &[UNSIGNED], b"");
    let id = xml_field(&r.text(), "UploadId").to_string();
    let r = s3_put(&addr, &format!("/cond/b?partNumber=1&uploadId={id}"), b"seven");
    let doc = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        r.header("etag").unwrap()
    );
    let complete = |cond: &[(&str, &str)]| {
        let mut headers = vec![UNSIGNED];
        headers.extend_from_slice(cond);
        request(&addr, "POST", &format!("/cond/b?uploadId={id}"), &headers, doc.as_bytes())
    };
    let r = complete(&[("If-None-Match", "*")]);
    assert_eq!(r.status, 412, "{r:?}");
    assert_eq!(s3_get(&addr, "/cond/b").body, b"one");
    assert_eq!(complete(&[("If-Match", &tag(b"one"))]).status, 200);
    assert_eq!(s3_get(&addr, "/cond/b").body, b"seven");
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

/// A conditional write that meets another write of its key in flight answers `409
/// ConditionalRequestConflict` (clients retry it): its condition was checked against the
/// record that write is replacing. It used to wait that write out and go ahead, deleting
/// the new value its `If-Match` never saw.
#[test]
fn a_conditional_write_meeting_a_write_in_flight_is_a_409() {
    let c = cluster(&[]);
    let addr = c.addr();
    assert_eq!(s3_put(&addr, "/race", b"").status, 200);
    assert_eq!(s3_put(&addr, "/race/k", b"old").status, 200);
    let old = format!("\"{}\"", md5_hex(b"old"));
    let new = pattern(2 << 20, 3);
    // a PutObject of the key, half sent: it holds the key while its body comes
    let mut s = TcpStream::connect(&addr).unwrap();
    let head = encode_request("PUT", "/race/k", &[UNSIGNED, ("Content-Length", &new.len().to_string())], b"");
    s.write_all(&head).unwrap();
    s.write_all(&new[..1 << 20]).unwrap();
    thread::sleep(Duration::from_millis(300));
    let r = request(&addr, "DELETE", "/race/k", &[UNSIGNED, ("If-Match", &old)], b"");
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.text().contains("<Code>ConditionalRequestConflict</Code>"), "{r:?}");
    s.write_all(&new[1 << 20..]).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let answer = read_until(&mut s, |t| t.contains("\r\n\r\n"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(s3_get(&addr, "/race/k").body == new, "the new value is kept");
}

/// A conditional CopyObject whose destination is written while the copy opens its source:
/// the condition was checked before the copy held the key, so the copy went on over a value
/// its `If-None-Match: *` never saw. Now the condition is checked under the copy's claim of
/// the key: the PutObject waits for the copy and replaces its result, never the reverse.
#[test]
fn a_copys_condition_holds_while_its_source_is_opened() {
    let vol = Volume::new();
    let src_file = common::layout::key_path("/ccp/src");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // the volume takes 1.5 s to answer a GET of the source's file
    let slow = proxy(listener, vol.addr(), 64 << 10, move |sent| {
        if sent.starts_with(b"GET ") && String::from_utf8_lossy(sent).contains(&src_file) {
            thread::sleep(Duration::from_millis(1500));
        }
    });
    let extra = ["-replicas", "1", "-subvolumes", "1", "-threads", "2", "-voltimeout", "5s"];
    let master = Master::start_on(&[slow], &extra);
    let addr = master.addr();
    let r = s3_put(&addr, "/ccp/src", b"copied");
    assert_eq!(r.status, 200, "{r:?}");
    let began = Instant::now();
    let copy = {
        let addr = addr.clone();
        thread::spawn(move || {
            let h = [UNSIGNED, ("x-amz-copy-source", "/ccp/src"), ("If-None-Match", "*")];
            let r = request(&addr, "PUT", "/ccp/dst", &h, b"");
            (r, began.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(300));
    let put = s3_put(&addr, "/ccp/dst", b"written");
    let put_at = began.elapsed();
    let (copy, copy_at) = copy.join().unwrap();
    assert_eq!(put.status, 200, "{put:?}");
    match copy.status {
        // the copy held the key first: the PutObject came after it and replaced it
        200 => assert!(put_at > copy_at, "the PutObject ({put_at:?}) answered before the copy ({copy_at:?})"),
        412 => {}
        _ => panic!("{copy:?}"),
    }
    assert_eq!(s3_get(&addr, "/ccp/dst").body, b"written");
}

/// A GetObject whose replica dies mid-stream goes on from another replica, from the byte
/// it stopped at: the client gets the whole object (it got a short body and a close).
#[test]
fn get_object_goes_on_from_another_replica_when_its_replica_dies_mid_stream() {
    let mut c = cluster(&["-subvolumes", "1"]);
    let addr = c.addr();
    assert_eq!(s3_put(&addr, "/resume", b"").status, 200);
    let data = pattern(48 << 20, 9);
    assert_eq!(s3_put(&addr, "/resume/big", &data).status, 200);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(&encode_request("GET", "/resume/big", &[UNSIGNED, ("Connection", "close")], b"")).unwrap();
    // the head and a little of the body, then no more reading for now: the master's
    // buffers fill, and the volume it reads from is left in the middle of sending
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while got.len() < (1 << 20) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got[..got.len().min(300)]));
        got.extend_from_slice(&buf[..n]);
    }
    let mut reading = None;
    wait_until("a volume with bytes queued to the master", TIMEOUT, || {
        reading = c.volumes.iter().position(|v| sending(&v.addr()));
        reading.is_some()
    });
    c.volumes[reading.unwrap()].stop();
    s.read_to_end(&mut got).unwrap();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = &got[head_end..];
    assert_eq!(body.len(), data.len(), "the body's length ({head})");
    assert!(body == data, "the body differs from the object");
}

/// A CopyObject whose source replica dies mid-copy goes on from the source's other replica,
/// from the byte it stopped at: the copy is whole (it was a `500`).
#[test]
fn a_copy_goes_on_from_another_replica_when_its_source_replica_dies_mid_stream() {
    // four volumes, two replicas: a source and a destination on none of the same volumes
    let mut c = Cluster::new(4, &["-threads", "2", "-replicas", "2", "-subvolumes", "1", "-voltimeout", "10s"]);
    let vols: Vec<String> = c.volumes.iter().map(Volume::addr).collect();
    let layout = Layout::of(&c, 2, 1);
    let src = "/rcopy/src";
    let on_src = layout.replicas(src);
    let dst = (0..)
        .map(|i| format!("/rcopy/dst{i}"))
        .find(|k| layout.replicas(k).iter().all(|v| !on_src.contains(v)))
        .unwrap();
    let addr = c.addr();
    let data = pattern(48 << 20, 5);
    assert_eq!(s3_put(&addr, src, &data).status, 200);
    // the destination's volumes hold still: the copy stops with the source mid-send
    let dst_vols: Vec<usize> =
        layout.replicas(&dst).iter().map(|v| vols.iter().position(|a| a == v).unwrap()).collect();
    for &i in &dst_vols {
        c.volumes[i].pause();
    }
    let copy = {
        let (addr, dst) = (addr.clone(), dst.clone());
        thread::spawn(move || request(&addr, "PUT", &dst, &[UNSIGNED, ("x-amz-copy-source", src)], b""))
    };
    let mut reading = None;
    wait_until("a source volume with bytes queued to the master", TIMEOUT, || {
        reading = (0..vols.len()).find(|&i| on_src.contains(&vols[i]) && sending(&vols[i]));
        reading.is_some()
    });
    c.volumes[reading.unwrap()].stop();
    for &i in &dst_vols {
        c.volumes[i].resume();
    }
    let r = copy.join().unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(s3_get(&addr, &dst).body == data, "the copy differs from its source");
}

/// Whether a socket of the server at `addr` (`host:port`) has bytes queued to send.
fn sending(addr: &str) -> bool {
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        fs::read_to_string(table).unwrap_or_default().lines().skip(1).any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            let tx = f.get(4).and_then(|q| q.split(':').next()).and_then(|t| u64::from_str_radix(t, 16).ok());
            local_port == Some(port) && tx.is_some_and(|t| t > 0)
        })
    })
}

#[test]
fn a_multipart_upload_survives_a_master_restart() {
    let mut c = cluster(&[]);
    assert_eq!(request(&c.addr(), "PUT", "/mpu", &[UNSIGNED], b"").status, 200);
    let r = request(&c.addr(), "POST", "/mpu/restarted?uploads", &[UNSIGNED], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let id = xml_field(&r.text(), "UploadId").to_string();
    let parts = [pattern(5 << 20, 1), pattern(3 << 20, 2)];
    let mut etags = Vec::new();
    for (n, data) in parts.iter().enumerate() {
        let r = s3_put(&c.addr(), &format!("/mpu/restarted?partNumber={}&uploadId={id}", n + 1), data);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("etag").unwrap(), format!("\"{}\"", md5_hex(data)));
        etags.push(r.header("etag").unwrap().to_string());
    }
    c.master.restart();
    let addr = c.addr();
    let r = s3_get(&addr, &format!("/mpu/restarted?uploadId={id}"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text().matches("<Part>").count(), 2, "{r:?}");
    let r = s3_get(&addr, "/mpu?uploads");
    assert_eq!(xml_field(&r.text(), "UploadId"), id, "{r:?}");
    let doc = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part>\
         <Part><PartNumber>2</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        etags[0], etags[1]
    );
    let r = request(&addr, "POST", &format!("/mpu/restarted?uploadId={id}"), &[UNSIGNED], doc.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    let digests: Vec<u8> = parts.iter().flat_map(|p| <md5::Md5 as md5::Digest>::digest(p).to_vec()).collect();
    let want = format!("\"{}-2\"", md5_hex(&digests));
    assert_eq!(xml_field(&r.text(), "ETag").replace("&quot;", "\""), want, "{r:?}");
    let r = s3_get(&addr, "/mpu/restarted");
    assert_eq!(r.status, 200);
    assert!(r.body == parts.concat(), "the completed object differs");
    assert_eq!(r.header("etag"), Some(want.as_str()));
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

/// An UploadPart cut by a kill -9 after some volumes stored the part's file but before the
/// part was recorded: the files go once the master is back (they stayed for good, and the
/// Abort that followed left them behind: S3.md's "Abort and Complete leave no part file
/// behind"); a part uploaded after the restart, and the upload itself, are untouched.
#[test]
fn the_files_of_a_part_cut_by_a_kill_are_deleted_after_the_restart() {
    let mut c = cluster(&["-subvolumes", "1", "-voltimeout", "30s"]);
    let addr = c.addr();
    let r = request(&addr, "POST", "/cutpart/mp?uploads", &[UNSIGNED], b"");
    let id = xml_field(&r.text(), "UploadId").to_string();
    // the first volume takes the part's body and never answers: the other two store it
    c.volumes[0].pause();
    let cut = {
        let (addr, path) = (addr.clone(), format!("/cutpart/mp?partNumber=1&uploadId={id}"));
        thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            let _ = s.write_all(&encode_request("PUT", &path, &[UNSIGNED], &pattern(1 << 20, 1)));
            let _ = s.read(&mut [0u8; 1024]);
        })
    };
    wait_until("two volumes to store the part", TIMEOUT, || leftovers(&c).len() == 2);
    c.master.kill9();
    c.volumes[0].resume();
    cut.join().unwrap();
    c.master.restart();
    let addr = c.addr();
    wait_until("the cut part's files to go", TIMEOUT, || leftovers(&c).is_empty());
    let r = s3_get(&addr, &format!("/cutpart/mp?uploadId={id}"));
    assert_eq!(r.status, 200, "the upload is still there: {r:?}");
    assert_eq!(r.text().matches("<Part>").count(), 0, "{r:?}");
    let data = pattern(1 << 20, 2);
    let r = s3_put(&addr, &format!("/cutpart/mp?partNumber=1&uploadId={id}"), &data);
    assert_eq!(r.status, 200, "{r:?}");
    let doc = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        r.header("etag").unwrap()
    );
    let r = request(&addr, "POST", &format!("/cutpart/mp?uploadId={id}"), &[UNSIGNED], doc.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    assert!(s3_get(&addr, "/cutpart/mp").body == data, "the completed object differs");
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

/// ListParts with max-parts=0 is an empty page that is not truncated (it said truncated,
/// with no marker to go on from: a client following the pages could not move on).
#[test]
fn list_parts_of_zero_parts_is_not_truncated() {
    let c = cluster(&[]);
    let addr = c.addr();
    let (id, _) = one_part_upload(&addr, "/zeroparts/k", b"abc");
    let r = s3_get(&addr, &format!("/zeroparts/k?uploadId={id}&max-parts=0"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(xml_field(&r.text(), "IsTruncated"), "false", "{r:?}");
    assert!(!r.text().contains("<Part>") && !r.text().contains("NextPartNumberMarker"), "{r:?}");
    let r = s3_get(&addr, &format!("/zeroparts/k?uploadId={id}&max-parts=1"));
    assert_eq!((xml_field(&r.text(), "IsTruncated"), r.text().matches("<Part>").count()), ("false", 1), "{r:?}");
}

/// A DeleteObjects entry with an empty key is an `<Error>` of its own (its native key is
/// `/BUCKET/`, which a native PUT may have made: it was deleted), the others go on.
#[test]
fn delete_objects_refuses_an_empty_key_and_deletes_the_rest() {
    let c = cluster(&[]);
    let addr = c.addr();
    assert_eq!(request(&addr, "PUT", "/emptykey/", &[], b"native").status, 201, "a native key /emptykey/");
    assert_eq!(s3_put(&addr, "/emptykey/a", b"a").status, 200);
    let doc = b"<Delete><Object><Key></Key></Object><Object><Key>a</Key></Object></Delete>";
    let r = request(&addr, "POST", "/emptykey?delete", &[UNSIGNED], doc);
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text();
    assert!(text.contains("<Error><Key></Key><Code>UserKeyMustBeSpecified</Code>"), "{text}");
    assert!(text.contains("<Deleted><Key>a</Key></Deleted>"), "{text}");
    assert_eq!(s3_get(&addr, "/emptykey/a").status, 404);
    assert_eq!(request(&addr, "GET", "/emptykey/", &[], b"").status, 302, "the native key stays");
    let two = b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>";
    let r = request(&addr, "POST", "/emptykey?delete", &[UNSIGNED], two);
    assert_eq!((r.status, xml_field(&r.text(), "Code")), (400, "MalformedXML"), "{r:?}");
}

/// One part uploaded to a new upload of `key`: (upload id, the Complete's document).
fn one_part_upload(addr: &str, key: &str, data: &[u8]) -> (String, String) {
    let r = request(addr, "POST", &format!("{key}?uploads"), &[UNSIGNED], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let id = xml_field(&r.text(), "UploadId").to_string();
    let r = s3_put(addr, &format!("{key}?partNumber=1&uploadId={id}"), data);
    assert_eq!(r.status, 200, "{r:?}");
    let doc = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        r.header("etag").unwrap()
    );
    (id, doc)
}

/// Whether ListMultipartUploads of `bucket` names upload `id`.
fn upload_listed(addr: &str, bucket: &str, id: &str) -> bool {
    let r = s3_get(addr, &format!("/{bucket}?uploads"));
    assert_eq!(r.status, 200, "{r:?}");
    r.text().contains(&format!("<UploadId>{id}</UploadId>"))
}

/// A master killed (-9) during Completes. Upload A's write had reached its moves (every
/// replica written to `_tmp`, recorded as to be rolled forward): recovery at the restart
/// puts the new value in place, and the upload must end with it (no upload, no parts, no
/// part files, a Complete sent again answered alike); it stayed listed, its part files on
/// the volumes, until a client sent Complete again. Upload B's write was still streaming
/// (a volume frozen): recovery keeps the old value, and B stays whole and completable.
///
/// A's moment is made exact, not raced: a folder planted at A's path on one volume makes
/// that replica's move fail (409), which leaves the write recorded as moving, exactly as a
/// kill between the moves leaves it; the master is then killed and the folder taken away.
#[test]
fn a_complete_cut_by_a_kill_ends_its_upload_once_recovery_rolls_it_forward() {
    let mut c = cluster(&["-subvolumes", "1"]);
    let addr = c.addr();
    let (a_old, a_new, b_old, b_new) = (pattern(1000, 1), pattern(1 << 20, 2), pattern(1000, 3), pattern(1 << 20, 4));
    assert_eq!(s3_put(&addr, "/killed/a", &a_old).status, 200);
    assert_eq!(s3_put(&addr, "/killed/b", &b_old).status, 200);
    let (a_id, a_doc) = one_part_upload(&addr, "/killed/a", &a_new);
    let (b_id, b_doc) = one_part_upload(&addr, "/killed/b", &b_new);
    let a_path = format!("/killed/a?uploadId={a_id}");
    let (vol, file) = Layout::of(&c, 3, 1).files("/killed/a").remove(0);
    let planted = c.volumes[vol].dir().join(&file);
    fs::remove_file(&planted).unwrap();
    fs::create_dir(&planted).unwrap();
    let r = request(&addr, "POST", &a_path, &[UNSIGNED], a_doc.as_bytes());
    assert!(!r.text().contains("<CompleteMultipartUploadResult"), "A's move was to fail: {r:?}");
    // B's Complete streams into a frozen volume: it cannot get past writing
    c.volumes[1].pause();
    let mut b = TcpStream::connect(&addr).unwrap();
    b.write_all(&encode_request("POST", &format!("/killed/b?uploadId={b_id}"), &[UNSIGNED], b_doc.as_bytes())).unwrap();
    wait_until("B's write under way", TIMEOUT, || get(&addr, "/?pending").text().contains("killed/b"));
    c.master.kill9();
    c.volumes[1].resume();
    fs::remove_dir(&planted).unwrap();
    c.master.restart();
    let addr = c.addr();
    wait_until("A rolled forward", TIMEOUT, || s3_get(&addr, "/killed/a").body == a_new);
    wait_until("A's upload ended", TIMEOUT, || !upload_listed(&addr, "killed", &a_id));
    let r = s3_get(&addr, &a_path);
    assert_eq!((r.status, xml_field(&r.text(), "Code")), (404, "NoSuchUpload"), "ListParts of A: {r:?}");
    wait_until("A's part files deleted", TIMEOUT, || !leftovers(&c).iter().any(|f| f.contains(&a_id)));
    let a_tag = s3_get(&addr, "/killed/a").header("etag").unwrap().to_string();
    let r = request(&addr, "POST", &a_path, &[UNSIGNED], a_doc.as_bytes());
    assert_eq!(r.status, 200, "A's Complete sent again: {r:?}");
    assert_eq!(xml_field(&r.text(), "ETag").replace("&quot;", "\""), a_tag, "{r:?}");
    // B: the old value, the upload whole, and completable
    wait_until("B's write rolled back", TIMEOUT, || !get(&addr, "/?pending").text().contains("killed/b"));
    assert!(s3_get(&addr, "/killed/b").body == b_old, "B's old value");
    assert!(upload_listed(&addr, "killed", &b_id));
    let r = s3_get(&addr, &format!("/killed/b?uploadId={b_id}"));
    assert_eq!(r.text().matches("<Part>").count(), 1, "ListParts of B: {r:?}");
    let r = request(&addr, "POST", &format!("/killed/b?uploadId={b_id}"), &[UNSIGNED], b_doc.as_bytes());
    assert!(r.text().contains("<CompleteMultipartUploadResult"), "B completed after the restart: {r:?}");
    assert!(s3_get(&addr, "/killed/b").body == b_new, "B's new value");
    assert!(!upload_listed(&addr, "killed", &b_id));
    wait_until("no part or temporary file left", TIMEOUT, || leftovers(&c).is_empty());
}

/// A Complete that runs long is answered `200` early and kept alive with spaces (a client's
/// read timeout would cut it off: botocore's is 60 s); a Complete sent again, while the
/// first runs (however long) or after it ended, answers as the first did (it was
/// `InvalidPart` while the first ran, then `503 SlowDown` past 5 s; `NoSuchUpload` after).
#[test]
fn a_long_complete_is_answered_early_and_a_complete_sent_again_answers_alike() {
    // once the parts are in, one volume takes each 64 KiB of a write 70 ms late: the 6 MiB
    // Complete runs ~7 s, longer than a write waits for another (5 s)
    let LateVolume { master, late, _vols, .. } = master_with_a_late_volume(&["-s3-keepalive", "200ms"]);
    let addr = master.addr();
    assert_eq!(s3_put(&addr, "/slowc", b"").status, 200);
    let r = request(&addr, "POST", "/slowc/k?uploads", &[UNSIGNED], b"");
    let id = xml_field(&r.text(), "UploadId").to_string();
    let parts = [pattern(5 << 20, 7), pattern(1 << 20, 8)];
    let mut doc = String::from("<CompleteMultipartUpload>");
    for (n, data) in parts.iter().enumerate() {
        let r = s3_put(&addr, &format!("/slowc/k?partNumber={}&uploadId={id}", n + 1), data);
        assert_eq!(r.status, 200, "{r:?}");
        doc += &format!("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", n + 1, r.header("etag").unwrap());
    }
    doc += "</CompleteMultipartUpload>";
    let path = format!("/slowc/k?uploadId={id}");
    late.store(70, Ordering::Relaxed);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(&encode_request("POST", &path, &[UNSIGNED], doc.as_bytes())).unwrap();
    // the same Complete again while the first runs
    thread::sleep(Duration::from_millis(100));
    let again = {
        let (addr, path, doc) = (addr.clone(), path.clone(), doc.clone());
        thread::spawn(move || request(&addr, "POST", &path, &[UNSIGNED], doc.as_bytes()))
    };
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let got = String::from_utf8_lossy(&got).to_string();
    let (head, body) = got.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{got}");
    assert!(head.to_ascii_lowercase().contains("connection: close") && !head.contains("Content-Length"), "{head}");
    let after = body.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n").expect(body);
    let spaces = after.len() - after.trim_start_matches(' ').len();
    assert!(spaces >= 1, "no space kept the answer alive: {body}");
    assert!(after.trim_start().starts_with("<CompleteMultipartUploadResult"), "{body}");
    let digests: Vec<u8> = parts.iter().flat_map(|p| <md5::Md5 as md5::Digest>::digest(p).to_vec()).collect();
    let want = format!("\"{}-2\"", md5_hex(&digests));
    assert_eq!(xml_field(after, "ETag").replace("&quot;", "\""), want, "{body}");
    let r = again.join().unwrap();
    assert_eq!(r.status, 200, "the Complete sent while the first ran: {r:?}");
    assert_eq!(xml_field(&r.text(), "ETag").replace("&quot;", "\""), want, "{r:?}");
    let r = request(&addr, "POST", &path, &[UNSIGNED], doc.as_bytes());
    assert_eq!(r.status, 200, "the Complete sent after: {r:?}");
    assert_eq!(xml_field(&r.text(), "ETag").replace("&quot;", "\""), want, "{r:?}");
    let r = s3_get(&addr, "/slowc/k");
    assert!(r.body == parts.concat(), "the completed object differs");
    // another upload id with the same parts was never completed: it is no upload at all
    let r = request(&addr, "POST", "/slowc/k?uploadId=never-made", &[UNSIGNED], doc.as_bytes());
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.text().contains("<Code>NoSuchUpload</Code>"), "{r:?}");
    // other parts than those completed are no upload of this object
    let other = doc.replace("<PartNumber>2</PartNumber>", "<PartNumber>3</PartNumber>");
    let other = other.replacen(&md5_hex(&parts[1]), &md5_hex(b"x"), 1);
    let r = request(&addr, "POST", &path, &[UNSIGNED], other.as_bytes());
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.text().contains("<Code>NoSuchUpload</Code>"), "{r:?}");
}

/// An overwrite whose move timed out on one volume (hung for 3 s, its probes unanswered
/// too, then carrying the MOVE out late) answers 503 and is rolled forward once the volume
/// answers; a write of the key meanwhile
/// (a client's retry) must not take its place. It did: the retry's own replacement replaced
/// the pending one and, failing on the same volume, rolled back, so the record kept the old
/// value while every replica held the new one: GetObject 500 for good (a size that did not
/// match), and the old bytes gone.
#[test]
fn a_write_after_an_overwrite_whose_move_failed_finishes_that_one_first() {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let stall = Arc::new(AtomicBool::new(false));
    let stalled = {
        let (stall, hung) = (stall.clone(), Arc::new(AtomicBool::new(false)));
        proxy(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), vols[0].addr(), 64 << 10, move |bytes| {
            if bytes.starts_with(b"MOVE ") && stall.swap(false, Ordering::Relaxed) {
                hung.store(true, Ordering::Relaxed);
                thread::sleep(Duration::from_secs(3));
                hung.store(false, Ordering::Relaxed);
            } else if bytes.starts_with(b"HEAD / ") && hung.load(Ordering::Relaxed) {
                // hung, not slow: a volume that answers its probes is waited for
                thread::sleep(Duration::from_secs(3));
            }
        })
    };
    let on = [stalled, vols[1].addr(), vols[2].addr()];
    let master = Master::start_on(&on, &["-threads", "2", "-voltimeout", "1s", "-subvolumes", "1"]);
    let addr = master.addr();
    let (old, first, retry) = (pattern(50 << 10, 1), pattern(100 << 10, 2), pattern(150 << 10, 3));
    assert_eq!(s3_put(&addr, "/moves/k", &old).status, 200);
    stall.store(true, Ordering::Relaxed);
    let r = s3_put(&addr, "/moves/k", &first);
    assert_eq!(r.status, 503, "the move to the stalled volume timed out: {r:?}");
    let r = s3_put(&addr, "/moves/k", &retry);
    let want = if r.status == 200 { &retry } else { &first };
    let files = Layout { volumes: on.to_vec(), replicas: 3, subvolumes: 1 }.files("/moves/k");
    // the stalled MOVE reaches its volume 3 s on; recovery rolls the replacement forward
    wait_until("the value and every replica to agree", TIMEOUT, || {
        let got = s3_get(&addr, "/moves/k");
        got.status == 200
            && got.body == *want
            && got.header("etag") == Some(&format!("\"{}\"", md5_hex(want)))
            && files.iter().all(|(i, path)| fs::read(vols[*i].dir().join(path)).is_ok_and(|b| b == *want))
    });
    assert_eq!(s3_put(&addr, "/moves/k", &retry).status, 200);
    assert!(s3_get(&addr, "/moves/k").body == retry);
}

/// A master whose first volume is late: see [`master_with_a_late_volume`].
struct LateVolume {
    master: Master,
    /// How late (ms) the volume takes each 64 KiB of a write; 0 at first.
    late: Arc<AtomicUsize>,
    /// Pieces it has taken late so far.
    held: Arc<AtomicUsize>,
    _vols: Vec<Volume>,
}

/// Three volumes, the first behind a proxy that holds each 64 KiB of a write back by the
/// milliseconds `late` says, and a master on them (2 threads, -voltimeout 5s, and `flags`).
fn master_with_a_late_volume(flags: &[&str]) -> LateVolume {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (late, held) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let slow = {
        let (late, held) = (late.clone(), held.clone());
        proxy(listener, vols[0].addr(), 64 << 10, move |_| {
            let ms = late.load(Ordering::Relaxed);
            if ms > 0 {
                held.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(ms as u64));
            }
        })
    };
    let on = [slow, vols[1].addr(), vols[2].addr()];
    let mut all = vec!["-threads", "2", "-voltimeout", "5s"];
    all.extend_from_slice(flags);
    LateVolume { master: Master::start_on(&on, &all), late, held, _vols: vols }
}

/// `If-Range` serves the Range only while the object is the one the client named (by its
/// ETag or Last-Modified), else the whole object: a resumed download never joins bytes of
/// two values. It was ignored: the Range was served over a replaced object.
/// A `416` said no `Content-Range: bytes */SIZE` (what a resuming client reads the size
/// from), and a `304` said `Content-Length: 0` of a 10-byte object (a cache refreshing its
/// headers from it would cut its copy).
#[test]
fn a_416_says_the_size_and_a_304_no_length() {
    let c = cluster(&[]);
    let addr = c.addr();
    assert_eq!(s3_put(&addr, "/edges/k", b"0123456789").status, 200);
    for method in ["GET", "HEAD"] {
        let r = request(&addr, method, "/edges/k", &[UNSIGNED, ("Range", "bytes=20-")], b"");
        assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */10")), "{method} {r:?}");
        if method == "GET" {
            assert_eq!(xml_field(&r.text(), "Code"), "InvalidRange");
        }
    }
    let tag = request(&addr, "HEAD", "/edges/k", &[UNSIGNED], b"").header("etag").unwrap().to_string();
    let mut client = Client::connect(&addr);
    for method in ["GET", "HEAD", "GET"] {
        let r = client.request(method, "/edges/k", &[UNSIGNED, ("If-None-Match", &tag)], b"");
        assert_eq!((r.status, r.header("content-length")), (304, None), "{method} {r:?}");
    }
    // and the connection goes on after them
    assert_eq!(client.request("GET", "/edges/k", &[UNSIGNED], b"").body, b"0123456789");
}

#[test]
fn if_range_serves_the_range_only_of_the_object_named() {
    let c = cluster(&[]);
    let addr = c.addr();
    assert_eq!(s3_put(&addr, "/ifrange", b"").status, 200);
    assert_eq!(s3_put(&addr, "/ifrange/k", b"0123456789").status, 200);
    let head = request(&addr, "HEAD", "/ifrange/k", &[UNSIGNED], b"");
    let (tag, date) = (head.header("etag").unwrap().to_string(), head.header("last-modified").unwrap().to_string());
    let get = |if_range: &str| {
        request(&addr, "GET", "/ifrange/k", &[UNSIGNED, ("Range", "bytes=2-4"), ("If-Range", if_range)], b"")
    };
    for holds in [tag.as_str(), date.as_str()] {
        let r = get(holds);
        assert_eq!((r.status, r.body.as_slice()), (206, &b"234"[..]), "If-Range: {holds}");
    }
    let other_date = "Mon, 01 Jan 2001 00:00:00 GMT";
    for other in ["\"0123456789abcdef0123456789abcdef\"", other_date, &format!("W/{tag}"), "garbage"] {
        let r = get(other);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]), "If-Range: {other}");
    }
    let r = request(&addr, "HEAD", "/ifrange/k", &[UNSIGNED, ("Range", "bytes=2-4"), ("If-Range", other_date)], b"");
    assert_eq!((r.status, r.header("content-length")), (200, Some("10")), "HEAD");
}

/// The XML bodies of CompleteMultipartUpload and CreateBucket are checked against a
/// `Content-MD5` like any body (S3.md: "400 BadDigest with nothing stored"): a wrong one
/// was ignored and the upload completed.
#[test]
fn a_complete_or_create_bucket_with_a_wrong_content_md5_is_bad_digest() {
    let c = cluster(&[]);
    let addr = c.addr();
    let (id, doc) = one_part_upload(&addr, "/digestmp/k", b"abc");
    let path = format!("/digestmp/k?uploadId={id}");
    let wrong = md5_b64(b"another document");
    let r = request(&addr, "POST", &path, &[UNSIGNED, ("Content-MD5", &wrong)], doc.as_bytes());
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(xml_field(&r.text(), "Code"), "BadDigest", "{r:?}");
    assert_eq!(s3_get(&addr, "/digestmp/k").status, 404, "nothing completed");
    let r = request(&addr, "POST", &path, &[UNSIGNED, ("Content-MD5", &md5_b64(doc.as_bytes()))], doc.as_bytes());
    assert_eq!(r.status, 200, "the right digest: {r:?}");
    assert_eq!(s3_get(&addr, "/digestmp/k").body, b"abc");
    let create =
        b"<CreateBucketConfiguration><LocationConstraint>us-east-1</LocationConstraint></CreateBucketConfiguration>";
    let r = request(&addr, "PUT", "/digestbucket", &[UNSIGNED, ("Content-MD5", &wrong)], create);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(xml_field(&r.text(), "Code"), "BadDigest", "{r:?}");
    assert_eq!(request(&addr, "HEAD", "/digestbucket", &[UNSIGNED], b"").status, 404, "no bucket made");
    let r = request(&addr, "PUT", "/digestbucket", &[UNSIGNED, ("Content-MD5", &md5_b64(create))], create);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn bad_digests_are_400_and_store_nothing() {
    let c = cluster(&[]);
    let addr = c.addr();
    let old = b"the old value".to_vec();
    assert_eq!(s3_put(&addr, "/digest/key", &old).status, 200);
    let small = b"a new value".to_vec();
    let large = pattern(3 << 20, 7); // streamed to the volumes before the digest is known
    for body in [&small, &large] {
        let wrong_md5 = md5_b64(b"something else");
        let cases: [(&str, &str); 2] = [("Content-MD5", &wrong_md5), ("x-amz-checksum-crc32", "AAAAAA==")];
        for (name, value) in cases {
            for key in ["/digest/key", "/digest/new"] {
                let r = request(&addr, "PUT", key, &[UNSIGNED, (name, value)], body);
                assert_eq!(r.status, 400, "{name} on {} bytes to {key}: {r:?}", body.len());
                assert_eq!(xml_field(&r.text(), "Code"), "BadDigest", "{r:?}");
            }
            assert_eq!(s3_get(&addr, "/digest/key").body, old, "the old value after a bad {name}");
            assert_eq!(s3_get(&addr, "/digest/new").status, 404, "a new key after a bad {name}");
        }
        // the right digests are taken
        let crc = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(body).to_be_bytes())
        };
        let r = request(&addr, "PUT", "/digest/good", &[UNSIGNED, ("Content-MD5", &md5_b64(body))], body);
        assert_eq!(r.status, 200, "{r:?}");
        let r = request(&addr, "PUT", "/digest/good", &[UNSIGNED, ("x-amz-checksum-crc32", &crc)], body);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-amz-checksum-crc32"), Some(crc.as_str()));
        assert!(s3_get(&addr, "/digest/good").body == *body);
    }
    let listed = get(&addr, "/digest/?list");
    assert_eq!(listed.text(), r#"{"next":"","keys":["/digest/good","/digest/key"]}"#);
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[test]
fn the_native_api_is_unchanged_beside_s3() {
    let c = cluster(&[]);
    let addr = c.addr();
    // S3 and native writes in one namespace
    assert_eq!(s3_put(&addr, "/both/s3", b"from s3").status, 200);
    let r = request(&addr, "PUT", "/both/native", &[], b"native");
    assert_eq!(r.status, 201, "{r:?}");
    // a native GET still redirects, whoever wrote the key
    for key in ["/both/s3", "/both/native"] {
        let r = get(&addr, key);
        assert_eq!(r.status, 302, "{r:?}");
        assert_eq!(r.header("content-length"), Some("0"));
    }
    assert_eq!(get_follow(&addr, "/both/s3").body, b"from s3");
    // a query the native API does not know is no part of the key: `?parts` lists only on `/`
    for query in ["x=1", "parts"] {
        assert_eq!(get(&addr, &format!("/both/native?{query}")).status, 302, "?{query}");
    }
    // native PUT of a live key: 403, as always; S3 replaces it
    assert_eq!(request(&addr, "PUT", "/both/native", &[], b"again").status, 403);
    assert_eq!(s3_put(&addr, "/both/native", b"replaced").status, 200);
    assert_eq!(get_follow(&addr, "/both/native").body, b"replaced");
    // native listing, ?unlinked, empty body, a PUT to a key ending in / with a body
    assert_eq!(get(&addr, "/both/?list").text(), r#"{"next":"","keys":["/both/native","/both/s3"]}"#);
    let r = s3_get(&addr, "/both?list-type=2");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text().matches("<Key>").count(), 2, "S3 lists native keys: {r:?}");
    assert_eq!(request(&addr, "PUT", "/both/empty", &[], b"").status, 411);
    assert_eq!(request(&addr, "PUT", "/both/dir/", &[], b"body").status, 201, "a key ending in / with a body");
    assert_eq!(request(&addr, "UNLINK", "/both/s3", &[], b"").status, 204);
    assert_eq!(get(&addr, "/?unlinked").text(), r#"{"next":"","keys":["/both/s3"]}"#);
    assert_eq!(s3_get(&addr, "/both/s3").status, 404, "an unlinked key is gone for S3 too");
    assert_eq!(request(&addr, "DELETE", "/both/s3", &[], b"").status, 204);
    assert_eq!(request(&addr, "DELETE", "/both/s3", &[], b"").status, 404, "a native DELETE of nothing: 404");
    assert_eq!(get(&addr, "/nothing").status, 404);
    // the S3 listing does not list unlinked keys either
    assert_eq!(request(&addr, "DELETE", "/both/dir/", &[], b"").status, 204);
    assert_eq!(request(&addr, "UNLINK", "/both/native", &[], b"").status, 204);
    let r = s3_get(&addr, "/both?list-type=2");
    assert_eq!(r.status, 404, "a bucket of only unlinked keys is no bucket: {r:?}");
}

// ---- -s3-keys --------------------------------------------------------------------------

#[test]
fn s3_keys_accept_the_right_signatures_and_refuse_the_rest() {
    let (c, _keys) = keyed_cluster();
    python(&Env::new(&c.addr()), "boto3_keys.py", &[], Duration::from_secs(60));
    // unsigned S3 requests are refused; native ones are not S3's business
    let r = s3_get(&c.addr(), "/keyed/k");
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(xml_field(&r.text(), "Code"), "AccessDenied");
    assert_eq!(get(&c.addr(), "/keyed/k").status, 302);
    // the secret is in no answer and no log line
    let lines = c.master.lines().join("\n");
    assert!(!lines.contains(SECRET) && !lines.contains("other-secret"), "{lines}");
}

#[test]
fn s3_keys_with_the_other_clients() {
    let (c, _keys) = keyed_cluster();
    let env = Env::new(&c.addr());
    python(&env, "minio_sdk.py", &[], Duration::from_secs(60));
    python(&env, "pyarrow_parquet.py", &["signed", "300000"], Duration::from_secs(60));
    let file = env.dir().join("f.txt");
    fs::write(&file, b"signed by the CLI").unwrap();
    aws(&env, &["s3", "cp", file.to_str().unwrap(), "s3://keyed/cli/f.txt"]);
    let out = aws(&env, &["s3", "ls", "s3://keyed/cli/"]);
    assert!(out.stdout.trim_end().ends_with(" 17 f.txt"), "{out:?}");
    rclone(&env, &["copyto", file.to_str().unwrap(), "mkv:keyed/rclone/f.txt"]);
    let out = rclone(&env, &["check", env.dir().to_str().unwrap(), "mkv:keyed/rclone", "--include", "f.txt"]);
    assert!(out.stderr.contains("0 differences found"), "{out:?}");
    s3cmd(&env, &["put", file.to_str().unwrap(), "s3://keyed/s3cmd/with space+plus~*'!.txt"]);
    let out = s3cmd(&env, &["ls", "s3://keyed/s3cmd/"]);
    assert!(out.stdout.trim_end().ends_with("17  s3://keyed/s3cmd/with space+plus~*'!.txt"), "{out:?}");
    let got = env.dir().join("got.txt");
    s3cmd(&env, &["get", "s3://keyed/s3cmd/with space+plus~*'!.txt", got.to_str().unwrap()]);
    assert_eq!(fs::read(&got).unwrap(), b"signed by the CLI");
}

/// The AWS CLI (its own botocore) puts an empty file with `Expect: 100-continue` and
/// `Content-Length: 0`; answered at once with the final status, it keeps that status line
/// for the next request on the connection, misreads that answer and hangs (`aws s3 sync`
/// of a folder holding an empty file never ended). S3 sends the `100 Continue` first.
#[test]
fn an_empty_put_that_expects_100_continue_gets_it_first() {
    let c = cluster(&[]);
    let mut s = TcpStream::connect(c.addr()).unwrap();
    let head = "PUT /expect/empty HTTP/1.1\r\nHost: mkv\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\
                Expect: 100-continue\r\nContent-Length: 0\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    let text = read_until(&mut s, |t| t.contains("200 OK") && t.ends_with("\r\n\r\n"));
    assert!(text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), "{text}");
    // the connection goes on: a request without Expect, then one with a body
    s.write_all(b"GET /expect?list-type=2 HTTP/1.1\r\nHost: mkv\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\r\n")
        .unwrap();
    let text = read_until(&mut s, |t| t.contains("</ListBucketResult>"));
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("<Key>empty</Key>"), "{text}");
    // with a body, the 100 comes from the HTTP layer as before, once
    let head = "PUT /expect/full HTTP/1.1\r\nHost: mkv\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\
                Expect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_until(&mut s, |t| t.ends_with("\r\n\r\n")), "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"full").unwrap();
    let text = read_until(&mut s, |t| t.ends_with("\r\n\r\n"));
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(s3_get(&c.addr(), "/expect/full").body, b"full");
}

/// boto3's default presigned URLs for an endpoint of one's own are SigV2, so are requests
/// of `signature_version='s3'`: accepted with a known key, refused otherwise.
#[test]
fn s3_keys_accept_signature_version_2() {
    let (c, _keys) = keyed_cluster();
    python(&Env::new(&c.addr()), "boto3_sigv2.py", &[], Duration::from_secs(60));
}

/// rclone signs with SigV2 when asked (`v2_auth`), dating requests the Go way
/// (`… 12:00:00 UTC`, not `GMT`): copy, check and purge with it against a keyed master.
#[test]
fn rclone_with_signature_version_2() {
    let (c, _keys) = keyed_cluster();
    let mut env = Env::new(&c.addr());
    env.set("RCLONE_CONFIG_MKV_V2_AUTH", "true");
    let local = env.dir().join("tree");
    write_tree(&local, &[("a.txt", b"v2".to_vec()), ("dir/b.bin", pattern(6 << 20, 8))]);
    let src = local.to_str().unwrap();
    rclone(&env, &["copy", src, "mkv:rclone-v2/tree", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"]);
    let out = rclone(&env, &["check", src, "mkv:rclone-v2/tree"]);
    assert!(out.stderr.contains("0 differences found"), "{out:?}");
    rclone(&env, &["purge", "mkv:rclone-v2"]);
    assert_eq!(rclone(&env, &["lsd", "mkv:"]).stdout, "");
}

/// A PUT with `Expect: 100-continue` pipelined behind another request: the HTTP layer
/// flushes the answers queued so far with its `100 Continue`, and the connection loop then
/// reads the PUT's status at an offset past the end of its (flushed) output buffer: the
/// runtime thread panics, and every connection that thread's listener accepts afterwards
/// hangs. Any client can do this, with S3 requests or native ones.
#[test]
fn a_pipelined_put_expecting_100_continue_leaves_the_master_whole() {
    let c = cluster(&[]);
    let mut s = TcpStream::connect(c.addr()).unwrap();
    let two = "GET /pipe/missing HTTP/1.1\r\nHost: mkv\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\r\n\
               PUT /pipe/k HTTP/1.1\r\nHost: mkv\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\
               Expect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    s.write_all(two.as_bytes()).unwrap();
    let text = read_until(&mut s, |t| t.ends_with("HTTP/1.1 100 Continue\r\n\r\n"));
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
    s.write_all(b"abc").unwrap();
    let text = read_until(&mut s, |t| t.ends_with("\r\n\r\n"));
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "the PUT's answer: {text:?}");
    for i in 0..20 {
        let r = s3_get(&c.addr(), "/pipe/k");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]), "request {i} on a new connection");
    }
}

/// -protect guards a live value against the S3 port as against the native one: neither a
/// delete nor an overwrite (PutObject, CopyObject onto it) goes through until it is UNLINKed.
#[test]
fn protect_refuses_s3_overwrites_and_deletes_until_unlinked() {
    let c = cluster(&["-protect"]);
    let addr = c.addr();
    assert_eq!(s3_put(&addr, "/guard/k", b"first").status, 200);
    let r = s3_put(&addr, "/guard/k", b"second");
    assert_eq!((r.status, xml_field(&r.text(), "Code")), (403, "AccessDenied"), "{r:?}");
    assert_eq!(s3_put(&addr, "/guard/other", b"other").status, 200);
    let copy = request(&addr, "PUT", "/guard/k", &[UNSIGNED, ("x-amz-copy-source", "/guard/other")], b"");
    assert_eq!(copy.status, 403, "{copy:?}");
    let r = request(&addr, "DELETE", "/guard/k", &[UNSIGNED], b"");
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(s3_get(&addr, "/guard/k").body, b"first");
    assert_eq!(request(&addr, "UNLINK", "/guard/k", &[], b"").status, 204);
    assert_eq!(s3_put(&addr, "/guard/k", b"second").status, 200, "an unlinked key can be written again");
    assert_eq!(s3_get(&addr, "/guard/k").body, b"second");
}

/// A DeleteObject (or DeleteObjects) of a key whose PutObject is still in flight waits for
/// it and then deletes, as on S3 (last writer wins), instead of failing with `503 SlowDown`.
#[test]
fn a_delete_waits_for_a_put_of_the_same_key_in_flight() {
    let c = cluster(&[]);
    let addr = c.addr();
    for (n, multi) in [(0, false), (1, true)] {
        let key = format!("/racing/k{n}");
        let mut put = TcpStream::connect(&addr).unwrap();
        let head = format!(
            "PUT {key} HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nContent-Length: 10\r\n\r\nfirst"
        );
        put.write_all(head.as_bytes()).unwrap();
        thread::sleep(Duration::from_millis(200)); // the PUT holds the key, its body half sent
        let deleter = {
            let addr = addr.clone();
            let key = key.clone();
            thread::spawn(move || {
                if multi {
                    let body = format!("<Delete><Object><Key>k{n}</Key></Object></Delete>");
                    let md5 = md5_b64(body.as_bytes());
                    request(&addr, "POST", "/racing?delete", &[UNSIGNED, ("content-md5", &md5)], body.as_bytes())
                } else {
                    request(&addr, "DELETE", &key, &[UNSIGNED], b"")
                }
            })
        };
        thread::sleep(Duration::from_millis(300));
        put.write_all(b"half").unwrap();
        put.write_all(b"!").unwrap();
        let mut answer = [0u8; 12];
        put.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200", "the PUT");
        let r = deleter.join().unwrap();
        assert!(r.status == 204 || r.status == 200, "{r:?}");
        assert!(!r.text().contains("<Error>"), "{r:?}");
        assert_eq!(s3_get(&addr, &key).status, 404, "the delete came last");
    }
}

/// A bucket nobody created exists while it holds keys; the clients' "empty it, then remove
/// it" (`aws s3 rb --force`, `rclone purge`, `s3cmd del -r` + `rb`) ends with DeleteBucket
/// of a bucket that has just lost its last key, which S3.md answers 204.
#[test]
fn clients_remove_a_bucket_they_never_created() {
    let c = cluster(&[]);
    let env = Env::new(&c.addr());
    let file = env.dir().join("f.txt");
    fs::write(&file, b"in an implicit bucket").unwrap();
    let f = file.to_str().unwrap();
    aws(&env, &["s3", "cp", f, "s3://implicit-cli/a/f.txt"]);
    let out = aws(&env, &["s3", "rb", "--force", "s3://implicit-cli"]);
    assert!(out.stdout.contains("remove_bucket: implicit-cli"), "{out:?}");
    aws(&env, &["s3", "cp", f, "s3://implicit-rclone/a/f.txt"]);
    rclone(&env, &["purge", "mkv:implicit-rclone"]);
    aws(&env, &["s3", "cp", f, "s3://implicit-s3cmd/a/f.txt"]);
    s3cmd(&env, &["del", "--recursive", "--force", "s3://implicit-s3cmd"]);
    s3cmd(&env, &["rb", "s3://implicit-s3cmd"]);
    let out = aws(&env, &["s3", "ls"]);
    assert_eq!(out.stdout, "", "no bucket left: {out:?}");
    // a bucket that holds keys is still refused
    aws(&env, &["s3", "cp", f, "s3://implicit-full/k"]);
    let r = request(&c.addr(), "DELETE", "/implicit-full", &[UNSIGNED], b"");
    assert_eq!((r.status, xml_field(&r.text(), "Code")), (409, "BucketNotEmpty"), "{r:?}");
}

/// A long write answered `200` early (after `-s3-keepalive`) that then fails is counted by
/// its outcome in the metrics, not by the `200` its status line said: an error rate drawn
/// from them missed every long Complete or Copy that failed.
#[test]
fn a_write_that_fails_after_its_early_200_is_counted_by_its_outcome() {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    // once told to, one volume takes a write's bytes 3 s late each (past -voltimeout), while
    // reads, moves and deletes pass: the copy's source reads on, its write there fails
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stall = Arc::new(AtomicBool::new(false));
    let slow = {
        let stall = stall.clone();
        proxy(listener, vols[0].addr(), 64 << 10, move |bytes| {
            let passes = [&b"GET "[..], b"HEAD ", b"DELETE ", b"MOVE "].iter().any(|m| bytes.starts_with(m));
            if stall.load(Ordering::Relaxed) && !passes {
                thread::sleep(Duration::from_secs(3));
            }
        })
    };
    let on = [slow, vols[1].addr(), vols[2].addr()];
    let args = ["-replicas", "3", "-voltimeout", "1s", "-s3-keepalive", "100ms", "-admin", "127.0.0.1:0"];
    let master = Master::start_on(&on, &args);
    let addr = master.addr();
    let admin = master.admin_addr().expect("an admin port");
    let value = pattern(16 << 20, 5);
    assert_eq!(s3_put(&addr, "/early/src", &value).status, 200);
    let ok_200 = |m: &str| {
        m.lines().find_map(|l| l.strip_prefix(r#"mkv_requests_total{method="S3",status="200"} "#)?.parse::<u64>().ok())
    };
    let before = ok_200(&get(&admin, "/metrics").text()).expect("the source's PUT counted");
    stall.store(true, Ordering::Relaxed);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(&encode_request("PUT", "/early/dst", &[UNSIGNED, ("x-amz-copy-source", "/early/src")], b"")).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    stall.store(false, Ordering::Relaxed);
    let got = String::from_utf8_lossy(&got).to_string();
    assert!(got.starts_with("HTTP/1.1 200") && got.contains("<Error>"), "a 200, then the failure: {got}");
    let m = get(&admin, "/metrics").text();
    assert_eq!(ok_200(&m), Some(before), "the failed copy counted as a 200:\n{m}");
    assert!(m.lines().any(|l| l.starts_with(r#"mkv_requests_total{method="S3",status="5"#)), "no 5xx counted:\n{m}");
}

/// An Abort sent while a Complete of the same upload runs waits for it, and then finds no
/// upload to abort: `404 NoSuchUpload`, as S3 answers an Abort of a completed upload. It
/// answered `204`, telling the client its upload was gone while its object was written.
#[test]
fn an_abort_that_waited_for_a_complete_is_no_such_upload() {
    // once the part is in, one volume takes each 64 KiB of a write 20 ms late: the 5 MiB
    // Complete runs ~1.6 s
    let LateVolume { master, late, held, _vols } = master_with_a_late_volume(&[]);
    let addr = master.addr();
    let data = pattern(5 << 20, 3);
    let (id, doc) = one_part_upload(&addr, "/racec/k", &data);
    late.store(20, Ordering::Relaxed);
    let complete = {
        let (addr, doc) = (addr.clone(), doc.clone());
        let path = format!("/racec/k?uploadId={id}");
        thread::spawn(move || request(&addr, "POST", &path, &[UNSIGNED], doc.as_bytes()))
    };
    wait_until("the Complete to write to the late volume", TIMEOUT, || held.load(Ordering::Relaxed) > 0);
    let abort = request(&addr, "DELETE", &format!("/racec/k?uploadId={id}"), &[UNSIGNED], b"");
    let complete = complete.join().unwrap();
    assert!(complete.text().contains("<CompleteMultipartUploadResult"), "{complete:?}");
    assert_eq!(abort.status, 404, "{abort:?}");
    assert_eq!(xml_field(&abort.text(), "Code"), "NoSuchUpload", "{abort:?}");
    late.store(0, Ordering::Relaxed);
    assert!(s3_get(&addr, "/racec/k").body == data, "the completed object");
}

/// A PutObject or UploadPart that says nothing of its body's length (no `Content-Length`,
/// not chunked) is S3's `411 MissingContentLength`: it stored an empty object (or part)
/// with `200`, and the bytes that followed were read as the next request. An empty PUT of
/// a folder marker (`/b/dir/`) and a copy (no body) need no length.
#[test]
fn a_put_that_gives_no_length_is_missing_content_length() {
    let c = cluster(&[]);
    let addr = c.addr();
    let (id, _) = one_part_upload(&addr, "/nolen/up", b"part one");
    assert_eq!(s3_put(&addr, "/nolen/src", b"source").status, 200);
    for path in ["/nolen/k".to_string(), format!("/nolen/up?partNumber=2&uploadId={id}")] {
        let mut client = Client::connect(&addr);
        client.send(
            format!("PUT {path} HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\r\n").as_bytes(),
        );
        let r = client.read_response("PUT");
        assert_eq!((r.status, xml_field(&r.text(), "Code")), (411, "MissingContentLength"), "{path}: {r:?}");
    }
    assert_eq!(request(&addr, "HEAD", "/nolen/k", &[UNSIGNED], b"").status, 404, "nothing stored");
    let parts = s3_get(&addr, &format!("/nolen/up?uploadId={id}"));
    assert_eq!(parts.text().matches("<Part>").count(), 1, "no part 2: {parts:?}");
    // these need no length
    let no_length = |path: &str, more: &str| {
        let mut client = Client::connect(&addr);
        client.send(format!("PUT {path} HTTP/1.1\r\nHost: x\r\n{more}\r\n").as_bytes());
        client.read_response("PUT")
    };
    assert_eq!(no_length("/nolen/dir/", "").status, 200, "a folder marker");
    let r = no_length("/nolen/copy", "x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-amz-copy-source: /nolen/src\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s3_get(&addr, "/nolen/copy").body, b"source");
}

/// A Complete reads each part's bytes against the part's MD5: a replica that rotted (same
/// size, other bytes) fails the Complete (500, the upload kept) rather than become the
/// object, which then passed every verify (its record's MD5 was the rotten bytes').
#[test]
fn a_complete_never_makes_an_object_of_a_rotten_part_replica() {
    let c = cluster(&[]);
    let addr = c.addr();
    let data = pattern(200 << 10, 7);
    let (id, doc) = one_part_upload(&addr, "/rot/k", &data);
    let parts: Vec<std::path::PathBuf> = c
        .volumes
        .iter()
        .flat_map(|v| v.files().into_iter().filter(|f| f.contains("_parts/")).map(|f| v.dir().join(f)))
        .collect();
    assert_eq!(parts.len(), 3, "{parts:?}");
    for p in &parts {
        let mut b = fs::read(p).unwrap();
        b[1000] ^= 0xff;
        fs::write(p, b).unwrap();
    }
    let complete = || request(&addr, "POST", &format!("/rot/k?uploadId={id}"), &[UNSIGNED], doc.as_bytes());
    for _ in 0..3 {
        let r = complete();
        assert!(!r.text().contains("<CompleteMultipartUploadResult"), "an object of rotten bytes: {r:?}");
        assert!(r.text().contains("<Code>InternalError</Code>"), "{r:?}");
    }
    assert_eq!(s3_get(&addr, "/rot/k").status, 404);
    // one replica put right (as verify -repair would): the Complete goes through, whichever
    // replica it tries first, with the right bytes
    fs::write(&parts[0], &data).unwrap();
    let mut done = false;
    for _ in 0..20 {
        if complete().text().contains("<CompleteMultipartUploadResult") {
            done = true;
            break;
        }
    }
    assert!(done, "no Complete went through");
    assert!(s3_get(&addr, "/rot/k").body == data);
}

/// A copy never takes a damaged replica's bytes for the source's value: CopyObject and
/// UploadPartCopy of a whole source check what they read against the source's MD5 and read
/// the next replica when it differs. They copied whichever replica they read, one copy in
/// three getting the rot under a fresh ETag that verify then vouched for (found by a
/// helper). With every replica damaged the copy fails and nothing is written.
#[test]
fn a_copy_reads_past_a_damaged_replica_of_its_source() {
    let c = cluster(&["-subvolumes", "1"]);
    let addr = c.addr();
    assert_eq!(s3_put(&addr, "/rot", b"").status, 200);
    for (src, len) in [("/rot/small", 300 << 10), ("/rot/big", 3 << 20)] {
        let value = pattern(len, 3);
        assert_eq!(s3_put(&addr, src, &value).status, 200);
        let files = Layout::of(&c, 3, 1).files(src);
        let (v, rel) = &files[1];
        let mut rotten = value.clone();
        rotten[len / 2] ^= 0xff;
        fs::write(c.volumes[*v].dir().join(rel), &rotten).unwrap();
        for i in 0..6 {
            let dst = format!("{src}-copy{i}");
            let r = request(&addr, "PUT", &dst, &[UNSIGNED, ("x-amz-copy-source", src)], b"");
            assert_eq!(r.status, 200, "{r:?}");
            assert!(r.text().contains(&md5_hex(&value)), "copy {i} of {src}: {r:?}");
            assert!(s3_get(&addr, &dst).body == value, "copy {i} of {src} holds other bytes");
            // a part copied whole
            let r = request(&addr, "POST", &format!("{dst}-mp?uploads"), &[UNSIGNED], b"");
            let id = xml_field(&r.text(), "UploadId").to_string();
            let part = format!("{dst}-mp?partNumber=1&uploadId={id}");
            let r = request(&addr, "PUT", &part, &[UNSIGNED, ("x-amz-copy-source", src)], b"");
            assert_eq!(r.status, 200, "{r:?}");
            assert!(r.text().contains(&md5_hex(&value)), "part copy {i} of {src}: {r:?}");
            let abort = format!("{dst}-mp?uploadId={id}");
            assert_eq!(request(&addr, "DELETE", &abort, &[UNSIGNED], b"").status, 204);
        }
        // every replica damaged: no copy, nothing written
        for (v, rel) in &files {
            fs::write(c.volumes[*v].dir().join(rel), &rotten).unwrap();
        }
        let r = request(&addr, "PUT", &format!("{src}-none"), &[UNSIGNED, ("x-amz-copy-source", src)], b"");
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(s3_get(&addr, &format!("{src}-none")).status, 404);
    }
    wait_until("the refused copies' files to go", TIMEOUT, || leftovers(&c).is_empty());
}
