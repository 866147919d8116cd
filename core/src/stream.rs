//! Streamed answers, read as they pass: the events of an SSE stream
//! (`alt=sse`, OpenAI's `stream: true`) and the elements of a
//! `streamGenerateContent` JSON array, found incrementally, chunk by chunk,
//! holding no more than one event (up to [`MAX_EVENT_BYTES`]), and the
//! token usage the answers carry (Gemini's `usageMetadata`, OpenAI's
//! `usage`; a stream's last event carries the totals).

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
#[derive(Clone, Debug)]
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

/// The tokens an answer used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt (input) tokens.
    pub prompt: u64,
    /// Output tokens (candidates; completion).
    pub output: u64,
    /// Prompt tokens served from a cache.
    pub cached: u64,
    /// Thinking (reasoning) tokens.
    pub thinking: u64,
}

/// The usage an answer (or a stream's event) reports, if it reports one:
/// Gemini's `usageMetadata` or OpenAI's `usage`.
pub fn usage_of(json: &[u8]) -> Option<TokenUsage> {
    let v: Value = serde_json::from_slice(json).ok()?;
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    if let Some(u) = v.get("usageMetadata") {
        return Some(TokenUsage {
            prompt: n(u, "promptTokenCount"),
            output: n(u, "candidatesTokenCount"),
            cached: n(u, "cachedContentTokenCount"),
            thinking: n(u, "thoughtsTokenCount"),
        });
    }
    let u = v.get("usage").filter(|u| u.is_object())?;
    let details = |k: &str, field: &str| u.get(k).map_or(0, |d| n(d, field));
    Some(TokenUsage {
        prompt: n(u, "prompt_tokens"),
        output: n(u, "completion_tokens"),
        cached: details("prompt_tokens_details", "cached_tokens"),
        thinking: details("completion_tokens_details", "reasoning_tokens"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn usage_in_either_dialect() {
        let gemini = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":5,"cachedContentTokenCount":2,"thoughtsTokenCount":7,"totalTokenCount":15}}"#;
        assert_eq!(usage_of(gemini), Some(TokenUsage { prompt: 3, output: 5, cached: 2, thinking: 7 }));
        let openai = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":1},"completion_tokens_details":{"reasoning_tokens":4}}}"#;
        assert_eq!(usage_of(openai), Some(TokenUsage { prompt: 3, output: 5, cached: 1, thinking: 4 }));
        assert_eq!(usage_of(br#"{"usage":null}"#), None);
        assert_eq!(usage_of(b"[DONE]"), None);
    }
}
