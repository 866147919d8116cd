//! Calls the proxy has no route of its own for (files, uploads, future
//! APIs) are relayed with their method, body and version.

use crate::harness::{Harness, PROXY_KEY, pool_keys};
use serde_json::{Value, json};

/// The `(name, value)` of every response header, lower-cased names.
fn header_values(r: &reqwest::Response) -> Vec<(String, String)> {
    r.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned())).collect()
}

#[tokio::test]
async fn a_file_is_uploaded_read_listed_and_deleted_through_the_proxy() {
    let h = Harness::new(1).await;
    let key = || ("x-goog-api-key", "client-key");
    let Uploaded { name, start_headers, .. } = upload(&h, 3000).await;
    let leaks = |v: &str| h.keys.iter().any(|k| v.contains(k.as_str()));
    assert!(start_headers.iter().all(|(_, v)| !leaks(v)), "{start_headers:?}");

    let get = |path: String| h.http.get(h.url(&path)).header(key().0, key().1).send();
    let r = get(format!("/v1beta/{name}")).await.expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["displayName"], "notes.txt");
    let r = get("/v1beta/files?pageSize=10".into()).await.expect("list");
    let listed: Value = r.json().await.expect("json");
    assert_eq!(listed["files"][0]["name"], name.as_str());

    let r = h.http.delete(h.url(&format!("/v1beta/{name}"))).header(key().0, key().1).send().await.expect("delete");
    assert_eq!(r.status(), 200);
    let r = get(format!("/v1beta/{name}")).await.expect("get");
    assert_eq!(r.status(), 403, "Google's answer for a file gone, relayed");

    let seen: Vec<(String, String)> = h.fake.requests().iter().map(|r| (r.method.clone(), r.path.clone())).collect();
    let id = name.trim_start_matches("files/");
    let expected = [
        ("POST", "/upload/v1beta/files".to_owned()),
        ("POST", "/upload/v1beta/files".to_owned()),
        ("GET", format!("/v1beta/files/{id}")),
        ("GET", "/v1beta/files".to_owned()),
        ("DELETE", format!("/v1beta/files/{id}")),
        ("GET", format!("/v1beta/files/{id}")),
    ];
    assert_eq!(seen, expected.map(|(m, p)| (m.to_owned(), p)));
    h.assert_only_pool_keys_upstream();

    // Counted under the files pseudo-model; the 403 left the key alone.
    let stats = h.stats().await;
    let key_row = &stats["keys"][0];
    assert!(key_row["disabled"].is_null(), "{key_row}");
    let files = &key_row["models"]["(files)"];
    assert_eq!(
        (&files["requests"], &files["errors"], &files["state"]),
        (&json!(6), &json!(0), &json!("ok")),
        "{files}"
    );
}

