//! The model an alias chose, named back as the client asked for it: a
//! native or OpenAI-style answer of an aliased call goes to the client with
//! its `"model"` (OpenAI) and `"modelVersion"` (Gemini) values that name the
//! Gemini model replaced by the client's name, line by line as it streams.
//! Nothing else changes: a value of another model, a `model` inside a
//! string (its quotes escaped), every other byte.

/// The keys whose value names the model.
const KEYS: [&[u8]; 2] = [b"\"model\"", b"\"modelVersion\""];

/// Renames the model in an answer, a line at a time (an SSE event's
/// `data:` line; a whole JSON answer, or each line of a pretty one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rename {
    /// The Gemini model, as Google names it (with or without `models/`).
    gemini: String,
    /// The client's name for it.
    asked: String,
    /// An unfinished line.
    line: Vec<u8>,
}

impl Rename {
    /// Renames `gemini` to `asked` (a model name: no quote or backslash).
    pub fn new(gemini: &str, asked: &str) -> Self {
        Self { gemini: gemini.to_owned(), asked: asked.to_owned(), line: Vec::new() }
    }

    /// A piece of the answer; whole lines go to `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        let Some(last) = piece.iter().rposition(|&b| b == b'\n') else {
            self.line.extend_from_slice(piece);
            return;
        };
        let (lines, rest) = piece.split_at(last + 1);
        if self.line.is_empty() {
            self.rename(lines, out);
        } else {
            let mut joined = std::mem::take(&mut self.line);
            joined.extend_from_slice(lines);
            self.rename(&joined, out);
        }
        self.line.extend_from_slice(rest);
    }

    /// The answer ended (cleanly or not): its last, unfinished line.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let line = std::mem::take(&mut self.line);
        self.rename(&line, out);
    }

    fn rename(&self, text: &[u8], out: &mut Vec<u8>) {
        let mut at = 0;
        while let Some((value_start, value_end)) = self.next_value(text, at) {
            out.extend_from_slice(&text[at..value_start]);
            out.extend_from_slice(self.asked.as_bytes());
            at = value_end;
        }
        out.extend_from_slice(&text[at..]);
    }

    /// The span of the next value (after `from`) of a model key that names
    /// the Gemini model.
    fn next_value(&self, text: &[u8], from: usize) -> Option<(usize, usize)> {
        let mut i = from;
        while i < text.len() {
            let found = KEYS.iter().filter_map(|k| find(&text[i..], k).map(|at| (i + at, k.len()))).min();
            let (key_at, key_len) = found?;
            let mut j = key_at + key_len;
            let skip = |j: &mut usize| {
                while text.get(*j).is_some_and(|b| b.is_ascii_whitespace()) {
                    *j += 1;
                }
            };
            skip(&mut j);
            if text.get(j) == Some(&b':') {
                j += 1;
                skip(&mut j);
                if text.get(j) == Some(&b'"') {
                    let start = j + 1;
                    let value = &text[start..];
                    let name = self.gemini.as_bytes();
                    let bare = value.strip_prefix(b"models/".as_slice()).unwrap_or(value);
                    if bare.starts_with(name) && bare.get(name.len()) == Some(&b'"') {
                        let end = start + (value.len() - bare.len()) + name.len();
                        return Some((start, end));
                    }
                }
            }
            i = key_at + key_len;
        }
        None
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamed(pieces: &[&str]) -> String {
        let mut r = Rename::new("gemini-2.5-flash", "gpt-4o");
        let mut out = Vec::new();
        for p in pieces {
            r.push(p.as_bytes(), &mut out);
        }
        r.finish(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn the_model_is_named_as_asked_whatever_the_pieces() {
        let event = "data: {\"id\":\"x\",\"model\":\"gemini-2.5-flash\",\"choices\":[]}\n\n";
        let want = "data: {\"id\":\"x\",\"model\":\"gpt-4o\",\"choices\":[]}\n\n";
        assert_eq!(renamed(&[event]), want);
        // Split anywhere, even inside the key or the value.
        for cut in 1..event.len() {
            assert_eq!(renamed(&[&event[..cut], &event[cut..]]), want, "cut at {cut}");
        }
        let pretty = "{\n  \"modelVersion\" : \"models/gemini-2.5-flash\",\n  \"usageMetadata\": {}\n}";
        assert_eq!(renamed(&[pretty]), "{\n  \"modelVersion\" : \"gpt-4o\",\n  \"usageMetadata\": {}\n}");
    }

    #[test]
    fn nothing_else_changes() {
        for text in [
            "{\"model\":\"gemini-2.5-flash-lite\"}",
            "{\"text\":\"the \\\"model\\\": gemini-2.5-flash\"}",
            "{\"content\":\"model: \\\"gemini-2.5-flash\\\"\"}",
            "{\"models\":\"gemini-2.5-flash\"}",
            "",
        ] {
            assert_eq!(renamed(&[text]), text);
        }
    }
}
