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
//! - [`server`]: one monoio runtime per core, the connection loop, handlers, key locks.
//! - [`rebuild`], [`rebalance`]: the batch tools.
//! - [`s3`]: S3 on the API port: request parsing, SigV4, aws-chunked bodies, checksums, XML.

mod config;
mod http;
mod index;
mod md5;
mod placement;
mod progress;
mod rebalance;
mod rebuild;
mod record;
// the S3 building blocks: not called by the server yet (issue 10 wires them in)
#[allow(dead_code)]
mod s3;
mod server;
mod volume;

use std::{path::PathBuf, process::ExitCode};

use clap::{ArgAction, Parser, Subcommand};

use config::{parse_duration, Config, Limits};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the master: the HTTP API on -port
    Server,
    /// Rebuild an index from what the volumes hold (into an empty -db)
    Rebuild,
    /// Move every key's replicas to where -volumes places them
    Rebalance,
}

#[derive(clap::Args, Debug)]
struct Flags {
    /// RocksDB index folder (required)
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Volume servers, comma separated host:port (required)
    #[arg(long, global = true, value_name = "a,b,c", value_delimiter = ',')]
    volumes: Vec<String>,
    /// Master port (0 picks a free one and prints it)
    #[arg(long, global = true, default_value_t = 3000)]
    port: u16,
    /// Replicas per key (at most the number of volumes)
    #[arg(long, global = true, default_value_t = 3)]
    replicas: usize,
    /// Folders (disks) per volume server, sv00...; 1 means none
    #[arg(long, global = true, default_value_t = 10)]
    subvolumes: u32,
    /// Where a GET for a missing key is redirected (host:port)
    #[arg(long, global = true, value_name = "HOST:PORT")]
    fallback: Option<String>,
    /// Refuse DELETE (403) unless the key was UNLINKed first
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    protect: bool,
    /// Compute and store each value's MD5 (-md5sum=false turns it off)
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    md5sum: bool,
    /// A volume that does not answer within this is down (Go duration: 500ms, 2s)
    #[arg(long, global = true, default_value = "1s", value_parser = parse_duration)]
    voltimeout: std::time::Duration,
    /// Runtimes, one per core [default: all cores]
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Log each request to stderr
    #[arg(short = 'v', long = "verbose", global = true, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    verbose: bool,
    /// Keys whose GET answer each thread caches (~250 bytes each), and as many keys found missing (0 turns both off)
    #[arg(long, global = true, default_value_t = 131072)]
    cache_keys: usize,
    /// Longest request head (request line + headers) in bytes: 431 beyond
    #[arg(long, global = true, default_value_t = Limits::default().max_head)]
    max_head: usize,
    /// Longest request target in bytes: 414 beyond
    #[arg(long, global = true, default_value_t = Limits::default().max_uri)]
    max_uri: usize,
    /// Largest request body in bytes, 0 = no limit: 413 beyond
    #[arg(long, global = true, default_value_t = 0)]
    max_body: u64,
    /// Time for a request head to arrive once started: 408 and close beyond
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    header_timeout: std::time::Duration,
    /// Time an idle keep-alive connection is kept open
    #[arg(long, global = true, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: std::time::Duration,
    /// Time one read of a request body may wait for bytes
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration)]
    body_timeout: std::time::Duration,
    /// rebuild: write into a -db that already holds keys
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    force: bool,
    /// rebuild: read every value to recompute its MD5
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    verify: bool,
    /// rebalance: print what would move, move nothing
    #[arg(long, global = true, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    dry_run: bool,
    /// rebalance: run against this running master (http://host:port) instead of -db
    #[arg(long, global = true, value_name = "URL")]
    online: Option<String>,
    /// rebuild/rebalance: requests in flight at once
    #[arg(long, global = true, default_value_t = 256)]
    concurrency: usize,
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(go_style(std::env::args())) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message is several lines with usage; one line says it
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments").trim_start_matches("error: ");
            eprintln!("mkv: {first} (see 'mkv --help')");
            return ExitCode::from(2);
        }
    };
    let f = cli.flags;
    // an online rebalance talks to the master, which owns the index
    let db = match (f.db, &f.online, &cli.cmd) {
        (Some(db), _, _) => db,
        (None, Some(_), Cmd::Rebalance) => PathBuf::new(),
        (None, _, _) => {
            eprintln!("mkv: -db is required (the RocksDB index folder)");
            return ExitCode::from(2);
        }
    };
    if f.concurrency == 0 {
        eprintln!("mkv: -concurrency must be at least 1");
        return ExitCode::from(2);
    }
    let cfg = Config {
        db,
        volumes: f.volumes.into_iter().filter(|v| !v.is_empty()).collect(),
        port: f.port,
        replicas: f.replicas,
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
        },
    };
    if let Err(e) = cfg.validate() {
        eprintln!("mkv: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.cmd {
        Cmd::Server => server::run(cfg),
        Cmd::Rebuild => {
            rebuild::run(cfg, rebuild::Options { force: f.force, verify: f.verify, concurrency: f.concurrency })
        }
        Cmd::Rebalance => {
            rebalance::run(cfg, rebalance::Options { dry_run: f.dry_run, online: f.online, concurrency: f.concurrency })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkv: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(go_style(args.iter().map(|s| s.to_string())))
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
    }
}
