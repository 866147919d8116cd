//! Routing and dialect detection: what a request asks for, and where it goes.

use crate::config::aliases::Aliases;
use crate::request::auth::{Credentials, strip_key_param};
use crate::wire::error::ProxyError;
use crate::wire::http::Dialect;
use crate::wire::http::Method;
use crate::wire::keystore::NO_MODEL;
use crate::wire::secret::KeyId;
use matchit::Router;
use std::sync::OnceLock;

/// Pseudo-model of an OpenAI-style batch's creation: its models are named
/// inside the file it runs, which the proxy does not read, so a client kept
/// to some models may not create one (it is not in [`OPEN_PSEUDO_MODELS`](crate::wire::keystore::OPEN_PSEUDO_MODELS)).
pub const OPENAI_BATCH: &str = "(OpenAI-style batch, whose models the proxy cannot see)";

/// The largest request body the proxy reads (an upload's is piped).
pub const MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;

/// The largest upload body accepted: Google takes files of up to 2 GB,
/// and a multipart upload adds its metadata to that.
pub const MAX_UPLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024 + 1024 * 1024;

/// An upload body declared longer than this is piped upstream as it
/// arrives, to one key and without a retry on another, rather than read
/// first: an upload is never held whole in memory. A shorter one (an
/// upload's start, a small file) is read, so that it can be retried.
pub const PIPED_UPLOAD_ABOVE: u64 = 1024 * 1024;

/// What a forwarded request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `GET models` (either API).
    ListModels,
    /// `GET models/{model}` (either API).
    GetModel,
    /// Gemini `:generateContent`.
    GenerateContent,
    /// Gemini `:streamGenerateContent` (JSON array, or SSE with `alt=sse`).
    StreamGenerateContent,
    /// Gemini `:countTokens`.
    CountTokens,
    /// Gemini `:embedContent`.
    EmbedContent,
    /// Gemini `:batchEmbedContents`.
    BatchEmbedContents,
    /// Gemini `:predict` (Imagen).
    Predict,
    /// OpenAI `chat/completions`.
    ChatCompletions,
    /// OpenAI `embeddings`.
    Embeddings,
    /// OpenAI `images/generations`.
    ImagesGenerations,
    /// Any other Gemini call (files, uploads, cached contents, batches,
    /// operations, interactions, and whatever Google ships next), or an
    /// OpenAI-style `files` / `batches` call: relayed as it is, with the
    /// request's own method.
    Resource,
}

impl Op {
    /// Whether the call runs the model it names (its name may be an alias).
    pub fn runs_a_model(self) -> bool {
        !matches!(self, Self::ListModels | Self::GetModel | Self::Resource)
    }

    /// The HTTP method the operation takes (a [`Op::Resource`] call takes
    /// the request's own).
    pub fn method(self) -> Method {
        match self {
            Op::ListModels | Op::GetModel => Method::Get,
            _ => Method::Post,
        }
    }

    fn gemini_action(action: &str) -> Option<Op> {
        Some(match action {
            "generateContent" => Op::GenerateContent,
            "streamGenerateContent" => Op::StreamGenerateContent,
            "countTokens" => Op::CountTokens,
            "embedContent" => Op::EmbedContent,
            "batchEmbedContents" => Op::BatchEmbedContents,
            "predict" => Op::Predict,
            _ => return None,
        })
    }
}

/// A request to relay upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The API, and so the upstream base and the credential header.
    pub dialect: Dialect,
    /// What it does.
    pub op: Op,
    /// The method to send upstream.
    pub method: Method,
    /// The model it uses; `None` until the body is read for OpenAI posts.
    pub model: Option<String>,
    /// Path below the upstream base, starting with `/`.
    pub upstream_path: String,
    /// Whether the path goes below Google's `/upload` prefix (media
    /// uploads: `/upload/v1beta/files`).
    pub upload: bool,
    /// The API version a resource call asked for, sent upstream in place
    /// of the upstream base's (an API may exist in `v1alpha` only); `None`:
    /// the base's.
    pub version: Option<String>,
    /// Query to send upstream (no `key`), without the `?`.
    pub upstream_query: String,
    /// Whether the client asked for a stream.
    pub streaming: bool,
    /// The API the client speaks when Google does not offer it: its
    /// request is translated onto Gemini (`translate`), and it is answered
    /// in its own API's shape.
    pub foreign: Option<Foreign>,
    /// The model the client asked for, when an alias sent another
    /// ([`Self::alias`]): the answer names it back.
    pub asked: Option<String>,
}

/// An API Google does not offer, served from Gemini.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foreign {
    /// Anthropic's `POST /v1/messages`.
    Messages,
    /// Anthropic's `POST /v1/messages/count_tokens`.
    MessagesCountTokens,
    /// OpenAI's `POST /v1/responses`.
    Responses,
}

impl Foreign {
    /// The dialect its answers and errors speak.
    pub fn dialect(self) -> Dialect {
        match self {
            Self::Messages | Self::MessagesCountTokens => Dialect::Anthropic,
            Self::Responses => Dialect::OpenAi,
        }
    }
}

impl Forward {
    /// The dialect the client speaks (and is answered in).
    pub fn client_dialect(&self) -> Dialect {
        self.foreign.map_or(self.dialect, Foreign::dialect)
    }

