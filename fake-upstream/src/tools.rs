//! Function calling and thought signatures, as Gemini does them.
//!
//! - A user turn whose text holds `CALL <name> <json args>` is answered
//!   with that function call (when the request declares the function);
//!   a turn of function responses, with text that quotes the first one.
//! - Gemini 3 models sign the first call of each answer with a
//!   `thoughtSignature` the fake remembers, and refuse a request whose
//!   current turn has a model call without one, or with one they did not
//!   issue (Google's placeholders excepted), as Google does.
//! - `includeThoughts` adds a thought part before the answer, whatever it
//!   is (the plain answer's text, or its stream's chunks, follow).

use serde_json::{Value, json};
use std::collections::HashSet;

/// Google's documented stand-ins for a signature a client lost.
const PLACEHOLDERS: &[&str] = &["skip_thought_signature_validator", "context_engineering_is_the_way_to_go"];

/// Whether `model` enforces thought signatures (Gemini 3 and newer).
pub fn signs(model: &str) -> bool {
    model
        .strip_prefix("gemini-")
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|m| m >= 3)
}

/// Google's 400 for a request whose current turn has a model call without
/// a signature it issued; `None` when the request passes.
pub fn check_signatures(model: &str, body: &Value, issued: &HashSet<String>) -> Option<Value> {
    if !signs(model) {
        return None;
    }
    let contents = body.get("contents")?.as_array()?;
    // The current turn starts at the last user turn with text in it.
    let start =
        contents.iter().rposition(|c| c["role"] == "user" && parts(c).any(|p| p.get("text").is_some())).unwrap_or(0);
    for (position, content) in contents.iter().enumerate().skip(start) {
        if content["role"] != "model" {
            continue;
        }
        let Some(call) = parts(content).find(|p| p.get("functionCall").is_some()) else { continue };
        let name = call["functionCall"]["name"].as_str().unwrap_or_default();
        let message = match call.get("thoughtSignature").and_then(Value::as_str) {
            None => format!(
                "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position {}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                position + 1
            ),
            Some(sig) if PLACEHOLDERS.contains(&sig) || issued.contains(sig) => continue,
            Some(_) => "Corrupted thought signature.".to_owned(),
        };
        return Some(json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}));
    }
    None
}

fn parts(content: &Value) -> impl Iterator<Item = &Value> {
    content["parts"].as_array().into_iter().flatten()
}

/// The thought part an answer starts with when the request asks for
/// thoughts (`includeThoughts`).
pub fn thought(body: &Value) -> Option<Value> {
    let asked = body.pointer("/generationConfig/thinkingConfig/includeThoughts") == Some(&Value::Bool(true));
    asked.then(|| json!({"text": "Thinking it over.", "thought": true}))
}

/// The part that answers a generation request's tools: a call when the
/// last user turn asks for one, text that quotes a function response;
/// `None` for any other request. `sign` makes a new signature (remembered
/// by the caller).
pub fn answer(model: &str, body: &Value, mut sign: impl FnMut() -> String) -> Option<Value> {
    let last = body.get("contents")?.as_array()?.last()?;
    let declared: Vec<&str> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|t| t["functionDeclarations"].as_array().into_iter().flatten())
        .filter_map(|d| d["name"].as_str())
        .collect();
    if let Some(response) = parts(last).find_map(|p| p.get("functionResponse")) {
        let said: String = response["response"].to_string().chars().take(200).collect();
        let name = response["name"].as_str().unwrap_or("?");
        return Some(json!({"text": format!("The tool {name} answered: {said}")}));
    }
    let asked = parts(last).filter_map(|p| p["text"].as_str()).find_map(|t| t.split_once("CALL ").map(|(_, c)| c))?;
    let (name, args) = asked.split_once(' ').unwrap_or((asked, "{}"));
    let name = name.trim();
    if !declared.contains(&name) {
        return None;
    }
    let args: Value = serde_json::Deserializer::from_str(args.trim())
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let mut part = json!({"functionCall": {"name": name, "args": args}});
    if signs(model) {
        part["thoughtSignature"] = json!(sign());
    }
    Some(part)
}

/// A chat-completions request of Google's OpenAI layer as the Gemini
/// request it becomes there (the layer checks it, and answers it, as
/// Gemini does): messages as contents, with each assistant tool call's
/// `extra_content.google.thought_signature` as its part's signature, tool
/// results as function responses, function tools as declarations.
pub fn chat_contents(body: &Value) -> Value {
    let mut contents: Vec<Value> = Vec::new();
    let mut names: std::collections::HashMap<String, String> = Default::default();
    let push = |contents: &mut Vec<Value>, role: &str, part: Value| match contents.last_mut() {
        Some(last) if last["role"] == role => {
            if let Some(parts) = last["parts"].as_array_mut() {
                parts.push(part);
            }
        }
        _ => contents.push(json!({"role": role, "parts": [part]})),
    };
    let text_of = |content: &Value| match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    };
    for message in body["messages"].as_array().into_iter().flatten() {
        match message["role"].as_str().unwrap_or_default() {
            "user" => push(&mut contents, "user", json!({"text": text_of(&message["content"])})),
            "assistant" => {
                let text = text_of(&message["content"]);
                if !text.is_empty() {
                    push(&mut contents, "model", json!({"text": text}));
                }
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    let name = call["function"]["name"].as_str().unwrap_or_default();
                    names.insert(call["id"].as_str().unwrap_or_default().to_owned(), name.to_owned());
                    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or("{}"))
                        .unwrap_or(json!({}));
                    let mut part = json!({"functionCall": {"name": name, "args": args}});
                    if let Some(sig) = call.pointer("/extra_content/google/thought_signature") {
                        part["thoughtSignature"] = sig.clone();
                    }
                    push(&mut contents, "model", part);
                }
            }
            "tool" => {
                let id = message["tool_call_id"].as_str().unwrap_or_default();
                let name = names.get(id).cloned().unwrap_or_default();
                let response = json!({"content": text_of(&message["content"])});
                push(&mut contents, "user", json!({"functionResponse": {"name": name, "response": response}}));
            }
            _ => {}
        }
    }
    let declarations: Vec<Value> = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str())
        .map(|name| json!({"name": name}))
        .collect();
    json!({"contents": contents, "tools": [{"functionDeclarations": declarations}]})
}

