//! The life of one client connection: parse a head, route it, answer, decide whether the
//! connection can carry the next request (framing intact, body consumed), repeat.

use std::time::Instant;

use monoio::net::TcpStream;

use super::{handlers, ApiError, Ctx};
use crate::{
    http::{self, response, Body, Conn, Framing, Method},
    index::State,
};

/// A body this small is read and dropped after an early answer, keeping the connection;
/// a larger one closes it.
const DISCARD_MAX: u64 = 64 << 10;

/// One request, decoded into buffers the connection reuses.
#[derive(Default)]
pub struct Req {
    pub method: Option<Method>,
    /// The percent-decoded path: the key (or the prefix of a listing).
    pub key: Vec<u8>,
    /// The path as sent, for `-fallback` redirects.
    pub raw_path: Vec<u8>,
    /// `?list` or `?unlinked`.
    pub list: Option<State>,
    pub start: Vec<u8>,
    /// `limit=`: None when absent, Err when not a non-negative integer.
    pub limit: Option<Result<usize, ()>>,
    pub head_only: bool,
    /// `VOLUMES /?volumes=a,b,c&replicas=N`.
    pub volumes: Option<String>,
    pub replicas: Option<Result<usize, ()>>,
}

impl Req {
    fn load(&mut self, method: Method, target: &[u8]) -> Result<(), ApiError> {
        self.method = Some(method);
        self.head_only = method == Method::Head;
        let (path, query) = http::split_target(target);
        self.key.clear();
        self.raw_path.clear();
        self.raw_path.extend_from_slice(path);
        self.list = None;
        self.start.clear();
        self.limit = None;
        self.volumes = None;
        self.replicas = None;
        http::percent_decode(path, &mut self.key)?;
        for (name, value) in http::query_pairs(query) {
            match name {
                b"list" => self.list = self.list.or(Some(State::Live)),
                b"unlinked" => self.list = Some(State::Unlinked),
                b"start" => {
                    self.start.clear();
                    http::percent_decode(value, &mut self.start)?;
                }
                b"volumes" if method == Method::Volumes => {
                    let mut v = Vec::new();
                    http::percent_decode(value, &mut v)?;
                    self.volumes = Some(String::from_utf8(v).map_err(|_| ApiError::BadQuery("volumes must be text"))?);
                }
                b"replicas" if method == Method::Volumes => {
                    self.replicas = Some(std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).ok_or(()))
                }
                b"limit" => {
                    self.limit = Some(std::str::from_utf8(value).ok().and_then(|v| v.parse::<usize>().ok()).ok_or(()))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

pub async fn serve(ctx: &Ctx, stream: TcpStream) {
    let limits = &ctx.shared.cfg.limits;
    let mut conn = Conn::new(stream);
    let mut req = Req::default();
    loop {
        let head = match conn.next_head(limits).await {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => {
                let e = ApiError::Http(e);
                if !matches!(e, ApiError::Http(http::Error::Closed | http::Error::Io(_))) {
                    response::text(&mut conn.out, e.status(), &format!("{e}\n"), false, false);
                    let _ = conn.flush(limits.idle_timeout).await;
                }
                break;
            }
        };
        let began = ctx.shared.cfg.verbose.then(Instant::now);
        let loaded = req.load(head.method, conn.head_bytes(&head.target));
        conn.consume(head.len);
        let mut body = Body::new(head.framing, limits.max_body, head.expect_continue);
        let result = match loaded {
            Ok(()) => handlers::handle(ctx, &mut conn, &mut req, &mut body).await,
            Err(e) => Err(e),
        };
        let mut keep = head.keep_alive && !result.as_ref().err().is_some_and(ApiError::closes);
        if keep && !body.is_done() {
            // an early answer (403, 409, ...): the body must be consumed to find the next request
            keep = !body.awaits_continue()
                && head.framing != Framing::Chunked
                && body.remaining() <= DISCARD_MAX
                && conn.discard(&mut body, limits.body_timeout).await.is_ok();
        }
        let status = match result {
            Ok(reply) => {
                response::finish(&mut conn.out, &reply, keep, req.head_only);
                if began.is_some() {
                    reply_status(&conn.out)
                } else {
                    0
                }
            }
            Err(e) => {
                let status = e.status();
                let msg = match &e {
                    ApiError::NotFound => String::new(),
                    e => format!("{e}\n"),
                };
                response::text(&mut conn.out, status, &msg, keep, req.head_only);
                if status >= 500 {
                    eprintln!("mkv: {:?} {}: {status} {e}", head.method, String::from_utf8_lossy(&req.key));
                }
                status
            }
        };
        if let Some(t) = began {
            eprintln!("{:?} {} {status} {:?}", head.method, String::from_utf8_lossy(&req.key), t.elapsed());
        }
        if !keep {
            let _ = conn.flush(limits.idle_timeout).await;
            break;
        }
    }
}

/// The status code of the last answer written (for the request log).
fn reply_status(out: &[u8]) -> u16 {
    let start = out.windows(9).rposition(|w| w == b"HTTP/1.1 ").map_or(0, |i| i + 9);
    std::str::from_utf8(out.get(start..start + 3).unwrap_or(b"000")).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}
