//! A Responses API request as a Gemini one.

use super::Reply;
use crate::config::aliases::Aliases;
use crate::request::route::Op;
use crate::translate::signature::{self, PLACEHOLDER};
use crate::translate::{Translated, gemini_model, is_gemini_3_or_newer, thinks};
use crate::wire::error::ProxyError;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

fn bad(message: impl Into<String>) -> ProxyError {
    ProxyError::BadRequest(message.into())
}

/// The one argument of a freeform (`custom`) tool, as Gemini is told it.
const CUSTOM_ARGUMENT: &str = "input";

/// Translates a Responses request.
pub fn request(body: &[u8], aliases: &Aliases) -> Result<Translated, ProxyError> {
    let req: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
    let req = req.as_object().ok_or_else(|| bad("the request body must be a JSON object"))?;
    for kept in ["previous_response_id", "conversation"] {
        if req.get(kept).is_some_and(|v| !v.is_null()) {
            return Err(bad(format!(
                "{kept}: this proxy keeps no conversations; send the whole conversation in `input` (with `store: false`, as Codex does)"
            )));
        }
    }
    let asked = match req.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(bad("model: must be a string")),
        None => return Err(bad("model: required, e.g. \"gemini-2.5-flash\"")),
    };
    let model = gemini_model(&asked, aliases)?;
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut notes = Vec::new();

    let mut system: Vec<Value> = Vec::new();
    match req.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => push_text(&mut system, s),
        Some(_) => return Err(bad("instructions: must be a string")),
    }

    let (mut declarations, custom, search, left_out) = tools(req.get("tools"))?;
    if let Some(allowed) = allowed_in_auto(req.get("tool_choice")) {
        declarations.retain(|d| d["name"].as_str().is_some_and(|n| allowed.contains(&n)));
    }
    let mut turns = Turns::new(is_gemini_3_or_newer(&model));
    match req.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => turns.push("user", vec![json!({ "text": s })]),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                turns.item(item, &mut system).map_err(|e| bad(format!("input[{i}]: {e}")))?;
            }
        }
        Some(_) => return Err(bad("input: must be a string or a list of items")),
    }
    if turns.placeholders > 0 {
        notes.push(format!(
            "the client sent back {} signed function call(s) without their thought signature: Google's placeholder stands in",
            turns.placeholders
        ));
    }
    if turns.orphans > 0 {
        notes.push(format!("{} tool output(s) whose call is not in the input sent as text", turns.orphans));
    }
    if !left_out.is_empty() {
        notes.push(format!("tools with no Gemini meaning left out: {}", left_out.join(", ")));
    }

    let mut generation = Map::new();
    if let Some(n) = req.get("max_output_tokens").and_then(Value::as_u64) {
        generation.insert("maxOutputTokens".into(), json!(n));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = req.get(from).filter(|v| v.is_number()) {
            generation.insert(to.into(), v.clone());
        }
    }
    let reasoning = req.get("reasoning").filter(|r| r.is_object());
    let effort = reasoning.and_then(|r| r.get("effort")).and_then(Value::as_str);
    // A summary of "auto", "concise" or "detailed" shows the thoughts;
    // "none" (Codex's setting) does not.
    let summary = reasoning.and_then(|r| r.get("summary")).and_then(Value::as_str).is_some_and(|s| s != "none");
    if thinks(&model)
        && let Some(config) = thinking_config(&model, effort, summary)
    {
        generation.insert("thinkingConfig".into(), config);
    }
    // Models before Gemini 3 refuse a JSON answer beside tools: there the
    // format is asked in the instructions instead.
    let tools_asked = !declarations.is_empty() || search;
    let in_words = tools_asked && !is_gemini_3_or_newer(&model);
    match req.get("text").and_then(|t| t.get("format")) {
        Some(format) if format.get("type").and_then(Value::as_str) == Some("json_schema") => {
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| bad("text.format.schema: required for a json_schema format, a JSON Schema object"))?;
            if in_words {
                system.push(json!({ "text": format!(
                    "When you give your final answer, answer with a JSON value only, no prose and no code fence, that matches this JSON Schema:\n{schema}"
                ) }));
                notes.push(format!(
                    "{model} takes no JSON schema beside tools: the schema was asked in the instructions"
                ));
            } else {
                generation.insert("responseMimeType".into(), json!("application/json"));
                generation.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        Some(format) if format.get("type").and_then(Value::as_str) == Some("json_object") => {
            if in_words {
                system.push(json!({ "text": "When you give your final answer, answer with a JSON object only, no prose and no code fence." }));
                notes.push(format!("{model} takes no JSON answer beside tools: JSON was asked in the instructions"));
            } else {
                generation.insert("responseMimeType".into(), json!("application/json"));
            }
        }
        _ => {}
    }

    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(turns.contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let has_functions = !declarations.is_empty();
    if has_functions {
        out.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
        if let Some(config) = tool_choice(req.get("tool_choice")) {
            out.insert("toolConfig".into(), json!({ "functionCallingConfig": config }));
        }
    } else if search {
        // Google Search, where no function is declared beside it (not every
        // model takes the two together).
        out.insert("tools".into(), json!([{ "googleSearch": {} }]));
    }
    if search && has_functions {
        notes.push("web_search left out: Google Search is not asked beside function declarations".to_owned());
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }

    let include = req.get("include").and_then(Value::as_array);
    let encrypted = include.is_some_and(|i| i.iter().any(|v| v == "reasoning.encrypted_content"));
    let mut echo = Map::new();
    for key in super::ECHOED.iter().map(|(k, _)| *k) {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            echo.insert(key.to_owned(), v.clone());
        }
    }
    let reply = Reply { model: asked, reasoning: summary, encrypted, custom, echo, created_at: 0 };
    Ok(Translated {
        model,
        op: if stream { Op::StreamGenerateContent } else { Op::GenerateContent },
        body: Value::Object(out).to_string().into_bytes(),
        reply: crate::translate::Reply::Responses(Box::new(reply)),
        notes,
    })
}

