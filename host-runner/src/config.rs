//! Configuration of this host: the environment first, then `.dev.vars` and
//! the `vars` of `wrangler.jsonc` in the working directory (the files the
//! Worker uses), so one set of files configures both hosts.

use proxy_core::config::{ConfigError, parse_api_keys};
use proxy_core::store::vault::Vault;
use proxy_core::wire::proxy::ProxyUrl;
use proxy_core::{ApiKey, Config};
use std::collections::HashMap;
use std::path::Path;

/// The variables the proxy reads.
pub const VARS: [&str; 16] = [
    "API_KEYS",
    "KEY_ENCRYPTION_SECRET",
    "PROXY_API_KEY",
    "ADMIN_API_KEY",
    "GEMINI_UPSTREAM_URL",
    "OPENAI_UPSTREAM_URL",
    "UPSTREAM_CONNECT_TIMEOUT",
    "UPSTREAM_FIRST_BYTE_TIMEOUT",
    "UPSTREAM_IDLE_TIMEOUT",
    "PUBLIC_URL",
    "CORS_ORIGINS",
    "ALLOWED_HOSTS",
    "ACCESS_LOG",
    "MODEL_ALIASES",
    "REQUEST_LOG_SIZE",
    "NONSTREAM_KEEPALIVE_SECONDS",
];

/// Everything this host needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The pool.
    pub api_keys: Vec<ApiKey>,
    /// The request handler's configuration.
    pub proxy: Config,
    /// The resolved variables handed to the component as its environment
    /// (all but `API_KEYS` and `KEY_ENCRYPTION_SECRET`, which only the key
    /// store holds).
    pub component_env: Vec<(String, String)>,
    /// Seals the keys added at run time (`KEY_ENCRYPTION_SECRET`); none:
    /// adding keys at run time is off.
    pub vault: Option<Vault>,
    /// Where upstream calls leave through (`UPSTREAM_PROXY`, else the
    /// environment's proxies); never handed to the component.
    pub egress: Egress,
}

/// The outbound proxies of the configuration: `UPSTREAM_PROXY` for every
/// upstream call, else the standard `HTTPS_PROXY`, `HTTP_PROXY` and
/// `ALL_PROXY` (either case) less the hosts `NO_PROXY` names (and
/// loopback hosts). A project's own proxy, which the admin sets, comes
/// before all of these.
#[derive(Clone, Debug, Default)]
pub struct Egress {
    /// `UPSTREAM_PROXY`.
    pub upstream: Option<ProxyUrl>,
    /// `HTTPS_PROXY` (else `ALL_PROXY`), for `https://` upstreams.
    pub https: Option<ProxyUrl>,
    /// `HTTP_PROXY` (else `ALL_PROXY`), for `http://` upstreams.
    pub http: Option<ProxyUrl>,
    /// `NO_PROXY`.
    pub no_proxy: String,
}

/// The variables of [`Egress`], read beside [`VARS`] (and never handed to
/// the component: a proxy's URL may hold its password).
pub const EGRESS_VARS: [&str; 9] = [
    "UPSTREAM_PROXY",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

impl Egress {
    /// Reads the variables of [`EGRESS_VARS`]; a malformed URL is an error
    /// that names its variable (never its password).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |names: &[&'static str]| -> Result<Option<ProxyUrl>, ConfigError> {
            for &var in names {
                if let Some(v) = vars.get(var).filter(|v| !v.trim().is_empty()) {
                    return ProxyUrl::parse(v).map(Some).map_err(|why| ConfigError { var, why });
                }
            }
            Ok(None)
        };
        let all = get(&["ALL_PROXY", "all_proxy"])?;
        Ok(Self {
            upstream: get(&["UPSTREAM_PROXY"])?,
            https: get(&["HTTPS_PROXY", "https_proxy"])?.or_else(|| all.clone()),
            http: get(&["HTTP_PROXY", "http_proxy"])?.or(all),
            no_proxy: ["NO_PROXY", "no_proxy"].iter().find_map(|v| vars.get(*v).cloned()).unwrap_or_default(),
        })
    }

    /// Whether no proxy is configured at all.
    pub fn is_empty(&self) -> bool {
        self.upstream.is_none() && self.https.is_none() && self.http.is_none()
    }

    /// The proxy a call to `host` (over TLS or not) leaves through, if any.
    pub fn route(&self, https: bool, host: &str) -> Option<&ProxyUrl> {
        if let Some(p) = &self.upstream {
            return Some(p);
        }
        if proxy_core::wire::proxy::no_proxy(&self.no_proxy, host) {
            return None;
        }
        if https { self.https.as_ref() } else { self.http.as_ref() }
    }
}

