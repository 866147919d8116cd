use super::*;
use crate::config::aliases::Aliases;
use crate::translate::Translated;
use crate::translate::signature::PLACEHOLDER;
use crate::wire::error::ProxyError;

fn translate(body: Value) -> Translated {
    request(body.to_string().as_bytes(), &Aliases::default(), false).expect("translates")
}

fn gemini(t: &Translated) -> Value {
    serde_json::from_slice(&t.body).expect("as expected")
}

/// What Claude Code 2.1 sends, cut down: system blocks with cache
/// markers, a `system` message, tools, adaptive thinking, effort, and the
/// members Gemini has no use for.
fn claude_code_body() -> Value {
    json!({
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": true,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be brief."}
        ],
        "messages": [
            {"role": "system", "content": "Working directory: /tmp"},
            {"role": "user", "content": [{"type": "text", "text": "List files", "cache_control": {"type": "ephemeral"}}]}
        ],
        "tools": [{
            "name": "Bash",
            "description": "Runs a command",
            "input_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"command": {"type": "string"}, "timeout": {"type": "number", "maximum": 600000}},
                "required": ["command"],
                "additionalProperties": false
            }
        }, {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "user_abc"},
        "service_tier": "auto",
        "some_member_of_tomorrow": {"x": 1}
    })
}

#[test]
fn claude_code_s_request_becomes_a_gemini_stream_request() {
    let t = translate(claude_code_body());
    assert_eq!(t.model, "gemini-3-flash-preview");
    assert_eq!(t.upstream_path(), ("/models/gemini-3-flash-preview:streamGenerateContent".into(), "alt=sse".into()));
    let g = gemini(&t);
    assert_eq!(
        g["systemInstruction"]["parts"],
        json!([{"text": "You are Claude Code."}, {"text": "Be brief."}, {"text": "Working directory: /tmp"}])
    );
    assert_eq!(g["contents"], json!([{"role": "user", "parts": [{"text": "List files"}]}]));
    let declarations = g["tools"][0]["functionDeclarations"].as_array().expect("as expected");
    assert_eq!(declarations.len(), 1, "the server tool is left out");
    // The schema goes whole, not cut down to Gemini's OpenAPI subset.
    assert_eq!(declarations[0]["parametersJsonSchema"], claude_code_body()["tools"][0]["input_schema"]);
    assert_eq!(g["generationConfig"]["maxOutputTokens"], 32000);
    assert_eq!(g["generationConfig"]["thinkingConfig"], json!({"includeThoughts": true, "thinkingLevel": "high"}));
    assert!(t.notes.iter().any(|n| n.contains("web_search_20250305")));
    let Reply { model, thinking, count } = match &t.reply {
        crate::translate::Reply::Anthropic(r) => r.clone(),
        other => panic!("not an Anthropic reply: {other:?}"),
    };
    assert_eq!((model.as_str(), thinking, count), ("claude-sonnet-4-5-20250929", true, false));
    // Nothing of Anthropic's reaches Google.
    let text = String::from_utf8(t.body.clone()).expect("as expected");
    for member in ["cache_control", "context_management", "user_abc", "service_tier", "tomorrow", "web_search"] {
        assert!(!text.contains(member), "{member} in {text}");
    }
}

#[test]
fn media_blocks_become_parts() {
    let t = translate(json!({
        "model": "gemini-2.5-flash",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.webp?size=2"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}},
            {"type": "text", "text": "What are these?"}
        ]}]
    }));
    assert_eq!(
        gemini(&t)["contents"][0]["parts"],
        json!([
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}},
            {"text": "plain words"},
            {"text": "What are these?"}
        ])
    );
    assert_eq!(t.op, crate::request::route::Op::GenerateContent);
}

