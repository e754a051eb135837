//! The fake VA-API driver (`testkit/fake-va/`, built by `build.rs`): how to point a process at it. Real libva
//! loads it (`LIBVA_DRIVERS_PATH`, `LIBVA_DRIVER_NAME=wlfake`); the DRM shim (`LD_PRELOAD`) makes libva take
//! `/dev/null` for a render node, since these machines have none.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the driver and the shim were built.
pub fn dir() -> &'static Path {
    Path::new(env!("WLW_FAKE_VA_DIR"))
}

/// The "device" to open: any fd passes the shim.
pub const DEVICE: &str = "/dev/null";

/// The driver's vendor string.
pub const VENDOR: &str = "wl-webrtc fake VA driver (tests)";

/// The shim for `LD_PRELOAD`.
pub fn shim() -> PathBuf {
    dir().join("libwlfake_drm_shim.so")
}

/// Make `cmd` load the fake driver through real libva.
pub fn apply(cmd: &mut Command) -> &mut Command {
    cmd.env("LIBVA_DRIVERS_PATH", dir()).env("LIBVA_DRIVER_NAME", "wlfake").env("LD_PRELOAD", shim())
}