    /// The model for key choice and statistics.
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or(NO_MODEL)
    }

    /// Inspects the (complete) request body: an OpenAI body must be a JSON
    /// object naming a model; a Gemini body is relayed as it is.
    pub fn bind_body(&mut self, body: &[u8]) -> Result<(), ProxyError> {
        if self.op == Op::Resource {
            return self.bind_resource_body(body);
        }
        if self.dialect != Dialect::OpenAi || self.op.method() != Method::Post {
            return Ok(());
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ProxyError::BadRequest(format!("request body is not valid JSON: {e}")))?;
        let obj =
            value.as_object().ok_or_else(|| ProxyError::BadRequest("request body must be a JSON object".into()))?;
        if top_level_models(body) > 1 {
            return Err(duplicate_model());
        }
        let model = match obj.get("model") {
            Some(serde_json::Value::String(m)) => {
                normalize_model(m).ok_or_else(|| ProxyError::BadRequest(format!("invalid model name {m:?}")))?
            }
            Some(_) => return Err(ProxyError::BadRequest("`model` must be a string".into())),
            None => return Err(ProxyError::BadRequest("`model` is required, e.g. \"gemini-2.5-flash\"".into())),
        };
        self.model = Some(model);
        self.streaming = obj.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
        Ok(())
    }

    /// Whether the call names a model the aliases may map: a translated
    /// one, or a native or OpenAI-style call that runs a model.
    pub fn aliasable(&self) -> bool {
        self.foreign.is_some() || (!self.upload && self.op.runs_a_model())
    }

    /// Applies the model aliases to a native or OpenAI-style call: a model
    /// an alias names is sent upstream (in the path, or the body's
    /// `model`) and counted as the Gemini model it stands for. Call after
    /// [`Self::bind_body`].
    pub fn alias(&mut self, aliases: &Aliases, body: &mut Vec<u8>) {
        let Some(asked) = self.model.as_deref() else { return };
        let Some(target) = aliases.resolve(asked).and_then(normalize_model) else { return };
        match (self.dialect, self.op) {
            (Dialect::Gemini, op) if op.runs_a_model() => {
                let from = format!("/models/{asked}:");
                let Some(rest) = self.upstream_path.strip_prefix(&from) else { return };
                self.upstream_path = format!("/models/{target}:{rest}");
            }
            (Dialect::OpenAi, op) if op.runs_a_model() => {
                let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else { return };
                value["model"] = serde_json::Value::String(target.clone());
                *body = value.to_string().into_bytes();
            }
            _ => return,
        }
        let asked = self.model.replace(target);
        self.asked = asked.filter(|a| Some(a) != self.model.as_ref());
    }

    /// A resource call's body is relayed as it is, whatever it holds; a
    /// JSON object naming a `model` (an interaction, a batch) is counted
    /// under that model. Only the top level is read: nested values are
    /// skipped, never built.
    fn bind_resource_body(&mut self, body: &[u8]) -> Result<(), ProxyError> {
        #[derive(serde::Deserialize)]
        struct Top {
            model: Option<serde_json::Value>,
            stream: Option<serde_json::Value>,
        }
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Ok(());
        }
        // Two `model` members: one for the proxy's check, one for Google?
        if top_level_models(body) > 1 {
            return Err(duplicate_model());
        }
        let Ok(top) = serde_json::from_slice::<Top>(body) else { return Ok(()) };
        if let Some(model) = top.model.as_ref().and_then(|m| m.as_str()).and_then(normalize_model) {
            self.model = Some(model);
        }
        self.streaming = top.stream.and_then(|s| s.as_bool()).unwrap_or(false);
        Ok(())
    }
}

fn duplicate_model() -> ProxyError {
    ProxyError::BadRequest("the request body names `model` more than once".into())
}

/// How many `model` members a JSON object's top level has (0 for anything
/// else). Values are skipped, never built.
fn top_level_models(body: &[u8]) -> usize {
    struct Count;
    impl<'de> serde::de::Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                n += usize::from(key == "model");
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok(n)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde::Deserializer::deserialize_map(&mut de, Count).unwrap_or(0)
}

/// Where a request goes: an API request to relay, or one of the proxy's
/// own `/stat` or `/admin` routes (which never reach the API's checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Relay upstream.
    Api(Forward),
    /// A `/stat` route.
    Stat(StatRoute),
    /// An `/admin` route.
    Admin(crate::request::route::AdminRoute),
}

/// The proxy's own routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatRoute {
    /// `GET /stat.json`.
    Json,
    /// `GET /stat`.
    Page,
    /// `POST /stat/reset`.
    Reset,
    /// `POST /stat/login` (the page's login form).
    Login,
    /// `GET /metrics` (Prometheus).
    Metrics,
}

#[derive(Clone, Copy)]
enum Pattern {
    GeminiModels,
    GeminiModel,
    GoogleOpenAi,
    OpenAiChat,
    OpenAiEmbeddings,
    OpenAiImages,
    Messages,
    MessagesCountTokens,
    Responses,
    ResponsesBelow,
    OpenAiModels,
    OpenAiModel,
    StatsJson,
    StatsReset,
    StatsPage,
    StatsLogin,
    Metrics,
    AdminKeys,
    AdminCheck,
    AdminKey,
    AdminKeyDisable,
    AdminKeyEnable,
    AdminClients,
    AdminClient,
    AdminAliases,
    AdminRequests,
    AdminProxies,
}

fn router() -> &'static Router<Pattern> {
    static ROUTER: OnceLock<Router<Pattern>> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let mut r = Router::new();
        let routes: &[(&str, Pattern)] = &[
            ("/{version}/models", Pattern::GeminiModels),
            ("/{version}/models/{target}", Pattern::GeminiModel),
            ("/{version}/openai/{*rest}", Pattern::GoogleOpenAi),
            ("/v1/chat/completions", Pattern::OpenAiChat),
            ("/chat/completions", Pattern::OpenAiChat),
            ("/v1/embeddings", Pattern::OpenAiEmbeddings),
            ("/embeddings", Pattern::OpenAiEmbeddings),
            ("/v1/images/generations", Pattern::OpenAiImages),
            ("/images/generations", Pattern::OpenAiImages),
            ("/v1/messages", Pattern::Messages),
            ("/messages", Pattern::Messages),
            ("/v1/messages/count_tokens", Pattern::MessagesCountTokens),
            ("/messages/count_tokens", Pattern::MessagesCountTokens),
            ("/v1/responses", Pattern::Responses),
            ("/responses", Pattern::Responses),
            ("/v1/responses/{*rest}", Pattern::ResponsesBelow),
            ("/responses/{*rest}", Pattern::ResponsesBelow),
            ("/models", Pattern::OpenAiModels),
            ("/models/{target}", Pattern::OpenAiModel),
            ("/stat.json", Pattern::StatsJson),
            ("/stat/reset", Pattern::StatsReset),
            ("/stat", Pattern::StatsPage),
            ("/stat/login", Pattern::StatsLogin),
            ("/metrics", Pattern::Metrics),
            ("/admin/keys", Pattern::AdminKeys),
            ("/admin/keys/check", Pattern::AdminCheck),
            ("/admin/keys/{id}", Pattern::AdminKey),
            ("/admin/keys/{id}/disable", Pattern::AdminKeyDisable),
            ("/admin/keys/{id}/enable", Pattern::AdminKeyEnable),
            ("/admin/clients", Pattern::AdminClients),
            ("/admin/clients/{id}", Pattern::AdminClient),
            ("/admin/aliases", Pattern::AdminAliases),
            ("/admin/requests", Pattern::AdminRequests),
            ("/admin/proxies", Pattern::AdminProxies),
        ];
        for (path, pattern) in routes {
            if r.insert(*path, *pattern).is_err() {
                unreachable!("route table conflict at {path}");
            }
        }
        r
    })
}

