//! Every word of the `/stat` page (and its sign-in form) in each language
//! it speaks: the page's labels here, its script's messages as a JSON
//! table the script reads (`L`).

use crate::wire::http::Lang;

/// The page's labels in one language.
#[derive(Debug)]
pub struct Words {
    pub(crate) lang: &'static str,
    pub(crate) title: &'static str,
    pub(crate) heading: &'static str,
    pub(crate) keys: &'static str,
    pub(crate) disabled: &'static str,
    pub(crate) exhausted: &'static str,
    pub(crate) cooling: &'static str,
    pub(crate) reset_at: &'static str,
    pub(crate) next_cooling: &'static str,
    pub(crate) rendered: &'static str,
    pub(crate) in_: &'static str,
    pub(crate) refresh: &'static str,
    pub(crate) reset_now: &'static str,
    pub(crate) switch: &'static str,
    pub(crate) switch_to: &'static str,
    pub(crate) key: &'static str,
    pub(crate) total: &'static str,
    pub(crate) actions: &'static str,
    pub(crate) project: &'static str,
    pub(crate) no_project: &'static str,
    pub(crate) key_count_one: &'static str,
    pub(crate) key_count_many: &'static str,
    pub(crate) badge_disabled: &'static str,
    pub(crate) badge_runtime: &'static str,
    pub(crate) added_at_run_time: &'static str,
    pub(crate) checked: &'static str,
    pub(crate) no_reason: &'static str,
    pub(crate) act_check: &'static str,
    pub(crate) act_enable: &'static str,
    pub(crate) act_disable: &'static str,
    pub(crate) act_project: &'static str,
    pub(crate) act_remove: &'static str,
    pub(crate) disabled_keys: &'static str,
    pub(crate) since: &'static str,
    pub(crate) history: &'static str,
    pub(crate) last_24_hours: &'static str,
    pub(crate) last_7_days: &'static str,
    pub(crate) chart_caption: &'static str,
    pub(crate) colon: &'static str,
    pub(crate) calls: &'static str,
    pub(crate) tokens: &'static str,
    pub(crate) tok: &'static str,
    pub(crate) badge_day: &'static str,
    pub(crate) badge_min: &'static str,
    pub(crate) legend: &'static str,
    pub(crate) admin_sign_in: &'static str,
    pub(crate) sign_in: &'static str,
    pub(crate) clients: &'static str,
    pub(crate) client: &'static str,
    pub(crate) models: &'static str,
    pub(crate) requests_today: &'static str,
    pub(crate) tokens_today: &'static str,
    pub(crate) requests: &'static str,
    pub(crate) token_kinds: &'static str,
    pub(crate) quota_resets: &'static str,
    pub(crate) all_models: &'static str,
    pub(crate) act_quotas: &'static str,
    pub(crate) act_revoke: &'static str,
    pub(crate) per_client_key: &'static str,
    pub(crate) rows: &'static str,
    pub(crate) busiest: &'static str,
    pub(crate) of: &'static str,
    pub(crate) model: &'static str,
    /// The admin's panel (HTML, its labels in this language).
    pub(crate) admin_panel: &'static str,
    /// The request log's panel (HTML).
    pub(crate) requests_panel: &'static str,
    /// The script's messages, a JSON object.
    pub(crate) script: &'static str,
}

impl Words {
    /// The words of `lang`.
    pub fn of(lang: Lang) -> &'static Self {
        match lang {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }
}

