//! mkv: a small, fast distributed blob store. A master keeps the index (key → replica
//! volumes) in RocksDB and answers GETs with a redirect; stock nginx servers hold the bytes.
//!
//! # Layout
//! - `main`: the command line only: flags (Go-style `-flag` too), dispatch.
//! - [`config`]: the settings every command shares, validated once.
//! - [`placement`]: key → file path, key → volumes (byte-compatible with minikeyvalue).
//! - [`record`]: the index record and its versioned, checksummed encoding.
//! - [`index`]: RocksDB with column families `live` and `unlinked`.
//! - [`http`]: our HTTP/1.1: request heads, body framing, responses, limits.
//! - [`volume`]: the nginx side: pooled keep-alive clients, health, fan-out of one body.
//! - [`store`]: the operations on keys every front end speaks: writes, deletes, moves, locks.
//! - [`server`]: one monoio runtime per core, the connection loop, the native API, the admin port.
//! - [`metrics`], [`admin`]: what the master counts, and how an operator reads it.
//! - [`walk`]: what every volume holds, from their listings, shard by shard.
//! - [`rebuild`], [`rebalance`], [`verify`], [`snapshot`]: the batch tools (verify also runs
//!   in the master, as its scrub).
//! - [`benchindex`]: bench/'s synthetic index of millions of keys (hidden `bench-index`).
//! - [`s3`]: S3 on the API port: objects, buckets, listings, multipart; SigV4/SigV2, aws-chunked, XML.

/// Every module's `eprintln!` (this one shadows std's in the whole crate): std's panics
/// when stderr is a pipe whose reader went away (`mkv server 2>&1 | head`, a logger that
/// died, journald restarted), and the master exited with 101 at the next line it logged.
/// A log line that cannot be written is dropped; serving matters more than the log.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod admin;
mod benchindex;
mod config;
mod dates;
mod http;
mod index;
mod md5;
mod metrics;
mod pipe;
mod placement;
mod progress;
mod rebalance;
mod rebuild;
mod record;
mod s3;
mod served;
mod server;
mod snapshot;
mod store;
mod verify;
mod volume;
mod walk;

use std::{path::PathBuf, process::ExitCode};

use clap::{ArgAction, Parser, Subcommand};

use config::{parse_duration, Config, Limits};

/// `-concurrency` of `rebalance -online` when not given (see where it is used).
const ONLINE_REBALANCE_CONCURRENCY: usize = 32;
/// `-replicas` when not given (but by `rebalance -online`, which keeps the master's).
const DEFAULT_REPLICAS: usize = 3;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its number in mimalloc v3's `mi_option_t`, which the
/// Rust crate does not name; the test `purge_delay_is_option_15` checks it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory the master frees goes back to the system at once, and transparent huge pages are
/// off. mimalloc keeps freed pages for a second (its purge delay) and asks for huge pages on
/// its regions (`madvise`), where a 2 MiB page is resident whole once one byte of it is
/// touched. Measured here during a 1 GiB boto3 multipart upload (ten 8 MiB parts streamed
/// at once, 256 KiB pieces moving between threads): master peak RSS 73-105 MiB with both,
/// 71-79 MiB without huge pages, 55-57 MiB without either, at the same upload rate (12-15 s);
/// idle RSS 33 → 27 MiB. bench/results.md shows what it costs the GET path.
fn lean_memory() {
    // SAFETY: plain integers in; PR_SET_THP_DISABLE touches only this process's flags, and
    // mi_option_set only an option's value
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        // an old kernel: the RSS figures above do not hold, nothing else changes
        eprintln!("mkv: warning: cannot turn transparent huge pages off: {}", std::io::Error::last_os_error());
    }
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

#[derive(Parser, Debug)]
#[command(
    name = "mkv",
    version,
    // as with Go's flag package, a flag given twice takes the last value
    args_override_self = true,
    about = "A distributed blob store: RocksDB index, nginx volumes, 302 redirects for reads",
    after_help = "Flags take one dash or two (-volumes, --volumes), before or after the command.\n\
                  Example: mkv server -volumes localhost:3001,localhost:3002,localhost:3003 -db /tmp/indexdb/"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    flags: Flags,
    /// The flags given on the command line (their ids), as opposed to defaults.
    #[arg(skip)]
    given: Vec<String>,
}

