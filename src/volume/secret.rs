//! Opt-in protection of the volumes: the secret the master shows on every request to them
//! (`-volume-secret`, sent as `X-Mkv-Secret`) and the signed links it redirects GETs to
//! (`-sign-redirects`). Installed once at start-up; the secret is never printed.

use std::{
    fmt,
    path::Path,
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The volumes' shared secret. `Debug` hides it, so no log line or error can show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The secret in `text` (a file's content), as bin/volume reads it: trailing newlines
    /// dropped, then 16-512 characters that need no quoting in a header, a URL or nginx's
    /// config. The error never quotes the text.
    pub fn parse(text: &str) -> Result<Secret, &'static str> {
        let s = text.trim_end_matches('\n');
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._~+/=-".contains(c);
        if !(16..=512).contains(&s.len()) || !s.chars().all(allowed) {
            return Err("must hold one line of 16-512 characters from A-Z a-z 0-9 . _ ~ + / = - \
                        (e.g. head -c 32 /dev/urandom | base64)");
        }
        Ok(Secret(s.into()))
    }

    /// Reads the secret from `path` (`-volume-secret FILE`); warns when everyone may read it.
    pub fn read(path: &Path) -> Result<Secret, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("-volume-secret {}: {e}", path.display()))?;
        let secret = Secret::parse(&text).map_err(|why| format!("-volume-secret {}: {why}", path.display()))?;
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o004 != 0 {
                eprintln!("mkv: warning: -volume-secret {} is readable by everyone (chmod o-r)", path.display());
            }
        }
        Ok(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

struct Installed {
    /// `X-Mkv-Secret: <secret>\r\n`, ready to copy into a request head.
    header: Box<[u8]>,
    secret: Secret,
    /// How long a signed redirect stays valid; None: redirects are not signed.
    sign_for: Option<Duration>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Makes every request to a volume carry `secret`, and signs redirects for `sign_for`.
/// Once per process; nothing installed means the volumes are open (the default).
pub fn install(secret: Option<&Secret>, sign_for: Option<Duration>) {
    let Some(secret) = secret else { return };
    let header = format!("X-Mkv-Secret: {}\r\n", secret.expose()).into_bytes().into_boxed_slice();
    let _ = INSTALLED.set(Installed { header, secret: secret.clone(), sign_for });
}

/// The header line that proves a request comes from the master (empty when unprotected).
pub fn header() -> &'static [u8] {
    INSTALLED.get().map_or(&[], |i| &i.header)
}

/// The query that signs a redirect to `replica` (`host:port[/svXX]`) + `path`, valid for
/// `-sign-redirects` from now; empty when redirects are not signed.
pub fn redirect_query(replica: &str, path: &str) -> String {
    let Some((secret, ttl)) = INSTALLED.get().and_then(|i| Some((&i.secret, i.sign_for?))) else {
        return String::new();
    };
    let sub = replica.find('/').map_or("", |i| &replica[i..]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    // whole seconds, rounded up: a link is never valid for less than asked
    let expires = (now + ttl).as_secs() + u64::from((now + ttl).subsec_nanos() > 0);
    super::sign::link(&format!("{sub}{path}"), secret.expose(), expires)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_like_bin_volume() {
        assert_eq!(
            Secret::parse("HQw52mOVjSVcZY3RCaS+cF+L1aa04G6D\n").unwrap().expose(),
            "HQw52mOVjSVcZY3RCaS+cF+L1aa04G6D"
        );
        assert_eq!(Secret::parse("0123456789abcdef\n\n").unwrap().expose(), "0123456789abcdef");
        for bad in [
            "short",
            "0123456789abcdef ",
            " 0123456789abcdef",
            "0123456789abcdef\r\n",
            "0123456789\nabcdef",
            "0123456789abcdef$x",
            "0123456789abcdef\"x",
            &"a".repeat(513),
        ] {
            assert!(Secret::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_it() {
        let s = Secret::parse("0123456789abcdef").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert!(!format!("{:?}", Some(s)).contains("0123"));
    }
}