/// A model name as it may appear in a path or body, `models/` prefix
/// stripped; `None` when it has characters no model name has.
pub fn normalize_model(raw: &str) -> Option<String> {
    let m = raw.strip_prefix("models/").unwrap_or(raw);
    let ok = !m.is_empty()
        && m.len() <= 128
        && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._@".contains(&b))
        && !m.starts_with('.');
    ok.then(|| m.to_owned())
}

pub(crate) fn is_version(v: &str) -> bool {
    matches!(v, "v1" | "v1beta" | "v1alpha")
}

/// Rejects paths that could climb out of the upstream base or smuggle a
/// separator past the router.
fn path_is_safe(path: &str) -> bool {
    if !path.starts_with('/') || path.contains('\\') || path.contains("//") {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if ["%5c", "%2e", "%00", "%3f", "%23"].iter().any(|bad| lower.contains(bad)) {
        return false;
    }
    // `%2F` only in the id of an OpenAI-style file or batch, which is a
    // Google name (`/v1/batches/batches%2Fabc`, as the openai SDK escapes
    // it), and only where the path read with it unescaped is as safe.
    let decoded = crate::google::names::unescape_slashes(&lower);
    if decoded.len() != lower.len() {
        let openai_id = OPENAI_ID_PREFIXES.iter().any(|p| lower.starts_with(p) && !lower[p.len()..].starts_with("%2f"));
        if !openai_id || decoded.contains("//") || decoded.contains('%') {
            return false;
        }
    }
    !decoded.split('/').any(|seg| seg == "." || seg == "..")
}

/// Where a path may hold `%2F`: in the id after these.
const OPENAI_ID_PREFIXES: &[&str] =
    &["/files/", "/batches/", "/v1/files/", "/v1/batches/", "/v1beta/openai/files/", "/v1beta/openai/batches/"];

/// Routes a request. `path` is the raw request path (no query), `query`
/// the raw query (no `?`).
pub fn route(method: &Method, path: &str, query: &str, creds: &Credentials) -> Result<Route, ProxyError> {
    let not_found = || ProxyError::NotFound { method: method.to_string(), path: path.to_owned() };
    if !path_is_safe(path) {
        return Err(not_found());
    }
    let trimmed = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let Ok(m) = router().at(trimmed) else { return route_resource(method, trimmed, query, creds) };
    let allow = |allowed: Method| {
        if *method == allowed {
            Ok(())
        } else {
            Err(ProxyError::MethodNotAllowed { method: method.to_string(), allowed })
        }
    };
    let forward = |dialect, op: Op, model: Option<String>, upstream_path: String| -> Result<Route, ProxyError> {
        allow(op.method())?;
        let streaming = op == Op::StreamGenerateContent;
        let upstream_query = strip_key_param(query);
        let method = op.method();
        let (upload, version) = (false, None);
        Ok(Route::Api(Forward {
            dialect,
            op,
            method,
            model,
            upstream_path,
            upload,
            version,
            upstream_query,
            streaming,
            foreign: None,
            asked: None,
        }))
    };
    let stat = |route: StatRoute, allowed: Method| allow(allowed).map(|()| Route::Stat(route));
    match *m.value {
        Pattern::GeminiModels | Pattern::GeminiModel => {
            let version = m.params.get("version").unwrap_or_default();
            if !is_version(version) {
                return Err(not_found());
            }
            let target = m.params.get("target");
            // `/v1/models` and `/v1/models/{id}` are shared with OpenAI
            // clients: the credential decides. google-genai sends
            // `x-goog-api-key`, the openai SDK `Authorization: Bearer`.
            let openai_models = version == "v1" && !creds.is_gemini_style();
            match target {
                None if openai_models => forward(Dialect::OpenAi, Op::ListModels, None, "/models".into()),
                None => forward(Dialect::Gemini, Op::ListModels, None, "/models".into()),
                Some(t) => match t.split_once(':') {
                    Some((model, action)) => {
                        let Some(op) = Op::gemini_action(action) else {
                            // An action with no route of its own
                            // (`:predictLongRunning`, `:batchGenerateContent`, …).
                            return route_resource(method, trimmed, query, creds);
                        };
                        let model = normalize_model(model).ok_or_else(not_found)?;
                        let path = format!("/models/{model}:{action}");
                        forward(Dialect::Gemini, op, Some(model), path)
                    }
                    None => {
                        let model = normalize_model(t).ok_or_else(not_found)?;
                        let path = format!("/models/{model}");
                        let dialect = if openai_models { Dialect::OpenAi } else { Dialect::Gemini };
                        forward(dialect, Op::GetModel, Some(model), path)
                    }
                },
            }
        }
        Pattern::GoogleOpenAi => {
            let version = m.params.get("version").unwrap_or_default();
            if !is_version(version) {
                return Err(not_found());
            }
            let rest = m.params.get("rest").unwrap_or_default();
            route_openai(method, &format!("/{rest}"), query, creds).map_err(|e| match e {
                ProxyError::NotFound { .. } => not_found(),
                other => other,
            })
        }
        Pattern::OpenAiChat => forward(Dialect::OpenAi, Op::ChatCompletions, None, "/chat/completions".into()),
        Pattern::OpenAiEmbeddings => forward(Dialect::OpenAi, Op::Embeddings, None, "/embeddings".into()),
        Pattern::OpenAiImages => forward(Dialect::OpenAi, Op::ImagesGenerations, None, "/images/generations".into()),
        // The proxy keeps no responses: nothing to retrieve, cancel,
        // compact or list the items of (and Google has none either).
        Pattern::ResponsesBelow => Err(ProxyError::NotOffered(format!(
            "{method} {path} is not served: the proxy keeps no responses, so it has none to retrieve, cancel, compact or list; POST /v1/responses with the whole conversation in `input`"
        ))),
        Pattern::Messages | Pattern::MessagesCountTokens | Pattern::Responses => {
            let (op, foreign) = match *m.value {
                Pattern::Messages => (Op::GenerateContent, Foreign::Messages),
                Pattern::Responses => (Op::GenerateContent, Foreign::Responses),
                _ => (Op::CountTokens, Foreign::MessagesCountTokens),
            };
            allow(Method::Post)?;
            // The path is Gemini's once the body names the model; the
            // query (`?beta=true`) is Anthropic's, not Google's.
            Ok(Route::Api(Forward {
                dialect: Dialect::Gemini,
                op,
                method: Method::Post,
                model: None,
                upstream_path: String::new(),
                upload: false,
                version: None,
                upstream_query: String::new(),
                streaming: false,
                foreign: Some(foreign),
                asked: None,
            }))
        }
        Pattern::OpenAiModels => forward(Dialect::OpenAi, Op::ListModels, None, "/models".into()),
        Pattern::OpenAiModel => {
            let model = m.params.get("target").and_then(normalize_model).ok_or_else(not_found)?;
            let path = format!("/models/{model}");
            forward(Dialect::OpenAi, Op::GetModel, Some(model), path)
        }
        Pattern::StatsJson => stat(StatRoute::Json, Method::Get),
        Pattern::StatsReset => stat(StatRoute::Reset, Method::Post),
        Pattern::StatsPage => stat(StatRoute::Page, Method::Get),
        Pattern::StatsLogin => stat(StatRoute::Login, Method::Post),
        Pattern::Metrics => stat(StatRoute::Metrics, Method::Get),
        Pattern::AdminKeys
        | Pattern::AdminCheck
        | Pattern::AdminKey
        | Pattern::AdminKeyDisable
        | Pattern::AdminKeyEnable
        | Pattern::AdminClients
        | Pattern::AdminClient
        | Pattern::AdminAliases
        | Pattern::AdminRequests
        | Pattern::AdminProxies => {
            use crate::request::route::AdminRoute as A;
            let id = || crate::wire::secret::KeyId::from_string(m.params.get("id").unwrap_or_default());
            let pick = |routes: &[(Method, A)], allowed: &str| {
                routes.iter().find(|(want, _)| want == method).map(|(_, r)| Route::Admin(r.clone())).ok_or_else(|| {
                    ProxyError::MethodNotAllowed {
                        method: method.to_string(),
                        allowed: Method::Other(allowed.to_owned()),
                    }
                })
            };
            match *m.value {
                Pattern::AdminKeys => pick(&[(Method::Get, A::List), (Method::Post, A::Add)], "GET, POST"),
                Pattern::AdminCheck => pick(&[(Method::Post, A::Check)], "POST"),
                Pattern::AdminKey => {
                    pick(&[(Method::Delete, A::Remove(id())), (Method::Patch, A::Label(id()))], "DELETE, PATCH")
                }
                Pattern::AdminKeyDisable => pick(&[(Method::Post, A::Disable(id()))], "POST"),
                Pattern::AdminClients => {
                    pick(&[(Method::Get, A::ClientList), (Method::Post, A::ClientCreate)], "GET, POST")
                }
                Pattern::AdminAliases => pick(&[(Method::Get, A::Aliases), (Method::Put, A::AliasesSet)], "GET, PUT"),
                Pattern::AdminRequests => pick(&[(Method::Get, A::Requests(query.to_owned()))], "GET"),
                Pattern::AdminProxies => pick(&[(Method::Get, A::Proxies), (Method::Put, A::ProxySet)], "GET, PUT"),
                Pattern::AdminClient => {
                    let id = || m.params.get("id").unwrap_or_default().to_owned();
                    pick(
                        &[(Method::Patch, A::ClientUpdate(id())), (Method::Delete, A::ClientRevoke(id()))],
                        "PATCH, DELETE",
                    )
                }
                _ => pick(&[(Method::Post, A::Enable(id()))], "POST"),
            }
        }
    }
}

/// Collections of the Gemini API with no route of their own: a call to one
/// that names no model is counted under `({collection})`, a call to any
/// other well-formed path under [`OTHER_RESOURCE`].
const COLLECTIONS: &[&str] = &[
    "files",
    "cachedContents",
    "batches",
    "operations",
    "interactions",
    "fileSearchStores",
    "tunedModels",
    "corpora",
    "generatedFiles",
];

/// Pseudo-model of a call to a path outside [`COLLECTIONS`] that names no model.
pub const OTHER_RESOURCE: &str = "(other)";

/// The collections of the OpenAI-style API relayed as they are.
const OPENAI_COLLECTIONS: &[&str] = &["files", "batches"];

/// The longest resource path relayed, and the most segments in it.
const MAX_RESOURCE_PATH: usize = 1024;
const MAX_RESOURCE_SEGMENTS: usize = 10;

/// A path segment of a resource call: a name or id, maybe with an
/// `:action`. The one escape taken is `%2F`: the OpenAI SDK escapes the
/// `/` of an id that is a Google name (`/batches/batches%2Fabc`).
fn resource_segment_ok(seg: &str) -> bool {
    let unescaped = crate::google::names::unescape_slashes(seg);
    !seg.is_empty()
        && seg.len() <= 256
        && unescaped.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:@=/".contains(&b))
        && !unescaped.split('/').any(|part| part.is_empty() || part == "." || part == "..")
}

/// Routes a path no route of the table took: a well-formed Gemini path
/// (`/{version}/{collection}[/…]`, or below `/upload`) is relayed as it is,
/// so that an API Google ships tomorrow works today; so are the OpenAI-style
/// `files` and `batches` calls. Any other path is a 404.
fn route_resource(method: &Method, path: &str, query: &str, creds: &Credentials) -> Result<Route, ProxyError> {
    let not_found = || ProxyError::NotFound { method: method.to_string(), path: path.to_owned() };
    // Anthropic's other Messages calls (batches) are not served, nor
    // relayed to Google, which does not know them either.
    if is_messages_path(path) {
        return Err(not_found());
    }
    let (upload, rest) = match path.strip_prefix("/upload") {
        Some(rest) if rest.starts_with('/') => (true, rest),
        _ => (false, path),
    };
    if rest.len() > MAX_RESOURCE_PATH {
        return Err(not_found());
    }
    let segments: Vec<&str> = rest[1..].split('/').collect();
    if segments.len() > MAX_RESOURCE_SEGMENTS || !segments.iter().all(|s| resource_segment_ok(s)) {
        return Err(not_found());
    }
    let collection = |seg: &str| seg.split(':').next().unwrap_or_default().to_owned();
    // `/files…` and `/batches…` at the root are the OpenAI-style API's (a
    // base URL of the proxy's root). So is `/v1/…` for a caller that does
    // not speak Gemini (the credential decides, as for `/v1/models`): it
    // goes to Google's OpenAI-compatible endpoint, which answers what it
    // has and 404s the rest in the caller's format.
    let (dialect, below) = match segments.as_slice() {
        [first, ..] if !upload && OPENAI_COLLECTIONS.contains(&collection(first).as_str()) => {
            (Dialect::OpenAi, &segments[..])
        }
        [version, _, ..] if is_version(version) => {
            let openai = *version == "v1" && !upload && !creds.is_gemini_style();
            (if openai { Dialect::OpenAi } else { Dialect::Gemini }, &segments[1..])
        }
        _ => return Err(not_found()),
    };
    // `%2F` only in the id of an OpenAI-style file or batch.
    let escaped = |(i, seg): (usize, &&str)| {
        crate::google::names::unescape_slashes(seg).len() != seg.len() && (dialect, i) != (Dialect::OpenAi, 1)
    };
    if below.iter().enumerate().any(escaped) {
        return Err(not_found());
    }
    let name = collection(below[0]);
    let well_formed =
        // (`auth_tokens`, the ephemeral tokens of the Live API, has an underscore.)
        name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !well_formed {
        return Err(not_found());
    }
    if !matches!(method, Method::Get | Method::Post | Method::Put | Method::Patch | Method::Delete) {
        return Err(ProxyError::MethodNotAllowed {
            method: method.to_string(),
            allowed: Method::Other("GET, POST, PUT, PATCH, DELETE".to_owned()),
        });
    }
    let model = match below {
        [first, named, ..] if name == "models" || name == "tunedModels" => {
            let id = named.split(':').next().unwrap_or_default();
            let model = normalize_model(id).ok_or_else(not_found)?;
            if first.contains(':') {
                return Err(not_found());
            }
            model
        }
        // A fixed set of names, so that made-up paths cannot grow the
        // statistics.
        // An OpenAI-style batch names its models in its file.
        ["batches"] if dialect == Dialect::OpenAi && *method == Method::Post => OPENAI_BATCH.to_owned(),
        _ if COLLECTIONS.contains(&name.as_str()) => format!("({name})"),
        _ => OTHER_RESOURCE.to_owned(),
    };
    Ok(Route::Api(Forward {
        dialect,
        op: Op::Resource,
        method: method.clone(),
        model: Some(model),
        upstream_path: format!("/{}", below.join("/")),
        upload,
        version: (dialect == Dialect::Gemini).then(|| segments[0].to_owned()),
        upstream_query: strip_key_param(query),
        streaming: false,
        foreign: None,
        asked: None,
    }))
}

/// Routes the part of a `/v1beta/openai/…` path after `openai`: only the
/// OpenAI-style API lives there.
fn route_openai(method: &Method, rest: &str, query: &str, creds: &Credentials) -> Result<Route, ProxyError> {
    match route(method, rest, query, creds)? {
        Route::Api(f) if f.dialect == Dialect::OpenAi || f.foreign == Some(Foreign::Responses) => Ok(Route::Api(f)),
        Route::Api(mut f) if f.op == Op::ListModels || f.op == Op::GetModel => {
            f.dialect = Dialect::OpenAi;
            Ok(Route::Api(f))
        }
        _ => Err(ProxyError::NotFound { method: method.to_string(), path: rest.to_owned() }),
    }
}

/// Whether `path` is Anthropic's Messages API's, or below it.
fn is_messages_path(path: &str) -> bool {
    ["/v1/messages", "/messages"]
        .iter()
        .any(|p| path.strip_prefix(p).is_some_and(|r| r.is_empty() || r.starts_with('/')))
}

/// The dialect to answer in when routing itself failed.
pub fn fallback_dialect(path: &str, creds: &Credentials) -> Dialect {
    let anthropic_key = creds.x_api_key.is_some() && creds.bearer.is_none() && !creds.is_gemini_style();
    if is_messages_path(path) || anthropic_key {
        Dialect::Anthropic
    } else if path.starts_with("/v1beta") || creds.is_gemini_style() || (creds.bearer.is_none() && path.contains(':')) {
        Dialect::Gemini
    } else {
        Dialect::OpenAi
    }
}

/// A route of the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRoute {
    /// `GET /admin/keys`.
    List,
    /// `POST /admin/keys`.
    Add,
    /// `POST /admin/keys/check`.
    Check,
    /// `DELETE /admin/keys/{id}`.
    Remove(KeyId),
    /// `PATCH /admin/keys/{id}`.
    Label(KeyId),
    /// `POST /admin/keys/{id}/disable`.
    Disable(KeyId),
    /// `POST /admin/keys/{id}/enable`.
    Enable(KeyId),
    /// `GET /admin/clients`.
    ClientList,
    /// `POST /admin/clients`.
    ClientCreate,
    /// `PATCH /admin/clients/{id}`.
    ClientUpdate(String),
    /// `DELETE /admin/clients/{id}`.
    ClientRevoke(String),
    /// `GET /admin/aliases`.
    Aliases,
    /// `PUT /admin/aliases`.
    AliasesSet,
    /// `GET /admin/requests?…` (its query): the request log.
    Requests(String),
    /// `GET /admin/proxies`: the projects and their outbound proxies.
    Proxies,
    /// `PUT /admin/proxies`: a project's outbound proxy set or cleared.
    ProxySet,
}

