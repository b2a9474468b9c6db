//! Every way a request can fail, mapped to a status code in exactly this one place.

use std::fmt;

use crate::{http, index, volume};

#[derive(Debug)]
pub enum ApiError {
    /// The client's side: framing, limits, timeouts.
    Http(http::Error),
    Index(index::Error),
    Volume(volume::Error),
    NotFound,
    /// PUT of a key that is already live.
    Exists,
    /// DELETE under `-protect` of a key not UNLINKed first.
    Protected,
    /// Another PUT/DELETE/UNLINK of the key is in flight.
    InFlight,
    EmptyBody,
    KeyTooLong,
    MethodNotAllowed,
    BadQuery(&'static str),
    /// No replica of the key is on a live volume.
    NoLiveReplica,
    /// A volume list that does not validate (VOLUMES).
    BadConfig(String),
    /// A bug or a lost helper thread: nothing the client can fix.
    Internal(&'static str),
}

impl std::error::Error for ApiError {}

impl From<http::Error> for ApiError {
    fn from(e: http::Error) -> Self {
        ApiError::Http(e)
    }
}

impl From<index::Error> for ApiError {
    fn from(e: index::Error) -> Self {
        ApiError::Index(e)
    }
}

impl From<volume::Error> for ApiError {
    fn from(e: volume::Error) -> Self {
        ApiError::Volume(e)
    }
}

impl ApiError {
    pub fn status(&self) -> u16 {
        use http::Error as H;
        use volume::Error as V;
        match self {
            ApiError::Http(H::BadRequest(_)) => 400,
            ApiError::Http(H::UriTooLong) | ApiError::KeyTooLong => 414,
            ApiError::Http(H::HeadTooLarge) => 431,
            ApiError::Http(H::BodyTooLarge) => 413,
            ApiError::Http(H::Timeout) => 408,
            // nobody is left to read it, but say what happened
            ApiError::Http(H::Closed | H::Io(_)) => 400,
            // the index's disk is full: writes are refused, reads go on (RFC 4918's status)
            ApiError::Index(index::Error::Full) => 507,
            ApiError::Index(index::Error::Reopening) => 503,
            ApiError::Index(_) | ApiError::Internal(_) => 500,
            ApiError::Volume(V::Down(_)) | ApiError::NoLiveReplica => 503,
            ApiError::Volume(V::Timeout(_)) => 504,
            ApiError::Volume(_) => 502,
            ApiError::NotFound => 404,
            ApiError::Exists | ApiError::Protected => 403,
            ApiError::InFlight => 409,
            ApiError::EmptyBody => 411,
            ApiError::MethodNotAllowed => 405,
            ApiError::BadQuery(_) | ApiError::BadConfig(_) => 400,
        }
    }

    /// Whether the connection's framing is lost, so it must close after the answer.
    pub fn closes(&self) -> bool {
        matches!(self, ApiError::Http(_))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Http(e) => write!(f, "{e}"),
            ApiError::Index(e) => write!(f, "{e}"),
            ApiError::Volume(e) => write!(f, "{e}"),
            ApiError::NotFound => Ok(()),
            ApiError::Exists => write!(f, "key exists (DELETE or UNLINK it first)"),
            ApiError::Protected => write!(f, "key is protected: UNLINK it before DELETE"),
            ApiError::InFlight => write!(f, "another write of this key is in flight"),
            ApiError::EmptyBody => write!(f, "a PUT needs a non-empty body"),
            ApiError::KeyTooLong => write!(f, "key too long for a file name"),
            ApiError::MethodNotAllowed => write!(f, "method not allowed"),
            ApiError::BadQuery(why) => write!(f, "{why}"),
            ApiError::BadConfig(why) => write!(f, "{why}"),
            ApiError::Internal(why) => write!(f, "{why}"),
            ApiError::NoLiveReplica => write!(f, "no replica of this key is on a live volume"),
        }
    }
}
