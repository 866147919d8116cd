//! An Anthropic Messages request as a Gemini one.

use super::Reply;
use crate::config::aliases::Aliases;
use crate::request::route::Op;
use crate::translate::signature::{self, PLACEHOLDER};
use crate::translate::{Translated, gemini_model, is_gemini_3_or_newer, thinks};
use crate::wire::error::ProxyError;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// Google takes at most this many stop sequences.
const MAX_STOP_SEQUENCES: usize = 5;

fn bad(message: impl Into<String>) -> ProxyError {
    ProxyError::BadRequest(message.into())
}

/// Translates a Messages request (`count`: a `count_tokens` one).
pub fn request(body: &[u8], aliases: &Aliases, count: bool) -> Result<Translated, ProxyError> {
    let req: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
    let req = req.as_object().ok_or_else(|| bad("the request body must be a JSON object"))?;
    let asked = match req.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(bad("model: must be a string")),
        None => return Err(bad("model: Field required")),
    };
    let model = gemini_model(&asked, aliases)?;
    let stream = !count && req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut notes = Vec::new();

    let mut system: Vec<Value> = Vec::new();
    match req.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => push_text(&mut system, s),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    push_text(&mut system, t);
                }
            }
        }
        Some(_) => return Err(bad("system: must be a string or a list of text blocks")),
    }

    let messages = match req.get("messages") {
        Some(Value::Array(m)) => m,
        Some(_) => return Err(bad("messages: must be a list")),
        None => return Err(bad("messages: Field required")),
    };
    // The names of the calls, by id, for the results that answer them.
    let mut call_names: HashMap<String, String> = HashMap::new();
    let mut contents: Vec<Value> = Vec::new();
    let gemini_3 = is_gemini_3_or_newer(&model);
    let mut placeholders = 0;
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = message.get("content").unwrap_or(&Value::Null);
        let parts = match role {
            "user" => user_parts(content, &call_names).map_err(|e| bad(format!("messages.{i}: {e}")))?,
            "assistant" => {
                let mut parts = assistant_parts(content, &mut call_names);
                // Google refuses a turn whose first call lost its signature.
                if gemini_3
                    && let Some(call) = parts.iter_mut().find(|p| p.get("functionCall").is_some())
                    && call.get("thoughtSignature").is_none()
                {
                    call["thoughtSignature"] = json!(PLACEHOLDER);
                    placeholders += 1;
                }
                parts
            }
            // Claude Code puts a message of role `system` among the others.
            "system" => {
                collect_text(content, &mut system);
                continue;
            }
            other => return Err(bad(format!("messages.{i}.role: {other:?} is not `user` or `assistant`"))),
        };
        if parts.is_empty() {
            continue;
        }
        let role = if role == "assistant" { "model" } else { "user" };
        // Turns of one role in a row are one turn to Gemini.
        match contents.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(existing) = last["parts"].as_array_mut() {
                    existing.extend(parts);
                }
            }
            _ => contents.push(json!({"role": role, "parts": parts})),
        }
    }
    if placeholders > 0 {
        notes.push(format!(
            "the client sent back {placeholders} signed function call(s) without their thought signature: Google's placeholder stands in"
        ));
    }

    let mut generation = Map::new();
    if let Some(n) = req.get("max_tokens").and_then(Value::as_u64) {
        generation.insert("maxOutputTokens".into(), json!(n));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK")] {
        if let Some(v) = req.get(from).filter(|v| v.is_number()) {
            generation.insert(to.into(), v.clone());
        }
    }
    if let Some(stops) = req.get("stop_sequences").and_then(Value::as_array) {
        let stops: Vec<&Value> = stops.iter().filter(|s| s.is_string()).take(MAX_STOP_SEQUENCES).collect();
        if !stops.is_empty() {
            generation.insert("stopSequences".into(), json!(stops));
        }
    }
    let effort = req.get("output_config").and_then(|o| o.get("effort")).and_then(Value::as_str);
    let (thinking_config, thinking) = thinking_config(&model, req.get("thinking"), effort);
    if let Some(config) = thinking_config {
        generation.insert("thinkingConfig".into(), config);
    }

    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let (tools, left_out) = tools(req.get("tools"));
    if !left_out.is_empty() {
        notes.push(format!("tools with no Gemini meaning left out: {}", left_out.join(", ")));
    }
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), json!([{ "functionDeclarations": tools }]));
        if let Some(config) = tool_choice(req.get("tool_choice")) {
            out.insert("toolConfig".into(), json!({ "functionCallingConfig": config }));
        }
    }
    if !generation.is_empty() && !count {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    let body = if count {
        // countTokens takes the whole generation request, model named.
        out.insert("model".into(), json!(format!("models/{model}")));
        json!({ "generateContentRequest": out })
    } else {
        Value::Object(out)
    };
    let op = match (count, stream) {
        (true, _) => Op::CountTokens,
        (false, true) => Op::StreamGenerateContent,
        (false, false) => Op::GenerateContent,
    };
    Ok(Translated {
        model,
        op,
        body: body.to_string().into_bytes(),
        reply: crate::translate::Reply::Anthropic(Reply { model: asked, thinking, count }),
        notes,
    })
}