#[test]
fn a_tool_round_trip_carries_the_signature_back_verbatim() {
    let signed = signature::call_id(signature::ANTHROPIC_CALL, "resp1", 0, Some("CiQBjz1rX+/sig=="));
    let t = translate(json!({
        "model": "gemini-3-pro-preview",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "What is in /tmp?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should list it.", "signature": signature::thinking("thought-sig")},
                {"type": "thinking", "thinking": "Claude's own.", "signature": "EqQBCkgIARAB"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": signed, "name": "Bash", "input": {"command": "ls /tmp"}},
                {"type": "tool_use", "id": signature::call_id(signature::ANTHROPIC_CALL, "resp1", 1, None), "name": "Read", "input": {"path": "/tmp/a"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": signed, "content": "a\nb"},
                {"type": "tool_result", "tool_use_id": signature::call_id(signature::ANTHROPIC_CALL, "resp1", 1, None), "is_error": true,
                 "content": [{"type": "text", "text": "no such file"}]},
                {"type": "text", "text": "Go on."}
            ]}
        ]
    }));
    let g = gemini(&t);
    assert_eq!(
        g["contents"][1]["parts"],
        json!([
            {"text": "I should list it.", "thought": true, "thoughtSignature": "thought-sig"},
            {"text": "Let me look."},
            {"functionCall": {"name": "Bash", "args": {"command": "ls /tmp"}}, "thoughtSignature": "CiQBjz1rX+/sig=="},
            {"functionCall": {"name": "Read", "args": {"path": "/tmp/a"}}}
        ])
    );
    assert_eq!(
        g["contents"][2]["parts"],
        json!([
            {"functionResponse": {"name": "Bash", "response": {"output": "a\nb"}}},
            {"functionResponse": {"name": "Read", "response": {"error": "no such file"}}},
            {"text": "Go on."}
        ])
    );
    assert!(t.notes.is_empty(), "{:?}", t.notes);
}

#[test]
fn a_dropped_signature_gets_google_s_placeholder_on_gemini_3_only() {
    let body = |model: &str| {
        json!({
            "model": model,
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01XYZ", "name": "Bash", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01XYZ", "content": "ok"}]}
            ]
        })
    };
    let t = translate(body("gemini-3-flash-preview"));
    assert_eq!(gemini(&t)["contents"][1]["parts"][0]["thoughtSignature"], PLACEHOLDER);
    assert!(t.notes[0].contains("placeholder"), "{:?}", t.notes);
    let t = translate(body("gemini-2.5-flash"));
    assert!(gemini(&t)["contents"][1]["parts"][0].get("thoughtSignature").is_none());
    assert!(t.notes.is_empty());
}

#[test]
fn tool_choice_and_sampling() {
    let t = translate(json!({
        "model": "gemini-2.5-flash",
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["a", "b", "c", "d", "e", "f"],
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "get_weather"}
    }));
    let g = gemini(&t);
    assert_eq!(
        g["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]})
    );
    let generation = &g["generationConfig"];
    assert_eq!(
        (generation["temperature"].clone(), generation["topP"].clone(), generation["topK"].clone()),
        (json!(0.2), json!(0.9), json!(40))
    );
    assert_eq!(generation["stopSequences"].as_array().expect("as expected").len(), 5);
    assert!(generation.get("thinkingConfig").is_none(), "no thinking asked, the model's default");
}

#[test]
fn thinking_is_a_budget_on_2_5_and_a_level_on_3() {
    let config = |model: &str, thinking: Value, effort: Option<&str>| {
        let mut body = json!({"model": model, "max_tokens": 9000, "messages": [{"role": "user", "content": "x"}], "thinking": thinking});
        if let Some(e) = effort {
            body["output_config"] = json!({"effort": e});
        }
        gemini(&translate(body))["generationConfig"]["thinkingConfig"].clone()
    };
    let enabled = json!({"type": "enabled", "budget_tokens": 2048});
    assert_eq!(
        config("gemini-2.5-flash", enabled.clone(), None),
        json!({"includeThoughts": true, "thinkingBudget": 2048})
    );
    assert_eq!(config("gemini-3-pro-preview", enabled, None), json!({"includeThoughts": true, "thinkingLevel": "low"}));
    let disabled = json!({"type": "disabled"});
    assert_eq!(
        config("gemini-2.5-flash", disabled.clone(), None),
        json!({"includeThoughts": false, "thinkingBudget": 0})
    );
    assert_eq!(
        config("gemini-2.5-pro", disabled.clone(), None),
        json!({"includeThoughts": false, "thinkingBudget": 128})
    );
    assert_eq!(
        config("gemini-3-flash-preview", disabled, None),
        json!({"includeThoughts": false, "thinkingLevel": "minimal"})
    );
    let adaptive = json!({"type": "adaptive"});
    assert_eq!(
        config("gemini-2.5-pro", adaptive.clone(), None),
        json!({"includeThoughts": true, "thinkingBudget": -1})
    );
    assert_eq!(
        config("gemini-3-pro-preview", adaptive.clone(), Some("medium")),
        json!({"includeThoughts": true, "thinkingLevel": "high"})
    );
    assert_eq!(
        config("gemini-3-flash-preview", adaptive.clone(), Some("medium")),
        json!({"includeThoughts": true, "thinkingLevel": "medium"})
    );
    assert_eq!(config("gemini-2.0-flash", adaptive, None), Value::Null, "a model that does not think takes none");
}

