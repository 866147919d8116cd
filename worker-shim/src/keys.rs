//! The Worker's side of the key store: requests to the one global
//! `API_KEY_MANAGER` Durable Object.

use crate::wire::{AcquireRequest, AcquireResponse};
use proxy_core::{ApiKey, KeyId, Lease, Report, Unavailable};
use worker::{Context, Env, Method, ObjectNamespace, Request, RequestInit, Stub};

/// The Durable Object instance holding the pool.
const INSTANCE: &str = "global";

pub struct KeyStore {
    namespace: ObjectNamespace,
    stub: Stub,
}

fn stub_of(namespace: &ObjectNamespace) -> worker::Result<Stub> {
    namespace.id_from_name(INSTANCE)?.get_stub()
}

async fn call(stub: &Stub, path: &str, body: Option<String>) -> worker::Result<worker::Response> {
    let mut init = RequestInit::new();
    init.with_method(if body.is_some() { Method::Post } else { Method::Get });
    if let Some(b) = body {
        init.with_body(Some(b.into()));
    }
    let req = Request::new_with_init(&format!("https://key-store{path}"), &init)?;
    let resp = stub.fetch_with_request(req).await?;
    if resp.status_code() >= 400 {
        return Err(worker::Error::RustError(format!("key store answered {} on {path}", resp.status_code())));
    }
    Ok(resp)
}

impl KeyStore {
    pub fn new(env: &Env) -> worker::Result<Self> {
        let namespace = env.durable_object("API_KEY_MANAGER")?;
        let stub = stub_of(&namespace)?;
        Ok(Self { namespace, stub })
    }

    pub async fn acquire(
        &self,
        model: &str,
        exclude: &[KeyId],
        settle: Option<Report>,
    ) -> worker::Result<Result<Lease, Unavailable>> {
        let body =
            serde_json::to_string(&AcquireRequest { model: model.to_owned(), exclude: exclude.to_vec(), settle })?;
        let mut resp = call(&self.stub, "/acquire", Some(body)).await?;
        Ok(match resp.json::<AcquireResponse>().await? {
            AcquireResponse::Lease { id, secret } => Ok(Lease { id, secret: ApiKey::new(secret) }),
            AcquireResponse::Unavailable(u) => Err(u),
        })
    }

    /// Sends a report after the response, off the critical path.
    pub fn report_later(&self, ctx: &Context, report: Report) {
        let namespace = self.namespace.clone();
        ctx.wait_until(async move {
            let body = serde_json::to_string(&report).unwrap_or_default();
            let sent = match stub_of(&namespace) {
                Ok(stub) => call(&stub, "/report", Some(body)).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                worker::console_error!("reporting to the key store failed: {e}");
            }
        });
    }

    pub async fn snapshot_json(&self) -> worker::Result<String> {
        call(&self.stub, "/snapshot", None).await?.text().await
    }

    pub async fn page_html(&self) -> worker::Result<String> {
        call(&self.stub, "/page", None).await?.text().await
    }

    pub async fn reset(&self) -> worker::Result<()> {
        call(&self.stub, "/reset", Some(String::new())).await.map(drop)
    }

    pub async fn daily_reset(&self) -> worker::Result<()> {
        call(&self.stub, "/daily-reset", Some(String::new())).await.map(drop)
    }
}
