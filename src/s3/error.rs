//! Every way an S3 request can fail, mapped to its HTTP status and S3 error code here
//! and nowhere else, so that the XML error body and the status line always agree.

use std::fmt;

/// An S3 error. The `&'static str` details are written into the `<Message>` of the error
/// body: they come from this crate's own text, never from the request or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Error {
    AccessDenied(&'static str),
    AuthorizationHeaderMalformed(&'static str),
    /// The `X-Amz-*` parameters of a presigned URL are incomplete or malformed.
    AuthorizationQueryParametersError(&'static str),
    /// A checksum or `Content-MD5` that does not match the bytes received; names which.
    BadDigest(&'static str),
    BucketNotEmpty,
    EntityTooLarge,
    EntityTooSmall,
    /// The body ended before its framing (`x-amz-decoded-content-length`, a chunk) said.
    IncompleteBody,
    InternalError(&'static str),
    InvalidAccessKeyId,
    InvalidArgument(&'static str),
    InvalidBucketName,
    /// A `Content-MD5` that is not the base64 of 16 bytes.
    InvalidDigest,
    InvalidLocationConstraint,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest(&'static str),
    InvalidURI,
    KeyTooLong,
    /// The trailer of an `aws-chunked` body is missing what `x-amz-trailer` promised, or is bad.
    MalformedTrailer(&'static str),
    MalformedXML,
    MetadataTooLarge,
    MethodNotAllowed,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    NotImplemented(&'static str),
    NotModified,
    /// Another write of the same key is in flight (the native API's `409`).
    PreconditionFailed,
    /// A conditional write that met another write of its key in flight (S3: retry it).
    ConditionalRequestConflict,
    RequestTimeout,
    RequestTimeTooSkewed,
    ServiceUnavailable(&'static str),
    SignatureDoesNotMatch,
    SlowDown,
    /// The body's SHA-256 is not the one `x-amz-content-sha256` promised.
    ContentSha256Mismatch,
    /// A DeleteObjects entry with an empty key (which would name the bucket itself).
    UserKeyMustBeSpecified,
    /// A PutObject or UploadPart whose body has no stated length.
    MissingContentLength,
    /// An `x-amz-storage-class` S3 does not know.
    InvalidStorageClass,
}

impl S3Error {
    /// The HTTP status and the S3 `<Code>`: the one table that says both.
    pub fn status_code(&self) -> (u16, &'static str) {
        use S3Error::*;
        match self {
            AccessDenied(_) => (403, "AccessDenied"),
            AuthorizationHeaderMalformed(_) => (400, "AuthorizationHeaderMalformed"),
            AuthorizationQueryParametersError(_) => (400, "AuthorizationQueryParametersError"),
            BadDigest(_) => (400, "BadDigest"),
            BucketNotEmpty => (409, "BucketNotEmpty"),
            EntityTooLarge => (400, "EntityTooLarge"),
            EntityTooSmall => (400, "EntityTooSmall"),
            IncompleteBody => (400, "IncompleteBody"),
            InternalError(_) => (500, "InternalError"),
            InvalidAccessKeyId => (403, "InvalidAccessKeyId"),
            InvalidArgument(_) => (400, "InvalidArgument"),
            InvalidBucketName => (400, "InvalidBucketName"),
            InvalidDigest => (400, "InvalidDigest"),
            InvalidLocationConstraint => (400, "InvalidLocationConstraint"),
            InvalidPart => (400, "InvalidPart"),
            InvalidPartOrder => (400, "InvalidPartOrder"),
            InvalidRange => (416, "InvalidRange"),
            InvalidRequest(_) => (400, "InvalidRequest"),
            InvalidURI => (400, "InvalidURI"),
            KeyTooLong => (400, "KeyTooLongError"),
            MalformedTrailer(_) => (400, "MalformedTrailerError"),
            MalformedXML => (400, "MalformedXML"),
            MetadataTooLarge => (400, "MetadataTooLarge"),
            MethodNotAllowed => (405, "MethodNotAllowed"),
            NoSuchBucket => (404, "NoSuchBucket"),
            NoSuchKey => (404, "NoSuchKey"),
            NoSuchUpload => (404, "NoSuchUpload"),
            NoSuchVersion => (404, "NoSuchVersion"),
            NotImplemented(_) => (501, "NotImplemented"),
            NotModified => (304, "NotModified"),
            PreconditionFailed => (412, "PreconditionFailed"),
            ConditionalRequestConflict => (409, "ConditionalRequestConflict"),
            RequestTimeout => (400, "RequestTimeout"),
            RequestTimeTooSkewed => (403, "RequestTimeTooSkewed"),
            ServiceUnavailable(_) => (503, "ServiceUnavailable"),
            SignatureDoesNotMatch => (403, "SignatureDoesNotMatch"),
            SlowDown => (503, "SlowDown"),
            ContentSha256Mismatch => (400, "XAmzContentSHA256Mismatch"),
            UserKeyMustBeSpecified => (400, "UserKeyMustBeSpecified"),
            MissingContentLength => (411, "MissingContentLength"),
            InvalidStorageClass => (400, "InvalidStorageClass"),
        }
    }

    pub fn status(&self) -> u16 {
        self.status_code().0
    }

    pub fn code(&self) -> &'static str {
        self.status_code().1
    }

    /// Whether the answer carries an XML error body (`304` and answers to HEAD do not).
    pub fn has_body(&self) -> bool {
        !matches!(self, S3Error::NotModified)
    }

    /// The human-readable `<Message>`, in S3's words where S3 has fixed ones.
    pub fn message(&self) -> &'static str {
        use S3Error::*;
        match self {
            AccessDenied(why)
            | AuthorizationHeaderMalformed(why)
            | AuthorizationQueryParametersError(why)
            | BadDigest(why)
            | InternalError(why)
            | InvalidArgument(why)
            | InvalidRequest(why)
            | MalformedTrailer(why)
            | ServiceUnavailable(why) => why,
            NotImplemented(what) => what,
            BucketNotEmpty => "The bucket you tried to delete is not empty.",
            EntityTooLarge => "Your proposed upload exceeds the maximum allowed size.",
            EntityTooSmall => "Your proposed upload is smaller than the minimum allowed object size.",
            IncompleteBody => "You did not provide the number of bytes specified by the Content-Length HTTP header.",
            InvalidAccessKeyId => "The AWS Access Key Id you provided does not exist in our records.",
            InvalidBucketName => "The specified bucket is not valid.",
            InvalidDigest => "The Content-MD5 you specified is not valid.",
            InvalidLocationConstraint => "The specified location-constraint is not valid.",
            InvalidPart => "One or more of the specified parts could not be found, or its ETag did not match.",
            InvalidPartOrder => "The list of parts was not in ascending order.",
            InvalidRange => "The requested range is not satisfiable.",
            InvalidURI => "Could not parse the specified URI.",
            KeyTooLong => "Your key is too long.",
            MalformedXML => "The XML you provided was not well-formed or did not validate against our published schema.",
            MetadataTooLarge => "Your metadata headers exceed the maximum allowed metadata size.",
            MethodNotAllowed => "The specified method is not allowed against this resource.",
            NoSuchBucket => "The specified bucket does not exist.",
            NoSuchKey => "The specified key does not exist.",
            NoSuchUpload => "The specified multipart upload does not exist.",
            NoSuchVersion => "The specified version does not exist (mkv keeps no versions).",
            NotModified => "Not Modified",
            PreconditionFailed => "At least one of the preconditions you specified did not hold.",
            ConditionalRequestConflict => "A conflicting conditional operation is currently in progress against this resource. Please try again.",
            RequestTimeout => "Your socket connection to the server was not read from or written to within the timeout period.",
            RequestTimeTooSkewed => "The difference between the request time and the server's time is too large.",
            SignatureDoesNotMatch => {
                "The request signature we calculated does not match the signature you provided. Check your key and signing method."
            }
            SlowDown => "Please reduce your request rate.",
            ContentSha256Mismatch => "The provided 'x-amz-content-sha256' header does not match what was computed.",
            UserKeyMustBeSpecified => "A key to delete must be specified.",
            MissingContentLength => "You must provide the Content-Length HTTP header.",
            InvalidStorageClass => "The storage class you specified is not valid.",
        }
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for S3Error {}

#[cfg(test)]
mod tests {
    use super::S3Error::{self, *};

    #[test]
    fn statuses_and_codes() {
        let cases: [(S3Error, u16, &str); 32] = [
            (NoSuchKey, 404, "NoSuchKey"),
            (NoSuchBucket, 404, "NoSuchBucket"),
            (NoSuchUpload, 404, "NoSuchUpload"),
            (BucketNotEmpty, 409, "BucketNotEmpty"),
            (InvalidBucketName, 400, "InvalidBucketName"),
            (BadDigest("x"), 400, "BadDigest"),
            (InvalidDigest, 400, "InvalidDigest"),
            (InvalidArgument("x"), 400, "InvalidArgument"),
            (InvalidRequest("x"), 400, "InvalidRequest"),
            (MalformedXML, 400, "MalformedXML"),
            (InvalidPart, 400, "InvalidPart"),
            (InvalidPartOrder, 400, "InvalidPartOrder"),
            (EntityTooSmall, 400, "EntityTooSmall"),
            (EntityTooLarge, 400, "EntityTooLarge"),
            (InvalidRange, 416, "InvalidRange"),
            (PreconditionFailed, 412, "PreconditionFailed"),
            (ConditionalRequestConflict, 409, "ConditionalRequestConflict"),
            (NotModified, 304, "NotModified"),
            (MethodNotAllowed, 405, "MethodNotAllowed"),
            (NotImplemented("x"), 501, "NotImplemented"),
            (AccessDenied("x"), 403, "AccessDenied"),
            (InvalidAccessKeyId, 403, "InvalidAccessKeyId"),
            (SignatureDoesNotMatch, 403, "SignatureDoesNotMatch"),
            (RequestTimeTooSkewed, 403, "RequestTimeTooSkewed"),
            (InternalError("x"), 500, "InternalError"),
            (SlowDown, 503, "SlowDown"),
            (ServiceUnavailable("x"), 503, "ServiceUnavailable"),
            (KeyTooLong, 400, "KeyTooLongError"),
            (ContentSha256Mismatch, 400, "XAmzContentSHA256Mismatch"),
            (UserKeyMustBeSpecified, 400, "UserKeyMustBeSpecified"),
            (MissingContentLength, 411, "MissingContentLength"),
            (InvalidStorageClass, 400, "InvalidStorageClass"),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status_code(), (status, code), "{e:?}");
            assert!(!e.message().is_empty());
            // the status line names every status an S3 answer can have ("HTTP/1.1 206 Unknown"
            // before)
            assert_ne!(crate::http::response::reason(status), "Unknown", "{status}");
        }
        // and those answered outside S3's errors: a range read, an unmet Expect
        for status in [206, 417] {
            assert_ne!(crate::http::response::reason(status), "Unknown", "{status}");
        }
        assert!(!NotModified.has_body() && NoSuchKey.has_body());
        assert_eq!(NotImplemented("versioning").to_string(), "NotImplemented: versioning");
    }
}
