//! gemini-proxy on Cloudflare Workers. The fetch handler runs core's
//! [`Exchange`] with plain I/O: the request, outbound `fetch`, and the key
//! store, which is the Durable Object [`durable::ApiKeyManager`] (core's
//! key state machine, persisted in its SQLite storage); the cron trigger
//! runs the daily reset. This crate only converts types and moves bytes:
//! every decision is core's.
#![deny(missing_docs)]

mod durable;
mod io;
mod keys;
mod live;
mod wire;

use keys::KeyStore;
use proxy_core::config::UpstreamTimeouts;
use proxy_core::exchange::{Event, Exchange, Step};
use proxy_core::google::stream::Seen;
use proxy_core::wire::http::Method;
use proxy_core::{Config, Dialect, ProxyError, Report};
use std::sync::Arc;
use worker::{Context, Date, Env, Request, Response, ScheduleContext, ScheduledEvent, event, js_sys};

/// Reads a configuration variable: a secret, else a plain var.
pub(crate) fn env_value(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|s| s.to_string()).or_else(|| env.var(name).ok().map(|v| v.to_string()))
}

/// A failure of the runtime glue (never of a decision): logged, and
/// answered as a 500 without its detail.
fn internal(why: &str) -> worker::Result<Response> {
    worker::console_error!("{why}");
    io::to_response(
        &ProxyError::internal("the proxy failed on this request; see its log", None).to_response(Dialect::Gemini),
    )
}

