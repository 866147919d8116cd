//! Listings merged across the pool: `GET files` (and `cachedContents`,
//! `batches`, `fileSearchStores`) shows what every key's project holds, not
//! one key's.
//!
//! The keys are walked in the fixed order of their ids. A page is filled
//! from the key the page token names, then from the keys after it, and
//! the page token the proxy hands out says where the next page starts: a
//! key and Google's own token for that key's list. So paging needs no
//! state in the proxy, survives a restart, and a key added or removed
//! between two pages shifts nothing but itself.
//!
//! A page reached by a next-page token is not empty: the Python SDK's
//! pager fails on one. So before a full page hands out a token, the key
//! (or the keys after it) is asked for one more item; only a page that
//! spends its [`MAX_FETCHES`] upstream calls on keys that hold nothing can
//! end with a token it could not check.

use super::outgoing::relayed_headers;
use super::relay::{Awaiting, Head, Pending, Relay, Suspect, listed_prefix};
use super::{BodyFrom, Exchange, Phase, Step, upstream_request};
use crate::google::errors::{self, Verdict};
use crate::google::names;
use crate::request::route::Forward;
use crate::wire::error::ProxyError;
use crate::wire::http::Dialect;
use crate::wire::http::{Method, Response};
use crate::wire::keystore::Lease;
use crate::wire::keystore::WALK_KEYS;
use crate::wire::keystore::WalkFrom;
use crate::wire::keystore::{AdminAnswer, AdminOp, Outcome, Refusal, Report};
use crate::wire::secret;
use crate::wire::secret::KeyId;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use std::collections::VecDeque;

/// At most this many upstream calls make one page (a Worker may make 50
/// subrequests per invocation on the free plan: these, the walks of
/// [`WALK_KEYS`] keys, and a report's flush stay below it).
pub const MAX_FETCHES: usize = 40;

/// The page size when the client gives none (Google's for files).
pub const DEFAULT_PAGE_SIZE: usize = 10;

/// The largest page size asked of Google (its limit for files).
pub const MAX_PAGE_SIZE: usize = 100;

/// The largest page of one key's list read.
pub const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// What the proxy's page tokens start with.
const TOKEN_PREFIX: &str = "gp1";

/// A collection whose listing is merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collection {
    /// Its path below the version (`/files`).
    pub path: &'static str,
    /// The member of Google's answer its items come in.
    pub items: &'static str,
}

const COLLECTIONS: [Collection; 4] = [
    Collection { path: "/files", items: "files" },
    Collection { path: "/cachedContents", items: "cachedContents" },
    Collection { path: "/batches", items: "operations" },
    Collection { path: "/fileSearchStores", items: "fileSearchStores" },
];

/// The collection `fwd` lists, if its listing is merged (a Gemini `GET`
/// of the collection itself).
pub fn collection(fwd: &Forward) -> Option<Collection> {
    if fwd.dialect != Dialect::Gemini || fwd.method != Method::Get || fwd.upload {
        return None;
    }
    COLLECTIONS.iter().copied().find(|c| c.path == fwd.upstream_path)
}

/// A place in a merged listing.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cursor {
    /// The first key's list, from its start.
    Start,
    /// This key's list, from Google's token (from its start: none).
    At(KeyId, Option<String>),
    /// The list of the first key after this one.
    After(KeyId),
}

impl Cursor {
    /// The cursor a client's `pageToken` names.
    fn parse(token: &str) -> Option<Self> {
        let mut parts = token.split('.');
        if parts.next() != Some(TOKEN_PREFIX) {
            return None;
        }
        let (mode, key, google) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || key.is_empty() || key.len() > 64 {
            return None;
        }
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
        let key = KeyId::from_string(key);
        match mode {
            "a" if google.is_empty() => Some(Self::After(key)),
            "k" if google.is_empty() => Some(Self::At(key, None)),
            "k" => Some(Self::At(key, Some(unseal(google)?))),
            _ => None,
        }
    }

