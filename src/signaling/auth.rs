//! Who may use the server, decided per request and without I/O: the token (`Authorization: Bearer TOKEN` or
//! `?token=TOKEN`, compared in constant time), the `Host` the request was addressed to (a DNS-rebinding page
//! addresses us by its own name) and the `Origin` of a browser request (a page of another site).

/// A random token (128 bits from the kernel, hex).
pub fn generate_token() -> String {
    hex(&random_bytes::<16>())
}

/// `N` random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()).is_err() {
        // getrandom(2) does not fail for small sizes on Linux ≥ 3.17; fall back to time-derived bits anyway.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        for (b, t) in buf.iter_mut().zip(t.as_nanos().to_le_bytes().iter().cycle()) {
            *b = *t;
        }
    }
    buf
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a request presents: `Some(Ok(token))`, nothing (`None`), or a header and a query token that
/// disagree (`Some(Err(()))`, refused whatever the tokens are).
pub fn presented_token<'a>(authorization: Option<&'a str>, query: Option<&'a str>) -> Option<Result<&'a str, ()>> {
    let header = authorization.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    let query = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    match (header, query) {
        (Some(h), Some(q)) if h != q => Some(Err(())),
        (Some(t), _) | (None, Some(t)) => Some(Ok(t)),
        (None, None) => None,
    }
}

/// Whether `presented` matches `expected` (constant time in the length of `expected`).
pub fn token_ok(expected: Option<&str>, presented: Option<&str>) -> bool {
    let Some(expected) = expected else { return true };
    let Some(presented) = presented else { return false };
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Where a browser request comes from, judged by its `Origin` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// No `Origin` header: not a cross-site browser request (curl, GStreamer, `wl-webrtc status`).
    None,
    /// The page was served by this server (same scheme, host and port).
    Same,
    /// A page of an origin the owner listed (`--allow-origin`): it gets CORS answers naming it.
    Listed(String),
    /// Any other page, or `Origin: null` (sandboxed frames, file: pages).
    Foreign(String),
}

/// The access rules of one server.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Required token; `None` with `--no-auth`.
    pub token: Option<std::sync::Arc<str>>,
    /// Extra host names (lowercase) the server answers to.
    pub allow_hosts: Vec<String>,
    /// Extra origins (lowercase `scheme://host[:port]`) whose pages may use the endpoints.
    pub allow_origins: Vec<String>,
}

impl Policy {
    /// Whether a request addressed to `host` (its `Host` header) is for us: an IP address (a rebinding page
    /// cannot make the browser send one for its own name), `localhost`, or a name the owner listed.
    pub fn host_ok(&self, host: Option<&str>) -> bool {
        let Some(name) = host.and_then(host_name) else { return false };
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.allow_hosts.contains(&name)
    }

    /// Classify a request's `Origin` header; `host` is its `Host` header, `tls` whether it came over HTTPS.
    pub fn origin(&self, origin: Option<&str>, host: Option<&str>, tls: bool) -> Origin {
        let Some(origin) = origin else { return Origin::None };
        let o = origin.trim().to_ascii_lowercase();
        let scheme = if tls { "https" } else { "http" };
        if host.is_some_and(|h| o == format!("{scheme}://{}", h.trim().to_ascii_lowercase())) {
            Origin::Same
        } else if o != "null" && self.allow_origins.contains(&o) {
            Origin::Listed(o)
        } else {
            Origin::Foreign(o)
        }
    }

    /// Whether a request with this `Authorization` header and query string presents the token.
    pub fn authorized(&self, authorization: Option<&str>, query: Option<&str>) -> bool {
        match presented_token(authorization, query) {
            Some(Err(())) => false,
            p => token_ok(self.token.as_deref(), p.and_then(Result::ok)),
        }
    }
}

/// The name part of a `Host` header (`name`, `name:port`, `[v6]:port`), lowercased; `None` if malformed.
fn host_name(host: &str) -> Option<String> {
    let h = host.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        let (v6, port) = rest.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok())) {
            return None;
        }
        v6
    } else {
        match h.rsplit_once(':') {
            Some((n, p)) if p.parse::<u16>().is_ok() => n,
            Some(_) => return None,
            None => h,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-.:".contains(c));
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_or_query_and_disagreement() {
        assert_eq!(presented_token(Some("Bearer abc"), None), Some(Ok("abc")));
        assert_eq!(presented_token(Some("bearer abc"), None), Some(Ok("abc")), "scheme is case-insensitive");
        assert_eq!(presented_token(Some("BEARER  abc "), None), Some(Ok("abc")));
        assert_eq!(presented_token(None, Some("x=1&token=t0k")), Some(Ok("t0k")));
        assert_eq!(presented_token(Some("Basic zzz"), None), None);
        assert_eq!(presented_token(None, None), None);
        assert_eq!(presented_token(Some("Bearer a"), Some("token=a")), Some(Ok("a")), "agreeing");
        assert_eq!(presented_token(Some("Bearer a"), Some("token=b")), Some(Err(())), "disagreeing");
        let p = Policy { token: Some("secret-1".into()), ..Policy::default() };
        assert!(p.authorized(Some("Bearer secret-1"), None));
        assert!(!p.authorized(Some("Bearer secret-1"), Some("token=wrong")), "a wrong query spoils a good header");
        assert!(!p.authorized(Some("Bearer wrong"), Some("token=secret-1")));
        assert!(!p.authorized(None, None));
        assert!(Policy::default().authorized(None, None), "--no-auth");
    }

    #[test]
    fn comparison() {
        assert!(token_ok(None, None), "no token configured: open");
        assert!(token_ok(Some("secret-1"), Some("secret-1")));
        assert!(!token_ok(Some("secret-1"), Some("secret-2")));
        assert!(!token_ok(Some("secret-1"), Some("secret-12")));
        assert!(!token_ok(Some("secret-1"), None));
        let t = generate_token();
        assert_eq!(t.len(), 32);
        assert_ne!(t, generate_token());
    }

    #[test]
    fn hosts_a_rebinding_page_cannot_use() {
        let p = Policy { allow_hosts: vec!["desk.example.org".into()], ..Policy::default() };
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "10.0.0.2", "desk.example.org:443"] {
            assert!(p.host_ok(Some(ok)), "{ok}");
        }
        for bad in ["evil.example:8080", "evil.example", "127.0.0.1.evil.example", "", "a b", "[::1", "x:port"] {
            assert!(!p.host_ok(Some(bad)), "{bad}");
        }
        assert!(!p.host_ok(None), "HTTP/1.1 without Host");
    }

    #[test]
    fn origins() {
        let p = Policy { allow_origins: vec!["https://player.example:8443".into()], ..Policy::default() };
        let h = Some("127.0.0.1:8080");
        assert_eq!(p.origin(None, h, false), Origin::None);
        assert_eq!(p.origin(Some("http://127.0.0.1:8080"), h, false), Origin::Same);
        assert_eq!(p.origin(Some("https://127.0.0.1:8080"), h, true), Origin::Same);
        assert!(matches!(p.origin(Some("http://127.0.0.1:8080"), h, true), Origin::Foreign(_)), "scheme differs");
        assert!(matches!(p.origin(Some("http://127.0.0.1:9999"), h, false), Origin::Foreign(_)), "port differs");
        assert!(matches!(p.origin(Some("http://evil.example"), h, false), Origin::Foreign(_)));
        assert!(matches!(p.origin(Some("null"), h, false), Origin::Foreign(_)));
        assert_eq!(
            p.origin(Some("https://Player.example:8443"), h, false),
            Origin::Listed("https://player.example:8443".into())
        );
    }
}