impl Cli {
    fn try_parse_from(args: &[String]) -> Result<Cli, clap::Error> {
        use clap::{parser::ValueSource, CommandFactory, FromArgMatches};
        let m = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&m)?;
        // a global flag given after the command is the subcommand's
        let levels = [Some(&m), m.subcommand().map(|(_, sub)| sub)];
        cli.given = m
            .ids()
            .map(|id| id.as_str())
            .filter(|id| levels.iter().flatten().any(|l| l.value_source(id) == Some(ValueSource::CommandLine)))
            .map(String::from)
            .collect();
        Ok(cli)
    }

    /// The command's name as typed.
    fn name(&self) -> &'static str {
        match self.cmd {
            Cmd::Server => "server",
            Cmd::Rebuild => "rebuild",
            Cmd::Rebalance => "rebalance",
            Cmd::Verify => "verify",
            Cmd::Snapshot => "snapshot",
            Cmd::BenchIndex { .. } => "bench-index",
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the master: the HTTP API on -port
    Server,
    /// Rebuild an index from what the volumes hold (into an empty -db)
    Rebuild,
    /// Move every key's replicas to where -volumes places them
    Rebalance,
    /// Compare the index with what the volumes hold (exit 1 when something is wrong); -repair fixes it
    Verify,
    /// Have a running master (-online) copy its index into -to DIR
    Snapshot,
    /// For bench/ only: write -keys records PREFIX0… straight into -db, as the master would
    /// for values of 64 bytes on -volumes (no files are written)
    #[command(hide = true)]
    BenchIndex {
        /// Records to write
        #[arg(long)]
        keys: u64,
        /// Keys are PREFIX0 … PREFIX{keys-1}
        #[arg(long, default_value = "/bench/k")]
        prefix: String,
    },
}