    /// The page token that names this cursor (none: the listing's start).
    fn token(&self) -> Option<String> {
        match self {
            Self::Start => None,
            Self::At(key, google) => {
                Some(format!("{TOKEN_PREFIX}.k.{key}.{}", google.as_deref().map(seal).unwrap_or_default()))
            }
            Self::After(key) => Some(format!("{TOKEN_PREFIX}.a.{key}.")),
        }
    }
}

/// Google's token in a page token: URL-safe base64, so that a page token
/// holds nothing a URL must escape.
fn seal(google: &str) -> String {
    URL_SAFE_NO_PAD.encode(google)
}

fn unseal(s: &str) -> Option<String> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    // Google's tokens are printable; anything else is no token of its.
    text.bytes().all(|b| b.is_ascii_graphic()).then_some(text)
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the exchange does next for a merged listing.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Ask the key store for the next keys, from here
    /// ([`KeyPool::walk`](crate::KeyPool::walk)), and [`Merge::walked`]
    /// them.
    Walk(WalkFrom),
    /// Ask this key for a page, with this query (after the path's `?`).
    Fetch {
        /// The key.
        lease: Lease,
        /// The query.
        query: String,
    },
    /// Answer the client with the merged page.
    Answer(Response),
}

/// One page of a merged listing, being filled.
#[derive(Debug)]
pub struct Merge {
    collection: Collection,
    page_size: usize,
    /// The client's other query parameters, relayed to every key.
    rest: Vec<String>,
    cursor: Cursor,
    /// The keys of the walk not asked yet.
    keys: VecDeque<Lease>,
    /// Whether the last walk may have stopped short of the pool's last key.
    more_keys: bool,
    /// The last key the walks handed out.
    last_walked: Option<KeyId>,
    /// Whether a walk was answered.
    walked: bool,
    /// The key being listed, and Google's token for where in its list.
    current: Option<(Lease, Option<String>)>,
    items: Vec<Value>,
    fetches: usize,
    /// Whether the page is full and the keys after it are being asked
    /// whether there is more.
    probing: bool,
}

