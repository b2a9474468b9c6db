//! The settings every command shares, validated once: a bad value is a one-line error.

use std::{path::PathBuf, time::Duration};

use crate::volume::secret::Secret;

/// Named limits of the HTTP front end (nginx-style: each has a flag and a default).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Request line plus headers; more is `431` (or `414` while still in the request line).
    pub max_head: usize,
    /// Request target length; more is `414`.
    pub max_uri: usize,
    /// Request body; more is `413`. 0 means no limit.
    pub max_body: u64,
    /// Time for a whole request head to arrive once it has started; then `408` and close.
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// Time one read of a request body may wait for bytes.
    pub body_timeout: Duration,
    /// Bytes per second a body must average once `body_timeout` has passed (0: no minimum).
    pub body_min_rate: u64,
    /// Time an answer may take to be written (the client must keep reading).
    pub send_timeout: Duration,
}

/// The smallest `-max-head` and `-max-uri` taken: a request head of a few headers, a key
/// near the longest a file name allows, percent-encoded.
const MIN_HEAD: usize = 1024;
const MIN_URI: usize = 1024;
/// The shortest timeout taken: the timers count whole milliseconds.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 64 << 10,
            max_uri: 8 << 10,
            max_body: 0,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            body_min_rate: 1024,
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// `-volume-rcvbuf`'s default: 1 MiB (the kernel doubles it for its bookkeeping), a window
/// that fills a 10 Gb/s link at 1 ms of round trip.
pub const DEFAULT_VOLUME_RCVBUF: usize = 1 << 20;
/// A smaller receive buffer than this makes a body take more wake-ups than it is worth.
const MIN_VOLUME_RCVBUF: usize = 64 << 10;

#[derive(Clone, Debug)]
pub struct Config {
    pub db: PathBuf,
    pub volumes: Vec<String>,
    pub port: u16,
    pub replicas: usize,
    pub subvolumes: u32,
    pub fallback: Option<String>,
    pub protect: bool,
    pub md5sum: bool,
    pub voltimeout: Duration,
    pub threads: usize,
    pub verbose: bool,
    /// Keys whose GET answer each thread keeps, and keys found missing it keeps (0: none).
    pub cache_keys: usize,
    pub limits: Limits,
    /// API address (`-listen`); None: `0.0.0.0:<port>`.
    pub listen: Option<std::net::SocketAddr>,
    /// Admin listener (`-admin`): None: the default `127.0.0.1:<port+1000>`; `Some(None)`: off.
    pub admin: Option<Option<std::net::SocketAddr>>,
    /// Bearer token admin methods need (`-admin-token FILE`, read at start).
    pub admin_token: Option<String>,
    /// How long a stop waits for requests in flight (`-drain`).
    pub drain: Duration,
    /// How long a key moved by an online rebalance keeps its old replicas (`-move-grace`).
    pub move_grace: Duration,
    /// How long a long S3 write (CompleteMultipartUpload, a copy) may go unanswered before
    /// its `200` head goes out, and then how often a space follows (`-s3-keepalive`).
    pub s3_keepalive: Duration,
    /// Client connections at most (`-max-conns`); 0: from the open-files limit.
    pub max_conns: usize,
    /// Fsync the index's log before answering a write (`-sync`).
    pub sync: bool,
    /// The index's block cache in MiB (`-index-cache`).
    pub index_cache_mb: usize,
    /// `SO_RCVBUF` of each connection to a volume (`-volume-rcvbuf`); 0: the kernel's.
    pub volume_rcvbuf: usize,
    /// `-volume-secret`: shown to the volumes on every request (bin/volume `SECRET_FILE`).
    pub volume_secret: Option<Secret>,
    /// `-sign-redirects`: how long the signed link in a GET's redirect stays valid.
    pub sign_redirects: Option<Duration>,
    /// `-scrub`: the master verifies and repairs in the background.
    pub scrub: Option<Scrub>,
}

/// How the master's background verify runs.
#[derive(Clone, Debug)]
pub struct Scrub {
    /// From the end of one run to the start of the next.
    pub every: Duration,
    /// MiB/s of replicas read at most.
    pub rate: f64,
    /// Files younger than this are spared.
    pub grace: Duration,
}

