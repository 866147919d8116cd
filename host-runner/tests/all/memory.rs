//! host-runner's memory while it pipes an upload of 200 MiB: the real
//! binary in a process of its own, so that the resident set measured is
//! its alone (the fake upstream and the client live in the test's).

use crate::harness::{PROXY_KEY, VAULT_SECRET, pool_keys};
use fake_upstream::FakeUpstream;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const MIB: u64 = 1024 * 1024;
/// The upload's size.
const UPLOAD: u64 = 200 * MIB;
/// The most the upload may raise host-runner's resident set by.
const RISE_LIMIT: u64 = 32 * MIB;

/// A field of `/proc/{pid}/status` (`VmRSS:`, `VmHWM:`), in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the child's status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    kib * 1024
}

/// host-runner as a child process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts host-runner on 127.0.0.1:0 in `dir` against `fake`; its base URL.
#[expect(clippy::print_stderr, reason = "its log before it listens shows why it did not start")]
fn spawn_host_runner(dir: &std::path::Path, fake: &FakeUpstream, keys: &[String]) -> (Child, String) {
    let gemini = fake.gemini_base();
    let mut child = Command::new(env!("CARGO_BIN_EXE_host-runner"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("keys.sqlite3"))
        .current_dir(dir)
        .env("API_KEYS", keys.join(","))
        .env("PROXY_API_KEY", PROXY_KEY)
        .env("KEY_ENCRYPTION_SECRET", VAULT_SECRET)
        .env("GEMINI_UPSTREAM_URL", &gemini)
        .env("OPENAI_UPSTREAM_URL", format!("{gemini}/openai"))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "host_runner=info,warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("host-runner starts");
    let stderr = child.stderr.take().expect("its stderr");
    let child = Child(child);
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads its log for the address, then drains it (a full pipe would
    // stop it).
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.split("listening on ").nth(1) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url.split_whitespace().next().unwrap_or_default().to_owned());
                }
            } else if tx.is_some() {
                eprintln!("host-runner: {line}");
            }
        }
    });
    let url = rx.recv_timeout(std::time::Duration::from_secs(120)).expect("host-runner is listening");
    (child, url)
}

/// Uploads `size` bytes through the proxy at `base` in the resumable
/// protocol (start, then one chunk that finalizes); the file's name.
async fn upload(http: &reqwest::Client, base: &str, size: u64) -> String {
    let r = http
        .post(format!("{base}/upload/v1beta/files"))
        .header("x-goog-api-key", PROXY_KEY)
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header("x-goog-upload-header-content-length", size.to_string())
        .json(&json!({"file": {"displayName": "big.bin"}}))
        .send()
        .await
        .expect("start");
    assert_eq!(r.status(), 200);
    let url = r.headers()["x-goog-upload-url"].to_str().expect("ascii").to_owned();
    assert!(url.starts_with(base), "the proxy's own URL: {url}");
    let r = http
        .post(&url)
        .header("x-goog-upload-command", "upload, finalize")
        .header("x-goog-upload-offset", "0")
        .body(vec![b'x'; usize::try_from(size).expect("fits")])
        .send()
        .await
        .expect("chunk");
    let status = r.status();
    let v: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["file"]["sizeBytes"], size.to_string());
    v["file"]["name"].as_str().expect("a name").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::print_stdout, reason = "the figure is this test's output (scripts/test shows it)")]
async fn an_upload_of_200_mib_raises_host_runner_rss_by_at_most_32_mib() {
    let fake = FakeUpstream::start().await.expect("fake upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = pool_keys(4);
    let (child, base) = spawn_host_runner(dir.path(), &fake, &keys);
    let pid = child.0.id();
    let http = reqwest::Client::new();
    // Warm: instances, connections, the allocator's first pages.
    for _ in 0..3 {
        upload(&http, &base, 4 * MIB).await;
    }
    // The peak is measured from here on (`5` resets VmHWM to VmRSS).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting the child's peak RSS");
    let before = status_bytes(pid, "VmRSS:");
    let seen_before = fake.requests().len();
    let name = upload(&http, &base, UPLOAD).await;
    let peak = status_bytes(pid, "VmHWM:");
    let rise = peak.saturating_sub(before);
    let mib = |b: u64| b as f64 / MIB as f64;
    println!(
        "host-runner RSS piping a {} MiB upload: {:.1} MiB before, {:.1} MiB at its peak, +{:.1} MiB (limit +{} MiB)",
        UPLOAD / MIB,
        mib(before),
        mib(peak),
        mib(rise),
        RISE_LIMIT / MIB
    );
    assert!(rise <= RISE_LIMIT, "RSS rose by {:.1} MiB", mib(rise));
    // All of it reached one key: the one that started the upload.
    let seen = fake.requests();
    let sent: Vec<_> = seen[seen_before..].iter().filter(|r| r.path.starts_with("/upload/")).collect();
    assert_eq!(sent.len(), 2, "a start and a chunk");
    assert!(!sent[0].credentials.is_empty());
    assert_eq!(sent[1].credentials, sent[0].credentials);
    assert_eq!(sent[1].body.len() as u64, UPLOAD);
    assert!(name.starts_with("files/"), "{name}");
}
