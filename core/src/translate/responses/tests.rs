use super::*;
use crate::config::aliases::Aliases;
use crate::request::route::Op;
use crate::translate::{Translated, signature};
use crate::wire::error::ProxyError;
use serde_json::json;

fn translate(body: Value) -> Translated {
    request(body.to_string().as_bytes(), &Aliases::default()).expect("translates")
}

fn gemini(t: &Translated) -> Value {
    serde_json::from_slice(&t.body).expect("json")
}

fn reply(t: &Translated) -> Reply {
    match &t.reply {
        crate::translate::Reply::Responses(r) => (**r).clone(),
        other => panic!("not a Responses reply: {other:?}"),
    }
}

/// What Codex 0.169 sends, cut down.
fn codex_turn(input: Vec<Value>) -> Value {
    json!({
        "model": "gpt-5-codex",
        "instructions": "You are Codex.",
        "input": input,
        "tools": [
            {"type": "function", "name": "exec_command", "description": "Runs a command", "strict": false,
             "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}, "workdir": {"type": ["string", "null"]}},
                            "required": ["cmd"], "additionalProperties": false}},
            {"type": "web_search"},
            {"type": "namespace", "name": "mcp", "tools": []}
        ],
        "tool_choice": "auto", "parallel_tool_calls": true, "store": false, "stream": true,
        "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "medium", "summary": "auto"},
        "prompt_cache_key": "0199-abc", "text": {"verbosity": "medium"}
    })
}

#[test]
fn a_codex_turn_becomes_a_gemini_stream_request() {
    let t = translate(codex_turn(vec![
        json!({"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: none."}]}),
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list the files"}]}),
    ]));
    assert_eq!((t.model.as_str(), t.op), ("gemini-3-flash-preview", Op::StreamGenerateContent));
    let g = gemini(&t);
    assert_eq!(g["systemInstruction"]["parts"], json!([{"text": "You are Codex."}, {"text": "Sandbox: none."}]));
    assert_eq!(g["contents"], json!([{"role": "user", "parts": [{"text": "list the files"}]}]));
    let declaration = &g["tools"][0]["functionDeclarations"][0];
    assert_eq!(declaration["name"], "exec_command");
    // The schema goes whole: type lists and additionalProperties included.
    assert_eq!(declaration["parametersJsonSchema"]["properties"]["workdir"]["type"], json!(["string", "null"]));
    assert_eq!(g["tools"].as_array().map(Vec::len), Some(1), "no Google Search beside functions: {g}");
    assert_eq!(g["toolConfig"]["functionCallingConfig"]["mode"], "AUTO");
    assert_eq!(g["generationConfig"]["thinkingConfig"], json!({"includeThoughts": true, "thinkingLevel": "medium"}));
    assert!(t.notes.iter().any(|n| n.contains("namespace")), "{:?}", t.notes);
    assert!(t.notes.iter().any(|n| n.contains("web_search")), "{:?}", t.notes);
    let r = reply(&t);
    assert!(r.reasoning && r.encrypted && r.model == "gpt-5-codex");
    assert_eq!(r.echo["tool_choice"], "auto");
}

#[test]
fn calls_and_their_outputs_go_back_with_their_signatures() {
    let signed = signature::call_id(signature::OPENAI_CALL, "r1", 0, Some("CiQBjz1rX+/sig=="));
    let unsigned = "call_from_elsewhere";
    let t = translate(codex_turn(vec![
        json!({"role": "user", "content": "run ls"}),
        json!({"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "I will list."}],
               "encrypted_content": signature::thinking("VGhvdWdodA==")}),
        json!({"type": "function_call", "id": "fc_1", "call_id": signed, "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"}),
        json!({"type": "function_call_output", "call_id": signed, "output": "a.txt\nb.txt"}),
        json!({"type": "function_call", "call_id": unsigned, "name": "exec_command", "arguments": "{\"cmd\":\"pwd\"}"}),
        json!({"type": "function_call_output", "call_id": unsigned, "output": [{"type": "input_text", "text": "/tmp"}]}),
        json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]}),
    ]));
    let contents = gemini(&t)["contents"].clone();
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(
        contents[1]["parts"][0],
        json!({"text": "I will list.", "thought": true, "thoughtSignature": "VGhvdWdodA=="})
    );
    assert_eq!(
        contents[1]["parts"][1],
        json!({"functionCall": {"name": "exec_command", "args": {"cmd": "ls"}}, "thoughtSignature": "CiQBjz1rX+/sig=="})
    );
    assert_eq!(
        contents[2]["parts"][0]["functionResponse"],
        json!({"name": "exec_command", "response": {"output": "a.txt\nb.txt"}})
    );
    // A call that lost its signature, first of its turn on Gemini 3: the placeholder.
    assert_eq!(contents[3]["parts"][0]["thoughtSignature"], signature::PLACEHOLDER);
    assert_eq!(contents[4]["parts"][0]["functionResponse"]["response"]["output"], "/tmp");
    assert_eq!(contents[5], json!({"role": "model", "parts": [{"text": "Done."}]}));
    assert!(t.notes.iter().any(|n| n.contains("placeholder")), "{:?}", t.notes);
}