/// English.
pub static EN: Words = Words {
    lang: "en",
    title: "gemini-proxy · keys",
    heading: "gemini-proxy keys",
    keys: "keys",
    disabled: "disabled",
    exhausted: "exhausted",
    cooling: "cooling",
    reset_at: "daily quotas reset",
    next_cooling: "next cooling key frees up",
    rendered: "rendered",
    in_: "in ",
    refresh: "Refresh",
    reset_now: "Reset now",
    switch: "中文",
    switch_to: "zh-CN",
    key: "key",
    total: "total",
    actions: "actions",
    project: "project",
    no_project: "no project",
    key_count_one: "key",
    key_count_many: "keys",
    badge_disabled: "disabled",
    badge_runtime: "runtime",
    added_at_run_time: "added at run time",
    checked: "checked",
    no_reason: "no reason given",
    act_check: "check",
    act_enable: "enable",
    act_disable: "disable",
    act_project: "project…",
    act_remove: "remove",
    disabled_keys: "Disabled keys",
    since: "since",
    history: "Calls and tokens per hour",
    last_24_hours: "Last 24 hours",
    last_7_days: "Last 7 days",
    colon: ": ",
    chart_caption: "calls per hour by model (bars, left axis), tokens per hour (line, right axis)",
    calls: "calls",
    tokens: "tokens",
    tok: "tok",
    badge_day: "day",
    badge_min: "min",
    legend: "exhausted until the daily reset · {min} cooling after a per-minute limit · click a marked cell for Google's reason · cells count today's calls",
    admin_sign_in: "Admin (ADMIN_API_KEY)",
    sign_in: "Sign in",
    clients: "Clients",
    client: "client",
    models: "models",
    requests_today: "requests today",
    tokens_today: "tokens today",
    requests: "requests",
    token_kinds: "prompt / output / cached / thinking tokens",
    quota_resets: "quota resets",
    all_models: "all",
    act_quotas: "quotas…",
    act_revoke: "revoke",
    per_client_key: "Per client × key × model",
    rows: "rows",
    busiest: "the busiest",
    of: "of",
    model: "model",
    admin_panel: r#"<section id="admin"><h2>Manage keys</h2><form id="add-keys"><label for="new-keys">Add keys (paste them, any separator)</label><textarea id="new-keys" name="keys" rows="4" spellcheck="false" autocomplete="off"></textarea><label for="new-project">Google project (optional)</label><input id="new-project" name="project" autocomplete="off"><div><button type="submit">Add keys</button> <button type="button" id="check-keys">Check keys</button></div></form><form id="add-client"><label for="client-name">New client key: name</label><input id="client-name" name="name" autocomplete="off" required><label for="client-models">Models it may use (comma-separated; empty: all)</label><input id="client-models" name="models" autocomplete="off"><label for="client-requests">Requests a day (empty: no quota)</label><input id="client-requests" name="daily_requests" inputmode="numeric" autocomplete="off"><label for="client-tokens">Tokens a day (empty: no quota)</label><input id="client-tokens" name="daily_tokens" inputmode="numeric" autocomplete="off"><div><button type="submit">Create client key</button></div></form><form id="aliases"><label for="alias-table">Model aliases: client model = Gemini model, one a line (<code>*</code> matches any run of characters); consulted before MODEL_ALIASES and the defaults below</label><textarea id="alias-table" name="aliases" rows="4" spellcheck="false" autocomplete="off" placeholder="claude-opus-*=gemini-2.5-pro"></textarea><div><button type="submit">Save aliases</button></div><details><summary>MODEL_ALIASES and the default table</summary><pre id="alias-layers"></pre></details></form><form id="proxies"><label for="proxy-project">Outbound proxy of a Google project (host-runner): its calls leave through it. Project</label><input id="proxy-project" name="project" list="proxy-projects" autocomplete="off" required><datalist id="proxy-projects"></datalist><label for="proxy-url">Proxy URL: http://, https://, socks5:// or socks5h://, with user:password@ if it asks (empty: none)</label><input id="proxy-url" name="proxy" autocomplete="off" spellcheck="false" placeholder="socks5h://user:password@10.0.0.2:1080"><div><button type="submit">Set the proxy</button></div><pre id="proxy-list"></pre></form><pre id="admin-result" hidden></pre></section>"#,
    requests_panel: r#"<section id="requests"><h2>Recent requests</h2><form id="req-filter"><label>Status <select name="status"><option value="">all</option><option value="failed">failed</option><option>2xx</option><option>4xx</option><option>5xx</option></select></label> <label>Model <input name="model" autocomplete="off"></label> <label>Key <input name="key" autocomplete="off" placeholder="key id"></label> <label>Client <input name="client" autocomplete="off" placeholder="name or id"></label> <button type="submit">Filter</button></form><div class="wrap"><table id="req-table"><thead><tr><th class="key">time</th><th>status</th><th>API</th><th>model</th><th>client</th><th>attempts</th><th>first byte</th><th>total</th><th>tokens</th><th>error</th></tr></thead><tbody></tbody></table></div><p class="note" id="req-empty" hidden>No request matches.</p><button type="button" id="req-more" hidden>Older requests</button><pre id="req-detail" hidden></pre></section>"#,
    script: r#"{"now":"now","in":"in ","day_out":"exhausted for the day","cooling_down":"cooling down","until":"until","reset_confirm":"Clear every mark and counter, and re-enable disabled keys?","added":"added","already":"already present","restored":"restored","in_pool":"keys in the pool","more_to_check":"more to check: press Check keys again","shown_once":"its key is","copy_now":"Copy it now: it is shown this once.","revoked":"revoked","removed":"removed","disabled":"disabled","enabled":"enabled","project":"project","failed":"failed","quota_bad":"a quota is a whole number, or empty for none: ","why_disable":"Why disable this key? (optional)","key_project":"The key's Google project (empty: none)","revoke_confirm":"Revoke this client key? Its requests are refused from now on.","requests_day":"Requests a day (empty: no quota)","tokens_day":"Tokens a day (empty: no quota)","remove_confirm":"Remove this key from the pool?","Add":"Add","Check":"Check","Client":"Client","Disable":"Disable","Enable":"Enable","Project":"Project","Revoke":"Revoke","Quotas":"Quotas","Remove":"Remove","Aliases":"Aliases","aliases_set":"set; they hold from the next request on","none":"(none)","defaults":"defaults","no_answer":"no answer","streamed":"streamed","client":"client","model":"model","asked_for":"asked for","attempt":"attempt","key":"key","error":"error","tokens":"tokens","first_byte":"first byte","total":"total","request":"request","no_status":"none","Proxy":"Proxy","proxy_set":"set; the project's next calls leave through it","keys_word":"keys","direct":"direct"}"#,
};