fn push_text(parts: &mut Vec<Value>, text: &str) {
    if !text.is_empty() {
        parts.push(json!({ "text": text }));
    }
}

/// The text of a `system` message (a string or text blocks).
fn collect_text(content: &Value, parts: &mut Vec<Value>) {
    match content {
        Value::String(s) => push_text(parts, s),
        Value::Array(blocks) => {
            for text in blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)) {
                push_text(parts, text);
            }
        }
        _ => {}
    }
}

/// A user message's parts: tool results first (as Gemini wants them, right
/// after the calls they answer), then the rest in order.
fn user_parts(content: &Value, call_names: &HashMap<String, String>) -> Result<Vec<Value>, String> {
    let blocks = match content {
        Value::String(s) => return Ok(if s.is_empty() { Vec::new() } else { vec![json!({ "text": s })] }),
        Value::Array(blocks) => blocks,
        _ => return Err("content: must be a string or a list of blocks".into()),
    };
    let mut results = Vec::new();
    let mut rest = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str).unwrap_or_default() {
            "tool_result" => {
                let id = block.get("tool_use_id").and_then(Value::as_str).unwrap_or_default();
                // A result answers a call of the conversation; its name is
                // the call's.
                let name = call_names.get(id).cloned().unwrap_or_else(|| id.to_owned());
                let mut text = String::new();
                let mut media = Vec::new();
                match block.get("content") {
                    Some(Value::String(s)) => text.push_str(s),
                    Some(Value::Array(inner)) => {
                        for b in inner {
                            match b.get("type").and_then(Value::as_str) {
                                Some("text") => {
                                    if !text.is_empty() {
                                        text.push('\n');
                                    }
                                    text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default());
                                }
                                _ => media.extend(media_part(b)),
                            }
                        }
                    }
                    _ => {}
                }
                let key = if block.get("is_error").and_then(Value::as_bool) == Some(true) { "error" } else { "output" };
                results.push(json!({ "functionResponse": { "name": name, "response": { key: text } } }));
                rest.extend(media);
            }
            "text" => push_text(&mut rest, block.get("text").and_then(Value::as_str).unwrap_or_default()),
            "image" | "document" => match media_part(block) {
                Some(part) => rest.push(part),
                None => {
                    return Err(format!("content.{j}: the {} block's source is not one Gemini can read", kind(block)));
                }
            },
            // A search result is text with its source.
            "search_result" => {
                let title = block.get("title").and_then(Value::as_str).unwrap_or_default();
                let mut text = format!("{title}\n");
                for t in block.get("content").and_then(Value::as_array).into_iter().flatten() {
                    text.push_str(t.get("text").and_then(Value::as_str).unwrap_or_default());
                }
                push_text(&mut rest, text.trim());
            }
            // Thinking, cache markers and what has no Gemini meaning.
            _ => {}
        }
    }
    results.extend(rest);
    Ok(results)
}

fn kind(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("unknown")
}

/// An image or document block as a Gemini part: base64 data inline, a URL
/// as file data, plain text as text.
fn media_part(block: &Value) -> Option<Value> {
    let source = block.get("source")?;
    let pdf = kind(block) == "document";
    match source.get("type").and_then(Value::as_str)? {
        "base64" => {
            let media_type = source.get("media_type").and_then(Value::as_str).unwrap_or(if pdf {
                "application/pdf"
            } else {
                "image/png"
            });
            let data = source.get("data").and_then(Value::as_str)?;
            Some(json!({ "inlineData": { "mimeType": media_type, "data": data } }))
        }
        "url" => {
            let url = source.get("url").and_then(Value::as_str)?;
            let mime = if pdf { "application/pdf" } else { image_type_of(url) };
            Some(json!({ "fileData": { "mimeType": mime, "fileUri": url } }))
        }
        "text" => Some(json!({ "text": source.get("data").and_then(Value::as_str)? })),
        "content" => {
            let mut text = String::new();
            for b in source.get("content").and_then(Value::as_array)? {
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default());
            }
            Some(json!({ "text": text }))
        }
        _ => None,
    }
}

fn image_type_of(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        _ => "image/jpeg",
    }
}

