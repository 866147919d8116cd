//! The `/stat` login: the form, its answer (a session cookie), and the
//! answer to a reset.

use crate::config::Config;
use crate::request::auth::percent_decode;
use crate::request::session;
use crate::wire::http::{Lang, Response};

/// The `/stat` page's style sheet, which the login page shares.
const STYLE: &str = include_str!("../view/page/stat.css");

/// Why the sign-in form is shown again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The key given is not this proxy's.
    WrongKey,
    /// Client keys exist: the statistics need the admin key.
    NeedAdminKey,
    /// Client keys exist and no admin key is set.
    SetAdminKey,
}

impl Why {
    /// In `lang`.
    pub fn text(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Self::WrongKey, Lang::En) => "That is not this proxy's key.",
            (Self::WrongKey, Lang::Zh) => "这不是本代理的密钥。",
            (Self::NeedAdminKey, Lang::En) => "client keys exist, so the statistics need the admin key (ADMIN_API_KEY)",
            (Self::NeedAdminKey, Lang::Zh) => "已有客户端密钥，因此统计页需要管理员密钥（ADMIN_API_KEY）",
            (Self::SetAdminKey, Lang::En) => {
                "client keys exist, so the statistics need the admin key: set ADMIN_API_KEY"
            }
            (Self::SetAdminKey, Lang::Zh) => "已有客户端密钥，因此统计页需要管理员密钥：请设置 ADMIN_API_KEY",
        }
    }
}

/// The page shown without valid credentials, in `lang`: a login form
/// posting the proxy key to `/stat/login`, with the proxy's own words on
/// why (text of its own, never a caller's, so it needs no escaping).
pub fn page(why: Option<Why>, lang: Lang) -> String {
    let (title, label, button) = match lang {
        Lang::En => ("gemini-proxy · sign in", "Proxy key (PROXY_API_KEY)", "Sign in"),
        Lang::Zh => ("gemini-proxy · 登录", "代理密钥（PROXY_API_KEY）", "登录"),
    };
    let mut out = format!(
        r#"<!doctype html><html lang="{}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer"><title>{title}</title><style>"#,
        lang.tag()
    );
    out.push_str(STYLE);
    out.push_str(r#"</style></head><body><form class="login" method="post" action="/stat/login"><h1>gemini-proxy</h1><label for="key">"#);
    out.push_str(label);
    out.push_str(
        r#"</label><input id="key" name="key" type="password" autocomplete="current-password" required autofocus>"#,
    );
    if let Some(why) = why {
        out.push_str(r#"<p class="err">"#);
        out.push_str(why.text(lang));
        out.push_str("</p>");
    }
    out.push_str(r#"<button type="submit">"#);
    out.push_str(button);
    out.push_str("</button></form></body></html>");
    out
}

/// Answers the login form (`key=…`, form-encoded): a session (an admin's,
/// for `ADMIN_API_KEY`) and a redirect to `/stat`, or the login page again.
pub fn login(cfg: &Config, headers: &[(String, Vec<u8>)], body: &[u8]) -> Response {
    let form = String::from_utf8_lossy(body);
    let given = form
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "key")
        .map(|(_, v)| percent_decode(v))
        .unwrap_or_default();
    let https = session::is_https(headers);
    match (&cfg.proxy_key, &cfg.admin_key) {
        (_, Some(a)) if a.matches(&given) => {
            Response::redirect("/stat").with_header("set-cookie", session::set_admin_cookie(a, https))
        }
        (Some(k), _) if k.matches(&given) => {
            Response::redirect("/stat").with_header("set-cookie", session::set_cookie(k, https))
        }
        (None, None) => Response::redirect("/stat"),
        _ => Response::html(401, page(Some(Why::WrongKey), session::lang("", headers))),
    }
}

/// The answer to a reset.
pub fn reset_done() -> Response {
    Response::json(200, r#"{"reset":true}"#.to_owned())
}
