//! Protected volumes against real nginx and a real master: bin/volume `SECRET_FILE` (writes
//! need `X-Mkv-Secret`) and `SIGN=1` (reads need a secure_link signature), the master's
//! `-volume-secret` and `-sign-redirects`, and the secret staying out of sight.

mod common;

use base64::Engine;
use common::layout::*;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh random secret in a 0600 file, as an operator would make it.
struct SecretFile {
    _dir: TempDir,
    path: PathBuf,
    secret: String,
}

impl SecretFile {
    fn new() -> SecretFile {
        use std::os::unix::fs::PermissionsExt;
        let mut raw = [0u8; 24];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut raw).unwrap();
        let secret = base64::engine::general_purpose::STANDARD.encode(raw);
        let dir = TempDir::new("secret");
        let path = dir.path().join("volume.secret");
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        SecretFile { _dir: dir, path, secret }
    }
    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
    fn header(&self) -> (&str, &str) {
        ("X-Mkv-Secret", &self.secret)
    }
}

/// The query nginx's secure_link accepts, computed here from protect.conf.template's
/// expression (md-5 and base64 only), independently of the master's code.
fn signature(secret: &str, uri: &str, expires: u64) -> String {
    let h = md5(format!("{secret}{expires}{uri} {secret}").as_bytes());
    format!("?md5={}&expires={expires}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h))
}

/// `target` with the first character of its `md5=` value changed.
fn flip_md5(target: &str) -> String {
    let i = target.find("md5=").unwrap() + 4;
    let c = if &target[i..i + 1] == "A" { "B" } else { "A" };
    format!("{}{c}{}", &target[..i], &target[i + 1..])
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Whether `needle` is in any process's command line on this machine.
fn in_any_command_line(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle)))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn an_unprotected_volume_is_open_as_before() {
    let v = Volume::new();
    let a = v.addr();
    assert_eq!(request(&a, "PUT", "/_tmp/k", &[], b"open").status, 201);
    assert_eq!(request(&a, "MOVE", "/_tmp/k", &[("Destination", "/k")], b"").status, 204);
    assert_eq!(get(&a, "/k").body, b"open");
    // a query that looks like a signature is just a query
    assert_eq!(get(&a, "/k?md5=AAAAAAAAAAAAAAAAAAAAAA&expires=1").status, 200);
    assert_eq!(get(&a, "/").status, 200);
    assert_eq!(request(&a, "DELETE", "/k", &[], b"").status, 204);
    let conf = std::fs::read_to_string(v.dir().join(".nginx/protect.conf")).unwrap();
    assert!(!conf.contains("secure_link") && !conf.contains("return"), "{conf}");
}

