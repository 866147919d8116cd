//! gemini-proxy on Cloudflare Workers. The fetch handler runs `core`'s
//! request flow with outbound `Fetch`; the key store is the Durable Object
//! [`durable::ApiKeyManager`], which applies `core`'s key state machine and
//! persists it in its SQLite storage; the cron trigger runs the daily reset.
//! This crate only converts types: every decision is `core`'s.
#![deny(missing_docs)]

mod durable;
mod keys;
mod wire;

use keys::KeyStore;
use proxy_core::error::{Dialect, ProxyError, Response as CoreResponse};
use proxy_core::flow::{self, Attempts, Decision, MAX_ERROR_BODY_BYTES, Next};
use proxy_core::headers::{CORS, forward_response_header};
use proxy_core::route::{Forward, MAX_BODY_BYTES};
use proxy_core::{Config, Report};
use worker::{
    Context, Env, Fetch, Headers, Method, Request, RequestInit, Response, ResponseBody, ScheduleContext,
    ScheduledEvent, event, js_sys,
};

/// Reads a configuration variable: a secret, else a plain var.
pub(crate) fn env_value(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|s| s.to_string()).or_else(|| env.var(name).ok().map(|v| v.to_string()))
}

fn respond(r: &CoreResponse) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", r.content_type)?;
    for (k, v) in &r.headers {
        headers.set(k, v)?;
    }
    // A 204 must not have a body, not even an empty one.
    let response =
        if r.body.is_empty() { Response::empty()? } else { Response::from_bytes(r.body.clone().into_bytes())? };
    Ok(response.with_status(r.status).with_headers(headers))
}

fn fail(e: &ProxyError, dialect: Dialect) -> worker::Result<Response> {
    respond(&e.to_response(dialect))
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let config = match Config::from_lookup(|v| env_value(&env, v)) {
        Ok(c) => c,
        Err(e) => return fail(&ProxyError::Internal(format!("bad configuration: {e}")), Dialect::Gemini),
    };
    let url = req.url()?;
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let method = req.method().to_string();
    let headers: Vec<(String, Vec<u8>)> = req.headers().entries().map(|(k, v)| (k, v.into_bytes())).collect();
    // The Durable Object stub only for the decisions that use the key store.
    let store = || KeyStore::new(&env);
    match flow::decide(&config, &method, &path_and_query, &headers) {
        Decision::Respond(r) => respond(&r),
        Decision::StatsJson => {
            let json = store()?.snapshot_json().await?;
            let mut r = CoreResponse::json(200, json);
            r.headers.push(("cache-control".into(), "no-store".into()));
            respond(&r)
        }
        Decision::StatsPage => respond(&CoreResponse::html(200, store()?.page_html().await?)),
        Decision::StatsReset => {
            store()?.reset().await?;
            respond(&flow::reset_done())
        }
        Decision::StatsLogin => {
            let body = req.bytes().await?;
            respond(&flow::login(&config, &headers, &body))
        }
        Decision::Forward(fwd) => {
            let body = req.bytes().await?;
            forward(&config, fwd, &headers, body, &store()?, &ctx).await
        }
    }
}

/// Relays one request upstream, trying further keys while `core` says so.
/// One Durable Object round trip per attempt sits on the critical path (the
/// acquire, which also carries the previous attempt's report); final
/// reports go out after the response, through `wait_until`.
async fn forward(
    config: &Config,
    mut fwd: Forward,
    headers: &[(String, Vec<u8>)],
    body: Vec<u8>,
    store: &KeyStore,
    ctx: &Context,
) -> worker::Result<Response> {
    let dialect = fwd.dialect;
    if body.len() as u64 > MAX_BODY_BYTES {
        return fail(&ProxyError::PayloadTooLarge { limit: MAX_BODY_BYTES }, dialect);
    }
    if let Err(e) = fwd.bind_body(&body) {
        return fail(&e, dialect);
    }
    let model = fwd.model().to_owned();
    let mut attempts = Attempts::new();
    let mut settle: Option<Report> = None;
    loop {
        if !attempts.may_try_again() {
            if let Some(r) = settle.take() {
                store.report_later(ctx, r);
            }
            return fail(&attempts.give_up(&model, None), dialect);
        }
        let lease = match store.acquire(&model, attempts.tried(), settle.take()).await? {
            Ok(l) => l,
            Err(u) => return fail(&attempts.give_up(&model, Some(u)), dialect),
        };
        let up = flow::upstream_request(config, &fwd, headers, &lease, body.len());
        let out_headers = Headers::new();
        for (name, value) in &up.headers {
            if let Ok(v) = std::str::from_utf8(value) {
                // A value the runtime refuses is dropped, as the component host does.
                let _ = out_headers.append(name, v);
            }
        }
        let mut init = RequestInit::new();
        init.with_method(if up.method == "GET" { Method::Get } else { Method::Post }).with_headers(out_headers);
        if up.method == "POST" {
            init.with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
        }
        let target = format!("{}{}", up.base.origin(), up.path_and_query);
        let sent = match Request::new_with_init(&target, &init) {
            Ok(r) => Fetch::Request(r).send().await,
            Err(e) => Err(e),
        };
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                settle = Some(attempts.transport_failed(&lease, &model, &e.to_string()));
                continue;
            }
        };
        let status = response.status_code();
        if (200..300).contains(&status) {
            store.report_later(ctx, flow::finished(&lease, &model, None));
            return pass_through(response, status);
        }
        let mut error_body = response.bytes().await.unwrap_or_default();
        error_body.truncate(MAX_ERROR_BODY_BYTES);
        match attempts.answered(&lease, &model, status, &error_body) {
            Next::Retry(report) => settle = Some(report),
            Next::Relay { report, body } => {
                store.report_later(ctx, report);
                return relay(&response, status, body.into_bytes());
            }
        }
    }
}

fn filtered_headers(response: &Response, drop_length: bool) -> worker::Result<Headers> {
    let headers = Headers::new();
    for (name, value) in response.headers().entries() {
        if forward_response_header(&name) && !(drop_length && name.eq_ignore_ascii_case("content-length")) {
            headers.append(&name, &value)?;
        }
    }
    for (k, v) in CORS {
        headers.set(k, v)?;
    }
    Ok(headers)
}

/// Hands the upstream body stream back as it is: no chunk passes through wasm.
fn pass_through(response: Response, status: u16) -> worker::Result<Response> {
    let headers = filtered_headers(&response, false)?;
    // The body stays a JS ReadableStream (or empty): never read into wasm.
    let (_, body): (_, ResponseBody) = response.into_parts();
    Ok(Response::from_body(body)?.with_status(status).with_headers(headers))
}

fn relay(response: &Response, status: u16, body: Vec<u8>) -> worker::Result<Response> {
    let headers = filtered_headers(response, true)?;
    Ok(Response::from_bytes(body)?.with_status(status).with_headers(headers))
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    match KeyStore::new(&env) {
        Ok(store) => {
            if let Err(e) = store.daily_reset().await {
                worker::console_error!("daily reset failed: {e}");
            }
        }
        Err(e) => worker::console_error!("daily reset: no key store: {e}"),
    }
}
