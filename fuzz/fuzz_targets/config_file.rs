//! The config file (`--config`, `$XDG_CONFIG_HOME/wl-webrtc/config.toml`): parsed and validated, or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wl_webrtc::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(cfg) = Config::from_toml(text)
    {
        // What validation accepted must survive the round trip `wl-webrtc config` prints.
        let _ = cfg.to_toml();
    }
});
