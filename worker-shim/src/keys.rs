//! The Worker's side of the key store: requests to the one global
//! `API_KEY_MANAGER` Durable Object. A failure (the object unreachable, or
//! answering with an error) is an `Err` with why, for the exchange to
//! answer and log.
//!
//! Reports are not sent on their own: they wait in this isolate's buffer
//! (at most [`MAX_PENDING`]) and ride on its next request to the object,
//! an acquire most often; a request's last step waits [`FLUSH_DELAY`] and
//! sends what is still waiting. So at steady state a proxied request costs
//! one Durable Object request, and nothing is lost when traffic stops.
//! Requests' summaries for the request log ride the same way.

use crate::wire::{AcquireAnswer, StoreRequest};
use proxy_core::wire::keystore::StatsView;
use proxy_core::wire::keystore::{AdminAnswer, AdminOp};
use proxy_core::wire::summary::Summary;
use proxy_core::{ApiKey, KeyId, Lease, Report, Unavailable};
use worker::{Env, Method, Request, RequestInit, Response, Stub};

/// The Durable Object instance holding the pool.
const INSTANCE: &str = "global";

/// The most reports an isolate keeps waiting; more are sent at once.
pub const MAX_PENDING: usize = 512;

/// How long a request's last report may wait for another request to carry
/// it: `/stat` lags the traffic of other isolates by at most this.
pub const FLUSH_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// Reports waiting for the isolate's next request to the object.
    static PENDING: std::cell::RefCell<Vec<Report>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Requests' summaries for the request log, waiting the same way.
    static LOGGED: std::cell::RefCell<Vec<Summary>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Counts deferrals: only the latest one's delayed flush sends, since a
    /// later request carries (or flushes) what the earlier ones left.
    static DEFERRALS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The admin's model aliases as the object last told them, and when
    /// (ms since the epoch).
    static ALIASES: std::cell::RefCell<Option<(u64, AdminAnswer)>> = const { std::cell::RefCell::new(None) };
}

/// How long an isolate answers the exchange's ask for the admin's model
/// aliases (one per call that names a model) from what the object last
/// told it: an edit made through another isolate holds everywhere within
/// this, and the object is spared a request per call.
pub const ALIASES_FRESH_MS: u64 = 10_000;

/// Reports left for the isolate's next request to the object.
#[derive(Debug)]
pub enum Deferred {
    /// The buffer is full: send it now.
    Full,
    /// Send it after [`FLUSH_DELAY`] if this is still the latest deferral.
    Waiting(u64),
}

/// Leaves reports for the isolate's next request to the object.
pub fn defer(reports: Vec<Report>) -> Deferred {
    let full = PENDING.with_borrow_mut(|p| {
        p.extend(reports);
        p.len() >= MAX_PENDING
    }) || LOGGED.with_borrow(|l| l.len() >= MAX_PENDING);
    let n = DEFERRALS.get() + 1;
    DEFERRALS.set(n);
    if full { Deferred::Full } else { Deferred::Waiting(n) }
}

/// Leaves a request's summary for the request log with the reports (its
/// request's own, when it had any, are left with [`defer`] after it).
pub fn log(summary: Summary) {
    LOGGED.with_borrow_mut(|l| {
        // Past twice the reports' bound, the oldest summaries give way: a
        // key store out of reach must not grow the isolate's memory.
        if l.len() >= MAX_PENDING * 2 {
            l.remove(0);
        }
        l.push(summary);
    });
}

/// Whether deferral `n` is still the latest.
pub fn latest(n: u64) -> bool {
    DEFERRALS.get() == n
}

/// What waits in the isolate for the object: reports, and summaries.
struct Pending {
    reports: Vec<Report>,
    logged: Vec<Summary>,
}

fn take_pending() -> Pending {
    Pending { reports: PENDING.with_borrow_mut(std::mem::take), logged: LOGGED.with_borrow_mut(std::mem::take) }
}

fn nothing_pending() -> bool {
    PENDING.with_borrow(Vec::is_empty) && LOGGED.with_borrow(Vec::is_empty)
}

