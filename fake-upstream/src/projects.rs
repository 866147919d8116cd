//! Google projects as the fake models them, for the resources a key owns:
//! files and uploads, cached contents, batches and interactions.
//!
//! Each key is a project of its own. A project's files, uploads and cached
//! contents are visible to that project only: another key gets Google's
//! `403 PERMISSION_DENIED` ("You do not have permission to access the File
//! … or it may not exist"), the same answer as for a resource that never
//! existed or has expired. Files live 48 hours; batches and interactions
//! are kept as long.
//!
//! Uploads follow the resumable protocol the SDKs speak: a `start` answers
//! an upload URL on the fake's own host (`/upload/v1beta/files?upload_id=…`,
//! with the key in its query when the key came in the query); chunks carry
//! `X-Goog-Upload-Command: upload` (`upload, finalize` on the last) and
//! their `X-Goog-Upload-Offset`, and need no key: the upload id is the
//! authority. Only sizes are kept, never the bytes.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a file lives.
pub const FILE_TTL: Duration = Duration::from_secs(48 * 3600);

/// The URI form Google gives a file (never fetched).
pub const FILE_URI_BASE: &str = "https://generativelanguage.googleapis.com/v1beta/files/";

/// A stored file's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// `files/{id}`.
    pub name: String,
    /// The owning project (key).
    pub project: String,
    /// Its display name.
    pub display_name: Option<String>,
    /// Its MIME type.
    pub mime_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was created.
    pub created: SystemTime,
}

impl File {
    /// When it expires.
    pub fn expires(&self) -> SystemTime {
        self.created + FILE_TTL
    }

    /// Its JSON, as Google answers it.
    pub fn to_json(&self) -> Value {
        let id = self.name.trim_start_matches("files/");
        let mut v = json!({
            "name": self.name,
            "mimeType": self.mime_type,
            "sizeBytes": self.size.to_string(),
            "createTime": rfc3339(self.created),
            "updateTime": rfc3339(self.created),
            "expirationTime": rfc3339(self.expires()),
            "sha256Hash": "ZmFrZQ==",
            "uri": format!("{FILE_URI_BASE}{id}"),
            "state": "ACTIVE",
            "source": "UPLOADED",
        });
        if let Some(d) = &self.display_name {
            v["displayName"] = json!(d);
        }
        v
    }
}

/// A resumable upload's `start` request.
#[derive(Clone, Copy, Debug)]
pub struct Start<'a> {
    /// The declared size (`X-Goog-Upload-Header-Content-Length`).
    pub declared: Option<u64>,
    /// The declared type (`X-Goog-Upload-Header-Content-Type`).
    pub mime: Option<&'a str>,
    /// The JSON body (`{"file": {...}}`).
    pub body: &'a Value,
    /// The fake's own `http://host:port`.
    pub origin: &'a str,
    /// Whether the key came in the query (it is then in the upload URL
    /// too, as Google does).
    pub key_in_query: bool,
}

/// An upload in progress.
#[derive(Clone, Debug)]
struct Upload {
    file: File,
    declared: u64,
    received: u64,
}

/// A cached content's metadata.
#[derive(Clone, Debug)]
struct Cache {
    project: String,
    model: String,
    expires: SystemTime,
}

/// A batch job: it succeeds at once, each of its inline requests answered
/// as `generateContent` would answer it.
#[derive(Clone, Debug)]
struct Batch {
    project: String,
    model: String,
    display_name: Option<String>,
    requests: usize,
    created: SystemTime,
    cancelled: bool,
}

/// An interaction (the Interactions API): its answer is kept, as Google
/// keeps it for a later `GET` and for `previous_interaction_id`.
#[derive(Clone, Debug)]
struct Interaction {
    project: String,
    model: String,
    previous: Option<String>,
    created: SystemTime,
}

/// How long the fake keeps batches and interactions.
pub const JOB_TTL: Duration = Duration::from_secs(48 * 3600);

/// What the fake's projects hold.
#[derive(Debug, Default)]
pub struct Projects {
    files: HashMap<String, File>,
    uploads: HashMap<String, Upload>,
    caches: HashMap<String, Cache>,
    batches: HashMap<String, Batch>,
    interactions: HashMap<String, Interaction>,
    next: u64,
}

