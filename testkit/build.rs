//! Builds the fake VA-API driver and its DRM shim (`fake-va/`, C against the system's libva headers) into
//! OUT_DIR; `testkit::fake_va` points tests at them.

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
}
