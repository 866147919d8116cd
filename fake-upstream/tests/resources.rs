//! The fake's projects over HTTP: an upload, then its file seen only by
//! the key that uploaded it.

use fake_upstream::FakeUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: &str = "AIzaSyFAKEprojectA00000000000000000000";
const B: &str = "AIzaSyFAKEprojectB00000000000000000000";

/// One HTTP/1.1 exchange: the status, the headers (lowercase names) and
/// the body.
async fn call(
    fake: &FakeUpstream,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let addr = fake.origin().trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

#[tokio::test]
async fn an_uploaded_file_belongs_to_the_key_that_uploaded_it() {
    let fake = FakeUpstream::start().await.expect("fake");
    let meta = br#"{"file":{"displayName":"report"}}"#;
    let start = [
        ("content-type", "application/json"),
        ("x-goog-upload-protocol", "resumable"),
        ("x-goog-upload-command", "start"),
        ("x-goog-upload-header-content-length", "6"),
        ("x-goog-upload-header-content-type", "text/plain"),
    ];
    let (status, headers, _) = call(&fake, "POST", &format!("/upload/v1beta/files?key={A}"), &start, meta).await;
    assert_eq!(status, 200);
    let url = headers.iter().find(|(n, _)| n == "x-goog-upload-url").map(|(_, v)| v.clone()).expect("upload url");
    assert!(url.starts_with(&fake.origin()) && url.contains(&format!("key={A}")), "{url}");
    let target = url.trim_start_matches(&fake.origin()).to_owned();
    // Chunks carry no key, as the Python SDK sends them.
    let chunk =
        |cmd: &'static str, offset: &'static str| [("x-goog-upload-command", cmd), ("x-goog-upload-offset", offset)];
    let (status, headers, _) = call(&fake, "POST", &target, &chunk("upload", "0"), b"abc").await;
    assert_eq!(status, 200);
    assert!(headers.contains(&("x-goog-upload-status".into(), "active".into())), "{headers:?}");
    let (status, headers, body) = call(&fake, "POST", &target, &chunk("upload, finalize", "3"), b"def").await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains(&("x-goog-upload-status".into(), "final".into())), "{headers:?}");
    let file: serde_json::Value = serde_json::from_str(&body).expect("json");
    let name = file["file"]["name"].as_str().expect("name").to_owned();
    let uri = file["file"]["uri"].as_str().expect("uri").to_owned();
    assert_eq!(file["file"]["sizeBytes"], "6");

    let get = |key: &'static str| [("x-goog-api-key", key)];
    assert_eq!(call(&fake, "GET", &format!("/v1beta/{name}"), &get(A), b"").await.0, 200);
    let (status, _, body) = call(&fake, "GET", &format!("/v1beta/{name}"), &get(B), b"").await;
    assert_eq!(status, 403);
    assert!(body.contains("You do not have permission to access the File"), "{body}");
    let prompt =
        format!(r#"{{"contents":[{{"parts":[{{"fileData":{{"fileUri":"{uri}"}}}},{{"text":"summarize"}}]}}]}}"#);
    let generate = "/v1beta/models/gemini-2.5-flash:generateContent";
    let json = |key: &'static str| [("x-goog-api-key", key), ("content-type", "application/json")];
    assert_eq!(call(&fake, "POST", generate, &json(B), prompt.as_bytes()).await.0, 403);
    assert_eq!(call(&fake, "POST", generate, &json(A), prompt.as_bytes()).await.0, 200);
    let (status, _, body) = call(&fake, "GET", "/v1beta/files", &get(A), b"").await;
    assert_eq!(status, 200);
    assert!(body.contains(&name), "{body}");
    assert!(!call(&fake, "GET", "/v1beta/files", &get(B), b"").await.2.contains(&name));
    assert_eq!(call(&fake, "DELETE", &format!("/v1beta/{name}"), &get(A), b"").await.0, 200);
    assert_eq!(call(&fake, "GET", &format!("/v1beta/{name}"), &get(A), b"").await.0, 403);
}
