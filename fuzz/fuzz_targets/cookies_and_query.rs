//! Cookie, query and credential parsing: a query stripped of its key keeps
//! no key; no input panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::request::auth::{Credentials, percent_decode, query_param, strip_key_param};
use proxy_core::request::session;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (query, cookie) = text.split_once('\n').unwrap_or((&text, ""));
    let stripped = strip_key_param(query);
    assert_eq!(query_param(&stripped, "key"), None, "a key survived stripping");
    let _ = percent_decode(query);
    let headers = vec![
        ("cookie".to_owned(), cookie.as_bytes().to_vec()),
        ("authorization".to_owned(), cookie.as_bytes().to_vec()),
        ("x-goog-api-key".to_owned(), query.as_bytes().to_vec()),
    ];
    let _ = session::cookie(&headers);
    let creds = Credentials::from_request(&headers, query);
    let key = proxy_core::ApiKey::new("proxy-key-0123456789");
    let _ = creds.authorize(Some(&key));
    let _ = session::is_valid(&headers, &key);
});