/// An answer: status and JSON body, and for uploads the
/// `X-Goog-Upload-*` headers.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
    /// Extra headers (name, value).
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Self { status: 200, body, headers: Vec::new() }
    }

    fn error(status: u16, message: &str, reason: &str) -> Self {
        Self {
            status,
            body: json!({"error": {"code": status, "message": message, "status": reason}}),
            headers: Vec::new(),
        }
    }

    fn no_file(id: &str) -> Self {
        Self::error(
            403,
            &format!("You do not have permission to access the File {id} or it may not exist."),
            "PERMISSION_DENIED",
        )
    }
}

/// One page of a listing, by name: `page_size` (default 10, at most 100)
/// items in `member`, the token an opaque one (base64 of the last name
/// of the page, as Google's are opaque), omitted on the last page.
fn page(member: &str, mut items: Vec<(String, Value)>, page_size: Option<usize>, token: Option<&str>) -> Answer {
    use base64::Engine as _;
    let size = page_size.filter(|&n| n > 0).unwrap_or(10).min(100);
    let engine = base64::engine::general_purpose::STANDARD;
    let after = match token.map(|t| engine.decode(t).ok().and_then(|b| String::from_utf8(b).ok())) {
        Some(Some(after)) => Some(after),
        Some(None) => return Answer::error(400, "Invalid page token.", "INVALID_ARGUMENT"),
        None => None,
    };
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.retain(|(name, _)| after.as_deref().is_none_or(|a| name.as_str() > a));
    let mut body = json!({});
    if items.len() > size {
        body["nextPageToken"] = json!(engine.encode(&items[size - 1].0));
    }
    let page: Vec<Value> = items.into_iter().take(size).map(|(_, v)| v).collect();
    if !page.is_empty() {
        body[member] = json!(page);
    }
    Answer::ok(body)
}

/// The id part of `files/{id}`, a file URI, or a bare id.
pub fn file_id(raw: &str) -> &str {
    let raw = raw.strip_prefix(FILE_URI_BASE).unwrap_or(raw);
    let raw = raw.rsplit_once("/files/").map_or(raw, |(_, id)| id);
    let raw = raw.strip_prefix("files/").unwrap_or(raw);
    raw.split(':').next().unwrap_or(raw)
}

impl Projects {
    fn fresh_id(&mut self, prefix: &str) -> String {
        // Unique across resets of the fake, as Google's are for ever: a
        // proxy's registry outlives a reset.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        self.next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        // Google's ids are lowercase letters and digits.
        format!("{prefix}{:010x}", self.next.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24)
    }

