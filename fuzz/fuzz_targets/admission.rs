//! A whole request through core's exchange: routing, dialect detection,
//! admission (proxy key, client keys, session cookie, /stat rules, head and body
//! limits), body binding, the upstream request's headers, and the answer;
//! every upstream attempt answered by the input's last byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::exchange::{Event, Exchange, Step};
use proxy_core::wire::http::Method;
use proxy_core::test_support::{config, fake_keys};
use proxy_core::{KeyPool, UnixMillis};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, "\n\n");
    let head = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default().as_bytes().to_vec();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let (method, target) = request_line.split_once(' ').unwrap_or(("GET", request_line));
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().as_bytes().to_vec()))
        .collect();
    let status = 200 + u16::from(data.last().copied().unwrap_or(0)) * 2;
    let cfg = Arc::new(config(if data.first().is_some_and(|b| b % 2 == 0) { Some("proxy-key-0123456789") } else { None }));
    let mut pool = KeyPool::new(fake_keys("FUZZ", 3));
    let now = UnixMillis(1_800_000_000_000);
    // A client key (`x-goog-api-key: gpc-fuzz`) with a quota of one request
    // a day for one model, for inputs of even length.
    if data.len().is_multiple_of(2) {
        let settings = proxy_core::wire::keystore::ClientSettings {
            name: Some("fuzz".into()),
            models: Some(vec!["gemini-2.5-flash".into()]),
            daily_requests: Some(Some(1)),
            daily_tokens: Some(Some(10)),
        };
        let _ = pool.clients_mut().create("gpc-fuzz", settings, now);
    }
    let mut exchange = Exchange::new(cfg, Method::parse(method), target.to_owned(), headers);
    let mut event = Event::Start;
    let mut answers = 0;
    for _ in 0..64 {
        event = match exchange.resume(event) {
            Step::ReadBody { limit, .. } => {
                if body.len() as u64 > limit { Event::BodyFailed(proxy_core::exchange::BodyError::TooLarge) } else { Event::Body(body.clone()) }
            }
            Step::Acquire { model, exclude, settle, client, resources } => {
                if let Some(r) = settle {
                    pool.apply(&r, now);
                }
                Event::Acquired(pool.acquire_for(client.as_ref(), &model, &resources, &exclude, now))
            }
            Step::Send(up) => {
                assert!(up.headers.iter().all(|(_, v)| v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))));
                Event::Head { status, headers: vec![("content-type".into(), b"application/json".to_vec())] }
            }
            Step::ReadErrorBody { .. } => Event::ErrorBody(body.clone()),
            Step::Stream { mut pipe, .. } => {
                answers += 1;
                // The answer's head is read for the resources it tells of;
                // a translated answer is translated.
                pipe.push(&body);
                pipe.finish();
                Event::Streamed(Ok(pipe.seen()))
            }
            Step::KeepAlive { .. } => {
                Event::Head { status, headers: vec![("content-type".into(), b"application/json".to_vec())] }
            }
            Step::Respond(_) | Step::Stats(_) | Step::EndCommitted { .. } => {
                answers += 1;
                Event::Done
            }
            Step::Report(r) => {
                pool.apply(&r, now);
                Event::Done
            }
            Step::Admin(op) => {
                let applied =
                    proxy_core::store::admin::apply(&mut pool, None, op, now, &mut || [0; proxy_core::store::vault::NONCE_BYTES]);
                Event::Admin(proxy_core::wire::keystore::AdminAnswer::from(&applied))
            }
            Step::Reset | Step::Log(_) | Step::Note(_) | Step::Summary(_) => Event::Done,
            Step::Done => break,
        };
    }
    assert_eq!(answers, 1, "every request is answered exactly once");
});