/// A Gemini answer's part as an OpenAI chat message's members: a call as
/// `tool_calls` (its signature in `extra_content`, as Google's layer puts
/// it), text as `content`.
pub fn chat_message(part: &Value, call_id: &str) -> Value {
    match part.get("functionCall") {
        Some(call) => {
            let mut tool_call = json!({
                "id": call_id, "type": "function",
                "function": {"name": call["name"], "arguments": call["args"].to_string()},
            });
            if let Some(sig) = part.get("thoughtSignature") {
                tool_call["extra_content"] = json!({"google": {"thought_signature": sig}});
            }
            json!({"role": "assistant", "tool_calls": [tool_call]})
        }
        None => json!({"role": "assistant", "content": part["text"]}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: &str, parts: Value) -> Value {
        json!({"role": role, "parts": parts})
    }

    #[test]
    fn a_call_is_answered_and_signed_on_gemini_3() {
        let body = json!({
            "contents": [turn("user", json!([{"text": "Please CALL Bash {\"command\": \"echo hi\"}"}]))],
            "tools": [{"functionDeclarations": [{"name": "Bash"}]}]
        });
        let part = answer("gemini-3-pro-preview", &body, || "c2lnMQ==".into()).expect("a call");
        let signed =
            json!({"functionCall": {"name": "Bash", "args": {"command": "echo hi"}}, "thoughtSignature": "c2lnMQ=="});
        assert_eq!(part, signed);
        let part = answer("gemini-2.5-flash", &body, || unreachable!()).expect("a call");
        assert!(part.get("thoughtSignature").is_none());
        assert!(thought(&body).is_none());
    }

    #[test]
    fn the_signature_rule_holds_for_the_current_turn() {
        let issued: HashSet<String> = ["c2lnMQ==".to_owned()].into();
        let call = |sig: Option<&str>| {
            let mut p = json!({"functionCall": {"name": "Bash", "args": {}}});
            if let Some(s) = sig {
                p["thoughtSignature"] = json!(s);
            }
            turn("model", json!([p]))
        };
        let body = |sig: Option<&str>| {
            json!({"contents": [
                turn("user", json!([{"text": "go"}])),
                call(sig),
                turn("user", json!([{"functionResponse": {"name": "Bash", "response": {"output": "hi"}}}]))
            ]})
        };
        assert!(check_signatures("gemini-3-flash-preview", &body(Some("c2lnMQ==")), &issued).is_none());
        assert!(
            check_signatures("gemini-3-flash-preview", &body(Some("skip_thought_signature_validator")), &issued)
                .is_none()
        );
        let missing = check_signatures("gemini-3-flash-preview", &body(None), &issued).expect("refused");
        assert!(missing["error"]["message"].as_str().expect("a message").contains("missing a thought_signature"));
        assert!(check_signatures("gemini-3-flash-preview", &body(Some("bm90IG1pbmU=")), &issued).is_some());
        assert!(check_signatures("gemini-2.5-flash", &body(None), &issued).is_none());
        // An earlier turn is not checked.
        let mut earlier = body(None);
        earlier["contents"].as_array_mut().expect("contents").push(turn("user", json!([{"text": "next question"}])));
        assert!(check_signatures("gemini-3-flash-preview", &earlier, &issued).is_none());
    }

    #[test]
    fn a_chat_turn_is_checked_as_the_gemini_request_it_becomes() {
        let issued: HashSet<String> = ["c2lnMQ==".to_owned()].into();
        let chat = |extra: Option<Value>| {
            let mut call = json!({"id": "function-call-1", "type": "function",
                                  "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}});
            if let Some(e) = extra {
                call["extra_content"] = e;
            }
            json!({"messages": [
                {"role": "user", "content": "CALL Bash {}"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "function-call-1", "content": "a.txt"}
            ], "tools": [{"type": "function", "function": {"name": "Bash"}}]})
        };
        let dropped = chat_contents(&chat(None));
        assert!(check_signatures("gemini-3-flash-preview", &dropped, &issued).is_some());
        let kept = chat_contents(&chat(Some(json!({"google": {"thought_signature": "c2lnMQ=="}}))));
        assert_eq!(kept["contents"][2]["parts"][0]["functionResponse"]["name"], "Bash");
        assert!(check_signatures("gemini-3-flash-preview", &kept, &issued).is_none());
        let part = answer("gemini-3-flash-preview", &kept, || unreachable!()).expect("the tool's answer quoted");
        assert_eq!(chat_message(&part, "x")["content"].as_str().map(|t| t.contains("a.txt")), Some(true));
    }
}
