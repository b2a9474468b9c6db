//! S3 on the API port: requests classed as S3 (S3.md's rule) are answered here, speaking to
//! the rest only through the store's operations, as the native handlers do.
//!
//! # Layout
//! - [`serve`]: one request from head to answer: authentication, dispatch, errors.
//! - [`object`], [`bucket`], [`multipart`]: the operations, each on the store.
//! - [`body`]: a request body as a store write's source, checked as it streams.
//! - [`stored`]: what S3 keeps in a record (headers, multipart ETag).
//! - [`request`]: is this an S3 request, and which [`request::Op`] (path style, `/BUCKET/KEY`).
//! - [`meta`]: what an object request's headers ask: metadata kept, preconditions, range, copy source.
//! - [`sigv4`]: AWS Signature Version 4: header and presigned, the chunk-signature chain.
//! - [`sigv2`]: AWS Signature Version 2 (HMAC-SHA1): header and presigned, as botocore presigns by default.
//! - [`payload`]: one body pipeline: `aws-chunked` decoding + chunk signatures + checksums.
//! - [`chunked`]: the incremental `aws-chunked` decoder under [`payload`].
//! - [`checksum`]: running CRC32/CRC32C/CRC64NVME/SHA-1/SHA-256/MD5, compared with what was sent.
//! - [`xml`]: every answer body and the two request bodies (CompleteMultipartUpload, Delete).
//! - [`error`]: [`error::S3Error`], mapped to (status, code) in one place.
//! - [`crate::dates`]: the date formats S3 speaks.

pub mod body;
pub mod bucket;
pub mod checksum;
pub mod chunked;
pub mod error;
pub mod meta;
pub mod multipart;
pub mod object;
pub mod payload;
pub mod request;
pub mod serve;
pub mod sigv2;
pub mod sigv4;
pub mod stored;
pub mod xml;

#[cfg(test)]
mod botocore_tests;
