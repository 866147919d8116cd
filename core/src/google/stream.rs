//! Streamed answers, read as they pass: the events of an SSE stream
//! (`alt=sse`, OpenAI's `stream: true`) and the elements of a
//! `streamGenerateContent` JSON array, found incrementally, chunk by chunk,
//! holding no more than one event (up to [`MAX_EVENT_BYTES`]), and the
//! token usage the answers carry (Gemini's `usageMetadata`, OpenAI's
//! `usage`; a stream's last event carries the totals).

use crate::wire::usage::TokenUsage;
use crate::wire::usage::gemini_usage;
use crate::wire::usage::openai_usage;
use serde_json::Value;

/// The largest event kept whole; a larger one (inline image data, say) is
/// passed over, its boundaries still found.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// How a streamed answer is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events: each ends at a blank line; its `data:` lines hold
    /// the JSON.
    Sse,
    /// One JSON array whose elements arrive one after another.
    JsonArray,
}

/// Finds the events of a stream as its chunks arrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splitter {
    framing: Framing,
    event: Vec<u8>,
    oversized: bool,
    // JSON array state.
    depth: u32,
    in_string: bool,
    escaped: bool,
    // SSE state: the last bytes seen, to find a blank line across chunks.
    tail: [u8; 3],
}

impl Splitter {
    /// A splitter for a stream framed as `framing`.
    pub fn new(framing: Framing) -> Self {
        Self { framing, event: Vec::new(), oversized: false, depth: 0, in_string: false, escaped: false, tail: [0; 3] }
    }

    fn keep(&mut self, b: u8) {
        if self.event.len() < MAX_EVENT_BYTES {
            self.event.push(b);
        } else {
            self.oversized = true;
        }
    }

    fn emit(&mut self, on_event: &mut impl FnMut(&[u8])) {
        if !self.oversized && !self.event.is_empty() {
            on_event(&self.event);
        }
        self.event.clear();
        self.oversized = false;
    }

    /// Feeds a chunk; calls `on_event` with each event it completes (an SSE
    /// event's JSON payload, or one array element).
    pub fn push(&mut self, chunk: &[u8], mut on_event: impl FnMut(&[u8])) {
        for &b in chunk {
            match self.framing {
                Framing::Sse => {
                    self.keep(b);
                    // A blank line: a line end right after a line end
                    // (`\n\n`, `\r\n\r\n`, `\n\r\n`).
                    let t = self.tail;
                    let blank = b == b'\n' && (t[2] == b'\n' || (t[2] == b'\r' && t[1] == b'\n'));
                    self.tail = [t[1], t[2], b];
                    if blank {
                        let event = sse_data(&self.event);
                        if !self.oversized && !event.is_empty() {
                            on_event(&event);
                        }
                        self.event.clear();
                        self.oversized = false;
                    }
                }
                Framing::JsonArray => self.json_byte(b, &mut on_event),
            }
        }
    }

    fn json_byte(&mut self, b: u8, on_event: &mut impl FnMut(&[u8])) {
        if self.in_string {
            self.keep(b);
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return;
        }
        match b {
            b'[' | b'{' => {
                self.depth = self.depth.saturating_add(1);
                if self.depth > 1 {
                    self.keep(b);
                }
            }
            b']' | b'}' => {
                if self.depth > 1 {
                    self.keep(b);
                }
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 1 && b == b'}' {
                    self.emit(on_event);
                }
            }
            b',' if self.depth == 1 => self.emit(on_event),
            b'"' => {
                self.in_string = true;
                if self.depth > 1 {
                    self.keep(b);
                }
            }
            _ if self.depth > 1 => self.keep(b),
            _ => {}
        }
    }
}

/// The payload of an SSE event: its `data:` lines, joined.
fn sse_data(event: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(data) = line.strip_prefix(b"data:") {
            if !out.is_empty() {
                out.push(b'\n');
            }
            out.extend_from_slice(data.strip_prefix(b" ").unwrap_or(data));
        }
    }
    out
}

/// How much of an answer's end [`UsageTail`] keeps.
pub const TAIL_BYTES: usize = 16 * 1024;

/// How much of an answer's start [`UsageTail::keeping_head`] keeps when
/// asked to: enough for the answers that create a resource (an upload's
/// last answer, a cached content, a batch, an operation, an
/// interaction's first event).
pub const HEAD_BYTES: usize = 64 * 1024;

/// The ends of an answer as it passes, to read once it is over: its token
/// usage (`usageMetadata`, `usage`), which comes last in a JSON answer and
/// in a stream's last events, so the last [`TAIL_BYTES`] hold it; and,
/// when asked for, its first bytes (the resources it tells of). No event
/// is parsed on the way (each chunk costs one copy of at most
/// [`TAIL_BYTES`]), and nothing is held back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageTail {
    tail: Vec<u8>,
    head: Vec<u8>,
    head_limit: usize,
    /// Whether more than `head_limit` bytes passed.
    beyond_head: bool,
}

