//! Response bodies in the shapes Google sends and the SDKs parse.

use serde_json::{Value, json};

pub fn error(code: u16, message: &str, status: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

/// Google's answer to a member or query parameter it does not know: a 400
/// that echoes the caller's name, in its message and in a `BadRequest`
/// detail (for a generation's body, and a list's query).
pub fn unknown_name(method: &str, path: &str, query: Option<&str>, body: &Value) -> Option<Value> {
    const GENERATE_MEMBERS: &[&str] = &[
        "contents",
        "systemInstruction",
        "system_instruction",
        "tools",
        "toolConfig",
        "tool_config",
        "safetySettings",
        "safety_settings",
        "generationConfig",
        "generation_config",
        "cachedContent",
        "cached_content",
        "model",
        "labels",
    ];
    const LIST_PARAMS: &[&str] = &["pageSize", "pageToken", "alt", "key", "access_token", "filter", "$alt"];
    let generation = path.ends_with(":generateContent") || path.ends_with(":streamGenerateContent");
    let list = method == "GET"
        && ["/files", "/cachedContents", "/batches", "/fileSearchStores", "/models"].iter().any(|c| path.ends_with(c));
    let unknown = if generation && !path.starts_with("/v1beta/openai/") {
        body.as_object()?.keys().find(|k| !GENERATE_MEMBERS.contains(&k.as_str()))?.clone()
    } else if list {
        let names = query.unwrap_or_default().split('&').filter(|p| !p.is_empty());
        names.map(|p| p.split('=').next().unwrap_or(p)).find(|n| !LIST_PARAMS.contains(n))?.to_owned()
    } else {
        return None;
    };
    let how = if generation { "Cannot find field." } else { "Cannot bind query parameter." };
    let message = format!("Invalid JSON payload received. Unknown name \"{unknown}\": {how}");
    Some(json!({"error": {
        "code": 400,
        "message": message,
        "status": "INVALID_ARGUMENT",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"description": message}]}
        ]
    }}))
}

pub fn per_day(model: &str) -> Value {
    json!({"error": {
        "code": 429,
        "message": format!("You exceeded your current quota, please check your plan and billing details. Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 50, model: {model}"),
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                "quotaDimensions": {"location": "global", "model": model},
                "quotaValue": "50"
            }]},
            {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "43s"}
        ]
    }})
}

pub fn per_minute(seconds: u32) -> Value {
    json!({"error": {
        "code": 429,
        "message": "You exceeded your current quota. Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 10",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{seconds}s")},
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                "quotaValue": "10"
            }]}
        ]
    }})
}

pub fn invalid_key() -> Value {
    json!({"error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": "API key not valid. Please pass a valid API key."}
        ]
    }})
}

pub fn suspended(key: &str) -> Value {
    json!({"error": {
        "code": 403,
        "message": format!("Permission denied: Consumer 'api_key:{key}' has been suspended."),
        "status": "PERMISSION_DENIED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CONSUMER_SUSPENDED", "domain": "googleapis.com",
             "metadata": {"containerInfo": key, "consumer": "projects/123456789012", "service": "generativelanguage.googleapis.com"}}
        ]
    }})
}

pub fn leaked() -> Value {
    json!({"error": {
        "code": 403,
        "message": "Your API key was reported as leaked. Please use another API key.",
        "status": "PERMISSION_DENIED"
    }})
}

pub fn wrong_key_type() -> Value {
    json!({"error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "status": "UNAUTHENTICATED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED",
             "metadata": {"service": "generativelanguage.googleapis.com", "method": "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent"}}
        ]
    }})
}

/// The tokens an answer reports: made up from the request body's length,
/// so that two requests seldom report alike and a total tells them apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt: u64,
    /// Output tokens.
    pub output: u64,
    /// Prompt tokens from a cache.
    pub cached: u64,
    /// Thinking tokens.
    pub thinking: u64,
}

impl Usage {
    /// The usage of an answer to a body of `len` bytes.
    pub fn for_body(len: usize) -> Self {
        let n = len as u64;
        Self { prompt: 3 + n % 61, output: 5 + n % 17, cached: n % 3, thinking: 1 + n % 5 }
    }

    /// Gemini's `usageMetadata`, with `output` of the candidates so far.
    fn gemini(&self, output: u64) -> Value {
        json!({
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": output,
            "cachedContentTokenCount": self.cached,
            "thoughtsTokenCount": self.thinking,
            "totalTokenCount": self.prompt + output + self.thinking
        })
    }

    /// OpenAI's `usage`.
    pub fn openai(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.output,
            "total_tokens": self.prompt + self.output,
            "prompt_tokens_details": {"cached_tokens": self.cached},
            "completion_tokens_details": {"reasoning_tokens": self.thinking}
        })
    }
}