impl Config {
    /// Checks what flags alone cannot: the relations between values.
    pub fn validate(&self) -> Result<(), String> {
        if self.volumes.is_empty() {
            return Err("-volumes is required (host:port,host:port,...)".into());
        }
        for v in &self.volumes {
            check_host_port(v).map_err(|e| format!("-volumes: {e}"))?;
        }
        // host names are not case-sensitive: two spellings of one are one volume
        let mut seen: Vec<String> = self.volumes.iter().map(|v| v.to_ascii_lowercase()).collect();
        seen.sort();
        if let Some(twice) = seen.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("-volumes lists a volume twice: {}", twice[0]));
        }
        if self.replicas == 0 {
            return Err("-replicas must be at least 1".into());
        }
        if self.replicas > self.volumes.len() {
            return Err(format!(
                "-replicas {} needs at least {} volumes, but -volumes names {}",
                self.replicas,
                self.replicas,
                self.volumes.len()
            ));
        }
        // 0 is not "no limit" here (it is for -max-body): every request would be refused
        if self.limits.max_head < MIN_HEAD {
            return Err(format!("-max-head must be at least {MIN_HEAD} (bytes of a request head)"));
        }
        if self.limits.max_uri < MIN_URI {
            return Err(format!("-max-uri must be at least {MIN_URI} (bytes of a request target)"));
        }
        if self.subvolumes == 0 || self.subvolumes > 256 {
            return Err("-subvolumes must be between 1 and 256".into());
        }
        if let Some(f) = &self.fallback {
            check_host_port(f).map_err(|e| format!("-fallback: {e}"))?;
        }
        if self.threads == 0 {
            return Err("-threads must be at least 1".into());
        }
        if self.volume_rcvbuf != 0 && self.volume_rcvbuf < MIN_VOLUME_RCVBUF {
            return Err(format!("-volume-rcvbuf must be 0 (the kernel's) or at least {MIN_VOLUME_RCVBUF} bytes"));
        }
        // 0 is not "no limit": a request's head had to come in one read, an answer that
        // filled the socket's buffer was cut; and the timers count whole milliseconds, so
        // less than one was 0 (`1ns`, `500us`); beyond that, a timeout too short is the
        // operator's to pick
        let l = &self.limits;
        for (flag, t) in [
            ("-header-timeout", l.header_timeout),
            ("-idle-timeout", l.idle_timeout),
            ("-body-timeout", l.body_timeout),
            ("-send-timeout", l.send_timeout),
            ("-voltimeout", self.voltimeout),
            ("-s3-keepalive", self.s3_keepalive),
        ] {
            if t < MIN_TIMEOUT {
                return Err(format!("{flag} must be at least 1ms"));
            }
        }
        if let Some(d) = self.sign_redirects {
            if self.volume_secret.is_none() {
                return Err("-sign-redirects needs -volume-secret (the links are signed with it)".into());
            }
            if d < Duration::from_secs(1) {
                return Err("-sign-redirects must be at least 1s (nginx checks whole seconds)".into());
            }
        }
        Ok(())
    }
}

fn check_host_port(v: &str) -> Result<(), String> {
    let (host, port) = v.rsplit_once(':').ok_or_else(|| format!("'{v}' is not host:port"))?;
    if host.is_empty()
        || host.contains(['/', ' '])
        || host.chars().any(char::is_control)
        || port.parse::<u16>().map_or(true, |p| p == 0)
        || v.len() > 200
    {
        return Err(format!("'{v}' is not host:port"));
    }
    Ok(())
}

/// `-online`'s master, `http://host:port` (or `host:port`): its `host:port`.
pub fn master_addr(url: &str) -> Result<String, String> {
    let addr = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
    check_host_port(addr).map_err(|_| format!("-online wants the master as http://host:port, not '{url}'"))?;
    Ok(addr.to_string())
}