impl AdminRoute {
    /// Whether the route takes a body.
    pub fn reads_body(&self) -> bool {
        !matches!(
            self,
            Self::List
                | Self::Remove(_)
                | Self::ClientList
                | Self::ClientRevoke(_)
                | Self::Aliases
                | Self::Requests(_)
                | Self::Proxies
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::http::Dialect;
    use crate::wire::keystore::NO_MODEL;
    use crate::wire::keystore::OPEN_PSEUDO_MODELS;

    fn bearer() -> Credentials {
        Credentials { bearer: Some("k".into()), ..Default::default() }
    }
    fn goog() -> Credentials {
        Credentials { goog_api_key: Some("k".into()), ..Default::default() }
    }
    fn route(method: &str, path: &str, query: &str, c: &Credentials) -> Result<Route, ProxyError> {
        super::route(&Method::parse(method), path, query, c)
    }
    fn fwd(method: &str, path: &str, query: &str, c: &Credentials) -> Forward {
        match route(method, path, query, c).expect("routes") {
            Route::Api(f) => f,
            r => panic!("not a forward: {r:?}"),
        }
    }

    /// (method, path, query, creds, dialect, op, model, upstream path)
    type Case<'a> = (&'a str, &'a str, &'a str, Credentials, Dialect, Op, Option<&'a str>, &'a str);

    #[test]
    fn detection_table() {
        let none = Credentials::default();
        let cases: Vec<Case<'_>> = vec![
            (
                "POST",
                "/v1beta/models/gemini-2.5-flash:generateContent",
                "",
                goog(),
                Dialect::Gemini,
                Op::GenerateContent,
                Some("gemini-2.5-flash"),
                "/models/gemini-2.5-flash:generateContent",
            ),
            (
                "POST",
                "/v1/models/gemini-2.5-flash:streamGenerateContent",
                "alt=sse",
                goog(),
                Dialect::Gemini,
                Op::StreamGenerateContent,
                Some("gemini-2.5-flash"),
                "/models/gemini-2.5-flash:streamGenerateContent",
            ),
            (
                "POST",
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                "",
                none.clone(),
                Dialect::Gemini,
                Op::StreamGenerateContent,
                Some("gemini-2.5-flash"),
                "/models/gemini-2.5-flash:streamGenerateContent",
            ),
            (
                "POST",
                "/v1beta/models/gemini-2.5-flash:countTokens",
                "",
                goog(),
                Dialect::Gemini,
                Op::CountTokens,
                Some("gemini-2.5-flash"),
                "/models/gemini-2.5-flash:countTokens",
            ),
            (
                "POST",
                "/v1beta/models/text-embedding-004:embedContent",
                "",
                goog(),
                Dialect::Gemini,
                Op::EmbedContent,
                Some("text-embedding-004"),
                "/models/text-embedding-004:embedContent",
            ),
            (
                "POST",
                "/v1/models/gemini-embedding-001:batchEmbedContents",
                "",
                goog(),
                Dialect::Gemini,
                Op::BatchEmbedContents,
                Some("gemini-embedding-001"),
                "/models/gemini-embedding-001:batchEmbedContents",
            ),
            ("GET", "/v1beta/models", "", goog(), Dialect::Gemini, Op::ListModels, None, "/models"),
            (
                "GET",
                "/v1beta/models/gemini-2.5-pro",
                "",
                goog(),
                Dialect::Gemini,
                Op::GetModel,
                Some("gemini-2.5-pro"),
                "/models/gemini-2.5-pro",
            ),
            // The ambiguous /v1/models: credential decides.
            ("GET", "/v1/models", "", goog(), Dialect::Gemini, Op::ListModels, None, "/models"),
            (
                "GET",
                "/v1/models",
                "key=abc",
                Credentials { query_key: Some("abc".into()), ..Default::default() },
                Dialect::Gemini,
                Op::ListModels,
                None,
                "/models",
            ),
            ("GET", "/v1/models", "", bearer(), Dialect::OpenAi, Op::ListModels, None, "/models"),
            (
                "GET",
                "/v1/models/gemini-2.5-flash",
                "",
                bearer(),
                Dialect::OpenAi,
                Op::GetModel,
                Some("gemini-2.5-flash"),
                "/models/gemini-2.5-flash",
            ),
            (
                "GET",
                "/v1/models/gemini-2.5-flash",
                "",
                goog(),
                Dialect::Gemini,
                Op::GetModel,
                Some("gemini-2.5-flash"),
                "/models/gemini-2.5-flash",
            ),
            // OpenAI style, with and without /v1, and under Google's own /v1beta/openai.
            (
                "POST",
                "/v1/chat/completions",
                "",
                bearer(),
                Dialect::OpenAi,
                Op::ChatCompletions,
                None,
                "/chat/completions",
            ),
            (
                "POST",
                "/chat/completions",
                "",
                bearer(),
                Dialect::OpenAi,
                Op::ChatCompletions,
                None,
                "/chat/completions",
            ),
            ("POST", "/v1/embeddings", "", bearer(), Dialect::OpenAi, Op::Embeddings, None, "/embeddings"),
            ("POST", "/embeddings", "", bearer(), Dialect::OpenAi, Op::Embeddings, None, "/embeddings"),
            (
                "POST",
                "/v1/images/generations",
                "",
                bearer(),
                Dialect::OpenAi,
                Op::ImagesGenerations,
                None,
                "/images/generations",
            ),
            ("GET", "/models", "", bearer(), Dialect::OpenAi, Op::ListModels, None, "/models"),
            (
                "GET",
                "/models/gemini-2.5-flash",
                "",
                bearer(),
                Dialect::OpenAi,
                Op::GetModel,
                Some("gemini-2.5-flash"),
                "/models/gemini-2.5-flash",
            ),
            (
                "POST",
                "/v1beta/openai/chat/completions",
                "",
                bearer(),
                Dialect::OpenAi,
                Op::ChatCompletions,
                None,
                "/chat/completions",
            ),
            ("GET", "/v1beta/openai/models", "", bearer(), Dialect::OpenAi, Op::ListModels, None, "/models"),
        ];
        for (method, path, query, creds, dialect, op, model, up) in cases {
            let f = fwd(method, path, query, &creds);
            assert_eq!(
                (f.dialect, f.op, f.model.as_deref(), f.upstream_path.as_str()),
                (dialect, op, model, up),
                "{method} {path}?{query}"
            );
        }
    }