#[test]
fn count_tokens_wraps_the_request() {
    let body =
        json!({"model": "claude-opus-4-5", "messages": [{"role": "user", "content": "count me"}], "system": "sys"});
    let t = request(body.to_string().as_bytes(), &Aliases::default(), true).expect("as expected");
    assert_eq!(t.upstream_path().0, "/models/gemini-3-pro-preview:countTokens");
    let g = gemini(&t);
    assert_eq!(g["generateContentRequest"]["model"], "models/gemini-3-pro-preview");
    assert_eq!(g["generateContentRequest"]["contents"][0]["parts"][0]["text"], "count me");
    assert_eq!(t.reply.answer(br#"{"totalTokens": 42}"#).expect("as expected"), r#"{"input_tokens":42}"#);
}

#[test]
fn bad_requests_say_what_is_wrong() {
    let err = |body: &str| match request(body.as_bytes(), &Aliases::default(), false) {
        Err(ProxyError::BadRequest(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(err("{").contains("not valid JSON"));
    assert!(err("[]").contains("JSON object"));
    assert!(err(r#"{"messages": []}"#).contains("model"));
    assert!(err(r#"{"model": "claude-x"}"#).contains("messages"));
    assert!(
        err(r#"{"model": "claude-x", "messages": [{"role": "tool", "content": "x"}]}"#).contains("messages.0.role")
    );
    assert!(err(r#"{"model": "bad model!", "messages": []}"#).contains("invalid model name"));
    let bad_image = r#"{"model": "claude-x", "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}"#;
    assert!(err(bad_image).contains("messages.0: content.0"));
}

fn reply(thinking: bool) -> Reply {
    Reply { model: "claude-sonnet-4-5".into(), thinking, count: false }
}

fn gemini_answer() -> Value {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Planning the call.", "thought": true},
                {"text": "I'll "},
                {"text": "look."},
                {"functionCall": {"name": "Bash", "args": {"command": "ls"}}, "thoughtSignature": "Q2lR+/=="},
                {"functionCall": {"name": "Read", "args": {"path": "a"}}}
            ]},
            "finishReason": "STOP"
        }],
        "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 30, "cachedContentTokenCount": 40},
        "modelVersion": "gemini-3-pro-preview",
        "responseId": "abcRESP1"
    })
}

#[test]
fn an_answer_becomes_a_message() {
    let m: Value =
        serde_json::from_str(&reply(true).answer(gemini_answer().to_string().as_bytes()).expect("as expected"))
            .expect("as expected");
    assert_eq!(m["id"], "msg_abcRESP1");
    assert_eq!(m["model"], "claude-sonnet-4-5", "the model the client asked for");
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(
        m["usage"],
        json!({"input_tokens": 60, "output_tokens": 50, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 40})
    );
    let content = m["content"].as_array().expect("as expected");
    assert_eq!(content[0], json!({"type": "thinking", "thinking": "Planning the call.", "signature": ""}));
    assert_eq!(content[1], json!({"type": "text", "text": "I'll look."}));
    assert_eq!(content[2]["name"], "Bash");
    assert_eq!(signature::of_call_id(content[2]["id"].as_str().expect("as expected")).as_deref(), Some("Q2lR+/=="));
    assert_eq!(content[3]["input"], json!({"path": "a"}));
    assert_ne!(content[2]["id"], content[3]["id"]);
    // Without thinking asked, no thinking block.
    let m: Value =
        serde_json::from_str(&reply(false).answer(gemini_answer().to_string().as_bytes()).expect("as expected"))
            .expect("as expected");
    assert_eq!(m["content"][0]["type"], "text");
}

#[test]
fn stop_reasons() {
    assert_eq!(stop_reason(Some("STOP"), false, false), "end_turn");
    assert_eq!(stop_reason(Some("MAX_TOKENS"), true, false), "max_tokens");
    assert_eq!(stop_reason(Some("SAFETY"), false, false), "refusal");
    assert_eq!(stop_reason(None, false, true), "refusal");
    assert_eq!(stop_reason(Some("STOP"), true, false), "tool_use");
}

/// The events of a translated stream, as (event name, data).
fn events(out: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(out).expect("as expected");
    assert!(text.ends_with("\n\n") || text.is_empty());
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').expect("as expected");
            let name = name.strip_prefix("event: ").expect("as expected");
            let data: Value =
                serde_json::from_str(data.strip_prefix("data: ").expect("as expected")).expect("as expected");
            assert_eq!(data["type"], name);
            (name.to_owned(), data)
        })
        .collect()
}

fn sse(chunks: &[Value]) -> Vec<u8> {
    chunks.iter().flat_map(|c| format!("data: {c}\r\n\r\n").into_bytes()).collect()
}

fn stream_chunks() -> Vec<Value> {
    vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hmm.", "thought": true}]}}], "usageMetadata": {"promptTokenCount": 12}, "responseId": "R1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}], "responseId": "R1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}], "responseId": "R1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "Bash", "args": {"command": "ls"}}, "thoughtSignature": "c2ln"}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5, "thoughtsTokenCount": 7}, "responseId": "R1"}),
    ]
}

