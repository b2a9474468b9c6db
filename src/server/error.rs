//! Every way a native request can fail, mapped to a status code in exactly this one place.

use std::fmt;

use crate::{http, index, store, volume};

#[derive(Debug)]
pub enum ApiError {
    /// The client's side: framing, limits, timeouts.
    Http(http::Error),
    Store(store::Error),
    /// `405`, with the methods the target takes (its `Allow` header).
    MethodNotAllowed(&'static str),
    BadQuery(&'static str),
    /// A volume list that does not validate (VOLUMES).
    BadConfig(String),
    /// A volume list naming a volume that does not answer (VOLUMES): `503`.
    Unreachable(String),
    /// An admin request the master's state refuses now (`409`), and why.
    Conflict(String),
    /// An admin method with a missing or wrong token.
    Unauthorized,
    /// An admin method from a peer that may not use it.
    Forbidden,
}

impl std::error::Error for ApiError {}

impl From<http::Error> for ApiError {
    fn from(e: http::Error) -> Self {
        ApiError::Http(e)
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        ApiError::Store(e)
    }
}

impl From<index::Error> for ApiError {
    fn from(e: index::Error) -> Self {
        ApiError::Store(store::Error::Index(e))
    }
}

impl From<volume::Error> for ApiError {
    fn from(e: volume::Error) -> Self {
        ApiError::Store(store::Error::Volume(e))
    }
}

impl ApiError {
    pub fn status(&self) -> u16 {
        use http::Error as H;
        use store::Error as S;
        use volume::Error as V;
        match self {
            ApiError::Http(H::BadRequest(_)) => 400,
            ApiError::Http(H::UriTooLong) | ApiError::Store(S::KeyTooLong) => 414,
            ApiError::Http(H::HeadTooLarge) => 431,
            ApiError::Http(H::BodyTooLarge) => 413,
            ApiError::Http(H::ExpectationFailed) => 417,
            ApiError::Http(H::Timeout) => 408,
            // nobody is left to read it, but say what happened
            ApiError::Http(H::Closed | H::Io(_)) => 400,
            // the index's disk is full: writes are refused, reads go on (RFC 4918's status)
            ApiError::Store(S::Index(index::Error::Full)) => 507,
            ApiError::Store(S::Index(index::Error::Reopening)) => 503,
            ApiError::Store(S::Index(_) | S::Internal(_)) => 500,
            ApiError::Store(
                S::Volume(V::Down(_) | V::Fenced(_)) | S::NoLiveReplica | S::NoGoodReplica | S::Damaged | S::Settling,
            ) => 503,
            ApiError::Store(S::Volume(V::Timeout(_) | V::Stalled(_))) => 504,
            ApiError::Store(S::Volume(_)) => 502,
            ApiError::Store(S::NotFound) => 404,
            ApiError::Store(S::Exists | S::Protected) => 403,
            ApiError::Store(S::InFlight) => 409,
            ApiError::Store(S::EmptyBody) => 411,
            ApiError::Store(S::BadKey(_)) => 400,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::BadQuery(_) | ApiError::BadConfig(_) => 400,
            ApiError::Conflict(_) => 409,
            ApiError::Unreachable(_) => 503,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden => 403,
        }
    }

    /// Whether the connection's framing is lost, so it must close after the answer.
    pub fn closes(&self) -> bool {
        matches!(self, ApiError::Http(_))
    }

    /// The header its status requires (RFC 9110): a `405`'s `Allow`, a `401`'s challenge.
    pub fn header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            ApiError::MethodNotAllowed(allow) => Some(("Allow", allow)),
            ApiError::Unauthorized => Some(("WWW-Authenticate", "Bearer realm=\"mkv admin\"")),
            _ => None,
        }
    }

    /// Whether the answer carries no text (a 404 is empty, as SPEC.md says).
    pub fn silent(&self) -> bool {
        matches!(self, ApiError::Store(store::Error::NotFound))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Http(e) => write!(f, "{e}"),
            ApiError::Store(e) => write!(f, "{e}"),
            ApiError::MethodNotAllowed(allow) => write!(f, "method not allowed (allowed: {allow})"),
            ApiError::BadQuery(why) => write!(f, "{why}"),
            ApiError::BadConfig(why) | ApiError::Conflict(why) | ApiError::Unreachable(why) => write!(f, "{why}"),
            ApiError::Unauthorized => write!(f, "admin method: missing or wrong Authorization: Bearer token"),
            ApiError::Forbidden => {
                write!(f, "admin method: allowed from this host (loopback) only; start the master with -admin-token")
            }
        }
    }
}