    /// Starts a resumable upload for project `key`.
    pub fn start_upload(&mut self, key: &str, start: &Start<'_>, now: SystemTime) -> Answer {
        let Start { declared, mime, body, origin, key_in_query } = *start;
        let Some(declared) = declared else {
            return Answer::error(400, "Missing X-Goog-Upload-Header-Content-Length.", "INVALID_ARGUMENT");
        };
        let meta = body.get("file").unwrap_or(&Value::Null);
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) => format!("files/{}", file_id(n)),
            None => format!("files/{}", self.fresh_id("")),
        };
        if self.files.contains_key(&name) {
            return Answer::error(409, &format!("File {name} already exists."), "ALREADY_EXISTS");
        }
        let mime_type = meta.get("mimeType").and_then(Value::as_str).or(mime).unwrap_or("application/octet-stream");
        let file = File {
            name,
            project: key.to_owned(),
            display_name: meta.get("displayName").and_then(Value::as_str).map(str::to_owned),
            mime_type: mime_type.to_owned(),
            size: declared,
            created: now,
        };
        let upload_id = self.fresh_id("AU");
        self.uploads.insert(upload_id.clone(), Upload { file, declared, received: 0 });
        let key_part = if key_in_query { format!("key={key}&") } else { String::new() };
        let url = format!("{origin}/upload/v1beta/files?{key_part}upload_id={upload_id}&upload_protocol=resumable");
        Answer {
            status: 200,
            body: Value::Null,
            headers: vec![("x-goog-upload-status", "active".into()), ("x-goog-upload-url", url)],
        }
    }

    /// One chunk of upload `upload_id`: `command` as sent
    /// (`upload`, `upload, finalize`, `finalize`, `query`), the `offset`
    /// it claims and its length.
    pub fn chunk(&mut self, upload_id: &str, command: &str, offset: Option<u64>, len: u64, now: SystemTime) -> Answer {
        let Some(up) = self.uploads.get_mut(upload_id) else {
            return Answer::error(404, "Upload not found.", "NOT_FOUND");
        };
        let parts: Vec<&str> = command.split(',').map(str::trim).collect();
        let status = |s: &str, received: u64| {
            vec![("x-goog-upload-status", s.to_owned()), ("x-goog-upload-size-received", received.to_string())]
        };
        if parts == ["query"] {
            return Answer { status: 200, body: Value::Null, headers: status("active", up.received) };
        }
        if parts.contains(&"upload") {
            if offset != Some(up.received) {
                return Answer {
                    status: 400,
                    body: json!({"error": {"code": 400, "message": "Invalid upload offset.", "status": "INVALID_ARGUMENT"}}),
                    headers: status("active", up.received),
                };
            }
            up.received += len;
        }
        if !parts.contains(&"finalize") {
            return Answer { status: 200, body: Value::Null, headers: status("active", up.received) };
        }
        if up.received != up.declared {
            let message = format!("Upload size {} does not match the declared {}.", up.received, up.declared);
            return Answer::error(400, &message, "INVALID_ARGUMENT");
        }
        let Some(up) = self.uploads.remove(upload_id) else { unreachable!("the upload was just found") };
        let mut file = up.file;
        file.created = now;
        let body = json!({"file": file.to_json()});
        self.files.insert(file.name.clone(), file);
        Answer { status: 200, body, headers: vec![("x-goog-upload-status", "final".into())] }
    }

    fn visible(&self, key: &str, id: &str, now: SystemTime) -> Option<&File> {
        self.files.get(&format!("files/{id}")).filter(|f| f.project == key && f.expires() > now)
    }

    /// `GET files/{id}`.
    pub fn get_file(&self, key: &str, id: &str, now: SystemTime) -> Answer {
        self.visible(key, id, now).map_or_else(|| Answer::no_file(id), |f| Answer::ok(f.to_json()))
    }

    /// `DELETE files/{id}`.
    pub fn delete_file(&mut self, key: &str, id: &str, now: SystemTime) -> Answer {
        if self.visible(key, id, now).is_none() {
            return Answer::no_file(id);
        }
        self.files.remove(&format!("files/{id}"));
        Answer::ok(json!({}))
    }

    /// `GET files?pageSize=&pageToken=`: the project's live files, by name,
    /// a [`page`] at a time.
    pub fn list_files(&self, key: &str, page_size: Option<usize>, token: Option<&str>, now: SystemTime) -> Answer {
        let files = self.files.values().filter(|f| f.project == key && f.expires() > now);
        page("files", files.map(|f| (f.name.clone(), f.to_json())).collect(), page_size, token)
    }

    /// `GET cachedContents?pageSize=&pageToken=`: the project's live caches.
    pub fn list_caches(&self, key: &str, page_size: Option<usize>, token: Option<&str>, now: SystemTime) -> Answer {
        let caches = self.caches.iter().filter(|(_, c)| c.project == key && c.expires > now);
        page("cachedContents", caches.map(|(n, c)| (n.clone(), cache_json(n, c))).collect(), page_size, token)
    }

    /// `GET batches?pageSize=&pageToken=`: the project's batches, as
    /// operations.
    pub fn list_batches(&self, key: &str, page_size: Option<usize>, token: Option<&str>, now: SystemTime) -> Answer {
        let batches = self.batches.iter().filter(|(_, b)| b.project == key && b.created + JOB_TTL > now);
        page("operations", batches.map(|(n, b)| (n.clone(), batch_json(n, b, true))).collect(), page_size, token)
    }

    /// `POST cachedContents`.
    pub fn create_cache(&mut self, key: &str, body: &Value, now: SystemTime) -> Answer {
        let Some(model) = body.get("model").and_then(Value::as_str) else {
            return Answer::error(400, "Model name is required.", "INVALID_ARGUMENT");
        };
        if let Some(refused) = self.refused_files(key, body, now) {
            return refused;
        }
        let ttl = body.get("ttl").and_then(Value::as_str).and_then(|t| t.strip_suffix('s')?.parse::<f64>().ok());
        let expires = now + Duration::from_secs_f64(ttl.unwrap_or(3600.0).max(1.0));
        let name = format!("cachedContents/{}", self.fresh_id(""));
        let cache = Cache { project: key.to_owned(), model: model.to_owned(), expires };
        let out = cache_json(&name, &cache);
        self.caches.insert(name, cache);
        Answer::ok(out)
    }

    /// `GET cachedContents/{id}`.
    pub fn get_cache(&self, key: &str, name: &str, now: SystemTime) -> Answer {
        match self.caches.get(name).filter(|c| c.project == key && c.expires > now) {
            Some(c) => Answer::ok(cache_json(name, c)),
            None => Answer::error(403, "CachedContent not found (or permission denied)", "PERMISSION_DENIED"),
        }
    }

    /// Google's refusal of a generation (or cache) body that names a file
    /// or cached content this project cannot see, if any.
    pub fn refused_files(&self, key: &str, body: &Value, now: SystemTime) -> Option<Answer> {
        let mut uris = Vec::new();
        collect_file_uris(body, &mut uris);
        if let Some(id) = uris.iter().map(|u| file_id(u)).find(|id| self.visible(key, id, now).is_none()) {
            return Some(Answer::no_file(id));
        }
        let cache = body.get("cachedContent").or_else(|| body.get("cached_content")).and_then(Value::as_str)?;
        let refused = self.get_cache(key, cache, now);
        (refused.status != 200).then_some(refused)
    }
}