#[test]
fn what_the_proxy_cannot_keep_is_refused_clearly_and_the_rest_ignored() {
    for kept in [json!({"previous_response_id": "resp_1"}), json!({"conversation": "conv_1"})] {
        let mut body = json!({"model": "gemini-2.5-flash", "input": "hi"});
        body.as_object_mut().expect("object").extend(kept.as_object().expect("object").clone());
        match request(body.to_string().as_bytes(), &Aliases::default()) {
            Err(ProxyError::BadRequest(m)) => assert!(m.contains("whole conversation"), "{m}"),
            other => panic!("not refused: {other:?}"),
        }
    }
    let t = translate(json!({
        "model": "gemini-2.5-flash", "input": "hi", "store": true, "metadata": {"a": "b"}, "truncation": "auto",
        "service_tier": "auto", "user": "u", "safety_identifier": "s", "stream_options": {"include_obfuscation": false},
        "a_member_openai_adds_tomorrow": {"x": 1}, "previous_response_id": null
    }));
    assert_eq!(gemini(&t)["contents"], json!([{"role": "user", "parts": [{"text": "hi"}]}]));
    assert_eq!(t.op, Op::GenerateContent);
    match request(br#"{"input": "hi"}"#, &Aliases::default()) {
        Err(ProxyError::BadRequest(m)) => assert!(m.contains("model")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn structured_output_media_and_freeform_tools() {
    let t = translate(json!({
        "model": "gemini-3-flash-preview",
        "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
            {"type": "input_image", "image_url": "https://example.com/cat.webp?x=1"},
            {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}
        ]}],
        "text": {"format": {"type": "json_schema", "name": "answer", "strict": true,
                            "schema": {"type": "object", "properties": {"kind": {"type": "string"}}, "required": ["kind"]}}},
        "tools": [{"type": "custom", "name": "apply_patch", "description": "Edits files"}],
        "tool_choice": {"type": "custom", "name": "apply_patch"},
        "max_output_tokens": 300, "temperature": 0.2, "reasoning": {"effort": "low"}
    }));
    let g = gemini(&t);
    let parts = &g["contents"][0]["parts"];
    assert_eq!(parts[1], json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}));
    assert_eq!(
        parts[2],
        json!({"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?x=1"}})
    );
    assert_eq!(parts[3]["inlineData"]["mimeType"], "application/pdf");
    let config = &g["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(config["responseJsonSchema"]["required"], json!(["kind"]));
    assert_eq!((config["maxOutputTokens"].clone(), config["temperature"].clone()), (json!(300), json!(0.2)));
    assert_eq!(config["thinkingConfig"], json!({"includeThoughts": false, "thinkingLevel": "low"}));
    assert_eq!(g["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["required"], json!(["input"]));
    assert_eq!(
        g["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["apply_patch"]})
    );
    assert_eq!(reply(&t).custom, ["apply_patch"]);
    // An image the proxy cannot hand to Gemini is refused with where it is.
    let bad = json!({"model": "gemini-2.5-flash", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]});
    match request(bad.to_string().as_bytes(), &Aliases::default()) {
        Err(ProxyError::BadRequest(m)) => {
            assert!(m.starts_with("input[0]: content[0]") && m.contains("file_id"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn before_gemini_3_a_json_answer_beside_tools_is_asked_in_words() {
    let schema = json!({"type": "object", "properties": {"kind": {"type": "string"}}});
    let body = |model: &str| {
        json!({"model": model, "input": "go", "instructions": "Be brief.",
               "tools": [{"type": "function", "name": "look", "parameters": {"type": "object"}}],
               "text": {"format": {"type": "json_schema", "name": "a", "schema": schema}}})
    };
    let t = translate(body("gemini-2.5-flash"));
    let g = gemini(&t);
    assert!(g["generationConfig"].get("responseMimeType").is_none(), "{g}");
    let asked = g["systemInstruction"]["parts"][1]["text"].as_str().expect("the format in words");
    assert!(asked.contains("JSON") && asked.contains(r#""kind""#), "{asked}");
    assert!(t.notes.iter().any(|n| n.contains("in the instructions")), "{:?}", t.notes);
    // Gemini 3 takes both: the schema goes as Google's.
    let g = gemini(&translate(body("gemini-3-pro-preview")));
    assert_eq!(g["generationConfig"]["responseJsonSchema"], schema);
    assert_eq!(g["systemInstruction"]["parts"].as_array().map(Vec::len), Some(1));
    // No tools, no change before Gemini 3 either.
    let mut plain = body("gemini-2.5-flash");
    plain.as_object_mut().expect("object").remove("tools");
    assert_eq!(gemini(&translate(plain))["generationConfig"]["responseMimeType"], "application/json");
}

#[test]
fn allowed_tools_in_auto_mode_cut_the_declarations() {
    let tools = json!([
        {"type": "function", "name": "a", "parameters": {"type": "object"}},
        {"type": "function", "name": "b", "parameters": {"type": "object"}}
    ]);
    let choice =
        |mode: &str| json!({"type": "allowed_tools", "mode": mode, "tools": [{"type": "function", "name": "b"}]});
    let g = gemini(&translate(
        json!({"model": "gemini-2.5-flash", "input": "x", "tools": tools, "tool_choice": choice("auto")}),
    ));
    assert_eq!(g["tools"][0]["functionDeclarations"].as_array().map(Vec::len), Some(1));
    assert_eq!(g["tools"][0]["functionDeclarations"][0]["name"], "b");
    // Google takes allowedFunctionNames with ANY only.
    assert_eq!(g["toolConfig"]["functionCallingConfig"], json!({"mode": "AUTO"}));
    let g = gemini(&translate(
        json!({"model": "gemini-2.5-flash", "input": "x", "tools": tools, "tool_choice": choice("required")}),
    ));
    assert_eq!(g["tools"][0]["functionDeclarations"].as_array().map(Vec::len), Some(2));
    assert_eq!(g["toolConfig"]["functionCallingConfig"], json!({"mode": "ANY", "allowedFunctionNames": ["b"]}));
}

#[test]
fn an_item_reference_is_refused_and_an_orphan_output_told_as_text() {
    let body = json!({"model": "gemini-2.5-flash", "input": [
        {"role": "user", "content": "hi"}, {"type": "item_reference", "id": "msg_1"}
    ]});
    match request(body.to_string().as_bytes(), &Aliases::default()) {
        Err(ProxyError::BadRequest(m)) => assert!(m.starts_with("input[1]") && m.contains("store"), "{m}"),
        other => panic!("not refused: {other:?}"),
    }
    let t = translate(json!({"model": "gemini-2.5-flash", "input": [
        {"role": "user", "content": "go on"},
        {"type": "function_call_output", "call_id": "call_gone", "output": "42 files"}
    ]}));
    let g = gemini(&t);
    assert_eq!(
        g["contents"],
        json!([{"role": "user", "parts": [{"text": "go on"}, {"text": "The output of the earlier tool call call_gone:\n42 files"}]}])
    );
    assert!(t.notes.iter().any(|n| n.contains("sent as text")), "{:?}", t.notes);
}

#[test]
fn a_summary_of_none_shows_no_thoughts() {
    for (summary, shown) in [("none", false), ("auto", true), ("detailed", true)] {
        let t = translate(
            json!({"model": "gemini-2.5-flash", "input": "x", "reasoning": {"effort": "low", "summary": summary}}),
        );
        assert_eq!(gemini(&t)["generationConfig"]["thinkingConfig"]["includeThoughts"], json!(shown), "{summary}");
        assert_eq!(reply(&t).reasoning, shown, "{summary}");
    }
}

const SIGNED_CALL: &str = r#"{"responseId": "R1", "candidates": [{"content": {"role": "model", "parts": [
    {"text": "Let me look.", "thought": true, "thoughtSignature": "VGg="},
    {"text": "Listing."},
    {"functionCall": {"name": "exec_command", "args": {"cmd": "ls"}}, "thoughtSignature": "Q2lR+/=="},
    {"functionCall": {"name": "apply_patch", "args": {"input": "*** Begin Patch"}}}
]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 40,
    "candidatesTokenCount": 20, "thoughtsTokenCount": 7, "totalTokenCount": 127}}"#;

fn codex_reply() -> Reply {
    let mut r = reply(&translate(codex_turn(vec![json!({"role": "user", "content": "hi"})])));
    r.custom = vec!["apply_patch".into()];
    r.created_at = 1_800_000_000;
    r
}

#[test]
fn a_whole_answer_is_a_response_with_its_items_and_usage() {
    let v: Value = serde_json::from_str(&codex_reply().answer(SIGNED_CALL.as_bytes()).expect("answers")).expect("json");
    assert_eq!(
        (v["object"].as_str(), v["status"].as_str(), v["model"].as_str()),
        (Some("response"), Some("completed"), Some("gpt-5-codex"))
    );
    assert_eq!(v["created_at"], 1_800_000_000);
    let output = v["output"].as_array().expect("output");
    let kinds: Vec<&str> = output.iter().filter_map(|i| i["type"].as_str()).collect();
    assert_eq!(kinds, ["reasoning", "message", "function_call", "custom_tool_call"]);
    assert_eq!(output[0]["summary"], json!([{"type": "summary_text", "text": "Let me look."}]));
    assert_eq!(signature::of_thinking(output[0]["encrypted_content"].as_str().expect("encrypted")), Some("VGg="));
    assert_eq!(output[1]["content"][0]["text"], "Listing.");
    let call_id = output[2]["call_id"].as_str().expect("call id");
    assert!(call_id.starts_with("call_R1_0_s"), "{call_id}");
    assert_eq!(signature::of_call_id(call_id).as_deref(), Some("Q2lR+/=="));
    assert_eq!(output[2]["arguments"], r#"{"cmd":"ls"}"#);
    assert_eq!(output[3]["input"], "*** Begin Patch");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 40}, "output_tokens": 27,
               "output_tokens_details": {"reasoning_tokens": 7}, "total_tokens": 127})
    );
    let cut = r#"{"candidates": [{"content": {"parts": [{"text": "Half"}]}, "finishReason": "MAX_TOKENS"}]}"#;
    let v: Value = serde_json::from_str(&codex_reply().answer(cut.as_bytes()).expect("answers")).expect("json");
    assert_eq!(
        (v["status"].as_str(), v["incomplete_details"]["reason"].as_str()),
        (Some("incomplete"), Some("max_output_tokens"))
    );
}

fn events(out: &[u8]) -> Vec<Value> {
    let text = String::from_utf8(out.to_vec()).expect("utf-8");
    text.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect()
}

#[test]
fn a_stream_is_the_responses_event_sequence_as_it_arrives() {
    let mut s = Stream::new(codex_reply());
    let sse = |v: Value| format!("data: {v}\r\n\r\n");
    let mut out = Vec::new();
    s.push(sse(json!({"responseId": "R2", "candidates": [{"content": {"parts": [{"text": "Thinking", "thought": true}]}}]})).as_bytes(), &mut out);
    s.push(sse(json!({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]})).as_bytes(), &mut out);
    // The first text is out before the stream ends.
    assert!(events(&out).iter().any(|e| e["type"] == "response.output_text.delta" && e["delta"] == "Hel"));
    s.push(sse(json!({"candidates": [{"content": {"parts": [{"text": "lo"},
        {"functionCall": {"name": "exec_command", "args": {"cmd": "ls"}}, "thoughtSignature": "c2ln"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 3, "totalTokenCount": 12}})).as_bytes(), &mut out);
    s.finish(&mut out);
    let all = events(&out);
    let kinds: Vec<&str> = all.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let numbers: Vec<u64> = all.iter().filter_map(|e| e["sequence_number"].as_u64()).collect();
    assert_eq!(numbers, (0..all.len() as u64).collect::<Vec<_>>());
    let done = &all[all.len() - 1]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][1]["content"][0]["text"], "Hello");
    assert_eq!(signature::of_call_id(done["output"][2]["call_id"].as_str().expect("id")).as_deref(), Some("c2ln"));
    assert_eq!(done["usage"]["total_tokens"], 12);
    // Items point at their place in the output.
    assert!(all.iter().filter(|e| e["type"] == "response.output_item.added").map(|e| e["output_index"].as_u64()).eq([
        Some(0),
        Some(1),
        Some(2)
    ]));
}

#[test]
fn a_broken_stream_ends_with_response_failed_and_nothing_after() {
    let mut s = Stream::new(codex_reply());
    let mut out = Vec::new();
    s.push(b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}]}}]}\r\n\r\n", &mut out);
    s.broke(&mut out);
    s.finish(&mut out);
    let all = events(&out);
    let last = all.last().expect("events");
    assert_eq!((last["type"].as_str(), last["response"]["status"].as_str()), (Some("response.failed"), Some("failed")));
    assert_eq!(last["response"]["error"]["code"], "server_error");
    // A hidden thought shows the client a comment, nothing it parses.
    let mut s = Stream::new(Reply { reasoning: false, encrypted: false, ..codex_reply() });
    let mut out = Vec::new();
    s.push(
        b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"hmm\", \"thought\": true}]}}]}\r\n\r\n",
        &mut out,
    );
    assert!(String::from_utf8_lossy(&out).ends_with("\n\n: thinking\n\n"), "{}", String::from_utf8_lossy(&out));
}
