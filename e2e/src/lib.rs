//! The end-to-end scenario list, run over HTTP against a proxy whose URL
//! comes from the environment, in front of the fake upstream (driven
//! through its `/_fake/…` control routes). The same list runs against
//! host-runner and against the Worker in `wrangler dev`.
//!
//! Environment: `E2E_PROXY_URL`, `E2E_FAKE_ORIGIN`, `E2E_POOL_KEYS`
//! (comma-separated, as configured in the proxy), `E2E_PROXY_KEY` (empty:
//! the proxy is open), `E2E_ADMIN_KEY`, `E2E_STORE_DIR` (where the host keeps
//! its key store: the SQLite file's directory, or `wrangler dev`'s
//! `--persist-to`), `E2E_HOST` (`host-runner` or `wrangler`).
#![deny(missing_docs)]

use serde_json::{Value, json};
use std::time::Duration;

/// What [`Target::upload_file`] saw.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The file's name (`files/…`).
    pub name: String,
    /// The upload URL the proxy handed out.
    pub url: String,
    /// The start answer's headers.
    pub start_headers: Vec<(String, String)>,
    /// The last chunk's answer, as sent.
    pub final_answer: String,
}

/// The proxy under test and its fake upstream.
#[derive(Debug, Clone)]
pub struct Target {
    /// Proxy base URL.
    pub proxy: String,
    /// Fake upstream origin.
    pub fake: String,
    /// Pool keys configured in the proxy.
    pub keys: Vec<String>,
    /// The proxy's access key (empty: an open proxy).
    pub proxy_key: String,
    /// The admin API's key.
    pub admin_key: String,
    /// Where the host keeps its key store on disk.
    pub store_dir: std::path::PathBuf,
    /// Which host serves: `host-runner` or `wrangler` (`E2E_HOST`).
    pub host: String,
    /// HTTP client.
    pub http: reqwest::Client,
}

impl Target {
    /// From the environment. Panics, naming the variable, when one is unset:
    /// a scenario without its proxy fails loudly rather than passing.
    pub fn from_env() -> Self {
        let get = |v: &str| {
            std::env::var(v).unwrap_or_else(|_| {
                panic!("{v} is unset: the e2e scenarios run against a proxy that scripts/e2e starts")
            })
        };
        let proxy = get("E2E_PROXY_URL");
        Self {
            proxy: proxy.trim_end_matches('/').to_owned(),
            fake: get("E2E_FAKE_ORIGIN"),
            keys: get("E2E_POOL_KEYS").split(',').map(str::to_owned).collect(),
            proxy_key: get("E2E_PROXY_KEY"),
            admin_key: get("E2E_ADMIN_KEY"),
            store_dir: get("E2E_STORE_DIR").into(),
            host: get("E2E_HOST"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
        }
    }

    /// From the environment, after resetting the fake and the proxy to a
    /// fresh state.
    pub async fn fresh_from_env() -> Self {
        let t = Self::from_env();
        t.fresh().await;
        t
    }

    /// `POST /_fake/…` on the fake.
    pub async fn fake(&self, path: &str, body: Value) {
        let r = self.http.post(format!("{}/_fake/{path}", self.fake)).json(&body).send().await.expect("fake control");
        assert!(r.status().is_success(), "fake control {path}");
    }

    /// Scripts a key's behavior on the fake.
    pub async fn behave(&self, key: &str, behavior: &str) {
        self.fake("behavior", json!({"key": key, "behavior": behavior})).await;
    }

    /// The requests the fake recorded.
    pub async fn upstream_requests(&self) -> Vec<Value> {
        let r = self.http.get(format!("{}/_fake/requests", self.fake)).send().await.expect("requests");
        r.json::<Vec<Value>>().await.expect("json")
    }

    /// Keys the upstream saw, in order (asserting one credential each).
    pub async fn keys_seen(&self) -> Vec<String> {
        self.upstream_requests()
            .await
            .iter()
            .map(|r| {
                let creds = r["credentials"].as_array().expect("credentials");
                assert_eq!(creds.len(), 1, "exactly one credential upstream: {r}");
                creds[0][1].as_str().expect("key").to_owned()
            })
            .collect()
    }

    /// Fresh state: fake reset, proxy marks and counters cleared.
    pub async fn fresh(&self) {
        self.fake("reset", json!({})).await;
        let reset = self.http.post(format!("{}/stat/reset", self.proxy));
        // An open proxy takes a reset with the page's action header (what a
        // cross-site form cannot send) in place of a key.
        let reset = if self.proxy_key.is_empty() {
            reset.header("x-gemini-proxy-action", "reset")
        } else {
            reset.bearer_auth(&self.proxy_key)
        };
        let r = reset.send().await.expect("reset");
        assert_eq!(r.status(), 200, "POST /stat/reset");
    }

    /// A Gemini-native generateContent.
    pub async fn generate(&self, model: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1beta/models/{model}:generateContent", self.proxy))
            .header("x-goog-api-key", &self.proxy_key)
            .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
            .send()
            .await
            .expect("generate")
    }

    /// Uploads `size` bytes through the proxy in Google's resumable
    /// protocol, as the Python SDK does: the start with the proxy's key,
    /// the chunk to the upload URL handed out, with no credential. Checks
    /// that the URL is the proxy's own.
    pub async fn upload_file(&self, size: usize, mime: &str) -> Uploaded {
        self.upload_file_as(&self.proxy_key, size, mime).await
    }

    /// [`Self::upload_file`], started with `key` (a client's).
    pub async fn upload_file_as(&self, key: &str, size: usize, mime: &str) -> Uploaded {
        let start = self
            .http
            .post(format!("{}/upload/v1beta/files", self.proxy))
            .header("x-goog-api-key", key)
            .header("x-goog-upload-protocol", "resumable")
            .header("x-goog-upload-command", "start")
            .header("x-goog-upload-header-content-length", size.to_string())
            .header("x-goog-upload-header-content-type", mime)
            .json(&json!({"file": {"displayName": "e2e.bin"}}))
            .send()
            .await
            .expect("start");
        assert_eq!(start.status(), 200);
        let start_headers: Vec<(String, String)> = start
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let url = start_headers.iter().find(|(n, _)| n == "x-goog-upload-url").expect("an upload URL").1.clone();
        let ours = format!("{}/upload/v1beta/files?upload_id=", self.proxy);
        assert!(url.starts_with(&ours), "the upload URL is not the proxy's own: {url}");
        let done = self
            .http
            .post(&url)
            .header("x-goog-upload-command", "upload, finalize")
            .header("x-goog-upload-offset", "0")
            .body(vec![b'%'; size])
            .send()
            .await
            .expect("chunk");
        assert_eq!(done.status(), 200);
        let final_answer = done.text().await.expect("body");
        let file: Value = serde_json::from_str(&final_answer).expect("json");
        let name = file["file"]["name"].as_str().expect("a file name").to_owned();
        Uploaded { name, url, start_headers, final_answer }
    }

    /// Fails unless every credential that reached the upstream was a pool
    /// key.
    pub async fn assert_only_pool_keys_upstream(&self) {
        for k in self.keys_seen().await {
            assert!(self.keys.contains(&k), "a non-pool credential went upstream");
        }
    }

    /// An OpenAI chat completion.
    pub async fn chat(&self, model: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.proxy))
            .bearer_auth(&self.proxy_key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("chat")
    }