/// Simplified Chinese.
pub static ZH: Words = Words {
    lang: "zh-CN",
    title: "gemini-proxy · 密钥",
    heading: "gemini-proxy 密钥",
    keys: "个密钥",
    disabled: "个已停用",
    exhausted: "个当日用尽",
    cooling: "个冷却中",
    reset_at: "每日配额重置于",
    next_cooling: "下一个冷却中的密钥恢复于",
    rendered: "生成于",
    in_: "",
    refresh: "刷新",
    reset_now: "立即重置",
    switch: "English",
    switch_to: "en",
    key: "密钥",
    total: "合计",
    actions: "操作",
    project: "项目",
    no_project: "无项目",
    key_count_one: "个密钥",
    key_count_many: "个密钥",
    badge_disabled: "已停用",
    badge_runtime: "运行时添加",
    added_at_run_time: "运行时添加的密钥",
    checked: "检查于",
    no_reason: "未给出原因",
    act_check: "检查",
    act_enable: "启用",
    act_disable: "停用",
    act_project: "项目…",
    act_remove: "移除",
    disabled_keys: "已停用的密钥",
    since: "停用于",
    history: "每小时调用次数与 token 数",
    last_24_hours: "最近 24 小时",
    last_7_days: "最近 7 天",
    colon: "：",
    chart_caption: "按模型统计的每小时调用次数（柱，左轴），每小时 token 数（线，右轴）",
    calls: "次调用",
    tokens: "个 token",
    tok: "token",
    badge_day: "日",
    badge_min: "分",
    legend: "当日用尽，直到每日重置 · {min} 触发每分钟限额后冷却中 · 点击带标记的单元格查看 Google 给出的原因 · 单元格为今日调用次数",
    admin_sign_in: "管理员（ADMIN_API_KEY）",
    sign_in: "登录",
    clients: "客户端",
    client: "客户端",
    models: "模型",
    requests_today: "今日请求",
    tokens_today: "今日 token",
    requests: "请求",
    token_kinds: "输入 / 输出 / 缓存 / 思考 token",
    quota_resets: "配额重置于",
    all_models: "全部",
    act_quotas: "配额…",
    act_revoke: "吊销",
    per_client_key: "按客户端 × 密钥 × 模型",
    rows: "行",
    busiest: "最繁忙的",
    of: "/",
    model: "模型",
    admin_panel: r#"<section id="admin"><h2>管理密钥</h2><form id="add-keys"><label for="new-keys">添加密钥（直接粘贴，任意分隔符）</label><textarea id="new-keys" name="keys" rows="4" spellcheck="false" autocomplete="off"></textarea><label for="new-project">Google 项目（可选）</label><input id="new-project" name="project" autocomplete="off"><div><button type="submit">添加密钥</button> <button type="button" id="check-keys">检查密钥</button></div></form><form id="add-client"><label for="client-name">新客户端密钥：名称</label><input id="client-name" name="name" autocomplete="off" required><label for="client-models">可用的模型（逗号分隔；留空：全部）</label><input id="client-models" name="models" autocomplete="off"><label for="client-requests">每日请求数（留空：不限）</label><input id="client-requests" name="daily_requests" inputmode="numeric" autocomplete="off"><label for="client-tokens">每日 token 数（留空：不限）</label><input id="client-tokens" name="daily_tokens" inputmode="numeric" autocomplete="off"><div><button type="submit">创建客户端密钥</button></div></form><form id="aliases"><label for="alias-table">模型别名：客户端模型 = Gemini 模型，每行一条（<code>*</code> 匹配任意字符串）；先于 MODEL_ALIASES 和下面的默认表生效</label><textarea id="alias-table" name="aliases" rows="4" spellcheck="false" autocomplete="off" placeholder="claude-opus-*=gemini-2.5-pro"></textarea><div><button type="submit">保存别名</button></div><details><summary>MODEL_ALIASES 与默认表</summary><pre id="alias-layers"></pre></details></form><form id="proxies"><label for="proxy-project">Google 项目的出站代理（host-runner）：该项目的调用经由它发出。项目</label><input id="proxy-project" name="project" list="proxy-projects" autocomplete="off" required><datalist id="proxy-projects"></datalist><label for="proxy-url">代理 URL：http://、https://、socks5:// 或 socks5h://，需要认证时带上 user:password@（留空：不用代理）</label><input id="proxy-url" name="proxy" autocomplete="off" spellcheck="false" placeholder="socks5h://user:password@10.0.0.2:1080"><div><button type="submit">设置代理</button></div><pre id="proxy-list"></pre></form><pre id="admin-result" hidden></pre></section>"#,
    requests_panel: r#"<section id="requests"><h2>最近的请求</h2><form id="req-filter"><label>状态 <select name="status"><option value="">全部</option><option value="failed">失败</option><option>2xx</option><option>4xx</option><option>5xx</option></select></label> <label>模型 <input name="model" autocomplete="off"></label> <label>密钥 <input name="key" autocomplete="off" placeholder="密钥 id"></label> <label>客户端 <input name="client" autocomplete="off" placeholder="名称或 id"></label> <button type="submit">筛选</button></form><div class="wrap"><table id="req-table"><thead><tr><th class="key">时间</th><th>状态</th><th>API</th><th>模型</th><th>客户端</th><th>尝试</th><th>首字节</th><th>总耗时</th><th>token</th><th>错误</th></tr></thead><tbody></tbody></table></div><p class="note" id="req-empty" hidden>没有匹配的请求。</p><button type="button" id="req-more" hidden>更早的请求</button><pre id="req-detail" hidden></pre></section>"#,
    script: r#"{"now":"现在","in":"","day_out":"当日用尽","cooling_down":"冷却中","until":"直到","reset_confirm":"清除所有标记和计数，并重新启用被停用的密钥？","added":"个已添加","already":"个已存在","restored":"个已恢复","in_pool":"个密钥在池中","more_to_check":"个待检查：请再次点击「检查密钥」","shown_once":"其密钥为","copy_now":"请立即复制：它只显示这一次。","revoked":"已吊销","removed":"已移除","disabled":"已停用","enabled":"已启用","project":"项目","failed":"失败","quota_bad":"配额须为整数，或留空表示不限：","why_disable":"为什么停用这个密钥？（可选）","key_project":"该密钥的 Google 项目（留空：无）","revoke_confirm":"吊销这个客户端密钥？此后它的请求都会被拒绝。","requests_day":"每日请求数（留空：不限）","tokens_day":"每日 token 数（留空：不限）","remove_confirm":"从密钥池中移除这个密钥？","Add":"添加","Check":"检查","Client":"客户端","Disable":"停用","Enable":"启用","Project":"项目","Revoke":"吊销","Quotas":"配额","Remove":"移除","Aliases":"别名","aliases_set":"条已设置；从下一个请求起生效","none":"（无）","defaults":"默认","no_answer":"无应答","streamed":"流式","client":"客户端","model":"模型","asked_for":"请求的是","attempt":"尝试","key":"密钥","error":"错误","tokens":"token","first_byte":"首字节","total":"总耗时","request":"请求","no_status":"无","Proxy":"代理","proxy_set":"已设置；该项目此后的调用经由它发出","keys_word":"个密钥","direct":"直连"}"#,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_scripts_tables_hold_the_same_messages() {
        let keys = |w: &Words| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_str(w.script).expect("the script's table is JSON");
            let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&EN), keys(&ZH));
    }

    #[test]
    fn both_panels_hold_the_same_elements() {
        let ids = |html: &str| -> Vec<String> {
            html.split("id=\"").skip(1).filter_map(|s| s.split('"').next()).map(str::to_owned).collect()
        };
        assert_eq!(ids(EN.admin_panel), ids(ZH.admin_panel));
        assert_eq!(ids(EN.requests_panel), ids(ZH.requests_panel));
    }
}
