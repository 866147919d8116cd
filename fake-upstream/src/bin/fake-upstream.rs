//! Runs the fake Gemini upstream: `fake-upstream [ADDR]` (default
//! `127.0.0.1:0`); prints `listening on http://ADDR` once ready.

use fake_upstream::FakeUpstream;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let fake = FakeUpstream::start_on(addr.parse()?).await?;
    #[expect(clippy::print_stdout, reason = "the address is this program's output, read by scripts")]
    {
        println!("listening on {}", fake.origin());
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