/// The fake's answer text: it names the model, so tests can check it.
pub fn text(model: &str) -> String {
    format!("Hello from the fake {model}.")
}

pub fn generate(model: &str, usage: &Usage) -> Value {
    json!({
        "candidates": [{"content": {"parts": [{"text": text(model)}], "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage.gemini(usage.output),
        "modelVersion": model,
        "responseId": "fake-response"
    })
}

/// An answer made of `parts` (a function call, thoughts: [`crate::tools`]).
pub fn generate_parts(model: &str, usage: &Usage, parts: Vec<Value>) -> Value {
    json!({
        "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage.gemini(usage.output),
        "modelVersion": model,
        "responseId": "fakeParts"
    })
}

/// The events of a streamed answer made of `parts`, one part each; the last
/// has the finish reason and the usage.
pub fn stream_parts(model: &str, usage: &Usage, parts: Vec<Value>) -> Vec<Value> {
    let n = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let so_far = usage.output * (i as u64 + 1) / n.max(1) as u64;
            let mut c = json!({
                "candidates": [{"content": {"parts": [part], "role": "model"}, "index": 0}],
                "usageMetadata": usage.gemini(so_far),
                "modelVersion": model,
                "responseId": "fakeStreamParts"
            });
            if i + 1 == n {
                c["candidates"][0]["finishReason"] = json!("STOP");
            }
            c
        })
        .collect()
}

/// Event `i` of `n`: its usage counts the output so far, as Google's do; the
/// last event's is the answer's.
pub fn generate_chunk(model: &str, i: usize, n: usize, usage: &Usage) -> Value {
    let so_far = usage.output * (i as u64 + 1) / n.max(1) as u64;
    let mut c = json!({
        "candidates": [{"content": {"parts": [{"text": format!("chunk {i} ")}], "role": "model"}, "index": 0}],
        "usageMetadata": usage.gemini(so_far),
        "modelVersion": model,
        "responseId": "fake-stream"
    });
    if i + 1 == n {
        c["candidates"][0]["finishReason"] = json!("STOP");
    }
    c
}

pub fn vector(model: &str, i: usize) -> Vec<f32> {
    let seed = model.len() as f32 + i as f32;
    vec![0.25 + seed / 100.0, -0.5, 0.125, 1.0]
}

fn model_entry(name: &str) -> Value {
    let embed = name.contains("embedding");
    json!({
        "name": format!("models/{name}"),
        "version": "001",
        "displayName": name,
        "description": "A fake model",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": if embed { json!(["embedContent", "batchEmbedContents"]) } else { json!(["generateContent", "countTokens"]) }
    })
}

/// The models listed (the last one no test calls but the outage scenario).
const MODELS: [&str; 4] =
    ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-embedding-001", "gemini-2.5-flash-preview-09-2025"];

pub fn models() -> Value {
    json!({"models": MODELS.iter().map(|m| model_entry(m)).collect::<Vec<_>>()})
}

pub fn model(name: &str) -> Value {
    model_entry(name)
}

pub fn openai_chat(model: &str, usage: &Usage) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text(model)}, "finish_reason": "stop"}],
        "usage": usage.openai()
    })
}

/// A chat stream; with `usage` (the client's `stream_options.include_usage`),
/// a last chunk with no choices carries it, as OpenAI's does.
pub fn openai_chat_stream(model: &str, n: usize, usage: Option<&Usage>) -> Vec<String> {
    let mut events: Vec<String> = (0..n)
        .map(|i| {
            let chunk = json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_764_000_000, "model": model,
                "choices": [{"index": 0, "delta": if i == 0 { json!({"role": "assistant", "content": format!("chunk {i} ")}) } else { json!({"content": format!("chunk {i} ")}) },
                             "finish_reason": if i + 1 == n { json!("stop") } else { Value::Null }}]
            });
            format!("data: {chunk}\n\n")
        })
        .collect();
    if let Some(u) = usage {
        let chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_764_000_000, "model": model,
                           "choices": [], "usage": u.openai()});
        events.push(format!("data: {chunk}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());
    events
}

pub fn openai_embeddings(model: &str, body: &Value) -> Value {
    let inputs = match body.get("input") {
        Some(Value::Array(a)) => a.len().max(1),
        _ => 1,
    };
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = (0..inputs)
        .map(|i| {
            let v = vector(model, i);
            let embedding = if base64 {
                use base64::Engine;
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 4, "total_tokens": 4}})
}

pub fn openai_models() -> Value {
    json!({"object": "list", "data": MODELS.iter().map(|m| openai_model(m)).collect::<Vec<_>>()})
}

pub fn openai_model(name: &str) -> Value {
    json!({"id": format!("models/{name}"), "object": "model", "created": 0, "owned_by": "google"})
}
