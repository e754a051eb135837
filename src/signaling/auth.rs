//! Token checks: `Authorization: Bearer TOKEN` or `?token=TOKEN`, compared in constant time.

/// A random token for a non-loopback listen address (128 bits from the kernel, hex).
pub fn generate_token() -> String {
    let mut buf = [0u8; 16];
    if rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()).is_err() {
        // getrandom(2) does not fail for 16 bytes on Linux ≥ 3.17; fall back to time-derived bits anyway.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        buf[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token a request presents, from its Authorization header or query string.
pub fn presented_token<'a>(authorization: Option<&'a str>, query: Option<&'a str>) -> Option<&'a str> {
    if let Some(t) = authorization.and_then(|h| h.strip_prefix("Bearer ")) {
        return Some(t.trim());
    }
    query?.split('&').find_map(|kv| kv.strip_prefix("token="))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_or_query() {
        assert_eq!(presented_token(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(presented_token(None, Some("x=1&token=t0k")), Some("t0k"));
        assert_eq!(presented_token(Some("Basic zzz"), None), None);
        assert_eq!(presented_token(None, None), None);
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
}