#[derive(clap::Args, Debug)]
struct Flags {
    /// RocksDB index folder (required; rebalance and verify may name a running master with -online instead)
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Volume servers, comma separated host:port (required; verify -online takes the master's)
    #[arg(long, global = true, value_name = "a,b,c", value_delimiter = ',')]
    volumes: Vec<String>,
    /// Master port (0 picks a free one and prints it)
    #[arg(allow_negative_numbers = true, long, global = true, default_value_t = 3000)]
    port: u16,
    /// API address [default: 0.0.0.0, on -port]
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Admin listener (/metrics, /health, status page, admin methods); '' turns it off
    /// [default: 127.0.0.1, on -port + 1000]
    #[arg(long, global = true, value_name = "ADDR")]
    admin: Option<String>,
    /// File holding the bearer token admin methods (VOLUMES) need; without it they are
    /// taken from this host only. Batch commands' -online send it
    #[arg(long, global = true, value_name = "FILE")]
    admin_token: Option<PathBuf>,
    /// On SIGTERM/SIGINT, time to finish requests in flight before exiting
    #[arg(allow_hyphen_values = true, long, global = true, default_value = "10s", value_parser = parse_duration)]
    drain: std::time::Duration,
    /// Online rebalance: how long a moved key's old replicas stay after its record names the
    /// new ones, so that a client following a redirect answered just before still finds them
    #[arg(allow_hyphen_values = true, long, global = true, default_value = "2s", value_parser = parse_duration)]
    move_grace: std::time::Duration,
    /// File of S3 credentials, lines 'ACCESS_KEY SECRET_KEY': every S3 request must then be
    /// signed (SigV4, or SigV2 as boto3 presigns by default) by one of them; without it S3
    /// requests are taken unsigned
    #[arg(long, global = true, value_name = "FILE")]
    s3_keys: Option<PathBuf>,
    /// A long S3 write (CompleteMultipartUpload, CopyObject, UploadPartCopy of gigabytes)
    /// answers 200 after this and sends a space as often until its outcome (S3 does the
    /// same), so that clients' read timeouts (botocore's: 60s) do not cut it off
    #[arg(allow_hyphen_values = true, long, global = true, default_value = "10s", value_parser = parse_duration)]
    s3_keepalive: std::time::Duration,
    /// Fsync the index's write-ahead log before answering a write (group commit), for
    /// deployments that must survive power loss, not only kill -9
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, default_missing_value = "true")]
    sync: bool,
    /// The index's block cache in MiB: RocksDB keeps blocks uncompressed there, ~80 bytes a
    /// key, so size it for the keys read often (512 MiB holds ~6M)
    #[arg(allow_negative_numbers = true, long, global = true, value_name = "MIB", default_value_t = index::DEFAULT_CACHE_MB)]
    index_cache: usize,
    /// Receive buffer of each connection to a volume, in bytes (0: the kernel's autotuning,
    /// which lets nginx queue many MiB ahead of a reader and costs both sides CPU)
    #[arg(allow_negative_numbers = true, long, global = true, value_name = "BYTES", default_value_t = config::DEFAULT_VOLUME_RCVBUF)]
    volume_rcvbuf: usize,
    /// Client connections open at most [default: the open-files limit less a reserve]
    #[arg(allow_negative_numbers = true, long, global = true, default_value_t = 0, hide_default_value = true)]
    max_conns: usize,
    /// Replicas per key (at most the number of volumes) [default: 3; rebalance -online: the
    /// master's count]
    #[arg(allow_negative_numbers = true, long, global = true)]
    replicas: Option<usize>,
    /// Folders (disks) per volume server, sv00...; 1 means none
    #[arg(allow_negative_numbers = true, long, global = true, default_value_t = 10)]
    subvolumes: u32,
    /// Where a GET for a missing key is redirected (host:port)
    #[arg(long, global = true, value_name = "HOST:PORT")]
    fallback: Option<String>,
    /// Refuse DELETE (403) unless the key was UNLINKed first
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, default_missing_value = "true")]
    protect: bool,
    /// Compute and store each value's MD5 (-md5sum=false turns it off)
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, value_parser = clap::builder::BoolishValueParser::new(), default_value_t = true, default_missing_value = "true")]
    md5sum: bool,
    /// A volume that does not answer within this is down (Go duration: 500ms, 2s)
    #[arg(allow_hyphen_values = true, long, global = true, default_value = "1s", value_parser = parse_duration)]
    voltimeout: std::time::Duration,
    /// Runtimes, one per core [default: all cores]
    #[arg(allow_negative_numbers = true, long, global = true)]
    threads: Option<usize>,
    /// Log each request to stderr
    #[arg(short = 'v', long = "verbose", alias = "v", global = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, default_missing_value = "true")]
    verbose: bool,
    /// Each thread caches the GET answers of the N keys it read last and of up to N more
    /// (~350 bytes each), and as many keys found missing (0 turns both off)
    #[arg(allow_negative_numbers = true, long, global = true, default_value_t = 131072)]
    cache_keys: usize,
    /// Longest request head (request line + headers) in bytes, at least 1024: 431 beyond
    #[arg(allow_negative_numbers = true, long, global = true, default_value_t = Limits::default().max_head)]
    max_head: usize,
    /// Longest request target in bytes, at least 1024: 414 beyond
    #[arg(allow_negative_numbers = true, long, global = true, default_value_t = Limits::default().max_uri)]
    max_uri: usize,
    /// Largest request body in bytes, 0 = no limit: 413 beyond
    #[arg(allow_negative_numbers = true, long, global = true, default_value_t = 0)]
    max_body: u64,
    /// Time for a request head to arrive once started: 408 and close beyond
    #[arg(allow_hyphen_values = true, long, global = true, default_value = "10s", value_parser = parse_duration)]
    header_timeout: std::time::Duration,
    /// Time an idle keep-alive connection is kept open
    #[arg(allow_hyphen_values = true, long, global = true, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: std::time::Duration,
    /// Time one read of a request body may wait for bytes
    #[arg(allow_hyphen_values = true, long, global = true, default_value = "30s", value_parser = parse_duration)]
    body_timeout: std::time::Duration,
    /// Bytes per second a request body must average once -body-timeout has passed (0: no minimum)
    #[arg(allow_negative_numbers = true, long, global = true, default_value_t = Limits::default().body_min_rate)]
    body_min_rate: u64,
    /// Time an answer may take to be written (the client must keep reading)
    #[arg(allow_hyphen_values = true, long, global = true, default_value = "30s", value_parser = parse_duration)]
    send_timeout: std::time::Duration,
    /// rebuild: write into a -db that already holds keys
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, default_missing_value = "true")]
    force: bool,
    /// rebuild: read every replica and record the MD5 most of them hold
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, default_missing_value = "true")]
    verify: bool,
    /// rebalance: print what would move, move nothing
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, default_missing_value = "true")]
    dry_run: bool,
    /// rebalance, verify, snapshot: run against this running master (http://host:port) instead of -db
    #[arg(long, global = true, value_name = "URL")]
    online: Option<String>,
    /// rebuild/rebalance/verify: requests in flight at once [default: 256; rebalance -online: 32]
    #[arg(allow_negative_numbers = true, long, global = true)]
    concurrency: Option<usize>,
    /// verify: read every replica and check its MD5 and size against the record
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, default_missing_value = "true")]
    deep: bool,
    /// verify: repair what was found (copy replicas again, fix markers, delete orphans)
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, default_missing_value = "true")]
    repair: bool,
    /// verify, scrub: files younger than this are spared (a write may be in flight)
    #[arg(long, global = true, default_value = "1h", value_parser = parse_duration, allow_hyphen_values = true)]
    grace: std::time::Duration,
    /// verify -deep, scrub: MiB/s read at most (0: no limit) [default: 0; the scrub: 16]
    #[arg(long, global = true, value_name = "MiB/s", hide_default_value = true, allow_negative_numbers = true)]
    rate: Option<f64>,
    /// snapshot: the folder (new) the master copies its index into
    #[arg(long, global = true, value_name = "DIR")]
    to: Option<PathBuf>,
    /// server: verify -deep -repair in the background every DUR (at -rate, default 16 MiB/s)
    #[arg(allow_hyphen_values = true, long, global = true, value_name = "DUR", value_parser = parse_duration)]
    scrub: Option<std::time::Duration>,
    /// File with the volumes' secret (bin/volume SECRET_FILE): sent to them as X-Mkv-Secret
    #[arg(long, global = true, value_name = "FILE")]
    volume_secret: Option<PathBuf>,
    /// Sign each redirect to a volume for this long (bin/volume SIGN=1), e.g. 60s; needs -volume-secret
    #[arg(allow_hyphen_values = true, long, global = true, value_name = "DUR", value_parser = parse_duration)]
    sign_redirects: Option<std::time::Duration>,
}