    #[test]
    fn other_gemini_paths_are_relayed_with_their_method() {
        // (method, path, creds, dialect, model, upstream path, upload)
        let cases: &[(&str, &str, Credentials, Dialect, &str, &str, bool)] = &[
            ("GET", "/v1beta/files", goog(), Dialect::Gemini, "(files)", "/files", false),
            ("DELETE", "/v1beta/files/abc-123", goog(), Dialect::Gemini, "(files)", "/files/abc-123", false),
            ("GET", "/v1beta/files/abc:download", goog(), Dialect::Gemini, "(files)", "/files/abc:download", false),
            ("POST", "/upload/v1beta/files", goog(), Dialect::Gemini, "(files)", "/files", true),
            ("PUT", "/upload/v1/files", Credentials::default(), Dialect::Gemini, "(files)", "/files", true),
            (
                "PATCH",
                "/v1beta/cachedContents/c1",
                goog(),
                Dialect::Gemini,
                "(cachedContents)",
                "/cachedContents/c1",
                false,
            ),
            ("POST", "/v1beta/batches/b1:cancel", goog(), Dialect::Gemini, "(batches)", "/batches/b1:cancel", false),
            ("POST", "/v1beta/interactions", goog(), Dialect::Gemini, "(interactions)", "/interactions", false),
            (
                "POST",
                "/v1beta/models/veo-3.0-generate-001:predictLongRunning",
                goog(),
                Dialect::Gemini,
                "veo-3.0-generate-001",
                "/models/veo-3.0-generate-001:predictLongRunning",
                false,
            ),
            (
                "GET",
                "/v1beta/models/veo-3.0-generate-001/operations/op9",
                goog(),
                Dialect::Gemini,
                "veo-3.0-generate-001",
                "/models/veo-3.0-generate-001/operations/op9",
                false,
            ),
            ("POST", "/v1alpha/somethingNew:run", goog(), Dialect::Gemini, OTHER_RESOURCE, "/somethingNew:run", false),
            ("POST", "/v1alpha/auth_tokens", goog(), Dialect::Gemini, OTHER_RESOURCE, "/auth_tokens", false),
            // OpenAI-style files and batches: at the root, under /v1 with a
            // bearer, and under Google's /v1beta/openai.
            ("GET", "/v1/files", bearer(), Dialect::OpenAi, "(files)", "/files", false),
            ("GET", "/v1/files", goog(), Dialect::Gemini, "(files)", "/files", false),
            ("POST", "/batches", bearer(), Dialect::OpenAi, OPENAI_BATCH, "/batches", false),
            ("GET", "/v1beta/openai/batches/b1", bearer(), Dialect::OpenAi, "(batches)", "/batches/b1", false),
            // The OpenAI SDK escapes the `/` of a Google name in a path.
            ("GET", "/v1/batches/batches%2Fb1", bearer(), Dialect::OpenAi, "(batches)", "/batches/batches%2Fb1", false),
            (
                "GET",
                "/v1/files/files%2ff1/content",
                bearer(),
                Dialect::OpenAi,
                "(files)",
                "/files/files%2ff1/content",
                false,
            ),
            ("POST", "/v1/assistants", bearer(), Dialect::OpenAi, OTHER_RESOURCE, "/assistants", false),
            ("POST", "/v1/assistants", goog(), Dialect::Gemini, OTHER_RESOURCE, "/assistants", false),
        ];
        for (method, path, creds, dialect, model, up, upload) in cases {
            let f = fwd(method, path, "key=secret&pageSize=2", creds);
            let got = (f.dialect, f.op, f.method.as_str(), f.model(), f.upstream_path.as_str(), f.upload);
            assert_eq!(got, (*dialect, Op::Resource, *method, *model, *up, *upload), "{method} {path}");
            assert_eq!(f.upstream_query, "pageSize=2", "{path}");
        }
        // Not Gemini's, or not well formed: still 404.
        for path in [
            "/v1beta",
            "/upload",
            "/upload/files",
            "/v2/files",
            "/wp-login.php",
            "/v1beta/Files",
            "/v1beta/9lives",
            "/v1beta/files/a b",
            "/v1beta/files/a%2e",
            "/v1/files/files%2F",
            "/v1/files/%2F..%2Fmodels",
            "/v1/files/a%2F%2Fb",
            "/v1/files/a%252Fb",
            "/v1beta/files/a$b",
            "/v1beta/models:list/x",
            "/v1beta/openai/interactions",
            "/v1beta/a/b/c/d/e/f/g/h/i/j/k",
        ] {
            let e = route("GET", path, "", &goog()).expect_err(path);
            assert_eq!(e.status(), 404, "{path}");
        }
        // `%2F` is taken in an OpenAI-style id only: not from a Gemini
        // caller, not in another segment.
        for path in ["/v1/files/files%2Fabc", "/v1beta/files/a%2Fb"] {
            assert_eq!(route("GET", path, "", &goog()).expect_err(path).status(), 404, "{path}");
        }
        for path in ["/v1/batches/b1/x%2Fy", "/v1/files%2Fx"] {
            assert_eq!(route("GET", path, "", &bearer()).expect_err(path).status(), 404, "{path}");
        }
        assert_eq!(route("HEAD", "/v1beta/files", "", &goog()).expect_err("405").status(), 405);
    }

