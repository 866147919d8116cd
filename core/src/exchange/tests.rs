//! The exchange driven by a scripted host: a real key pool as the store,
//! a scripted upstream.

use super::*;
use crate::config::UpstreamBase;
use crate::google::names;
use crate::request::route::MAX_BODY_BYTES;
use crate::store::pool::KeyPool;
use crate::test_support::{config, fake_keys, h};
use crate::wire::keystore::Outcome;
use crate::wire::keystore::Owned;
use crate::wire::keystore::RateLimitScope;
use crate::wire::secret::ApiKey;
use crate::wire::time::UnixMillis;
use crate::wire::usage::TokenUsage;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// What the scripted upstream answers, attempt by attempt.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16, &'static str),
    Unreachable,
    Stalled,
    Stream(Result<Option<TokenUsage>, &'static str>),
    EarlyBreak,
    /// An upload's last chunk answered: 200, this body, and
    /// `x-goog-upload-status: final`.
    Final(&'static str),
    /// The key's outbound proxy failed (as a host words it).
    ProxyDown,
    /// No head for this many keep-alive intervals ([`Event::Waiting`],
    /// when the request is kept alive), then this answer.
    Slow(u8, &'static Answer),
}

const PER_MINUTE: &str = r#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]}]}}"#;
const OVERLOADED: &str = r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#;
const LOCATION: &str = r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#;

/// Everything a run did, as the host saw it.
#[derive(Default)]
struct Trace {
    sent: Vec<(KeyId, UpstreamRequest)>,
    reports: Vec<Report>,
    settled: Vec<Report>,
    streamed: Option<(u16, Vec<(String, String)>)>,
    /// What the client got of a streamed answer.
    stream_out: Vec<u8>,
    response: Option<Response>,
    logs: Vec<String>,
    body_limits: Vec<u64>,
    steps: usize,
    /// The reports, answers and the summary, in order (`report`,
    /// `respond`, `summary`).
    order: Vec<&'static str>,
    summary: Option<Summary>,
    /// The key-store operations asked, in order.
    admin_ops: Vec<AdminOp>,
    /// The body each request upstream carried.
    sent_bodies: Vec<Vec<u8>>,
    /// The keep-alive steps taken: the committed head each carried.
    kept_alive: Vec<(u16, Vec<(String, String)>)>,
    /// How a committed answer ended: cleanly or broken.
    ended_clean: Option<bool>,
}

impl Trace {
    fn json(&self) -> Value {
        serde_json::from_str(&self.response.as_ref().expect("a response").body).expect("json")
    }
    fn keys_sent(&self) -> Vec<KeyId> {
        self.sent.iter().map(|(k, _)| k.clone()).collect()
    }
}

/// A host: a real key pool as the store (or a failing one), and a
/// scripted upstream.
struct Host {
    pool: KeyPool,
    store_fails: bool,
    upstream: VecDeque<Answer>,
    body: Result<Vec<u8>, BodyError>,
    cfg: Config,
    /// Whether the upstream's heads carry an upload URL with the key
    /// in its query, as Google's do for a key sent in the query.
    key_in_upload_url: bool,
    /// What piping the client's body upstream ([`BodyFrom::Client`])
    /// meets: the client's body breaking off, instead of the upstream.
    piped_body_breaks: bool,
}

impl Host {
    fn new(keys: usize, upstream: &[Answer]) -> Self {
        Self {
            pool: KeyPool::new(fake_keys("DRIVER", keys)),
            store_fails: false,
            upstream: upstream.iter().cloned().collect(),
            body: Ok(br#"{"contents":[]}"#.to_vec()),
            cfg: config(None),
            key_in_upload_url: false,
            piped_body_breaks: false,
        }
    }

    fn run(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Trace {
        let cfg = Arc::new(self.cfg.clone());
        let ex = Exchange::new(cfg, Method::parse(method), path.to_owned(), h(headers));
        self.drive(ex)
    }

    fn drive(&mut self, ex: Exchange) -> Trace {
        let now = UnixMillis(1_800_000_000_000);
        let mut ex = ex.with_now(now);
        let mut trace = Trace::default();
        let mut current: Option<Answer> = None;
        let mut waits = 0u8;
        let mut event = Event::Start;
        loop {
            trace.steps += 1;
            assert!(trace.steps < 100, "the exchange does not end");
            event = match ex.resume(event) {
                Step::ReadBody { limit, .. } => {
                    trace.body_limits.push(limit);
                    match self.body.clone() {
                        Ok(b) => Event::Body(b),
                        Err(e) => Event::BodyFailed(e),
                    }
                }
                Step::Acquire { model, exclude, settle, client, resources } => {
                    if self.store_fails {
                        Event::StoreFailed("the Durable Object is overloaded".into())
                    } else {
                        if let Some(r) = settle {
                            self.pool.apply(&r, now);
                            trace.settled.push(r);
                        }
                        Event::Acquired(self.pool.acquire_for(client.as_ref(), &model, &resources, &exclude, now))
                    }
                }
                Step::Send(request) => {
                    let secret = request
                        .headers
                        .iter()
                        .find(|(n, _)| n == "x-goog-api-key" || n == "authorization")
                        .map(|(_, v)| v.trim_start_matches("Bearer ").to_owned())
                        .expect("a credential");
                    let piped = matches!(request.body, BodyFrom::Client(_));
                    let kept_alive = request.keep_alive.is_some();
                    trace.sent_bodies.push(ex.body().to_vec());
                    trace.sent.push((crate::wire::secret::ApiKey::new(&secret).id(), request));
                    if piped && self.piped_body_breaks {
                        event = Event::BodyFailed(BodyError::Broken("the client went away".into()));
                        continue;
                    }
                    let mut answer = self.upstream.pop_front().unwrap_or(Answer::Status(200, "{}"));
                    waits = 0;
                    if let Answer::Slow(n, then) = answer {
                        answer = *then;
                        waits = if kept_alive { n } else { 0 };
                    }
                    current = Some(answer);
                    if waits > 0 {
                        waits -= 1;
                        Event::Waiting
                    } else {
                        self.head_event(&answer, &secret)
                    }
                }
                Step::KeepAlive { status, headers } => {
                    trace.kept_alive.push((status, headers));
                    if waits > 0 {
                        waits -= 1;
                        Event::Waiting
                    } else {
                        let answer = current.expect("an answer waited for");
                        let secret = trace.sent.last().and_then(|(_, r)| {
                            r.headers.iter().find(|(n, _)| n == "x-goog-api-key" || n == "authorization")
                        });
                        let secret =
                            secret.map(|(_, v)| v.trim_start_matches("Bearer ").to_owned()).unwrap_or_default();
                        self.head_event(&answer, &secret)
                    }
                }
                Step::ReadErrorBody { limit } => match current.take() {
                    Some(Answer::Status(_, body)) => {
                        Event::ErrorBody(body.as_bytes()[..body.len().min(limit)].to_vec())
                    }
                    _ => panic!("an error body without an error"),
                },
                Step::Stream { status, headers, mut pipe } => match current.take() {
                    Some(Answer::EarlyBreak) => {
                        Event::StreamFailedEarly { reason: "closed before the body".into(), timed_out: false }
                    }
                    Some(Answer::Stream(r)) => {
                        trace.streamed = Some((status, headers));
                        Event::Streamed(r.map(Seen::usage).map_err(str::to_owned))
                    }
                    answer => {
                        trace.streamed = Some((status, headers));
                        if let Some(Answer::Status(_, body) | Answer::Final(body)) = answer {
                            let out = pipe.push(body.as_bytes()).into_owned();
                            trace.stream_out.extend(out);
                        }
                        trace.stream_out.extend(pipe.finish());
                        Event::Streamed(Ok(pipe.seen()))
                    }
                },
                Step::EndCommitted { body, clean } => {
                    trace.order.push("respond");
                    assert!(trace.response.is_none(), "answered twice");
                    assert!(!trace.kept_alive.is_empty(), "an end without a commit");
                    trace.ended_clean = Some(clean);
                    trace.response =
                        Some(Response { status: if clean { 200 } else { 500 }, headers: Vec::new(), body });
                    Event::Done
                }
                Step::Respond(r) => {
                    trace.order.push("respond");
                    assert!(trace.kept_alive.is_empty(), "a whole answer after a commit");
                    assert!(trace.response.is_none(), "answered twice");
                    trace.response = Some(r);
                    Event::Done
                }
                Step::Report(r) => {
                    trace.order.push("report");
                    self.pool.apply(&r, now);
                    trace.reports.push(r);
                    Event::Done
                }
                Step::Stats(_) | Step::Reset => {
                    if self.store_fails {
                        Event::StoreFailed("storage error".into())
                    } else {
                        Event::Done
                    }
                }
                Step::Log(line) | Step::Note(line) => {
                    trace.logs.push(line);
                    Event::Done
                }
                Step::Admin(op) => {
                    trace.admin_ops.push(op.clone());
                    let vault = crate::store::vault::Vault::from_secret("a long random secret for the tests").ok();
                    let applied = crate::store::admin::apply(&mut self.pool, vault.as_ref(), op, now, &mut || [9; 24]);
                    Event::Admin(AdminAnswer::from(&applied))
                }
                Step::Summary(summary) => {
                    trace.order.push("summary");
                    assert!(trace.summary.is_none(), "summed up twice");
                    trace.summary = Some(*summary);
                    Event::Done
                }
                Step::Done => break,
            };
        }
        // One summary, after every answer and report.
        assert_eq!(trace.order.last(), Some(&"summary"), "{:?}", trace.order);
        trace
    }
}

impl Host {
    /// The event that tells the upstream's `answer` to a request with the
    /// key `secret`.
    fn head_event(&self, answer: &Answer, secret: &str) -> Event {
        let upload_url = format!("https://up.example/upload/v1beta/files?key={secret}&upload_id=u1");
        let head = |pairs: &[(&str, &str)]| {
            let mut headers = h(pairs);
            if self.key_in_upload_url {
                headers.push(("X-Goog-Upload-URL".into(), upload_url.clone().into_bytes()));
            }
            headers
        };
        match answer {
            Answer::Status(s, _) => Event::Head {
                status: *s,
                headers: head(&[("content-type", "application/json"), ("content-length", "99")]),
            },
            Answer::Final(_) => Event::Head {
                status: 200,
                headers: head(&[("content-type", "application/json"), ("x-goog-upload-status", "final")]),
            },
            Answer::Stream(_) | Answer::EarlyBreak => {
                Event::Head { status: 200, headers: head(&[("content-type", "text/event-stream")]) }
            }
            Answer::Unreachable => Event::SendFailed { reason: "connection refused".into(), timed_out: false },
            Answer::ProxyDown => Event::SendFailed {
                reason: "the outbound proxy socks5://me:***@10.0.0.9:1080 could not be reached: connection refused"
                    .into(),
                timed_out: false,
            },
            Answer::Stalled => Event::SendFailed { reason: "no response head in time".into(), timed_out: true },
            Answer::Slow(_, then) => self.head_event(then, secret),
        }
    }
}

fn generate(host: &mut Host) -> Trace {
    host.run("POST", "/v1beta/models/gemini-2.5-flash:generateContent", &[("x-goog-api-key", "client")])
}

#[test]
fn a_listing_is_merged_across_the_keys_in_the_order_of_their_ids() {
    const KEY_REJECTED: &str = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
    let answers = [
        Answer::Status(200, r#"{"files":[{"name":"files/a","expirationTime":"2027-02-01T00:00:00Z"}]}"#),
        Answer::Status(200, r#"{"files":[{"name":"files/b"}],"nextPageToken":"t+1"}"#),
        Answer::Status(200, r#"{"files":[{"name":"files/c"},{"name":"files/d"}]}"#),
        // The third key is dead: its files are out of reach.
        Answer::Status(400, KEY_REJECTED),
        Answer::Status(200, "{}"),
    ];
    let mut host = Host::new(5, &answers);
    let t = host.run("GET", "/v1beta/files?pageSize=3&key=client", &[]);
    let mut ids: Vec<KeyId> = fake_keys("DRIVER", 5).iter().map(ApiKey::id).collect();
    ids.sort();
    assert_eq!(t.keys_sent(), [&ids[0], &ids[1], &ids[1], &ids[2], &ids[3], &ids[4]].map(Clone::clone));
    let queries: Vec<&str> = t.sent.iter().map(|(_, r)| r.path_and_query.as_str()).collect();
    assert_eq!(
        queries,
        [
            "/v1beta/files?pageSize=3",
            "/v1beta/files?pageSize=2",
            "/v1beta/files?pageSize=1&pageToken=t%2B1",
            // The page is full: is there more after it?
            "/v1beta/files?pageSize=1",
            "/v1beta/files?pageSize=1",
            "/v1beta/files?pageSize=1",
        ]
    );
    let response = t.response.as_ref().expect("an answer");
    assert_eq!(response.status, 200);
    let page = t.json();
    let names: Vec<&str> = page["files"].as_array().expect("files").iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["files/a", "files/b", "files/c", "files/d"]);
    assert_eq!(page.get("nextPageToken"), None, "no key has more");
    // Every key asked counts a call; what it listed is its own.
    assert_eq!(t.reports.len(), 6);
    assert!(matches!(t.reports[3].outcome, Outcome::KeyRejected { .. }));
    let owned: Vec<(&KeyId, &str)> =
        t.reports.iter().flat_map(|r| r.owned.iter().map(move |o| (&r.key, o.name.as_str()))).collect();
    assert_eq!(owned, [(&ids[0], "files/a"), (&ids[1], "files/b"), (&ids[1], "files/c"), (&ids[1], "files/d")]);
    assert!(t.reports[0].owned[0].expires.is_some(), "with the expiry Google gave");
    assert_eq!(t.order.iter().rev().nth(1), Some(&"respond"), "the registry knows the files before the client does");

    // A key that fails on the way (a 429) stops the page: the caller
    // gets why, not a page with that key's files missing.
    let mut host =
        Host::new(2, &[Answer::Status(200, r#"{"files":[{"name":"files/a"}]}"#), Answer::Status(429, PER_MINUTE)]);
    let t = host.run("GET", "/v1beta/files?key=client", &[]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(429));
    assert_eq!(t.sent.len(), 2, "no key is asked for another's list");

    // The next page starts where the token says, with Google's token.
    let mut host = Host::new(3, &[Answer::Status(200, r#"{"files":[{"name":"files/x"}]}"#)]);
    let mut ids: Vec<KeyId> = fake_keys("DRIVER", 3).iter().map(ApiKey::id).collect();
    ids.sort();
    let token = format!("gp1.k.{}.{}", ids[1], URL_SAFE_NO_PAD.encode("next/1"));
    let t = host.run("GET", &format!("/v1beta/files?pageToken={token}&pageSize=5&key=client"), &[]);
    assert_eq!(t.sent[0].0, ids[1]);
    assert_eq!(t.sent[0].1.path_and_query, "/v1beta/files?pageSize=5&pageToken=next%2F1");
    let t = host.run("GET", "/v1beta/files?pageToken=CgZmaWxlcy8&key=client", &[]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(400), "not a token of the proxy's");
    assert!(t.sent.is_empty());
}

#[test]
fn a_resource_call_keeps_its_method_and_path_and_never_shows_the_key() {
    let mut host = Host::new(2, &[Answer::Status(200, "{}")]);
    host.key_in_upload_url = true;
    let t = host.run("DELETE", "/v1beta/files/abc-123?key=client", &[]);
    assert!(t.body_limits.is_empty(), "a DELETE has no body to read");
    let (_, sent) = &t.sent[0];
    assert_eq!((&sent.method, sent.path_and_query.as_str()), (&Method::Delete, "/v1beta/files/abc-123"));
    assert!(!sent.headers.iter().any(|(n, _)| n == "content-length"));
    assert_eq!(t.reports[0].model, "(files)");
    let (status, headers) = t.streamed.as_ref().expect("streamed");
    assert_eq!(*status, 200);
    let url = &headers.iter().find(|(n, _)| n == "x-goog-upload-url").expect("relayed").1;
    assert!(url.starts_with("https://up.example/upload/v1beta/files?key=") && url.ends_with("&upload_id=u1"));
    let secrets = fake_keys("DRIVER", 2);
    assert!(secrets.iter().all(|k| !url.contains(k.expose())), "the key leaked: {url}");

    // An upload start goes below Google's /upload prefix, with its body;
    // an error answer's headers are scrubbed too.
    let mut host = Host::new(1, &[Answer::Status(400, LOCATION)]);
    host.key_in_upload_url = true;
    host.body = Ok(br#"{"file":{"displayName":"a.pdf"}}"#.to_vec());
    let t = host.run("POST", "/upload/v1alpha/files", &[("x-goog-api-key", "client")]);
    assert_eq!(t.sent[0].1.path_and_query, "/upload/v1alpha/files", "with the version asked for");
    let response = t.response.as_ref().expect("relayed");
    assert_eq!(response.status, 400);
    let url = &response.headers.iter().find(|(n, _)| n == "x-goog-upload-url").expect("relayed").1;
    assert!(!url.contains(fake_keys("DRIVER", 1)[0].expose()), "the key leaked: {url}");
}

#[test]
fn a_429_a_5xx_and_a_transport_failure_each_move_on_to_another_key() {
    let mut host =
        Host::new(4, &[Answer::Status(429, PER_MINUTE), Answer::Status(503, OVERLOADED), Answer::Unreachable]);
    let t = generate(&mut host);
    let keys = t.keys_sent();
    assert_eq!(keys.len(), 4);
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "a key was tried twice: {keys:?}");
    // Each failure rode on the next acquire; the success came after the stream.
    assert_eq!(t.settled.len(), 3);
    assert!(matches!(&t.settled[0].outcome, Outcome::RateLimited(rl) if rl.scope == RateLimitScope::PerMinute));
    assert!(matches!(t.settled[1].outcome, Outcome::UpstreamError { status: 503, .. }));
    assert!(matches!(t.settled[2].outcome, Outcome::TransportError { .. }));
    assert_eq!(
        t.reports,
        [Report {
            key: keys[3].clone(),
            model: "gemini-2.5-flash".into(),
            outcome: Outcome::Success,
            usage: None,
            client: None,
            owned: Vec::new(),
            deleted: Vec::new(),
            listed: false,
            usage_of: None,
        }]
    );
    assert_eq!(t.streamed.as_ref().map(|(s, _)| *s), Some(200));
    assert!(t.response.is_none() && t.logs.is_empty());
}

#[test]
fn timeouts_fail_over_and_all_timeouts_answer_504_without_blaming_the_keys() {
    let mut host = Host::new(3, &[Answer::Stalled, Answer::Status(200, "{}")]);
    let t = generate(&mut host);
    assert_eq!(t.sent.len(), 2, "a timeout before the head fails over");
    assert!(t.streamed.is_some());
    let mut host = Host::new(2, &[Answer::Stalled, Answer::Stalled]);
    let t = generate(&mut host);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(504));
    assert_eq!(t.json()["error"]["status"], "DEADLINE_EXCEEDED");
    let mut host = Host::new(2, &[Answer::Stalled, Answer::Unreachable]);
    assert_eq!(generate(&mut host).response.map(|r| r.status), Some(502), "not every failure was a timeout");
    let s = host.pool.snapshot(UnixMillis(0));
    assert!(
        s.keys
            .iter()
            .all(|k| k.disabled.is_none() && k.models.iter().all(|m| m.state == crate::store::snapshot::KeyState::Ok))
    );
}

#[test]
fn log_lines_and_internal_answers_carry_the_request_id() {
    let mut ex = Exchange::new(
        Arc::new(config(None)),
        Method::Get,
        "/v1beta/models".into(),
        h(&[(headers::REQUEST_ID, "r-42")]),
    );
    assert!(matches!(ex.resume(Event::Start), Step::Acquire { .. }));
    assert!(matches!(ex.resume(Event::StoreFailed("down".into())), Step::Log(l) if l.starts_with("request r-42: ")));
    match ex.resume(Event::Done) {
        Step::Respond(r) => assert!(r.body.contains("request id r-42"), "{}", r.body),
        s => panic!("{s:?}"),
    }
    let ex = Exchange::new(Arc::new(config(None)), Method::Get, "/".into(), Vec::new()).with_request_id("w-1".into());
    assert_eq!(ex.request_id.as_deref(), Some("w-1"));
}

#[test]
fn at_most_five_keys_and_the_last_report_is_flushed_on_giving_up() {
    let mut host = Host::new(8, &[Answer::Status(503, OVERLOADED); 8]);
    let t = generate(&mut host);
    assert_eq!(t.sent.len(), MAX_ATTEMPTS);
    assert_eq!(t.settled.len(), MAX_ATTEMPTS - 1);
    assert_eq!(t.reports.len(), 1, "the fifth failure is reported before the answer");
    assert!(matches!(t.reports[0].outcome, Outcome::UpstreamError { status: 503, .. }));
    assert_eq!(t.reports[0].key, t.sent[4].0);
    let r = t.response.as_ref().expect("an answer");
    assert_eq!(r.status, 502);
    assert!(t.json()["error"]["message"].as_str().is_some_and(|m| m.contains("overloaded")));
    // Every attempt is counted in the pool.
    let counted: u64 = host.pool.snapshot(UnixMillis(0)).keys.iter().flat_map(|k| &k.models).map(|m| m.errors).sum();
    assert_eq!(counted, 5);
}

const NOT_YOURS: &str = r#"{"error":{"code":403,"message":"You do not have permission to access the File abc or it may not exist.","status":"PERMISSION_DENIED"}}"#;

/// A prompt naming `files/abc` (by its URI, as SDKs send it).
fn with_file(host: &mut Host, names: &[&str]) {
    let parts: Vec<String> = names
        .iter()
        .map(|n| format!(r#"{{"fileData":{{"fileUri":"https://generativelanguage.googleapis.com/v1beta/{n}"}}}}"#))
        .collect();
    host.body = Ok(format!(r#"{{"contents":[{{"parts":[{}]}}]}}"#, parts.join(",")).into_bytes());
}

#[test]
fn a_resource_is_looked_for_once_then_its_owner_serves_it_alone() {
    let mut host =
        Host::new(4, &[Answer::Status(403, NOT_YOURS), Answer::Status(403, NOT_YOURS), Answer::Status(200, "{}")]);
    with_file(&mut host, &["files/abc"]);
    let t = generate(&mut host);
    let keys = t.keys_sent();
    assert_eq!(keys.len(), 3, "asked until a key could see it");
    assert!(t.response.is_none(), "the third key's answer streamed");
    // The keys that could not see it are fine.
    assert!(t.settled.iter().all(|r| r.outcome == Outcome::ClientError { status: 403 }), "{:?}", t.settled);
    let owner = keys[2].clone();
    // A name in a request body is never taken as the key's: the next
    // prompt looks again. A get of the file itself tells.
    assert!(t.reports[0].owned.is_empty(), "{:?}", t.reports[0].owned);
    host.upstream = [Answer::Status(403, NOT_YOURS), Answer::Status(403, NOT_YOURS), Answer::Status(200, "{}")]
        .into_iter()
        .collect();
    let t = host.run("GET", "/v1beta/files/abc", &[("x-goog-api-key", "client")]);
    assert_eq!(t.keys_sent().last(), Some(&owner));
    assert_eq!(t.reports[0].owned, [Owned { name: "files/abc".into(), expires: None }]);

    // From now on, only the owner; Google's 403 from it is final.
    for _ in 0..3 {
        let t = generate(&mut host);
        assert_eq!(t.keys_sent(), std::slice::from_ref(&owner));
    }
    host.upstream = [Answer::Status(429, PER_MINUTE)].into_iter().collect();
    let t = generate(&mut host);
    assert_eq!(t.keys_sent(), std::slice::from_ref(&owner), "never a key that cannot see it");
    let r = t.response.as_ref().expect("an answer");
    assert_eq!(r.status, 429);
    assert!(r.headers.iter().any(|(n, _)| n == "retry-after"), "{:?}", r.headers);
    let message = t.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("files/abc") && message.contains("rate-limited"), "{message}");

    // Two resources of two keys: a 400, nothing sent.
    let mut host = Host::new(2, &[]);
    let one = host.run("GET", "/v1beta/files/one", &[("x-goog-api-key", "client")]).keys_sent();
    let two = host.run("GET", "/v1beta/files/two", &[("x-goog-api-key", "client")]).keys_sent();
    assert_ne!(one, two, "the ring moved on: owned by different keys");
    with_file(&mut host, &["files/one", "files/two"]);
    let t = generate(&mut host);
    assert!(t.sent.is_empty());
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
    assert!(t.json()["error"]["message"].as_str().is_some_and(|m| m.contains("files/one and files/two")));
}

const FILE_MADE: &str = r#"{"file":{"name":"files/made-1","uri":"https://generativelanguage.googleapis.com/v1beta/files/made-1","expirationTime":"2027-02-01T00:00:00Z"}}"#;

#[test]
fn an_upload_url_points_at_the_proxy_and_its_chunks_go_to_the_key_that_started_it() {
    let mut host = Host::new(4, &[]);
    host.cfg = config(Some("proxy-key-0123456789"));
    host.key_in_upload_url = true;
    let start = [("x-goog-api-key", "proxy-key-0123456789"), ("host", "proxy.local:8080")];
    let t = host.run("POST", "/upload/v1beta/files", &start);
    let owner = t.keys_sent()[0].clone();
    let response = t.response.as_ref().expect("read whole, then answered");
    let url = &response.headers.iter().find(|(n, _)| n == "x-goog-upload-url").expect("relayed").1;
    assert_eq!(url, "http://proxy.local:8080/upload/v1beta/files?upload_id=u1", "no key in it");
    assert!(t.reports[0].owned.iter().any(|o| o.name == "uploads/u1"), "{:?}", t.reports[0].owned);
    // The upload is known before the client has its URL: a host that
    // holds reports back sends this one at once.
    assert_eq!(t.order, ["report", "respond", "summary"]);
    assert!(t.reports[0].must_land_first());
    host.key_in_upload_url = false;

    // The chunks carry no credential (the Python SDK sends none): the
    // upload id lets them in, to the key that started it, which the
    // ring would not have chosen next.
    host.upstream = [Answer::Status(200, "{}"), Answer::Final(FILE_MADE)].into_iter().collect();
    let chunk = [("x-goog-upload-command", "upload"), ("x-goog-upload-offset", "0")];
    let t = host.run("POST", "/upload/v1beta/files?upload_id=u1&upload_protocol=resumable", &chunk);
    assert!(t.response.is_none(), "{:?}", t.response);
    assert_eq!(t.keys_sent(), std::slice::from_ref(&owner));
    let sent = &t.sent[0].1;
    assert_eq!(sent.path_and_query, "/upload/v1beta/files?upload_id=u1&upload_protocol=resumable");
    assert!(sent.headers.iter().any(|(n, v)| n == "x-goog-upload-command" && v == "upload"));
    // Only a chunk gets in so: not a start, nor a GET, with that id.
    for (method, command) in [("POST", "start"), ("GET", "upload")] {
        let t = host.run(method, "/upload/v1beta/files?upload_id=u1", &[("x-goog-upload-command", command)]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(401), "{method} {command}");
    }
    // The file's bytes are not read: names in them (a batch's input)
    // pin nothing, and a model named there is not the call's.
    host.body = Ok(br#"{"model":"gemini-x","fileUri":"files/of-another-key"}"#.to_vec());
    let t = host.run("POST", "/upload/v1beta/files?upload_id=u1&upload_protocol=resumable", &chunk);
    assert_eq!(t.keys_sent(), std::slice::from_ref(&owner));
    assert_eq!(t.reports[0].model, "(files)");
    // The last answer names the file, with its expiry: the owner's; the
    // upload is over, and forgotten.
    assert_eq!(t.reports[0].deleted, ["uploads/u1"]);
    let made = t.reports[0].owned.iter().find(|o| o.name == "files/made-1").expect("the file is told of");
    assert_eq!(made.expires, crate::wire::time::parse_rfc3339("2027-02-01T00:00:00Z"));
    for _ in 0..3 {
        with_file(&mut host, &["files/made-1"]);
        let t = host.run(
            "POST",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            &[("x-goog-api-key", "proxy-key-0123456789")],
        );
        assert_eq!(t.keys_sent(), std::slice::from_ref(&owner), "no search: its owner is known");
    }

    // An upload id the proxy never handed out needs the proxy key.
    let t = host.run("POST", "/upload/v1beta/files?upload_id=other", &chunk);
    assert!(t.sent.is_empty());
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(401));
    let t = host.run("POST", "/upload/v1beta/files", &[]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(401), "a start needs a key");
    let t = host.run("POST", "/upload/v1beta/files?upload_id=u1", &chunk);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(401), "an upload over needs the key again");
}

#[test]
fn a_large_upload_body_is_piped_once_and_never_read() {
    let mut host = Host::new(4, &[]);
    host.cfg.allowed_hosts = vec!["proxy.local".into()];
    host.key_in_upload_url = true;
    let start = [("x-goog-upload-protocol", "resumable"), ("host", "proxy.local")];
    let t = host.run("POST", "/upload/v1beta/files", &start);
    assert_eq!(t.body_limits, [MAX_BODY_BYTES], "a start is read");
    assert!(t.reports[0].owned.iter().any(|o| o.name == "uploads/u1"));
    let owner = t.keys_sent()[0].clone();
    host.key_in_upload_url = false;

    // 200 MiB of chunk: piped with its declared length, never read.
    let len = (200u64 << 20).to_string();
    let chunk =
        [("x-goog-upload-command", "upload, finalize"), ("x-goog-upload-offset", "0"), ("content-length", &len)];
    host.upstream = [Answer::Final(FILE_MADE)].into_iter().collect();
    let t = host.run("POST", "/upload/v1beta/files?upload_id=u1", &chunk);
    assert!(t.body_limits.is_empty(), "read: {:?}", t.body_limits);
    assert_eq!(t.keys_sent(), std::slice::from_ref(&owner));
    let sent = &t.sent[0].1;
    assert_eq!(sent.body, BodyFrom::Client(200 << 20));
    let lengths: Vec<&str> =
        sent.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()).collect();
    assert_eq!(lengths, [len.as_str()]);
    assert!(t.reports[0].owned.iter().any(|o| o.name == "files/made-1"));

    // A piped body goes with one attempt: a multipart upload that meets
    // an overloaded upstream is not sent again to another key (a read
    // one is), and over the Files API's size it is refused unsent.
    let form =
        |len: &str| [("x-goog-upload-protocol", "multipart"), ("content-length", len)].map(|(n, v)| (n, v.to_owned()));
    for (len, tries) in [((5u64 << 20).to_string(), 1), ("1000".to_owned(), 2)] {
        host.upstream = [Answer::Status(503, OVERLOADED), Answer::Status(200, "{}")].into_iter().collect();
        let headers = form(&len);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let t = host.run("POST", "/upload/v1beta/files", &headers);
        assert_eq!(t.sent.len(), tries, "{len} bytes");
        let status = t.response.as_ref().map_or(200, |r| r.status);
        assert_eq!(status == 200, tries == 2, "{len} bytes: {status}");
    }
    let headers = form(&(3u64 << 30).to_string());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let t = host.run("POST", "/upload/v1beta/files", &headers);
    assert!(t.sent.is_empty());
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(413));

    // A client body that breaks off on its way is the client's failure:
    // a 400 for it, and a key in good standing.
    host.piped_body_breaks = true;
    let t = host.run("POST", "/upload/v1beta/files?upload_id=u1", &chunk);
    assert_eq!(t.keys_sent(), std::slice::from_ref(&owner));
    let response = t.response.as_ref().expect("an answer");
    assert_eq!(response.status, 400);
    assert!(response.body.contains("the client went away"), "{}", response.body);
    assert_eq!(t.reports[0].outcome, Outcome::ClientError { status: 400 });
}

#[test]
fn the_proxy_url_comes_from_public_url_forwarded_headers_or_the_origin() {
    let upload_url = |cfg: Config, origin: Option<(&str, &str)>, headers: &[(&str, &str)]| {
        let mut ex = Exchange::new(Arc::new(cfg), Method::Post, "/upload/v1beta/files".into(), h(headers));
        if let Some((scheme, authority)) = origin {
            ex = ex.with_origin(scheme, authority);
        }
        ex.public_base()
    };
    let public = Config { public_url: UpstreamBase::parse("https://ai.example/gemini/").ok(), ..config(None) };
    let forwarded = [("x-forwarded-host", "edge.example, inner"), ("x-forwarded-proto", "https"), ("host", "x")];
    assert_eq!(upload_url(public, None, &forwarded).as_deref(), Some("https://ai.example/gemini"));
    assert_eq!(upload_url(config(None), None, &forwarded).as_deref(), Some("https://edge.example"));
    let origin = Some(("https", "w.example.workers.dev"));
    assert_eq!(upload_url(config(None), origin, &[("host", "x")]).as_deref(), Some("https://w.example.workers.dev"));
    assert_eq!(upload_url(config(None), None, &[("host", "Local:8080")]).as_deref(), Some("http://local:8080"));
    assert_eq!(upload_url(config(None), None, &[("host", "a/b@c")]), None, "no such host");
    assert_eq!(upload_url(config(None), None, &[]), None);
}

#[test]
fn answers_that_create_a_resource_make_it_their_keys() {
    const CACHE: &str =
        r#"{"name":"cachedContents/c-1","model":"models/gemini-2.5-flash","expireTime":"2027-02-01T00:00:00Z"}"#;
    let mut host = Host::new(4, &[Answer::Status(200, CACHE)]);
    host.body = Ok(br#"{"model":"models/gemini-2.5-flash","contents":[]}"#.to_vec());
    let t = host.run("POST", "/v1beta/cachedContents", &[("x-goog-api-key", "client")]);
    let owner = t.keys_sent()[0].clone();
    assert_eq!(t.reports[0].owned.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["cachedContents/c-1"]);
    for _ in 0..3 {
        host.body = Ok(br#"{"cachedContent":"cachedContents/c-1","contents":[]}"#.to_vec());
        assert_eq!(generate(&mut host).keys_sent(), std::slice::from_ref(&owner));
    }
    // A generation's answer is not read for names: nothing is told of.
    host.upstream = [Answer::Status(200, r#"{"name":"cachedContents/c-2"}"#)].into_iter().collect();
    host.body = Ok(br#"{"contents":[]}"#.to_vec());
    assert!(generate(&mut host).reports[0].owned.is_empty());

    // An interaction, streamed: its first event names it.
    const EVENTS: &str = "data: {\"event_type\":\"interaction.created\",\"interaction\":{\"id\":\"v1_it-9\",\"status\":\"in_progress\"}}\n\ndata: {\"event_type\":\"step.delta\",\"id\":\"not-it\"}\n\n";
    host.upstream = [Answer::Status(200, EVENTS)].into_iter().collect();
    host.body = Ok(br#"{"model":"gemini-2.5-flash","input":"hi","stream":true}"#.to_vec());
    let t = host.run("POST", "/v1beta/interactions?alt=sse", &[("x-goog-api-key", "client")]);
    let names: Vec<&str> = t.reports[0].owned.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["interactions/v1_it-9"]);
    let it = t.keys_sent()[0].clone();
    host.body = Ok(br#"{"model":"gemini-2.5-flash","input":"more","previous_interaction_id":"v1_it-9"}"#.to_vec());
    for _ in 0..3 {
        let t = host.run("POST", "/v1beta/interactions", &[("x-goog-api-key", "client")]);
        assert_eq!(t.keys_sent(), std::slice::from_ref(&it));
    }
}

#[test]
fn openai_files_and_batches_stay_with_their_file_and_a_form_is_never_scanned() {
    let mut host = Host::new(4, &[Answer::Status(200, r#"{"id":"files/in1","object":"file","bytes":9}"#)]);
    // The file's bytes name another file: a form is never read for names.
    host.body = Ok(b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n{\"file_id\":\"files/other\"}\r\n--b--".to_vec());
    let t = host.run(
        "POST",
        "/v1/files",
        &[("authorization", "Bearer client"), ("content-type", "multipart/form-data; boundary=b")],
    );
    let owned: Vec<&str> = t.reports[0].owned.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(owned, ["files/in1"], "only what the answer created");
    let owner = t.keys_sent()[0].clone();
    for _ in 0..3 {
        host.upstream = [Answer::Status(200, r#"{"id":"batches/b1","object":"batch","input_file_id":"files/in1"}"#)]
            .into_iter()
            .collect();
        host.body =
            Ok(br#"{"input_file_id":"files/in1","endpoint":"/v1/chat/completions","completion_window":"24h"}"#
                .to_vec());
        let t = host.run("POST", "/v1/batches", &[("authorization", "Bearer client")]);
        assert_eq!(t.keys_sent(), std::slice::from_ref(&owner), "the batch goes where its file is");
    }
    host.body = Ok(Vec::new());
    for path in ["/v1/batches/batches%2Fb1", "/v1/files/files%2Fin1/content"] {
        let t = host.run("GET", path, &[("authorization", "Bearer client")]);
        assert_eq!(t.keys_sent(), std::slice::from_ref(&owner), "{path}");
    }
}

fn res(name: &str) -> Resource {
    Resource::parse(name).expect("a resource")
}

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

#[test]
fn no_key_sees_it_google_answers_and_a_deleted_resource_is_forgotten() {
    // No key sees it: Google's 403, after every key was asked once.
    let mut host = Host::new(3, &[Answer::Status(403, NOT_YOURS); 3]);
    with_file(&mut host, &["files/gone"]);
    let t = generate(&mut host);
    assert_eq!(t.keys_sent().len(), 3);
    let r = t.response.as_ref().expect("an answer");
    assert_eq!((r.status, t.json()["error"]["status"].as_str()), (403, Some("PERMISSION_DENIED")));
    assert!(host.pool.acquire_naming("m", &[res("files/gone")], &[], NOW).is_ok_and(|l| !l.pinned));

    // Found, then deleted through the proxy: forgotten.
    let mut host = Host::new(3, &[Answer::Status(403, NOT_YOURS), Answer::Status(200, "{}")]);
    let owner = host.run("GET", "/v1beta/files/abc", &[("x-goog-api-key", "client")]).keys_sent()[1].clone();
    let lease = host.pool.acquire_naming("m", &[res("files/abc")], &[], NOW).expect("owner");
    assert!(lease.pinned && lease.id == owner);
    let t = host.run("DELETE", "/v1beta/files/abc", &[("x-goog-api-key", "client")]);
    assert_eq!(t.keys_sent(), [owner]);
    assert_eq!(t.reports[0].deleted, ["files/abc"]);
    assert!(!host.pool.acquire_naming("m", &[res("files/abc")], &[], NOW).expect("any").pinned);
}

#[test]
fn caller_errors_are_relayed_redacted_and_leave_the_key_alone() {
    let leaky: &'static str = Box::leak(
        format!(
            r#"{{"error":{{"code":400,"message":"bad request for {}","status":"INVALID_ARGUMENT"}}}}"#,
            fake_keys("DRIVER", 1)[0].expose()
        )
        .into_boxed_str(),
    );
    for body in [LOCATION, leaky] {
        let mut host = Host::new(2, &[Answer::Status(400, body)]);
        let t = generate(&mut host);
        assert_eq!(t.sent.len(), 1, "a caller error is not retried");
        assert_eq!(t.reports.len(), 1);
        assert_eq!(t.reports[0].outcome, Outcome::ClientError { status: 400 });
        let r = t.response.as_ref().expect("relayed");
        assert_eq!(r.status, 400);
        assert!(!r.body.contains(fake_keys("DRIVER", 1)[0].expose()), "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("content-length"), None, "the body changed length");
        // An open proxy grants no page CORS (none asked here).
        assert_eq!(r.header("access-control-allow-origin"), None);
        assert!(host.pool.snapshot(UnixMillis(0)).keys.iter().all(|k| k.disabled.is_none()));
    }
}

#[test]
fn a_2xx_that_breaks_before_its_first_byte_fails_over_unseen() {
    let mut host = Host::new(2, &[Answer::EarlyBreak, Answer::Stream(Ok(None))]);
    let t = host.run(
        "POST",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        &[("x-goog-api-key", "client")],
    );
    assert_eq!(t.sent.len(), 2);
    assert!(matches!(t.settled[0].outcome, Outcome::TransportError { .. }));
    assert_eq!(t.reports.len(), 1);
    assert_eq!(t.reports[0].outcome, Outcome::Success);
    assert!(t.streamed.is_some() && t.response.is_none());
}

#[test]
fn a_stream_that_breaks_off_is_reported() {
    let mut host = Host::new(1, &[Answer::Stream(Err("upstream reset the connection"))]);
    let t = host.run(
        "POST",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        &[("x-goog-api-key", "client")],
    );
    assert_eq!(t.reports.len(), 1);
    assert!(matches!(&t.reports[0].outcome, Outcome::BrokenStream { reason } if reason.contains("reset")));
    let (status, headers) = t.streamed.expect("streamed");
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-type".into(), "text/event-stream".into())));
    assert!(t.response.is_none());
}

#[test]
fn a_key_store_failure_answers_503_in_the_callers_dialect_and_is_logged_once() {
    let mut host = Host::new(1, &[]);
    host.store_fails = true;
    host.body = Ok(br#"{"model":"gemini-2.5-flash","messages":[]}"#.to_vec());
    let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer client")]);
    let r = t.response.as_ref().expect("answered");
    assert_eq!(r.status, 503);
    assert_eq!(t.json()["error"]["type"], "server_error");
    assert_eq!(t.json()["error"]["code"], "key_store_unavailable");
    assert!(!r.body.contains("Durable Object"), "internals in the answer: {}", r.body);
    assert_eq!(t.logs.len(), 1);
    assert!(t.logs[0].contains("Durable Object is overloaded"));
    let t = host.run("GET", "/stat.json", &[]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(503));
    assert_eq!(t.json()["error"]["code"], "key_store_unavailable");
    assert_eq!(t.logs.len(), 1);
}

#[test]
fn bodies_are_bounded_the_login_form_too() {
    let mut host = Host::new(1, &[]);
    host.body = Err(BodyError::TooLarge);
    let t = host.run("POST", "/stat/login", &[]);
    assert_eq!(t.body_limits, [MAX_LOGIN_BODY_BYTES]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(413));
    let t = host.run("POST", "/stat/login", &[("content-length", "70000")]);
    assert!(t.body_limits.is_empty(), "a declared length over the limit is refused unread");
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(413));
    let t = generate(&mut host);
    assert_eq!(t.body_limits, [MAX_BODY_BYTES]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(413));
    assert!(t.sent.is_empty());
    host.body = Err(BodyError::Broken("the client went away".into()));
    assert_eq!(generate(&mut host).response.map(|r| r.status), Some(400));
    // A GET has no body to read.
    host.body = Ok(Vec::new());
    let t = host.run("GET", "/v1beta/models", &[("x-goog-api-key", "client")]);
    assert!(t.body_limits.is_empty());
    assert_eq!(t.sent.len(), 1);
}

#[test]
fn exhausted_pools_answer_429_with_retry_after() {
    let mut host = Host::new(2, &[Answer::Status(429, PER_MINUTE), Answer::Status(429, PER_MINUTE)]);
    let t = generate(&mut host);
    assert_eq!(t.sent.len(), 2);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(429));
    // An OpenAI body must name its model.
    let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer c")]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
    assert_eq!(t.json()["error"]["type"], "invalid_request_error");
    // Both keys cool now: no upstream call, a 429 that says when.
    host.body = Ok(br#"{"model":"gemini-2.5-flash","messages":[]}"#.to_vec());
    let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer c")]);
    let r = t.response.as_ref().expect("answer");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert_eq!(t.json()["error"]["type"], "rate_limit_error");
    assert!(t.sent.is_empty(), "no upstream call when every key is cooling");
}

#[test]
fn upstream_gets_exactly_one_credential_the_pool_key() {
    let c = config(None);
    let client = h(&[
        ("Authorization", "Bearer client-secret"),
        ("X-Goog-Api-Key", "client-secret"),
        ("Host", "proxy.local"),
        ("Connection", "keep-alive"),
        ("Content-Type", "application/json"),
        ("User-Agent", "google-genai-sdk/1.0"),
        ("Cookie", "gp_session=x"),
        ("X-Odd", "caf\u{e9}"),
    ]);
    let admitted = |method: &str, pq: &str| match admit::decide(&c, &Method::parse(method), pq, &client) {
        Admission::Forward(f, _) => f,
        a => panic!("{a:?}"),
    };
    let lease = crate::test_support::lease(1);
    let f = admitted("POST", "/v1/models/gemini-2.5-flash:generateContent?key=client-secret&alt=sse");
    let up = upstream_request(&c, &f, &client, &lease, BodyFrom::Read, 10);
    assert_eq!(up.path_and_query, "/v1beta/models/gemini-2.5-flash:generateContent?alt=sse");
    assert_eq!(up.method, Method::Post);
    assert_eq!(up.url(), "http://127.0.0.1:9/v1beta/models/gemini-2.5-flash:generateContent?alt=sse");
    let creds: Vec<&str> = up
        .headers
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n == "authorization" || *n == "x-goog-api-key")
        .collect();
    assert_eq!(creds, ["x-goog-api-key"]);
    assert!(up.headers.contains(&("x-goog-api-key".into(), lease.secret.expose().to_owned())));
    for gone in ["host", "connection", "cookie", "x-odd"] {
        assert!(up.headers.iter().all(|(n, _)| n != gone), "{gone}");
    }
    assert!(!format!("{up:?}").contains(lease.secret.expose()));
    assert!(!format!("{up:?}").contains("alt=sse"));

    let mut f = admitted("POST", "/v1/chat/completions");
    f.bind_body(br#"{"model":"gemini-2.5-flash"}"#).expect("body");
    let up = upstream_request(&c, &f, &client, &lease, BodyFrom::Read, 28);
    assert_eq!(up.path_and_query, "/v1beta/openai/chat/completions");
    assert!(up.headers.contains(&("authorization".into(), format!("Bearer {}", lease.secret.expose()))));
    assert!(up.headers.iter().all(|(n, _)| n != "x-goog-api-key"));
    let f = admitted("GET", "/v1/models");
    let up = upstream_request(&c, &f, &[], &lease, BodyFrom::Read, 0);
    assert_eq!((up.method, up.path_and_query.as_str()), (Method::Get, "/v1beta/models"));
    assert!(up.headers.iter().all(|(n, _)| n != "content-length"));
}

#[test]
fn the_admin_checks_keys_through_the_exchange() {
    const INVALID: &str = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
    let mut host = Host::new(2, &[Answer::Status(200, r#"{"models":[]}"#), Answer::Status(400, INVALID)]);
    host.cfg = crate::test_support::config_with(None, Some("admin-key-0123456789"));
    host.body = Ok(b"{}".to_vec());
    let admin = [("authorization", "Bearer admin-key-0123456789")];
    let t = host.run("POST", "/admin/keys/check", &admin);
    assert_eq!(t.sent.len(), 2);
    assert!(t.sent.iter().all(|(_, r)| r.method == Method::Get && r.path_and_query.starts_with("/v1beta/models")));
    let v = t.json();
    let statuses: Vec<&str> =
        v["checked"].as_array().expect("checked").iter().filter_map(|c| c["status"].as_str()).collect();
    assert_eq!(statuses, ["works", "invalid"]);
    let s = host.pool.snapshot(UnixMillis(0));
    assert!(s.keys[1].disabled.is_some() && s.keys[0].disabled.is_none());
    // The answer never shows a secret.
    assert!(!t.response.as_ref().expect("answered").body.contains("AIzaSy"));
    // A wrong key, and the admin API off.
    let t = host.run("GET", "/admin/keys", &[("authorization", "Bearer wrong")]);
    assert_eq!(t.response.map(|r| r.status), Some(401));
    host.cfg = config(None);
    let t = host.run("GET", "/admin/keys", &admin);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(403));
    assert!(t.json()["error"]["message"].as_str().is_some_and(|m| m.contains("ADMIN_API_KEY")));
}

#[test]
fn hostile_requests_end_in_one_answer_and_never_panic() {
    // A deterministic spray of hostile request lines through the whole
    // exchange.
    let pieces = [
        "/",
        "v1",
        "v1beta",
        "models",
        "openai",
        "..",
        ".",
        "%2e",
        "%2F",
        "%",
        "%%",
        ":",
        "::",
        "gemini-2.5-flash",
        ":generateContent",
        "?",
        "&",
        "key=",
        "=",
        "\\",
        "é",
        "\u{0}",
        "//",
        "stat",
        "chat",
        "completions",
        "*",
    ];
    let mut host = Host::new(2, &[]);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..3_000 {
        let mut path = String::new();
        for _ in 0..(seed % 9) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            path.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        host.body = Ok(path.clone().into_bytes());
        let method = ["GET", "POST", "DELETE", "OPTIONS", ""][round % 5];
        let t = host.run(method, &path, &[("x-goog-api-key", "k"), ("content-length", "12")]);
        assert!(t.response.is_some() || t.streamed.is_some(), "{method} {path:?} got no answer");
        assert!(t.logs.is_empty(), "{method} {path:?}: {:?}", t.logs);
    }
}

#[test]
fn an_event_out_of_turn_is_a_500_for_the_caller_and_a_log_line() {
    let mut ex =
        Exchange::new(Arc::new(config(None)), Method::Get, "/v1beta/models".into(), h(&[("x-goog-api-key", "k")]));
    assert!(matches!(ex.resume(Event::Start), Step::Acquire { .. }));
    assert!(matches!(ex.resume(Event::ErrorBody(Vec::new())), Step::Log(l) if l.contains("host bug")));
    match ex.resume(Event::Done) {
        Step::Respond(r) => {
            assert_eq!(r.status, 500);
            assert!(!r.body.contains("Waiting"), "internals in the answer");
        }
        s => panic!("{s:?}"),
    }
    match ex.resume(Event::Done) {
        Step::Summary(s) => assert_eq!((s.status, s.error.as_deref()), (500, Some("internal"))),
        s => panic!("{s:?}"),
    }
    assert_eq!(ex.resume(Event::Done), Step::Done);
    assert_eq!(ex.resume(Event::Done), Step::Done);
}

#[test]
fn stats_and_reset_are_the_hosts_to_render_and_apply() {
    let mut ex = Exchange::new(Arc::new(config(None)), Method::Get, "/stat.json".into(), Vec::new());
    // An open proxy asks the key store whether it is still open.
    assert_eq!(ex.resume(Event::Start), Step::Admin(AdminOp::Open));
    let open = AdminAnswer { status: 200, body: r#"{"open":true}"#.into(), leases: Vec::new() };
    assert_eq!(ex.resume(Event::Admin(open)), Step::Stats(StatsView::Json));
    assert!(matches!(ex.resume(Event::Done), Step::Summary(s) if s.status == 200 && s.path == "/stat.json"));
    assert_eq!(ex.resume(Event::Done), Step::Done);
    assert!(ex.answered());
    let mut ex =
        Exchange::new(Arc::new(config(None)), Method::Post, "/stat/reset".into(), h(&[("authorization", "Bearer k")]));
    assert_eq!(ex.resume(Event::Start), Step::Admin(AdminOp::Open));
    let open = AdminAnswer { status: 200, body: r#"{"open":true}"#.into(), leases: Vec::new() };
    assert_eq!(ex.resume(Event::Admin(open)), Step::Reset);
    assert!(matches!(ex.resume(Event::Done), Step::Respond(r) if r.status == 200));
    assert!(matches!(ex.resume(Event::Done), Step::Summary(s) if s.status == 200 && s.method == "POST"));
    assert_eq!(ex.resume(Event::Done), Step::Done);
}

#[test]
fn the_key_store_admits_client_keys_with_their_models_and_quotas() {
    use crate::wire::keystore::ClientSettings;
    let mut host = Host::new(2, &[]);
    host.cfg = config(Some("proxy-key-123456"));
    let now = UnixMillis(1_800_000_000_000);
    let settings = |name: &str, models: Option<Vec<String>>, requests| ClientSettings {
        name: Some(name.into()),
        models,
        daily_requests: Some(requests),
        daily_tokens: None,
    };
    let alpha = host.pool.clients_mut().create("gpc-alpha-0123456789", settings("alpha", None, Some(1)), now);
    let alpha = alpha.expect("alpha");
    let beta = settings("beta", Some(vec!["gemini-2.5-pro".into()]), None);
    host.pool.clients_mut().create("gpc-beta-0123456789", beta, now).expect("beta");
    let usage = TokenUsage { prompt: 5, output: 7, cached: 1, thinking: 2 };
    host.upstream = [Answer::Stream(Ok(Some(usage)))].into_iter().collect();
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let t = host.run("POST", path, &[("x-goog-api-key", "gpc-alpha-0123456789")]);
    assert_eq!(t.streamed.as_ref().map(|(s, _)| *s), Some(200));
    assert_eq!(t.reports[0].client.as_deref(), Some(alpha.id.as_str()), "the last report names the client");
    assert_eq!(host.pool.clients().today(&alpha.id, now), (1, 14));
    // Its second request of the day is over its quota: a 429 in its
    // dialect, before any key is used.
    host.body = Ok(br#"{"model":"gemini-2.5-flash","messages":[]}"#.to_vec());
    let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer gpc-alpha-0123456789")]);
    let r = t.response.as_ref().expect("an answer");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)));
    let v = t.json();
    assert_eq!(v["error"]["code"], "client_quota_exceeded");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("alpha") && message.contains("quota of 1 requests") && message.contains("resets at"),
        "{message}"
    );
    assert!(t.sent.is_empty() && t.reports.is_empty());
    // A reset of the pool's marks and counters leaves the client's count.
    host.pool.reset_all();
    let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer gpc-alpha-0123456789")]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(429), "a reset wipes no quota");
    // A model the client may not use: a 403; an unknown key: a 401.
    host.body = Ok(br#"{"contents":[]}"#.to_vec());
    let t = host.run("POST", path, &[("x-goog-api-key", "gpc-beta-0123456789")]);
    assert_eq!((t.response.as_ref().map(|r| r.status), t.sent.len()), (Some(403), 0));
    assert_eq!(t.json()["error"]["status"], "PERMISSION_DENIED");
    let t = host.run("POST", path, &[("x-goog-api-key", "gpc-nobody")]);
    assert_eq!((t.response.as_ref().map(|r| r.status), t.sent.len()), (Some(401), 0));
    // The proxy key is no client's and has no quota.
    let t = host.run("POST", path, &[("x-goog-api-key", "proxy-key-123456")]);
    assert_eq!(t.streamed.as_ref().map(|(s, _)| *s), Some(200));
    assert_eq!(t.reports[0].client, None);
}

const LEAKED: &str = r#"{"error":{"code":403,"message":"Your API key was reported as leaked. Please use another API key.","status":"PERMISSION_DENIED"}}"#;
const UNKNOWN_FIELD: &str = r#"{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"consumer_suspended\": Cannot find field.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"description":"Unknown name \"consumer_suspended\""}]}]}}"#;

fn disabled_keys(host: &Host) -> usize {
    let snapshot = host.pool.snapshot(UnixMillis(1_800_000_000_000));
    snapshot.keys.iter().filter(|k| k.disabled.is_some()).count()
}

#[test]
fn the_callers_words_in_googles_answer_never_disable_a_key() {
    let mut host = Host::new(3, &[Answer::Status(400, UNKNOWN_FIELD)]);
    let t = generate(&mut host);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
    assert_eq!(t.sent.len(), 1, "no retry, no check");
    assert_eq!(t.reports[0].outcome, Outcome::ClientError { status: 400 });
    // A listing relays Google's answer to its query, and moves on to no
    // other key.
    host.upstream = [Answer::Status(400, UNKNOWN_FIELD)].into_iter().collect();
    let t = host.run("GET", "/v1beta/files?consumer_suspended=1", &[("x-goog-api-key", "client")]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
    assert!(t.json()["error"]["message"].as_str().is_some_and(|m| m.contains("consumer_suspended")));
    assert_eq!(t.sent.len(), 1);
    assert_eq!(disabled_keys(&host), 0);
}

#[test]
fn a_suspect_key_is_checked_alone_and_disabled_only_when_refused_again() {
    // Leaked: refused again by its check, so out; the next key serves.
    let mut host = Host::new(3, &[Answer::Status(403, LEAKED), Answer::Status(403, LEAKED)]);
    let t = generate(&mut host);
    assert_eq!(t.streamed.as_ref().map(|(s, _)| *s), Some(200));
    assert_eq!(t.sent.len(), 3);
    assert_eq!(t.sent[1].0, t.sent[0].0, "the check is the suspect key's");
    assert!(t.sent[1].1.path_and_query.ends_with("/models?pageSize=1"), "{:?}", t.sent[1].1.path_and_query);
    assert_eq!(t.sent[1].1.method, Method::Get);
    assert!(t.sent[1].1.headers.iter().all(|(n, _)| n == "x-goog-api-key"), "nothing of the caller's");
    assert!(matches!(&t.settled[0].outcome, Outcome::KeyRejected { reason } if reason.contains("leaked")));
    assert_eq!(disabled_keys(&host), 1);
    // The caller's own 403: the key works alone, so Google's answer is
    // relayed and the key left alone.
    let denied = r#"{"error":{"code":403,"message":"You do not have permission to access the tuned model","status":"PERMISSION_DENIED"}}"#;
    for check in [Answer::Status(200, "{}"), Answer::Unreachable, Answer::Status(429, PER_MINUTE)] {
        host.upstream = [Answer::Status(403, denied), check].into_iter().collect();
        let t = generate(&mut host);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(403));
        assert_eq!(t.sent.len(), 2);
        assert_eq!(t.reports.last().map(|r| &r.outcome), Some(&Outcome::ClientError { status: 403 }));
        assert_eq!(disabled_keys(&host), 1);
    }
    // A bare 401 is checked too.
    host.upstream = [Answer::Status(401, ""), Answer::Status(200, "{}")].into_iter().collect();
    let t = generate(&mut host);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(401));
    assert_eq!(disabled_keys(&host), 1);
    // In a listing, a key refused again is skipped; the others list.
    let mut host = Host::new(2, &[Answer::Status(403, LEAKED), Answer::Status(403, LEAKED)]);
    let t = host.run("GET", "/v1beta/files", &[("x-goog-api-key", "client")]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(200));
    assert_eq!(t.sent.len(), 3, "the page, the check, the other key's page");
    assert_eq!(disabled_keys(&host), 1);
}

#[test]
fn an_open_proxy_serves_no_page_of_another_origin_and_no_foreign_host() {
    let mut host = Host::new(2, &[]);
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    for (headers, status) in [
        (&[("origin", "https://evil.example")][..], 403),
        (&[("host", "rebound.evil.example:8787")][..], 421),
        (&[("sec-fetch-site", "cross-site")][..], 403),
    ] {
        let t = host.run("POST", path, headers);
        let r = t.response.as_ref().expect("refused");
        assert_eq!(r.status, status, "{headers:?}");
        assert!(r.header("access-control-allow-origin").is_none());
        assert!(t.sent.is_empty(), "nothing upstream");
        let t = host.run("GET", "/v1beta/files", headers);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(status), "a listing, {headers:?}");
        assert!(t.sent.is_empty());
    }
    let preflight = [("origin", "https://evil.example"), ("access-control-request-method", "POST")];
    let t = host.run("OPTIONS", path, &preflight);
    assert!(t.response.as_ref().expect("answered").header("access-control-allow-origin").is_none());
    // The proxy's own page, and a tool, are served; without a grant for
    // any other origin.
    let t = host.run("POST", path, &[("host", "127.0.0.1:8787"), ("origin", "http://127.0.0.1:8787")]);
    assert_eq!(t.streamed.as_ref().map(|(s, _)| *s), Some(200));
    // A listed origin is served and granted.
    host.cfg.cors_origins = vec!["https://chat.example".into()];
    let t = host.run("POST", path, &[("origin", "https://chat.example")]);
    let (status, headers) = t.streamed.expect("streamed");
    assert_eq!(status, 200);
    assert!(headers.contains(&("access-control-allow-origin".into(), "https://chat.example".into())));
    let t = host.run("OPTIONS", path, &[("origin", "https://chat.example")]);
    assert_eq!(t.response.expect("preflight").header("access-control-allow-origin"), Some("https://chat.example"));
}

#[test]
fn once_a_client_key_exists_the_statistics_need_the_admin_key_and_pages_get_cors() {
    use crate::wire::keystore::ClientSettings;
    let mut host = Host::new(2, &[]);
    host.cfg = crate::test_support::config_with(None, Some("admin-key-0123456789"));
    let t = host.run("GET", "/stat.json", &[]);
    assert!(t.response.is_none(), "open: the statistics, rendered by the host");
    let settings = ClientSettings { name: Some("c".into()), models: None, daily_requests: None, daily_tokens: None };
    let now = UnixMillis(1_800_000_000_000);
    host.pool.clients_mut().create("gpc-client-0123456789", settings, now).expect("client");
    for path in ["/stat.json", "/metrics", "/stat"] {
        for headers in [&[][..], &[("x-goog-api-key", "gpc-client-0123456789")][..]] {
            let t = host.run("GET", path, headers);
            assert_eq!(t.response.as_ref().map(|r| r.status), Some(401), "{path} {headers:?}");
        }
        let t = host.run("GET", path, &[("x-goog-api-key", "admin-key-0123456789")]);
        assert!(t.response.is_none(), "{path}: the statistics, rendered by the host");
    }
    let t = host.run("POST", "/stat/reset", &[("x-gemini-proxy-action", "reset")]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(401));
    // A page of any origin with a client key is served, with CORS.
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let t = host.run("OPTIONS", path, &[("origin", "https://chat.example")]);
    assert_eq!(t.response.expect("preflight").header("access-control-allow-origin"), Some("*"));
    let t = host.run("POST", path, &[("origin", "https://chat.example"), ("x-goog-api-key", "gpc-client-0123456789")]);
    let (_, headers) = t.streamed.expect("served");
    assert!(headers.contains(&("access-control-allow-origin".into(), "*".into())));
}

#[test]
fn a_batch_names_its_output_file_and_an_owners_404_forgets_only_what_it_concerns() {
    const DONE: &str = r#"{"name":"batches/b-1","done":true,"metadata":{"@type":"type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch","output":{"responsesFile":"files/batch-out-1"}},"response":{"responsesFile":"files/batch-out-1"}}"#;
    let mut host = Host::new(3, &[Answer::Status(200, DONE)]);
    let t = host.run("GET", "/v1beta/batches/b-1", &[("x-goog-api-key", "client")]);
    let names: Vec<&str> = t.reports[0].owned.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["batches/b-1", "files/batch-out-1"]);
    let owner = t.keys_sent()[0].clone();
    let t = host.run("GET", "/v1beta/files/batch-out-1", &[("x-goog-api-key", "client")]);
    assert_eq!(t.keys_sent(), std::slice::from_ref(&owner), "straight to its owner");
    // A prompt naming the file and the batch: the owner's 404 names the
    // file, which alone is forgotten.
    let gone = r#"{"error":{"code":404,"message":"File batch-out-1 was not found.","status":"NOT_FOUND"}}"#;
    host.upstream = [Answer::Status(404, gone)].into_iter().collect();
    host.body =
        Ok(br#"{"contents":[{"parts":[{"fileData":{"fileUri":"files/batch-out-1"}}]}],"cachedContent":"batches/b-1"}"#
            .to_vec());
    let t = generate(&mut host);
    assert_eq!(t.reports[0].deleted, ["files/batch-out-1"]);
    // Names in a request body are never registered.
    host.body = Ok(br#"{"contents":[{"parts":[{"fileData":{"fileUri":"files/someone-elses"}}]}]}"#.to_vec());
    host.upstream = [Answer::Status(200, "{}")].into_iter().collect();
    let t = generate(&mut host);
    assert!(t.reports[0].owned.is_empty(), "{:?}", t.reports[0].owned);
}

#[test]
fn clients_see_only_their_own_resources() {
    use crate::wire::keystore::ClientSettings;
    let mut host = Host::new(2, &[]);
    host.cfg = config(Some("proxy-key-123456"));
    let now = UnixMillis(1_800_000_000_000);
    let settings = |name: &str| ClientSettings { name: Some(name.into()), ..ClientSettings::default() };
    let alice = host.pool.clients_mut().create("gpc-alice-0123456789", settings("alice"), now).expect("alice");
    host.pool.clients_mut().create("gpc-bob-0123456789", settings("bob"), now).expect("bob");
    let (a, b) = (&[("x-goog-api-key", "gpc-alice-0123456789")][..], &[("x-goog-api-key", "gpc-bob-0123456789")][..]);
    const CACHE: &str =
        r#"{"name":"cachedContents/c-1","model":"models/gemini-2.5-flash","expireTime":"2027-02-01T00:00:00Z"}"#;
    host.upstream = [Answer::Status(200, CACHE)].into_iter().collect();
    host.body = Ok(br#"{"model":"models/gemini-2.5-flash","contents":[]}"#.to_vec());
    let t = host.run("POST", "/v1beta/cachedContents", a);
    assert_eq!(t.reports[0].client.as_deref(), Some(alice.id.as_str()));

    // Bob cannot read, use, delete or cancel it: a 404, nothing sent.
    host.body = Ok(br#"{"cachedContent":"cachedContents/c-1","contents":[]}"#.to_vec());
    for (method, path) in [
        ("GET", "/v1beta/cachedContents/c-1"),
        ("DELETE", "/v1beta/cachedContents/c-1"),
        ("PATCH", "/v1beta/cachedContents/c-1"),
        ("POST", "/v1beta/models/gemini-2.5-flash:generateContent"),
        ("GET", "/v1beta/files/never-made"),
    ] {
        let t = host.run(method, path, b);
        assert!(t.sent.is_empty(), "{method} {path}");
        let r = t.response.as_ref().expect("refused");
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(t.json()["error"]["status"], "NOT_FOUND");
    }
    // Alice can.
    host.upstream = [Answer::Status(200, CACHE)].into_iter().collect();
    assert_eq!(host.run("GET", "/v1beta/cachedContents/c-1", a).sent.len(), 1);

    // Listings: each client sees its own; the proxy key, everything.
    const PAGE: &str = r#"{"cachedContents":[{"name":"cachedContents/c-1"},{"name":"cachedContents/other"}]}"#;
    let listed = |host: &mut Host, headers: &[(&str, &str)]| {
        host.upstream = [Answer::Status(200, PAGE), Answer::Status(200, "{}")].into_iter().collect();
        let t = host.run("GET", "/v1beta/cachedContents", headers);
        let v = t.json();
        let items = v["cachedContents"].as_array().cloned().unwrap_or_default();
        items.iter().map(|i| i["name"].as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(listed(&mut host, a), ["cachedContents/c-1"]);
    assert!(listed(&mut host, b).is_empty());
    let all = listed(&mut host, &[("x-goog-api-key", "proxy-key-123456")]);
    assert_eq!(all, ["cachedContents/c-1", "cachedContents/other"]);
    // What a listing found is the proxy's, not the lister's.
    assert!(!host.pool.names_of(&alice.id, "cachedContents/", now).contains(&"cachedContents/other".to_owned()));
    // An OpenAI-style list is read whole and kept to the client's own.
    const FILES: &str = r#"{"object":"list","data":[{"object":"file","id":"files/theirs","filename":"x"}]}"#;
    host.upstream = [Answer::Status(200, FILES)].into_iter().collect();
    let t = host.run("GET", "/v1/files", &[("authorization", "Bearer gpc-bob-0123456789")]);
    assert_eq!(t.json()["data"], serde_json::json!([]));
    assert_eq!(t.json()["object"], "list");
    // A list below a model names no resource: kept to the client's own.
    const OPS: &str = r#"{"operations":[{"name":"models/veo-3/operations/theirs"}]}"#;
    host.upstream = [Answer::Status(200, OPS)].into_iter().collect();
    let t = host.run("GET", "/v1beta/models/veo-3/operations", b);
    assert_eq!(t.json()["operations"], serde_json::json!([]));
    // More names than are checked: refused to a client, not to the proxy key.
    let lease = host.pool.acquire("gemini-2.5-flash", &[], now).expect("a key");
    let mut made = Report { client: Some(alice.id.clone()), ..Report::of(&lease, "(files)", Outcome::Success) };
    for i in 0..names::MAX_NAMED {
        made.own(&format!("files/f{i}"), None);
    }
    host.pool.apply(&made, now);
    // Alice's 64, then one of no one's past the scan's bound.
    let many: Vec<String> = (0..=names::MAX_NAMED).map(|i| format!(r#"{{"fileUri":"files/f{i}"}}"#)).collect();
    host.body = Ok(format!(r#"{{"contents":[{{"parts":[{}]}}]}}"#, many.join(",")).into_bytes());
    let t = host.run("POST", "/v1beta/models/gemini-2.5-flash:generateContent", a);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
    assert!(t.sent.is_empty());
}

#[test]
fn a_batchs_and_an_interactions_tokens_count_once_however_often_they_are_read() {
    use crate::wire::keystore::ClientSettings;
    let mut host = Host::new(1, &[]);
    host.cfg = config(Some("proxy-key-123456"));
    let now = UnixMillis(1_800_000_000_000);
    let settings = ClientSettings { name: Some("c".into()), ..ClientSettings::default() };
    let c = host.pool.clients_mut().create("gpc-batcher-0123456789", settings, now).expect("client");
    let me = &[("x-goog-api-key", "gpc-batcher-0123456789")][..];
    const MADE: &str = r#"{"name":"batches/b-9","metadata":{"state":"BATCH_STATE_PENDING"}}"#;
    const DONE: &str = r#"{"name":"batches/b-9","done":true,"metadata":{"output":{"inlinedResponses":{"inlinedResponses":[
        {"response":{"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5}}},
        {"response":{"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":7,"thoughtsTokenCount":3}}}]}}}}"#;
    host.upstream = [Answer::Status(200, MADE)].into_iter().collect();
    host.body = Ok(br#"{"batch":{"inputConfig":{"requests":{"requests":[]}}}}"#.to_vec());
    host.run("POST", "/v1beta/models/gemini-2.5-flash:batchGenerateContent", me);
    for _ in 0..3 {
        host.upstream = [Answer::Status(200, DONE)].into_iter().collect();
        let t = host.run("GET", "/v1beta/batches/b-9", me);
        assert_eq!(t.reports[0].usage_of.as_deref(), Some("batches/b-9"));
    }
    assert_eq!(host.pool.clients().today(&c.id, now), (4, 45), "4 requests; 10+5+20+7+3 tokens, once");
    const IT: &str =
        r#"{"id":"v1_it-4","status":"completed","usage":{"total_input_tokens":8,"total_output_tokens":2}}"#;
    host.upstream = [Answer::Status(200, IT)].into_iter().collect();
    host.body = Ok(br#"{"model":"gemini-2.5-flash","input":"hi"}"#.to_vec());
    host.run("POST", "/v1beta/interactions", me);
    host.upstream = [Answer::Status(200, IT)].into_iter().collect();
    host.run("GET", "/v1beta/interactions/v1_it-4", me);
    assert_eq!(host.pool.clients().today(&c.id, now), (6, 55));
}

/// A Messages request of Claude Code's kind, on a model it names.
fn messages_body(stream: bool) -> Vec<u8> {
    serde_json::json!({
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 1024,
        "stream": stream,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Say hi"}],
        "metadata": {"user_id": "u"}
    })
    .to_string()
    .into_bytes()
}

const ANTHROPIC_HEADERS: &[(&str, &str)] = &[
    ("x-api-key", "client"),
    ("anthropic-version", "2023-06-01"),
    ("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14"),
    ("x-app", "cli"),
    ("user-agent", "claude-cli/2.1.0 (external, cli)"),
];

const GEMINI_HI: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi!"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":2,"totalTokenCount":11},"modelVersion":"gemini-3-flash-preview","responseId":"RESP9"}"#;

#[test]
fn an_anthropic_message_is_a_gemini_call_counted_under_its_gemini_model() {
    let mut host = Host::new(2, &[Answer::Status(200, GEMINI_HI)]);
    host.body = Ok(messages_body(false));
    let t = host.run("POST", "/v1/messages?beta=true", ANTHROPIC_HEADERS);
    let (_, sent) = &t.sent[0];
    assert_eq!(sent.path_and_query, "/v1beta/models/gemini-3-flash-preview:generateContent");
    let names: Vec<&str> = sent.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["user-agent", "content-type", "x-goog-api-key", "content-length"], "nothing of Anthropic's");
    let response = t.response.as_ref().expect("an answer");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json; charset=utf-8"));
    let message = t.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["model"], "claude-sonnet-4-5-20250929", "the model the client asked for");
    assert_eq!(message["content"], serde_json::json!([{"type": "text", "text": "Hi!"}]));
    assert_eq!(message["usage"]["input_tokens"], 9);
    // The pool counts a generateContent of the Gemini model, with its tokens.
    assert_eq!(t.reports[0].model, "gemini-3-flash-preview");
    assert_eq!(t.reports[0].usage, Some(TokenUsage { prompt: 9, output: 2, cached: 0, thinking: 0 }));
    let summary = t.summary.as_ref().expect("summed up");
    assert_eq!((summary.dialect.as_str(), summary.model.as_deref()), ("anthropic", Some("gemini-3-flash-preview")));
}

#[test]
fn an_anthropic_stream_is_translated_event_by_event() {
    const SSE: &str = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}],\"responseId\":\"R2\"}\r\n\r\ndata: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" there\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":3}}\r\n\r\n";
    let mut host = Host::new(1, &[Answer::Status(200, SSE)]);
    host.body = Ok(messages_body(true));
    let t = host.run("POST", "/v1/messages", &[("authorization", "Bearer client")]);
    assert_eq!(t.sent[0].1.path_and_query, "/v1beta/models/gemini-3-flash-preview:streamGenerateContent?alt=sse");
    let (status, headers) = t.streamed.as_ref().expect("streamed");
    assert_eq!(*status, 200);
    assert!(headers.contains(&("content-type".into(), "text/event-stream; charset=utf-8".into())));
    assert!(!headers.iter().any(|(n, _)| n == "content-length"), "{headers:?}");
    let out = String::from_utf8(t.stream_out.clone()).expect("as expected");
    let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(out.contains(r#""stop_reason":"end_turn""#), "{out}");
    assert_eq!(t.reports[0].usage, Some(TokenUsage { prompt: 5, output: 3, cached: 0, thinking: 0 }));
}

#[test]
fn anthropic_clients_get_errors_in_anthropic_s_shape() {
    let error = |t: &Trace| {
        let r = t.response.as_ref().expect("an answer");
        let v: Value = serde_json::from_str(&r.body).expect("as expected");
        assert_eq!(v["type"], "error", "{v}");
        (
            r.status,
            v["error"]["type"].as_str().unwrap_or_default().to_owned(),
            r.header("retry-after").map(str::to_owned),
        )
    };
    // Every key rate-limited: a 429 with a retry-after.
    let mut host = Host::new(2, &[Answer::Status(429, PER_MINUTE), Answer::Status(429, PER_MINUTE)]);
    host.body = Ok(messages_body(false));
    let t = host.run("POST", "/v1/messages", ANTHROPIC_HEADERS);
    assert_eq!(error(&t), (429, "rate_limit_error".into(), Some("60".into())));
    // Google's refusal of the request itself, with Google's words.
    let mut host = Host::new(2, &[Answer::Status(400, LOCATION)]);
    host.body = Ok(messages_body(false));
    let t = host.run("POST", "/v1/messages", ANTHROPIC_HEADERS);
    assert_eq!(error(&t), (400, "invalid_request_error".into(), None));
    assert!(t.json()["error"]["message"].as_str().expect("as expected").contains("User location"));
    assert_eq!(t.sent.len(), 1);
    // A body that is not a Messages request: nothing goes upstream.
    host.body = Ok(br#"{"model": "claude-x"}"#.to_vec());
    let t = host.run("POST", "/v1/messages", ANTHROPIC_HEADERS);
    assert_eq!(error(&t), (400, "invalid_request_error".into(), None));
    assert!(t.sent.is_empty());
    // The wrong key, a wrong method, a path that is not there.
    host.cfg = config(Some("proxy-key-0123456789"));
    host.body = Ok(messages_body(false));
    let t = host.run("POST", "/v1/messages", ANTHROPIC_HEADERS);
    assert_eq!(error(&t), (401, "authentication_error".into(), None));
    let t = host.run("GET", "/v1/messages", &[("x-api-key", "proxy-key-0123456789")]);
    assert_eq!(error(&t).0, 405);
    let t = host.run("POST", "/v1/messages/batches", &[("x-api-key", "proxy-key-0123456789")]);
    assert_eq!(error(&t), (404, "not_found_error".into(), None));
    // The proxy key as x-api-key opens the proxy.
    host.upstream = [Answer::Status(200, GEMINI_HI)].into_iter().collect();
    let t = host.run("POST", "/v1/messages", &[("x-api-key", "proxy-key-0123456789")]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(200));
}

#[test]
fn count_tokens_is_a_gemini_count() {
    let mut host = Host::new(1, &[Answer::Status(200, r#"{"totalTokens": 31}"#)]);
    host.body = Ok(br#"{"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}"#.to_vec());
    let t = host.run("POST", "/v1/messages/count_tokens?beta=true", ANTHROPIC_HEADERS);
    assert_eq!(t.sent[0].1.path_and_query, "/v1beta/models/gemini-2.5-flash-lite:countTokens");
    assert_eq!(t.json(), serde_json::json!({"input_tokens": 31}));
}

#[test]
fn aliases_hold_for_every_dialect() {
    let mut host = Host::new(1, &[]);
    let t =
        host.run("POST", "/v1beta/models/claude-sonnet-4-5:streamGenerateContent?alt=sse", &[("x-goog-api-key", "c")]);
    assert_eq!(t.sent[0].1.path_and_query, "/v1beta/models/gemini-3-flash-preview:streamGenerateContent?alt=sse");
    assert_eq!(t.reports[0].model, "gemini-3-flash-preview");
    host.body = Ok(br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#.to_vec());
    let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer c")]);
    assert_eq!(t.sent[0].1.path_and_query, "/v1beta/openai/chat/completions");
    assert_eq!(t.reports[0].model, "gemini-3-flash-preview");
    // A model no alias names goes as it is.
    let t = generate(&mut host);
    assert_eq!(t.sent[0].1.path_and_query, "/v1beta/models/gemini-2.5-flash:generateContent");
}

#[test]
fn the_admin_s_aliases_come_first_and_hold_from_the_next_request() {
    let mut host = Host::new(1, &[]);
    host.cfg = crate::test_support::config_with(None, Some("admin-key-0123456789"));
    host.cfg.model_aliases = crate::config::aliases::Aliases::parse("claude-opus-*=gemini-2.5-pro").expect("valid");
    let admin = [("authorization", "Bearer admin-key-0123456789")];
    let opus = |host: &mut Host| {
        host.body = Ok(br#"{"model": "claude-opus-4-5", "messages": [{"role": "user", "content": "hi"}]}"#.to_vec());
        host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer c")])
    };
    assert_eq!(opus(&mut host).reports[0].model, "gemini-2.5-pro");
    // The admin's table, set at run time, comes before MODEL_ALIASES's.
    host.body =
        Ok(br#"{"aliases": "claude-opus-4-5=gemini-2.5-flash\nmy-model=models/gemini-2.5-flash-lite"}"#.to_vec());
    let t = host.run("PUT", "/admin/aliases", &admin);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(200), "{:?}", t.response);
    let t = opus(&mut host);
    assert_eq!(t.reports[0].model, "gemini-2.5-flash");
    assert!(String::from_utf8_lossy(&t.sent_bodies[0]).contains(r#""model":"gemini-2.5-flash""#));
    let t = host.run("POST", "/v1beta/models/my-model:generateContent", &[("x-goog-api-key", "c")]);
    assert_eq!(t.sent[0].1.path_and_query, "/v1beta/models/gemini-2.5-flash-lite:generateContent");
    // The admin sees every layer, in the order they are consulted.
    let v = host.run("GET", "/admin/aliases", &admin).json();
    assert_eq!(v["aliases"][1], serde_json::json!({"from": "my-model", "to": "gemini-2.5-flash-lite"}));
    assert_eq!(v["configured"], serde_json::json!([{"from": "claude-opus-*", "to": "gemini-2.5-pro"}]));
    assert_eq!(v["defaults"][0]["from"], "claude-opus-*");
    // A bad table is refused whole, and the one in force stays.
    for bad in [r#"{"aliases": "claude-x=gemini 3"}"#, r#"{"aliases": [{"from": "a"}]}"#, r#"{"aliases": 3}"#] {
        host.body = Ok(bad.as_bytes().to_vec());
        let t = host.run("PUT", "/admin/aliases", &admin);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(400), "{bad}");
    }
    assert_eq!(opus(&mut host).reports[0].model, "gemini-2.5-flash");
    // Emptied, MODEL_ALIASES holds again; a client cannot touch the table.
    host.body = Ok(br#"{"aliases": []}"#.to_vec());
    assert_eq!(host.run("PUT", "/admin/aliases", &admin).response.map(|r| r.status), Some(200));
    assert_eq!(opus(&mut host).reports[0].model, "gemini-2.5-pro");
    host.body = Ok(br#"{"aliases": "claude-*=gemini-2.5-flash"}"#.to_vec());
    let t = host.run("PUT", "/admin/aliases", &[("authorization", "Bearer c")]);
    assert_eq!(t.response.map(|r| r.status), Some(401));
    assert!(host.pool.aliases().is_empty());
}

#[test]
fn an_aliased_answer_names_the_model_as_the_client_asked() {
    const CHAT: &str = r#"{"id":"c1","model":"gemini-3-flash-preview","choices":[{"message":{"content":"the model is gemini-3-flash-preview"}}]}"#;
    const NATIVE: &str = r#"{"candidates":[],"modelVersion":"gemini-3-flash-preview"}"#;
    let mut host = Host::new(1, &[Answer::Status(200, CHAT), Answer::Status(200, NATIVE), Answer::Status(200, NATIVE)]);
    host.body = Ok(br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#.to_vec());
    let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer c")]);
    let out = String::from_utf8(t.stream_out.clone()).expect("utf-8");
    assert_eq!(out, CHAT.replacen(r#""model":"gemini-3-flash-preview""#, r#""model":"gpt-4o""#, 1));
    let (_, headers) = t.streamed.as_ref().expect("streamed");
    assert!(headers.iter().all(|(n, _)| n != "content-length"), "{headers:?}");
    let t = host.run("POST", "/v1beta/models/claude-sonnet-4-5:generateContent", &[("x-goog-api-key", "c")]);
    assert!(String::from_utf8_lossy(&t.stream_out).contains(r#""modelVersion":"claude-sonnet-4-5""#));
    // A call by the Gemini name passes as it came.
    let t = host.run("POST", "/v1beta/models/gemini-3-flash-preview:generateContent", &[("x-goog-api-key", "c")]);
    assert_eq!(t.stream_out, NATIVE.as_bytes());
}

#[test]
fn a_call_without_a_model_does_not_ask_for_the_aliases() {
    let mut host = Host::new(1, &[Answer::Status(200, r#"{"models": []}"#)]);
    let t = host.run("GET", "/v1beta/models", &[("x-goog-api-key", "c")]);
    assert!(!t.sent.is_empty());
    assert!(t.admin_ops.iter().all(|op| !matches!(op, AdminOp::Aliases)), "{:?}", t.admin_ops);
    let t = generate(&mut host);
    assert!(t.admin_ops.iter().any(|op| matches!(op, AdminOp::Aliases)), "{:?}", t.admin_ops);
}

#[test]
fn a_responses_call_is_a_gemini_call_answered_as_a_response() {
    const SSE: &str = "data: {\"responseId\":\"R5\",\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]},\"finishReason\":\"STOP\"}]}\r\n\r\n";
    let mut host = Host::new(2, &[Answer::Status(200, GEMINI_HI), Answer::Status(200, SSE)]);
    let codex = [("authorization", "Bearer client"), ("accept", "text/event-stream"), ("originator", "codex_exec")];
    host.body = Ok(br#"{"model": "gpt-5-codex", "input": "Say hi", "store": false}"#.to_vec());
    let t = host.run("POST", "/v1/responses", &codex);
    assert_eq!(t.sent[0].1.path_and_query, "/v1beta/models/gemini-3-flash-preview:generateContent");
    assert_eq!(t.reports[0].model, "gemini-3-flash-preview");
    let v = t.json();
    assert_eq!((v["object"].as_str(), v["model"].as_str()), (Some("response"), Some("gpt-5-codex")));
    assert_eq!(v["output"][0]["content"][0]["text"], "Hi!");
    assert_eq!(v["created_at"], 1_800_000_000);
    // Streamed, below Google's OpenAI base too.
    host.body = Ok(br#"{"model": "gemini-2.5-flash", "input": "Say hi", "stream": true}"#.to_vec());
    let t = host.run("POST", "/v1beta/openai/responses", &codex);
    assert_eq!(t.sent[0].1.path_and_query, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
    let out = String::from_utf8(t.stream_out.clone()).expect("utf-8");
    assert!(out.starts_with("event: response.created\n") && out.contains("event: response.completed\n"), "{out}");
    // What the proxy does not keep: OpenAI's shape, never Google's 404.
    host.body = Ok(br#"{"input": []}"#.to_vec());
    for (method, path) in
        [("POST", "/v1/responses/compact"), ("GET", "/v1/responses/resp_1"), ("DELETE", "/responses/resp_1")]
    {
        let t = host.run(method, path, &codex);
        assert!(t.sent.is_empty());
        let response = t.response.as_ref().expect("answered");
        assert_eq!(response.status, 404, "{path}");
        let v = t.json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("keeps no responses")), "{v}");
    }
    host.body = Ok(br#"{"model": "gemini-2.5-flash", "input": "hi", "previous_response_id": "resp_9"}"#.to_vec());
    let t = host.run("POST", "/v1/responses", &codex);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
    assert!(t.json()["error"]["message"].as_str().is_some_and(|m| m.contains("previous_response_id")));
}

#[test]
fn translated_answers_carry_cors_on_a_proxy_with_a_key() {
    const SSE: &str = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\r\n\r\n";
    let mut host = Host::new(1, &[Answer::Status(200, GEMINI_HI), Answer::Status(200, SSE)]);
    host.cfg = config(Some("proxy-key-0123456789"));
    let from_a_page = [("x-api-key", "proxy-key-0123456789"), ("origin", "https://chat.example")];
    host.body = Ok(messages_body(false));
    let t = host.run("POST", "/v1/messages", &from_a_page);
    let response = t.response.as_ref().expect("an answer");
    assert_eq!(response.header("access-control-allow-origin"), Some("*"), "{:?}", response.headers);
    host.body = Ok(messages_body(true));
    let t = host.run("POST", "/v1/messages", &from_a_page);
    let (_, headers) = t.streamed.as_ref().expect("streamed");
    assert!(headers.contains(&("access-control-allow-origin".into(), "*".into())), "{headers:?}");
}

/// A chat answer of Google's OpenAI layer with a signed tool call.
const SIGNED_CHAT: &str = r#"{"id":"c1","object":"chat.completion","model":"gemini-3-flash-preview","choices":[{"index":0,"message":{"role":"assistant","tool_calls":[{"id":"function-call-11","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"},"extra_content":{"google":{"thought_signature":"Q2lRQmF6+/=="}}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}"#;

#[test]
fn a_chat_client_that_drops_signatures_gets_them_back_on_its_next_turn() {
    let tools = r#""tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]"#;
    let mut host = Host::new(2, &[Answer::Status(200, SIGNED_CHAT), Answer::Status(200, "{}")]);
    host.body = Ok(format!(
        r#"{{"model":"gemini-3-flash-preview","messages":[{{"role":"user","content":"weather?"}}],{tools}}}"#
    )
    .into_bytes());
    let chat =
        |host: &mut Host| host.run("POST", "/v1beta/openai/chat/completions", &[("authorization", "Bearer client")]);
    let first = chat(&mut host);
    assert_eq!(first.stream_out, SIGNED_CHAT.as_bytes(), "the answer passes as it came");
    let kept =
        AdminOp::SignaturesKeep { client: None, pairs: vec![("function-call-11".into(), "Q2lRQmF6+/==".into())] };
    let signature_ops = |t: &Trace| -> Vec<AdminOp> {
        let ops =
            t.admin_ops.iter().filter(|op| matches!(op, AdminOp::Signatures { .. } | AdminOp::SignaturesKeep { .. }));
        ops.cloned().collect()
    };
    assert_eq!(signature_ops(&first), [kept]);
    // The client sends the call back without extra_content.
    host.body = Ok(format!(
        r#"{{"model":"gemini-3-flash-preview","messages":[{{"role":"user","content":"weather?"}},{{"role":"assistant","tool_calls":[{{"id":"function-call-11","type":"function","function":{{"name":"get_weather","arguments":"{{}}"}}}}]}},{{"role":"tool","tool_call_id":"function-call-11","content":"sunny"}}],{tools}}}"#
    )
    .into_bytes());
    let second = chat(&mut host);
    assert!(matches!(&signature_ops(&second)[..], [AdminOp::Signatures { ids, .. }] if ids == &["function-call-11"]));
    let sent: Value = serde_json::from_slice(&second.sent_bodies[0]).expect("json");
    assert_eq!(sent["messages"][1]["tool_calls"][0]["extra_content"]["google"]["thought_signature"], "Q2lRQmF6+/==");
    assert!(second.logs.iter().all(|l| !l.contains("placeholder")), "{:?}", second.logs);
    // Another client never gets it: a proxy that forgot it (or never saw
    // it) sends Google's placeholder on Gemini 3, and says so.
    let mut fresh = Host::new(1, &[Answer::Status(200, "{}")]);
    fresh.body = host.body.clone();
    let third = chat(&mut fresh);
    let sent: Value = serde_json::from_slice(&third.sent_bodies[0]).expect("json");
    let sig = &sent["messages"][1]["tool_calls"][0]["extra_content"]["google"]["thought_signature"];
    assert_eq!(sig, crate::translate::signature::PLACEHOLDER);
    assert!(third.logs.iter().any(|l| l.contains("placeholder")), "{:?}", third.logs);
}

#[test]
fn a_chat_without_tools_costs_no_store_call() {
    let mut host = Host::new(1, &[Answer::Status(200, SIGNED_CHAT)]);
    host.body = Ok(br#"{"model":"gemini-3-flash-preview","messages":[{"role":"user","content":"hi"}]}"#.to_vec());
    let t = host.run("POST", "/v1beta/openai/chat/completions", &[("authorization", "Bearer client")]);
    assert!(t.admin_ops.iter().all(|op| !matches!(op, AdminOp::Signatures { .. } | AdminOp::SignaturesKeep { .. })));
}

#[test]
fn a_models_listing_teaches_the_pool_which_names_to_count_during_an_outage() {
    const LISTING: &str = r#"{"models": [{"name": "models/gemini-9-pro", "displayName": "Gemini 9 Pro"}]}"#;
    let mut host = Host::new(2, &[Answer::Status(200, LISTING)]);
    let t = host.run("GET", "/v1beta/models", &[("x-goog-api-key", "client")]);
    assert_eq!(t.stream_out, LISTING.as_bytes());
    assert!(t.admin_ops.contains(&AdminOp::ModelsListed { names: vec!["gemini-9-pro".into()] }), "{:?}", t.admin_ops);
    // Every key fails: the calls count under the model's own name.
    host.upstream = [Answer::Status(503, OVERLOADED), Answer::Status(503, OVERLOADED)].into_iter().collect();
    let t = host.run("POST", "/v1beta/models/gemini-9-pro:generateContent", &[("x-goog-api-key", "client")]);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(502));
    let snapshot = host.pool.snapshot(UnixMillis(1_800_000_000_000));
    let counted: u64 =
        snapshot.keys.iter().flat_map(|k| &k.models).filter(|m| m.model == "gemini-9-pro").map(|m| m.requests).sum();
    assert_eq!(counted, 2);
}

#[test]
fn the_workers_own_models_listing_goes_with_a_pool_key_and_teaches_the_names() {
    const LISTING: &str = r#"{"models": [{"name": "models/gemini-9-pro"}]}"#;
    let mut host = Host::new(1, &[Answer::Status(200, LISTING)]);
    // A proxy with a key: the host's own request needs none.
    host.cfg = config(Some("the-proxy-key"));
    let t = host.drive(Exchange::models_listing(Arc::new(host.cfg.clone())));
    assert_eq!(t.sent[0].1.path_and_query, "/v1beta/models?pageSize=1000");
    assert!(t.admin_ops.contains(&AdminOp::ModelsListed { names: vec!["gemini-9-pro".into()] }));
}

/// A host whose proxy keeps slow non-streamed answers alive every second.
fn keeping_alive(keys: usize, upstream: &[Answer]) -> Host {
    let mut host = Host::new(keys, upstream);
    host.cfg.timeouts.keepalive_ms = 1_000;
    host
}

const ANSWER: &str = r#"{"candidates":[{"content":{"parts":[{"text":"slow"}]}}]}"#;

#[test]
fn a_slow_non_streamed_answer_is_committed_kept_alive_and_then_sent_whole() {
    let mut host = keeping_alive(3, &[Answer::Slow(3, &Answer::Status(200, ANSWER))]);
    let t = generate(&mut host);
    assert_eq!(t.sent.len(), 1);
    let keep = t.sent[0].1.keep_alive.expect("kept alive");
    assert_eq!(keep.every_ms, 1_000);
    assert!(keep.wait_ms >= COMMITTED_WAIT_MS, "a committed answer waits longer than the first-byte timeout");
    // Three intervals without a head: three keep-alive bytes, each with
    // the same committed head (the host sends it once).
    assert_eq!(t.kept_alive.len(), 3);
    let (status, headers) = &t.kept_alive[0];
    assert_eq!(*status, 200);
    assert!(headers.iter().any(|(n, v)| n == "content-type" && v.starts_with("application/json")), "{headers:?}");
    assert_eq!(t.stream_out, ANSWER.as_bytes(), "the answer's body follows the whitespace");
    assert!(t.response.is_none());
    assert!(matches!(t.reports.as_slice(), [r] if r.outcome == Outcome::Success));
    assert_eq!(t.summary.as_ref().map(|s| s.status), Some(200));
}

#[test]
fn once_committed_a_failure_is_the_answers_error_in_the_callers_dialect_and_no_other_key_is_tried() {
    for failure in [Answer::Status(503, OVERLOADED), Answer::Unreachable, Answer::Stalled] {
        let failure: &'static Answer = Box::leak(Box::new(failure));
        let mut host = keeping_alive(3, &[Answer::Slow(1, failure)]);
        let t = generate(&mut host);
        assert_eq!(t.sent.len(), 1, "no other key after the commit");
        assert_eq!(t.kept_alive.len(), 1);
        assert_eq!(t.ended_clean, Some(false), "an error ends the committed answer broken");
        let error = t.json();
        assert!(error["error"]["message"].is_string(), "{error}");
        // Counted as the failure it is, against the key that failed.
        let outcomes: Vec<&Outcome> = t.settled.iter().chain(&t.reports).map(|r| &r.outcome).collect();
        assert!(
            matches!(
                outcomes.as_slice(),
                [Outcome::UpstreamError { status: 503, .. } | Outcome::TransportError { .. }]
            ),
            "{outcomes:?}"
        );
        assert!(t.summary.as_ref().is_some_and(|s| s.status >= 500 && s.error.is_some()));
    }
    // A 429 after the commit marks the key, and the client reads the error.
    let mut host = keeping_alive(3, &[Answer::Slow(2, &Answer::Status(429, PER_MINUTE))]);
    let t = generate(&mut host);
    assert_eq!(t.sent.len(), 1);
    assert_eq!(t.json()["error"]["code"], 429, "{}", t.json());
    assert_eq!(t.summary.as_ref().map(|s| s.status), Some(429));
    assert!(matches!(t.reports.as_slice(), [r] if matches!(r.outcome, Outcome::RateLimited(_))), "{:?}", t.reports);
}

#[test]
fn before_the_first_keep_alive_byte_failures_move_on_to_another_key() {
    let mut host = keeping_alive(3, &[Answer::Status(503, OVERLOADED), Answer::Slow(1, &Answer::Status(200, ANSWER))]);
    let t = generate(&mut host);
    assert_eq!(t.sent.len(), 2);
    assert_eq!(t.kept_alive.len(), 1);
    assert_eq!(t.stream_out, ANSWER.as_bytes());
}

#[test]
fn only_non_streamed_generations_are_kept_alive_and_only_when_set() {
    let mut host = keeping_alive(2, &[]);
    let streamed = host.run(
        "POST",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        &[("x-goog-api-key", "client")],
    );
    assert!(streamed.sent[0].1.keep_alive.is_none(), "a stream sends its own bytes");
    let listing = host.run("GET", "/v1beta/models", &[("x-goog-api-key", "client")]);
    assert!(listing.sent.iter().all(|(_, r)| r.keep_alive.is_none()));
    host.body = Ok(br#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#.to_vec());
    let chat = host.run("POST", "/v1beta/openai/chat/completions", &[("authorization", "Bearer client")]);
    assert!(chat.sent[0].1.keep_alive.is_some(), "an OpenAI chat is");
    let mut off = Host::new(2, &[Answer::Slow(2, &Answer::Status(200, ANSWER))]);
    let t = generate(&mut off);
    assert!(t.sent[0].1.keep_alive.is_none() && t.kept_alive.is_empty(), "off unless set");
}

#[test]
fn a_committed_anthropic_answer_fails_in_anthropic_s_shape() {
    let mut host = keeping_alive(2, &[Answer::Slow(1, &Answer::Status(503, OVERLOADED))]);
    host.body = Ok(messages_body(false));
    let t = host.run("POST", "/v1/messages", &[("x-api-key", "client"), ("anthropic-version", "2023-06-01")]);
    assert_eq!(t.sent.len(), 1);
    let (_, headers) = &t.kept_alive[0];
    assert!(headers.iter().any(|(n, v)| n == "content-type" && v.starts_with("application/json")));
    assert_eq!(t.json()["type"], "error", "{}", t.json());
    assert_eq!(t.ended_clean, Some(false));
    // A translated answer is read whole, then ends the committed answer.
    let mut host = keeping_alive(2, &[Answer::Slow(2, &Answer::Status(200, ANSWER))]);
    host.body = Ok(messages_body(false));
    let t = host.run("POST", "/v1/messages", &[("x-api-key", "client"), ("anthropic-version", "2023-06-01")]);
    assert_eq!((t.kept_alive.len(), t.ended_clean), (2, Some(true)));
    assert_eq!(t.json()["type"], "message", "{}", t.json());
    assert_eq!(t.json()["content"][0]["text"], "slow");
}

#[test]
fn a_proxy_that_fails_moves_on_to_another_key_and_is_never_held_against_the_key() {
    let mut host = Host::new(3, &[Answer::ProxyDown, Answer::Status(200, ANSWER)]);
    let t = generate(&mut host);
    assert_eq!(t.sent.len(), 2, "another key after the proxy failed");
    // No report for the first key: its call never reached Google.
    assert!(t.settled.is_empty(), "{:?}", t.settled);
    assert!(matches!(t.reports.as_slice(), [r] if r.key == t.sent[1].0 && r.outcome == Outcome::Success));
    let s = host.pool.snapshot(UnixMillis(0));
    assert!(s.keys.iter().all(|k| k.models.iter().all(|m| m.errors == 0)), "no key counted an error");
    let summary = t.summary.expect("summary");
    assert_eq!(summary.attempts[0].outcome, "proxy-failed");
    assert!(summary.attempts[0].reason.as_deref().is_some_and(|r| r.contains("***")));
    // Every proxy down: a 502 that says so.
    let mut host = Host::new(2, &[Answer::ProxyDown, Answer::ProxyDown]);
    let t = generate(&mut host);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(502));
    let message = t.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("an outbound proxy failed") && !message.contains("10.0.0.9"), "{message}");
}

#[test]
fn a_projects_proxy_is_set_only_on_a_host_that_sends_through_proxies() {
    let mut host = Host::new(1, &[]);
    host.cfg = crate::test_support::config_with(None, Some("admin-key-0123456789"));
    host.body = Ok(br#"{"project": "p1", "proxy": "http://10.0.0.9:3128"}"#.to_vec());
    let admin = [("authorization", "Bearer admin-key-0123456789")];
    let t = host.run("PUT", "/admin/proxies", &admin);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
    assert!(t.json()["error"]["message"].as_str().is_some_and(|m| m.contains("host-runner")), "{}", t.json());
    assert!(t.admin_ops.is_empty(), "nothing reached the key store");
    host.cfg.outbound_proxies = true;
    let t = host.run("PUT", "/admin/proxies", &admin);
    assert_eq!(t.response.as_ref().map(|r| r.status), Some(200), "{}", t.json());
    let t = host.run("GET", "/admin/proxies", &admin);
    assert_eq!(t.json()["projects"][0]["proxy"], "http://10.0.0.9:3128");
}