#[tokio::test]
async fn an_api_the_proxy_does_not_know_is_relayed_in_the_version_asked_for() {
    let h = Harness::new(2).await;
    let r = h.gemini("/v1alpha/somethingNew/abc:run?key=client-key&view=FULL", json!({"x": 1})).await;
    // The fake has no such API: its own 404, relayed (not the proxy's).
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.expect("json");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.contains("no route")), "{v}");
    let seen = h.fake.requests();
    assert_eq!(seen.len(), 1, "a 404 is the caller's: no retry on another key");
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/v1alpha/somethingNew/abc:run"));
    assert_eq!(seen[0].query.as_deref(), Some("view=FULL"));
    assert_eq!(seen[0].body, br#"{"x":1}"#);

    // An action with no route of its own, under a model.
    let r = h.gemini("/v1beta/models/veo-3.0-generate-001:predictLongRunning", json!({"instances": []})).await;
    assert_eq!(r.status(), 404, "the fake has no Veo");
    assert_eq!(h.fake.requests()[1].path, "/v1beta/models/veo-3.0-generate-001:predictLongRunning");
    // Names the upstream never accepted are counted together, as any
    // unknown model is: made-up paths cannot grow the statistics.
    let stats = h.stats().await;
    let counted: Vec<(&str, u64)> = stats["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .flat_map(|k| k["models"].as_object().expect("models"))
        .map(|(m, c)| (m.as_str(), c["requests"].as_u64().unwrap_or_default()))
        .collect();
    assert_eq!(counted.iter().map(|(_, n)| n).sum::<u64>(), 2, "{counted:?}");
    assert!(counted.iter().all(|(m, _)| *m == "(untracked models)"), "{counted:?}");
    h.assert_only_pool_keys_upstream();

    // Not Gemini's: the proxy's own 404, nothing sent.
    let r = h.http.get(h.url("/v1beta/Not.a.collection")).header("x-goog-api-key", "k").send().await.expect("404");
    assert_eq!(r.status(), 404);
    assert_eq!(h.fake.requests().len(), 2);
}

/// What an upload through the proxy gave the client.
struct Uploaded {
    /// The file's name.
    name: String,
    /// The upload URL the proxy handed out.
    url: String,
    /// The start answer's headers.
    start_headers: Vec<(String, String)>,
}

/// Uploads `size` bytes in Google's resumable protocol: the start to
/// `{origin}/upload/v1beta/files` with `key`, the chunk to the upload URL
/// it answers, without any credential (as the Python SDK sends it).
async fn resumable_upload(h: &Harness, origin: &str, key: &str, size: usize) -> Uploaded {
    let r = h
        .http
        .post(format!("{origin}/upload/v1beta/files"))
        .header("x-goog-api-key", key)
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header("x-goog-upload-header-content-length", size.to_string())
        .header("x-goog-upload-header-content-type", "text/plain")
        .json(&json!({"file": {"displayName": "notes.txt"}}))
        .send()
        .await
        .expect("start");
    assert_eq!(r.status(), 200);
    let start_headers = header_values(&r);
    let url = start_headers.iter().find(|(n, _)| n == "x-goog-upload-url").expect("an upload URL").1.clone();
    let r = h
        .http
        .post(&url)
        .header("x-goog-upload-command", "upload, finalize")
        .header("x-goog-upload-offset", "0")
        .body(vec![b'x'; size])
        .send()
        .await
        .expect("chunk");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["file"]["sizeBytes"], size.to_string());
    Uploaded { name: v["file"]["name"].as_str().expect("a name").to_owned(), url, start_headers }
}

/// Uploads `size` bytes through the proxy ([`resumable_upload`]); the
/// upload URL it hands out is its own.
async fn upload(h: &Harness, size: usize) -> Uploaded {
    let key = h.proxy_key.clone().unwrap_or_else(|| "client-key".into());
    let up = resumable_upload(h, &h.url(""), &key, size).await;
    assert!(up.url.starts_with(&h.url("/upload/v1beta/files?upload_id=")), "the proxy's own URL: {}", up.url);
    up
}

/// Uploads `size` bytes straight to the fake Google with `key`, as another
/// tool of the key's owner would; the file's name.
async fn upload_at_google(h: &Harness, key: &str, size: usize) -> String {
    let origin = h.fake.gemini_base().trim_end_matches("/v1beta").to_owned();
    resumable_upload(h, &origin, key, size).await.name
}

fn with_files(names: &[&str]) -> Value {
    let parts: Vec<Value> = names
        .iter()
        .map(|n| json!({"fileData": {"fileUri": format!("https://generativelanguage.googleapis.com/v1beta/{n}")}}))
        .collect();
    json!({"contents": [{"parts": parts}]})
}