impl Merge {
    /// The merged listing `fwd` asks for, if it is one; a page token this
    /// proxy did not hand out is a 400.
    pub fn of(fwd: &Forward) -> Result<Option<Self>, ProxyError> {
        let Some(collection) = collection(fwd) else { return Ok(None) };
        let mut page_size = DEFAULT_PAGE_SIZE;
        let mut cursor = Cursor::Start;
        let mut rest = Vec::new();
        for pair in fwd.upstream_query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "pageSize" => {
                    page_size = value.parse::<usize>().map_err(|_| {
                        ProxyError::BadRequest(format!("pageSize must be a whole number, not {value:?}"))
                    })?;
                    if page_size == 0 {
                        page_size = DEFAULT_PAGE_SIZE;
                    }
                }
                "pageToken" if value.is_empty() => {}
                "pageToken" => {
                    cursor = Cursor::parse(value).ok_or_else(|| {
                        ProxyError::BadRequest(
                            "pageToken is not one this proxy handed out (it lists the pool's keys in turn, with tokens of its own); start the listing again without it".into(),
                        )
                    })?;
                }
                _ => rest.push(pair.to_owned()),
            }
        }
        let page_size = page_size.min(MAX_PAGE_SIZE);
        let (keys, current, last_walked) = (VecDeque::new(), None, None);
        let (items, fetches, probing, more_keys, walked) = (Vec::new(), 0, false, false, false);
        Ok(Some(Self {
            collection,
            page_size,
            rest,
            cursor,
            keys,
            more_keys,
            last_walked,
            walked,
            current,
            items,
            fetches,
            probing,
        }))
    }

    /// Where the walk over the keys starts.
    pub fn walk_from(&self) -> WalkFrom {
        match &self.cursor {
            Cursor::Start => WalkFrom::First,
            Cursor::At(key, _) => WalkFrom::At(key.clone()),
            Cursor::After(key) => WalkFrom::After(key.clone()),
        }
    }

    /// Goes on with a walk's keys (at most [`WALK_KEYS`], in order).
    pub fn walked(&mut self, keys: Vec<Lease>) -> Next {
        self.more_keys = keys.len() >= WALK_KEYS;
        if let Some(last) = keys.last() {
            self.last_walked = Some(last.id.clone());
        }
        let mut keys = VecDeque::from(keys);
        let first_walk = !std::mem::replace(&mut self.walked, true);
        if let (true, Cursor::At(key, token), Some(first)) = (first_walk, &self.cursor, keys.front())
            && first.id == *key
        {
            // Google's token holds for this key only.
            let first = keys.pop_front().expect("a first key");
            self.current = Some((first, token.clone()));
        }
        self.keys.extend(keys);
        self.advance()
    }

    /// The key asked last answered with this page of its list.
    pub fn fetched(&mut self, page: &Value) -> Next {
        let items = page.get(self.collection.items).and_then(Value::as_array).cloned().unwrap_or_default();
        let next = page.get("nextPageToken").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_owned);
        let Some((lease, asked)) = self.current.take() else { return self.advance() };
        if self.probing {
            if !items.is_empty() {
                // There is more: the next page starts where this probe did.
                return self.answer(Cursor::At(lease.id, asked));
            }
            if next.is_some() {
                // An empty page of Google's: its list goes on.
                self.current = Some((lease, next));
            }
            return self.advance();
        }
        // All Google gave, even past the page size: the next page starts
        // after it.
        self.items.extend(items);
        let full = self.items.len() >= self.page_size;
        // A full page is handed out with a token only once one more item
        // is found after it: on this key, then on the keys after it.
        self.probing = full;
        if next.is_some() {
            self.current = Some((lease, next));
        }
        self.advance()
    }

    /// The key asked last cannot list (it is disabled): the keys after it
    /// are asked.
    pub fn skip(&mut self) -> Next {
        self.current = None;
        self.advance()
    }

    fn advance(&mut self) -> Next {
        if self.current.is_none() {
            match self.keys.pop_front() {
                Some(lease) => self.current = Some((lease, None)),
                None => {
                    let after = self.last_walked.clone();
                    return match after {
                        // The walk stopped short of the last key.
                        Some(last) if self.more_keys && self.fetches < MAX_FETCHES => Next::Walk(WalkFrom::After(last)),
                        Some(last) if self.more_keys => self.answer(Cursor::After(last)),
                        _ => self.answer(Cursor::Start),
                    };
                }
            }
        }
        let Some((lease, token)) = &self.current else { return self.answer(Cursor::Start) };
        if self.fetches >= MAX_FETCHES {
            return self.answer(Cursor::At(lease.id.clone(), token.clone()));
        }
        self.fetches += 1;
        let want = if self.probing { 1 } else { self.page_size - self.items.len() };
        let mut query = vec![format!("pageSize={want}")];
        if let Some(token) = token {
            query.push(format!("pageToken={}", encode(token)));
        }
        query.extend(self.rest.iter().cloned());
        Next::Fetch { lease: lease.clone(), query: query.join("&") }
    }

    /// The page, with a token for `next` (none for [`Cursor::Start`]: the
    /// listing is over).
    fn answer(&mut self, next: Cursor) -> Next {
        let mut body = Map::new();
        if !self.items.is_empty() {
            body.insert(self.collection.items.to_owned(), Value::Array(std::mem::take(&mut self.items)));
        }
        if let Some(token) = next.token() {
            body.insert("nextPageToken".to_owned(), Value::String(token));
        }
        Next::Answer(Response {
            status: 200,
            headers: vec![("content-type".to_owned(), "application/json; charset=utf-8".to_owned())],
            body: Value::Object(body).to_string(),
        })
    }
}

/// A merged listing under way: where it is, and the reports of the keys
/// it asked so far.
#[derive(Debug)]
pub(super) struct Merged {
    pub(super) merge: Merge,
    pub(super) reports: Vec<Report>,
}

impl Exchange {
    /// Starts a merged listing: the key store is asked for the first keys
    /// (and admits the client).
    pub(super) fn list(&mut self, mut relay: Box<Relay>, merge: Merge) -> Step {
        let from = merge.walk_from();
        let (claim, model) = (relay.claim.take(), relay.model().to_owned());
        self.phase = Phase::Relay(relay, Awaiting::Walk(Box::new(Merged { merge, reports: Vec::new() })));
        Step::Admin(AdminOp::Walk { from, count: WALK_KEYS, claim, model })
    }

