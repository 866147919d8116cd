//! Resources that belong to one upstream key: a file, an upload in
//! progress, a cached content, a batch, a long-running operation, an
//! interaction, a file search store. Each lives in the Google project of the
//! key that created it; another key gets `403 PERMISSION_DENIED` for it. So
//! a request that names one must go to its owner, and to no other key.
//!
//! This module decides, without I/O:
//! - which resources a request names, in its path ([`in_path`]) or in its
//!   body ([`in_body`], a scan of the members that hold names, without
//!   parsing a large body in full);
//! - which key owns them ([`Registry`](crate::store::registry::Registry)), bounded in size, each entry kept
//!   until the expiry Google gives (files live 48 hours).

use crate::google::stream::{Framing, Splitter};
use crate::wire::resource::Kind;
use crate::wire::resource::Resource;
use crate::wire::resource::is_id;
use crate::wire::time::{UnixMillis, parse_rfc3339};
use serde_json::Value;

/// The resource a request path names (`/v1beta/files/abc:download`,
/// `/v1beta/batches/x:cancel`, `/v1beta/models/veo/operations/op`,
/// `/v1beta/interactions/i/cancel`), if any. A collection itself
/// (`/v1beta/files`) names none.
pub fn in_path(path: &str) -> Option<Resource> {
    let rest = path.trim_start_matches('/');
    let rest = ["v1beta/", "v1/", "v1alpha/"].iter().find_map(|v| rest.strip_prefix(v))?;
    Resource::parse(rest)
}

/// The resource the path of a call relayed upstream names
/// ([`Forward::upstream_path`], below the version): as [`in_path`] for a
/// Gemini call; for an OpenAI-style one (`/files/{id}[/content]`,
/// `/batches/{id}[/cancel]`), its id, which is a Google name (`files/abc`),
/// with its `/` escaped as `%2F` or not, or a bare id.
///
/// [`Forward::upstream_path`]: crate::request::route::Forward::upstream_path
pub fn in_upstream_path(path: &str, openai: bool) -> Option<Resource> {
    if !openai {
        return Resource::parse(path.trim_start_matches('/'));
    }
    let path = unescape_slashes(path);
    let rest = path.trim_start_matches('/');
    for (collection, kind) in [("files", Kind::File), ("batches", Kind::Batch)] {
        if let Some(id) = rest.strip_prefix(collection).and_then(|r| r.strip_prefix('/')) {
            // Only a resource of the collection's own kind.
            return google_name(id, collection).filter(|r| r.kind() == kind);
        }
    }
    None
}

/// `s` with each `%2F` (either case) read as the `/` it escapes.
pub(crate) fn unescape_slashes(s: &str) -> String {
    s.replace("%2F", "/").replace("%2f", "/")
}

/// The resource an OpenAI-style id names: a Google name (`files/abc`), or a
/// bare id in `collection`.
fn google_name(id: &str, collection: &str) -> Option<Resource> {
    Resource::parse(id).or_else(|| Resource::parse(&format!("{collection}/{id}")))
}

/// The members of a request body whose string values name resources (both
/// spellings the REST API takes; `input_file_id` and `file_id` are the
/// OpenAI-style API's).
const NAMING_MEMBERS: &[&[u8]] = &[
    b"fileUri",
    b"file_uri",
    b"uri",
    b"cachedContent",
    b"cached_content",
    b"previous_interaction_id",
    b"previousInteractionId",
    b"fileName",
    b"file_name",
    b"fileSearchStoreNames",
    b"file_search_store_names",
    b"input_file_id",
    b"file_id",
];

/// The most resources taken from one body.
pub const MAX_NAMED: usize = 64;

/// The resources a request body names, found by a scan for the members that
/// hold names ([`NAMING_MEMBERS`]) rather than a parse of the whole body
/// (which may be a large prompt). A member counts only where a member may
/// start (after `{` or `,`), so text that quotes one (`\"fileUri\"`)
/// is not taken; a member name or value written with JSON escapes
/// (`file\u0055ri`, `files\/abc`) is read as Google reads it. Interaction
/// ids are bare (`v1_abc`): taken as `interactions/…`. At most
/// [`MAX_NAMED`], without repeats ([`named_in_body`] tells when there were
/// more).
pub fn in_body(body: &[u8]) -> Vec<Resource> {
    named_in_body(body).0
}