#[tokio::test]
async fn a_file_goes_to_the_key_that_owns_it_and_no_other_across_a_restart() {
    let mut h = Harness::new(4).await;
    // An upload first, so that the next one's key is the files ring's
    // second: a prompt's ring starts at the first, before and after a
    // restart, so only the registry can send it to the owner at once.
    upload(&h, 10).await;
    let first = h.keys_seen()[0].clone();
    h.fake.clear_requests();
    let Uploaded { name, url, .. } = upload(&h, 1000).await;
    let owner = h.fake.requests()[0].key().expect("a key").to_owned();
    assert_ne!(owner, first);
    // The start and the chunk (sent without a credential) both reached
    // the key that started the upload, and the chunk went through the
    // proxy, with no key in its URL.
    let upstream: Vec<(String, Option<String>)> =
        h.fake.requests().iter().map(|r| (r.path.clone(), r.key().map(str::to_owned))).collect();
    assert_eq!(upstream, vec![("/upload/v1beta/files".to_owned(), Some(owner.clone())); 2]);
    assert!(!h.keys.iter().any(|k| url.contains(k.as_str())), "{url}");

    // A file made elsewhere (straight at Google, by the same project) is
    // unknown to the proxy: the keys are asked in turn until one can see
    // it; the others' 403s count against no key.
    let elsewhere = upload_at_google(&h, &owner, 10).await;
    h.fake.clear_requests();
    let r = h.gemini("/v1beta/models/gemini-2.5-flash:generateContent", with_files(&[&elsewhere])).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let asked = h.keys_seen();
    assert!(asked.len() >= 2 && asked.len() <= 4 && asked.last() == Some(&owner), "{asked:?}");
    assert_eq!(asked.iter().filter(|k| **k == owner).count(), 1);

    // The file uploaded through the proxy needs no search: the upload's
    // answer told the proxy whose it is.
    h.fake.clear_requests();
    let r = h.gemini("/v1beta/models/gemini-2.5-flash:generateContent", with_files(&[&name])).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.keys_seen(), std::slice::from_ref(&owner));

    // From then on only the owner, for every call that names the file,
    // after a restart too (the registry is in the SQLite file).
    h.restart().await;
    h.fake.clear_requests();
    for _ in 0..3 {
        let r = h.gemini("/v1beta/models/gemini-2.5-flash:generateContent", with_files(&[&name])).await;
        assert_eq!(r.status(), 200);
    }
    let r = h.http.get(h.url(&format!("/v1beta/{name}"))).header("x-goog-api-key", "k").send().await.expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(h.keys_seen(), vec![owner.clone(); 4]);
    let stats = h.stats().await;
    assert!(stats["keys"].as_array().expect("keys").iter().all(|k| k["disabled"].is_null()), "{stats}");

    // Two files of two keys in one prompt: a clear 400, nothing sent.
    let other = loop {
        let n = upload(&h, 10).await.name;
        let r = h.http.get(h.url(&format!("/v1beta/{n}"))).header("x-goog-api-key", "k").send().await.expect("get");
        assert_eq!(r.status(), 200);
        if h.fake.requests().last().and_then(|r| r.key()) != Some(owner.as_str()) {
            break n;
        }
    };
    h.fake.clear_requests();
    let r = h.gemini("/v1beta/models/gemini-2.5-flash:generateContent", with_files(&[&name, &other])).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains(&name) && m.contains(&other)), "{v}");
    assert!(h.fake.requests().is_empty());

    // Deleted through the proxy, on its owner: forgotten.
    let r = h.http.delete(h.url(&format!("/v1beta/{name}"))).header("x-goog-api-key", "k").send().await.expect("del");
    assert_eq!(r.status(), 200);
    assert_eq!(h.keys_seen(), [owner]);
}