/// Errors reading configuration files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A variable is missing or malformed.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// `wrangler.jsonc` is not valid JSONC.
    #[error("wrangler.jsonc: {0}")]
    Wrangler(String),
}

impl HostConfig {
    /// Resolves configuration from `env` (the process environment, usually)
    /// and the files in `dir`.
    pub fn load(env: &HashMap<String, String>, dir: &Path) -> Result<Self, LoadError> {
        let mut vars: HashMap<String, String> = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(dir.join("wrangler.jsonc")) {
            vars.extend(wrangler_vars(&text).map_err(LoadError::Wrangler)?);
        }
        if let Ok(text) = std::fs::read_to_string(dir.join(".dev.vars")) {
            vars.extend(parse_dotenv(&text));
        }
        for var in VARS.iter().chain(&EGRESS_VARS) {
            if let Some(v) = env.get(*var) {
                vars.insert((*var).to_owned(), v.clone());
            }
        }
        Self::from_vars(&vars)
    }

    /// Resolves configuration from variables alone.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, LoadError> {
        let api_keys = parse_api_keys(vars.get("API_KEYS").map(String::as_str))?;
        let proxy = Config::from_lookup(|v| vars.get(v).cloned())?;
        let component_env =
            VARS[2..].iter().filter_map(|v| vars.get(*v).map(|value| ((*v).to_owned(), value.clone()))).collect();
        let vault = match vars.get("KEY_ENCRYPTION_SECRET").filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(secret) => Some(
                Vault::from_secret(secret)
                    .map_err(|e| ConfigError { var: "KEY_ENCRYPTION_SECRET", why: e.to_string() })?,
            ),
        };
        let egress = Egress::from_vars(vars)?;
        Ok(Self { api_keys, proxy, component_env, vault, egress })
    }
}

/// Parses `KEY=value` lines (`#` comments, optional quotes, `export`).
pub fn parse_dotenv(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim();
        let v = if v.len() >= 2 && (v.starts_with('"') && v.ends_with('"') || v.starts_with('\'') && v.ends_with('\''))
        {
            v[1..v.len() - 1].replace("\\n", "\n")
        } else {
            v.to_owned()
        };
        out.insert(k.trim().to_owned(), v);
    }
    out
}

/// Removes `//` and `/* */` comments and trailing commas from JSONC.
pub fn strip_jsonc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            _ => out.push(c),
        }
    }
    // Trailing commas: a comma followed only by whitespace before } or ].
    let mut cleaned = String::with_capacity(out.len());
    let bytes: Vec<char> = out.chars().collect();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            cleaned.push(c);
            if c == '\\' && i + 1 < bytes.len() {
                cleaned.push(bytes[i + 1]);
                i += 1;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            cleaned.push(c);
        } else if c == ',' {
            let next = bytes[i + 1..].iter().find(|c| !c.is_whitespace());
            if !matches!(next, Some('}') | Some(']')) {
                cleaned.push(c);
            }
        } else {
            cleaned.push(c);
        }
        i += 1;
    }
    cleaned
}