/// The token in `path`: its first line, trimmed; empty or unreadable is an error (the token
/// itself never appears in a message).
fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!("{} holds no token", path.display()));
    }
    Ok(token.to_string())
}

/// Go's flag package takes `-name` as well as `--name`; clap wants two dashes for long names.
fn go_style(args: impl Iterator<Item = String>) -> Vec<String> {
    args.enumerate()
        .map(|(i, a)| {
            let b = a.as_bytes();
            let long_single = i > 0 && b.len() > 2 && b[0] == b'-' && b[1] != b'-' && !b[1].is_ascii_digit();
            if long_single {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// The flags each command reads, the only ones its `--help` lists. Every flag is global and
/// taken by every command (a script may pass one set to all); listing all ~45 under each
/// command said nothing of which mattered where.
const SHOWN: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "db",
            "volumes",
            "port",
            "listen",
            "admin",
            "admin_token",
            "drain",
            "move_grace",
            "s3_keys",
            "s3_keepalive",
            "sync",
            "index_cache",
            "volume_rcvbuf",
            "max_conns",
            "replicas",
            "subvolumes",
            "fallback",
            "protect",
            "md5sum",
            "voltimeout",
            "threads",
            "verbose",
            "cache_keys",
            "max_head",
            "max_uri",
            "max_body",
            "header_timeout",
            "idle_timeout",
            "body_timeout",
            "body_min_rate",
            "send_timeout",
            "scrub",
            "grace",
            "rate",
            "volume_secret",
            "sign_redirects",
        ],
    ),
    (
        "rebuild",
        &[
            "db",
            "volumes",
            "replicas",
            "subvolumes",
            "voltimeout",
            "force",
            "verify",
            "concurrency",
            "volume_secret",
            "volume_rcvbuf",
        ],
    ),
    (
        "rebalance",
        &[
            "db",
            "volumes",
            "replicas",
            "subvolumes",
            "voltimeout",
            "dry_run",
            "online",
            "admin_token",
            "concurrency",
            "volume_secret",
            "volume_rcvbuf",
        ],
    ),
    (
        "verify",
        &[
            "db",
            "volumes",
            "replicas",
            "subvolumes",
            "voltimeout",
            "online",
            "admin_token",
            "deep",
            "repair",
            "grace",
            "rate",
            "concurrency",
            "volume_secret",
            "volume_rcvbuf",
        ],
    ),
    ("snapshot", &["online", "admin_token", "to"]),
];

/// Flags that change what a command does (where [`SHOWN`] lists them): given to another
/// command they were ignored silently (`verify -repair -dry-run` repaired), so they are
/// refused. The settings every command shares (-port, -protect, …) stay taken by all.
const OWN: &[&str] = &["force", "verify", "dry_run", "deep", "repair", "grace", "rate", "scrub", "to"];

/// The first of [`OWN`] given to a command that does not read it, as a usage error.
fn misplaced(cli: &Cli) -> Option<String> {
    let name = cli.name();
    let reads = |cmd: &str, id: &str| SHOWN.iter().any(|(n, ids)| *n == cmd && ids.contains(&id));
    let id = OWN.iter().find(|id| cli.given.iter().any(|g| g == *id) && !reads(name, id))?;
    let readers: Vec<&str> = SHOWN.iter().filter(|(_, ids)| ids.contains(id)).map(|(n, _)| *n).collect();
    Some(format!("-{} is for {} only: {name} does not read it", id.replace('_', "-"), readers.join(" and ")))
}

/// `mkv <name> --help` as printed: the flags [`SHOWN`] lists for it, the others hidden (the
/// command is built for this rendering only: clap parses with every flag).
fn scoped_help(name: &str) -> Option<String> {
    use clap::CommandFactory;
    let shown = SHOWN.iter().find(|(n, _)| *n == name)?.1;
    let mut cmd = Cli::command().bin_name("mkv");
    cmd.build();
    let sc = cmd.find_subcommand_mut(name)?;
    let ids: Vec<String> = sc.get_arguments().filter(|a| a.is_global_set()).map(|a| a.get_id().to_string()).collect();
    let mut sc = sc.clone();
    for id in ids.iter().filter(|id| !shown.contains(&id.as_str())) {
        sc = sc.mut_arg(id, |a| a.hide(true));
    }
    Some(sc.render_help().to_string())
}

/// The command a `--help` is about: the first argument naming one that is not a flag's
/// value (`mkv -to server snapshot --help` is about snapshot).
fn help_topic(args: &[String]) -> Option<&str> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let takes_value = |flag: &str| {
        let long = flag.strip_prefix("--").filter(|l| !l.contains('='));
        long.and_then(|l| cmd.get_arguments().find(|a| a.get_long() == Some(l)))
            .is_some_and(|a| a.get_action().takes_values())
    };
    let mut args = args.iter().skip(1).map(String::as_str);
    while let Some(a) = args.next() {
        if takes_value(a) {
            args.next();
        } else if SHOWN.iter().any(|(n, _)| *n == a) {
            return Some(a);
        }
    }
    None
}

