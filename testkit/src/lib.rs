//! Test parts for wl-webrtc, kept out of the product: the test-pattern Wayland client (`pattern`, binary
//! `wl-webrtc-test-pattern`), the glass-to-glass clock barcode (`barcode`), a headless Chromium with a DevTools
//! driver (`browser`), private network namespaces (`netns`), an ext-image-copy-capture test compositor
//! (`compositor`), a tiny HTTP server for fixtures (`http`), H.264 bitstream inspection (`h264`), the fake
//! VA-API driver (`fake_va`) and a PipeWire producer that offers DMA-BUF or MemFd buffers ([`pw_producer`]).
//!
//! Test code: failures panic with a message that says what was expected (the product's no-panic rule is for
//! runtime paths, not for fixtures).

pub mod barcode;
pub mod browser;
pub mod compositor;
pub mod fake_va;
pub mod h264;
pub mod http;
pub mod impair;
pub mod netns;
pub mod pattern;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The PipeWire test producer (`pw-producer/`, built by `build.rs`):
/// `wlw-pw-producer NAME dmabuf|memfd|both-unmappable WIDTH HEIGHT RRGGBB`.
pub fn pw_producer() -> &'static Path {
    Path::new(env!("WLW_PW_PRODUCER"))
}

/// The path of a binary of this workspace (`wl-webrtc`, `wl-webrtc-test-pattern`, `wl-webrtc-bench`) in the
/// target directory of the running test, built when it is not there yet (`cargo build -p PACKAGE --bin NAME`): a test of one package may run another package's binary, which `cargo test -p` alone
/// does not build. `cargo test --workspace` builds every binary itself, so this never runs there (a second
/// cargo with other packages selected could unify features differently and rebuild half the tree); after
/// changing testkit, run `cargo test --workspace` (or build the binary) before `cargo test -p wl-webrtc`.
pub fn workspace_bin(name: &str) -> PathBuf {
    // One build at a time: a test waiting here finds the binary its neighbour just built.
    static BUILDING: Mutex<()> = Mutex::new(());
    let exe = std::env::current_exe().expect("the test's own path");
    // Tests run from target/<profile>/deps/; binaries live in target/<profile>/.
    let dir = exe.parent().and_then(|d| if d.ends_with("deps") { d.parent() } else { Some(d) }).expect("target dir");
    let path = dir.join(name);
    let _building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists()
        && let Some(cargo) = std::env::var_os("CARGO")
    {
        let package = match name {
            "wl-webrtc" => "wl-webrtc",
            "wl-webrtc-test-pattern" => "wl-webrtc-testkit",
            "wl-webrtc-bench" => "wl-webrtc-bench",
            other => panic!("{other} is not a binary of this workspace"),
        };
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", package, "--bin", name]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap_or_else(|e| panic!("run cargo to build {name}: {e}"));
        assert!(status.success(), "cargo build -p {package} --bin {name}: {status}");
    }
    assert!(path.exists(), "{} does not exist (build it: cargo build -p {name})", path.display());
    path
}