#[test]
fn a_protected_volume_refuses_writes_without_the_secret_and_never_shows_it() {
    let s = SecretFile::new();
    let v = Volume::with_env(&[("SECRET_FILE", s.path())]);
    let a = v.addr();
    let key = ("X-Mkv-Secret", s.secret.as_str());

    // without the secret (or with a near miss): 403 for every write, nothing written
    let lower = s.secret.to_lowercase();
    let longer = format!("{}x", s.secret);
    let no: [&[(&str, &str)]; 4] =
        [&[], &[("X-Mkv-Secret", &lower)], &[("X-Mkv-Secret", &longer)], &[("X-Mkv-Secret", "")]];
    for headers in no {
        assert_eq!(request(&a, "PUT", "/5d/41/aGVsbG8=", headers, b"x").status, 403, "{headers:?}");
    }
    assert!(v.files().is_empty());
    // with it: the master's writes
    assert_eq!(request(&a, "PUT", "/_tmp/5d/41/aGVsbG8=", &[key], b"hello").status, 201);
    assert_eq!(
        request(&a, "MOVE", "/_tmp/5d/41/aGVsbG8=", &[key, ("Destination", "/5d/41/aGVsbG8=")], b"").status,
        204
    );
    assert_eq!(request(&a, "PUT", "/gone", &[key], b"x").status, 201);
    for (method, path, extra) in [
        ("PUT", "/5d/41/aGVsbG8=", None),
        ("DELETE", "/5d/41/aGVsbG8=", None),
        ("MOVE", "/5d/41/aGVsbG8=", Some(("Destination", "/elsewhere"))),
        ("COPY", "/5d/41/aGVsbG8=", Some(("Destination", "/elsewhere"))),
        ("MKCOL", "/folder/", None),
    ] {
        let headers: Vec<(&str, &str)> = extra.into_iter().collect();
        let r = request(&a, method, path, &headers, if method == "PUT" { b"evil" } else { b"" });
        assert_eq!(r.status, 403, "{method} {path} without the secret: {r:?}");
    }
    assert_eq!(request(&a, "DELETE", "/gone", &[key], b"").status, 204);
    assert_eq!(v.files(), ["5d/41/aGVsbG8="]);
    // reads stay open without SIGN=1
    assert_eq!(get(&a, "/5d/41/aGVsbG8=").body, b"hello");
    assert_eq!(get(&a, "/5d/41/").status, 200);

    // the secret: in a 0600 file under the dot-folder nginx refuses, whatever the spelling
    // and even to the master; on no command line; not in the main config
    let protect = v.dir().join(".nginx/protect.conf");
    assert!(std::fs::read_to_string(&protect).unwrap().contains(&s.secret));
    assert_eq!(mode(&protect), 0o600);
    assert!(!std::fs::read_to_string(v.dir().join(".nginx/nginx.conf")).unwrap().contains(&s.secret));
    for path in ["/.nginx/protect.conf", "/%2enginx/protect.conf", "//.nginx/protect.conf", "/x/../.nginx/protect.conf"]
    {
        for headers in [&[][..], &[key][..]] {
            let r = request(&a, "GET", path, headers, b"");
            assert!(r.status >= 400 && !r.text().contains(&s.secret), "GET {path}: {r:?}");
        }
    }
    assert!(!in_any_command_line(&s.secret), "the secret is on a command line");
}

#[test]
fn a_signing_volume_refuses_reads_without_a_good_signature() {
    let s = SecretFile::new();
    let v = Volume::with_env(&[("SECRET_FILE", s.path()), ("SIGN", "1")]);
    let a = v.addr();
    assert_eq!(request(&a, "PUT", "/sv03/5d/41/aGVsbG8=", &[s.header()], b"hello").status, 201);
    let path = "/sv03/5d/41/aGVsbG8=";

    let good = signature(&s.secret, path, now() + 60);
    let r = get(&a, &format!("{path}{good}"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]), "{r:?}");
    let r = request(&a, "HEAD", &format!("{path}{good}"), &[], b"");
    assert_eq!((r.status, r.header("content-length")), (200, Some("5")));
    let r = request(&a, "GET", &format!("{path}{good}"), &[("Range", "bytes=1-2")], b"");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"el"[..]));

    // unsigned, tampered, for another file, or made with another secret: 403; expired: 410
    let expires = now() + 60;
    let other_expiry = signature(&s.secret, path, expires).replace(&expires.to_string(), &(expires + 3600).to_string());
    let cases = [
        (String::new(), 403),
        (flip_md5(&signature(&s.secret, path, expires)), 403),
        (other_expiry, 403),
        (signature(&s.secret, "/sv03/5d/41/aGVsbG9=", expires), 403),
        (signature("0123456789abcdefghij", path, expires), 403),
        ("?md5=&expires=".to_string(), 403),
        (signature(&s.secret, path, now() - 5), 410),
    ];
    for (query, status) in cases {
        for method in ["GET", "HEAD"] {
            let r = request(&a, method, &format!("{path}{query}"), &[], b"");
            assert_eq!(r.status, status, "{method} {path}{query}: {r:?}");
        }
    }
    // a signature opens reads only; listings need one too; the master's header opens all
    assert_eq!(request(&a, "DELETE", &format!("{path}{good}"), &[], b"").status, 403);
    assert_eq!(get(&a, "/").status, 403);
    assert_eq!(get(&a, &format!("/{}", signature(&s.secret, "/", now() + 60))).status, 200);
    assert_eq!(request(&a, "GET", "/sv03/5d/41/", &[s.header()], b"").status, 200);
    assert_eq!(request(&a, "GET", path, &[s.header()], b"").body, b"hello");
}

/// `n` volumes started with `env` and a master over them with `extra` flags.
fn protected_cluster(n: usize, env: &[(&str, &str)], extra: &[&str]) -> Cluster {
    let volumes: Vec<Volume> = (0..n).map(|_| Volume::with_env(env)).collect();
    let mut args = vec!["-threads", "2"];
    args.extend_from_slice(extra);
    Cluster { master: Master::start(&volumes, &args), volumes }
}

