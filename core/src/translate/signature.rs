//! Gemini's thought signatures on their way through a client that knows
//! nothing of them.
//!
//! Gemini 3 signs a model turn's first function call (`thoughtSignature`
//! on its part) and refuses the next turn when that signature does not
//! come back (`400 … function call … is missing a thought_signature`).
//! A client of a translated API returns only what its own API has: so the
//! signature rides in what it returns unchanged, the call's id
//! ([`call_id`]), or a `thinking` block's `signature` ([`thinking`]), and
//! goes back to Google verbatim. Where a client dropped it, Google's
//! documented placeholder ([`PLACEHOLDER`]) stands in, and the host's log
//! says so.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Google's documented stand-in for a signature the client no longer has:
/// the call is accepted, without the model's earlier reasoning.
pub const PLACEHOLDER: &str = "skip_thought_signature_validator";

/// The start of the call ids the proxy makes for Anthropic's clients.
pub const ANTHROPIC_CALL: &str = "toolu_";

/// The start of the call ids the proxy makes for OpenAI's clients.
pub const OPENAI_CALL: &str = "call_";

/// What marks a `thinking` block's signature as one of Google's, carried by
/// the proxy (a block signed by another provider is not sent to Google).
const THINKING_MARK: &str = "gemini.";

/// A call id (starting with `prefix`: [`ANTHROPIC_CALL`],
/// [`OPENAI_CALL`]) for the `index`th call of an answer whose id is `nonce`
/// (alphanumeric), carrying `signature` when Google sent one:
/// `{prefix}{nonce}_{index}[_s{signature, base64url}]`.
pub fn call_id(prefix: &str, nonce: &str, index: usize, signature: Option<&str>) -> String {
    match signature {
        Some(sig) => format!("{prefix}{nonce}_{index}_s{}", URL_SAFE_NO_PAD.encode(sig)),
        None => format!("{prefix}{nonce}_{index}"),
    }
}

/// The signature a call id made by [`call_id`] carries, verbatim.
pub fn of_call_id(id: &str) -> Option<String> {
    let rest = id.strip_prefix(ANTHROPIC_CALL).or_else(|| id.strip_prefix(OPENAI_CALL))?;
    let mut parts = rest.splitn(3, '_');
    let (_nonce, index, signed) = (parts.next()?, parts.next()?, parts.next()?);
    if !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(signed.strip_prefix('s')?).ok()?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// A `thinking` block's `signature` carrying Google's `signature`.
pub fn thinking(signature: &str) -> String {
    format!("{THINKING_MARK}{signature}")
}

/// Google's signature in a `thinking` block's `signature`, if the proxy put
/// it there.
pub fn of_thinking(signature: &str) -> Option<&str> {
    signature.strip_prefix(THINKING_MARK).filter(|s| !s.is_empty())
}

/// An answer's nonce for its call ids: Google's `responseId` when it has
/// one that fits, else one made of `seed` (the answer's bytes).
pub fn nonce(response_id: Option<&str>, seed: &[u8]) -> String {
    match response_id {
        Some(id) if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) => id.to_owned(),
        _ => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(seed);
            digest[..9].iter().map(|b| format!("{b:02x}")).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_survives_a_call_id_verbatim() {
        for sig in ["CiQBjz1rX+/abc==", "EtYDCtMDAdHtim9Y_x-", "a", "ünïcode/+="] {
            let id = call_id(ANTHROPIC_CALL, "R3sp0nse", 2, Some(sig));
            assert!(id.starts_with("toolu_R3sp0nse_2_s"));
            let openai = call_id(OPENAI_CALL, "R3sp0nse", 2, Some(sig));
            assert_eq!(of_call_id(&openai).as_deref(), Some(sig));
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{id}");
            assert_eq!(of_call_id(&id).as_deref(), Some(sig));
        }
    }

    #[test]
    fn ids_without_a_signature_carry_none() {
        assert_eq!(of_call_id(&call_id(ANTHROPIC_CALL, "n", 0, None)), None);
        assert_eq!(of_call_id("toolu_01A09q90qw90lq917835lq9"), None);
        assert_eq!(of_call_id("call_abc"), None);
        assert_eq!(of_call_id("toolu_n_x_sYWJj"), None);
        assert_eq!(of_call_id("toolu_n_1_s!!"), None);
    }

    #[test]
    fn thinking_signatures_are_marked() {
        assert_eq!(of_thinking(&thinking("abc")), Some("abc"));
        assert_eq!(of_thinking("EqQBCkgIARABGAIiQL"), None);
        assert_eq!(of_thinking("gemini."), None);
    }

    #[test]
    fn nonces_are_google_s_id_or_made_from_the_answer() {
        assert_eq!(nonce(Some("abcXYZ123"), b"x"), "abcXYZ123");
        let made = nonce(Some("not/alnum"), b"body");
        assert_eq!(made.len(), 18);
        assert_eq!(made, nonce(None, b"body"));
        assert_ne!(made, nonce(None, b"other"));
    }
}