fn push_text(parts: &mut Vec<Value>, text: &str) {
    if !text.is_empty() {
        parts.push(json!({ "text": text }));
    }
}

fn kind(item: &Value) -> &str {
    item.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// The conversation as Gemini's contents, item by item.
struct Turns {
    contents: Vec<Value>,
    /// The names of the calls, by call id, for the outputs that answer them.
    call_names: HashMap<String, String>,
    gemini_3: bool,
    placeholders: usize,
    /// Tool outputs whose call is not in the conversation.
    orphans: usize,
}

impl Turns {
    fn new(gemini_3: bool) -> Self {
        Self { contents: Vec::new(), call_names: HashMap::new(), gemini_3, placeholders: 0, orphans: 0 }
    }

    /// Adds `parts` to the conversation as `role`'s: turns of one role in
    /// a row are one turn to Gemini.
    fn push(&mut self, role: &str, parts: Vec<Value>) {
        if parts.is_empty() {
            return;
        }
        match self.contents.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(existing) = last["parts"].as_array_mut() {
                    existing.extend(parts);
                }
            }
            _ => self.contents.push(json!({ "role": role, "parts": parts })),
        }
    }

    fn item(&mut self, item: &Value, system: &mut Vec<Value>) -> Result<(), String> {
        let kind = match kind(item) {
            // An input message may leave out its type.
            "" if item.get("role").is_some() => "message",
            other => other,
        };
        match kind {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
                let content = item.get("content").unwrap_or(&Value::Null);
                match role {
                    "system" | "developer" => {
                        system.extend(content_parts(content)?.into_iter().filter(|p| p.get("text").is_some()));
                    }
                    "user" => self.push("user", content_parts(content)?),
                    "assistant" => self.push("model", content_parts(content)?),
                    other => {
                        return Err(format!("role: {other:?} is not `user`, `assistant`, `system` or `developer`"));
                    }
                }
            }
            "function_call" | "custom_tool_call" => {
                let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or_default();
                let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
                self.call_names.insert(call_id.to_owned(), name.to_owned());
                let args = if kind == "custom_tool_call" {
                    json!({ CUSTOM_ARGUMENT: item.get("input").and_then(Value::as_str).unwrap_or_default() })
                } else {
                    match item.get("arguments") {
                        Some(Value::String(s)) => {
                            serde_json::from_str::<Value>(s).ok().filter(Value::is_object).unwrap_or_else(|| json!({}))
                        }
                        Some(v @ Value::Object(_)) => v.clone(),
                        _ => json!({}),
                    }
                };
                let mut part = json!({ "functionCall": { "name": name, "args": args } });
                let signed = signature::of_call_id(call_id);
                // Google refuses a turn whose first call lost its signature.
                let first_of_turn = !self.contents.last().is_some_and(|last| {
                    last["role"] == "model"
                        && last["parts"].as_array().is_some_and(|p| p.iter().any(|p| p.get("functionCall").is_some()))
                });
                match signed {
                    Some(sig) => part["thoughtSignature"] = json!(sig),
                    None if self.gemini_3 && first_of_turn => {
                        part["thoughtSignature"] = json!(PLACEHOLDER);
                        self.placeholders += 1;
                    }
                    None => {}
                }
                self.push("model", vec![part]);
            }
            "function_call_output" | "custom_tool_call_output" => {
                let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or_default();
                let (text, media) = match item.get("output") {
                    Some(Value::String(s)) => (s.clone(), Vec::new()),
                    Some(content @ Value::Array(_)) => {
                        let parts = content_parts(content)?;
                        let text: Vec<&str> =
                            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
                        let text = text.join("\n");
                        (text, parts.into_iter().filter(|p| p.get("text").is_none()).collect())
                    }
                    Some(other) => (other.to_string(), Vec::new()),
                    None => (String::new(), Vec::new()),
                };
                let mut parts = match self.call_names.get(call_id) {
                    Some(name) => vec![json!({ "functionResponse": { "name": name, "response": { "output": text } } })],
                    // The call it answers is not in the conversation (a
                    // client that trimmed its history): Google takes no
                    // function response without its call, so it is told
                    // as text.
                    None => {
                        self.orphans += 1;
                        vec![json!({ "text": format!("The output of the earlier tool call {call_id}:\n{text}") })]
                    }
                };
                parts.extend(media);
                self.push("user", parts);
            }
            // A thought this proxy handed out (its signature marked) goes
            // back as it came; another provider's means nothing to Google.
            "reasoning" => {
                let sig = item.get("encrypted_content").and_then(Value::as_str).and_then(signature::of_thinking);
                if let Some(sig) = sig {
                    let summary = item.get("summary").and_then(Value::as_array).into_iter().flatten();
                    let text: String = summary.filter_map(|s| s.get("text").and_then(Value::as_str)).collect();
                    self.push("model", vec![json!({ "text": text, "thought": true, "thoughtSignature": sig })]);
                }
            }
            // A reference to an item OpenAI would have stored: this proxy
            // stores none, so the conversation would silently lose it.
            "item_reference" => {
                return Err(
                    "an item_reference points at an item stored by OpenAI; this proxy keeps none: send the items themselves (`store: false`; with the AI SDK, providerOptions.openai.store = false)"
                        .into(),
                );
            }
            // The outputs of tools Google does not run, and what OpenAI
            // adds tomorrow: nothing to send.
            _ => {}
        }
        Ok(())
    }
}