/// Puts what could not be sent back in front of the buffers.
fn restore_pending(mut pending: Pending) {
    PENDING.with_borrow_mut(|p| {
        pending.reports.append(p);
        pending.reports.truncate(MAX_PENDING * 2);
        *p = pending.reports;
    });
    LOGGED.with_borrow_mut(|l| {
        pending.logged.append(l);
        let over = pending.logged.len().saturating_sub(MAX_PENDING * 2);
        pending.logged.drain(..over);
        *l = pending.logged;
    });
}

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

    /// Another handle on the same object, for a request sent on its own.
    pub fn another(&self) -> Self {
        Self::new(&self.env)
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

    /// Sends `message` with the reports and summaries waiting in this
    /// isolate (put back if the object cannot be reached).
    async fn call_settling(
        &mut self,
        message: impl FnOnce(Vec<Report>, Vec<Summary>) -> StoreRequest,
    ) -> Result<Response, String> {
        let pending = take_pending();
        let kept = Pending { reports: pending.reports.clone(), logged: pending.logged.clone() };
        let answer = self.call(&message(pending.reports, pending.logged)).await;
        if answer.is_err() {
            restore_pending(kept);
        }
        answer
    }

    pub async fn acquire(
        &mut self,
        model: String,
        exclude: Vec<KeyId>,
        settle: Option<Report>,
        client: Option<proxy_core::wire::keystore::Claim>,
        resources: &[proxy_core::wire::resource::Resource],
    ) -> Result<Result<Lease, Unavailable>, String> {
        let resources = resources.iter().map(|r| r.name().to_owned()).collect();
        let mut resp = self
            .call_settling(|mut pending, logged| {
                pending.extend(settle);
                StoreRequest::Acquire { model, exclude, settle: pending, logged, client, resources }
            })
            .await?;
        match resp.json::<AcquireAnswer>().await.map_err(|e| e.to_string())? {
            AcquireAnswer::Lease { id, secret, client, pinned } => {
                Ok(Ok(Lease { id, secret: ApiKey::new(secret), client, pinned }))
            }
            AcquireAnswer::Unavailable(u) => Ok(Err(u)),
        }
    }

    /// Sends the reports still waiting in this isolate, if any.
    pub async fn flush(&mut self) -> Result<(), String> {
        if nothing_pending() {
            return Ok(());
        }
        self.call_settling(|reports, logged| StoreRequest::Report { reports, logged }).await.map(drop)
    }

    /// The client's response showing the statistics, rendered by the
    /// object (after this isolate's waiting reports).
    pub async fn stats(&mut self, view: StatsView) -> Result<Response, String> {
        self.call_settling(|settle, logged| StoreRequest::Stats { view, settle, logged }).await
    }

    pub async fn admin(&mut self, op: AdminOp) -> Result<AdminAnswer, String> {
        let now = worker::Date::now().as_millis();
        let about_aliases = matches!(op, AdminOp::Aliases | AdminOp::AliasesSet { .. });
        if matches!(op, AdminOp::Aliases) {
            let fresh = ALIASES.with_borrow(|a| a.clone().filter(|(at, _)| now.saturating_sub(*at) < ALIASES_FRESH_MS));
            if let Some((_, answer)) = fresh {
                return Ok(answer);
            }
        }
        let answer = self.admin_call(op).await?;
        // Both answers hold the table in force (a set's, after it).
        if about_aliases && answer.status == 200 {
            ALIASES.set(Some((now, answer.clone())));
        }
        Ok(answer)
    }

    async fn admin_call(&mut self, op: AdminOp) -> Result<AdminAnswer, String> {
        let mut resp = if matches!(op, AdminOp::Requests { .. }) {
            self.call_settling(|settle, logged| StoreRequest::Admin { op, settle, logged }).await?
        } else {
            self.call(&StoreRequest::Admin { op, settle: Vec::new(), logged: Vec::new() }).await?
        };
        let reply: crate::wire::AdminReply = resp.json().await.map_err(|e| e.to_string())?;
        let leases = reply
            .leases
            .into_iter()
            .map(|(id, secret)| Lease { id, secret: ApiKey::new(secret), client: None, pinned: false })
            .collect();
        Ok(AdminAnswer { status: reply.status, body: reply.body, leases })
    }

    pub async fn reset(&mut self) -> Result<(), String> {
        self.call(&StoreRequest::Reset).await.map(drop)
    }

    pub async fn daily_reset(&mut self) -> Result<(), String> {
        self.call(&StoreRequest::DailyReset).await.map(drop)
    }
}
