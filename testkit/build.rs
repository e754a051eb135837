//! Builds the fake VA-API driver and its DRM shim (`fake-va/`, C against the system's libva headers) and the
//! PipeWire test producer (`pw-producer/`, against libpipewire) into OUT_DIR; `testkit::fake_va` and
//! `testkit::pw_producer` point tests at them.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let compiler = cc::Build::new().get_compiler();
    for (src, lib) in
        [("fake-va/wlfake_drv_video.c", "wlfake_drv_video.so"), ("fake-va/drm_shim.c", "libwlfake_drm_shim.so")]
    {
        println!("cargo:rerun-if-changed={src}");
        let status = Command::new(compiler.path())
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-std=c11", "-o"])
            .arg(out.join(lib))
            .arg(src)
            .status()
            .unwrap_or_else(|e| panic!("running the C compiler for {src}: {e}"));
        assert!(status.success(), "{src} did not compile (is libva-dev installed? scripts/setup)");
    }
    println!("cargo:rustc-env=WLW_FAKE_VA_DIR={}", out.display());

    let src = "pw-producer/wlw_pw_producer.c";
    println!("cargo:rerun-if-changed={src}");
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libpipewire-0.3"])
        .output()
        .unwrap_or_else(|e| panic!("running pkg-config for libpipewire-0.3: {e}"));
    assert!(
        flags.status.success(),
        "pkg-config libpipewire-0.3 failed (is libpipewire-0.3-dev installed? scripts/setup)"
    );
    let flags = String::from_utf8_lossy(&flags.stdout).into_owned();
    let bin = out.join("wlw-pw-producer");
    let status = Command::new(compiler.path())
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-o"])
        .arg(&bin)
        .arg(src)
        .args(flags.split_whitespace())
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler for {src}: {e}"));
    assert!(status.success(), "{src} did not compile (is libpipewire-0.3-dev installed? scripts/setup)");
    println!("cargo:rustc-env=WLW_PW_PRODUCER={}", bin.display());
}
