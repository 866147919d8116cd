//! The admin API's requests (`/admin/keys…`, `/admin/clients…`), parsed
//! into the [`AdminOp`] the key store applies.

use crate::config::aliases;
use crate::request::auth::percent_decode;
use crate::request::route::AdminRoute;
use crate::wire::error::ProxyError;
use crate::wire::http::Response;
use crate::wire::keystore::AdminOp;
use crate::wire::keystore::ClientSettings;
use crate::wire::keystore::MAX_CHECKS_PER_CALL;
use crate::wire::secret::KeyId;
use crate::wire::summary::RequestQuery;
use serde_json::{Value, json};
/// The query of `GET /admin/requests?…` (`status`, `model`, `key`,
/// `client`, `id`, `before`, `limit`); says what is wrong with it.
pub fn requests_query(query: &str) -> Result<RequestQuery, ProxyError> {
    let mut q = RequestQuery::default();
    let bad = |why: String| ProxyError::BadRequest(why);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).trim().to_owned();
        let text = Some(value.clone()).filter(|v| !v.is_empty());
        let number = |what: &str| {
            value.parse::<u64>().map_err(|_| bad(format!("`{what}` must be a whole number, not {value:?}")))
        };
        match percent_decode(name).as_str() {
            "status" => {
                if let Some(s) = &text
                    && !matches!(s.as_str(), "2xx" | "3xx" | "4xx" | "5xx" | "failed")
                {
                    return Err(bad(format!("`status` is one of 2xx, 3xx, 4xx, 5xx, failed, not {s:?}")));
                }
                q.status = text;
            }
            "model" => q.model = text,
            "key" => q.key = text,
            "client" => q.client = text,
            "id" => q.id = text,
            "before" => q.before = Some(number("before")?),
            "limit" => q.limit = Some(usize::try_from(number("limit")?).unwrap_or(usize::MAX)),
            _ => {}
        }
    }
    Ok(q)
}

/// The largest admin request body read (a paste of 10,000 keys is ~400 KB).
pub const MAX_ADMIN_BODY_BYTES: u64 = 2 * 1024 * 1024;

/// The most keys one add takes.
pub const MAX_KEYS_PER_ADD: usize = 20_000;

/// A key shorter than this in a paste is not a key.
const MIN_KEY_CHARS: usize = 8;

/// Splits a paste into keys: any run of characters that are neither
/// whitespace nor one of `,;"'`|[](){}<>` is a candidate; blanks, duplicates
/// and pieces too short to be a key are dropped (and counted).
pub fn split_paste(text: &str) -> (Vec<String>, usize) {
    let separator = |c: char| c.is_whitespace() || ",;\"'`|[](){}<>".contains(c);
    let mut seen = std::collections::HashSet::new();
    let mut keys = Vec::new();
    let mut dropped = 0;
    for piece in text.split(separator).filter(|p| !p.is_empty()) {
        if piece.chars().count() < MIN_KEY_CHARS || piece.chars().any(char::is_control) {
            dropped += 1;
        } else if seen.insert(piece) {
            keys.push(piece.to_owned());
        }
    }
    (keys, dropped)
}

/// A client's settings from an admin's JSON body: on a create, an absent
/// setting is unset; on a change (`PATCH`), it stays as it is, and `null`
/// lifts a quota or the models list.
fn client_settings(v: &Value) -> Result<ClientSettings, ProxyError> {
    let bad = |field: &str, what: &str| ProxyError::BadRequest(format!("`{field}` must be {what}"));
    let name = match v.get("name") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("name", "a string")),
    };
    let models = match v.get("models") {
        None => None,
        Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|m| m.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("models", "a list of model names, or null for every model"))?,
        ),
        Some(_) => return Err(bad("models", "a list of model names, or null for every model")),
    };
    let quota = |field: &str| match v.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(n) => n.as_u64().map(|n| Some(Some(n))).ok_or_else(|| bad(field, "a whole number, or null for none")),
    };
    Ok(ClientSettings { name, models, daily_requests: quota("daily_requests")?, daily_tokens: quota("daily_tokens")? })
}

