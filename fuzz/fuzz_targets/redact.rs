//! Redaction: whatever surrounds them, a known secret and a planted
//! key-shaped string never survive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::ApiKey;
use proxy_core::wire::secret::redact;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let known = ApiKey::new("AQ.knownSECRETfuzzKEY0123456789abcdef");
    let at = text.char_indices().map(|(i, _)| i).nth(text.chars().count() / 2).unwrap_or(text.len());
    let shaped = "AIzaSyPLANTEDkeyPLANTEDkeyPLANTEDkey001";
    let input = format!("{}{}{} {}{}", &text[..at], known.expose(), &text[at..], shaped, &text[..at]);
    let out = redact(&input, &[&known]);
    assert!(!out.contains(known.expose()), "the known secret survived");
    assert!(!out.contains(shaped), "a key-shaped string survived");
    let _ = redact(&text, &[]);
});