#[tokio::test]
async fn a_list_pages_through_every_keys_files_and_what_it_listed_needs_no_search() {
    // More keys than one walk of the key store hands out (16).
    let h = Harness::new(18).await;
    // Files made at Google (unknown to the proxy): none on most keys.
    let counts = [0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let mut made: Vec<(String, String)> = Vec::new();
    for (key, n) in h.keys.iter().zip(counts) {
        for _ in 0..n {
            made.push((upload_at_google(&h, key, 10).await, key.clone()));
        }
    }
    h.fake.clear_requests();
    let mut listed = Vec::new();
    let mut token: Option<String> = None;
    for page in 0.. {
        assert!(page < 10, "the listing does not end");
        let query = token.as_ref().map(|t| format!("&pageToken={t}")).unwrap_or_default();
        let url = h.url(&format!("/v1beta/files?pageSize=2{query}"));
        let r = h.http.get(url).header("x-goog-api-key", "k").send().await.expect("list");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        let names: Vec<String> =
            v["files"].as_array().into_iter().flatten().filter_map(|f| f["name"].as_str().map(str::to_owned)).collect();
        assert!(names.len() <= 2, "{v}");
        assert!(!names.is_empty(), "a page reached by a token has items: {v}");
        assert!(!h.keys.iter().any(|k| v.to_string().contains(k.as_str())), "{v}");
        listed.extend(names);
        token = v["nextPageToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let mut want: Vec<String> = made.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    listed.sort();
    assert_eq!(listed, want);
    // Every key was asked, none for more than it lacked.
    let asked: std::collections::HashSet<String> = h.keys_seen().into_iter().collect();
    assert_eq!(asked.len(), 18);

    // What the list showed is known: each file's prompt goes to its owner,
    // with no search, after a restart too.
    let mut h = h;
    h.restart().await;
    for (name, owner) in &made {
        h.fake.clear_requests();
        let r = h.gemini("/v1beta/models/gemini-2.5-flash:generateContent", with_files(&[name])).await;
        assert_eq!(r.status(), 200);
        assert_eq!(&h.keys_seen(), std::slice::from_ref(owner), "{name}");
    }
}

#[tokio::test]
async fn behind_a_proxy_key_a_chunk_needs_its_upload_id_and_a_cache_goes_to_the_key_that_made_it() {
    let h = Harness::with(pool_keys(4), Some(PROXY_KEY)).await;
    // The chunk carries no credential: the upload id the proxy handed out
    // lets it in. One the proxy never handed out does not.
    let Uploaded { url, .. } = upload(&h, 100).await;
    h.fake.clear_requests();
    let chunk = |url: String| {
        h.http
            .post(url)
            .header("x-goog-upload-command", "upload, finalize")
            .header("x-goog-upload-offset", "0")
            .body(vec![b'x'; 10])
            .send()
    };
    let r = chunk(url.replace("upload_id=", "upload_id=made-up-")).await.expect("chunk");
    assert_eq!(r.status(), 401);
    let r = chunk(url.clone()).await.expect("chunk");
    assert_eq!(r.status(), 401, "an upload over is forgotten");
    assert!(h.fake.requests().is_empty(), "nothing reached Google");

    // A cache made through the proxy: its answer names it, so every
    // prompt that uses it goes to the key that made it, without a search.
    // Two are made, so that the second's maker is not the key a prompt's
    // ring starts at (the first): only the registry can send it there.
    let mut caches = Vec::new();
    for _ in 0..2 {
        h.fake.clear_requests();
        let body = json!({"model": "models/gemini-2.5-flash", "contents": [{"parts": [{"text": "a long context"}]}]});
        let r = h.gemini("/v1beta/cachedContents", body).await;
        assert_eq!(r.status(), 200);
        caches.push(r.json::<Value>().await.expect("json")["name"].as_str().expect("a name").to_owned());
    }
    let cache = caches.pop().expect("two");
    let maker = h.keys_seen()[0].clone();
    assert_ne!(maker, h.keys[0], "the ring moved on");
    h.fake.clear_requests();
    for _ in 0..4 {
        let r = h
            .gemini(
                "/v1beta/models/gemini-2.5-flash:generateContent",
                json!({"cachedContent": cache, "contents": [{"parts": [{"text": "and so?"}]}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(h.keys_seen(), vec![maker; 4]);
    h.assert_only_pool_keys_upstream();
}
