//! Writes responses into a connection's output buffer; pipelined answers are flushed together.

pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// Starts a response: the status line.
pub fn start(out: &mut Vec<u8>, code: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(code).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One header; the value may come in parts, written back to back.
pub fn header(out: &mut Vec<u8>, name: &str, value: &[&[u8]]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    for v in value {
        out.extend_from_slice(v);
    }
    out.extend_from_slice(b"\r\n");
}

/// Ends the head of a `code` answer with Content-Length (and `Connection: close` when
/// closing), then the body. `head_only` (a HEAD request) keeps the length but sends no body.
/// A `204` has neither (RFC 9110 §8.6: a server must not send Content-Length in one).
pub fn finish(out: &mut Vec<u8>, code: u16, body: &[u8], keep_alive: bool, head_only: bool) {
    if code != 204 {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if keep_alive { b"\r\n" as &[u8] } else { b"Connection: close\r\n\r\n" });
    if !head_only && code != 204 {
        out.extend_from_slice(body);
    }
}

/// A whole plain-text answer: errors carry a short reason a person can read.
pub fn text(out: &mut Vec<u8>, code: u16, msg: &str, keep_alive: bool, head_only: bool) {
    start(out, code);
    if !msg.is_empty() {
        header(out, "Content-Type", &[b"text/plain; charset=utf-8"]);
    }
    finish(out, code, msg.as_bytes(), keep_alive, head_only);
}