/// What a new interaction answers: whole, or as the events of a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Made {
    /// The interaction's JSON.
    Whole(Value),
    /// Server-sent events, each a whole `data:` block.
    Events(Vec<String>),
}

impl Projects {
    /// `POST models/{model}:batchGenerateContent` (inline requests).
    pub fn create_batch(&mut self, key: &str, model: &str, body: &Value, now: SystemTime) -> Answer {
        let batch = body.get("batch").unwrap_or(&Value::Null);
        let Some(requests) = batch.pointer("/inputConfig/requests/requests").and_then(Value::as_array) else {
            return Answer::error(400, "batch.input_config.requests is required.", "INVALID_ARGUMENT");
        };
        if let Some(refused) = self.refused_files(key, batch, now) {
            return refused;
        }
        let name = format!("batches/{}", self.fresh_id(""));
        let job = Batch {
            project: key.to_owned(),
            model: format!("models/{}", model.trim_start_matches("models/")),
            display_name: batch.get("displayName").and_then(Value::as_str).map(str::to_owned),
            requests: requests.len(),
            created: now,
            cancelled: false,
        };
        let out = batch_json(&name, &job, false);
        self.batches.insert(name, job);
        Answer::ok(out)
    }

    fn batch(&mut self, key: &str, name: &str, now: SystemTime) -> Option<&mut Batch> {
        self.batches.get_mut(name).filter(|b| b.project == key && b.created + JOB_TTL > now)
    }

    /// `GET batches/{id}`, `POST batches/{id}:cancel`, `DELETE batches/{id}`
    /// (`action` is `get`, `cancel` or `delete`).
    pub fn batch_call(&mut self, key: &str, name: &str, action: &str, now: SystemTime) -> Answer {
        let Some(job) = self.batch(key, name, now) else {
            return Answer::error(
                403,
                &format!("You do not have permission to access the batch {name} or it may not exist."),
                "PERMISSION_DENIED",
            );
        };
        match action {
            "cancel" => {
                job.cancelled = true;
                Answer::ok(json!({}))
            }
            "delete" => {
                self.batches.remove(name);
                Answer::ok(json!({}))
            }
            _ => Answer::ok(batch_json(name, job, true)),
        }
    }

