//! Helpers for tests, benchmarks and examples (the `test-support` feature):
//! fake but realistic keys, so that leak checks mean something, and small
//! builders.

use crate::config::Config;
use crate::wire::keystore::Lease;
use crate::wire::secret::ApiKey;

/// A fake key of Google's shape: `AIzaSy` and 33 more characters, `tag`
/// (letters) then `i`, zero-padded.
pub fn fake_key(tag: &str, i: usize) -> String {
    let width = 33usize.saturating_sub(tag.len());
    format!("AIzaSy{tag}{i:0width$}")
}

/// `n` fake keys tagged `tag`.
pub fn fake_keys(tag: &str, n: usize) -> Vec<ApiKey> {
    (0..n).map(|i| ApiKey::new(fake_key(tag, i))).collect()
}

/// A lease of the fake key `i` tagged `POOL`.
pub fn lease(i: usize) -> Lease {
    let secret = ApiKey::new(fake_key("POOL", i));
    Lease { id: secret.id(), secret, client: None, pinned: false }
}

/// A header list from string pairs.
pub fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect()
}

/// A configuration with upstreams on a closed local port and, optionally,
/// a proxy key.
pub fn config(proxy_key: Option<&str>) -> Config {
    config_with(proxy_key, None)
}

/// [`config`] with an admin key too.
pub fn config_with(proxy_key: Option<&str>, admin_key: Option<&str>) -> Config {
    let lookup = |v: &str| match v {
        "PROXY_API_KEY" => proxy_key.map(str::to_owned),
        "ADMIN_API_KEY" => admin_key.map(str::to_owned),
        "GEMINI_UPSTREAM_URL" => Some("http://127.0.0.1:9/v1beta".into()),
        "OPENAI_UPSTREAM_URL" => Some("http://127.0.0.1:9/v1beta/openai/".into()),
        _ => None,
    };
    match Config::from_lookup(lookup) {
        Ok(c) => c,
        Err(e) => unreachable!("the test configuration is valid: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fake_keys_have_googles_shape() {
        let k = super::fake_key("POOL", 7);
        assert_eq!(k.len(), 39);
        assert!(k.starts_with("AIzaSyPOOL") && k.ends_with('7'));
    }
}
