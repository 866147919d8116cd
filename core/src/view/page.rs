//! The `/stat` page: one self-contained HTML document (inline CSS and a
//! little inline script, nothing fetched from elsewhere) rendered from a
//! [`Snapshot`], and the login page shown without credentials. Every piece
//! of text from outside (model names, reasons, ids) is escaped.

use crate::store::history::Dim;
use crate::store::snapshot::{KeyState, Snapshot};
use crate::wire::http::Lang;
use crate::wire::time::UnixMillis;
use std::collections::BTreeMap;
pub use words::Words;

pub mod words;
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

/// The page's style sheet, inlined into every page.
const STYLE: &str = include_str!("page/stat.css");

/// The page's script (countdowns, the reason box, refresh and reset; the
/// admin's actions when the page is the admin's), inlined into the page.
const SCRIPT: &str = include_str!("page/stat.js");

fn until_span(out: &mut String, now: UnixMillis, until: UnixMillis, w: &Words) {
    let _ = write!(out, r#"<span data-until="{}">{}{}</span>"#, until.0, w.in_, duration(now.until(until)));
}

/// Renders the `/stat` page in `lang`; `admin` adds the admin's actions (add, check,
/// disable and enable, label with a project, remove), which the page's
/// script sends to `/admin/keys…` with its action header.
pub fn render(s: &Snapshot, admin: bool, lang: Lang) -> String {
    let w = Words::of(lang);
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
    let _ = write!(
        out,
        r#"<!doctype html><html lang="{}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer"><title>{}</title><style>"#,
        w.lang, w.title
    );
    out.push_str(STYLE);
    out.push_str(if admin { r#"</style></head><body data-admin="1">"# } else { "</style></head><body>" });
    let _ = write!(out, "<header><div><h1>{}</h1>", w.heading);
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
        r#"<div class="meta" id="meta"><b>{}</b> {} · <b>{disabled}</b> {} · <b>{exhausted}</b> {} · <b>{cooling}</b> {} · {} "#,
        s.keys.len(),
        w.keys,
        w.disabled,
        w.exhausted,
        w.cooling,
        w.reset_at
    );
    until_span(&mut out, s.now, s.next_quota_reset, w);
    let _ = write!(out, r#" ({}) · "#, s.next_quota_reset.to_rfc3339());
    if let Some(t) = soonest {
        out.push_str(w.next_cooling);
        out.push(' ');
        until_span(&mut out, s.now, t, w);
        out.push_str(" · ");
    }
    let _ = write!(out, r#"{} <time datetime="{1}">{1}</time></div></div>"#, w.rendered, s.now.to_rfc3339());
    let _ = write!(
        out,
        r#"<div><a id="lang" href="?lang={0}" hreflang="{0}" data-lang="{0}">{1}</a> <button id="refresh" type="button">{2}</button> <button id="reset" class="danger" type="button">{3}</button></div></header>"#,
        w.switch_to, w.switch, w.refresh, w.reset_now
    );

    let _ = write!(
        out,
        r#"<main id="data"><div class="wrap"><table><thead><tr><th class="key" scope="col">{}</th>"#,
        w.key
    );
    for m in &model_names {
        out.push_str(r#"<th scope="col">"#);
        escape(m, &mut out);
        out.push_str("</th>");
    }
    let _ = write!(out, r#"<th scope="col">{}</th>"#, w.total);
    if admin {
        let _ = write!(out, r#"<th scope="col">{}</th>"#, w.actions);
    }
    out.push_str("</tr></thead><tbody>");
    // Keys grouped by their Google project (quotas are per project), the
    // unlabelled last; configuration order within a group.
    let mut order: Vec<&crate::store::snapshot::KeyStats> = s.keys.iter().collect();
    order.sort_by(|a, b| (a.project.is_none(), &a.project).cmp(&(b.project.is_none(), &b.project)));
    let grouped = order.iter().any(|k| k.project.is_some());
    let columns = model_names.len() + 2 + usize::from(admin);
    let mut group: Option<Option<&str>> = None;
    for k in order {
        if grouped && group != Some(k.project.as_deref()) {
            group = Some(k.project.as_deref());
            let n = s.keys.iter().filter(|o| o.project == k.project).count();
            let _ = write!(out, r#"<tr class="project"><th colspan="{columns}" scope="rowgroup">"#);
            match &k.project {
                Some(p) => {
                    out.push_str(w.project);
                    out.push(' ');
                    escape(p, &mut out);
                }
                None => out.push_str(w.no_project),
            }
            let _ = write!(out, " · {n} {}</th></tr>", if n == 1 { w.key_count_one } else { w.key_count_many });
        }
        let row_class = if k.disabled.is_some() { r#" class="disabled""# } else { "" };
        let _ = write!(
            out,
            r#"<tr{row_class}><td class="key"><code>{}</code> <span class="id">{}</span>"#,
            esc(&k.masked),
            esc(k.id.as_str())
        );
        if let Some(d) = &k.disabled {
            let _ = write!(out, r#"<span class="badge b-off" title="{}">{}</span>"#, esc(&d.reason), w.badge_disabled);
        }
        if k.source != crate::store::snapshot::KeySource::Env {
            let _ =
                write!(out, r#"<span class="badge b-src" title="{}">{}</span>"#, w.added_at_run_time, w.badge_runtime);
        }
        if let Some(c) = &k.check {
            let class = if c.status == "works" { "b-ok" } else { "b-day" };
            let _ = write!(
                out,
                r#"<span class="badge {class}" title="{} {}{}">{}</span>"#,
                w.checked,
                UnixMillis(c.at).to_rfc3339(),
                c.reason.as_deref().map(|r| format!(": {}", esc(r))).unwrap_or_default(),
                esc(&c.status)
            );
        }
        if let Some(n) = &k.note {
            let _ = write!(out, r#" <span class="note">{}</span>"#, esc(n));
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
                KeyState::Exhausted { until } => ("exhausted", ("b-day", w.badge_day, until)),
                KeyState::Cooling { until } => ("cooling", ("b-min", w.badge_min, until)),
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
            push_u64(&mut out, badge.2.0);
            out.push_str(r#"" data-reason=""#);
            escape(m.reason.as_deref().unwrap_or(w.no_reason), &mut out);
            out.push_str(r#"">"#);
            push_u64(&mut out, m.requests);
            let _ = write!(out, r#"<span class="badge {}">{}</span></td>"#, badge.0, badge.1);
        }
        let _ = write!(out, "<td>{total}</td>");
        if admin {
            let id = esc(k.id.as_str());
            let (toggle, label) =
                if k.disabled.is_some() { ("enable", w.act_enable) } else { ("disable", w.act_disable) };
            let _ = write!(
                out,
                r#"<td class="actions"><button type="button" data-act="check" data-id="{id}">{}</button> <button type="button" data-act="{toggle}" data-id="{id}">{label}</button> <button type="button" data-act="project" data-id="{id}" data-project="{}">{}</button> <button type="button" class="danger" data-act="remove" data-id="{id}">{}</button></td>"#,
                w.act_check,
                esc(k.project.as_deref().unwrap_or_default()),
                w.act_project,
                w.act_remove
            );
        }
        out.push_str("</tr>");
    }
    let _ = write!(out, r#"</tbody><tfoot><tr><td class="key">{}</td>"#, w.total);
    let mut grand = 0;
    for name in &model_names {
        let t = models[name][0];
        grand += t;
        let _ = write!(out, "<td>{t}</td>");
    }
    let _ = write!(out, "<td>{grand}</td>{}</tr></tfoot></table></div>", if admin { "<td></td>" } else { "" });
    let disabled_list: Vec<_> = s.keys.iter().filter_map(|k| k.disabled.as_ref().map(|d| (k, d))).collect();
    if !disabled_list.is_empty() {
        let _ = write!(out, r#"<h2 style="font-size:15px;margin:16px 0 4px">{}</h2><ul>"#, w.disabled_keys);
        for (k, d) in disabled_list {
            let _ = write!(
                out,
                "<li><code>{}</code> {} {}: {}</li>",
                esc(&k.masked),
                w.since,
                d.since.to_rfc3339(),
                esc(&d.reason)
            );
        }
        out.push_str("</ul>");
    }
    let _ = write!(out, r#"<section id="history"><h2 style="font-size:15px;margin:16px 0 4px">{}</h2>"#, w.history);
    chart(s, 24, w.last_24_hours, w, &mut out);
    chart(s, 7 * 24, w.last_7_days, w, &mut out);
    out.push_str("</section>");
    clients_table(s, admin, w, &mut out);
    let _ = write!(
        out,
        r#"</main><div id="reason" hidden></div><p class="legend"><span class="badge b-day">{}</span> {}</p>"#,
        w.badge_day,
        w.legend.replace("{min}", &format!(r#"<span class="badge b-min">{}</span>"#, w.badge_min))
    );
    if admin {
        out.push_str(w.requests_panel);
        out.push_str(w.admin_panel);
    } else {
        let _ = write!(
            out,
            r#"<form class="admin-login" method="post" action="/stat/login"><label for="admin-key">{}</label> <input id="admin-key" name="key" type="password" autocomplete="current-password"> <button type="submit">{}</button></form>"#,
            w.admin_sign_in, w.sign_in
        );
    }
    out.push_str("<script>var L=");
    out.push_str(w.script);
    out.push_str(";\n");
    out.push_str(SCRIPT);
    out.push_str("</script></body></html>");
    out
}

/// The colour of the tokens line.
const TOKENS_COLOUR: &str = "#b3261e";

/// Colours of the models' bars (the last for every other model).
const PALETTE: [&str; 6] = ["#1a73e8", "#e8710a", "#188038", "#a142f4", "#d01884", "#5f6368"];

/// An inline SVG of calls per hour (bars stacked by model) and tokens per
/// hour (a line on its own scale) over the last `hours` hours: no script,
/// every bar titled with its numbers.
fn chart(s: &Snapshot, hours: u64, title: &str, words: &Words, out: &mut String) {
    let series = s.history.series(Dim::Model, s.now, hours);
    let (w, h, left, right, bottom) = (720.0_f64, 160.0_f64, 44.0_f64, 64.0_f64, 18.0_f64);
    let plot_h = h - bottom - 8.0;
    let n = hours as usize;
    let mut calls = vec![0u64; n];
    let mut tokens = vec![0u64; n];
    for buckets in series.values() {
        for (i, b) in buckets.iter().enumerate() {
            calls[i] += b.calls;
            tokens[i] += crate::wire::usage::quota_tokens(&b.tokens);
        }
    }
    let max_calls = calls.iter().copied().max().unwrap_or(0).max(1);
    let max_tokens = tokens.iter().copied().max().unwrap_or(0).max(1);
    let slot = (w - left - right) / n as f64;
    let _ = write!(
        out,
        r#"<figure class="chart"><figcaption>{title}{colon}{caption}</figcaption><svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="{title}"><line x1="{left}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="currentColor" stroke-opacity=".3"/><text x="{tx}" y="14" font-size="10" text-anchor="end">{max_calls}</text><text x="{tx}" y="{y0}" font-size="10" text-anchor="end">0</text><text x="{tr}" y="14" font-size="10" text-anchor="end" fill="{TOKENS_COLOUR}">{max_tokens} {tok}</text>"#,
        caption = words.chart_caption,
        colon = words.colon,
        tok = words.tok,
        tr = w - 2.0,
        y0 = h - bottom,
        x1 = w - right,
        tx = left - 4.0,
    );
    let first_hour = (crate::store::history::hour_of(s.now) + 1).saturating_sub(hours);
    let mut stacked = vec![0u64; n];
    for (m, (model, buckets)) in series.iter().enumerate() {
        let colour = PALETTE[m.min(PALETTE.len() - 1)];
        for (i, b) in buckets.iter().enumerate().filter(|(_, b)| b.calls > 0) {
            let y_top = plot_h * (stacked[i] + b.calls) as f64 / max_calls as f64;
            let bar = plot_h * b.calls as f64 / max_calls as f64;
            stacked[i] += b.calls;
            let hour = UnixMillis((first_hour + i as u64) * crate::wire::time::HOUR_MS).to_rfc3339();
            let _ = write!(
                out,
                r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} {}: {} {calls}, {} {tokens}</title></rect>"#,
                left + slot * i as f64 + slot * 0.1,
                h - bottom - y_top,
                (slot * 0.8).max(0.5),
                bar.max(0.5),
                esc(model),
                &hour[..13],
                b.calls,
                crate::wire::usage::quota_tokens(&b.tokens),
                calls = words.calls,
                tokens = words.tokens,
            );
        }
    }
    let points: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let x = left + slot * (i as f64 + 0.5);
            format!("{x:.1},{:.1}", h - bottom - plot_h * *t as f64 / max_tokens as f64)
        })
        .collect();
    let _ = write!(
        out,
        r#"<polyline class="tokens" points="{}" fill="none" stroke="{TOKENS_COLOUR}" stroke-width="1.5"/>"#,
        points.join(" ")
    );
    let label = |i: usize| UnixMillis((first_hour + i as u64) * crate::wire::time::HOUR_MS).to_rfc3339();
    let _ = write!(
        out,
        r#"<text x="{left}" y="{h}" font-size="10">{}</text><text x="{:.1}" y="{h}" font-size="10" text-anchor="end">{}</text></svg>"#,
        &label(0)[..13],
        w - right,
        &label(n - 1)[..13],
    );
    out.push_str(r#"<p class="legend">"#);
    for (m, model) in series.keys().enumerate() {
        let colour = PALETTE[m.min(PALETTE.len() - 1)];
        let _ = write!(out, r#"<span class="swatch" style="background:{colour}"></span>{} "#, esc(model));
    }
    out.push_str("</p></figure>");
}

/// Per-client use against quota (a client's tokens: prompt, output and
/// thinking), when there are client keys.
fn clients_table(s: &Snapshot, admin: bool, w: &Words, out: &mut String) {
    if s.clients.is_empty() {
        return;
    }
    let _ = write!(
        out,
        r#"<h2 style="font-size:15px;margin:16px 0 4px">{}</h2><div class="wrap"><table id="clients"><thead><tr><th class="key" scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th>"#,
        w.clients, w.client, w.models, w.requests_today, w.tokens_today, w.requests, w.token_kinds, w.quota_resets
    );
    if admin {
        let _ = write!(out, r#"<th scope="col">{}</th>"#, w.actions);
    }
    out.push_str("</tr></thead><tbody>");
    let against = |out: &mut String, used: u64, limit: Option<u64>| match limit {
        Some(l) => {
            let full = if used >= l { " class=\"over\"" } else { "" };
            let _ = write!(out, "<td{full}>{used} / {l}</td>");
        }
        None => {
            let _ = write!(out, "<td>{used}</td>");
        }
    };
    for v in &s.clients {
        let c = &v.client;
        let models = if c.models.is_empty() { w.all_models.to_owned() } else { esc(&c.models.join(", ")) };
        let _ =
            write!(out, r#"<tr><td class="key">{} <small>{}</small></td><td>{models}</td>"#, esc(&c.name), esc(&c.id));
        against(out, v.today.0, c.daily_requests);
        against(out, v.today.1, c.daily_tokens);
        let (requests, tokens) = v.totals();
        let _ =
            write!(out, "<td>{requests}</td><td>{}</td><td>{}</td>", token_kinds(&tokens), v.resets_at.to_rfc3339());
        if admin {
            let quota = |q: Option<u64>| q.map(|n| n.to_string()).unwrap_or_default();
            let _ = write!(
                out,
                r#"<td class="actions"><button type="button" data-act="client-quota" data-id="{id}" data-requests="{}" data-tokens="{}">{}</button> <button type="button" class="danger" data-act="client-revoke" data-id="{id}">{}</button></td>"#,
                quota(c.daily_requests),
                quota(c.daily_tokens),
                w.act_quotas,
                w.act_revoke,
                id = esc(&c.id),
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    client_keys_table(s, w, out);
}

/// The most key × model × client rows the page lists (the busiest);
/// `/stat.json` has them all.
const MAX_CLIENT_KEY_ROWS: usize = 500;

/// Each client's use per upstream key and model, folded (a `<details>`,
/// which needs no script).
fn client_keys_table(s: &Snapshot, w: &Words, out: &mut String) {
    let mut rows: Vec<(&str, &crate::store::clients::ClientKeyUsage)> =
        s.clients.iter().flat_map(|v| v.by_key.iter().map(move |u| (v.client.name.as_str(), u))).collect();
    if rows.is_empty() {
        return;
    }
    let all = rows.len();
    rows.sort_by(|a, b| {
        b.1.requests.cmp(&a.1.requests).then_with(|| (a.0, &a.1.key, &a.1.model).cmp(&(b.0, &b.1.key, &b.1.model)))
    });
    rows.truncate(MAX_CLIENT_KEY_ROWS);
    let shown = if all > rows.len() { format!("{} {} {} {all}", w.busiest, rows.len(), w.of) } else { all.to_string() };
    let _ = write!(
        out,
        r#"<details id="client-keys"><summary>{} ({shown} {})</summary><div class="wrap"><table><thead><tr><th class="key" scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th></tr></thead><tbody>"#,
        w.per_client_key, w.rows, w.client, w.key, w.model, w.requests, w.token_kinds
    );
    for (name, u) in rows {
        let _ = write!(
            out,
            r#"<tr><td class="key">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(name),
            esc(&u.key),
            esc(&u.model),
            u.requests,
            token_kinds(&u.tokens)
        );
    }
    out.push_str("</tbody></table></div></details>");
}

/// A usage's tokens as the tables show them: prompt / output / cached /
/// thinking.
fn token_kinds(t: &crate::wire::usage::TokenUsage) -> String {
    format!("{} / {} / {} / {}", t.prompt, t.output, t.cached, t.thinking)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pool::KeyPool;
    use crate::test_support::fake_keys;
    use crate::wire::keystore::{Outcome, RateLimit, RateLimitScope};

    fn pool(n: usize) -> KeyPool {
        KeyPool::new(fake_keys("PAGEkey", n))
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
        let html = render(&p.snapshot(now), false, Lang::En);
        assert!(html.contains("AIza…0000"));
        assert!(!html.contains("AIzaSyPAGEkey"), "a secret in the page");
        assert!(html.contains(r#"class="mark exhausted""#) && html.contains(r#"data-reason="daily quota""#));
        assert!(html.contains(r#"class="mark cooling""#) && html.contains("minute quota"));
        assert!(html.contains(r#"<tr class="disabled">"#) && html.contains("API key not valid"));
        assert!(html.contains(">2<span class=\"badge b-day\">"), "the exhausted cell counts 2 calls");
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing fetched from elsewhere");
    }

    #[test]
    fn the_admins_page_groups_keys_by_project_and_offers_the_actions() {
        let mut p = pool(3);
        let now = UnixMillis(1_800_000_000_000);
        let ids: Vec<_> = p.ids().cloned().collect();
        p.label(&ids[2], Some(Some("<team>".into())), None);
        p.report(&ids[0], "gemini-2.5-flash", &Outcome::Success, now);
        let viewer = render(&p.snapshot(now), false, Lang::En);
        assert!(!viewer.contains("data-act=") && viewer.contains(r#"action="/stat/login""#));
        let admin = render(&p.snapshot(now), true, Lang::En);
        assert!(admin.contains(r#"data-admin="1""#) && admin.contains(r#"id="add-keys""#));
        assert_eq!(admin.matches(r#"data-act="remove""#).count(), 3);
        let team = admin.find("project &lt;team&gt;").expect("the project's group, escaped");
        let none = admin.find("no project").expect("the unlabelled group");
        assert!(team < none, "labelled projects first");
        assert_eq!(admin.matches("<script>").count(), 1);
    }

    #[test]
    fn the_page_speaks_chinese_when_asked_with_the_same_elements() {
        let mut p = pool(3);
        let now = UnixMillis(1_800_000_000_000);
        let ids: Vec<_> = p.ids().cloned().collect();
        p.label(&ids[0], Some(Some("team".into())), None);
        p.report(&ids[0], "gemini-2.5-flash", &Outcome::Success, now);
        let limit = RateLimit { scope: RateLimitScope::PerDay, retry_after_ms: None, reason: "daily quota".into() };
        p.report(&ids[1], "gemini-2.5-flash", &Outcome::RateLimited(limit), now);
        p.report(&ids[2], "gemini-2.5-flash", &Outcome::KeyRejected { reason: "API key not valid".into() }, now);
        let snapshot = p.snapshot(now);
        for admin in [false, true] {
            let (en, zh) = (render(&snapshot, admin, Lang::En), render(&snapshot, admin, Lang::Zh));
            assert!(zh.starts_with(r#"<!doctype html><html lang="zh-CN">"#) && en.contains(r#"<html lang="en">"#));
            for label in [
                "刷新",
                "立即重置",
                "已停用的密钥",
                "每小时调用次数与 token 数",
                "最近 24 小时",
                "最近 7 天",
                "项目 team",
            ] {
                assert!(zh.contains(label), "{label} missing from the Chinese page");
            }
            // No English label is left (Google's reasons and names stay as they are).
            for english in [
                "Refresh",
                "Reset now",
                "Disabled keys",
                "Calls and tokens per hour",
                "Last 24 hours",
                ">total<",
                "no project",
            ] {
                assert!(!zh.contains(english), "{english} left on the Chinese page");
            }
            assert!(zh.contains(r#"href="?lang=en""#) && en.contains(r#"href="?lang=zh-CN""#), "the switch");
            let ids = |html: &str| -> Vec<String> {
                html.split(" id=\"").skip(1).filter_map(|s| s.split('"').next()).map(str::to_owned).collect()
            };
            assert_eq!(ids(&en), ids(&zh), "both pages hold the same elements");
        }
        let admin = render(&snapshot, true, Lang::Zh);
        for label in ["管理密钥", "最近的请求", "筛选", "创建客户端密钥", "保存别名"] {
            assert!(admin.contains(label), "{label} missing from the admin's Chinese page");
        }
        assert!(admin.contains(r#"var L={"now":"现在""#), "the script's messages in Chinese");
    }

    #[test]
    fn charts_show_calls_per_hour_by_model_with_their_tokens() {
        let mut p = pool(2);
        let now = UnixMillis(1_800_000_000_000);
        let id = p.ids().next().cloned().expect("key");
        let usage = crate::wire::usage::TokenUsage { prompt: 100, output: 50, cached: 7, thinking: 10 };
        for (hours_ago, model, n) in [(0, "gemini-2.5-flash", 3), (2, "gemini-2.5-pro", 2), (30, "gemini-2.5-flash", 1)]
        {
            for _ in 0..n {
                let r = crate::wire::keystore::Report {
                    key: id.clone(),
                    model: model.into(),
                    outcome: Outcome::Success,
                    usage: Some(usage),
                    client: None,
                    owned: Vec::new(),
                    deleted: Vec::new(),
                    listed: false,
                    usage_of: None,
                };
                p.apply(&r, UnixMillis(now.0 - hours_ago * crate::wire::time::HOUR_MS));
            }
        }
        let html = render(&p.snapshot(now), false, Lang::En);
        let (day, week) = html.split_once("Last 7 days").expect("two charts");
        let day = day.split_once("Last 24 hours").expect("the day's chart").1;
        assert_eq!(day.matches(r#"class="bar""#).count(), 2, "two hours with calls in the last day");
        assert_eq!(week.matches(r#"class="bar""#).count(), 3, "three in the week");
        let hour = now.to_rfc3339();
        assert!(day.contains(&format!("gemini-2.5-flash {}: 3 calls, 480 tokens", &hour[..13])), "{day}");
        assert!(day.contains(r#"class="tokens""#) && day.contains("480 tok"));
        assert_eq!(html.matches("<script>").count(), 1, "the charts need no script");
    }

    #[test]
    fn clients_show_their_use_per_key_and_model_folded() {
        let mut p = pool(2);
        let now = UnixMillis(1_800_000_000_000);
        let ids: Vec<_> = p.ids().cloned().collect();
        let settings = crate::wire::keystore::ClientSettings { name: Some("<team> bot".into()), ..Default::default() };
        let c = p.clients_mut().create("gpc-page-secret", settings, now).expect("client");
        for (key, model, n) in
            [(&ids[0], "gemini-2.5-flash", 3), (&ids[1], "gemini-2.5-flash", 1), (&ids[0], "gemini-2.5-pro", 2)]
        {
            for _ in 0..n {
                let usage = crate::wire::usage::TokenUsage { prompt: 10, output: 5, cached: 0, thinking: 1 };
                let r = crate::wire::keystore::Report {
                    key: key.clone(),
                    model: model.into(),
                    outcome: Outcome::Success,
                    usage: Some(usage),
                    client: Some(c.id.clone()),
                    owned: Vec::new(),
                    deleted: Vec::new(),
                    listed: false,
                    usage_of: None,
                };
                p.apply(&r, now);
            }
        }
        let html = render(&p.snapshot(now), false, Lang::En);
        let folded = html.split_once(r#"<details id="client-keys">"#).expect("the folded table").1;
        let folded = folded.split_once("</details>").expect("closed").0;
        assert!(folded.contains("(3 rows)"), "{folded}");
        let first = format!(
            r#"<tr><td class="key">&lt;team&gt; bot</td><td>{}</td><td>gemini-2.5-flash</td><td>3</td><td>30 / 15 / 0 / 3</td></tr>"#,
            ids[0]
        );
        assert!(folded.contains(&first), "the busiest row first: {folded}");
        assert!(folded.find(&first) < folded.find("gemini-2.5-pro"));
        assert!(!html.contains("gpc-page-secret"));
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
        let html = render(&p.snapshot(now), false, Lang::En);
        assert!(!html.contains("<script>alert(1)"));
        assert!(!html.contains("m<script>x"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert_eq!(html.matches("<script>").count(), 1, "only the page's own script");
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
        // -p gemini-proxy-core --features test-support --example render_stat`.
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
        let html = render(&p.snapshot(now), false, Lang::En);
        assert_eq!(html.matches("<tr").count(), 1 + 200 + 1);
    }
}