/// What a master's refusal says, for a batch command's one-line error: the body's first
/// line, cut at 200 characters; an HTML page (nginx's: a volume's address given for the
/// master's) is named as one, not printed.
pub fn master_refusal(addr: &str, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.starts_with('<') {
        return format!("an HTML page: is {addr} an mkv master's address?");
    }
    let line = text.lines().next().unwrap_or("");
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// Parses a Go duration: `500ms`, `2s`, `1m30s`, `1.5s`, `100us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration '{s}' (use e.g. 500ms, 2s, 1m)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "s", "1x", "-1s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relations_are_checked() {
        let mut c = Config {
            db: "/tmp/x".into(),
            volumes: vec!["a:1".into(), "b:2".into()],
            port: 3000,
            replicas: 3,
            subvolumes: 10,
            fallback: None,
            protect: false,
            md5sum: true,
            voltimeout: Duration::from_secs(1),
            threads: 2,
            verbose: false,
            cache_keys: 0,
            limits: Limits::default(),
            listen: None,
            admin: None,
            admin_token: None,
            drain: Duration::from_secs(10),
            move_grace: Duration::from_secs(2),
            s3_keepalive: Duration::from_secs(10),
            max_conns: 0,
            sync: false,
            index_cache_mb: 64,
            volume_rcvbuf: DEFAULT_VOLUME_RCVBUF,
            volume_secret: None,
            sign_redirects: None,
            scrub: None,
        };
        assert!(c.validate().unwrap_err().contains("-replicas 3"));
        c.replicas = 2;
        assert!(c.validate().is_ok());
        c.sign_redirects = Some(Duration::from_secs(60));
        assert!(c.validate().unwrap_err().contains("needs -volume-secret"));
        c.volume_secret = Some(Secret::parse("0123456789abcdef").unwrap());
        assert!(c.validate().is_ok());
        c.sign_redirects = Some(Duration::from_millis(500));
        assert!(c.validate().unwrap_err().contains("at least 1s"));
        c.volumes = vec!["a:1".into(), "nope".into()];
        assert!(c.validate().unwrap_err().contains("host:port"));
        // a name with a space never resolves, and went into every key's placement as it was
        c.volumes = vec!["a:1".into(), " b:2".into()];
        assert!(c.validate().unwrap_err().contains("' b:2' is not host:port"));
        c.volumes = vec!["a:1".into(), "b :2".into()];
        assert!(c.validate().unwrap_err().contains("is not host:port"));
        // host names are not case-sensitive: one volume under two spellings held two replicas
        c.volumes = vec!["LocalHost:1".into(), "localhost:1".into()];
        assert_eq!(c.validate(), Err("-volumes lists a volume twice: localhost:1".into()));
        c.volumes = vec!["a:1".into(), "b:2".into(), "c:3".into()];
        c.sign_redirects = None;
        c.volume_rcvbuf = 4096;
        assert!(c.validate().unwrap_err().contains("-volume-rcvbuf"));
        c.volume_rcvbuf = 0;
        // 0 reads as "no limit" (as -max-body's does) but refused every request
        c.limits.max_head = 0;
        assert!(c.validate().unwrap_err().contains("-max-head must be at least"));
        c.limits = Limits { max_uri: 0, ..Limits::default() };
        assert!(c.validate().unwrap_err().contains("-max-uri must be at least"));
        c.limits = Limits::default();
        assert!(c.validate().is_ok());
        // 0 was taken and meant "at once": a head in two packets got 408, an answer that
        // filled the socket's buffer was cut, a keep-alive connection closed on arrival
        // (and less than a millisecond is 0 to the timers)
        for short in [Duration::ZERO, Duration::from_nanos(1), Duration::from_micros(999)] {
            for (flag, limits) in [
                ("-header-timeout", Limits { header_timeout: short, ..Limits::default() }),
                ("-idle-timeout", Limits { idle_timeout: short, ..Limits::default() }),
                ("-body-timeout", Limits { body_timeout: short, ..Limits::default() }),
                ("-send-timeout", Limits { send_timeout: short, ..Limits::default() }),
            ] {
                c.limits = limits;
                assert_eq!(c.validate(), Err(format!("{flag} must be at least 1ms")));
            }
            c.limits = Limits::default();
            c.voltimeout = short;
            assert_eq!(c.validate(), Err("-voltimeout must be at least 1ms".to_string()));
            c.voltimeout = Duration::from_secs(1);
            c.s3_keepalive = short;
            assert_eq!(c.validate(), Err("-s3-keepalive must be at least 1ms".to_string()));
            c.s3_keepalive = Duration::from_secs(10);
        }
        c.voltimeout = Duration::from_millis(1);
        assert!(c.validate().is_ok());
    }

    /// A refusal is one line: nginx's HTML page (a volume's address given for the master's)
    /// was printed whole, seven lines of it.
    #[test]
    fn a_refusal_is_one_line() {
        let html = b"<html>\r\n<head><title>405 Not Allowed</title></head>\r\n<body>\r\n</body>\r\n</html>\r\n";
        let addr = "127.0.0.1:3001";
        assert_eq!(master_refusal(addr, html), "an HTML page: is 127.0.0.1:3001 an mkv master's address?");
        assert_eq!(master_refusal(addr, b"snapshot folder exists\nmore\n"), "snapshot folder exists");
        assert_eq!(master_refusal(addr, "é".repeat(300).as_bytes()), format!("{}…", "é".repeat(200)));
    }
}
