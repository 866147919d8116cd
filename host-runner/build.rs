//! Builds the proxy component (`component/`, target `wasm32-wasip2`) with a
//! nested cargo into `OUT_DIR`, for `wasi:http` 0.2 and for 0.3, and exposes
//! their paths as `COMPONENT_PATH` and `COMPONENT_P3_PATH`, so
//! `cargo run -p host-runner` and the tests never depend on a prebuilt file.
//!
//! Cargo reruns this script when anything the component was built from
//! changes: the nested build's dep-info (`.d`) names every source file the
//! compiler read, and the manifests, the lock file, the WIT world and the
//! toolchain file are watched besides.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const CRATE: &str = "gemini_proxy_component";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host-runner lives in the workspace").to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    ensure_target(&root);

    let target_dir = out_dir.join("component-target");
    let release = target_dir.join(TARGET).join("release");
    // The same crate is built twice, for wasi:http 0.2 and (feature `p3`)
    // 0.3; both builds write the same file, so each is copied out of it.
    let mut deps = Vec::new();
    for (features, env, file) in
        [(None, "COMPONENT_PATH", "proxy-p2.wasm"), (Some("p3"), "COMPONENT_P3_PATH", "proxy-p3.wasm")]
    {
        build_component(&root, &target_dir, features);
        let wasm = release.join(format!("{CRATE}.wasm"));
        assert!(wasm.exists(), "component not found at {}", wasm.display());
        let kept = out_dir.join(file);
        std::fs::copy(&wasm, &kept).unwrap_or_else(|e| panic!("copying {} to {}: {e}", wasm.display(), kept.display()));
        println!("cargo:rustc-env={env}={}", kept.display());
        let dep_info = release.join(format!("{CRATE}.d"));
        let text = std::fs::read_to_string(&dep_info).unwrap_or_else(|e| panic!("reading {}: {e}", dep_info.display()));
        deps.extend(dependencies(&text));
    }

    println!("cargo:rerun-if-env-changed=GEMINI_PROXY_LINT_COMPONENT");
    for watched in ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml", "component/Cargo.toml", "core/Cargo.toml", "wit"]
    {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    deps.sort();
    deps.dedup();
    for dep in deps {
        // Registry sources never change under a fixed lock file.
        if Path::new(&dep).starts_with(&root) {
            println!("cargo:rerun-if-changed={dep}");
        }
    }
}

/// Builds the component crate for the guest target, with `features`.
fn build_component(root: &Path, target_dir: &Path, features: Option<&str>) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--locked", "-p", "gemini-proxy-component", "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    if let Some(features) = features {
        cmd.args(["--features", features]);
    }
    // A lean guest: no debug info (the host's release profile keeps some).
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false").env("CARGO_PROFILE_RELEASE_STRIP", "true");
    // The outer build's flags are for the host, not the guest; its rustc
    // wrapper (clippy's, under `cargo clippy`) too, unless scripts/test
    // asks for the component to be linted as it is built.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_TARGET_DIR"] {
        cmd.env_remove(var);
    }
    if env::var_os("GEMINI_PROXY_LINT_COMPONENT").is_none() {
        cmd.env_remove("RUSTC_WORKSPACE_WRAPPER");
    }
    let status = cmd.status().expect("running nested cargo to build the component");
    assert!(status.success(), "building the component (target {TARGET}, features {features:?}) failed");
}

/// The prerequisites of a Makefile-style dep-info file (`out: a b\ c`),
/// with `\ ` unescaped.
fn dependencies(dep_info: &str) -> Vec<String> {
    let mut deps = Vec::new();
    for line in dep_info.lines() {
        let Some((_, rest)) = line.split_once(": ") else { continue };
        let mut current = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => {
                    current.push(' ');
                    chars.next();
                }
                ' ' => {
                    if !current.is_empty() {
                        deps.push(std::mem::take(&mut current));
                    }
                }
                c => current.push(c),
            }
        }
        if !current.is_empty() {
            deps.push(current);
        }
    }
    deps.sort();
    deps.dedup();
    deps
}

/// The guest target must be installed. `rust-toolchain.toml` names it, but
/// rustup (1.29) adds a toolchain file's targets only when it installs the
/// toolchain itself, not to a toolchain that is already there; so that the
/// README's `cargo run -p host-runner` works on such a machine, a missing
/// target is added here, once, with a warning.
fn ensure_target(root: &Path) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output();
    let installed = sysroot.ok().is_some_and(|o| {
        let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("lib/rustlib").join(TARGET);
        path.exists()
    });
    if !installed {
        println!("cargo:warning=the {TARGET} target is missing; adding it with `rustup target add {TARGET}`");
        let status = Command::new("rustup").current_dir(root).args(["target", "add", TARGET]).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "target {TARGET} is missing and `rustup target add {TARGET}` failed"
        );
    }
}
