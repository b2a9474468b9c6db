//! An S3 request body as a store write's source: HTTP framing undone by the connection,
//! `aws-chunked` decoded and every signature and checksum checked by a [`Payload`], and the
//! verdict given at [`Source::end`], before the store commits anything.

use bytes::{Buf, Bytes};

use super::{
    error::S3Error,
    payload::{Finished, Payload},
    serve::Failure,
};
use crate::{
    http::{self, Body, Conn, Framing},
    store::write::Source,
};

/// Largest piece read from the connection at once (the decoded pieces are at most this).
const RAW_PIECE: usize = 1 << 20;

pub struct S3Body<'a> {
    pub conn: &'a mut Conn,
    pub body: &'a mut Body,
    payload: Option<Payload>,
    /// Raw bytes read but not decoded yet (an `aws-chunked` body).
    pending: Bytes,
    /// What the payload checks found, once the body ended well.
    pub finished: Option<Finished>,
    /// The HTTP framing failed: the connection must close.
    pub broken: bool,
}

impl<'a> S3Body<'a> {
    pub fn new(conn: &'a mut Conn, body: &'a mut Body, payload: Payload) -> S3Body<'a> {
        S3Body { conn, body, payload: Some(payload), pending: Bytes::new(), finished: None, broken: false }
    }

    async fn raw(&mut self, max: usize) -> Result<Option<Bytes>, S3Error> {
        match self.conn.body_chunk(self.body, max).await {
            Ok(b) => Ok(b),
            Err(e) => {
                self.broken = true;
                Err(http_failure(e).error)
            }
        }
    }
}

/// What S3 answers when the HTTP body itself failed (the connection closes after).
pub fn http_failure(e: http::Error) -> Failure {
    let error = match e {
        http::Error::Timeout => S3Error::RequestTimeout,
        http::Error::BodyTooLarge => S3Error::EntityTooLarge,
        http::Error::BadRequest(why) => S3Error::InvalidRequest(why),
        http::Error::ExpectationFailed => S3Error::InvalidRequest("unsupported Expect"),
        http::Error::Closed | http::Error::Io(_) => S3Error::IncompleteBody,
        http::Error::UriTooLong | http::Error::HeadTooLarge => S3Error::InvalidRequest("request head too large"),
    };
    Failure { error, close: true }
}

impl Source for S3Body<'_> {
    type Error = S3Error;

    async fn next(&mut self, max: usize) -> Result<Option<Bytes>, S3Error> {
        let Some(payload) = self.payload.as_ref() else { return Ok(None) };
        if !payload.is_chunked() {
            let piece = self.raw(max).await?;
            if let (Some(p), Some(payload)) = (&piece, self.payload.as_mut()) {
                payload.observe(p)?;
            }
            return Ok(piece);
        }
        loop {
            if self.pending.is_empty() {
                match self.raw(RAW_PIECE).await? {
                    Some(b) => self.pending = b,
                    // the decoder says at `end` whether the body was whole
                    None => return Ok(None),
                }
            }
            let mut out = Vec::with_capacity(max.min(self.pending.len()));
            let Some(payload) = self.payload.as_mut() else { return Ok(None) };
            let used = payload.feed(&self.pending, &mut out, max)?;
            self.pending.advance(used);
            if !out.is_empty() {
                return Ok(Some(Bytes::from(out)));
            }
            if used == 0 && !self.pending.is_empty() {
                // the decoder took nothing and gave nothing: framing it cannot use
                return Err(S3Error::IncompleteBody);
            }
        }
    }

    fn len(&self) -> Option<u64> {
        let payload = self.payload.as_ref()?;
        if payload.is_chunked() {
            payload.decoded_len()
        } else {
            match self.body.framing() {
                Framing::Length(n) => Some(n),
                Framing::None => Some(0),
                Framing::Chunked => None,
            }
        }
    }

    async fn end(&mut self) -> Result<(), S3Error> {
        let payload = self.payload.take().ok_or(S3Error::InternalError("a body ended twice"))?;
        self.finished = Some(payload.finish()?);
        Ok(())
    }
}
