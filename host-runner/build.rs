//! Builds the proxy component (`component/`, target `wasm32-wasip2`) with a
//! nested cargo into `OUT_DIR` and exposes its path as `COMPONENT_PATH`, so
//! `cargo run -p host-runner` and the tests never depend on a prebuilt file.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host-runner lives in the workspace").to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in ["component/src", "component/Cargo.toml", "core/src", "core/Cargo.toml", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    ensure_target(&root);

    let target_dir = out_dir.join("component-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--locked", "-p", "gemini-proxy-component", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    // A lean guest: no debug info (the host's release profile keeps some).
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false").env("CARGO_PROFILE_RELEASE_STRIP", "true");
    // The outer build's flags are for the host, not the guest.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_TARGET_DIR", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running nested cargo to build the component");
    assert!(status.success(), "building the component (target {TARGET}) failed");

    let wasm = target_dir.join(TARGET).join("release").join("gemini_proxy_component.wasm");
    assert!(wasm.exists(), "component not found at {}", wasm.display());
    println!("cargo:rustc-env=COMPONENT_PATH={}", wasm.display());
}

/// Adds the wasm target through rustup when the toolchain lacks it, so a
/// fresh machine needs no manual step.
fn ensure_target(root: &std::path::Path) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output();
    let installed = sysroot.ok().is_some_and(|o| {
        let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("lib/rustlib").join(TARGET);
        path.exists()
    });
    if !installed {
        let status = Command::new("rustup").current_dir(root).args(["target", "add", TARGET]).status();
        assert!(status.is_ok_and(|s| s.success()), "target {TARGET} is missing and `rustup target add {TARGET}` failed");
    }
}
