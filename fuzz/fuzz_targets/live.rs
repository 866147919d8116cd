//! A Live API session through core's driver: the upgrade's head (path,
//! headers), the client's setup, and what Google answers (its first
//! message, or a close with a code and reason), on an in-memory pool.
//! Nothing may panic, the session ends within bounds, no credential goes
//! into the upstream URL, and every close reason fits a close frame and
//! carries no pool key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::live::{self, End, Event, Step, MAX_CLOSE_REASON};
use proxy_core::test_support::{config, fake_keys};
use proxy_core::wire::keystore::AdminAnswer;
use proxy_core::{KeyPool, UnixMillis};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, "\n\n");
    let head = parts.next().unwrap_or_default();
    let setup = parts.next().unwrap_or_default().as_bytes().to_vec();
    let google = parts.next().unwrap_or_default();
    let mut lines = head.lines();
    let target = lines.next().unwrap_or_default();
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().as_bytes().to_vec()))
        .collect();
    let cfg = Arc::new(config(if data.first().is_some_and(|b| b % 2 == 0) { Some("proxy-key-0123456789") } else { None }));
    let keys = fake_keys("FUZZ", 3);
    let secrets: Vec<String> = keys.iter().map(|k| k.expose().to_owned()).collect();
    let mut pool = KeyPool::new(keys);
    let now = UnixMillis(1_800_000_000_000);
    let Ok(mut session) = live::admit(cfg, target, &headers) else { return };
    let last = data.last().copied().unwrap_or(0);
    let mut event = Event::Start;
    for _ in 0..64 {
        event = match session.resume(event) {
            Step::Upgrade | Step::Refuse(_) | Step::Report(_) | Step::Log(_) | Step::Note(_) | Step::Summary(_) => {
                Event::Done
            }
            Step::ReadSetup { .. } => Event::Setup(setup.clone()),
            Step::Admin(op) => {
                let applied = proxy_core::store::admin::apply(&mut pool, None, op, now, &mut || [0; 24]);
                Event::Admin(AdminAnswer { status: applied.status, body: applied.body, leases: applied.leases })
            }
            Step::Acquire { model, exclude, settle, client, resources } => {
                if let Some(r) = settle {
                    pool.apply(&r, now);
                }
                Event::Acquired(pool.acquire_for(client.as_ref(), &model, &resources, &exclude, now))
            }
            Step::Open(up) => {
                assert!(!up.url.contains('?') && !secrets.iter().any(|s| up.url.contains(s.as_str())));
                assert!(up.headers.iter().all(|(_, v)| v.bytes().all(|b| (0x20..0x7f).contains(&b))));
                match last % 3 {
                    0 => Event::Opened { message: google.as_bytes().to_vec(), binary: last % 2 == 0 },
                    1 => Event::Closed { code: u16::from(last) * 4 + 1000, reason: google.to_owned() },
                    _ => Event::Rejected { status: 400 + u16::from(last % 100), body: google.as_bytes().to_vec() },
                }
            }
            Step::Check(_) => Event::Checked { status: if last % 2 == 0 { 200 } else { 400 }, body: google.as_bytes().to_vec() },
            Step::Relay { .. } => {
                for piece in google.split('\n') {
                    let _ = session.upstream_message(piece.as_bytes());
                }
                let close = session.upstream_close(u16::from(last) * 17, google);
                assert!(close.reason.len() <= MAX_CLOSE_REASON);
                Event::Ended(End::UpstreamClosed(u16::from(last) * 17, google.to_owned()))
            }
            Step::Close(close) => {
                assert!(close.reason.len() <= MAX_CLOSE_REASON, "{close:?}");
                assert!(!secrets.iter().any(|s| close.reason.contains(s.as_str())), "{close:?}");
                Event::Done
            }
            Step::Done => return,
        };
    }
    panic!("the session did not end within 64 steps");
});
