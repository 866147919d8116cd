//! Anthropic's Messages and OpenAI's Responses translated onto Gemini: any
//! request body is a Gemini request or a 400, never a panic; any answer a
//! message (a response) or an error; a stream's translation does not depend on how Google's stream is
//! cut into chunks, and is made of whole events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::config::aliases::Aliases;
use proxy_core::request::route::Foreign;
use proxy_core::translate;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    // The input is a request body, then (after a NUL) Google's answer.
    let (body, answer) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let foreign = match cut % 3 {
        0 => Foreign::Messages,
        1 => Foreign::MessagesCountTokens,
        _ => Foreign::Responses,
    };
    let Ok(t) = translate::request(foreign, body, &Aliases::default()) else { return };
    assert!(serde_json::from_slice::<serde_json::Value>(&t.body).is_ok(), "the Gemini body is JSON");
    let _ = t.reply.answer(answer);
    let _ = t.reply.error(400, &String::from_utf8_lossy(answer));
    let mut whole = t.reply.streamer();
    let mut one = Vec::new();
    whole.push(answer, &mut one);
    whole.finish(&mut one);
    let mut pieces = t.reply.streamer();
    let mut many = Vec::new();
    for chunk in answer.chunks(usize::from(cut / 3) % 23 + 1) {
        pieces.push(chunk, &mut many);
    }
    pieces.finish(&mut many);
    assert_eq!(one, many, "the translation depends on the chunking");
    let text = std::str::from_utf8(&one).expect("events are UTF-8");
    assert!(text.ends_with("\n\n"), "the stream ends with a whole event");
    for event in text.split_terminator("\n\n") {
        // A comment keeps a quiet Responses stream alive.
        let comment = event.starts_with(": ") && !event.contains('\n');
        assert!(comment || (event.starts_with("event: ") && event.contains("\ndata: {")), "{event:?}");
    }
});