/// The string `vars` of a `wrangler.jsonc`.
pub fn wrangler_vars(text: &str) -> Result<HashMap<String, String>, String> {
    let v: serde_json::Value = serde_json::from_str(&strip_jsonc(text)).map_err(|e| e.to_string())?;
    Ok(v.get("vars")
        .and_then(|vars| vars.as_object())
        .map(|o| o.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned()))).collect())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(pairs: &[(&str, &str)]) -> Result<Egress, ConfigError> {
        Egress::from_vars(&pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn upstream_proxy_comes_first_then_the_environments_less_no_proxy_and_loopback() {
        let google = "generativelanguage.googleapis.com";
        let e = egress(&[("HTTPS_PROXY", "http://10.0.0.1:3128"), ("NO_PROXY", "internal.example")]).expect("vars");
        assert_eq!(e.route(true, google).map(|p| p.port), Some(3128));
        assert!(e.route(false, google).is_none(), "HTTPS_PROXY is for https:// upstreams");
        assert!(e.route(true, "api.internal.example").is_none() && e.route(true, "127.0.0.1").is_none());
        let e = egress(&[("https_proxy", "socks5h://10.0.0.2:1080"), ("ALL_PROXY", "http://10.0.0.3")]).expect("vars");
        assert_eq!(e.route(true, google).map(|p| p.port), Some(1080));
        assert_eq!(e.route(false, google).map(|p| p.port), Some(80), "ALL_PROXY for the rest");
        // UPSTREAM_PROXY carries every call, loopback included (a test's upstream).
        let e = egress(&[("UPSTREAM_PROXY", "socks5://u:pw@10.0.0.4:9050"), ("NO_PROXY", "*")]).expect("vars");
        assert_eq!(e.route(false, "127.0.0.1").map(|p| p.port), Some(9050));
        assert!(egress(&[]).expect("none").is_empty());
        let bad = egress(&[("UPSTREAM_PROXY", "ftp://u:hunter2@h")]).expect_err("refused");
        assert_eq!(bad.var, "UPSTREAM_PROXY");
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
    }

    #[test]
    fn jsonc_vars() {
        let text = r#"{
            // comment with "quotes"
            "name": "gemini-proxy", /* block */
            "vars": { "GEMINI_UPSTREAM_URL": "http://127.0.0.1:1/v1beta", "URL_WITH_SLASHES": "a//b", },
        }"#;
        let vars = wrangler_vars(text).expect("parses");
        assert_eq!(vars["GEMINI_UPSTREAM_URL"], "http://127.0.0.1:1/v1beta");
        assert_eq!(vars["URL_WITH_SLASHES"], "a//b");
    }

    #[test]
    fn dotenv_and_precedence() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join(".dev.vars"),
            "# keys\nAPI_KEYS=\"AIzaSyFILE000000000000000000000000000000\"\nPROXY_API_KEY=from-file\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("wrangler.jsonc"),
            r#"{"vars":{"OPENAI_UPSTREAM_URL":"http://127.0.0.1:2/openai","PROXY_API_KEY":"from-wrangler"}}"#,
        )
        .expect("write");
        let env = HashMap::from([("PROXY_API_KEY".to_owned(), "from-env".to_owned())]);
        let c = HostConfig::load(&env, dir.path()).expect("loads");
        assert_eq!(c.api_keys.len(), 1);
        assert!(c.proxy.proxy_key.as_ref().is_some_and(|k| k.matches("from-env")));
        assert_eq!(c.proxy.openai_upstream.to_string(), "http://127.0.0.1:2/openai");
        assert!(c.component_env.iter().all(|(k, _)| k != "API_KEYS" && k != "KEY_ENCRYPTION_SECRET"));
    }

    #[test]
    fn missing_keys_name_the_variable() {
        let e = HostConfig::from_vars(&HashMap::new()).expect_err("no keys");
        assert!(e.to_string().starts_with("API_KEYS:"), "{e}");
    }
}