#[test]
fn a_stream_becomes_anthropic_s_events_in_any_chunking() {
    let upstream = sse(&stream_chunks());
    let mut whole = None;
    for size in [1, 7, 64, upstream.len()] {
        let mut s = Stream::new(reply(true));
        let mut out = Vec::new();
        for piece in upstream.chunks(size) {
            s.push(piece, &mut out);
        }
        s.finish(&mut out);
        match &whole {
            None => whole = Some(out),
            Some(w) => assert_eq!(&out, w, "chunks of {size}"),
        }
    }
    let events = events(&whole.expect("as expected"));
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[0].1["message"]["id"], "msg_R1");
    assert_eq!(events[0].1["message"]["model"], "claude-sonnet-4-5");
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 12);
    assert_eq!(events[2].1["content_block"]["type"], "thinking");
    assert_eq!(events[3].1["delta"], json!({"type": "thinking_delta", "thinking": "Hmm."}));
    assert_eq!(events[5].1["index"], 1);
    assert_eq!(events[7].1["delta"], json!({"type": "text_delta", "text": "lo"}));
    let tool = &events[9].1["content_block"];
    assert_eq!((tool["type"].as_str(), tool["name"].as_str()), (Some("tool_use"), Some("Bash")));
    assert_eq!(signature::of_call_id(tool["id"].as_str().expect("as expected")).as_deref(), Some("c2ln"));
    assert_eq!(events[10].1["delta"], json!({"type": "input_json_delta", "partial_json": "{\"command\":\"ls\"}"}));
    assert_eq!(events[12].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[12].1["usage"], json!({"input_tokens": 12, "output_tokens": 12, "cache_read_input_tokens": 0}));
}

#[test]
fn each_event_goes_out_as_it_arrives() {
    let chunks = stream_chunks();
    let mut s = Stream::new(reply(false));
    let mut out = Vec::new();
    s.push(&sse(&chunks[..1]), &mut out);
    // A thought the client does not see is a ping, the connection kept.
    let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["message_start", "ping", "ping"]);
    out.clear();
    s.push(&sse(&chunks[1..2]), &mut out);
    let got = events(&out);
    assert_eq!(got[1].1["delta"]["text"], "Hel", "the text went out before the stream's end");
}

#[test]
fn a_broken_stream_ends_with_an_error_event() {
    let mut s = Stream::new(reply(false));
    let mut out = Vec::new();
    s.push(&sse(&stream_chunks()[1..2]), &mut out);
    s.broke(&mut out);
    s.finish(&mut out);
    let events = events(&out);
    let (last, data) = events.last().expect("as expected");
    assert_eq!(last, "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(!events.iter().any(|(n, _)| n == "message_stop"), "nothing after the error");
}

#[test]
fn an_error_in_google_s_stream_is_an_error_event() {
    let mut s = Stream::new(reply(false));
    let mut out = Vec::new();
    s.push(
        &sse(&[json!({"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}})]),
        &mut out,
    );
    s.finish(&mut out);
    let events = events(&out);
    assert_eq!(events.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["message_start", "ping", "error"]);
    assert_eq!(events[2].1["error"]["message"], "Internal error encountered.");
}

#[test]
fn an_empty_stream_still_ends_properly() {
    let mut s = Stream::new(reply(false));
    let mut out = Vec::new();
    s.finish(&mut out);
    let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["message_start", "ping", "message_delta", "message_stop"]);
}