/// What a host saw of a streamed answer ([`UsageTail::seen`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The token usage it reported last.
    pub usage: Option<TokenUsage>,
    /// Its first bytes, as many as were asked for.
    pub head: Vec<u8>,
    /// Whether `head` is the whole answer.
    pub whole: bool,
    /// The signed tool calls of a chat answer that was read for them
    /// ([`crate::translate::recall::Watch`]): call id → signature.
    pub signatures: Vec<(String, String)>,
}

impl Seen {
    /// An answer that reported `usage`, its start unseen.
    pub fn usage(usage: Option<TokenUsage>) -> Self {
        Self { usage, head: Vec::new(), whole: false, signatures: Vec::new() }
    }
}

impl UsageTail {
    /// A tail with nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many of the answer's first bytes it keeps.
    pub fn head_limit(&self) -> usize {
        self.head_limit
    }

    /// A tail that also keeps the answer's first `limit` bytes (at most
    /// [`HEAD_BYTES`]).
    pub fn keeping_head(limit: usize) -> Self {
        Self { head_limit: limit.min(HEAD_BYTES), ..Self::default() }
    }

    /// Notes a chunk of the answer.
    pub fn push(&mut self, chunk: &[u8]) {
        let room = self.head_limit - self.head.len();
        if room > 0 {
            self.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        self.beyond_head |= chunk.len() > room;
        if chunk.len() >= TAIL_BYTES {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - TAIL_BYTES..]);
            return;
        }
        let overflow = (self.tail.len() + chunk.len()).saturating_sub(TAIL_BYTES);
        if overflow > 0 {
            self.tail.drain(..overflow);
        }
        self.tail.extend_from_slice(chunk);
    }

    /// What was seen: the usage, and the head when one was kept.
    pub fn seen(self) -> Seen {
        let usage = self.usage();
        let whole = self.head_limit > 0 && !self.beyond_head;
        Seen { usage, head: self.head, whole, signatures: Vec::new() }
    }

    /// The last usage the answer reported, if any: the value of the last
    /// `"usageMetadata"` or `"usage"` member that is an object (a key
    /// inside a string is escaped, `\"usage\"`, and not taken).
    pub fn usage(&self) -> Option<TokenUsage> {
        let t = &self.tail;
        let mut end = t.len();
        while let Some(at) = t[..end].iter().rposition(|&b| b == b'"') {
            end = at;
            let parse: fn(&Value) -> Option<TokenUsage> =
                if t[..at].ends_with(b"\"usageMetadata") && is_key_start(t, at - 14) {
                    gemini_usage
                } else if t[..at].ends_with(b"\"usage") && is_key_start(t, at - 6) {
                    openai_usage
                } else {
                    continue;
                };
            let after = &t[at + 1..];
            let Some(colon) = after.iter().position(|b| !b.is_ascii_whitespace()) else { continue };
            if after[colon] != b':' {
                continue;
            }
            let value = &after[colon + 1..];
            let found = serde_json::Deserializer::from_slice(value).into_iter::<Value>().next();
            if let Some(Ok(v)) = found
                && let Some(u) = parse(&v)
            {
                return Some(u);
            }
        }
        None
    }
}