/// What `main` runs once the command line is found sound.
enum Job {
    /// With the `-s3-keys` read.
    Server(Option<s3::sigv4::Keys>),
    Rebuild(rebuild::Options),
    Rebalance(rebalance::Options),
    BenchIndex {
        keys: u64,
        prefix: String,
    },
    Verify(verify::Options),
    Snapshot {
        online: String,
        to: PathBuf,
    },
}

fn main() -> ExitCode {
    lean_memory();
    let args: Vec<String> = go_style(std::env::args());
    let cli = match parse(&args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // every usage error leaves by this one door: one line, exit 2
    let (cfg, job) = match plan(cli) {
        Ok(plan) => plan,
        Err(usage) => {
            eprintln!("mkv: {usage}");
            return ExitCode::from(2);
        }
    };
    volume::secret::install(cfg.volume_secret.as_ref(), cfg.sign_redirects);
    let result = match job {
        Job::Server(keys) => {
            s3::serve::install_keys(keys);
            server::run(cfg)
        }
        Job::Rebuild(opts) => rebuild::run(cfg, opts),
        Job::Rebalance(opts) => rebalance::run(cfg, opts),
        Job::BenchIndex { keys, prefix } => benchindex::run(&cfg, keys, &prefix),
        Job::Verify(opts) => match verify::run(cfg, opts) {
            Ok(true) => Ok(()),
            // the summary said what is wrong
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Job::Snapshot { online, to } => snapshot::run(&cfg, &online, &to),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkv: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line as clap reads it; help and clap's errors are printed here, and the
/// exit code they end with is the `Err`.
fn parse(args: &[String]) -> Result<Cli, ExitCode> {
    match Cli::try_parse_from(args) {
        Ok(c) => Ok(c),
        Err(e) if !e.use_stderr() => {
            match help_topic(args).and_then(scoped_help).filter(|_| e.kind() == clap::error::ErrorKind::DisplayHelp) {
                Some(text) => {
                    use std::io::Write as _;
                    let _ = write!(std::io::stdout().lock(), "{text}");
                }
                None => {
                    let _ = e.print();
                }
            }
            Err(ExitCode::SUCCESS)
        }
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::MissingSubcommand
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            // clap's answer is the whole help, whose first line (the about) says nothing of it
            eprintln!("mkv: a command is needed: server, rebuild, rebalance, verify or snapshot (see 'mkv --help')");
            Err(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("mkv: {}", one_line(&e));
            Err(ExitCode::from(2))
        }
    }
}

/// clap's error in one line (its message is several, with usage); a yes/no value given
/// after a space (`-md5sum false`), which Go's flags do not take either, is told how.
fn one_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("bad arguments").trim_start_matches("error: ");
    let stray = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.as_str(),
        _ => "",
    };
    if e.kind() == clap::error::ErrorKind::UnknownArgument && ["true", "false"].contains(&stray) {
        return format!("{first}: a yes/no flag takes its value after '=' (-md5sum=false)");
    }
    format!("{first} (see 'mkv --help')")
}

/// Checks the flags against each other and the command, and reads the files they name:
/// the configuration and the job, or the one-line usage error.
fn plan(cli: Cli) -> Result<(Config, Job), String> {
    let f = &cli.flags;
    if let Some(url) = &f.online {
        if !matches!(cli.cmd, Cmd::Rebalance | Cmd::Verify | Cmd::Snapshot) {
            return Err("-online is for verify, rebalance and snapshot (this command works on -db)".into());
        }
        config::master_addr(url)?;
    }
    if let Some(usage) = misplaced(&cli) {
        return Err(usage);
    }
    let f = cli.flags;
    if f.online.is_some() && f.dry_run {
        return Err("-dry-run works offline only (it reads the index directly): give -db, not -online".into());
    }
    // an online command talks to the master, which owns the index
    let online_only = matches!(cli.cmd, Cmd::Verify | Cmd::Snapshot) && f.online.is_some();
    let db = match (f.db, &f.online, &cli.cmd) {
        (Some(_), Some(_), Cmd::Rebalance | Cmd::Verify | Cmd::Snapshot) => {
            return Err("-db and -online: give one (-db when the master is stopped, -online while it runs)".into())
        }
        (Some(db), _, _) => db,
        (None, Some(_), Cmd::Rebalance | Cmd::Verify | Cmd::Snapshot) => PathBuf::new(),
        (None, None, Cmd::Snapshot) => {
            return Err("snapshot needs -online http://master:port (the running master takes it)".into())
        }
        (None, _, _) => return Err("-db is required (the RocksDB index folder)".into()),
    };
    if matches!(f.rate, Some(r) if !(r >= 0.0 && r.is_finite())) {
        return Err("-rate must be a number of MiB/s, 0 or more".into());
    }
    if f.scrub.is_some_and(|d| d < std::time::Duration::from_secs(1)) {
        return Err("-scrub must be at least 1s".into());
    }
    if matches!(cli.cmd, Cmd::Snapshot) && f.to.is_none() {
        return Err("snapshot needs -to DIR (a new folder on the master's host)".into());
    }
    let admin = match f.admin.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(a) => match a.parse() {
            Ok(addr) => Some(Some(addr)),
            Err(_) => {
                return Err(format!("-admin: '{a}' is not host:port (an IP address and a port, e.g. 127.0.0.1:4000)"))
            }
        },
    };
    let admin_token = f.admin_token.as_deref().map(read_token).transpose().map_err(|e| format!("-admin-token: {e}"))?;
    if f.concurrency == Some(0) {
        return Err("-concurrency must be at least 1".into());
    }
    // an online rebalance shares the volumes with the clients the master serves meanwhile:
    // 256 copies at once stalled small volumes' disks past -voltimeout, failing its own moves
    // and the clients' writes alike
    let online_rebalance = matches!(cli.cmd, Cmd::Rebalance) && f.online.is_some();
    let concurrency = f.concurrency.unwrap_or(if online_rebalance { ONLINE_REBALANCE_CONCURRENCY } else { 256 });
    let volume_secret = f.volume_secret.as_deref().map(volume::secret::Secret::read).transpose()?;
    let cfg = Config {
        db,
        // `a:1, b:2`, as lists are written: the spaces are not part of the names
        volumes: f.volumes.iter().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect(),
        port: f.port,
        // an online rebalance without -replicas keeps the master's count, which the master
        // checks the new list against; here nothing is placed, so 1 passes any list
        replicas: f.replicas.unwrap_or(if online_rebalance { 1 } else { DEFAULT_REPLICAS }),
        subvolumes: f.subvolumes,
        fallback: f.fallback,
        protect: f.protect,
        md5sum: f.md5sum,
        voltimeout: f.voltimeout,
        threads: f.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        verbose: f.verbose,
        cache_keys: f.cache_keys,
        limits: Limits {
            max_head: f.max_head,
            max_uri: f.max_uri,
            max_body: f.max_body,
            header_timeout: f.header_timeout,
            idle_timeout: f.idle_timeout,
            body_timeout: f.body_timeout,
            body_min_rate: f.body_min_rate,
            send_timeout: f.send_timeout,
        },
        listen: f.listen,
        admin,
        admin_token,
        drain: f.drain,
        move_grace: f.move_grace,
        s3_keepalive: f.s3_keepalive,
        max_conns: f.max_conns,
        sync: f.sync,
        index_cache_mb: f.index_cache,
        volume_rcvbuf: f.volume_rcvbuf,
        volume_secret,
        sign_redirects: f.sign_redirects,
        scrub: f.scrub.map(|every| config::Scrub { every, rate: f.rate.unwrap_or(16.0), grace: f.grace }),
    };
    // an online verify or snapshot takes the volumes from the master
    if !(online_only && cfg.volumes.is_empty()) {
        cfg.validate()?;
    }
    let job = match cli.cmd {
        Cmd::Server => Job::Server(s3::serve::read_keys(f.s3_keys.as_deref())?),
        Cmd::Rebuild => Job::Rebuild(rebuild::Options { force: f.force, verify: f.verify, concurrency }),
        Cmd::Rebalance => Job::Rebalance(rebalance::Options {
            dry_run: f.dry_run,
            online: f.online,
            replicas: f.replicas,
            concurrency,
        }),
        Cmd::BenchIndex { keys, prefix } => Job::BenchIndex { keys, prefix },
        Cmd::Verify => Job::Verify(verify::Options {
            online: f.online,
            deep: f.deep,
            repair: f.repair,
            grace: f.grace,
            rate: f.rate.unwrap_or(0.0),
            concurrency,
        }),
        Cmd::Snapshot => Job::Snapshot { online: f.online.unwrap_or_default(), to: f.to.unwrap_or_default() },
    };
    Ok((cfg, job))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(&go_style(args.iter().map(|s| s.to_string())))
    }

    /// `mkv <cmd> --help`, as printed.
    fn help(cmd: &str) -> String {
        let args: Vec<String> = ["mkv", "-db", "/x", cmd, "--help"].iter().map(|s| s.to_string()).collect();
        assert_eq!(help_topic(&args), Some(cmd));
        scoped_help(cmd).expect("a command SHOWN lists")
    }

    #[test]
    fn the_help_topic_is_the_command_not_a_flag_value_that_names_one() {
        let args = |a: &[&str]| go_style(a.iter().map(|s| s.to_string()));
        assert_eq!(help_topic(&args(&["mkv", "-to", "server", "snapshot", "--help"])), Some("snapshot"));
        assert_eq!(help_topic(&args(&["mkv", "--db=verify", "rebuild", "-h"])), Some("rebuild"));
        assert_eq!(help_topic(&args(&["mkv", "--help"])), None);
    }

    #[test]
    fn each_command_lists_the_flags_it_reads() {
        let snapshot = help("snapshot");
        for flag in ["--online", "--to", "--admin-token"] {
            assert!(snapshot.contains(flag), "{flag}:\n{snapshot}");
        }
        for flag in ["--db", "--volumes", "--max-head", "--port", "--repair"] {
            assert!(!snapshot.contains(flag), "{flag}:\n{snapshot}");
        }
        let verify = help("verify");
        assert!(verify.contains("--deep") && verify.contains("--grace") && !verify.contains("--s3-keys"), "{verify}");
        let server = help("server");
        assert!(
            server.contains("--max-head") && server.contains("--s3-keys") && !server.contains("--dry-run"),
            "{server}"
        );
        // every flag is still taken by every command
        assert!(parse(&["mkv", "snapshot", "-online", "http://a:1", "-to", "/x", "-max-head", "4096"]).is_ok());
        // each flag named in SHOWN exists
        let all = help("server") + &help("rebuild") + &help("rebalance") + &help("verify") + &snapshot;
        for (_, shown) in SHOWN {
            for id in *shown {
                assert!(all.contains(&format!("--{}", id.replace('_', "-"))), "{id}");
            }
        }
    }

    /// The option number lean_memory sets is mimalloc's purge delay: the only option of v3
    /// whose default is 1000 (ms). A mimalloc that renumbers its options fails here.
    #[test]
    fn purge_delay_is_option_15() {
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
    }

    #[test]
    fn flags_go_style_anywhere() {
        let c = parse(&["mkv", "-volumes", "a:1,b:2", "server", "-db", "/x", "-md5sum=false", "-v", "--port", "9"])
            .unwrap();
        assert_eq!(c.flags.volumes, ["a:1", "b:2"]);
        assert_eq!(c.flags.db.as_deref(), Some(std::path::Path::new("/x")));
        assert!(!c.flags.md5sum);
        assert!(c.flags.verbose);
        assert_eq!(c.flags.port, 9);
        let c = parse(&["mkv", "server", "-protect", "-voltimeout", "500ms"]).unwrap();
        assert!(c.flags.protect && c.flags.md5sum);
        assert_eq!(c.flags.voltimeout, std::time::Duration::from_millis(500));
        assert!(parse(&["mkv", "server", "-nosuch"]).is_err());
        assert_eq!(parse(&["mkv", "server", "-port", "1", "-port", "2"]).unwrap().flags.port, 2);
        assert!(parse(&["mkv", "server", "-port", "x"]).is_err());
        let c = parse(&["mkv", "server", "-volume-secret", "/etc/mkv/s", "-sign-redirects", "1m"]).unwrap();
        assert_eq!(c.flags.volume_secret.as_deref(), Some(std::path::Path::new("/etc/mkv/s")));
        assert_eq!(c.flags.sign_redirects, Some(std::time::Duration::from_secs(60)));
    }

    /// A yes/no flag takes its value only after `=`, as Go's do: `-protect server` took
    /// `server` for -protect's value ("invalid value 'server'"), so a command line written
    /// minikeyvalue's way (flags first, the command last) failed on any of them. `-v` takes
    /// two dashes and `=` too, as every other flag does.
    #[test]
    fn a_yes_no_flag_before_the_command_leaves_the_command_alone() {
        for flag in ["-protect", "-v", "--v", "-sync", "-md5sum", "-verify", "-dry-run", "-deep", "-repair", "-force"] {
            let c = parse(&["mkv", "-db", "/x", flag, "server"]).unwrap_or_else(|e| panic!("{flag}: {e}"));
            assert!(matches!(c.cmd, Cmd::Server), "{flag}");
        }
        let c = parse(&["mkv", "-protect", "-v", "-sync", "server"]).unwrap();
        assert!(c.flags.protect && c.flags.verbose && c.flags.sync);
        for (v, on) in [("-v=true", true), ("-v=false", false), ("--v=1", true), ("--verbose=false", false)] {
            assert_eq!(parse(&["mkv", "server", v]).unwrap_or_else(|e| panic!("{v}: {e}")).flags.verbose, on, "{v}");
        }
        assert!(!parse(&["mkv", "-md5sum=false", "server"]).unwrap().flags.md5sum);
        // Go's bool flags take no separate value: the word is an argument, which is refused
        // with a word on how
        let err = parse(&["mkv", "server", "-md5sum", "false"]).err().unwrap();
        assert_eq!(
            one_line(&err),
            "unexpected argument 'false' found: a yes/no flag takes its value after '=' (-md5sum=false)"
        );
        let err = parse(&["mkv", "server", "-nosuch"]).err().unwrap();
        assert_eq!(one_line(&err), "unexpected argument '--nosuch' found (see 'mkv --help')");
    }

    /// `-volumes 'a:1, b:2'` (a space after the comma, as people write lists) names a:1 and
    /// b:2; the space stayed part of the name, which never resolved.
    #[test]
    fn spaces_around_volumes_are_not_part_of_them() {
        let cli = parse(&["mkv", "server", "-db", "/x", "-volumes", " a:1, b:2 ,c:3", "-replicas", "1"]).unwrap();
        let (cfg, _) = plan(cli).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.volumes, ["a:1", "b:2", "c:3"]);
    }

    /// A negative value is named as a bad value of its flag: `-voltimeout -1s` said
    /// "unexpected argument '-1' found" (taken for a flag) and `-replicas -1` the same.
    #[test]
    fn a_negative_value_is_a_bad_value_not_a_flag() {
        for (args, says) in [
            (&["-voltimeout", "-1s"][..], "invalid value '-1s' for '--voltimeout"),
            (&["-drain", "-2s"], "invalid value '-2s' for '--drain"),
            (&["-replicas", "-1"], "invalid value '-1' for '--replicas"),
            (&["-max-body", "-1"], "invalid value '-1' for '--max-body"),
            (&["-port", "-5"], "invalid value '-5' for '--port"),
        ] {
            let mut all = vec!["mkv", "server"];
            all.extend_from_slice(args);
            let err = parse(&all).err().unwrap_or_else(|| panic!("{args:?} parsed")).to_string();
            assert!(err.contains(says), "{args:?}: {err}");
        }
        // a flag given no value is still told so
        let err = parse(&["mkv", "server", "-voltimeout"]).err().unwrap().to_string();
        assert!(err.contains("a value is required for '--voltimeout"), "{err}");
    }
}
