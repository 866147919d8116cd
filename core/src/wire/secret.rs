//! Secrets and their redaction.
//!
//! An [`ApiKey`] never prints its secret: `Debug` and `Display` show only the
//! masked form. [`redact`] scrubs Gemini key shapes (`AIza…`, `AQ.…`) and
//! Google's `containerInfo` metadata (which can carry the full key) from any
//! text before it is stored or shown.

use sha2::{Digest, Sha256};
use std::fmt;

/// A secret credential: a pool key or the proxy's own access key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a secret. Surrounding whitespace is trimmed.
    pub fn new(secret: impl Into<String>) -> Self {
        let s: String = secret.into();
        let trimmed = s.trim();
        if trimmed.len() == s.len() { Self(s) } else { Self(trimmed.to_owned()) }
    }

    /// The secret itself; call only where it must go on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The masked form: first 4 + `…` + last 4 characters (or `…` alone for
    /// keys too short to mask safely).
    pub fn masked(&self) -> String {
        mask(&self.0)
    }

    /// The stable, non-secret id of this key.
    pub fn id(&self) -> KeyId {
        KeyId::of(self)
    }

    /// Compares against a candidate without leaking, through timing, where
    /// the two differ or how long the secret is.
    pub fn matches(&self, candidate: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(candidate.trim().as_bytes());
        a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.masked())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Masks a secret as first 4 + `…` + last 4 characters.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "…".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// A stable identifier for a key: derived from a hash of the secret, so it
/// is the same on every host and across restarts, yet reveals nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &ApiKey) -> Self {
        let digest = Sha256::digest(key.expose().as_bytes());
        let mut s = String::with_capacity(14);
        s.push_str("k-");
        for b in &digest[..6] {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s)
    }

    /// Rebuilds an id from its text form (as stored or sent over WIT).
    pub fn from_string(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// Removes everything secret-shaped from `text`: Gemini API keys (`AIza` +
/// 35 characters; a run of 30 or more is masked, so that a key cut a little
/// short leaks nothing either), OAuth-style access tokens (`AQ.` + 20 or
/// more characters), any of the `known` secrets verbatim, and the value of
/// every `"containerInfo"` JSON field. A shape is masked wherever it
/// starts, even glued to other text.
pub fn redact(text: &str, known: &[&ApiKey]) -> String {
    let mut out = text.to_owned();
    for key in known {
        let secret = key.expose();
        if secret.len() >= 8 && out.contains(secret) {
            out = out.replace(secret, &key.masked());
        }
    }
    let out = redact_shapes(&out);
    redact_container_info(&out)
}

fn redact_shapes(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let len = if bytes[i..].starts_with(b"AIza") {
            let run = bytes[i..].iter().take_while(|c| is_key_char(**c)).count();
            if run >= 30 { run } else { 0 }
        } else if bytes[i..].starts_with(b"AQ.") {
            let run = 3 + bytes[i + 3..].iter().take_while(|c| is_key_char(**c) || **c == b'.').count();
            if run >= 23 { run } else { 0 }
        } else {
            0
        };
        if len > 0 {
            out.push_str(&text[copied..i]);
            out.push_str(&mask(&text[i..i + len]));
            i += len;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

fn redact_container_info(text: &str) -> String {
    const FIELD: &str = "\"containerInfo\"";
    if !text.contains(FIELD) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(FIELD) {
        let after = pos + FIELD.len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let trimmed = rest.trim_start();
        let Some(value) = trimmed.strip_prefix(':') else { continue };
        let value = value.trim_start();
        let Some(body) = value.strip_prefix('"') else { continue };
        // Find the closing quote, honouring backslash escapes.
        let mut end = None;
        let mut escaped = false;
        for (idx, c) in body.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(idx);
                    break;
                }
                _ => {}
            }
        }
        out.push_str(": \"[redacted]\"");
        match end {
            Some(e) => rest = &body[e + 1..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AIZA: &str = "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW";
    const AQ: &str = "AQ.Ab8RN6KxQz1y2w3v4u5t6s7r8q9p0o_-mnbv";

    #[test]
    fn keys_cut_short_or_glued_to_text_are_masked_too() {
        // Found by the redact fuzz target: a planted key one character
        // short survived, as did one glued to the text before it.
        let short = &AIZA[..38];
        assert!(!redact(&format!("key {short}!"), &[]).contains(short));
        assert!(!redact(&format!("api_key:{AIZA}"), &[]).contains(AIZA));
        assert!(!redact(&format!("xx{AIZA}"), &[]).contains(AIZA));
        assert_eq!(redact("AIzaShort and AIza", &[]), "AIzaShort and AIza");
    }

    #[test]
    fn masks_first_and_last_four() {
        assert_eq!(AIZA.len(), 39);
        assert_eq!(mask(AIZA), "AIza…tUvW");
        assert_eq!(mask("short"), "…");
    }

    #[test]
    fn api_key_never_prints_its_secret() {
        let k = ApiKey::new(AIZA);
        assert!(!format!("{k:?}").contains(AIZA));
        assert!(!format!("{k}").contains(AIZA));
        assert!(format!("{k:?}").contains("AIza…tUvW"));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = ApiKey::new(AIZA);
        let b = ApiKey::new(AQ);
        assert_eq!(a.id(), ApiKey::new(format!(" {AIZA}\n")).id());
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id().as_str().len(), 14);
        assert!(!a.id().as_str().contains("AIza"));
    }

    #[test]
    fn matches_is_exact() {
        let k = ApiKey::new("proxy-secret-123");
        assert!(k.matches("proxy-secret-123"));
        assert!(!k.matches("proxy-secret-124"));
        assert!(!k.matches("proxy-secret-12"));
        assert!(!k.matches(""));
    }

    #[test]
    fn redacts_aiza_and_aq_shapes() {
        let text = format!("key {AIZA} and token {AQ}, done");
        let r = redact(&text, &[]);
        assert!(!r.contains(AIZA));
        assert!(!r.contains(AQ));
        assert!(r.contains("AIza…tUvW"));
        assert!(r.ends_with(", done"));
        // Not key-shaped: left alone.
        assert_eq!(redact("AIza is a prefix; AQ.short", &[]), "AIza is a prefix; AQ.short");
    }

    #[test]
    fn redacts_known_secrets_of_any_shape() {
        let k = ApiKey::new("sk-custom-secret-value");
        let r = redact("the key sk-custom-secret-value leaked", &[&k]);
        assert_eq!(r, "the key sk-c…alue leaked");
    }

    #[test]
    fn redacts_container_info() {
        let body = r#"{"error":{"code":403,"details":[{"metadata":{"containerInfo": "projects/1/keys/XYZ \"q\" secret","service":"x"}}]}}"#;
        let r = redact(body, &[]);
        assert!(!r.contains("secret"), "{r}");
        assert!(r.contains(r#""containerInfo": "[redacted]","service":"x""#), "{r}");
        assert!(serde_json::from_str::<serde_json::Value>(&r).is_ok());
    }
}
