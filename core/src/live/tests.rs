use super::*;
use crate::exchange::MAX_ATTEMPTS;
use crate::test_support::{config, fake_key, h, lease};
use crate::wire::keystore::{
    AdminAnswer, AdminOp, Lease, Outcome, Quota, RateLimitScope, Refusal, Report, Unavailable,
};
use crate::wire::resource::Resource;

const PROXY_KEY: &str = "proxy-key-0123456789";
const PATH: &str = "//ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
const SETUP: &str =
    r#"{"setup":{"model":"models/gemini-live-2.5-flash-preview","generationConfig":{"responseModalities":["TEXT"]}}}"#;

fn upgrade(extra: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    let mut pairs = vec![("host", "127.0.0.1:8787"), ("upgrade", "websocket"), ("connection", "Upgrade")];
    pairs.extend_from_slice(extra);
    h(&pairs)
}

fn keyed() -> Arc<Config> {
    Arc::new(config(Some(PROXY_KEY)))
}

fn no_aliases() -> Event {
    Event::Admin(AdminAnswer { status: 200, body: r#"{"aliases":[]}"#.into(), ..AdminAnswer::unsaved() })
}

/// A session with the proxy key, driven to its first `Open`.
fn opened_session(setup: &str) -> (Session, Upstream) {
    let mut s = admit(keyed(), PATH, &upgrade(&[("x-goog-api-key", PROXY_KEY)])).expect("admitted");
    assert_eq!(s.resume(Event::Start), Step::Upgrade, "the proxy key is upgraded at once");
    assert!(matches!(s.resume(Event::Done), Step::ReadSetup { .. }));
    assert_eq!(s.resume(Event::Setup(setup.as_bytes().to_vec())), Step::Admin(AdminOp::Aliases));
    let Step::Acquire { model, exclude, settle, client, resources } = s.resume(no_aliases()) else { panic!() };
    assert_eq!(
        (model.as_str(), exclude.len(), settle, client, resources.len()),
        ("gemini-live-2.5-flash-preview", 0, None, None, 0)
    );
    let Step::Open(up) = s.resume(Event::Acquired(Ok(lease(0)))) else { panic!() };
    (s, up)
}

/// Drives a session to its setup: the caller known (a client, a token's
/// holder), then the upgrade.
fn start(s: &mut Session) {
    let mut step = s.resume(Event::Start);
    if let Step::Admin(AdminOp::Identify { .. }) = step {
        step = s.resume(Event::Admin(AdminAnswer {
            status: 200,
            body: r#"{"client":null}"#.into(),
            ..AdminAnswer::unsaved()
        }));
    }
    assert_eq!(step, Step::Upgrade);
    assert!(matches!(s.resume(Event::Done), Step::ReadSetup { .. }));
}

/// The steps until `Done`, each answered with `Event::Done`.
fn rest(s: &mut Session, first: Step) -> Vec<Step> {
    let mut steps = vec![first];
    while steps.last() != Some(&Step::Done) {
        steps.push(s.resume(Event::Done));
        assert!(steps.len() < 20, "no end: {steps:?}");
    }
    steps
}

fn reports(steps: &[Step]) -> Vec<&Report> {
    steps.iter().filter_map(|s| if let Step::Report(r) = s { Some(r) } else { None }).collect()
}

fn close_of(steps: &[Step]) -> &Close {
    steps.iter().find_map(|s| if let Step::Close(c) = s { Some(c) } else { None }).expect("a close")
}

#[test]
fn paths_as_the_sdks_build_them() {
    for (path, version, constrained) in [
        (PATH, "v1beta", false),
        ("/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent", "v1", false),
        ("//ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained", "v1alpha", true),
    ] {
        assert!(is_live_path(path));
        assert_eq!(target(path), Some(Target { version: version.into(), constrained }), "{path}");
    }
    for bad in [
        "/ws/google.ai.generativelanguage.v1beta.GenerativeService.Other",
        "/ws/google.ai.generativelanguage.beta.GenerativeService.BidiGenerateContent",
        "/ws/google.ai.generativelanguage.v1/x.GenerativeService.BidiGenerateContent",
        "/v1beta/models",
    ] {
        assert_eq!(target(bad), None, "{bad}");
    }
    assert!(!is_live_path("/v1beta/models/x:generateContent"));
}

#[test]
fn the_upgrade_is_refused_before_anything_without_the_proxy_key() {
    let refused = |headers: Vec<(String, Vec<u8>)>| admit(keyed(), PATH, &headers).err().map(|r| r.status);
    assert_eq!(refused(upgrade(&[])), Some(401));
    assert_eq!(refused(h(&[("x-goog-api-key", PROXY_KEY)])), Some(400), "not an upgrade");
    assert_eq!(
        admit(keyed(), "/ws/google.ai.generativelanguage.v1beta.GenerativeService.Nope", &upgrade(&[]))
            .err()
            .map(|r| r.status),
        Some(404)
    );
    assert!(admit(keyed(), &format!("{PATH}?key={PROXY_KEY}"), &upgrade(&[])).is_ok(), "the JS SDK's ?key=");
    // Another key may be a client's: the key store admits it at setup.
    let mut s = admit(keyed(), PATH, &upgrade(&[("x-goog-api-key", "client-key-1")])).expect("a claim");
    start(&mut s);
    s.resume(Event::Setup(SETUP.as_bytes().to_vec()));
    let Step::Acquire { client: Some(claim), .. } = s.resume(no_aliases()) else { panic!() };
    assert_eq!(claim.hashes, vec![crate::wire::keystore::hash_secret("client-key-1")]);
}

#[test]
fn an_open_proxy_refuses_pages_of_other_origins() {
    let open = Arc::new(config(None));
    let r = admit(open.clone(), PATH, &upgrade(&[("origin", "https://evil.example")])).expect_err("refused");
    assert_eq!(r.status, 403);
    let r =
        admit(open.clone(), PATH, &h(&[("host", "evil.example"), ("upgrade", "websocket"), ("connection", "upgrade")]));
    assert_eq!(r.err().map(|r| r.status), Some(421));
    assert!(admit(open, PATH, &upgrade(&[])).is_ok());
}

#[test]
fn a_session_relays_counts_its_tokens_and_registers_its_handles() {
    let (mut s, up) = opened_session(SETUP);
    assert_eq!(up.url, "ws://127.0.0.1:9/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent");
    assert_eq!(up.headers, vec![("x-goog-api-key".to_owned(), fake_key("POOL", 0))]);
    assert!(!format!("{up:?}").contains(&fake_key("POOL", 0)), "Debug shows no key");
    let json = |s: &str| serde_json::from_str::<Value>(s).expect("JSON");
    assert_eq!(json(&up.setup), json(SETUP), "the setup as the client sent it");
    let first = br#"{"setupComplete":{}}"#.to_vec();
    assert_eq!(s.resume(Event::Opened { message: first.clone(), binary: true }), Step::Relay { first, binary: true });
    assert_eq!(s.upstream_message(br#"{"serverContent":{"modelTurn":{"parts":[{"text":"hi"}]}}}"#), None);
    let usage = br#"{"usageMetadata":{"promptTokenCount":10,"responseTokenCount":4,"totalTokenCount":14,"thoughtsTokenCount":2}}"#;
    assert_eq!(s.upstream_message(usage), None);
    assert_eq!(s.upstream_message(usage), None);
    let Some(AdminOp::Own { key, client, owned }) =
        s.upstream_message(br#"{"sessionResumptionUpdate":{"newHandle":"h-123","resumable":true}}"#)
    else {
        panic!("a handle is registered at once")
    };
    assert_eq!((key, client), (lease(0).id, None));
    assert_eq!(owned[0].name, Resource::live_handle("h-123").name());
    assert!(!owned[0].name.contains("h-123"), "only its hash is kept");
    assert_eq!(s.upstream_message(br#"{"sessionResumptionUpdate":{"resumable":false}}"#), None);
    let first = s.resume(Event::Ended(End::ClientClosed));
    let steps = rest(&mut s, first);
    let r = reports(&steps);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].outcome, Outcome::Success);
    assert_eq!(r[0].usage, Some(TokenUsage { prompt: 20, output: 8, cached: 0, thinking: 4 }));
    let Some(Step::Summary(summary)) = steps.iter().find(|s| matches!(s, Step::Summary(_))) else { panic!() };
    assert_eq!((summary.status, summary.dialect.as_str(), summary.attempts.len()), (101, "live", 1));
    assert_eq!(summary.path, format!("/{}", PATH.trim_start_matches('/')));
}

#[test]
fn a_used_up_quota_marks_the_key_and_the_setup_goes_to_the_next() {
    let (mut s, _) = opened_session(SETUP);
    let quota = "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.";
    let step = s.resume(Event::Closed { code: 1011, reason: fit_reason(quota) });
    let Step::Acquire { exclude, settle: Some(settle), client: None, .. } = step else { panic!("{step:?}") };
    assert_eq!(exclude, vec![lease(0).id]);
    assert!(
        matches!(&settle.outcome, Outcome::RateLimited(rl) if rl.scope == RateLimitScope::Unknown && rl.reason.starts_with("You exceeded"))
    );
    // Per day when Google's words say so.
    assert!(
        matches!(classify_close(1011, "Quota exceeded: requests per day"), Verdict::Retry(Outcome::RateLimited(rl)) if rl.scope == RateLimitScope::PerDay)
    );
    let Step::Open(up) = s.resume(Event::Acquired(Ok(lease(1)))) else { panic!() };
    assert_eq!(up.headers[0].1, fake_key("POOL", 1));
    assert!(matches!(s.resume(Event::Opened { message: b"{}".to_vec(), binary: false }), Step::Relay { .. }));
    // Google ends it as it ends sessions: a clean close.
    let first = s.resume(Event::Ended(End::UpstreamClosed(1000, String::new())));
    let steps = rest(&mut s, first);
    assert_eq!(reports(&steps)[0].outcome, Outcome::Success);
    assert_eq!(reports(&steps)[0].key, lease(1).id);
}

#[test]
fn every_key_used_up_closes_the_client_with_the_proxys_reason() {
    let (mut s, _) = opened_session(SETUP);
    let mut step = s.resume(Event::Closed { code: 1011, reason: "You exceeded your current quota".into() });
    for i in 1..MAX_ATTEMPTS {
        assert!(matches!(step, Step::Acquire { .. }), "{step:?}");
        assert!(matches!(s.resume(Event::Acquired(Ok(lease(i)))), Step::Open(_)));
        step = s.resume(Event::Closed { code: 1011, reason: "You exceeded your current quota".into() });
    }
    let steps = rest(&mut s, step);
    assert_eq!(reports(&steps).len(), 1, "the last attempt's report");
    assert!(reports(&steps)[0].outcome.kind() == "rate-limited");
    let close = close_of(&steps);
    assert_eq!(close.code, 1011);
    assert!(close.reason.len() <= MAX_CLOSE_REASON);
    assert!(!close.reason.contains("AIza"), "{close:?}");
}

#[test]
fn a_policy_close_has_the_key_checked_alone() {
    // A dead key: checked, rejected, and the next key serves.
    let (mut s, _) = opened_session(SETUP);
    let Step::Check(check) =
        s.resume(Event::Closed { code: 1008, reason: "API key not valid. Please pass a valid API key.".into() })
    else {
        panic!()
    };
    assert!(check.path_and_query.ends_with("/models?pageSize=1"));
    let invalid = br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
    let Step::Acquire { settle: Some(settle), .. } = s.resume(Event::Checked { status: 400, body: invalid.to_vec() })
    else {
        panic!()
    };
    assert_eq!(settle.outcome.kind(), "key-rejected");
    // A model the session cannot use: the key works, the client hears Google.
    let (mut s, _) = opened_session(SETUP);
    let reason = "models/nope is not found for API version v1beta, or is not supported for bidiGenerateContent";
    assert!(matches!(s.resume(Event::Closed { code: 1008, reason: reason.into() }), Step::Check(_)));
    let first = s.resume(Event::Checked { status: 200, body: b"{}".to_vec() });
    let steps = rest(&mut s, first);
    assert_eq!(reports(&steps)[0].outcome, Outcome::ClientError { status: 400 });
    assert_eq!(close_of(&steps), &Close::new(1008, reason));
}

#[test]
fn a_first_message_that_is_no_setup_is_refused() {
    let mut s = admit(keyed(), PATH, &upgrade(&[("x-goog-api-key", PROXY_KEY)])).expect("admitted");
    start(&mut s);
    for bad in [&br#"{"clientContent":{}}"#[..], b"not json", br#"{"setup":{"model":"models/a b"}}"#] {
        let mut s2 = admit(keyed(), PATH, &upgrade(&[("x-goog-api-key", PROXY_KEY)])).expect("admitted");
        start(&mut s2);
        let first = s2.resume(Event::Setup(bad.to_vec()));
        let steps = rest(&mut s2, first);
        assert_eq!(close_of(&steps).code, 1007);
        assert!(reports(&steps).is_empty(), "nothing reached a key");
    }
    let first = s.resume(Event::ClientGone("timed out".into()));
    assert!(rest(&mut s, first).iter().all(|s| !matches!(s, Step::Acquire { .. } | Step::Close(_))));
}

#[test]
fn a_client_refused_by_the_key_store_is_closed_with_why() {
    let mut s = admit(keyed(), PATH, &upgrade(&[("x-goog-api-key", "client-key-1")])).expect("a claim");
    start(&mut s);
    s.resume(Event::Setup(SETUP.as_bytes().to_vec()));
    s.resume(no_aliases());
    let over = Refusal::OverQuota {
        client: "app".into(),
        quota: Quota::Requests,
        limit: 3,
        resets_at: crate::wire::time::UnixMillis(0),
        retry_after_ms: 1000,
    };
    let first = s.resume(Event::Acquired(Err(Unavailable::Refused { refusal: over })));
    let steps = rest(&mut s, first);
    let close = close_of(&steps);
    assert_eq!(close.code, 1011, "a quota, as Google closes for one");
    assert!(close.reason.contains("app"), "{close:?}");
    let mut s = admit(keyed(), PATH, &upgrade(&[("x-goog-api-key", "client-key-1")])).expect("a claim");
    start(&mut s);
    s.resume(Event::Setup(SETUP.as_bytes().to_vec()));
    s.resume(no_aliases());
    let refusal = Refusal::ModelNotAllowed { client: "app".into(), model: "gemini-live-2.5-flash-preview".into() };
    let first = s.resume(Event::Acquired(Err(Unavailable::Refused { refusal })));
    assert_eq!(close_of(&rest(&mut s, first)).code, 1008);
}

#[test]
fn an_alias_names_the_model_served_in_the_setup() {
    let mut s = admit(keyed(), PATH, &upgrade(&[("x-goog-api-key", PROXY_KEY)])).expect("admitted");
    start(&mut s);
    s.resume(Event::Setup(br#"{"setup":{"model":"models/live"}}"#.to_vec()));
    let aliases = Event::Admin(AdminAnswer {
        status: 200,
        body: r#"{"aliases":[{"from":"live","to":"gemini-2.0-flash-live-001"}]}"#.into(),
        ..AdminAnswer::unsaved()
    });
    let Step::Acquire { model, .. } = s.resume(aliases) else { panic!() };
    assert_eq!(model, "gemini-2.0-flash-live-001");
    let Step::Open(up) = s.resume(Event::Acquired(Ok(lease(0)))) else { panic!() };
    assert!(up.setup.contains(r#""model":"models/gemini-2.0-flash-live-001""#), "{}", up.setup);
}

#[test]
fn a_resumed_session_names_its_handle_and_a_constrained_one_its_token() {
    let mut s = admit(keyed(), PATH, &upgrade(&[("x-goog-api-key", PROXY_KEY)])).expect("admitted");
    start(&mut s);
    s.resume(Event::Setup(br#"{"setup":{"model":"models/m","sessionResumption":{"handle":"h-9"}}}"#.to_vec()));
    let Step::Acquire { resources, .. } = s.resume(no_aliases()) else { panic!() };
    assert_eq!(resources, vec![Resource::live_handle("h-9")]);

    let constrained = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained";
    assert_eq!(admit(keyed(), constrained, &upgrade(&[])).err().map(|r| r.status), Some(401));
    // A token no header can carry (found by fuzzing) is no token.
    let bad = format!("{constrained}?access_token=auth_tokens/a%0Ab");
    assert_eq!(admit(keyed(), &bad, &upgrade(&[])).err().map(|r| r.status), Some(401));
    let token = "auth_tokens/abc123";
    for (pq, headers) in [
        (format!("{constrained}?access_token={token}"), upgrade(&[])),
        (constrained.to_owned(), upgrade(&[("authorization", &format!("Token {token}")), ("x-goog-api-key", token)])),
    ] {
        let mut s = admit(keyed(), &pq, &headers).expect("the token is the authority");
        start(&mut s);
        s.resume(Event::Setup(SETUP.as_bytes().to_vec()));
        let Step::Acquire { resources, client: Some(claim), .. } = s.resume(no_aliases()) else { panic!() };
        assert_eq!(resources, vec![Resource::auth_token(token)]);
        assert!(claim.hashes.is_empty());
        let Step::Open(up) = s.resume(Event::Acquired(Ok(Lease { pinned: true, ..lease(2) }))) else { panic!() };
        assert!(up.url.ends_with("v1alpha.GenerativeService.BidiGenerateContentConstrained"));
        assert_eq!(up.headers, vec![("authorization".to_owned(), format!("Token {token}"))], "no pool key");
        // The token opens its own project only: no second key.
        let first = s.resume(Event::Closed { code: 1011, reason: "You exceeded your current quota".into() });
        let steps = rest(&mut s, first);
        assert_eq!(reports(&steps)[0].outcome.kind(), "rate-limited");
        assert_eq!(close_of(&steps).code, 1011);
    }
}

#[test]
fn googles_closes_reach_the_client_fit_and_redacted() {
    let (mut s, _) = opened_session(SETUP);
    s.resume(Event::Opened { message: b"{}".to_vec(), binary: false });
    let key = fake_key("POOL", 0);
    let redacted = s.upstream_close(1011, &format!("bad {key}")).reason;
    assert!(redacted.starts_with("bad ") && !redacted.contains(&key), "{redacted}");
    assert_eq!(s.upstream_close(1006, "").code, 1011);
    assert_eq!(s.upstream_close(1005, "").code, 1000);
    assert_eq!(s.upstream_close(4000, "app").code, 4000);
    let long = "é".repeat(100);
    let fit = fit_reason(&long);
    assert!(fit.len() <= MAX_CLOSE_REASON && fit.chars().all(|c| c == 'é'));
    // A session that broke off counts against its key, never disabling it.
    let first = s.resume(Event::Ended(End::UpstreamGone("reset".into())));
    assert_eq!(reports(&rest(&mut s, first))[0].outcome.kind(), "broken-stream");
}

#[test]
fn an_auth_token_answer_names_its_token_by_hash() {
    let answer = serde_json::json!({"name": "auth_tokens/tok-1", "expireTime": "2030-01-01T00:00:00Z"});
    let told = crate::google::names::told_of(&answer, false);
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].0, Resource::auth_token("auth_tokens/tok-1"));
    assert!(told[0].1.is_some());
    assert_eq!(Resource::stored(Resource::auth_token("x").name()), Some(Resource::auth_token("x")));
    assert_eq!(Resource::stored(Resource::live_handle("x").name()), Some(Resource::live_handle("x")));
    assert_eq!(Resource::parse(Resource::live_handle("x").name()), None, "no path names one");
    // The client opens a session with it next: its report lands before the answer.
    let mut minted = Report::of(&lease(0), "(models)", Outcome::Success);
    minted.own(told[0].0.name(), told[0].1);
    assert!(minted.must_land_first());
}

#[test]
fn a_stranger_is_refused_before_the_upgrade() {
    let mut s = admit(keyed(), PATH, &upgrade(&[("x-goog-api-key", "AIzaSyNOTaCLIENTkey0000000000000000000")]))
        .expect("a claim");
    let Step::Admin(AdminOp::Identify { claim, .. }) = s.resume(Event::Start) else { panic!() };
    assert_eq!(claim.hashes.len(), 1);
    let refused = r#"{"refused":{"why":"unknown-key","presented":true}}"#;
    let step = s.resume(Event::Admin(AdminAnswer { status: 401, body: refused.into(), ..AdminAnswer::unsaved() }));
    let Step::Refuse(r) = step else { panic!("{step:?}") };
    assert_eq!(r.status, 401);
    let steps = rest(&mut s, Step::Done);
    assert!(steps.iter().all(|s| !matches!(s, Step::Upgrade | Step::Acquire { .. })));
    // An unknown token: refused with what to do.
    let constrained = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained?access_token=auth_tokens/x";
    let mut s = admit(keyed(), constrained, &upgrade(&[])).expect("a token");
    let Step::Admin(AdminOp::Identify { resources, .. }) = s.resume(Event::Start) else { panic!() };
    assert_eq!(resources, vec![Resource::auth_token("auth_tokens/x").name().to_owned()]);
    let Step::Refuse(r) =
        s.resume(Event::Admin(AdminAnswer { status: 401, body: "{}".into(), ..AdminAnswer::unsaved() }))
    else {
        panic!()
    };
    assert!(r.body.contains("minted"), "{}", r.body);
}

#[test]
fn a_dropped_attempt_is_retried_and_no_unsendable_code_reaches_a_client() {
    assert_eq!(
        (sendable(1005), sendable(1006), sendable(1015), sendable(1008), sendable(4001)),
        (1000, 1011, 1011, 1008, 4001)
    );
    assert_eq!(Close::new(1006, "").code, 1011);
    let (mut s, _) = opened_session(SETUP);
    let Step::Acquire { settle: Some(settle), .. } = s.resume(Event::Closed { code: 1006, reason: String::new() })
    else {
        panic!()
    };
    assert_eq!(settle.outcome.kind(), "transport-error");
    // Mid-session, a dropped connection is a broken session, not the client's fault.
    let (mut s, _) = opened_session(SETUP);
    s.resume(Event::Opened { message: b"{}".to_vec(), binary: true });
    let first = s.resume(Event::Ended(End::UpstreamClosed(1006, String::new())));
    assert_eq!(reports(&rest(&mut s, first))[0].outcome.kind(), "broken-stream");
}

#[test]
fn a_refused_token_is_the_clients_not_the_keys() {
    let constrained = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained?access_token=auth_tokens/t";
    let mut s = admit(keyed(), constrained, &upgrade(&[])).expect("a token");
    start(&mut s);
    s.resume(Event::Setup(SETUP.as_bytes().to_vec()));
    s.resume(no_aliases());
    assert!(matches!(s.resume(Event::Acquired(Ok(Lease { pinned: true, ..lease(0) }))), Step::Open(_)));
    let invalid = br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
    let first = s.resume(Event::Rejected { status: 400, body: invalid.to_vec() });
    let steps = rest(&mut s, first);
    assert_eq!(reports(&steps)[0].outcome, Outcome::ClientError { status: 401 }, "the key is not disabled");
    assert_eq!(close_of(&steps).code, 1008);
}

#[test]
fn an_open_proxy_lets_a_client_of_another_origin_in_but_no_stranger() {
    let open = Arc::new(config(None));
    let page = upgrade(&[("origin", "https://app.example"), ("x-goog-api-key", "client-key-1")]);
    let identified =
        |client: &str| Event::Admin(AdminAnswer { status: 200, body: client.into(), ..AdminAnswer::unsaved() });
    let mut s = admit(open.clone(), PATH, &page).expect("a claim, to identify");
    assert!(matches!(s.resume(Event::Start), Step::Admin(AdminOp::Identify { .. })));
    assert_eq!(s.resume(identified(r#"{"client":"c-1"}"#)), Step::Upgrade, "a client's page may use it");
    let mut s = admit(open, PATH, &page).expect("a claim, to identify");
    s.resume(Event::Start);
    let Step::Refuse(r) = s.resume(identified(r#"{"client":null}"#)) else { panic!() };
    assert_eq!(r.status, 403, "an open proxy's pool, from another origin");
}

#[test]
fn a_close_mid_session_reaches_the_report_and_the_summary_redacted() {
    let (mut s, _) = opened_session(SETUP);
    s.resume(Event::Opened { message: b"{}".to_vec(), binary: true });
    let why = format!("Internal error encountered for key {}", fake_key("POOL", 0));
    let first = s.resume(Event::Ended(End::UpstreamClosed(1011, why)));
    let steps = rest(&mut s, first);
    let report = format!("{:?}", reports(&steps)[0].outcome);
    assert!(report.contains("Internal error") && !report.contains(&fake_key("POOL", 0)), "{report}");
    let Some(Step::Summary(summary)) = steps.iter().find(|s| matches!(s, Step::Summary(_))) else { panic!() };
    let line = summary.line();
    assert!(line.contains("Internal error") && !line.contains(&fake_key("POOL", 0)), "{line}");
}

#[test]
fn a_failed_proxy_passes_the_setup_to_the_next_key_unreported_and_tells_the_client_no_address() {
    let proxy_down = || Event::Unreachable {
        reason: "the outbound proxy socks5://me:***@10.0.0.9:1080 could not be reached: connection refused".into(),
    };
    let (mut s, up) = opened_session(SETUP);
    assert_eq!(up.key, lease(0).id, "the host routes by the attempt's key");
    let Step::Acquire { settle, exclude, .. } = s.resume(proxy_down()) else { panic!() };
    assert_eq!((settle, exclude), (None, vec![lease(0).id]), "no report: the key is not held to it");
    let mut step = Step::Done;
    for i in 1..MAX_ATTEMPTS {
        assert!(matches!(s.resume(Event::Acquired(Ok(lease(i)))), Step::Open(_)));
        step = s.resume(proxy_down());
    }
    let steps = rest(&mut s, step);
    assert!(reports(&steps).is_empty(), "{steps:?}");
    let close = close_of(&steps);
    assert!(close.reason.contains("an outbound proxy failed") && !close.reason.contains("10.0.0.9"), "{close:?}");
}
