//! The request log: the last requests' summaries ([`Summary`]), newest
//! first, for the admin to find one (`GET /admin/requests`, the "Recent
//! requests" table of `/stat`). Bounded ([`DEFAULT_SIZE`], or
//! `REQUEST_LOG_SIZE`), and kept across restarts: one row per request,
//! written with the host's batch of reports, the oldest pruned in bulk.
//!
//! A record holds no body, no query, no credential: the client by name and
//! id, keys by id, errors by kind and redacted reason.
//!
//! A host that writes in batches (host-runner) keeps records in chunks of
//! [`RequestLog::chunked`]: one row holds a chunk's records (a JSON list),
//! written when the chunk is full, when it has waited a second, and at
//! shutdown ([`RequestLog::flush`]), so that a busy proxy writes a row per
//! chunk, not per request. The Durable Object writes a row per request, with
//! the reports it already writes.

use crate::store::sql::{Columns, RowError, SqlValue, Statement, int};
use crate::wire::summary::{RequestQuery, Summary};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;

/// The table.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS requests (seq INTEGER PRIMARY KEY, record TEXT NOT NULL)";
const INSERT: &str = "INSERT OR REPLACE INTO requests (seq, record) VALUES (?1, ?2)";
const PRUNE: &str = "DELETE FROM requests WHERE seq <= ?1";
/// The newest `rows` rows (newest first): a log of `n` records needs at
/// most `n` of them.
pub fn select_newest(rows: usize) -> String {
    format!("SELECT seq, record FROM requests ORDER BY seq DESC LIMIT {rows}")
}
/// The newest row's number (a log resumes after it).
pub const SELECT_LAST: &str = "SELECT COALESCE(MAX(seq), 0) FROM requests";

/// How many requests the log keeps unless `REQUEST_LOG_SIZE` says.
pub const DEFAULT_SIZE: usize = crate::wire::summary::DEFAULT_LOG_SIZE;
/// The most records one page of `GET /admin/requests` holds.
pub const MAX_PAGE: usize = 200;
/// A page's records unless `limit` says.
pub const DEFAULT_PAGE: usize = 50;
/// Rows past the size are deleted once this many have piled up (one
/// statement, not one per request).
const PRUNE_EVERY: u64 = 64;

/// How long a record may wait in an unfinished chunk when another comes.
const CHUNK_WAIT_MS: u64 = 1_000;

/// One request of the log: its number (rising; a page's cursor) and its
/// summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    /// Its number.
    pub seq: u64,
    /// What it came to.
    #[serde(flatten)]
    pub summary: Summary,
}

/// One record as the log holds it: its number, and its JSON (a [`Logged`]:
/// `{"seq":n,` and the summary's fields), made once, when it is logged.
/// A record is read back into a [`Summary`] only when someone looks.
#[derive(Clone, Debug)]
struct Entry {
    seq: u64,
    json: String,
    /// Whether it is a stranger's refusal ([`Summary::refused_stranger`]).
    stranger: bool,
}

/// At most this share of the log (1 in N records) holds strangers'
/// refusals, so that a flood of them cannot push out the requests the
/// admin looks for.
const STRANGERS_SHARE: usize = 10;

/// The log a key store keeps.
#[derive(Clone, Debug)]
pub struct RequestLog {
    size: usize,
    /// Newest last.
    ring: VecDeque<Entry>,
    /// The last number given.
    last: u64,
    /// Whether the stored rows were read back (a Durable Object reads them
    /// at the first look, not at each wake-up).
    loaded: bool,
    /// Records a row holds (1: a row per record).
    chunk: usize,
    /// How many of the newest records are not written yet, and the time of
    /// the first of them.
    pending: usize,
    pending_since: u64,
    /// How many records of the ring are strangers' refusals.
    strangers: usize,
    /// Strangers' refusals left out since the start (their share was full).
    strangers_left_out: u64,
}

impl Default for RequestLog {
    fn default() -> Self {
        Self::new(DEFAULT_SIZE)
    }
}

