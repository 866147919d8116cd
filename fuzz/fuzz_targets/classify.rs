//! Upstream error classification and Google error parsing, with a pool key
//! planted in the body: no reason kept may hold it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::ApiKey;
use proxy_core::Outcome;
use proxy_core::google::errors::{Confirmation, Verdict, classify, confirm, parse_google_error};

const SECRET: &str = "AIzaSyFUZZsecretKEYfuzzSECRETkey0000001";

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]) % 600, rest),
        _ => return,
    };
    let _ = parse_google_error(body);
    let text = String::from_utf8_lossy(body);
    let at = text.char_indices().map(|(i, _)| i).nth(body.len() / 2).unwrap_or(text.len());
    let planted = format!("{}{SECRET}{}", &text[..at], &text[at..]);
    let key = ApiKey::new(SECRET);
    let verdict = classify(status, planted.as_bytes(), |t| proxy_core::wire::secret::redact(t, &[&key]));
    let reason = match &verdict {
        Verdict::Retry(o) | Verdict::Relay(o) => match o {
            Outcome::RateLimited(rl) => Some(rl.reason.clone()),
            Outcome::KeyRejected { reason } | Outcome::UpstreamError { reason, .. } => Some(reason.clone()),
            _ => None,
        },
        Verdict::Success | Verdict::Suspect => None,
    };
    if let Some(r) = reason {
        assert!(!r.contains(SECRET), "a secret in a kept reason");
    }
    // A suspect key's check: its reason is kept too.
    if let Confirmation::KeyRejected(Outcome::KeyRejected { reason }) =
        confirm(status, planted.as_bytes(), |t| proxy_core::wire::secret::redact(t, &[&key]))
    {
        assert!(!reason.contains(SECRET), "a secret in a check's reason");
    }
});