/// [`in_body`], and whether the body names more than [`MAX_NAMED`]
/// resources (the rest unread).
pub fn named_in_body(body: &[u8]) -> (Vec<Resource>, bool) {
    let mut found: Vec<Resource> = Vec::new();
    let mut more = false;
    let mut at = 0;
    while let Some(q) = body[at..].iter().position(|&b| b == b'"') {
        let start = at + q;
        at = start + 1;
        let Some(end) = string_end(body, start) else { break };
        let member = unescaped(&body[start..=end]);
        if !NAMING_MEMBERS.contains(&member.as_ref()) || !member_may_start(body, start) {
            continue;
        }
        let mut i = skip_ws(body, end + 1);
        if body.get(i) != Some(&b':') {
            continue;
        }
        i = skip_ws(body, i + 1);
        let interaction = member.starts_with(b"previous");
        let mut take = |quoted: &[u8]| {
            let value = unescaped(quoted);
            let Ok(value) = std::str::from_utf8(&value) else { return };
            let resource = if interaction && is_id(value) {
                Resource::parse(&format!("interactions/{value}"))
            } else {
                Resource::parse(value)
            };
            match resource {
                Some(r) if found.contains(&r) => {}
                Some(_) if found.len() >= MAX_NAMED => more = true,
                Some(r) => found.push(r),
                None => {}
            }
        };
        match body.get(i) {
            Some(b'"') => {
                if let Some(e) = string_end(body, i) {
                    take(&body[i..=e]);
                    at = e + 1;
                }
            }
            Some(b'[') => {
                // An array of names (file search stores).
                let mut j = skip_ws(body, i + 1);
                while body.get(j) == Some(&b'"') {
                    let Some(e) = string_end(body, j) else { break };
                    take(&body[j..=e]);
                    j = skip_ws(body, e + 1);
                    if body.get(j) != Some(&b',') {
                        break;
                    }
                    j = skip_ws(body, j + 1);
                }
                at = j.max(at);
            }
            _ => {}
        }
        if more {
            break;
        }
    }
    (found, more)
}

/// A JSON string's content (`quoted`, with its quotes), its escapes
/// decoded when it has any; the raw bytes when it does not parse.
fn unescaped(quoted: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let inner = &quoted[1..quoted.len() - 1];
    if !inner.contains(&b'\\') {
        return inner.into();
    }
    match serde_json::from_slice::<String>(quoted) {
        Ok(s) => s.into_bytes().into(),
        Err(_) => inner.into(),
    }
}