/// A message's content (a string, or a list of parts) as Gemini parts.
fn content_parts(content: &Value) -> Result<Vec<Value>, String> {
    let parts = match content {
        Value::String(s) => return Ok(if s.is_empty() { Vec::new() } else { vec![json!({ "text": s })] }),
        Value::Array(parts) => parts,
        Value::Null => return Ok(Vec::new()),
        _ => return Err("content: must be a string or a list of parts".into()),
    };
    let mut out = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match kind(part) {
            "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text" => {
                push_text(&mut out, part.get("text").and_then(Value::as_str).unwrap_or_default());
            }
            "refusal" => push_text(&mut out, part.get("refusal").and_then(Value::as_str).unwrap_or_default()),
            "input_image" => {
                let url = part.get("image_url").and_then(Value::as_str);
                match url.and_then(|u| media(u, None)) {
                    Some(p) => out.push(p),
                    None => {
                        return Err(format!(
                            "content[{j}]: an input_image needs an image_url (a data: URL or an http(s) URL); a file_id is not one Gemini can read"
                        ));
                    }
                }
            }
            "input_file" => {
                let filename = part.get("filename").and_then(Value::as_str);
                let found = match (part.get("file_data").and_then(Value::as_str), part.get("file_url").and_then(Value::as_str)) {
                    (Some(data), _) => media(data, filename).or_else(|| {
                        // Plain base64, typed by its file name.
                        Some(json!({ "inlineData": { "mimeType": mime_of(filename.unwrap_or_default()), "data": data } }))
                    }),
                    (None, Some(url)) => media(url, filename),
                    (None, None) => None,
                };
                match found {
                    Some(p) => out.push(p),
                    None => {
                        return Err(format!(
                            "content[{j}]: an input_file needs file_data or a file_url; a file_id is not one Gemini can read"
                        ));
                    }
                }
            }
            // Audio and what has no Gemini meaning.
            _ => {}
        }
    }
    Ok(out)
}

/// A data URL as inline data, an http(s) URL as file data (typed by
/// `filename` or the URL's end).
fn media(url: &str, filename: Option<&str>) -> Option<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',')?;
        let mime = meta.strip_suffix(";base64")?;
        let mime = if mime.is_empty() { "application/octet-stream" } else { mime };
        return Some(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://") {
        let named = filename.unwrap_or(url.split(['?', '#']).next().unwrap_or(url));
        return Some(json!({ "fileData": { "mimeType": mime_of(named), "fileUri": url } }));
    }
    None
}