    /// `/stat.json`.
    pub async fn stats(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/stat.json", self.proxy))
            .bearer_auth(&self.proxy_key)
            .send()
            .await
            .expect("stats");
        assert_eq!(r.status(), 200);
        r.json().await.expect("json")
    }

    /// `/stat.json` once `done` holds of it, polled for about 5 s at most
    /// (the Worker's reports land a moment after the answers); the last
    /// snapshot either way.
    pub async fn stats_when(&self, done: impl Fn(&Value) -> bool) -> Value {
        let mut stats = self.stats().await;
        for _ in 0..100 {
            if done(&stats) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            stats = self.stats().await;
        }
        stats
    }

    /// An admin API call; `body` none: no body. The status and the JSON answer.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.proxy)).bearer_auth(&self.admin_key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("admin request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("admin body");
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("admin answer is not JSON: {text}")))
    }

    /// A key's id as the proxy shows it, looked up in the admin list by its
    /// masked form.
    pub async fn key_id(&self, key: &str) -> String {
        let (_, list) = self.admin(reqwest::Method::GET, "/admin/keys", None).await;
        let masked = masked(key);
        let rows: Vec<&Value> =
            list["keys"].as_array().expect("keys").iter().filter(|k| k["key"] == masked.as_str()).collect();
        assert!(rows.len() <= 1, "{masked} is ambiguous: give the scenario's keys distinct tails");
        rows.first()
            .and_then(|k| k["id"].as_str())
            .unwrap_or_else(|| panic!("{masked} is not in the pool: {list}"))
            .to_owned()
    }

    /// Every file of the host's key store, read byte for byte, with its path.
    pub fn store_files(&self) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.store_dir, &mut out);
        out
    }

    /// The stats row of a pool key, by its masked form.
    pub fn key_row<'a>(&self, stats: &'a Value, key: &str) -> &'a Value {
        let masked = masked(key);
        stats["keys"].as_array().expect("keys").iter().find(|k| k["key"] == masked.as_str()).expect("key row")
    }
}

/// A key as the proxy shows it: its first 4 and last 4 characters.
pub fn masked(key: &str) -> String {
    format!("{}…{}", &key[..4], &key[key.len() - 4..])
}