/// The operation a request asks for, from its (bounded) JSON body.
pub fn parse(route: &AdminRoute, body: &[u8]) -> Result<AdminOp, ProxyError> {
    let json = || -> Result<Value, ProxyError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ProxyError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        if v.is_object() { Ok(v) } else { Err(ProxyError::BadRequest("the body must be a JSON object".into())) }
    };
    let text = |v: &Value, field: &str| -> Result<Option<String>, ProxyError> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ProxyError::BadRequest(format!("`{field}` must be a string"))),
        }
    };
    // PATCH: an absent field stays, `null` clears it.
    let change = |v: &Value, field: &str| -> Result<Option<Option<String>>, ProxyError> {
        match v.get(field) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(_) => Err(ProxyError::BadRequest(format!("`{field}` must be a string or null"))),
        }
    };
    Ok(match route {
        AdminRoute::List => AdminOp::List,
        AdminRoute::Add => {
            let v = json()?;
            let pasted = match v.get("keys") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(items)) => {
                    let mut joined = String::new();
                    for item in items {
                        let Value::String(s) = item else {
                            return Err(ProxyError::BadRequest("`keys` must be a string or a list of strings".into()));
                        };
                        joined.push_str(s);
                        joined.push('\n');
                    }
                    joined
                }
                _ => {
                    return Err(ProxyError::BadRequest(
                        "`keys` is required: the keys as pasted text (any separator) or a list of strings".into(),
                    ));
                }
            };
            let (keys, _) = split_paste(&pasted);
            if keys.is_empty() {
                return Err(ProxyError::BadRequest("`keys` holds no key".into()));
            }
            if keys.len() > MAX_KEYS_PER_ADD {
                return Err(ProxyError::BadRequest(format!(
                    "{} keys in one add; at most {MAX_KEYS_PER_ADD} (add the rest in another)",
                    keys.len()
                )));
            }
            AdminOp::Add { keys, project: text(&v, "project")?.filter(|p| !p.trim().is_empty()) }
        }
        AdminRoute::Check => {
            let v = json()?;
            let ids = match v.get("ids") {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .map(|i| i.as_str().map(KeyId::from_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| ProxyError::BadRequest("`ids` must be a list of key ids".into()))?,
                ),
                Some(_) => return Err(ProxyError::BadRequest("`ids` must be a list of key ids".into())),
            };
            let limit = match v.get("limit") {
                None | Some(Value::Null) => MAX_CHECKS_PER_CALL,
                Some(n) => n
                    .as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| ProxyError::BadRequest("`limit` must be a positive number".into()))?,
            };
            AdminOp::CheckPlan { ids, limit }
        }
        AdminRoute::Remove(id) => AdminOp::Remove { id: id.clone() },
        AdminRoute::Label(id) => {
            let v = json()?;
            AdminOp::Label { id: id.clone(), project: change(&v, "project")?, note: change(&v, "note")? }
        }
        AdminRoute::Disable(id) => AdminOp::Disable { id: id.clone(), note: text(&json()?, "note")? },
        AdminRoute::Enable(id) => AdminOp::Enable { id: id.clone() },
        AdminRoute::ClientList => AdminOp::ClientList,
        AdminRoute::ClientCreate => AdminOp::ClientCreate { settings: client_settings(&json()?)? },
        AdminRoute::ClientUpdate(id) => AdminOp::ClientUpdate { id: id.clone(), settings: client_settings(&json()?)? },
        AdminRoute::ClientRevoke(id) => AdminOp::ClientRevoke { id: id.clone() },
        AdminRoute::Aliases => AdminOp::Aliases,
        AdminRoute::Requests(query) => AdminOp::Requests { query: requests_query(query)? },
        AdminRoute::AliasesSet => AdminOp::AliasesSet { entries: alias_entries(&json()?)? },
        AdminRoute::Proxies => AdminOp::Proxies,
        AdminRoute::ProxySet => proxy_set(&json()?)?,
    })
}

/// A project's proxy from a `PUT /admin/proxies` body: `project`, and
/// `proxy` (`scheme://[user:password@]host[:port]`; null or empty clears
/// it).
fn proxy_set(v: &Value) -> Result<AdminOp, ProxyError> {
    let project = match v.get("project").and_then(Value::as_str).map(str::trim) {
        Some(p) if !p.is_empty() && p.chars().count() <= 200 => p.to_owned(),
        _ => {
            return Err(ProxyError::BadRequest(
                "`project` is required: the project's name, as its keys carry it".into(),
            ));
        }
    };
    let proxy = match v.get("proxy") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) if url.trim().is_empty() => None,
        Some(Value::String(url)) => {
            crate::wire::proxy::ProxyUrl::parse(url)
                .map_err(|why| ProxyError::BadRequest(format!("`proxy`: {why}")))?;
            Some(url.trim().to_owned())
        }
        Some(_) => {
            return Err(ProxyError::BadRequest(
                "`proxy` is the proxy's URL (http://, https://, socks5:// or socks5h://), or null to clear it".into(),
            ));
        }
    };
    Ok(AdminOp::ProxySet { project, proxy })
}

/// The admin's model aliases from a `PUT /admin/aliases` body: `aliases`
/// as `MODEL_ALIASES` spells them (`from=to`, separated by commas,
/// semicolons or new lines), or as a list of `{"from", "to"}`; an empty
/// one clears them.
fn alias_entries(v: &Value) -> Result<Vec<(String, String)>, ProxyError> {
    const WANTED: &str = "`aliases` is required: `from=to` lines (as MODEL_ALIASES), or a list of {\"from\", \"to\"}";
    let bad = |why: String| ProxyError::BadRequest(format!("`aliases` {why}"));
    match v.get("aliases") {
        Some(Value::String(text)) => aliases::parse_entries(text).map_err(bad),
        Some(Value::Array(items)) => {
            let pair = |item: &Value| -> Result<(String, String), String> {
                let field = |name: &str| item.get(name).and_then(Value::as_str).map(str::to_owned);
                match (field("from"), field("to")) {
                    (Some(from), Some(to)) => Ok((from, to)),
                    _ => Err(format!("holds {item}, not {{\"from\": \"client-model\", \"to\": \"gemini-model\"}}")),
                }
            };
            let pairs: Vec<(String, String)> = items.iter().map(pair).collect::<Result<_, _>>().map_err(bad)?;
            aliases::checked(pairs.iter().map(|(f, t)| Ok((f.as_str(), t.as_str())))).map_err(bad)
        }
        _ => Err(ProxyError::BadRequest(WANTED.into())),
    }
}

/// The JSON answer a store gave, as the client's response.
pub fn response(status: u16, body: String) -> Response {
    Response::json(status, body).with_header("cache-control", "no-store")
}