/// The index of the quote that ends the string opened at `open`.
fn string_end(body: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn skip_ws(body: &[u8], mut i: usize) -> usize {
    while body.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

fn member_may_start(body: &[u8], quote: usize) -> bool {
    let before = body[..quote].iter().rposition(|b| !b.is_ascii_whitespace());
    before.is_none_or(|i| matches!(body[i], b'{' | b','))
}

/// The resources an answer tells of, with the expiry it gives: the answer
/// itself (`cachedContents`, `batches/…`, an operation), its `file` (an
/// upload's last answer), its `interaction` (the first event of an
/// interaction stream), and the items of a list (`files`,
/// `cachedContents`, `operations`, `batches`, `fileSearchStores`). An
/// interaction is known by its `id`: taken only when `interaction` says
/// the answer is one.
pub fn told_of(answer: &Value, interaction: bool) -> Vec<(Resource, Option<UnixMillis>)> {
    let mut objects: Vec<(&Value, bool)> = vec![(answer, interaction)];
    for member in ["file", "interaction"] {
        if let Some(v) = answer.get(member) {
            objects.push((v, member == "interaction"));
        }
    }
    for list in LIST_MEMBERS {
        if let Some(items) = answer.get(list).and_then(Value::as_array) {
            objects.extend(items.iter().take(MAX_LISTED).map(|v| (v, list == "interactions")));
        }
    }
    let mut out: Vec<(Resource, Option<UnixMillis>)> = Vec::new();
    let mut add = |r: Resource, expires: Option<UnixMillis>| {
        if !out.iter().any(|(known, _)| *known == r) {
            out.push((r, expires));
        }
    };
    for (o, is_interaction) in objects {
        // An ephemeral token (`auth_tokens/…`) is known by its hash.
        let name = o.get("name").and_then(Value::as_str).and_then(|n| {
            Resource::parse(n).or_else(|| n.starts_with("auth_tokens/").then(|| Resource::auth_token(n)))
        });
        let id = || {
            let id = o.get("id").and_then(Value::as_str).filter(|id| is_id(id))?;
            Resource::parse(&format!("interactions/{id}"))
        };
        let openai = openai_object(o);
        let Some(r) = name.or_else(|| if is_interaction { id() } else { openai.first().cloned() }) else {
            continue;
        };
        let expires = ["expirationTime", "expireTime"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str))
            .and_then(parse_rfc3339)
            .or_else(|| o.get("expires_at").and_then(Value::as_u64).map(|secs| UnixMillis(secs.saturating_mul(1000))));
        add(r, expires);
        // A batch's input and result files live in its project.
        for file in openai.into_iter().skip(1) {
            add(file, None);
        }
        // So does a finished native batch's output file, and the videos
        // a finished operation made.
        for file in batch_output_files(o).into_iter().chain(generated_files(o)) {
            add(file, None);
        }
    }
    out
}

/// The files a finished long-running operation made (a Veo operation's
/// `response.generateVideoResponse.generatedSamples[].video.uri`, a
/// download URL of `files/…`).
fn generated_files(o: &Value) -> Vec<Resource> {
    let samples = o.pointer("/response/generateVideoResponse/generatedSamples").and_then(Value::as_array);
    samples
        .into_iter()
        .flatten()
        .take(MAX_LISTED)
        .filter_map(|s| s.pointer("/video/uri")?.as_str())
        .filter_map(|uri| Resource::parse(uri).filter(|r| r.kind() == Kind::File))
        .collect()
}

/// Where a native batch names the file of its results: the operation's
/// `metadata.output.responsesFile` and `response.responsesFile` (Google's
/// REST form), `output.responsesFile`, and `dest.fileName` (the SDKs').
fn batch_output_files(o: &Value) -> Vec<Resource> {
    const PATHS: &[&[&str]] = &[
        &["metadata", "output", "responsesFile"],
        &["response", "responsesFile"],
        &["output", "responsesFile"],
        &["dest", "fileName"],
        &["dest", "file_name"],
    ];
    PATHS
        .iter()
        .filter_map(|path| path.iter().try_fold(o, |v, k| v.get(*k))?.as_str())
        .filter_map(|name| Resource::parse(name).filter(|r| r.kind() == Kind::File))
        .collect()
}

/// The members of a list answer that hold its items ([`told_of`]).
const LIST_MEMBERS: [&str; 7] =
    ["files", "cachedContents", "operations", "batches", "fileSearchStores", "interactions", "data"];

/// Keeps of a list answer (a page) only the items that name one of `own`
/// (a client's own resources); a list member of another kind (whose items
/// the registry does not know) is dropped whole, the rest of the answer
/// (its page token, say) left as it is.
pub fn keep_own(page: &mut Value, own: &std::collections::HashSet<String>) {
    let Some(members) = page.as_object_mut() else { return };
    members.retain(|member, value| {
        let Some(items) = value.as_array_mut() else { return true };
        if !LIST_MEMBERS.contains(&member.as_str()) {
            return false;
        }
        let interaction = member == "interactions";
        items.retain(|item| told_of(item, interaction).iter().any(|(r, _)| own.contains(r.name())));
        true
    });
}

/// An OpenAI-style `file` or `batch` object's resources: itself (its `id`
/// is a Google name, `files/abc`, or a bare id), then for a batch the files
/// it names (`input_file_id`, `output_file_id`, `error_file_id`).
fn openai_object(o: &Value) -> Vec<Resource> {
    let collection = match o.get("object").and_then(Value::as_str) {
        Some("file") => "files",
        Some("batch") => "batches",
        _ => return Vec::new(),
    };
    let Some(itself) = o.get("id").and_then(Value::as_str).and_then(|id| google_name(id, collection)) else {
        return Vec::new();
    };
    let mut found = vec![itself];
    if collection == "batches" {
        let files = ["input_file_id", "output_file_id", "error_file_id"].iter().filter_map(|k| o.get(*k)?.as_str());
        found.extend(files.filter_map(|id| google_name(id, "files")));
    }
    found
}

/// The resources the first bytes of an answer tell of ([`told_of`]):
/// the answer itself when `whole` holds all of it; the string members of
/// its top level that the head holds whole when it is a JSON object cut
/// short (an interaction with a long output still names itself by its
/// `id`); else the first events of an SSE stream (an interaction's: its
/// `interaction.created` event names it).
pub fn told_of_head(head: &[u8], whole: bool, interaction: bool) -> Vec<(Resource, Option<UnixMillis>)> {
    if whole && let Ok(v) = serde_json::from_slice::<Value>(head) {
        return told_of(&v, interaction);
    }
    if !whole && head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return told_of(&Value::Object(top_level_strings(head)), interaction);
    }
    let mut out: Vec<(Resource, Option<UnixMillis>)> = Vec::new();
    let mut events = 0;
    Splitter::new(Framing::Sse).push(head, |event| {
        events += 1;
        if events > MAX_HEAD_EVENTS {
            return;
        }
        // An event is no interaction itself; its `interaction` member is.
        let Ok(v) = serde_json::from_slice::<Value>(event) else { return };
        for (r, expires) in told_of(&v, false) {
            if !out.iter().any(|(known, _)| *known == r) {
                out.push((r, expires));
            }
        }
    });
    out
}

/// The string members at the top level of a JSON object's first bytes,
/// cut anywhere: those whose value the bytes hold whole. Nested objects
/// and arrays are skipped (their `name` is not the answer's).
fn top_level_strings(head: &[u8]) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let skip_ws = |i: &mut usize| {
        while head.get(*i).is_some_and(u8::is_ascii_whitespace) {
            *i += 1;
        }
    };
    let mut i = head.iter().position(|b| !b.is_ascii_whitespace()).map_or(head.len(), |p| p + 1);
    loop {
        skip_ws(&mut i);
        let Some(key) = json_string(head, &mut i) else { return out };
        skip_ws(&mut i);
        if head.get(i) != Some(&b':') {
            return out;
        }
        i += 1;
        skip_ws(&mut i);
        match head.get(i) {
            Some(b'"') => match json_string(head, &mut i) {
                Some(value) => {
                    out.insert(key, Value::String(value));
                }
                None => return out,
            },
            Some(_) => {
                if !skip_value(head, &mut i) {
                    return out;
                }
            }
            None => return out,
        }
        skip_ws(&mut i);
        match head.get(i) {
            Some(b',') => i += 1,
            _ => return out,
        }
    }
}

