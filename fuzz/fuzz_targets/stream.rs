//! SSE and JSON-array splitting: the events found do not depend on how the
//! stream is cut into chunks; usage parsing never panics; the usage read
//! from an answer's tail does not depend on the chunking either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::google::stream::{Framing, Splitter, UsageTail};
use proxy_core::wire::usage::usage_of;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    for framing in [Framing::Sse, Framing::JsonArray] {
        let mut whole = Vec::new();
        Splitter::new(framing).push(stream, |e| whole.push(e.to_vec()));
        let mut pieces = Vec::new();
        let mut s = Splitter::new(framing);
        for chunk in stream.chunks(usize::from(cut % 17) + 1) {
            s.push(chunk, |e| pieces.push(e.to_vec()));
        }
        assert_eq!(whole, pieces, "{framing:?} depends on the chunking");
        for e in &whole {
            let _ = usage_of(e);
        }
    }
    let mut whole = UsageTail::new();
    whole.push(stream);
    let mut pieces = UsageTail::new();
    for chunk in stream.chunks(usize::from(cut % 31) * 97 + 1) {
        pieces.push(chunk);
    }
    assert_eq!(whole.usage(), pieces.usage(), "the tail's usage depends on the chunking");
});
