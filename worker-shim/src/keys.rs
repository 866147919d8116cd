//! The Worker's side of the key store: requests to the one global
//! `API_KEY_MANAGER` Durable Object. A failure (the object unreachable, or
//! answering with an error) is an `Err` with why, for the exchange to
//! answer and log.

use crate::wire::{AcquireAnswer, StoreRequest};
use proxy_core::stats::StatsView;
use proxy_core::{ApiKey, KeyId, Lease, Report, Unavailable};
use worker::{Env, Method, Request, RequestInit, Response, Stub};

/// The Durable Object instance holding the pool.
const INSTANCE: &str = "global";

/// The key store, reached through the object's stub (made on first use:
/// requests that never touch the store never make one).
pub struct KeyStore {
    env: Env,
    stub: Option<Stub>,
}

impl KeyStore {
    pub fn new(env: &Env) -> Self {
        Self { env: env.clone(), stub: None }
    }

    async fn call(&mut self, message: &StoreRequest) -> Result<Response, String> {
        let stub = match &self.stub {
            Some(s) => s,
            None => {
                let stub = self
                    .env
                    .durable_object("API_KEY_MANAGER")
                    .and_then(|ns| ns.id_from_name(INSTANCE)?.get_stub())
                    .map_err(|e| format!("no Durable Object stub: {e}"))?;
                self.stub.insert(stub)
            }
        };
        let body = serde_json::to_string(message).map_err(|e| e.to_string())?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let req = Request::new_with_init("https://key-store/", &init).map_err(|e| e.to_string())?;
        let mut resp = stub.fetch_with_request(req).await.map_err(|e| format!("the Durable Object failed: {e}"))?;
        if resp.status_code() >= 400 {
            let why = resp.text().await.unwrap_or_default();
            return Err(format!("the Durable Object answered {}: {why}", resp.status_code()));
        }
        Ok(resp)
    }

    pub async fn acquire(
        &mut self,
        model: String,
        exclude: Vec<KeyId>,
        settle: Option<Report>,
    ) -> Result<Result<Lease, Unavailable>, String> {
        let mut resp = self.call(&StoreRequest::Acquire { model, exclude, settle }).await?;
        match resp.json::<AcquireAnswer>().await.map_err(|e| e.to_string())? {
            AcquireAnswer::Lease { id, secret } => Ok(Ok(Lease { id, secret: ApiKey::new(secret) })),
            AcquireAnswer::Unavailable(u) => Ok(Err(u)),
        }
    }

    pub async fn report(&mut self, reports: Vec<Report>) -> Result<(), String> {
        self.call(&StoreRequest::Report { reports }).await.map(drop)
    }

    /// The client's response showing the statistics, rendered by the object.
    pub async fn stats(&mut self, view: StatsView) -> Result<Response, String> {
        self.call(&StoreRequest::Stats { view }).await
    }

    pub async fn reset(&mut self) -> Result<(), String> {
        self.call(&StoreRequest::Reset).await.map(drop)
    }

    pub async fn daily_reset(&mut self) -> Result<(), String> {
        self.call(&StoreRequest::DailyReset).await.map(drop)
    }
}