    /// The keys of a merged listing, or why there are none.
    pub(super) fn walked(&mut self, relay: Box<Relay>, merged: Box<Merged>, answer: AdminAnswer) -> Step {
        let said: Value = serde_json::from_str(&answer.body).unwrap_or_default();
        if answer.status != 200 {
            let e = match serde_json::from_value::<Refusal>(said["refused"].clone()) {
                Ok(refusal) => ProxyError::refused(refusal),
                Err(_) => ProxyError::NoUsableKey {
                    model: relay.model().to_owned(),
                    why: said["unavailable"].as_str().unwrap_or("no key can list").to_owned(),
                },
            };
            return self.fail(e);
        }
        // The body names the client (a host may carry leases bare); a
        // later walk admits no one.
        if let Some(client) = said["client"].as_str() {
            self.client = Some(client.to_owned());
        }
        let client = self.client.clone();
        if let Some(e) = self.web_refusal(client.as_deref()) {
            return self.fail(e);
        }
        if let (Some(client), None, Some(prefix)) = (client, &relay.own, listed_prefix(&relay.fwd, None)) {
            return self.ask_names(relay, Pending::Walk(merged, answer.leases), client, prefix);
        }
        self.walk_on(relay, merged, answer.leases)
    }

    /// Goes on with a merged listing's keys.
    pub(super) fn walk_on(&mut self, relay: Box<Relay>, mut merged: Box<Merged>, leases: Vec<Lease>) -> Step {
        let next = merged.merge.walked(leases);
        self.list_next(relay, merged, next)
    }

    /// Asks the next key for its page, or answers with the merged page.
    fn list_next(&mut self, relay: Box<Relay>, merged: Box<Merged>, next: Next) -> Step {
        match next {
            Next::Fetch { lease, query } => {
                let fwd = Forward { upstream_query: query, ..relay.fwd.clone() };
                let request = upstream_request(&self.cfg, &fwd, &self.headers, &lease, BodyFrom::Read, 0);
                self.phase = Phase::Relay(relay, Awaiting::ListHead(merged, lease));
                Step::Send(request)
            }
            Next::Walk(from) => {
                let model = relay.model().to_owned();
                self.phase = Phase::Relay(relay, Awaiting::Walk(merged));
                Step::Admin(AdminOp::Walk { from, count: WALK_KEYS, claim: None, model })
            }
            Next::Answer(response) => self.list_over(merged.reports, None, response),
        }
    }

    /// Ends a merged listing with `response`, after the reports of every
    /// key it asked (`reports`, and `last`'s).
    fn list_over(&mut self, mut reports: Vec<Report>, last: Option<Report>, response: Response) -> Step {
        reports.extend(last);
        // The request counts against its client once, on its last call.
        if let Some(report) = reports.last_mut() {
            report.client.clone_from(&self.client);
        }
        self.queue.extend(reports.into_iter().map(Step::Report));
        self.emit([Step::Respond(response)])
    }

    /// A key's page could not be had: a merged listing cannot go on past a
    /// key that failed (its resources would be missing), so the caller
    /// gets why, and may ask again with the same page token.
    pub(super) fn list_transport_failed(
        &mut self,
        mut relay: Box<Relay>,
        reports: Vec<Report>,
        lease: &Lease,
        reason: &str,
        timed_out: bool,
    ) -> Step {
        let outcome = Outcome::TransportError { reason: secret::redact(reason, &[&lease.secret]) };
        let model = relay.model().to_owned();
        let report = relay.attempts.failed(lease, &model, outcome, timed_out);
        self.list_failed(&relay, reports, report)
    }

    /// Ends a merged listing with why a key failed (`report`).
    fn list_failed(&mut self, relay: &Relay, reports: Vec<Report>, report: Report) -> Step {
        let e = relay.attempts.give_up(relay.model(), None);
        let response = self.error_response(&e);
        self.list_over(reports, Some(report), response)
    }