fn keys_of(addr: &str, what: &str) -> Vec<String> {
    let r = get(addr, &format!("/?{what}"));
    assert_eq!(r.status, 200, "{r:?}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect()
}

/// PUT, GET (following the redirect with `follow`), UNLINK, DELETE and a rebuild through a
/// master that holds the secret; returns nothing, panics on the first difference.
fn everything_works(c: &Cluster, s: &SecretFile, follow: impl Fn(&str) -> Response) {
    let m = c.addr();
    for k in ["/a", "/b", "/c"] {
        let r = request(&m, "PUT", k, &[], format!("value {k}").as_bytes());
        assert_eq!(r.status, 201, "PUT {k}: {r:?}");
    }
    for k in ["/a", "/b", "/c"] {
        let r = follow(k);
        assert_eq!((r.status, r.text()), (200, format!("value {k}")), "GET {k}");
    }
    assert_eq!(request(&m, "UNLINK", "/b", &[], b"").status, 204);
    assert_eq!(request(&m, "DELETE", "/c", &[], b"").status, 204);
    assert_eq!(get(&m, "/b").status, 404);
    assert_eq!((keys_of(&m, "list"), keys_of(&m, "unlinked")), (vec!["/a".to_string()], vec!["/b".to_string()]));
    assert_eq!(request(&m, "REBALANCE", "/a", &[], b"").status, 204);

    // rebuild reads the volumes' listings (which a SIGN=1 volume opens to the secret only)
    let vols: Vec<String> = c.volumes.iter().map(Volume::addr).collect();
    let db = TempDir::new("rebuilt");
    let (dbs, vs) = (db.path().display().to_string(), vols.join(","));
    let (code, stderr) =
        run_mkv(&["rebuild", "-volumes", &vs, "-db", &dbs, "-replicas", "2", "-volume-secret", s.path()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("2 keys seen, 1 live, 1 unlinked"), "{stderr}");
    assert!(!stderr.contains(&s.secret));
    let path = db.path().to_path_buf();
    let again = Master::start_args(db, server_args(&path, &vols, &["-replicas", "2", "-volume-secret", s.path()]));
    assert_eq!(
        (keys_of(&again.addr(), "list"), keys_of(&again.addr(), "unlinked")),
        (vec!["/a".to_string()], vec!["/b".to_string()])
    );
    assert!(!c.master.lines().iter().chain(again.lines().iter()).any(|l| l.contains(&s.secret)));
}

#[test]
fn a_master_with_the_secret_writes_protected_volumes_and_one_without_cannot() {
    let s = SecretFile::new();
    let c = protected_cluster(3, &[("SECRET_FILE", s.path())], &["-replicas", "2", "-volume-secret", s.path()]);
    // reads stay open (no SIGN): redirects are plain
    assert_eq!(request(&c.addr(), "PUT", "/plain", &[], b"p").status, 201);
    let r = get(&c.addr(), "/plain");
    assert!(!r.header("location").unwrap().contains('?'), "{r:?}");
    assert_eq!(request(&c.addr(), "DELETE", "/plain", &[], b"").status, 204);
    everything_works(&c, &s, |k| get_follow(&c.addr(), k));

    // the same volumes under a master without the secret: its writes are refused (5xx, the
    // key not readable), but the secret shows nowhere
    let vols: Vec<String> = c.volumes.iter().map(Volume::addr).collect();
    let files: Vec<Vec<String>> = c.volumes.iter().map(Volume::files).collect();
    let other = Master::start_on(&vols, &["-threads", "2", "-replicas", "2"]);
    let r = request(&other.addr(), "PUT", "/x", &[], b"x");
    assert!(r.status >= 500, "{r:?}");
    assert_eq!(get(&other.addr(), "/x").status, 404);
    assert_eq!(c.volumes.iter().map(Volume::files).collect::<Vec<_>>(), files, "nothing written");
}

#[test]
fn signed_redirects_open_signing_volumes_for_a_while() {
    let s = SecretFile::new();
    let env = [("SECRET_FILE", s.path()), ("SIGN", "1")];
    // default subvolumes: the signed path includes /svXX
    let c = protected_cluster(3, &env, &["-replicas", "2", "-volume-secret", s.path(), "-sign-redirects", "60s"]);
    assert_eq!(request(&c.addr(), "PUT", "/hello", &[], b"signed bytes").status, 201);

    let r = get(&c.addr(), "/hello");
    assert_eq!(r.status, 302, "{r:?}");
    let location = r.header("location").unwrap().to_string();
    let (host, target) = split_url(&location);
    let (path, query) = target.split_once('?').expect("a signed Location");
    assert!(path.starts_with("/sv") && path.ends_with(&key_path("/hello")), "{location}");
    let expires: u64 = query.rsplit_once("expires=").unwrap().1.parse().unwrap();
    assert!((now() + 59..=now() + 61).contains(&expires), "expires {expires}, now {}", now());
    assert_eq!(format!("?{query}"), signature(&s.secret, path, expires), "the master signs as nginx checks");

    // nginx accepts the master's link: bytes, HEAD size
    let r = get(host, target);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"signed bytes"[..]), "{r:?}");
    assert_eq!(request(host, "HEAD", target, &[], b"").header("content-length"), Some("12"));
    // tampered, moved to another file, expired, or missing: refused
    let flipped = flip_md5(target);
    assert_eq!(get(host, &flipped).status, 403, "{flipped}");
    let later = target.replace(&expires.to_string(), &(expires + 1).to_string());
    assert_eq!(get(host, &later).status, 403, "{later}");
    let elsewhere = format!("{}{}?{query}", &path[..path.len() - key_path("/hello").len()], key_path("/other"));
    assert_eq!(get(host, &elsewhere).status, 403);
    assert_eq!(get(host, &format!("{path}{}", signature(&s.secret, path, now() - 1))).status, 410);
    assert_eq!(get(host, path).status, 403, "a direct unsigned GET");
    assert_eq!(request(&c.addr(), "DELETE", "/hello", &[], b"").status, 204);

    // everything else, through signed redirects
    everything_works(&c, &s, |k| get_follow(&c.addr(), k));
}

