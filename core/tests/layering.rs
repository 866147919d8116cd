//! Core's layering, held by a test: every `crate::…` path in `src/**`
//! (tests excluded) points down the layers of `lib.rs`'s table, and no
//! module imports another that imports it back, directly or round a loop.
//!
//! The rule is by folder: `wire` imports nothing of core; `config` and `cron`
//! only `wire`; `google` only `wire`; `request` `wire`, `config` and
//! `google`; `translate` the same; `exchange` those, `request` and
//! `translate`; `store` only `wire`; `view`
//! `wire` and `store`. So the request side (`request`, `exchange`) and the
//! key store (`store`, `view`) meet only in `wire`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import (besides itself).
const RULE: &[(&str, &[&str])] = &[
    ("wire", &[]),
    ("config", &["wire"]),
    ("cron", &["wire"]),
    ("google", &["wire"]),
    ("request", &["wire", "config", "google"]),
    ("translate", &["wire", "config", "google", "request"]),
    ("exchange", &["wire", "config", "google", "request", "translate"]),
    ("live", &["wire", "config", "google", "request", "exchange"]),
    ("store", &["wire"]),
    ("view", &["wire", "store"]),
];

/// Files the rule does not cover: the crate root (its re-exports) and the
/// test scaffolding, which may reach anywhere.
const EXEMPT: &[&str] = &["", "test_support"];

#[test]
fn imports_point_down_the_layers() {
    let modules = read_modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(modules.len() > 30, "read {} modules: is this core's src?", modules.len());
    let wrong = upward_imports(&modules);
    assert!(wrong.is_empty(), "imports that point the wrong way:\n{}", wrong.join("\n"));
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let modules = read_modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let cycles = cycles(&modules);
    assert!(cycles.is_empty(), "modules that import each other: {cycles:?}");
}

#[test]
fn the_checks_see_an_upward_import_and_a_cycle() {
    let module = |src: &str| parse(src);
    let mut modules = BTreeMap::new();
    modules.insert("wire::http".to_owned(), module("use crate::wire::time::UnixMillis;\n"));
    modules.insert("wire::time".to_owned(), module("use crate::{store::pool::KeyPool, wire::http};\n"));
    modules.insert("store::pool".to_owned(), module("fn f() { crate::request::route::route(); }\n"));
    modules.insert("request::route".to_owned(), module("use crate::wire::http::Dialect;\n"));
    modules.insert(
        "exchange".to_owned(),
        module("use crate::request::route;\n#[cfg(test)]\nmod tests {\n    use crate::store::pool::KeyPool;\n}\n"),
    );
    assert_eq!(test_modules("#[cfg(test)]\nmod tests;\n#[cfg(test)]\nmod inline {}\n"), ["tests"]);
    // A comment or a string that names a path is not an import.
    modules.insert("google::names".to_owned(), module("// crate::store::pool\nconst S: &str = \"crate::store\";\n"));
    let wrong = upward_imports(&modules);
    assert_eq!(wrong.len(), 2, "{wrong:?}");
    assert!(wrong[0].starts_with("store::pool imports crate::request::route"), "{wrong:?}");
    assert!(wrong[1].starts_with("wire::time imports crate::store::pool"), "{wrong:?}");
    // wire::time → store::pool → request::route → wire::http → wire::time.
    let loop_of_four = ["request::route", "store::pool", "wire::http", "wire::time"].map(String::from).to_vec();
    assert_eq!(cycles(&modules), vec![loop_of_four]);
}

/// Each module of `src` (by path, `a::b`; the crate root is `""`) and the
/// `crate::` paths its code (not its tests) names.
/// Modules that are tests (declared `#[cfg(test)] mod name;` in a file of
/// their own) are left out, as test modules inside a file are.
fn read_modules(src: &Path) -> BTreeMap<String, Vec<String>> {
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut modules = BTreeMap::new();
    let mut tests = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src").with_extension("");
        let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
            parts.pop();
        }
        let module = parts.join("::");
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for name in test_modules(&code_only(&text)) {
            tests.insert(if module.is_empty() { name } else { format!("{module}::{name}") });
        }
        modules.insert(module, parse(&text));
    }
    modules.retain(|module, _| !tests.iter().any(|t| module == t || module.starts_with(&format!("{t}::"))));
    modules
}

