//! Every way a key operation can fail, named for what happened, not for how a front end
//! answers it: the native API and S3 each map these to their own status codes.

use std::fmt;

use crate::{index, volume};

#[derive(Debug)]
pub enum Error {
    Index(index::Error),
    Volume(volume::Error),
    NotFound,
    /// A write of a key that is already live, where replacing is not wanted.
    Exists,
    /// DELETE under `-protect` of a key not UNLINKed first.
    Protected,
    /// Another write of the key is in flight.
    InFlight,
    EmptyBody,
    /// The key's file name would pass what a file system takes.
    KeyTooLong,
    /// A key the volumes cannot store apart from others.
    BadKey(&'static str),
    /// No replica of the key is on a live volume.
    NoLiveReplica,
    /// No replica of the key holds its value (right size and MD5): repair leaves it alone.
    NoGoodReplica,
    /// The bytes a copy read are not the value its source's record names: a damaged replica
    /// (nothing was written of them).
    Damaged,
    /// A replacement of the key is still being moved into place (a volume refused or
    /// missed a move; recovery ends it once the volume takes moves): retry later.
    Settling,
    /// A bug or a lost helper thread: nothing the client can fix.
    Internal(&'static str),
}

impl std::error::Error for Error {}

impl From<index::Error> for Error {
    fn from(e: index::Error) -> Self {
        Error::Index(e)
    }
}

impl From<volume::Error> for Error {
    fn from(e: volume::Error) -> Self {
        Error::Volume(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Index(e) => write!(f, "{e}"),
            Error::Volume(e) => write!(f, "{e}"),
            Error::NotFound => write!(f, "no such key"),
            Error::Exists => write!(f, "key exists (DELETE or UNLINK it first)"),
            Error::Protected => write!(f, "key is protected: UNLINK it before DELETE (or an S3 overwrite)"),
            Error::InFlight => write!(f, "another write of this key is in flight"),
            Error::EmptyBody => write!(f, "a PUT needs a non-empty body"),
            Error::KeyTooLong => write!(f, "key too long for a file name"),
            Error::BadKey(why) => write!(f, "{why}"),
            Error::NoLiveReplica => write!(f, "no replica of this key is on a live volume"),
            Error::NoGoodReplica => write!(f, "no replica of this key holds its value (size and MD5): left as it is"),
            Error::Damaged => write!(f, "a replica read does not hold the value its record names (its MD5 differs)"),
            Error::Settling => write!(f, "a replacement of this key is still being moved into place"),
            Error::Internal(why) => write!(f, "{why}"),
        }
    }
}