#[test]
fn the_master_refuses_bad_secret_setups_in_one_line() {
    let dir = TempDir::new("badsecret");
    let weak = dir.path().join("weak");
    std::fs::write(&weak, "tooshort-but-$ecret\n").unwrap();
    let missing = dir.path().join("missing").display().to_string();
    let weak = weak.display().to_string();
    let db = dir.path().join("db").display().to_string();
    let good = SecretFile::new();
    for (args, says) in [
        (vec!["-volume-secret", missing.as_str()], "No such file"),
        (vec!["-volume-secret", weak.as_str()], "16-512 characters"),
        (vec!["-sign-redirects", "60s"], "needs -volume-secret"),
        (vec!["-volume-secret", good.path(), "-sign-redirects", "100ms"], "at least 1s"),
    ] {
        let mut all = vec!["server", "-db", &db, "-volumes", "127.0.0.1:1", "-replicas", "1"];
        all.extend(args.iter());
        let (code, stderr) = run_mkv(&all);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains('\n') && stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("$ecret"), "the file's content is never shown: {stderr}");
    }
    let (_, help) = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mkv")).arg("--help").output().unwrap();
        (out.status, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert!(help.contains("-volume-secret <FILE>") && help.contains("-sign-redirects <DUR>"), "{help}");
}

#[test]
fn bin_volume_refuses_bad_protection_in_one_line() {
    let dir = TempDir::new("badvolume");
    let weak = dir.path().join("weak");
    std::fs::write(&weak, "not a $ecret at all\n").unwrap();
    let weak = weak.display().to_string();
    let missing = dir.path().join("missing").display().to_string();
    let port = free_port().to_string();
    for (env, says) in [
        (vec![("SIGN", "1")], "SIGN=1 needs SECRET_FILE"),
        (vec![("SIGN", "yes")], "SIGN must be 1"),
        (vec![("SECRET_FILE", missing.as_str())], "is not a readable file"),
        (vec![("SECRET_FILE", weak.as_str())], "16-512 characters"),
    ] {
        let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/bin/volume"))
            .arg(dir.path().join("vol"))
            .env("PORT", &port)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        assert_eq!(out.status.code(), Some(1), "{env:?}: {err}");
        assert!(!err.contains('\n') && err.contains(says) && !err.contains("$ecret"), "{env:?}: {err}");
    }
}