    /// A key that cannot list (it is dead, `report` says why): its
    /// resources are out of reach, and the keys after it are listed.
    pub(super) fn list_skip(&mut self, relay: Box<Relay>, mut merged: Box<Merged>, report: Report) -> Step {
        merged.reports.push(report);
        let next = merged.merge.skip();
        self.list_next(relay, merged, next)
    }

    /// Ends a merged listing with `lease`'s error answer (`body`, after
    /// `head`), relayed redacted, as `outcome`.
    pub(super) fn list_relay(
        &mut self,
        relay: &Relay,
        reports: Vec<Report>,
        lease: &Lease,
        head: &Head,
        body: &[u8],
        outcome: Outcome,
    ) -> Step {
        let headers = relayed_headers(&head.headers, true, Some(lease));
        let body = secret::redact(&String::from_utf8_lossy(body), &[&lease.secret]);
        let response = Response { status: head.status, headers, body };
        let report = Report::of(lease, relay.model(), outcome);
        self.list_over(reports, Some(report), response)
    }

    /// A key's page of a merged listing.
    pub(super) fn listed(
        &mut self,
        mut relay: Box<Relay>,
        mut merged: Box<Merged>,
        lease: Lease,
        head: Head,
        body: &[u8],
    ) -> Step {
        let model = relay.model().to_owned();
        let verdict = errors::classify(head.status, body, |text: &str| secret::redact(text, &[&lease.secret]));
        match verdict {
            Verdict::Success => {}
            Verdict::Retry(outcome @ Outcome::KeyRejected { .. }) => {
                let report = relay.attempts.failed(&lease, &model, outcome, false);
                return self.list_skip(relay, merged, report);
            }
            Verdict::Retry(outcome) => {
                let report = relay.attempts.failed(&lease, &model, outcome, false);
                return self.list_failed(&relay, merged.reports, report);
            }
            Verdict::Suspect => {
                let suspect = Suspect { lease, head, body: body.to_vec(), check_status: 0, merged: Some(merged) };
                return self.confirm_key(relay, suspect);
            }
            // The caller's own mistake (a malformed filter, say): Google's
            // answer.
            Verdict::Relay(outcome) => return self.list_relay(&relay, merged.reports, &lease, &head, body, outcome),
        }
        let page = serde_json::from_slice::<Value>(body).ok().filter(|p| p.is_object());
        let Some(mut page) = page.filter(|_| body.len() < MAX_PAGE_BYTES) else {
            let report = Report::of(&lease, &model, Outcome::Success);
            let e = ProxyError::UpstreamFailed {
                attempts: relay.attempts.tried.len() + 1,
                last: format!(
                    "a key's page of the listing was not JSON, or over {} MiB: ask for a smaller pageSize",
                    MAX_PAGE_BYTES >> 20
                ),
            };
            let response = self.error_response(&e);
            return self.list_over(merged.reports, Some(report), response);
        };
        let mut report = Report { listed: true, ..Report::of(&lease, &model, Outcome::Success) };
        for (r, expires) in names::told_of(&page, false) {
            report.own(r.name(), expires);
        }
        if let Some(own) = &relay.own {
            names::keep_own(&mut page, own);
        }
        merged.reports.push(report);
        let next = merged.merge.fetched(&page);
        self.list_next(relay, merged, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::route::Op;
    use crate::store::pool::KeyPool;
    use crate::test_support::fake_keys;
    use crate::wire::keystore::WALK_KEYS;
    use crate::wire::keystore::WalkFrom;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn files_get(query: &str) -> Forward {
        Forward {
            dialect: Dialect::Gemini,
            op: Op::Resource,
            method: Method::Get,
            model: Some("(files)".into()),
            upstream_path: "/files".into(),
            upload: false,
            version: None,
            upstream_query: query.into(),
            streaming: false,
            foreign: None,
            asked: None,
        }
    }

    /// Google's list of one key: `pageSize` items a page, the token the
    /// index of the next (as opaque to the proxy as Google's are). `loose`:
    /// a page that ends at the list's end has a token too (then an empty
    /// page), as some of Google's lists do.
    fn google_page(items: &[String], query: &str, loose: bool) -> Value {
        let param = |n: &str| query.split('&').find_map(|p| p.strip_prefix(n)).map(str::to_owned);
        let size: usize = param("pageSize=").and_then(|s| s.parse().ok()).unwrap_or(10);
        let from: usize = param("pageToken=").map_or(0, |t| t.trim_start_matches("at%2B").parse().expect("a token"));
        let page: Vec<Value> = items.iter().skip(from).take(size).map(|n| json!({ "name": n })).collect();
        let mut body = json!({});
        if !page.is_empty() {
            body["files"] = json!(page);
        }
        if from + size < items.len() || (loose && from < items.len() && from + size == items.len()) {
            // A `+`, which a query must escape.
            body["nextPageToken"] = json!(format!("at+{}", from + size));
        }
        body
    }

    /// Lists the whole pool as an SDK pager does; every page's items, and
    /// the number of upstream calls each page took.
    fn list_all(
        pool: &KeyPool,
        lists: &BTreeMap<KeyId, Vec<String>>,
        page_size: usize,
        loose: bool,
    ) -> Vec<(Vec<String>, usize)> {
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        loop {
            assert!(pages.len() < 200, "the listing does not end");
            let mut query = format!("pageSize={page_size}&filter=x");
            if let Some(t) = &token {
                query.push_str(&format!("&pageToken={t}"));
            }
            let mut merge = Merge::of(&files_get(&query)).expect("a valid listing").expect("a merged listing");
            let mut next = merge.walked(pool.walk(&merge.walk_from(), WALK_KEYS));
            let mut fetches = 0;
            let answer = loop {
                match next {
                    Next::Walk(from) => next = merge.walked(pool.walk(&from, WALK_KEYS)),
                    Next::Fetch { lease, query } => {
                        fetches += 1;
                        assert!(query.contains("filter=x"), "the client's other parameters go along: {query}");
                        assert!(!query.contains('+'), "Google's token is escaped: {query}");
                        next = merge.fetched(&google_page(&lists[&lease.id], &query, loose));
                    }
                    Next::Answer(r) => break r,
                }
            };
            let body: Value = serde_json::from_str(&answer.body).expect("json");
            let items: Vec<String> = body["files"]
                .as_array()
                .map(|a| a.iter().map(|f| f["name"].as_str().expect("a name").to_owned()).collect())
                .unwrap_or_default();
            token = body["nextPageToken"].as_str().map(str::to_owned);
            assert!(
                token.as_deref().is_none_or(|t| t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
            );
            let over = token.is_none();
            pages.push((items, fetches));
            if over {
                return pages;
            }
        }
    }

    fn pool_with(counts: &[usize]) -> (KeyPool, BTreeMap<KeyId, Vec<String>>) {
        let keys = fake_keys("LIST", counts.len());
        let lists = keys
            .iter()
            .zip(counts)
            .enumerate()
            .map(|(k, (key, n))| (key.id(), (0..*n).map(|i| format!("files/k{k}f{i:03}")).collect()))
            .collect();
        (KeyPool::new(keys), lists)
    }

    #[test]
    fn every_page_size_lists_every_keys_items_once_and_no_page_with_a_token_is_empty() {
        let mut pools: Vec<Vec<usize>> =
            [&[3, 0, 5, 1][..], &[0, 0, 0, 7], &[12, 12], &[0, 0, 0], &[4], &[1, 0, 0, 0, 0, 1]]
                .map(<[usize]>::to_vec)
                .into();
        // Pools of more keys than one walk hands out, most of them empty.
        for (n, at) in [(16, vec![0]), (17, vec![0]), (17, vec![16]), (33, vec![2, 20, 32]), (35, vec![0, 34])] {
            pools.push((0..n).map(|i| if at.contains(&i) { 3 } else { 0 }).collect());
        }
        for (counts, loose) in pools.iter().flat_map(|c| [(c, false), (c, true)]) {
            let (pool, lists) = pool_with(counts);
            let mut want: Vec<String> = lists.values().flatten().cloned().collect();
            want.sort();
            for page_size in [1, 2, 3, 4, 5, 10, 100] {
                let pages = list_all(&pool, &lists, page_size, loose);
                let mut got: Vec<String> = pages.iter().flat_map(|(items, _)| items.clone()).collect();
                got.sort();
                assert_eq!(got, want, "counts {counts:?}, page size {page_size}");
                for (i, (items, fetches)) in pages.iter().enumerate() {
                    assert!(items.len() <= page_size, "counts {counts:?}, page size {page_size}: {items:?}");
                    assert!(*fetches <= MAX_FETCHES, "counts {counts:?}, page size {page_size}");
                    assert!(*fetches <= MAX_FETCHES);
                    // A pager fails on an empty page it reached by a token.
                    if i > 0 {
                        assert!(!items.is_empty(), "counts {counts:?}, page size {page_size}: page {i} of {pages:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_key_removed_between_two_pages_shifts_nothing_but_its_own_items() {
        let (mut pool, lists) = pool_with(&[2, 2, 2]);
        let ids: Vec<KeyId> = lists.keys().cloned().collect();
        // Page 1 ends inside the second key's list.
        let mut merge = Merge::of(&files_get("pageSize=3")).expect("valid").expect("merged");
        let mut next = merge.walked(pool.walk(&WalkFrom::First, WALK_KEYS));
        let first = loop {
            match next {
                Next::Walk(_) => unreachable!("three keys are one walk"),
                Next::Fetch { lease, query } => next = merge.fetched(&google_page(&lists[&lease.id], &query, false)),
                Next::Answer(r) => break serde_json::from_str::<Value>(&r.body).expect("json"),
            }
        };
        let token = first["nextPageToken"].as_str().expect("a next page").to_owned();
        assert!(pool.remove(&ids[1]).is_some(), "the second key is removed");
        let mut merge =
            Merge::of(&files_get(&format!("pageSize=3&pageToken={token}"))).expect("valid").expect("merged");
        let mut next = merge.walked(pool.walk(&merge.walk_from(), WALK_KEYS));
        let second = loop {
            match next {
                Next::Walk(_) => unreachable!("two keys are one walk"),
                Next::Fetch { lease, query } => {
                    assert!(!query.contains("pageToken"), "Google's token held for the removed key only: {query}");
                    next = merge.fetched(&google_page(&lists[&lease.id], &query, false));
                }
                Next::Answer(r) => break serde_json::from_str::<Value>(&r.body).expect("json"),
            }
        };
        assert_eq!(second["files"], json!([{"name": "files/k2f000"}, {"name": "files/k2f001"}]), "{second}");
        assert_eq!(second.get("nextPageToken"), None);
    }

    #[test]
    fn a_token_this_proxy_did_not_hand_out_is_a_400() {
        for token in ["abc", "gp1.k.k-0123.%%%", "gp1.x.k-0123.", "gp1.k.k 1.", "gp1.a.k-1.AAAA", "gp1.k.k-1.AA.x"] {
            let e = Merge::of(&files_get(&format!("pageToken={token}"))).expect_err(token);
            assert_eq!(e.status(), 400, "{token}");
        }
        assert_eq!(Merge::of(&files_get("pageSize=ten")).expect_err("not a number").status(), 400);
        let cursor = Cursor::At(KeyId::from_string("k-0a1b2c3d4e5f"), Some("CgwI+/=tok".into()));
        let token = cursor.token().expect("a token");
        assert_eq!(Cursor::parse(&token), Some(cursor));
    }

    #[test]
    fn only_a_gemini_get_of_a_collection_is_merged() {
        assert!(collection(&files_get("")).is_some());
        assert!(collection(&Forward { upstream_path: "/files/abc".into(), ..files_get("") }).is_none());
        assert!(collection(&Forward { method: Method::Post, ..files_get("") }).is_none());
        assert!(collection(&Forward { dialect: Dialect::OpenAi, ..files_get("") }).is_none());
        assert!(collection(&Forward { upload: true, ..files_get("") }).is_none());
        let batches = collection(&Forward { upstream_path: "/batches".into(), ..files_get("") });
        assert_eq!(batches.map(|c| c.items), Some("operations"));
    }
}