    /// `POST interactions`: the model's answer to `input`, after
    /// `previous_interaction_id` if given (which must be this project's).
    pub fn create_interaction(&mut self, key: &str, body: &Value, now: SystemTime) -> Result<Made, Answer> {
        let Some(model) = body.get("model").and_then(Value::as_str) else {
            return Err(Answer::error(400, "model or agent is required.", "INVALID_ARGUMENT"));
        };
        let previous = body.get("previous_interaction_id").and_then(Value::as_str);
        if let Some(p) = previous
            && self.interaction(key, p, now).is_none()
        {
            return Err(no_interaction(p));
        }
        if let Some(refused) = self.refused_files(key, body, now) {
            return Err(refused);
        }
        let id = format!("v1_{}", self.fresh_id("int"));
        let made = Interaction {
            project: key.to_owned(),
            model: model.trim_start_matches("models/").to_owned(),
            previous: previous.map(str::to_owned),
            created: now,
        };
        let whole = interaction_json(&id, &made);
        self.interactions.insert(id.clone(), made);
        if body.get("stream") != Some(&Value::Bool(true)) {
            return Ok(Made::Whole(whole));
        }
        let text = whole.pointer("/steps/0/content/0/text").and_then(Value::as_str).unwrap_or_default().to_owned();
        let (head, tail) = text.split_at(text.len() / 2);
        let events = [
            json!({"event_type": "interaction.created", "interaction": {"id": id, "status": "in_progress", "model": whole["model"]}}),
            json!({"event_type": "step.start", "index": 0, "step": {"type": "model_output", "content": []}}),
            json!({"event_type": "step.delta", "index": 0, "delta": {"type": "text", "text": head}}),
            json!({"event_type": "step.delta", "index": 0, "delta": {"type": "text", "text": tail}}),
            json!({"event_type": "step.stop", "index": 0}),
            json!({"event_type": "interaction.completed", "interaction": {"id": id, "status": "completed"}, "usage": whole["usage"]}),
        ];
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e["event_id"] = json!(format!("evt_{i}"));
                format!("event: {}\ndata: {e}\n\n", e["event_type"].as_str().unwrap_or_default())
            })
            .collect();
        Ok(Made::Events(events))
    }

    fn interaction(&self, key: &str, id: &str, now: SystemTime) -> Option<&Interaction> {
        self.interactions.get(id).filter(|i| i.project == key && i.created + JOB_TTL > now)
    }

    /// `GET interactions/{id}`, `DELETE interactions/{id}`.
    pub fn interaction_call(&mut self, key: &str, id: &str, delete: bool, now: SystemTime) -> Answer {
        let Some(found) = self.interaction(key, id, now) else { return no_interaction(id) };
        if delete {
            self.interactions.remove(id);
            return Answer::ok(json!({}));
        }
        Answer::ok(interaction_json(id, found))
    }
}

fn no_interaction(id: &str) -> Answer {
    Answer::error(
        403,
        &format!("You do not have permission to access the interaction {id} or it may not exist."),
        "PERMISSION_DENIED",
    )
}

fn interaction_json(id: &str, i: &Interaction) -> Value {
    let mut v = json!({
        "id": id,
        "status": "completed",
        "model": i.model,
        "created": rfc3339(i.created),
        "updated": rfc3339(i.created),
        "steps": [{"type": "model_output", "content": [{"type": "text", "text": format!("Hello from the fake {}.", i.model)}]}],
        "usage": {"total_input_tokens": 7, "total_output_tokens": 6, "total_tokens": 13},
    });
    if let Some(p) = &i.previous {
        v["previous_interaction_id"] = json!(p);
    }
    v
}

/// A batch as Google answers it: a long-running operation whose metadata
/// is the batch; done (every request answered) once asked after creation.
fn batch_json(name: &str, b: &Batch, done: bool) -> Value {
    let state = match (b.cancelled, done) {
        (true, _) => "BATCH_STATE_CANCELLED",
        (false, true) => "BATCH_STATE_SUCCEEDED",
        (false, false) => "BATCH_STATE_PENDING",
    };
    let n = b.requests.to_string();
    let mut meta = json!({
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "name": name,
        "model": b.model,
        "state": state,
        "createTime": rfc3339(b.created),
        "updateTime": rfc3339(b.created),
        "batchStats": {"requestCount": n},
    });
    if let Some(d) = &b.display_name {
        meta["displayName"] = json!(d);
    }
    let mut v = json!({"name": name, "metadata": meta});
    if done && !b.cancelled {
        let model = b.model.trim_start_matches("models/");
        let answer = json!({"response": {
            "candidates": [{"content": {"parts": [{"text": format!("Hello from the fake {model}.")}], "role": "model"}, "finishReason": "STOP"}],
            "modelVersion": model,
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7},
        }});
        let answers = vec![answer; b.requests];
        v["metadata"]["output"] = json!({"inlinedResponses": {"inlinedResponses": answers}});
        v["metadata"]["batchStats"]["successfulRequestCount"] = json!(n);
        v["done"] = json!(true);
    }
    v
}