/// An assistant message's parts: its text, its calls (with the signatures
/// they carry back), and the thoughts Google signed.
fn assistant_parts(content: &Value, call_names: &mut HashMap<String, String>) -> Vec<Value> {
    let blocks = match content {
        Value::String(s) => return if s.is_empty() { Vec::new() } else { vec![json!({ "text": s })] },
        Value::Array(blocks) => blocks,
        _ => return Vec::new(),
    };
    let mut parts = Vec::new();
    for block in blocks {
        match kind(block) {
            "text" => push_text(&mut parts, block.get("text").and_then(Value::as_str).unwrap_or_default()),
            "tool_use" => {
                let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = block.get("name").and_then(Value::as_str).unwrap_or_default();
                call_names.insert(id.to_owned(), name.to_owned());
                let args = match block.get("input") {
                    Some(v @ Value::Object(_)) => v.clone(),
                    _ => json!({}),
                };
                let mut part = json!({ "functionCall": { "name": name, "args": args } });
                if let Some(sig) = signature::of_call_id(id) {
                    part["thoughtSignature"] = json!(sig);
                }
                parts.push(part);
            }
            // A thought Google signed goes back as it came; another
            // provider's, or an unsigned one, means nothing to Google.
            "thinking" => {
                let sig = block.get("signature").and_then(Value::as_str).and_then(signature::of_thinking);
                if let Some(sig) = sig {
                    let text = block.get("thinking").and_then(Value::as_str).unwrap_or_default();
                    parts.push(json!({ "text": text, "thought": true, "thoughtSignature": sig }));
                }
            }
            _ => {}
        }
    }
    parts
}

/// The function declarations of `tools`, JSON Schema kept whole, and the
/// names of those left out (Anthropic's server tools).
fn tools(tools: Option<&Value>) -> (Vec<Value>, Vec<String>) {
    let mut declarations = Vec::new();
    let mut left_out = Vec::new();
    for tool in tools.and_then(Value::as_array).into_iter().flatten() {
        let custom = matches!(tool.get("type").and_then(Value::as_str), None | Some("custom"));
        let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
        if !custom || name.is_empty() {
            left_out.push(tool.get("type").and_then(Value::as_str).unwrap_or(name).to_owned());
            continue;
        }
        let mut declaration = json!({ "name": name });
        if let Some(d) = tool.get("description").and_then(Value::as_str) {
            declaration["description"] = json!(d);
        }
        let schema = tool.get("input_schema").filter(|s| s.is_object()).cloned();
        declaration["parametersJsonSchema"] = schema.unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
        declarations.push(declaration);
    }
    (declarations, left_out)
}

/// `tool_choice` as Gemini's `functionCallingConfig`.
fn tool_choice(choice: Option<&Value>) -> Option<Value> {
    let choice = choice?;
    Some(match choice.get("type").and_then(Value::as_str)? {
        "auto" => json!({ "mode": "AUTO" }),
        "any" => json!({ "mode": "ANY" }),
        "none" => json!({ "mode": "NONE" }),
        "tool" => {
            let name = choice.get("name").and_then(Value::as_str)?;
            json!({ "mode": "ANY", "allowedFunctionNames": [name] })
        }
        _ => return None,
    })
}

/// `thinking` and `output_config.effort` as Gemini's `thinkingConfig` (a
/// level on Gemini 3, a budget on 2.5; none on a model that does not
/// think), and whether the client asked to see the thinking.
fn thinking_config(model: &str, thinking: Option<&Value>, effort: Option<&str>) -> (Option<Value>, bool) {
    let kind = thinking.and_then(|t| t.get("type")).and_then(Value::as_str);
    let budget = thinking.and_then(|t| t.get("budget_tokens")).and_then(Value::as_i64);
    let shown = matches!(kind, Some("enabled" | "adaptive"));
    if !thinks(model) || (kind.is_none() && effort.is_none()) {
        return (None, false);
    }
    let mut config = json!({ "includeThoughts": shown });
    if is_gemini_3_or_newer(model) {
        let flash = model.contains("flash");
        let level = match (kind, effort, budget) {
            (Some("disabled"), _, _) => Some(if flash { "minimal" } else { "low" }),
            (_, Some("low"), _) => Some("low"),
            (_, Some("medium"), _) => Some(if flash { "medium" } else { "high" }),
            (_, Some(_), _) => Some("high"),
            (_, None, Some(b)) if b <= 4096 => Some("low"),
            (_, None, Some(_)) => Some("high"),
            _ => None,
        };
        if let Some(level) = level {
            config["thinkingLevel"] = json!(level);
        }
    } else {
        let pro = model.contains("pro");
        let budget = match (kind, effort, budget) {
            (Some("disabled"), _, _) => {
                if pro {
                    128
                } else {
                    0
                }
            }
            (Some("enabled"), _, Some(b)) => b.clamp(if pro { 128 } else { 0 }, 32_768),
            (_, Some("low"), _) => 1024,
            (_, Some("medium"), _) => 8192,
            _ => -1,
        };
        config["thinkingBudget"] = json!(budget);
    }
    (Some(config), shown)
}