impl RequestLog {
    /// An empty log of `size` records (0: none kept).
    pub fn new(size: usize) -> Self {
        Self {
            size,
            ring: VecDeque::new(),
            last: 0,
            loaded: true,
            chunk: 1,
            pending: 0,
            pending_since: 0,
            strangers: 0,
            strangers_left_out: 0,
        }
    }

    /// A log that goes on after stored rows up to `last`, which are read
    /// back only when someone looks ([`Self::load`]).
    pub fn resume(size: usize, last: u64) -> Self {
        Self { last, loaded: last == 0, ..Self::new(size) }
    }

    /// Writes a row per `chunk` records from now on (see the
    /// [module](self)); [`Self::flush`] writes what waits.
    pub fn chunked(&mut self, chunk: usize) {
        self.chunk = chunk.max(1);
    }

    /// The statement that writes the records still waiting in an
    /// unfinished chunk, if any (at shutdown).
    pub fn flush(&mut self) -> Vec<Statement> {
        let waiting = std::mem::take(&mut self.pending).min(self.ring.len());
        if waiting == 0 {
            return Vec::new();
        }
        let rows = self.ring.range(self.ring.len() - waiting..);
        let mut text = String::with_capacity(rows.clone().map(|e| e.json.len() + 1).sum::<usize>() + 2);
        text.push('[');
        for (i, entry) in rows.enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&entry.json);
        }
        text.push(']');
        vec![(INSERT, vec![int(self.last), SqlValue::Text(text)])]
    }

    /// How many records it keeps.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Keeps `size` records from now on.
    pub fn resize(&mut self, size: usize) {
        self.size = size;
        self.trim();
    }

    /// Whether the stored rows still need reading back before a look.
    pub fn needs_loading(&self) -> bool {
        !self.loaded
    }

    /// Reads back the stored rows ([`select_newest`], in any order) in
    /// front of what was logged since.
    pub fn load(&mut self, rows: &[Vec<SqlValue>]) -> Result<(), RowError> {
        let mut older: Vec<Logged> = Vec::with_capacity(rows.len().min(self.size));
        let first = self.ring.front().map(|e| e.seq);
        for row in rows {
            let mut c = Columns::new("requests", row);
            let seq = c.int()?;
            let record = c.text()?;
            // A chunk's row holds its records with their numbers; a single
            // record's row, its summary. A record a later version wrote and
            // this one cannot read is skipped, not fatal: the log is a
            // convenience.
            let records = if record.starts_with('[') {
                serde_json::from_str::<Vec<Logged>>(&record).unwrap_or_default()
            } else {
                serde_json::from_str::<Summary>(&record)
                    .map(|summary| vec![Logged { seq, summary }])
                    .unwrap_or_default()
            };
            older.extend(records.into_iter().filter(|l| first.is_none_or(|first| l.seq < first)));
        }
        older.sort_by_key(|l| l.seq);
        let mut ring: VecDeque<Entry> = older.iter().map(|l| entry(l.seq, &l.summary)).collect();
        self.strangers += ring.iter().filter(|e| e.stranger).count();
        ring.extend(self.ring.drain(..));
        self.ring = ring;
        self.last = self.last.max(self.ring.back().map_or(0, |e| e.seq));
        self.loaded = true;
        self.trim();
        Ok(())
    }

    fn trim(&mut self) {
        while self.ring.len() > self.size {
            if self.ring.pop_front().is_some_and(|e| e.stranger) {
                self.strangers -= 1;
            }
        }
    }

    /// Logs `summary`: the statements that store it (and, now and then,
    /// forget what fell out of the log).
    pub fn push(&mut self, summary: Summary) -> Vec<Statement> {
        if self.size == 0 {
            return Vec::new();
        }
        if summary.refused_stranger() {
            if self.strangers >= (self.size / STRANGERS_SHARE).max(1) {
                self.strangers_left_out += 1;
                return Vec::new();
            }
            self.strangers += 1;
        }
        self.last += 1;
        let seq = self.last;
        let at = summary.at;
        let record = entry(seq, &summary);
        drop(summary);
        let mut writes = if self.chunk <= 1 {
            vec![(INSERT, vec![int(seq), SqlValue::Text(record.json.clone())])]
        } else {
            Vec::new()
        };
        self.ring.push_back(record);
        self.trim();
        if self.chunk > 1 {
            if self.pending == 0 {
                self.pending_since = at;
            }
            self.pending += 1;
            let waited = at.saturating_sub(self.pending_since) >= CHUNK_WAIT_MS;
            if self.pending >= self.chunk || waited {
                writes = self.flush();
            }
        }
        if seq.is_multiple_of(PRUNE_EVERY) && seq > self.size as u64 {
            writes.push((PRUNE, vec![int(seq - self.size as u64)]));
        }
        writes
    }

    /// The records `query` asks for, newest first, as `GET /admin/requests`
    /// answers: `{"requests": [...], "next": cursor|null, "size": n}`.
    pub fn page(&self, query: &RequestQuery) -> Value {
        let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let mut found: Vec<Logged> = Vec::with_capacity(limit + 1);
        for entry in self.ring.iter().rev() {
            if query.before.is_some_and(|before| entry.seq >= before) {
                continue;
            }
            // Read back only now, when someone looks.
            let Ok(logged) = serde_json::from_str::<Logged>(&entry.json) else { continue };
            if !query.matches(&logged.summary) {
                continue;
            }
            found.push(logged);
            if found.len() > limit {
                break;
            }
        }
        let next = (found.len() > limit).then(|| found[limit - 1].seq.to_string());
        found.truncate(limit);
        json!({ "requests": found, "next": next, "size": self.size, "strangers_left_out": self.strangers_left_out })
    }
}