fn cache_json(name: &str, c: &Cache) -> Value {
    json!({"name": name, "model": c.model, "expireTime": rfc3339(c.expires), "usageMetadata": {"totalTokenCount": 4096}})
}

fn collect_file_uris<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("fileUri" | "file_uri", Value::String(s)) => out.push(s),
                    _ => collect_file_uris(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_file_uris(v, out)),
        _ => {}
    }
}

/// RFC 3339 in UTC with microseconds, as Google writes times.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// The OpenAI-compatible Files and Batches API (`/v1beta/openai/files`,
/// `/v1beta/openai/batches`), as Google serves it: the same projects, ids
/// that are Google's names (`files/…`, `batches/…`), objects in OpenAI's
/// shape, errors as a one-element list.
impl Projects {
    /// `POST files` (multipart): a file of `size` bytes named `filename`.
    pub fn openai_create_file(&mut self, key: &str, filename: Option<&str>, size: u64, now: SystemTime) -> Answer {
        let name = format!("files/{}", self.fresh_id(""));
        let file = File {
            name: name.clone(),
            project: key.to_owned(),
            display_name: filename.map(str::to_owned),
            mime_type: "application/jsonl".to_owned(),
            size,
            created: now,
        };
        let out = openai_file_json(&file);
        self.files.insert(name, file);
        Answer::ok(out)
    }

    /// `GET files/{id}` (the id percent-encoded or not).
    pub fn openai_get_file(&self, key: &str, id: &str, now: SystemTime) -> Answer {
        let id = file_id(id);
        self.visible(key, id, now)
            .map_or_else(|| openai_error(Answer::no_file(id)), |f| Answer::ok(openai_file_json(f)))
    }

    /// `POST batches`: a batch of the file `input_file_id` (this project's).
    pub fn openai_create_batch(&mut self, key: &str, body: &Value, now: SystemTime) -> Answer {
        let Some(input) = body.get("input_file_id").and_then(Value::as_str) else {
            return openai_error(Answer::error(400, "input_file_id is required.", "INVALID_ARGUMENT"));
        };
        if self.visible(key, file_id(input), now).is_none() {
            return openai_error(Answer::no_file(file_id(input)));
        }
        let name = format!("batches/{}", self.fresh_id(""));
        let job = Batch {
            project: key.to_owned(),
            model: body.get("endpoint").and_then(Value::as_str).unwrap_or_default().to_owned(),
            display_name: Some(input.to_owned()),
            requests: 1,
            created: now,
            cancelled: false,
        };
        let out = openai_batch_json(&name, &job);
        self.batches.insert(name, job);
        Answer::ok(out)
    }

    /// `GET batches/{id}`.
    pub fn openai_get_batch(&mut self, key: &str, name: &str, now: SystemTime) -> Answer {
        match self.batch(key, name, now) {
            Some(job) => Answer::ok(openai_batch_json(name, job)),
            None => openai_error(Answer::error(
                403,
                &format!("You do not have permission to access the batch {name} or it may not exist."),
                "PERMISSION_DENIED",
            )),
        }
    }
}

