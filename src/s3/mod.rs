//! S3 on the API port: the pure building blocks (request classing and parsing, SigV4,
//! `aws-chunked` bodies, checksums, XML), used by the handlers that speak index and volume.
//!
//! # Layout
//! - [`request`]: is this an S3 request, and which [`request::Op`] (path style, `/BUCKET/KEY`).
//! - [`meta`]: what an object request's headers ask: metadata kept, preconditions, range, copy source.
//! - [`sigv4`]: AWS Signature Version 4: header and presigned, the chunk-signature chain.
//! - [`payload`]: one body pipeline: `aws-chunked` decoding + chunk signatures + checksums.
//! - [`chunked`]: the incremental `aws-chunked` decoder under [`payload`].
//! - [`checksum`]: running CRC32/CRC32C/CRC64NVME/SHA-1/SHA-256/MD5, compared with what was sent.
//! - [`xml`]: every answer body and the two request bodies (CompleteMultipartUpload, Delete).
//! - [`error`]: [`error::S3Error`], mapped to (status, code) in one place.
//! - [`dates`]: the date formats S3 speaks.

pub mod checksum;
pub mod chunked;
pub mod dates;
pub mod error;
pub mod meta;
pub mod payload;
pub mod request;
pub mod sigv4;
pub mod xml;

#[cfg(test)]
mod botocore_tests;