/// Whether the quote at `at` opens a member name: not escaped, so not
/// inside a string.
fn is_key_start(t: &[u8], at: usize) -> bool {
    t.get(at) == Some(&b'"') && (at == 0 || t[at - 1] != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::usage::TokenUsage;
    use crate::wire::usage::usage_of;

    fn events(framing: Framing, chunks: &[&[u8]]) -> Vec<String> {
        let mut s = Splitter::new(framing);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |e| out.push(String::from_utf8_lossy(e).into_owned()));
        }
        out
    }

    #[test]
    fn sse_events_across_chunk_boundaries_of_either_line_end() {
        let stream = b"data: {\"a\":1}\r\n\r\ndata: {\"a\":2}\n\ndata: [DONE]\n\n";
        let whole = events(Framing::Sse, &[stream]);
        assert_eq!(whole, ["{\"a\":1}", "{\"a\":2}", "[DONE]"]);
        // Byte by byte, the same.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events(Framing::Sse, &bytes), whole);
    }

    #[test]
    fn json_array_elements_with_strings_that_look_like_structure() {
        let stream = br#"[{"t":"a,}]{[\"x"},
{"t":"b","n":{"m":[1,2]}}
]"#;
        let whole = events(Framing::JsonArray, &[stream]);
        assert_eq!(whole, [r#"{"t":"a,}]{[\"x"}"#, r#"{"t":"b","n":{"m":[1,2]}}"#]);
        let bytes: Vec<&[u8]> = stream.chunks(3).collect();
        assert_eq!(events(Framing::JsonArray, &bytes), whole);
    }

    #[test]
    fn oversized_events_are_passed_over_but_bounded() {
        let mut big = b"data: {\"x\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_EVENT_BYTES + 10));
        big.extend_from_slice(b"\"}\n\ndata: {\"y\":1}\n\n");
        let mut s = Splitter::new(Framing::Sse);
        let mut out = Vec::new();
        s.push(&big, |e| out.push(e.to_vec()));
        assert_eq!(out, [b"{\"y\":1}".to_vec()]);
        assert!(s.event.capacity() <= 2 * MAX_EVENT_BYTES);
    }

    #[test]
    fn the_tail_finds_the_last_usage_of_a_stream_or_an_answer_in_any_chunking() {
        let sse = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"say \\\"usage\\\": {}\"}]}}],",
            "\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":1}}\r\n\r\n",
            "data: {\"candidates\":[],\"usageMetadata\": {\"promptTokenCount\":3,\"candidatesTokenCount\":9,",
            "\"thoughtsTokenCount\":4,\"cachedContentTokenCount\":2},\"modelVersion\":\"m\"}\r\n\r\n"
        );
        let want = TokenUsage { prompt: 3, output: 9, cached: 2, thinking: 4 };
        for size in [1, 7, 64, sse.len()] {
            let mut tail = UsageTail::new();
            sse.as_bytes().chunks(size).for_each(|c| tail.push(c));
            assert_eq!(tail.usage(), Some(want), "chunks of {size}");
        }
        // OpenAI: the usage chunk, then `[DONE]`; earlier chunks' `null`s skipped.
        let openai = b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\ndata: [DONE]\n\n";
        let mut tail = UsageTail::new();
        tail.push(openai);
        assert_eq!(tail.usage(), Some(TokenUsage { prompt: 5, output: 6, cached: 0, thinking: 1 }));
        // A long answer keeps only its end, which holds the usage.
        let mut tail = UsageTail::new();
        let mut body = b"{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"".to_vec();
        body.extend(std::iter::repeat_n(b'x', 3 * TAIL_BYTES));
        body.extend_from_slice(b"\"}]}}],\"usageMetadata\":{\"promptTokenCount\":11}}");
        body.chunks(4096).for_each(|c| tail.push(c));
        assert_eq!(tail.usage().map(|u| u.prompt), Some(11));
        // Nothing, or only a key inside a string: none.
        let mut tail = UsageTail::new();
        tail.push(br#"{"text":"\"usage\": {\"prompt_tokens\": 9}"}"#);
        assert_eq!(tail.usage(), None);
        assert_eq!(UsageTail::new().usage(), None);
    }

    #[test]
    fn usage_in_either_dialect() {
        let gemini = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":5,"cachedContentTokenCount":2,"thoughtsTokenCount":7,"totalTokenCount":15}}"#;
        assert_eq!(usage_of(gemini), Some(TokenUsage { prompt: 3, output: 5, cached: 2, thinking: 7 }));
        let openai = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":1},"completion_tokens_details":{"reasoning_tokens":4}}}"#;
        assert_eq!(usage_of(openai), Some(TokenUsage { prompt: 3, output: 5, cached: 1, thinking: 4 }));
        assert_eq!(usage_of(br#"{"usage":null}"#), None);
        assert_eq!(usage_of(b"[DONE]"), None);
    }

    #[test]
    fn a_head_is_kept_only_when_asked_for_and_says_whether_it_is_whole() {
        let answer = b"{\"name\":\"batches/b1\"}";
        let mut tail = UsageTail::keeping_head(64);
        tail.push(&answer[..5]);
        tail.push(&answer[5..]);
        assert_eq!(tail.seen(), Seen { usage: None, head: answer.to_vec(), whole: true, signatures: Vec::new() });
        let mut tail = UsageTail::keeping_head(8);
        tail.push(answer);
        assert_eq!((tail.clone().seen().head, tail.seen().whole), (answer[..8].to_vec(), false));
        let mut tail = UsageTail::new();
        tail.push(answer);
        assert_eq!(tail.seen(), Seen::default(), "no head asked for");
        assert_eq!(UsageTail::keeping_head(usize::MAX).head_limit, HEAD_BYTES);
    }

    #[test]
    fn an_interactions_usage_counts() {
        let done = br#"{"id":"v1_it","status":"completed","usage":{"total_input_tokens":11,"total_output_tokens":7,"total_thought_tokens":3,"total_cached_tokens":2,"total_tokens":21}}"#;
        assert_eq!(usage_of(done), Some(TokenUsage { prompt: 11, output: 7, cached: 2, thinking: 3 }));
    }
}