fn mime_of(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    match lower.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("pdf") => "application/pdf",
        Some("txt" | "md") => "text/plain",
        Some("csv") => "text/csv",
        Some("html" | "htm") => "text/html",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The function declarations of `tools` (JSON Schema kept whole; a
/// freeform tool takes one string), the freeform tools' names, whether
/// web search was asked, and the tool types left out.
type Tools = (Vec<Value>, Vec<String>, bool, Vec<String>);

fn tools(tools: Option<&Value>) -> Result<Tools, ProxyError> {
    let (mut declarations, mut custom, mut search, mut left_out) = (Vec::new(), Vec::new(), false, Vec::new());
    let list = match tools {
        None | Some(Value::Null) => return Ok((declarations, custom, search, left_out)),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad("tools: must be a list")),
    };
    for tool in list {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
        match kind(tool) {
            "function" if !name.is_empty() => {
                let mut declaration = json!({ "name": name });
                if let Some(d) = tool.get("description").and_then(Value::as_str) {
                    declaration["description"] = json!(d);
                }
                let schema = tool.get("parameters").filter(|s| s.is_object()).cloned();
                declaration["parametersJsonSchema"] =
                    schema.unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
                declarations.push(declaration);
            }
            "custom" if !name.is_empty() => {
                let mut declaration = json!({
                    "name": name,
                    "parametersJsonSchema": {
                        "type": "object",
                        "properties": { CUSTOM_ARGUMENT: { "type": "string", "description": "The tool's whole input, as free text." } },
                        "required": [CUSTOM_ARGUMENT],
                    },
                });
                if let Some(d) = tool.get("description").and_then(Value::as_str) {
                    declaration["description"] = json!(d);
                }
                custom.push(name.to_owned());
                declarations.push(declaration);
            }
            "web_search" | "web_search_preview" | "web_search_2025_08_26" | "web_search_preview_2025_03_11" => {
                search = true;
            }
            other => left_out.push(if other.is_empty() { "(untyped)".to_owned() } else { other.to_owned() }),
        }
    }
    Ok((declarations, custom, search, left_out))
}

/// `tool_choice` as Gemini's `functionCallingConfig`.
fn tool_choice(choice: Option<&Value>) -> Option<Value> {
    Some(match choice? {
        Value::String(mode) => match mode.as_str() {
            "auto" => json!({ "mode": "AUTO" }),
            "required" => json!({ "mode": "ANY" }),
            "none" => json!({ "mode": "NONE" }),
            _ => return None,
        },
        choice => match kind(choice) {
            "function" | "custom" => {
                let name = choice.get("name").and_then(Value::as_str)?;
                json!({ "mode": "ANY", "allowedFunctionNames": [name] })
            }
            "allowed_tools" => {
                let names: Vec<&str> = choice
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.get("name").and_then(Value::as_str))
                    .collect();
                // Google takes allowedFunctionNames with ANY only; with
                // AUTO the declarations are cut down instead (`request`).
                if choice.get("mode").and_then(Value::as_str) == Some("required") && !names.is_empty() {
                    json!({ "mode": "ANY", "allowedFunctionNames": names })
                } else {
                    json!({ "mode": "AUTO" })
                }
            }
            _ => return None,
        },
    })
}

/// The tools an `allowed_tools` choice in `auto` mode lets the model
/// call, if that is the choice.
fn allowed_in_auto(choice: Option<&Value>) -> Option<Vec<&str>> {
    let choice = choice.filter(|c| kind(c) == "allowed_tools")?;
    if choice.get("mode").and_then(Value::as_str) == Some("required") {
        return None;
    }
    let tools = choice.get("tools").and_then(Value::as_array)?;
    Some(tools.iter().filter_map(|t| t.get("name").and_then(Value::as_str)).collect())
}

/// `reasoning.effort` as Gemini's `thinkingConfig` (a level on Gemini 3,
/// a budget on 2.5), thoughts included when a summary was asked for.
fn thinking_config(model: &str, effort: Option<&str>, summary: bool) -> Option<Value> {
    if effort.is_none() && !summary {
        return None;
    }
    let mut config = json!({ "includeThoughts": summary });
    let Some(effort) = effort else { return Some(config) };
    if is_gemini_3_or_newer(model) {
        let flash = model.contains("flash");
        let level = match effort {
            "none" | "minimal" if flash => "minimal",
            "none" | "minimal" | "low" => "low",
            "medium" if flash => "medium",
            _ => "high",
        };
        config["thinkingLevel"] = json!(level);
    } else {
        let budget = match effort {
            "none" | "minimal" if model.contains("pro") => 128,
            "none" | "minimal" => 0,
            "low" => 1024,
            "medium" => 8192,
            _ => 24_576,
        };
        config["thinkingBudget"] = json!(budget);
    }
    Some(config)
}
