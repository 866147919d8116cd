//! Model aliases: the model a client names (Claude Code asks for its own
//! models unless told otherwise) mapped to the Gemini model that serves
//! it. `MODEL_ALIASES` entries come first, then [`DEFAULTS`]; an exact name
//! wins over a pattern, and among patterns the first listed that matches.

/// The documented default table: Claude's and OpenAI's current model
/// families onto Gemini models a free-tier key can call, so that a coding
/// agent works with nothing but the proxy's URL and a key set.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("claude-opus-*", "gemini-3-pro-preview"),
    ("claude-*haiku*", "gemini-2.5-flash-lite"),
    ("claude-*", "gemini-3-flash-preview"),
    ("gpt-*-nano*", "gemini-2.5-flash-lite"),
    ("gpt-*-mini*", "gemini-2.5-flash"),
    ("gpt-*", "gemini-3-flash-preview"),
    ("chatgpt-*", "gemini-3-flash-preview"),
    ("codex-*", "gemini-3-flash-preview"),
    ("o1*", "gemini-3-pro-preview"),
    ("o3*", "gemini-3-pro-preview"),
    ("o4*", "gemini-3-flash-preview"),
];

/// The most entries `MODEL_ALIASES` may hold.
pub const MAX_ALIASES: usize = 256;

/// A table of aliases: client model name (exact, or with `*` matching any
/// run of characters) → Gemini model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aliases {
    entries: Vec<(String, String)>,
    /// How many of `entries`, at their start, are not [`DEFAULTS`].
    own: usize,
}

impl Default for Aliases {
    fn default() -> Self {
        Self::with(Vec::new())
    }
}

impl Aliases {
    /// `entries` (consulted first), then [`DEFAULTS`].
    pub fn with(entries: Vec<(String, String)>) -> Self {
        let own = entries.len();
        let defaults = DEFAULTS.iter().map(|(from, to)| ((*from).to_owned(), (*to).to_owned()));
        Self { entries: entries.into_iter().chain(defaults).collect(), own }
    }

    /// `runtime` (the admin's table, kept by the key store) consulted
    /// before every entry of `self`.
    pub fn under(&self, runtime: &[(String, String)]) -> Self {
        let entries = runtime.iter().chain(&self.entries).cloned().collect();
        Self { entries, own: runtime.len() + self.own }
    }

    /// Parses `MODEL_ALIASES`: `from=to` pairs separated by commas,
    /// semicolons or new lines (`claude-opus-*=gemini-3-pro-preview`).
    pub fn parse(value: &str) -> Result<Self, String> {
        parse_entries(value).map(Self::with)
    }

    /// The Gemini model `asked` maps to, if an entry names it.
    pub fn resolve(&self, asked: &str) -> Option<&str> {
        let exact = self.entries.iter().find(|(from, _)| !from.contains('*') && from == asked);
        let matched = exact.or_else(|| self.entries.iter().find(|(from, _)| from.contains('*') && glob(from, asked)));
        matched.map(|(_, to)| to.as_str())
    }

    /// Every entry, in the order they are consulted.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The entries before [`DEFAULTS`] (`MODEL_ALIASES`'s, and the
    /// admin's when [`Self::under`] added them).
    pub fn own(&self) -> &[(String, String)] {
        &self.entries[..self.own]
    }

    /// The entries of [`DEFAULTS`], after [`Self::own`].
    pub fn defaults(&self) -> &[(String, String)] {
        &self.entries[self.own..]
    }
}

/// Parses a table of aliases: `from=to` pairs separated by commas,
/// semicolons or new lines; a `models/` before the Gemini model is dropped.
pub fn parse_entries(value: &str) -> Result<Vec<(String, String)>, String> {
    let pairs = value
        .split([',', ';', '\n'])
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|item| item.split_once('=').ok_or_else(|| format!("{item:?} is not `client-model=gemini-model`")));
    checked(pairs)
}

/// Checks a table of aliases given as pairs (the admin's JSON): every
/// client model a name or a `*` pattern, every target a Gemini model name,
/// at most [`MAX_ALIASES`] entries.
pub fn checked<'a>(
    pairs: impl IntoIterator<Item = Result<(&'a str, &'a str), String>>,
) -> Result<Vec<(String, String)>, String> {
    let mut entries = Vec::new();
    for pair in pairs {
        let (from, to) = pair?;
        let (from, to) = (from.trim(), to.trim().trim_start_matches("models/"));
        if !valid_name(from, true) {
            return Err(format!("{from:?} is not a model name or a `*` pattern"));
        }
        if !valid_name(to, false) {
            return Err(format!("{to:?} is not a Gemini model name"));
        }
        entries.push((from.to_owned(), to.to_owned()));
    }
    if entries.len() > MAX_ALIASES {
        return Err(format!("has {} entries; at most {MAX_ALIASES}", entries.len()));
    }
    Ok(entries)
}

fn valid_name(name: &str, pattern: bool) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._@:/".contains(&b) || (pattern && b == b'*'))
}

/// Whether `text` matches `pattern`, whose `*` matches any run of
/// characters (none included).
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else { return rest.is_empty() };
    for part in parts {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("claude-*", "claude-sonnet-4-5"));
        assert!(glob("claude-*haiku*", "claude-3-5-haiku-20241022"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "abc") && glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "acb") && !glob("claude-*", "gpt-5") && !glob("ab*ba", "aba"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn claude_code_s_models_map_to_gemini_by_default() {
        let aliases = Aliases::default();
        assert_eq!(aliases.resolve("claude-opus-4-5-20251101"), Some("gemini-3-pro-preview"));
        assert_eq!(aliases.resolve("claude-sonnet-4-5-20250929"), Some("gemini-3-flash-preview"));
        assert_eq!(aliases.resolve("claude-haiku-4-5-20251001"), Some("gemini-2.5-flash-lite"));
        assert_eq!(aliases.resolve("gpt-5-mini"), Some("gemini-2.5-flash"));
        assert_eq!(aliases.resolve("gemini-2.5-pro"), None);
    }

    #[test]
    fn entries_come_before_the_defaults_and_exact_names_before_patterns() {
        let aliases =
            Aliases::parse("claude-*=gemini-2.5-pro; claude-sonnet-4-5=models/gemini-2.5-flash").expect("as expected");
        assert_eq!(aliases.resolve("claude-sonnet-4-5"), Some("gemini-2.5-flash"));
        assert_eq!(aliases.resolve("claude-opus-4-1"), Some("gemini-2.5-pro"));
        assert_eq!(aliases.resolve("gpt-4o"), Some("gemini-3-flash-preview"));
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        assert!(Aliases::parse("claude-opus").expect_err("an error").contains("client-model=gemini-model"));
        assert!(Aliases::parse("claude-*=gemini 3").expect_err("an error").contains("not a Gemini model"));
        assert!(Aliases::parse("=gemini-3").expect_err("an error").contains("not a model name"));
        assert!(Aliases::parse("a=gemini-*").is_err());
        assert_eq!(Aliases::parse(" , ").expect("as expected"), Aliases::default());
    }
}