/// The JSON string that starts at `head[*i]` (a `"`), decoded, with `*i`
/// past it; `None` if it is cut short or malformed.
fn json_string(head: &[u8], i: &mut usize) -> Option<String> {
    if head.get(*i) != Some(&b'"') {
        return None;
    }
    let mut j = *i + 1;
    while j < head.len() {
        match head[j] {
            b'\\' => j += 2,
            b'"' => {
                let s = serde_json::from_slice(&head[*i..=j]).ok()?;
                *i = j + 1;
                return Some(s);
            }
            _ => j += 1,
        }
    }
    None
}

/// Moves `*i` past the value (not a string) that starts there: an object,
/// an array or a scalar. `false` if the head ends inside it.
fn skip_value(head: &[u8], i: &mut usize) -> bool {
    let mut depth = 0usize;
    while *i < head.len() {
        match head[*i] {
            b'"' => {
                if json_string(head, i).is_none() {
                    return false;
                }
                if depth == 0 {
                    return true;
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return true,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    *i += 1;
                    return true;
                }
            }
            b',' if depth == 0 => return true,
            _ => {}
        }
        *i += 1;
    }
    false
}

/// The most stream events [`told_of_head`] reads.
const MAX_HEAD_EVENTS: usize = 4;

/// The upload a request's query names (`upload_id=…`, as in the URL a
/// resumable upload's chunks go to).
pub fn upload_in_query(query: &str) -> Option<Resource> {
    query.split('&').find_map(|p| p.strip_prefix("upload_id=")).and_then(Resource::upload)
}

/// Google's upload URL (`https://…/upload/v1beta/files?upload_id=…`) moved
/// below `public` (the proxy's own origin and path prefix), without its
/// `key` parameter, with the upload it names; `None` if it names no
/// upload below `/upload/`.
pub fn proxied_upload_url(google: &str, public: &str) -> Option<(String, Resource)> {
    let (_, after_scheme) = google.split_once("://")?;
    let target = &after_scheme[after_scheme.find('/')?..];
    let target = target.split('#').next().unwrap_or_default();
    let (path, query) = target.split_once('?')?;
    if !path.starts_with("/upload/") {
        return None;
    }
    let upload = upload_in_query(query)?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.split('=').next().is_some_and(|n| n.eq_ignore_ascii_case("key")))
        .collect();
    Some((format!("{}{path}?{}", public.trim_end_matches('/'), kept.join("&")), upload))
}

/// The most items of one list answer remembered.
pub const MAX_LISTED: usize = 1_000;

