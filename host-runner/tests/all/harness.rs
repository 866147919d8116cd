use fake_upstream::{FakeUpstream, Mechanism};
use host_runner::clock::ManualClock;
use host_runner::config::HostConfig;
use host_runner::proxy::WasiHttp;
use host_runner::server::{Server, ServerOptions};
use proxy_core::UnixMillis;
use proxy_core::wire::time::{DAY_MS, HOUR_MS, days_from_civil};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The `wasi:http` the tests serve the component on: 0.2, or 0.3 when
/// `GEMINI_PROXY_WASI_HTTP=0.3` (`scripts/test` runs the suite on both).
pub fn wasi_http() -> WasiHttp {
    match std::env::var("GEMINI_PROXY_WASI_HTTP") {
        Ok(v) => v.parse().unwrap_or_else(|e| panic!("GEMINI_PROXY_WASI_HTTP: {e}")),
        Err(_) => WasiHttp::default(),
    }
}

/// Fake but realistic pool keys.
pub fn pool_keys(n: usize) -> Vec<String> {
    (0..n).map(|i| proxy_core::test_support::fake_key("TESTpoolKEY", i)).collect()
}

pub const PROXY_KEY: &str = "AQ.proxyACCESSkey0123456789abcdef";
pub const ADMIN_KEY: &str = "AQ.adminACCESSkey0123456789abcdef";
pub const VAULT_SECRET: &str = "a-long-random-secret-only-the-tests-know";

/// 2026-11-27 10:00 UTC (winter: Pacific midnight is 08:00 UTC).
pub fn start_time() -> UnixMillis {
    UnixMillis(days_from_civil(2026, 11, 27) as u64 * DAY_MS + 10 * HOUR_MS)
}

pub struct Harness {
    pub fake: FakeUpstream,
    pub server: Option<Server>,
    pub clock: Arc<ManualClock>,
    pub keys: Vec<String>,
    pub proxy_key: Option<String>,
    pub db: PathBuf,
    pub limits: host_runner::conn::ConnectionLimits,
    /// Extra variables of the proxy's configuration (timeouts, say).
    pub vars: Vec<(String, String)>,
    /// TLS for the listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether the host reads Google's models list at start and after its
    /// daily reset (off: most tests count the upstream's requests).
    pub list_models: bool,
    _dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Harness {
    pub async fn new(keys: usize) -> Self {
        Self::with(pool_keys(keys), None).await
    }

    pub async fn with(keys: Vec<String>, proxy_key: Option<&str>) -> Self {
        let fake = FakeUpstream::start().await.expect("fake upstream");
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("keys.sqlite3");
        let mut h = Self {
            fake,
            server: None,
            clock: Arc::new(ManualClock::new(start_time())),
            keys,
            proxy_key: proxy_key.map(str::to_owned),
            db,
            limits: host_runner::conn::ConnectionLimits::default(),
            vars: Vec::new(),
            tls: None,
            list_models: false,
            _dir: dir,
            http: reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client"),
        };
        h.start().await;
        h
    }

    pub async fn start(&mut self) {
        let mut vars = HashMap::from([
            ("API_KEYS".to_owned(), self.keys.join(",")),
            ("GEMINI_UPSTREAM_URL".to_owned(), self.fake.gemini_base()),
            ("OPENAI_UPSTREAM_URL".to_owned(), self.fake.openai_base()),
        ]);
        if let Some(k) = &self.proxy_key {
            vars.insert("PROXY_API_KEY".into(), k.clone());
        }
        vars.extend(self.vars.iter().cloned());
        let config = HostConfig::from_vars(&vars).expect("config");
        let server = Server::start(ServerOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            db: self.db.clone(),
            reset_cron: "0 7 * * *".parse().expect("cron"),
            config,
            clock: self.clock.clone(),
            component_path: wasi_http().component_path().to_owned(),
            wasi_http: wasi_http(),
            compile_cache: None,
            limits: self.limits,
            tls: self.tls.clone(),
            list_models: self.list_models,
        })
        .await
        .expect("server starts");
        self.server = Some(server);
    }

    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(2)).await;
        }
        self.start().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.as_ref().expect("running").addr())
    }

    /// A Gemini-native POST with `x-goog-api-key` (the proxy key, or any key
    /// when the proxy is open).
    pub async fn gemini(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("x-goog-api-key", self.proxy_key.clone().unwrap_or_else(|| "client-key".into()))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn generate(&self, model: &str) -> reqwest::Response {
        self.gemini(
            &format!("/v1beta/models/{model}:generateContent"),
            serde_json::json!({"contents": [{"parts": [{"text": "hi"}]}]}),
        )
        .await
    }

    pub async fn openai(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(self.proxy_key.clone().unwrap_or_else(|| "client-key".into()))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn stats(&self) -> serde_json::Value {
        let mut req = self.http.get(self.url("/stat.json"));
        if let Some(k) = &self.proxy_key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.expect("stats");
        assert_eq!(r.status(), 200);
        r.json().await.expect("json")
    }

    /// Keys the fake saw, in order.
    pub fn keys_seen(&self) -> Vec<String> {
        self.fake.requests().iter().map(|r| r.key().expect("exactly one credential").to_owned()).collect()
    }

    /// Asserts every upstream request carried exactly one credential, a
    /// pool key, by the mechanism of its API.
    pub fn assert_only_pool_keys_upstream(&self) {
        for r in self.fake.requests() {
            assert_eq!(r.credentials.len(), 1, "{r:?}");
            let (mech, key) = &r.credentials[0];
            assert!(self.keys.contains(key), "upstream got a non-pool credential on {}", r.path);
            let expected =
                if r.path.starts_with("/v1beta/openai/") { Mechanism::Bearer } else { Mechanism::GoogApiKey };
            assert_eq!(*mech, expected, "{}", r.path);
        }
    }

    /// Turns the admin API on (with run-time keys sealed) for the next start.
    pub fn with_admin(&mut self) {
        self.vars.push(("ADMIN_API_KEY".into(), ADMIN_KEY.into()));
        self.vars.push(("KEY_ENCRYPTION_SECRET".into(), VAULT_SECRET.into()));
    }

    /// An admin call with the admin key; `body` none: no body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(ADMIN_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("admin request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
    }

    pub fn id_of(&self, key: &str) -> String {
        proxy_core::ApiKey::new(key).id().as_str().to_owned()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.store().close();
        }
    }
}