/// A record's entry: its JSON made once, `{"seq":n,` and the summary's
/// fields (a summary's JSON is an object with fields), in one buffer.
fn entry(seq: u64, summary: &Summary) -> Entry {
    use std::io::Write as _;
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{{\"seq\":{seq},");
    let fields = buf.len();
    let _ = serde_json::to_writer(&mut buf, summary);
    // The summary's own `{` goes: its fields follow the number.
    if buf.get(fields) == Some(&b'{') {
        buf.remove(fields);
    }
    Entry { seq, json: String::from_utf8(buf).unwrap_or_default(), stranger: summary.refused_stranger() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::secret::KeyId;
    use crate::wire::summary::Attempt;

    fn summary(status: u16, model: &str, key: &str) -> Summary {
        Summary {
            method: "POST".into(),
            path: format!("/v1beta/models/{model}:generateContent"),
            dialect: "gemini".into(),
            model: Some(model.into()),
            status,
            attempts: vec![Attempt { key: KeyId::from_string(key), outcome: "success".into(), reason: None }],
            ..Summary::default()
        }
    }

    fn seqs(page: &Value) -> Vec<u64> {
        page["requests"].as_array().expect("records").iter().map(|r| r["seq"].as_u64().expect("seq")).collect()
    }

    #[test]
    fn keeps_the_last_size_records_newest_first_and_pages_with_a_cursor() {
        let mut log = RequestLog::new(5);
        for i in 0..8 {
            log.push(summary(200 + i, "m", "k1"));
        }
        let page = log.page(&RequestQuery { limit: Some(2), ..RequestQuery::default() });
        assert_eq!(seqs(&page), [8, 7]);
        assert_eq!(page["next"], "7");
        let page = log.page(&RequestQuery { limit: Some(2), before: Some(7), ..RequestQuery::default() });
        assert_eq!(seqs(&page), [6, 5]);
        let last = log.page(&RequestQuery { limit: Some(2), before: Some(5), ..RequestQuery::default() });
        assert_eq!(seqs(&last), [4]);
        assert!(last["next"].is_null());
    }

    #[test]
    fn filters_by_status_class_model_key_and_client() {
        let mut log = RequestLog::new(100);
        log.push(summary(200, "gemini-2.5-flash", "k1"));
        log.push(summary(503, "gemini-2.5-pro", "k2"));
        log.push(Summary { client: Some("c1".into()), client_name: Some("team".into()), ..summary(429, "m", "k1") });
        log.push(Summary { status: 0, ..summary(0, "m", "k3") });
        let q = |q: &str| seqs(&log.page(&crate::request::admin::requests_query(q).expect("a query")));
        assert_eq!(q("status=5xx"), [2]);
        assert_eq!(q("status=failed"), [4, 3, 2]);
        assert_eq!(q("status=2xx"), [1]);
        assert_eq!(q("model=gemini-2.5-pro"), [2]);
        assert_eq!(q("key=k1"), [3, 1]);
        assert_eq!(q("client=team"), [3]);
        assert_eq!(q("client=c1&status=4xx"), [3]);
    }

    #[test]
    fn a_flood_of_strangers_refusals_keeps_to_its_share_and_pushes_out_no_request() {
        let mut log = RequestLog::new(50);
        for _ in 0..10 {
            log.push(summary(200, "m", "k1"));
        }
        let stranger = || Summary { status: 401, attempts: Vec::new(), model: None, ..summary(401, "m", "k") };
        for _ in 0..1_000 {
            log.push(stranger());
        }
        let page = log.page(&RequestQuery { limit: Some(200), ..RequestQuery::default() });
        assert_eq!(page["requests"].as_array().map(Vec::len), Some(15), "the ten requests and five refusals");
        assert_eq!(page["strangers_left_out"], 995);
        assert_eq!(seqs(&log.page(&crate::request::admin::requests_query("status=2xx").expect("q"))).len(), 10);
        // Refusals of a known client, or of a request that reached a key,
        // are kept like any request.
        log.push(Summary { client: Some("c1".into()), ..stranger() });
        assert_eq!(seqs(&log.page(&crate::request::admin::requests_query("client=c1").expect("q"))).len(), 1);
        // As records fall out, the share frees up again.
        for _ in 0..50 {
            log.push(summary(200, "m", "k1"));
        }
        log.push(stranger());
        assert_eq!(seqs(&log.page(&crate::request::admin::requests_query("status=4xx").expect("q"))).len(), 1);
    }

    #[test]
    fn stores_each_record_and_prunes_in_bulk() {
        let mut log = RequestLog::new(10);
        let mut prunes = Vec::new();
        for i in 0..PRUNE_EVERY {
            let writes = log.push(summary(200, "m", "k"));
            assert_eq!(writes[0].0, INSERT);
            if writes.len() == 2 {
                prunes.push((i, writes[1].1.clone()));
            }
        }
        assert_eq!(prunes, [(PRUNE_EVERY - 1, vec![int(PRUNE_EVERY - 10)])]);
        assert!(RequestLog::new(0).push(summary(200, "m", "k")).is_empty());
    }

    #[test]
    fn a_chunked_log_writes_a_row_per_chunk_a_second_or_a_flush_and_reads_them_back() {
        let mut log = RequestLog::new(100);
        log.chunked(4);
        let at = |ms: u64| Summary { at: 1_000_000 + ms, ..summary(200, "m", "k") };
        let mut rows = Vec::new();
        for i in 0..6 {
            rows.extend(log.push(at(i)));
        }
        assert_eq!(rows.len(), 1, "one row for the first four");
        // The fifth and sixth wait; a record a second later writes them.
        rows.extend(log.push(at(1_010)));
        assert_eq!(rows.len(), 2);
        log.push(at(1_011));
        rows.extend(log.flush());
        assert_eq!(rows.len(), 3);
        assert!(log.flush().is_empty());
        let mut back = RequestLog::resume(100, 8);
        back.load(&rows.into_iter().map(|(_, values)| values).collect::<Vec<_>>()).expect("rows");
        assert_eq!(seqs(&back.page(&RequestQuery::default())), [8, 7, 6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn a_resumed_log_reads_its_rows_back_before_what_came_since() {
        let mut first = RequestLog::new(3);
        let rows: Vec<Vec<SqlValue>> =
            (0..4).flat_map(|_| first.push(summary(200, "m", "k"))).map(|(_, values)| values).collect();
        let mut log = RequestLog::resume(3, 4);
        assert!(log.needs_loading());
        log.push(summary(500, "m", "k"));
        log.load(&rows).expect("rows");
        assert!(!log.needs_loading());
        assert_eq!(seqs(&log.page(&RequestQuery::default())), [5, 4, 3]);
        assert!(log.load(&[vec![SqlValue::Text("x".into())]]).is_err());
    }
}
