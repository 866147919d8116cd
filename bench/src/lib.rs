//! Shared pieces of the benchmark tools: wall-clock stamps that two
//! processes on one machine can compare, and percentiles.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (the same clock in every process of
/// the machine, so an upstream's stamp can be compared with a client's).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The `q`-quantile (0.0..=1.0) of `sorted`, by nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Finds the stamp `"t":NNN` (or `@NNN`) in one SSE event's data. A
/// Responses API event that closes an item (`….done`, `response.completed`)
/// repeats the whole text so far, its first stamp included: only the
/// deltas are timed.
pub fn stamp_in(event: &[u8]) -> Option<u64> {
    let responses = event.windows(17).any(|w| w == b"\"type\":\"response.");
    if responses && !event.windows(7).any(|w| w == b".delta\"") {
        return None;
    }
    // `"t":` in bench-upstream's own events; `@` in their text, which is
    // all a translated event (Anthropic's) keeps of them.
    let at = match event.windows(4).position(|w| w == b"\"t\":") {
        Some(at) => at + 4,
        None => event.windows(2).position(|w| w[0] == b'@' && w[1].is_ascii_digit())? + 1,
    };
    let digits: Vec<u8> = event[at..].iter().copied().take_while(u8::is_ascii_digit).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_responses_delta_is_timed() {
        let delta = br#"{"type":"response.output_text.delta","delta":"x @123 "}"#;
        assert_eq!(stamp_in(delta), Some(123));
        assert_eq!(stamp_in(br#"{"type":"response.output_text.done","text":"x @123 y @456"}"#), None);
        assert_eq!(stamp_in(br#"{"type":"content_block_delta","delta":{"text":"@77"}}"#), Some(77));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn finds_the_stamp() {
        assert_eq!(stamp_in(br#"data: {"candidates":[],"t":1234567}"#), Some(1_234_567));
        assert_eq!(stamp_in(b"data: {}"), None);
        let translated =
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"chunk 3 @987654 "}}"#;
        assert_eq!(stamp_in(translated), Some(987_654));
        assert_eq!(stamp_in(br#"{"text":"mail@ x"}"#), None);
    }
}
