//! The HTTP vocabulary both hosts share: methods, header lists, and the
//! answers the proxy makes itself.

/// A header list as it arrives: names in any case, raw byte values.
pub type Headers = Vec<(String, Vec<u8>)>;

/// An HTTP method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
    /// Anything else, upper-cased.
    Other(String),
}

impl Method {
    /// Parses a method name, case-insensitively.
    pub fn parse(name: &str) -> Self {
        let known = [
            ("GET", Self::Get),
            ("HEAD", Self::Head),
            ("POST", Self::Post),
            ("PUT", Self::Put),
            ("PATCH", Self::Patch),
            ("DELETE", Self::Delete),
            ("OPTIONS", Self::Options),
        ];
        known
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or_else(|| Self::Other(name.to_ascii_uppercase()), |(_, m)| m)
    }

    /// The method's name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Other(name) => name,
        }
    }

    /// Whether requests with this method carry a body.
    pub fn has_body(&self) -> bool {
        matches!(self, Self::Post | Self::Put | Self::Patch)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An answer the proxy produces itself, or an upstream error it relays
/// after reading it. Header values are visible ASCII, so every host can
/// send them as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers, `content-type` among them.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, body: String) -> Self {
        Self { status, headers: vec![("content-type".into(), "application/json; charset=utf-8".into())], body }
    }

    /// A text answer of `content_type`.
    pub fn text(status: u16, content_type: &str, body: String) -> Self {
        Self { status, headers: vec![("content-type".into(), content_type.into())], body }
    }

    /// An HTML page, never cached, locked down to its own inline style and
    /// script and same-origin requests.
    pub fn html(status: u16, body: String) -> Self {
        let headers = vec![
            ("content-type".into(), "text/html; charset=utf-8".into()),
            ("cache-control".into(), "no-store".into()),
            (
                "content-security-policy".into(),
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
                    .into(),
            ),
            ("x-content-type-options".into(), "nosniff".into()),
            ("referrer-policy".into(), "no-referrer".into()),
        ];
        Self { status, headers, body }
    }

    /// A `303 See Other` to `location`.
    pub fn redirect(location: &str) -> Self {
        let headers = vec![
            ("content-type".into(), "text/plain; charset=utf-8".into()),
            ("location".into(), location.into()),
            ("cache-control".into(), "no-store".into()),
        ];
        Self { status: 303, headers, body: String::new() }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// Which API the caller speaks; errors are answered in the same shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Gemini native: `{"error":{"code","message","status"}}`.
    Gemini,
    /// OpenAI style: `{"error":{"message","type","code"}}`.
    OpenAi,
    /// Anthropic's Messages API, served from Gemini:
    /// `{"type":"error","error":{"type","message"}}`.
    Anthropic,
}

impl Dialect {
    /// The dialect's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gemini => "gemini",
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// CORS headers on every API answer, so browser-based chat apps can call
/// the proxy: credentials travel in headers, never cookies, so any origin
/// may read the answers.
pub const CORS: &[(&str, &str)] = &[("access-control-allow-origin", "*"), ("access-control-expose-headers", "*")];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_case_insensitively() {
        assert_eq!(Method::parse("post"), Method::Post);
        assert_eq!(Method::parse("GET").as_str(), "GET");
        assert_eq!(Method::parse("purge"), Method::Other("PURGE".into()));
        assert!(Method::Post.has_body() && !Method::Get.has_body());
    }
}

/// A language the `/stat` page and its sign-in form speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Lang {
    /// English.
    #[default]
    #[serde(rename = "en")]
    En,
    /// Simplified Chinese.
    #[serde(rename = "zh-CN")]
    Zh,
}

/// The cookie the page's language switch leaves.
pub const LANG_COOKIE: &str = "stat_lang";

impl Lang {
    /// `zh`, `zh-CN`, `zh-Hans`… or `en…`; none for any other tag.
    pub fn parse(tag: &str) -> Option<Self> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or_default().to_ascii_lowercase();
        match primary.as_str() {
            "zh" => Some(Self::Zh),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    /// The language a page request asks for: its `lang` query, else the
    /// switch's cookie, else the first of English and Chinese its
    /// `Accept-Language` prefers (by weight, then order); English if none.
    pub fn of_request(query: Option<&str>, cookie: Option<&str>, accept_language: Option<&str>) -> Self {
        if let Some(lang) = query.and_then(Self::parse).or_else(|| cookie.and_then(Self::parse)) {
            return lang;
        }
        let mut best: Option<(u16, usize, Self)> = None;
        for (i, range) in accept_language.unwrap_or_default().split(',').enumerate() {
            let mut parts = range.split(';');
            let Some(lang) = parts.next().and_then(Self::parse) else { continue };
            let q = parts
                .find_map(|p| {
                    p.split_once('=').filter(|(name, _)| name.trim().eq_ignore_ascii_case("q")).map(|(_, q)| q)
                })
                .and_then(|q| q.trim().parse::<f32>().ok())
                .map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0) as u16);
            if q > 0 && best.is_none_or(|(bq, bi, _)| (q, std::cmp::Reverse(i)) > (bq, std::cmp::Reverse(bi))) {
                best = Some((q, i, lang));
            }
        }
        best.map_or(Self::En, |(_, _, lang)| lang)
    }

    /// Its tag, as a `lang` attribute writes it.
    pub fn tag(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Zh => "zh-CN",
        }
    }
}

#[cfg(test)]
mod lang_tests {
    use super::Lang;

    #[test]
    fn the_query_then_the_cookie_then_accept_language_choose() {
        assert_eq!(Lang::of_request(None, None, None), Lang::En);
        assert_eq!(Lang::of_request(None, None, Some("zh-CN,zh;q=0.9,en;q=0.8")), Lang::Zh);
        assert_eq!(Lang::of_request(None, None, Some("en-US,en;q=0.9,zh-CN;q=0.8")), Lang::En);
        assert_eq!(Lang::of_request(None, None, Some("fr-FR, zh-TW;q=0.5, en;q=0.4")), Lang::Zh);
        assert_eq!(Lang::of_request(None, None, Some("de, fr;q=0.5")), Lang::En);
        assert_eq!(Lang::of_request(None, None, Some("zh;q=0, en;q=0.1")), Lang::En);
        assert_eq!(Lang::of_request(None, None, Some("en; Q = 0.2, zh-CN; q=0.9")), Lang::Zh);
        assert_eq!(Lang::of_request(None, Some("zh-CN"), Some("en")), Lang::Zh);
        assert_eq!(Lang::of_request(Some("en"), Some("zh-CN"), Some("zh")), Lang::En);
        assert_eq!(Lang::of_request(Some("xx"), Some("zh-CN"), None), Lang::Zh);
    }
}