fn openai_error(mut a: Answer) -> Answer {
    a.body = Value::Array(vec![a.body]);
    a
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn openai_file_json(f: &File) -> Value {
    json!({
        "id": f.name,
        "object": "file",
        "bytes": f.size,
        "created_at": unix_secs(f.created),
        "expires_at": unix_secs(f.expires()),
        "filename": f.display_name.clone().unwrap_or_default(),
        "purpose": "batch",
        "status": "processed",
    })
}

fn openai_batch_json(name: &str, b: &Batch) -> Value {
    json!({
        "id": name,
        "object": "batch",
        "endpoint": b.model,
        "input_file_id": b.display_name,
        "completion_window": "24h",
        "status": if b.cancelled { "cancelled" } else { "validating" },
        "created_at": unix_secs(b.created),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AIzaSyFAKEprojectA00000000000000000000";
    const B: &str = "AIzaSyFAKEprojectB00000000000000000000";

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn upload(p: &mut Projects, key: &str, size: u64) -> String {
        let body = json!({"file": {"displayName": "doc"}});
        let start = Start {
            declared: Some(size),
            mime: Some("application/pdf"),
            body: &body,
            origin: "http://127.0.0.1:9",
            key_in_query: true,
        };
        let start = p.start_upload(key, &start, now());
        let url = start.headers.iter().find(|(n, _)| *n == "x-goog-upload-url").expect("url").1.clone();
        assert!(url.starts_with("http://127.0.0.1:9/upload/v1beta/files?key=") && url.contains(key), "{url}");
        let id = url.split("upload_id=").nth(1).and_then(|r| r.split('&').next()).expect("id").to_owned();
        let half = size / 2;
        assert_eq!(p.chunk(&id, "upload", Some(0), half, now()).headers[0].1, "active");
        let last = p.chunk(&id, "upload, finalize", Some(half), size - half, now());
        assert_eq!((last.status, last.headers[0].1.as_str()), (200, "final"), "{last:?}");
        last.body["file"]["name"].as_str().expect("name").to_owned()
    }

    #[test]
    fn an_upload_makes_a_file_only_its_project_can_see_for_48_hours() {
        let mut p = Projects::default();
        let name = upload(&mut p, A, 3 * 1024 * 1024);
        let id = file_id(&name).to_owned();
        let got = p.get_file(A, &id, now());
        assert_eq!(got.status, 200);
        assert_eq!(got.body["sizeBytes"], "3145728");
        assert_eq!(got.body["uri"], format!("{FILE_URI_BASE}{id}"));
        let other = p.get_file(B, &id, now());
        assert_eq!(other.status, 403);
        assert!(other.body["error"]["message"].as_str().is_some_and(|m| m.contains("permission to access the File")));
        let later = now() + FILE_TTL;
        assert_eq!(p.get_file(A, &id, later).status, 403, "expired");
        let prompt = json!({"contents": [{"parts": [{"fileData": {"fileUri": format!("{FILE_URI_BASE}{id}")}}]}]});
        assert!(p.refused_files(A, &prompt, now()).is_none());
        assert_eq!(p.refused_files(B, &prompt, now()).map(|a| a.status), Some(403));
        assert_eq!(p.delete_file(B, &id, now()).status, 403);
        assert_eq!(p.delete_file(A, &id, now()).status, 200);
        assert_eq!(p.get_file(A, &id, now()).status, 403);
    }

    #[test]
    fn chunks_must_come_in_order_and_add_up() {
        let mut p = Projects::default();
        let empty = json!({});
        let plain = Start { declared: Some(10), mime: None, body: &empty, origin: "http://h", key_in_query: false };
        let start = p.start_upload(A, &plain, now());
        let url = &start.headers[1].1;
        assert!(!url.contains("key="), "no key in the URL when it came in a header: {url}");
        let id = url.split("upload_id=").nth(1).and_then(|r| r.split('&').next()).expect("id").to_owned();
        assert_eq!(p.chunk(&id, "upload", Some(4), 4, now()).status, 400, "a gap");
        assert_eq!(p.chunk(&id, "upload", Some(0), 4, now()).status, 200);
        assert_eq!(p.chunk(&id, "query", None, 0, now()).headers[1].1, "4");
        assert_eq!(p.chunk(&id, "upload, finalize", Some(4), 4, now()).status, 400, "short of the declared size");
        assert_eq!(p.chunk("AUnone", "upload", Some(0), 1, now()).status, 404);
        assert_eq!(p.start_upload(A, &Start { declared: None, ..plain }, now()).status, 400);
    }

    #[test]
    fn listing_pages_through_a_projects_files_only() {
        let mut p = Projects::default();
        for _ in 0..5 {
            upload(&mut p, A, 2);
        }
        upload(&mut p, B, 2);
        let first = p.list_files(A, Some(2), None, now());
        assert_eq!(first.body["files"].as_array().map(Vec::len), Some(2));
        let mut seen = 2;
        let mut token = first.body["nextPageToken"].as_str().map(str::to_owned);
        while let Some(t) = token {
            let page = p.list_files(A, Some(2), Some(&t), now());
            seen += page.body["files"].as_array().map_or(0, Vec::len);
            token = page.body["nextPageToken"].as_str().map(str::to_owned);
        }
        assert_eq!(seen, 5);
        assert_eq!(p.list_files(B, None, None, now()).body["files"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn caches_belong_to_their_project_and_expire() {
        let mut p = Projects::default();
        let made = p.create_cache(A, &json!({"model": "models/gemini-2.5-flash", "ttl": "60s"}), now());
        let name = made.body["name"].as_str().expect("name").to_owned();
        assert!(name.starts_with("cachedContents/"));
        assert_eq!(p.get_cache(A, &name, now()).status, 200);
        assert_eq!(p.get_cache(B, &name, now()).status, 403);
        assert_eq!(p.get_cache(A, &name, now() + Duration::from_secs(60)).status, 403);
        let prompt = json!({"cachedContent": name, "contents": []});
        assert!(p.refused_files(A, &prompt, now()).is_none());
        assert_eq!(p.refused_files(B, &prompt, now()).map(|a| a.status), Some(403));
    }

    #[test]
    fn batches_belong_to_their_project_and_answer_every_request() {
        let mut p = Projects::default();
        let body = json!({"batch": {"inputConfig": {"requests": {"requests": [{"request": {}}, {"request": {}}]}}}});
        let made = p.create_batch(A, "gemini-2.5-flash", &body, now());
        assert_eq!((made.status, &made.body["metadata"]["state"]), (200, &json!("BATCH_STATE_PENDING")));
        let name = made.body["name"].as_str().expect("name").to_owned();
        assert!(name.starts_with("batches/"), "{name}");
        let got = p.batch_call(A, &name, "get", now());
        assert_eq!(got.body["metadata"]["state"], "BATCH_STATE_SUCCEEDED");
        assert_eq!(
            got.body
                .pointer("/metadata/output/inlinedResponses/inlinedResponses")
                .and_then(Value::as_array)
                .map(Vec::len),
            Some(2)
        );
        assert_eq!(p.batch_call(B, &name, "get", now()).status, 403);
        assert_eq!(p.batch_call(A, &name, "get", now() + JOB_TTL).status, 403, "expired");
        assert_eq!(p.batch_call(A, &name, "cancel", now()).status, 200);
        assert_eq!(p.batch_call(A, &name, "get", now()).body["metadata"]["state"], "BATCH_STATE_CANCELLED");
        assert_eq!(p.create_batch(A, "m", &json!({}), now()).status, 400);
    }

    #[test]
    fn interactions_follow_up_only_in_their_project_and_stream_their_id_first() {
        let mut p = Projects::default();
        let Ok(Made::Whole(first)) =
            p.create_interaction(A, &json!({"model": "gemini-2.5-flash", "input": "hi"}), now())
        else {
            panic!("a whole interaction")
        };
        let id = first["id"].as_str().expect("id").to_owned();
        assert_eq!(first["steps"][0]["content"][0]["text"], "Hello from the fake gemini-2.5-flash.");
        let follow =
            json!({"model": "gemini-2.5-flash", "input": "more", "previous_interaction_id": id, "stream": true});
        assert_eq!(p.create_interaction(B, &follow, now()).err().map(|a| a.status), Some(403));
        let Ok(Made::Events(events)) = p.create_interaction(A, &follow, now()) else { panic!("a stream") };
        assert!(events[0].starts_with("event: interaction.created\n") && events[0].ends_with("\n\n"), "{events:?}");
        let data: Value = serde_json::from_str(events[0].split("data: ").nth(1).expect("data").trim()).expect("json");
        let second = data["interaction"]["id"].as_str().expect("the id in the first event").to_owned();
        assert_ne!(second, id);
        assert_eq!(p.interaction_call(A, &second, false, now()).body["previous_interaction_id"], json!(id));
        assert_eq!(p.interaction_call(B, &id, false, now()).status, 403);
        assert_eq!(p.interaction_call(A, &id, true, now()).status, 200);
        assert_eq!(p.interaction_call(A, &id, false, now()).status, 403, "deleted");
    }

    #[test]
    fn times_are_written_as_google_writes_them() {
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_micros(1_800_000_000_123_456)), "2027-01-15T08:00:00.123456Z");
    }
}