    #[test]
    fn resource_bodies_name_their_model() {
        let mut f = fwd("POST", "/v1beta/interactions", "", &goog());
        f.bind_body(br#" {"input":{"deep":[1,{"model":"x"}]},"model":"models/gemini-2.5-flash","stream":true}"#)
            .expect("ok");
        assert_eq!((f.model(), f.streaming), ("gemini-2.5-flash", true));
        for relayed in [&b"--boundary\r\nmultipart"[..], b"[1,2]", b"{broken", br#"{"model":"a/b"}"#, b""] {
            let mut f = fwd("POST", "/v1beta/interactions", "", &goog());
            f.bind_body(relayed).expect("a resource body is relayed as it is");
            assert_eq!((f.model(), f.streaming), ("(interactions)", false));
        }
    }

    #[test]
    fn query_kept_except_key() {
        let f = fwd("POST", "/v1beta/models/m:streamGenerateContent", "key=secret&alt=sse", &Credentials::default());
        assert_eq!(f.upstream_query, "alt=sse");
        assert!(f.streaming);
    }

    #[test]
    fn unknown_and_unsafe_paths_are_404() {
        let c = goog();
        for path in [
            "/",
            "/v2/models",
            "/v1beta/models/../../evil:generateContent",
            "/v1beta/models/..%2F..%2Fevil:generateContent",
            "/v1beta/models/x%2fy:generateContent",
            "/v1beta/models/%2e%2e:generateContent",
            "//evil.example/v1beta/models",
            "/v1beta/models/a\\b:generateContent",
            "/v1beta/openai/../../x",
            "/v1beta/openai/unknown",
            "http://evil.example/v1beta/models",
        ] {
            let e = route("POST", path, "", &c).expect_err(path);
            assert!(matches!(e, ProxyError::NotFound { .. } | ProxyError::MethodNotAllowed { .. }), "{path}: {e:?}");
            if path != "/v1beta/models" {
                assert_eq!(e.status(), 404, "{path}");
            }
        }
    }

    #[test]
    fn wrong_method_is_405() {
        let e = route("GET", "/v1beta/models/m:generateContent", "", &goog()).expect_err("405");
        assert_eq!(e.status(), 405);
        let e = route("POST", "/v1/models", "", &bearer()).expect_err("405");
        assert_eq!(e.status(), 405);
        let e = route("GET", "/stat/reset", "", &bearer()).expect_err("405");
        assert_eq!(e.status(), 405);
        assert_eq!(route("GET", "/stat.json", "", &bearer()).expect("ok"), Route::Stat(StatRoute::Json));
    }

    #[test]
    fn openai_body_binding() {
        let mut f = fwd("POST", "/v1/chat/completions", "", &bearer());
        assert_eq!(f.model, None);
        f.bind_body(br#"{"model":"models/gemini-2.5-flash","stream":true,"messages":[]}"#).expect("ok");
        assert_eq!(f.model(), "gemini-2.5-flash");
        assert!(f.streaming);
        for bad in [&b"{not json"[..], b"[1]", br#"{"messages":[]}"#, br#"{"model":5}"#, br#"{"model":"a/b"}"#] {
            let mut f = fwd("POST", "/v1/chat/completions", "", &bearer());
            let e = f.bind_body(bad).expect_err("bad body");
            assert_eq!(e.status(), 400);
        }
        let mut g = fwd("POST", "/v1beta/models/m:generateContent", "", &goog());
        g.bind_body(b"not json is relayed as is").expect("gemini bodies are not parsed");
        assert_eq!(fwd("GET", "/v1beta/models", "", &goog()).model(), NO_MODEL);
    }

    #[test]
    fn what_a_model_limited_client_could_slip_past_names_a_model() {
        let none = Credentials::default();
        let batch = fwd("POST", "/v1/batches", "", &none);
        assert_eq!(batch.model(), OPENAI_BATCH);
        assert!(!OPEN_PSEUDO_MODELS.contains(&batch.model()), "a client kept to some models is refused");
        assert_eq!(fwd("GET", "/v1/batches", "", &none).model(), "(batches)");
        assert_eq!(fwd("POST", "/v1/batches/batches%2Fb1/cancel", "", &none).model(), "(batches)");
        let mut cache = fwd("POST", "/v1beta/cachedContents", "", &none);
        cache.bind_body(br#"{"model": "models/gemini-2.5-pro", "contents": []}"#).expect("one model");
        assert_eq!(cache.model(), "gemini-2.5-pro");
        let twice = br#"{"model": "models/gemini-2.5-flash", "contents": [], "model": "models/gemini-2.5-pro"}"#;
        let e = fwd("POST", "/v1beta/cachedContents", "", &none).bind_body(twice).expect_err("twice");
        assert_eq!(e.status(), 400);
        let chat_twice = br#"{"model": "gemini-2.5-flash", "messages": [], "model": "gemini-2.5-pro"}"#;
        let e = fwd("POST", "/v1/chat/completions", "", &none).bind_body(chat_twice).expect_err("twice");
        assert_eq!(e.status(), 400);
        // A nested `model` is not the request's.
        let nested = br#"{"model": "gemini-2.5-flash", "messages": [{"model": "x"}]}"#;
        assert!(fwd("POST", "/v1/chat/completions", "", &none).bind_body(nested).is_ok());
    }
}
