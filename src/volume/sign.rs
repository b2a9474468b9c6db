//! Signed links to a protected volume: the query nginx's `secure_link` checks on a GET
//! (bin/volume `SIGN=1`). Pure; the expression is nginx/protect.conf.template's, which says why.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use crate::md5::Md5;

/// `?md5=<sig>&expires=<expires>` for `uri` (the path as nginx's `$uri` will see it: the
/// request path, `/svXX` included, without query), valid until `expires` (Unix seconds).
/// `<sig>` is base64url without padding of `md5(secret expires uri " " secret)`, exactly
/// what `secure_link_md5 "<secret>$secure_link_expires$uri <secret>"` computes.
pub fn link(uri: &str, secret: &str, expires: u64) -> String {
    let mut exp = itoa::Buffer::new();
    let exp = exp.format(expires);
    let mut h = Md5::new();
    for part in [secret, exp, uri, " ", secret] {
        h.update(part.as_bytes());
    }
    let mut q = String::with_capacity(40 + exp.len());
    q.push_str("?md5=");
    URL_SAFE_NO_PAD.encode_string(h.finalize(), &mut q);
    q.push_str("&expires=");
    q.push_str(exp);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_nginx_secure_link_md5() {
        // python3: base64.urlsafe_b64encode(hashlib.md5((s+e+u+' '+s).encode()).digest())
        assert_eq!(
            link("/5d/41/aGVsbG8=", "0123456789abcdef", 2_000_000_000),
            "?md5=w8cnrGO9k7pvZ0PDQTykXw&expires=2000000000"
        );
        assert_eq!(
            link("/sv03/fc/5e/aGVsbG93b3JsZA==", "HQw52mOVjSVcZY3RCaS+cF+L1aa04G6D", 1_796_174_163),
            "?md5=ZK6n0rEuP4zjtTE9_qd4JQ&expires=1796174163"
        );
    }

    #[test]
    fn every_input_changes_the_signature() {
        let base = link("/5d/41/aGVsbG8=", "0123456789abcdef", 2_000_000_000);
        let sig = |q: &str| q[5..q.find('&').unwrap()].to_string();
        assert_eq!(sig(&base).len(), 22, "16 bytes, base64url, no padding");
        for other in [
            link("/5d/41/aGVsbG9=", "0123456789abcdef", 2_000_000_000),
            link("/5d/41/aGVsbG8=", "0123456789abcdeF", 2_000_000_000),
            link("/5d/41/aGVsbG8=", "0123456789abcdef", 2_000_000_001),
        ] {
            assert_ne!(sig(&base), sig(&other));
        }
    }
}