/// The model names a listing of Google's models names (`models/gemini-2.5-flash`
/// as `gemini-2.5-flash`), from the listing's first bytes (whole or cut
/// short: every string that starts `models/` and ends within them; the
/// Gemini list's `name`s and the OpenAI list's `id`s alike). At most 1,000.
pub fn listed_models(head: &[u8]) -> Vec<String> {
    const START: &[u8] = b"\"models/";
    let mut out = Vec::new();
    let mut rest = head;
    while let Some(at) = memchr::memmem::find(rest, START) {
        rest = &rest[at + START.len()..];
        let Some(end) = memchr::memchr(b'"', rest) else { break };
        let name = &rest[..end];
        let plain = |b: &u8| b.is_ascii_alphanumeric() || b"-._".contains(b);
        if !name.is_empty() && name.len() <= 200 && name.iter().all(plain) {
            let name = String::from_utf8_lossy(name).into_owned();
            if !out.contains(&name) {
                out.push(name);
            }
        }
        if out.len() >= 1_000 {
            break;
        }
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::registry::Asker;
    use crate::store::registry::Conflict;
    use crate::store::registry::MAX_ENTRIES;
    use crate::store::registry::MAX_PER_CLIENT;
    use crate::store::registry::Owner;
    use crate::store::registry::Registry;
    use crate::store::registry::from_row;
    use crate::store::registry::row_statement;
    use crate::store::sql::SqlValue;
    use crate::store::sql::int;
    use crate::wire::resource::Kind;
    use crate::wire::resource::Resource;
    use crate::wire::time::HOUR_MS;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn names(rs: &[Resource]) -> Vec<&str> {
        rs.iter().map(Resource::name).collect()
    }

    #[test]
    fn paths_name_their_resource_and_collections_name_none() {
        let cases = [
            ("/v1beta/files/abc123", Some("files/abc123")),
            ("/v1beta/files/abc123:download", Some("files/abc123")),
            ("/v1/files/abc", Some("files/abc")),
            ("/v1beta/files", None),
            ("/v1beta/cachedContents/c-1", Some("cachedContents/c-1")),
            ("/v1beta/batches/b1:cancel", Some("batches/b1")),
            (
                "/v1beta/models/veo-3.1-generate-preview/operations/op9",
                Some("models/veo-3.1-generate-preview/operations/op9"),
            ),
            ("/v1beta/operations/op9", Some("operations/op9")),
            ("/v1beta/interactions/v1_abc/cancel", Some("interactions/v1_abc")),
            ("/v1beta/fileSearchStores/s1/documents/d1", Some("fileSearchStores/s1")),
            ("/v1beta/fileSearchStores/s1/operations/o1", Some("fileSearchStores/s1/operations/o1")),
            ("/v1beta/models/gemini-2.5-flash:generateContent", None),
            ("/v1beta/files/a%2Fb", None),
            ("/v2/files/abc", None),
        ];
        for (path, want) in cases {
            assert_eq!(in_path(path).as_ref().map(Resource::name), want, "{path}");
        }
        assert_eq!(in_path("/v1beta/batches/b1").map(|r| r.kind()), Some(Kind::Batch));
    }

    #[test]
    fn openai_style_paths_name_the_google_resource_in_their_id() {
        let cases = [
            ("/files/files%2Fabc", true, Some("files/abc")),
            ("/files/files%2fabc/content", true, Some("files/abc")),
            ("/files/files/abc/content", true, Some("files/abc")),
            ("/files/abc", true, Some("files/abc")),
            ("/batches/batches%2Fb1", true, Some("batches/b1")),
            ("/batches/batches%2Fb1/cancel", true, Some("batches/b1")),
            ("/batches", true, None),
            ("/chat/completions", true, None),
            ("/files/abc", false, Some("files/abc")),
            ("/files/batches%2Fb1", true, None),
            ("/batches/cachedContents%2Fc1", true, None),
            ("/files/files%2Fabc", false, None),
            ("/models/m:generateContent", false, None),
        ];
        for (path, openai, want) in cases {
            assert_eq!(in_upstream_path(path, openai).as_ref().map(Resource::name), want, "{path}");
        }
        let create = br#"{"input_file_id":"files/in1","endpoint":"/v1/chat/completions","completion_window":"24h"}"#;
        assert_eq!(names(&in_body(create)), ["files/in1"]);
        let chat = br#"{"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"files/f2"}}]}]}"#;
        assert_eq!(names(&in_body(chat)), ["files/f2"]);
    }

    #[test]
    fn openai_style_objects_tell_of_their_files_and_batches() {
        let file =
            serde_json::json!({"id": "files/abc", "object": "file", "bytes": 10, "expires_at": 1_800_000_000_u64});
        let told = told_of(&file, false);
        assert_eq!(told, [(Resource::parse("files/abc").expect("name"), Some(UnixMillis(1_800_000_000_000)))]);
        let batch = serde_json::json!({"id": "batches/b1", "object": "batch", "input_file_id": "files/in",
            "output_file_id": "files/out", "error_file_id": null});
        let told = told_of(&batch, false);
        let told: Vec<&str> = told.iter().map(|(r, _)| r.name()).collect();
        assert_eq!(told, ["batches/b1", "files/in", "files/out"]);
        let list = serde_json::json!({"object": "list", "data": [{"id": "files/a", "object": "file"}, {"id": "x", "object": "model"}]});
        assert_eq!(told_of(&list, false).iter().map(|(r, _)| r.name()).collect::<Vec<_>>(), ["files/a"]);
        let chat = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion"});
        assert!(told_of(&chat, false).is_empty(), "a completion's id is no resource");
    }

    #[test]
    fn full_uris_and_names_are_the_same_resource() {
        let uri = Resource::parse("https://generativelanguage.googleapis.com/v1beta/files/abc").expect("uri");
        assert_eq!(uri, Resource::parse("files/abc").expect("name"));
        assert_eq!(uri.kind(), Kind::File);
        assert_eq!(Resource::parse("gs://bucket/files/abc"), None, "not Google's API");
        assert_eq!(Resource::parse("https://example.com/a.png"), None);
        assert_eq!(Resource::parse("https://example.com/v1beta/files/report"), None, "another host's path");
        assert_eq!(Resource::upload("AbC-12_x").map(|r| r.name().to_owned()), Some("uploads/AbC-12_x".into()));
        assert_eq!(Resource::upload("a/b"), None);
    }

    #[test]
    fn bodies_name_files_caches_and_interactions_without_a_full_parse() {
        let body = br#"{"contents":[{"parts":[
            {"fileData":{"mimeType":"application/pdf","fileUri":"https://generativelanguage.googleapis.com/v1beta/files/one"}},
            {"text":"quoted: {\"fileUri\": \"files/not-me\"}"},
            {"file_data":{"file_uri":"files/two"}},
            {"fileData":{"fileUri":"files/one"}}]}],
          "cachedContent" : "cachedContents/cache1",
          "tools":[{"fileSearch":{"fileSearchStoreNames":["fileSearchStores/s1", "fileSearchStores/s2"]}}]}"#;
        assert_eq!(
            names(&in_body(body)),
            ["files/one", "files/two", "cachedContents/cache1", "fileSearchStores/s1", "fileSearchStores/s2"]
        );
        let follow_up = br#"{"model":"gemini-2.5-flash","input":"and then?","previous_interaction_id":"v1_abc"}"#;
        assert_eq!(names(&in_body(follow_up)), ["interactions/v1_abc"]);
        let batch = br#"{"batch":{"inputConfig":{"fileName":"files/input1"}}}"#;
        assert_eq!(names(&in_body(batch)), ["files/input1"]);
        assert!(in_body(br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#).is_empty());
        assert!(in_body(br#"{"fileUri": "#).is_empty(), "a body cut short names nothing");
    }

    #[test]
    fn a_body_names_a_bounded_number_of_resources() {
        let parts: Vec<String> = (0..200).map(|i| format!(r#"{{"fileData":{{"fileUri":"files/f{i}"}}}}"#)).collect();
        let body = format!(r#"{{"contents":[{{"parts":[{}]}}]}}"#, parts.join(","));
        assert_eq!(in_body(body.as_bytes()).len(), MAX_NAMED);
    }

    #[test]
    fn upload_urls_move_to_the_proxy_without_the_key() {
        let google = "https://generativelanguage.googleapis.com/upload/v1beta/files?key=AIzaSyFAKE&upload_id=AU-x_1&upload_protocol=resumable";
        let (url, upload) = proxied_upload_url(google, "https://ai.example/gemini/").expect("an upload");
        assert_eq!(url, "https://ai.example/gemini/upload/v1beta/files?upload_id=AU-x_1&upload_protocol=resumable");
        assert_eq!(upload.name(), "uploads/AU-x_1");
        assert_eq!(
            proxied_upload_url("https://g/upload/v1beta/files?KEY=k&upload_id=a", "http://p").map(|u| u.0).as_deref(),
            Some("http://p/upload/v1beta/files?upload_id=a")
        );
        for not_an_upload in
            ["https://g/v1beta/files?upload_id=a", "https://g/upload/v1beta/files?key=k", "no url", "https://g"]
        {
            assert_eq!(proxied_upload_url(not_an_upload, "http://p"), None, "{not_an_upload}");
        }
        assert_eq!(upload_in_query("a=1&upload_id=u%2F").map(|r| r.name().to_owned()), None, "not an id");
    }

    #[test]
    fn the_head_of_an_answer_tells_of_what_it_created() {
        let whole = br#"{"name":"models/veo-3/operations/op-1"}"#;
        assert_eq!(
            names(&told_of_head(whole, true, false).into_iter().map(|(r, _)| r).collect::<Vec<_>>()),
            ["models/veo-3/operations/op-1"]
        );
        assert!(told_of_head(&whole[..20], false, false).is_empty(), "a name cut short tells nothing");
        // An interaction with a long output, cut at its head: its top-level
        // `id` still names it; a nested `name` does not, nor a value cut.
        let long = format!(
            r#"{{ "metadata": {{"name": "files/nested", "n": [1, {{"x": "]"}}]}}, "status" : "completed", "id":"it-long", "usage": 12, "outputs": [{{"text": "{}"}}], "name": "cut"#,
            "ü\\\" ".repeat(30_000)
        );
        let head = &long.as_bytes()[..64 * 1024];
        let told: Vec<Resource> = told_of_head(head, false, true).into_iter().map(|(r, _)| r).collect();
        assert_eq!(names(&told), ["interactions/it-long"]);
        let strings = top_level_strings(long.as_bytes());
        assert_eq!(strings.keys().collect::<Vec<_>>(), ["id", "status"], "{strings:?}");
        assert_eq!(top_level_strings(br#"{"a":"x\"y","b":{"c":"d"},"e":"f"}"#).get("a"), Some(&Value::from("x\"y")));
        assert_eq!(top_level_strings(br#"{"a":"x\"y","b":{"c":"d"},"e":"f"}"#).get("e"), Some(&Value::from("f")));
        for cut in [&b"{"[..], b"{\"a", b"{\"a\":", b"{\"a\":\"b", b"[1,2]", b"", b"{\"a\":[1,{\"b\":\"c\"}"] {
            assert!(top_level_strings(cut).is_empty(), "{cut:?}");
        }
        let sse = b"data: {\"interaction\":{\"id\":\"it-1\"},\"id\":\"ev-1\"}\n\ndata: {\"interaction\":{\"id\":\"it-2";
        let told: Vec<Resource> = told_of_head(sse, false, true).into_iter().map(|(r, _)| r).collect();
        assert_eq!(
            names(&told),
            ["interactions/it-1"],
            "the event's own id is no interaction; a cut event is not read"
        );
    }

    #[test]
    fn answers_tell_of_the_resources_they_created_with_their_expiry() {
        let upload = serde_json::json!({"file": {"name": "files/abc", "uri": "https://generativelanguage.googleapis.com/v1beta/files/abc",
            "expirationTime": "2026-12-03T20:00:00.123456Z", "state": "ACTIVE"}});
        let told = told_of(&upload, false);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].0.name(), "files/abc");
        assert_eq!(told[0].1, parse_rfc3339("2026-12-03T20:00:00.123Z"));
        let cache = serde_json::json!({"name": "cachedContents/c1", "model": "models/gemini-2.5-flash", "expireTime": "2026-12-01T21:00:00Z"});
        assert_eq!(told_of(&cache, false)[0].0.kind(), Kind::CachedContent);
        let video = serde_json::json!({"name": "models/veo-3.1-generate-preview/operations/op1", "done": false});
        assert_eq!(told_of(&video, false)[0].0.name(), "models/veo-3.1-generate-preview/operations/op1");
        let list = serde_json::json!({"files": [{"name": "files/a"}, {"name": "files/b"}, {"name": "not a name"}], "nextPageToken": "t"});
        assert_eq!(told_of(&list, false).iter().map(|(r, _)| r.name()).collect::<Vec<_>>(), ["files/a", "files/b"]);
        let interaction = serde_json::json!({"id": "v1_abc", "status": "completed", "outputs": []});
        assert_eq!(told_of(&interaction, true)[0].0.name(), "interactions/v1_abc");
        assert!(told_of(&interaction, false).is_empty(), "an id is no resource name elsewhere");
        let first_event = serde_json::json!({"event_type": "interaction.created", "interaction": {"id": "v1_xyz", "status": "in_progress"}});
        assert_eq!(told_of(&first_event, false)[0].0.name(), "interactions/v1_xyz");
        let answer = serde_json::json!({"candidates": [{"content": {"parts": [{"text": "files/abc"}]}}]});
        assert!(told_of(&answer, false).is_empty());
    }

    #[test]
    fn the_registry_knows_owners_until_they_expire_and_refuses_two_owners() {
        let mut reg = Registry::default();
        let one = Resource::parse("files/one").expect("r");
        let two = Resource::parse("files/two").expect("r");
        let cache = Resource::parse("cachedContents/c").expect("r");
        reg.remember(&one, "k-a", None, None, NOW);
        reg.remember(&two, "k-b", None, None, NOW);
        reg.remember(&cache, "k-a", Some(UnixMillis(NOW.0 + 1000)), None, NOW);
        assert_eq!(reg.owner(&one, NOW), Some("k-a"));
        assert_eq!(reg.owner_of_all(&[one.clone(), cache.clone()], NOW), Ok(Some("k-a")));
        assert_eq!(reg.owner_of_all(&[Resource::parse("files/unknown").expect("r")], NOW), Ok(None));
        assert_eq!(
            reg.owner_of_all(&[one.clone(), two.clone()], NOW),
            Err(Conflict { first: "files/one".into(), second: "files/two".into() })
        );
        // The cache's own expiry, and a file's 48 hours.
        assert_eq!(reg.owner(&cache, UnixMillis(NOW.0 + 1000)), None);
        assert_eq!(reg.owner(&one, UnixMillis(NOW.0 + 48 * HOUR_MS - 1)), Some("k-a"));
        assert_eq!(reg.owner(&one, UnixMillis(NOW.0 + 48 * HOUR_MS)), None);
        assert!(reg.forget(&two) && reg.owner(&two, NOW).is_none());
    }

    #[test]
    fn entries_round_trip_through_rows_and_expired_ones_are_not_restored() {
        let mut reg = Registry::default();
        let file = Resource::parse("files/abc").expect("r");
        let upload = Resource::upload("up-1").expect("r");
        let rows: Vec<Vec<SqlValue>> = [(&file, None), (&upload, Some(UnixMillis(NOW.0 + 5)))]
            .into_iter()
            .map(|(r, exp)| row_statement(r.name(), reg.remember(r, "k-a", exp, Some("client-1"), NOW).as_ref()).1)
            .collect();
        let back: Vec<(Resource, Owner)> = rows.iter().map(|r| from_row(r).expect("row")).collect();
        assert_eq!(back[0].0, file);
        assert_eq!(back[1].0, upload);
        let restored = Registry::restore(back.clone(), NOW);
        assert_eq!((restored.owner(&file, NOW), restored.owner(&upload, NOW)), (Some("k-a"), Some("k-a")));
        assert!(restored.may_see(&file, Asker::Client("client-1"), NOW));
        // A row written before clients were told apart has no client: the
        // proxy key's.
        let old = from_row(&[
            SqlValue::Text("files/old".into()),
            SqlValue::Text("k".into()),
            int(NOW.0 + 9),
            SqlValue::Null,
            int(0),
        ]);
        assert_eq!(old.expect("row").1.client, None);
        let later = Registry::restore(back, UnixMillis(NOW.0 + 5));
        assert_eq!((later.owner(&file, NOW), later.len()), (Some("k-a"), 1), "the expired upload is not restored");
        let nonsense = [SqlValue::Text("nonsense".into()), SqlValue::Text("k".into()), int(1), SqlValue::Null, int(0)];
        assert!(from_row(&nonsense).is_err());
    }

    #[test]
    fn the_registry_is_bounded_and_evicts_the_soonest_to_expire() {
        let mut reg = Registry::default();
        for i in 0..MAX_ENTRIES {
            let r = Resource::parse(&format!("files/f{i}")).expect("r");
            reg.remember(&r, "k", Some(UnixMillis(NOW.0 + 1 + i as u64)), None, NOW);
        }
        let late = Resource::parse("files/late").expect("r");
        reg.remember(&late, "k", None, None, NOW);
        assert!(reg.len() <= MAX_ENTRIES);
        assert_eq!(reg.owner(&late, NOW), Some("k"));
        assert_eq!(reg.owner(&Resource::parse("files/f0").expect("r"), NOW), None, "the soonest to expire went");
        let last = Resource::parse(&format!("files/f{}", MAX_ENTRIES - 1)).expect("r");
        assert_eq!(reg.owner(&last, NOW), Some("k"));
    }

    #[test]
    fn a_client_sees_only_what_it_made_and_keeps_it_against_others() {
        let mut reg = Registry::default();
        let a = Resource::parse("files/a").expect("r");
        let listed = Resource::parse("files/listed").expect("r");
        assert!(reg.remember(&a, "k", None, Some("alice"), NOW).is_some());
        // Seen again (a listing, another client's answer): still Alice's,
        // and nothing to write.
        assert_eq!(reg.remember(&a, "k", Some(UnixMillis(NOW.0 + 48 * HOUR_MS)), Some("bob"), NOW), None);
        reg.remember(&listed, "k", None, None, NOW);
        assert!(reg.may_see(&a, Asker::Client("alice"), NOW));
        assert!(!reg.may_see(&a, Asker::Client("bob"), NOW));
        assert!(!reg.may_see(&listed, Asker::Client("alice"), NOW), "the proxy's own");
        assert!(!reg.may_see(&Resource::parse("files/unknown").expect("r"), Asker::Client("alice"), NOW));
        assert!(reg.may_see(&a, Asker::Anyone, NOW) && reg.may_see(&listed, Asker::Anyone, NOW));
        assert_eq!(reg.names_of("alice", "files/", NOW), ["files/a"]);
        assert!(reg.names_of("alice", "cachedContents/", NOW).is_empty());
    }

    #[test]
    fn one_client_cannot_evict_anothers_entries() {
        let mut reg = Registry::default();
        let bobs = Resource::parse("files/bobs").expect("r");
        reg.remember(&bobs, "k", None, Some("bob"), NOW);
        for i in 0..MAX_PER_CLIENT + 50 {
            let r = Resource::parse(&format!("files/m{i}")).expect("r");
            reg.remember(&r, "k", Some(UnixMillis(NOW.0 + 1 + i as u64)), Some("mallory"), NOW);
        }
        assert!(reg.names_of("mallory", "files/", NOW).len() <= MAX_PER_CLIENT);
        assert!(reg.may_see(&bobs, Asker::Client("bob"), NOW));
        let newest = Resource::parse(&format!("files/m{}", MAX_PER_CLIENT + 49)).expect("r");
        assert!(reg.may_see(&newest, Asker::Client("mallory"), NOW));
    }

    #[test]
    fn names_written_with_escapes_are_read_as_google_reads_them() {
        let body = br#"{"contents":[{"parts":[{"fileData":{"file\u0055ri":"files\/alice-file"}}]}],"cached\u0043ontent":"cachedContents\/c1"}"#;
        let names: Vec<String> = in_body(body).iter().map(|r| r.name().to_owned()).collect();
        assert_eq!(names, ["files/alice-file", "cachedContents/c1"]);
        // Quoted in a prompt, still no member.
        assert!(in_body(br#"{"text":"say \"fileUri\": \"files/x\""}"#).is_empty());
        let many: Vec<String> = (0..MAX_NAMED + 1).map(|i| format!(r#"{{"fileUri":"files/f{i}"}}"#)).collect();
        let body = format!(r#"{{"parts":[{}]}}"#, many.join(","));
        let (found, more) = named_in_body(body.as_bytes());
        assert_eq!((found.len(), more), (MAX_NAMED, true));
    }

    #[test]
    fn a_clients_listing_keeps_its_own_items_and_no_list_of_another_kind() {
        let own: std::collections::HashSet<String> = ["files/mine".to_owned()].into();
        let mut page = serde_json::json!({
            "files": [{"name": "files/mine"}, {"name": "files/theirs"}],
            "generatedFiles": [{"name": "generatedFiles/g"}],
            "nextPageToken": "t"
        });
        keep_own(&mut page, &own);
        assert_eq!(page, serde_json::json!({"files": [{"name": "files/mine"}], "nextPageToken": "t"}));
    }

    #[test]
    fn a_finished_video_operation_names_its_files() {
        let op = serde_json::json!({"name": "models/veo-3.0-generate-001/operations/op1", "done": true,
            "response": {"generateVideoResponse": {"generatedSamples": [
                {"video": {"uri": "https://generativelanguage.googleapis.com/v1beta/files/vid-1:download?alt=media"}}]}}});
        let names: Vec<String> = told_of(&op, false).iter().map(|(r, _)| r.name().to_owned()).collect();
        assert_eq!(names, ["models/veo-3.0-generate-001/operations/op1", "files/vid-1"]);
    }

    #[test]
    fn a_models_listing_names_its_models_even_cut_short() {
        let gemini = br#"{"models": [{"name": "models/gemini-2.5-flash", "baseModelId": "gemini-2.5-flash",
            "description": "Say \"models/x\" here"}, {"name": "models/gemini-3-pro-preview"}, {"name": "models/gemini-embed"#;
        assert_eq!(listed_models(gemini), ["gemini-2.5-flash", "gemini-3-pro-preview"]);
        let openai = br#"{"object": "list", "data": [{"id": "models/gemini-2.5-flash-lite", "object": "model"}]}"#;
        assert_eq!(listed_models(openai), ["gemini-2.5-flash-lite"]);
        assert!(listed_models(b"{}").is_empty());
    }
}