/// The request's id in the log: Cloudflare's ray id, else one made here.
fn request_id(req: &Request) -> String {
    match req.headers().get("cf-ray") {
        Ok(Some(ray)) => ray,
        _ => format!("w{:x}{:04x}", Date::now().as_millis(), (js_sys::Math::random() * 65536.0) as u32),
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let config = match Config::from_lookup_with(UpstreamTimeouts::WORKER, |v| env_value(&env, v)) {
        // A Worker's host names are Cloudflare's to route: an open proxy
        // checks them only when ALLOWED_HOSTS lists its own.
        Ok(c) => Arc::new(Config { check_host: !c.allowed_hosts.is_empty(), ..c }),
        Err(e) => return internal(&format!("bad configuration: {e}")),
    };
    let url = match req.url() {
        Ok(u) => u,
        Err(e) => return internal(&format!("the request's URL: {e}")),
    };
    if proxy_core::live::is_live_path(url.path()) {
        // A Live API session: a WebSocket relay of its own.
        let id = request_id(&req);
        return live::serve(&req, &env, config, id).await.or_else(|e| internal(&format!("a Live session: {e}")));
    }
    let path_and_query = url.query().map_or_else(|| url.path().to_owned(), |q| format!("{}?{q}", url.path()));
    let method = Method::parse(req.method().as_ref());
    let headers = req.headers().entries().map(|(k, v)| (k, v.into_bytes())).collect();
    let (timeouts, access_log) = (config.timeouts, config.access_log);
    let started = Date::now().as_millis();
    let mut exchange = Exchange::new(config, method, path_and_query, headers)
        .with_request_id(request_id(&req))
        .with_now(proxy_core::wire::time::UnixMillis(started));
    if let Some(host) = url.host_str() {
        let authority = url.port().map_or_else(|| host.to_owned(), |port| format!("{host}:{port}"));
        exchange = exchange.with_origin(url.scheme(), &authority);
    }
    let store = KeyStore::new(&env);
    let mut run = Run {
        exchange,
        request: Some(req),
        store,
        timeouts,
        upstream: None,
        sending: None,
        committed: None,
        resume: None,
        quiet_since: started,
        pipe: None,
        reports: Vec::new(),
        started,
        access_log,
        answered: None,
        logged: false,
    };
    // Up to the answer on the critical path; the rest (the stream's end,
    // the reports) after it, through `wait_until`.
    let (response, event) = run.until_answer().await;
    ctx.wait_until(run.finish(event));
    response.or_else(|e| internal(&format!("building the answer: {e}")))
}

/// What one step led to.
enum Flow {
    Next(Event),
    Answer(worker::Result<Response>, Event),
    Over,
}

/// The I/O of one exchange.
struct Run {
    exchange: Exchange,
    request: Option<Request>,
    store: KeyStore,
    timeouts: UpstreamTimeouts,
    upstream: Option<io::Upstream>,
    /// An upstream request whose head is slow to come ([`Event::Waiting`]).
    sending: Option<io::Sending>,
    /// The client's answer a keep-alive committed (its head went).
    committed: Option<io::Committed>,
    /// The request to wait on at the next step, once the committed
    /// answer went to the runtime.
    resume: Option<io::Sending>,
    /// When the client last got a byte (ms since the epoch): a keep-alive's
    /// interval runs from it, across attempts.
    quiet_since: u64,
    /// A streamed answer on its way.
    pipe: Option<io::Piped>,
    /// The exchange's reports, left for the isolate's next Durable Object
    /// request after the answer.
    reports: Vec<Report>,
    /// When the request came (ms since the epoch), for its summary.
    started: u64,
    /// Whether each request's summary goes to the log (`ACCESS_LOG=json`).
    access_log: bool,
    /// When the answer's head was handed to the runtime (ms since the
    /// epoch).
    answered: Option<u64>,
    /// Whether the request's summary waits for the request log.
    logged: bool,
}

impl Run {
    async fn until_answer(&mut self) -> (worker::Result<Response>, Event) {
        let mut event = Event::Start;
        loop {
            match self.step(event).await {
                Flow::Next(e) => event = e,
                Flow::Answer(response, e) => return (response, e),
                Flow::Over => return (internal("the exchange ended without an answer"), Event::Done),
            }
        }
    }

    /// The steps after the answer; then the reports wait for the isolate's
    /// next request to the key store, or [`keys::FLUSH_DELAY`] at most.
    async fn finish(mut self, mut event: Event) {
        while let Flow::Next(e) | Flow::Answer(_, e) = self.step(event).await {
            event = e;
        }
        if self.reports.is_empty() && !self.logged {
            return;
        }
        if let keys::Deferred::Waiting(n) = keys::defer(std::mem::take(&mut self.reports)) {
            worker::Delay::from(keys::FLUSH_DELAY).await;
            if !keys::latest(n) {
                // A later request left reports after these: its own flush, or
                // the acquire of one after it, sends them all.
                return;
            }
        }
        if let Err(e) = self.store.flush().await {
            worker::console_error!("reporting to the key store failed: {e}");
        }
    }

    /// Waits on for the slow head of the request sent last.
    async fn wait_on(&mut self) -> Event {
        match self.sending.take() {
            Some(sending) => self.wait(sending).await,
            None => Event::SendFailed { reason: "no request was waiting".into(), timed_out: false },
        }
    }

    /// Waits on for a slow head (the answer committed or not).
    async fn wait(&mut self, sending: io::Sending) -> Event {
        let (response, sending, event) =
            io::wait(sending, self.committed.is_some(), &self.timeouts, self.quiet_since).await;
        self.upstream = response;
        self.sending = sending;
        event
    }

    async fn step(&mut self, event: Event) -> Flow {
        let event = match (self.pipe.take(), self.resume.take()) {
            (Some(pipe), _) => Event::Streamed(pipe.ended().await),
            // The answer a keep-alive committed went: the head is waited
            // for again.
            (None, Some(sending)) => self.wait(sending).await,
            (None, None) => event,
        };
        Flow::Next(match self.exchange.resume(event) {
            Step::ReadBody { limit, .. } => io::read_request_body(self.request.as_mut(), limit).await,
            Step::Acquire { model, exclude, settle, client, resources } => {
                match self.store.acquire(model, exclude, settle, client, &resources).await {
                    Ok(answer) => Event::Acquired(answer),
                    Err(why) => Event::StoreFailed(why),
                }
            }
            Step::Send(up) => {
                let client = self.request.as_ref();
                let quiet_since = self.quiet_since;
                let (response, sending, event) =
                    io::send(&up, self.exchange.body(), client, &self.timeouts, quiet_since).await;
                self.upstream = response;
                self.sending = sending;
                event
            }
            Step::KeepAlive { status, headers } => {
                if let Some(answer) = &self.committed {
                    answer.keep_alive();
                    self.quiet_since = Date::now().as_millis();
                    return Flow::Next(self.wait_on().await);
                }
                // The head goes now, with the first byte; the head is waited
                // for again at the next step, after the answer (`sending`).
                match io::Committed::new(status, &headers) {
                    Ok((response, answer)) => {
                        answer.keep_alive();
                        self.quiet_since = Date::now().as_millis();
                        self.committed = Some(answer);
                        self.resume = self.sending.take();
                        self.answered = Some(Date::now().as_millis());
                        return Flow::Answer(Ok(response), Event::Done);
                    }
                    Err(e) => {
                        worker::console_error!("committing a kept-alive answer failed: {e}");
                        self.wait_on().await
                    }
                }
            }
            Step::ReadErrorBody { limit } => io::read_error_body(self.upstream.take(), limit, &self.timeouts).await,
            Step::Stream { pipe, .. } if self.committed.is_some() => {
                match (self.upstream.take(), self.committed.take()) {
                    (Some(upstream), Some(answer)) => {
                        let (answer, event) = answer.stream(upstream, pipe, &self.timeouts).await;
                        self.committed = answer;
                        event
                    }
                    _ => Event::Streamed(Err("nothing to stream".into())),
                }
            }
            Step::Stream { status, headers, pipe } => match self.upstream.take() {
                // Nothing goes to the client before the first piece.
                Some(upstream) => match if pipe.translates() {
                    io::translate_through(upstream, status, &headers, pipe, &self.timeouts).await
                } else {
                    io::pass_through(upstream, status, &headers, &pipe, &self.timeouts).await
                } {
                    Ok((response, pipe)) => {
                        self.pipe = pipe;
                        self.answered = Some(Date::now().as_millis());
                        return Flow::Answer(response, Event::Streamed(Ok(Seen::default())));
                    }
                    Err((reason, timed_out)) => Event::StreamFailedEarly { reason, timed_out },
                },
                None => Event::Streamed(Err("nothing to stream".into())),
            },
            Step::EndCommitted { body, clean } => {
                if let Some(answer) = self.committed.take() {
                    answer.end(body.as_bytes(), clean).await;
                }
                Event::Done
            }
            Step::Respond(r) => {
                self.answered = Some(Date::now().as_millis());
                return Flow::Answer(io::to_response(&r), Event::Done);
            }
            Step::Stats(view) => match self.store.stats(view).await {
                Ok(response) => {
                    self.answered = Some(Date::now().as_millis());
                    return Flow::Answer(Ok(response), Event::Done);
                }
                Err(why) => Event::StoreFailed(why),
            },
            Step::Report(r) => {
                let now = r.must_land_first();
                self.reports.push(r);
                if now {
                    keys::defer(std::mem::take(&mut self.reports));
                    if let Err(e) = self.store.flush().await {
                        worker::console_error!("reporting an upload to the key store failed: {e}");
                    }
                }
                Event::Done
            }
            Step::Reset => self.store.reset().await.map_or_else(Event::StoreFailed, |()| Event::Done),
            Step::Log(line) => {
                worker::console_error!("{line}");
                Event::Done
            }
            Step::Note(line) => {
                worker::console_log!("{line}");
                Event::Done
            }
            Step::Admin(op) => self.store.admin(op).await.map_or_else(Event::StoreFailed, Event::Admin),
            Step::Summary(summary) => {
                let ms = Date::now().as_millis().saturating_sub(self.started);
                let ttfb = self.answered.map(|at| at.saturating_sub(self.started));
                let summary = summary.timed(self.started, ttfb, ms);
                if self.access_log {
                    worker::console_log!("{}", summary.line());
                }
                if !summary.own {
                    keys::log(summary);
                    self.logged = true;
                }
                Event::Done
            }
            Step::Done => return Flow::Over,
        })
    }
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    if let Err(e) = KeyStore::new(&env).daily_reset().await {
        worker::console_error!("daily reset failed: {e}");
    }
    // Google's models list, with a pool key: each model it names is
    // counted under its own name from its first call (an outage's too).
    let config = match Config::from_lookup_with(UpstreamTimeouts::WORKER, |v| env_value(&env, v)) {
        Ok(c) => Arc::new(c),
        Err(e) => return worker::console_error!("bad configuration: {e}"),
    };
    let started = Date::now().as_millis();
    let exchange = Exchange::models_listing(config.clone())
        .with_request_id(format!("cron-models-{started:x}"))
        .with_now(proxy_core::wire::time::UnixMillis(started));
    let mut run = Run {
        exchange,
        request: None,
        store: KeyStore::new(&env),
        timeouts: config.timeouts,
        upstream: None,
        sending: None,
        committed: None,
        resume: None,
        quiet_since: started,
        pipe: None,
        reports: Vec::new(),
        started,
        access_log: config.access_log,
        answered: None,
        logged: false,
    };
    let (response, event) = run.until_answer().await;
    // Its answer is read to the end (so that its native pipe ends), then
    // dropped: the names went to the key store.
    if let Ok(mut response) = response {
        let _ = response.bytes().await;
    }
    run.finish(event).await;
}