/// The names of the modules a file declares, for tests only, in files of
/// their own (`#[cfg(test)] mod name;`).
fn test_modules(code: &str) -> Vec<String> {
    code.split("#[cfg(test)]")
        .skip(1)
        .filter_map(|after| {
            let after = after.trim_start();
            let after = after.strip_prefix("pub(crate) ").or_else(|| after.strip_prefix("pub ")).unwrap_or(after);
            let name = after.strip_prefix("mod ")?.split(';').next()?.trim();
            name.chars().all(|c| c.is_alphanumeric() || c == '_').then(|| name.to_owned())
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `crate::` paths a file's code names, groups flattened
/// (`crate::{a::B, c::{d, e}}` gives `a::B`, `c::d`, `c::e`), with comments,
/// strings and `#[cfg(test)]` modules left out.
fn parse(text: &str) -> Vec<String> {
    let code = without_tests(&code_only(text));
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let (tree, used) = path_tree(rest);
        rest = &rest[used..];
        flatten(&tree, "", &mut paths);
    }
    paths
}

/// The text with comments blanked and string and char literals emptied.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
                out.push(' ');
                i = end;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#')) && !prev_is_ident(b, i) => {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let body = i + 2 + hashes;
                i = text[body..].find(&close).map_or(b.len(), |e| body + e + close.len());
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{1F600}'), or a lifetime ('a).
                let mut chars = text[i + 1..].char_indices();
                let end = match chars.next() {
                    Some((_, '\\')) => text[i + 2..].find('\'').map(|n| i + 2 + n + 1),
                    Some((_, c)) if text[i + 1 + c.len_utf8()..].starts_with('\'') => Some(i + 2 + c.len_utf8()),
                    _ => None,
                };
                match end {
                    Some(end) => {
                        out.push_str("' '");
                        i = end;
                    }
                    None => {
                        out.push('\'');
                        i += 1;
                    }
                }
            }
            _ => {
                let c = text[i..].chars().next().expect("in bounds");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// The code with every `#[cfg(test)] mod … { … }` taken out.
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let is_mod = after.starts_with("mod ") || after.starts_with("pub mod ") || after.starts_with("pub(crate) mod ");
        let Some(open) = after.find('{').filter(|_| is_mod) else {
            out.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        };
        let mut depth = 0usize;
        let mut end = after.len();
        for (n, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + n + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The path (or `use` tree) at the start of `s`, and how much of `s` it
/// took: `a::b::{c, d::e}` stops at the first character that cannot
/// continue it.
fn path_tree(s: &str) -> (String, usize) {
    let mut depth = 0usize;
    for (n, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return (s[..n].to_owned(), n),
            '}' => depth -= 1,
            c if c.is_alphanumeric() || c == '_' || c == ':' || c == '*' => {}
            ',' | ' ' | '\n' | '\t' | '\r' if depth > 0 => {}
            _ if depth == 0 => return (s[..n].to_owned(), n),
            _ => {}
        }
    }
    (s.to_owned(), s.len())
}

fn flatten(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim().trim_end_matches("::");
    let join = |p: &str| if prefix.is_empty() { p.to_owned() } else { format!("{prefix}::{p}") };
    let Some(open) = tree.find('{') else {
        if let Some(path) = tree.split_whitespace().next().filter(|p| !p.is_empty()) {
            out.push(join(path.trim_end_matches("::self")).replace("::self", ""));
        }
        return;
    };
    let head = join(tree[..open].trim_end_matches("::"));
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start) = (0usize, 0);
    for (n, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                flatten_item(&inner[start..n], &head, out);
                start = n + 1;
            }
            _ => {}
        }
    }
    flatten_item(&inner[start..], &head, out);
}

fn flatten_item(item: &str, head: &str, out: &mut Vec<String>) {
    let item = item.trim();
    if item == "self" {
        out.push(head.to_owned());
    } else if !item.is_empty() {
        flatten(item, head, out);
    }
}

/// The module a path names: its longest prefix that is a module.
fn module_of<'a>(path: &str, modules: &'a BTreeMap<String, Vec<String>>) -> Option<&'a str> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len()).rev().find_map(|n| modules.get_key_value(&segments[..n].join("::")).map(|(k, _)| k.as_str()))
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Each import that breaks [`RULE`], as `module imports crate::path
/// (layer may import …)`.
fn upward_imports(modules: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let rule: BTreeMap<&str, &[&str]> = RULE.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, paths) in modules {
        let from = top(module);
        if EXEMPT.contains(&module.as_str()) || EXEMPT.contains(&from) {
            continue;
        }
        let Some(allowed) = rule.get(from) else {
            wrong.push(format!("{module} is in no layer of the rule: add its folder to RULE"));
            continue;
        };
        for path in paths {
            let to = top(path);
            if to != from && !allowed.contains(&to) {
                wrong.push(format!("{module} imports crate::{path} ({from} may import {allowed:?})"));
            }
        }
    }
    wrong
}

/// The sets of modules that import each other (strongly connected
/// components larger than one; a parent and its own children excepted).
fn cycles(modules: &BTreeMap<String, Vec<String>>) -> Vec<Vec<String>> {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (module, paths) in modules {
        let out = edges.entry(module.as_str()).or_default();
        for path in paths {
            let Some(to) = module_of(path, modules) else { continue };
            let related =
                to == module || module.starts_with(&format!("{to}::")) || to.starts_with(&format!("{module}::"));
            if !(related || module.is_empty() || to.is_empty()) {
                out.insert(to);
            }
        }
    }
    // Tarjan's algorithm, iteratively short: the graph has ~50 nodes.
    struct State<'a> {
        edges: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for &w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s =
        State { edges: &edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for &v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}
