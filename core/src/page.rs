//! The `/stat` page: one self-contained HTML document (inline CSS and a
//! little inline script, nothing fetched from elsewhere) rendered from a
//! [`Snapshot`], and the login page shown without credentials. Every piece
//! of text from outside (model names, reasons, ids) is escaped.

use crate::stats::{KeyState, Snapshot};
use crate::time::UnixMillis;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str, out: &mut String) {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Appends a number without the formatting machinery (this runs for every
/// cell).
fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape(s, &mut out);
    out
}

/// `3h 12m`, `4m 05s`, `12s`.
pub fn duration(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

const STYLE: &str = r#"
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--mut:#5b6570;--line:#d8dee4;--head:#f3f5f7;--day:#cf222e;--min:#bf8700;--off:#6e7781;--ok:#1a7f37;--sel:#0969da}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--mut:#9198a1;--line:#30363d;--head:#161b22;--day:#ff7b72;--min:#d29922;--off:#8b949e;--ok:#3fb950;--sel:#58a6ff}}
*{box-sizing:border-box}body{margin:0;padding:16px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
h1{font-size:20px;margin:0 0 4px}header{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:baseline;justify-content:space-between;margin-bottom:12px}
.meta{color:var(--mut);font-size:13px}.meta b{color:var(--fg)}
button{font:inherit;padding:6px 12px;border:1px solid var(--line);border-radius:6px;background:var(--head);color:var(--fg);cursor:pointer}
button.danger{border-color:var(--day);color:var(--day)}
.wrap{overflow:auto;max-height:70vh;border:1px solid var(--line);border-radius:6px}
table{border-collapse:separate;border-spacing:0;width:max-content;min-width:100%}
th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
thead th{position:sticky;top:0;background:var(--head);z-index:2;font-weight:600}
th.key,td.key{position:sticky;left:0;background:var(--bg);text-align:left;z-index:1}thead th.key{z-index:3;background:var(--head)}
tfoot td{font-weight:600;background:var(--head)}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}.id{color:var(--mut)}
td.mark{cursor:pointer;font-weight:600}td.exhausted{color:var(--day);box-shadow:inset 3px 0 var(--day)}
td.cooling{color:var(--min);box-shadow:inset 3px 0 var(--min)}td.sel{outline:2px solid var(--sel);outline-offset:-2px}
tr.disabled td{color:var(--off);text-decoration:line-through}tr.disabled td.key{text-decoration:none}
.badge{display:inline-block;margin-left:6px;padding:0 6px;border-radius:9px;font-size:11px;border:1px solid currentColor}
.b-day{color:var(--day)}.b-min{color:var(--min)}.b-off{color:var(--off)}
#reason{margin-top:12px;padding:10px 12px;border:1px solid var(--line);border-radius:6px;white-space:pre-wrap;word-break:break-word}
#reason[hidden]{display:none}.legend{margin-top:8px;color:var(--mut);font-size:12px}
form.login{max-width:360px;margin:15vh auto;display:grid;gap:10px}form.login input{font:inherit;padding:8px;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}
.err{color:var(--day)}
@media (max-width:600px){body{padding:8px}.wrap{max-height:none}th,td{padding:4px 6px}}
"#;

const SCRIPT: &str = r#"
(function(){
var sel=null;
function fmt(ms){var s=Math.max(0,Math.ceil(ms/1000));if(s<60)return s+"s";if(s<3600)return Math.floor(s/60)+"m "+String(s%60).padStart(2,"0")+"s";return Math.floor(s/3600)+"h "+String(Math.floor(s%3600/60)).padStart(2,"0")+"m";}
function tick(){var now=Date.now();document.querySelectorAll("[data-until]").forEach(function(e){var d=+e.dataset.until-now;e.textContent=d>0?"in "+fmt(d):"now";});}
function show(){var box=document.getElementById("reason");document.querySelectorAll("td.sel").forEach(function(c){c.classList.remove("sel");});
 var cell=sel&&document.querySelector('td[data-cell="'+CSS.escape(sel)+'"]');
 if(!cell){box.hidden=true;return;}cell.classList.add("sel");
 box.hidden=false;box.textContent="";var h=document.createElement("strong");
 var col=cell.closest("table").querySelectorAll("thead th")[cell.cellIndex];
 h.textContent=cell.closest("tr").querySelector("code").textContent+" · "+(col?col.textContent:"")+" · "+(cell.classList.contains("exhausted")?"exhausted for the day":"cooling down")+" until "+new Date(+cell.dataset.free).toISOString().replace(".000","");box.appendChild(h);
 box.appendChild(document.createTextNode("\n"+cell.dataset.reason));}
document.addEventListener("click",function(ev){var c=ev.target.closest("td.mark");if(!c)return;sel=(sel===c.dataset.cell)?null:c.dataset.cell;show();});
function refresh(){fetch(location.pathname,{credentials:"same-origin",headers:{accept:"text/html"}}).then(function(r){if(!r.ok)throw r;return r.text();}).then(function(t){
 var doc=new DOMParser().parseFromString(t,"text/html");var n=doc.getElementById("data");if(!n)return;
 document.getElementById("data").replaceWith(n);var m=doc.getElementById("meta");if(m)document.getElementById("meta").replaceWith(m);show();tick();}).catch(function(){});}
document.getElementById("refresh").addEventListener("click",refresh);
document.getElementById("reset").addEventListener("click",function(){if(!confirm("Clear every mark and counter, and re-enable disabled keys?"))return;
 fetch("/stat/reset",{method:"POST",credentials:"same-origin",headers:{"x-gemini-proxy-action":"reset"}}).then(function(){sel=null;refresh();});});
setInterval(refresh,15000);setInterval(tick,1000);tick();
})();
"#;

fn until_span(out: &mut String, now: UnixMillis, until: UnixMillis) {
    let _ = write!(out, r#"<span data-until="{}">in {}</span>"#, until.0, duration(now.until(until)));
}

/// Renders the `/stat` page.
pub fn render(s: &Snapshot) -> String {
    let mut models: BTreeMap<&str, [u64; 2]> = BTreeMap::new();
    for k in &s.keys {
        for m in &k.models {
            let e = models.entry(m.model.as_str()).or_default();
            e[0] += m.requests;
            e[1] += m.rate_limited;
        }
    }
    let model_names: Vec<&str> = models.keys().copied().collect();
    let mut out = String::with_capacity(4096 + s.keys.len() * (200 + 60 * model_names.len()));
    out.push_str(r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer"><title>gemini-proxy · keys</title><style>"#);
    out.push_str(STYLE);
    out.push_str("</style></head><body><header><div><h1>gemini-proxy keys</h1>");
    let disabled = s.keys.iter().filter(|k| k.disabled.is_some()).count();
    let (mut exhausted, mut cooling) = (0, 0);
    let mut soonest: Option<UnixMillis> = None;
    for k in &s.keys {
        for m in &k.models {
            match m.state {
                KeyState::Exhausted { .. } => exhausted += 1,
                KeyState::Cooling { until } => {
                    cooling += 1;
                    soonest = Some(soonest.map_or(until, |s| s.min(until)));
                }
                _ => {}
            }
        }
    }
    let _ = write!(
        out,
        r#"<div class="meta" id="meta"><b>{}</b> keys · <b>{disabled}</b> disabled · <b>{exhausted}</b> exhausted · <b>{cooling}</b> cooling · daily quotas reset "#,
        s.keys.len()
    );
    until_span(&mut out, s.now, s.next_quota_reset);
    let _ = write!(out, r#" ({}) · "#, s.next_quota_reset.to_rfc3339());
    if let Some(t) = soonest {
        out.push_str("next cooling key frees up ");
        until_span(&mut out, s.now, t);
        out.push_str(" · ");
    }
    let _ = write!(out, r#"rendered <time datetime="{0}">{0}</time></div></div>"#, s.now.to_rfc3339());
    out.push_str(r#"<div><button id="refresh" type="button">Refresh</button> <button id="reset" class="danger" type="button">Reset now</button></div></header>"#);

    out.push_str(r#"<main id="data"><div class="wrap"><table><thead><tr><th class="key" scope="col">key</th>"#);
    for m in &model_names {
        out.push_str(r#"<th scope="col">"#);
        escape(m, &mut out);
        out.push_str("</th>");
    }
    out.push_str("<th scope=\"col\">total</th></tr></thead><tbody>");
    for k in &s.keys {
        let row_class = if k.disabled.is_some() { r#" class="disabled""# } else { "" };
        let _ = write!(
            out,
            r#"<tr{row_class}><td class="key"><code>{}</code> <span class="id">{}</span>"#,
            esc(&k.masked),
            esc(k.id.as_str())
        );
        if let Some(d) = &k.disabled {
            let _ = write!(out, r#"<span class="badge b-off" title="{}">disabled</span>"#, esc(&d.reason));
        }
        out.push_str("</td>");
        let mut total = 0;
        // Both lists are sorted by model name: walk them together.
        let mut cells = k.models.iter().peekable();
        for name in &model_names {
            while cells.next_if(|m| m.model.as_str() < *name).is_some() {}
            let Some(m) = cells.next_if(|m| m.model == *name) else {
                out.push_str("<td>0</td>");
                continue;
            };
            total += m.requests;
            let (class, badge) = match m.state {
                KeyState::Exhausted { until } => ("exhausted", (r#"<span class="badge b-day">day</span>"#, until)),
                KeyState::Cooling { until } => ("cooling", (r#"<span class="badge b-min">min</span>"#, until)),
                KeyState::Ok | KeyState::Disabled => {
                    out.push_str("<td>");
                    push_u64(&mut out, m.requests);
                    out.push_str("</td>");
                    continue;
                }
            };
            out.push_str(r#"<td class="mark "#);
            out.push_str(class);
            out.push_str(r#"" data-cell=""#);
            escape(k.id.as_str(), &mut out);
            out.push('/');
            escape(&m.model, &mut out);
            out.push_str(r#"" data-free=""#);
            push_u64(&mut out, badge.1.0);
            out.push_str(r#"" data-reason=""#);
            escape(m.reason.as_deref().unwrap_or("no reason given"), &mut out);
            out.push_str(r#"">"#);
            push_u64(&mut out, m.requests);
            out.push_str(badge.0);
            out.push_str("</td>");
        }
        let _ = write!(out, "<td>{total}</td></tr>");
    }
    out.push_str(r#"</tbody><tfoot><tr><td class="key">total</td>"#);
    let mut grand = 0;
    for name in &model_names {
        let t = models[name][0];
        grand += t;
        let _ = write!(out, "<td>{t}</td>");
    }
    let _ = write!(out, "<td>{grand}</td></tr></tfoot></table></div>");
    let disabled_list: Vec<_> = s.keys.iter().filter_map(|k| k.disabled.as_ref().map(|d| (k, d))).collect();
    if !disabled_list.is_empty() {
        out.push_str("<h2 style=\"font-size:15px;margin:16px 0 4px\">Disabled keys</h2><ul>");
        for (k, d) in disabled_list {
            let _ = write!(
                out,
                "<li><code>{}</code> since {}: {}</li>",
                esc(&k.masked),
                d.since.to_rfc3339(),
                esc(&d.reason)
            );
        }
        out.push_str("</ul>");
    }
    out.push_str(r#"</main><div id="reason" hidden></div><p class="legend"><span class="badge b-day">day</span> exhausted until the daily reset · <span class="badge b-min">min</span> cooling after a per-minute limit · click a marked cell for Google's reason · cells count today's calls</p><script>"#);
    out.push_str(SCRIPT);
    out.push_str("</script></body></html>");
    out
}

/// The page shown without valid credentials: a login form posting the
/// proxy key to `/stat/login`.
pub fn login(error: Option<&str>) -> String {
    let mut out = String::from(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer"><title>gemini-proxy · sign in</title><style>"#,
    );
    out.push_str(STYLE);
    out.push_str(r#"</style></head><body><form class="login" method="post" action="/stat/login"><h1>gemini-proxy</h1><label for="key">Proxy key (PROXY_API_KEY)</label><input id="key" name="key" type="password" autocomplete="current-password" required autofocus>"#);
    if let Some(e) = error {
        let _ = write!(out, r#"<p class="err">{}</p>"#, esc(e));
    }
    out.push_str(r#"<button type="submit">Sign in</button></form></body></html>"#);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{KeyPool, Outcome, RateLimit, RateLimitScope};
    use crate::secret::ApiKey;

    fn pool(n: usize) -> KeyPool {
        KeyPool::new((0..n).map(|i| ApiKey::new(format!("AIzaSyPAGEkey{i:027}"))).collect())
    }

    #[test]
    fn shows_masked_keys_counts_and_marks() {
        let mut p = pool(3);
        let now = UnixMillis(1_800_000_000_000);
        let ids: Vec<_> = p.ids().cloned().collect();
        p.report(&ids[0], "gemini-2.5-pro", &Outcome::Success, now);
        p.report(
            &ids[0],
            "gemini-2.5-pro",
            &Outcome::RateLimited(RateLimit {
                scope: RateLimitScope::PerDay,
                retry_after_ms: None,
                reason: "daily quota".into(),
            }),
            now,
        );
        p.report(
            &ids[1],
            "gemini-2.5-flash",
            &Outcome::RateLimited(RateLimit {
                scope: RateLimitScope::PerMinute,
                retry_after_ms: Some(30_000),
                reason: "minute quota".into(),
            }),
            now,
        );
        p.report(&ids[2], "gemini-2.5-flash", &Outcome::KeyRejected { reason: "API key not valid".into() }, now);
        let html = render(&p.snapshot(now));
        assert!(html.contains("AIza…0000"));
        assert!(!html.contains("AIzaSyPAGEkey"), "a secret in the page");
        assert!(html.contains(r#"class="mark exhausted""#) && html.contains(r#"data-reason="daily quota""#));
        assert!(html.contains(r#"class="mark cooling""#) && html.contains("minute quota"));
        assert!(html.contains(r#"<tr class="disabled">"#) && html.contains("API key not valid"));
        assert!(html.contains(">2<span class=\"badge b-day\">"), "the exhausted cell counts 2 calls");
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing fetched from elsewhere");
    }

    #[test]
    fn escapes_everything_from_outside() {
        let mut p = pool(1);
        let now = UnixMillis(1_800_000_000_000);
        let id = p.ids().next().cloned().expect("key");
        let evil = "<script>alert(1)</script>\"'&";
        p.report(
            &id,
            "m<script>x</script>",
            &Outcome::RateLimited(RateLimit {
                scope: RateLimitScope::PerDay,
                retry_after_ms: None,
                reason: evil.into(),
            }),
            now,
        );
        let html = render(&p.snapshot(now));
        assert!(!html.contains("<script>alert(1)"));
        assert!(!html.contains("m<script>x"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert_eq!(html.matches("<script>").count(), 1, "only the page's own script");
        let login = login(Some("<b>bad</b>"));
        assert!(login.contains("&lt;b&gt;bad&lt;/b&gt;"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59_001), "1m 00s");
        assert_eq!(duration(3_600_000 * 5 + 60_000 * 7), "5h 07m");
    }

    #[test]
    fn two_hundred_keys_by_ten_models_render_well_under_a_millisecond() {
        // The shape at size; the time is printed by `cargo run --release
        // -p gemini-proxy-core --example render_stat`.
        let mut p = pool(200);
        let now = UnixMillis(1_800_000_000_000);
        let ids: Vec<_> = p.ids().cloned().collect();
        for (i, id) in ids.iter().enumerate() {
            for m in 0..10 {
                p.report(id, &format!("gemini-model-{m}"), &Outcome::Success, now);
                if (i + m) % 7 == 0 {
                    p.report(
                        id,
                        &format!("gemini-model-{m}"),
                        &Outcome::RateLimited(RateLimit {
                            scope: RateLimitScope::PerMinute,
                            retry_after_ms: None,
                            reason: "r".into(),
                        }),
                        now,
                    );
                }
            }
        }
        let html = render(&p.snapshot(now));
        assert_eq!(html.matches("<tr").count(), 1 + 200 + 1);
    }
}
