//! What a running instance tells the CLI on the same machine: its URL and token, in
//! `$XDG_RUNTIME_DIR/wl-webrtc/instance-PORT.json` (mode 0600, removed on exit), so that `wl-webrtc status`
//! and `stop` keep working without flags while every start has a new token.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub pid: u32,
    /// The URL printed at start (with the token).
    pub url: String,
    pub token: Option<String>,
    /// SHA-256 fingerprint of the HTTPS certificate, when it speaks HTTPS.
    pub fingerprint: Option<String>,
}

/// Where the instance listening on `port` keeps its file: `$XDG_RUNTIME_DIR/wl-webrtc/`, or without it
/// a directory of our own in the temporary directory (`wl-webrtc-UID`, mode 0700).
pub fn path(port: u16) -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => Path::new(&d).join("wl-webrtc"),
        None => std::env::temp_dir().join(format!("wl-webrtc-{}", rustix::process::geteuid().as_raw())),
    };
    dir.join(format!("instance-{port}.json"))
}

/// Create `dir` (0700) or check that an existing one is ours and private: another user must not be able to
/// plant or read the token.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).recursive(true).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() || m.uid() != rustix::process::geteuid().as_raw() || m.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!("{} is not a private directory of ours", dir.display())));
    }
    Ok(())
}

/// Written at start; removed when dropped.
#[derive(Debug)]
pub struct InstanceFile {
    path: PathBuf,
}

impl InstanceFile {
    pub fn write(port: u16, instance: &Instance) -> std::io::Result<Option<InstanceFile>> {
        let path = path(port);
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let json = serde_json::to_vec_pretty(instance).map_err(std::io::Error::other)?;
        super::tls::write_private(&path, &json)?;
        Ok(Some(InstanceFile { path }))
    }
}

impl Drop for InstanceFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The live instance on `port`, if its file exists and its process still runs.
pub fn find(port: u16) -> Option<Instance> {
    let path = path(port);
    private_dir(path.parent()?).ok()?;
    let text = std::fs::read_to_string(path).ok()?;
    let i: Instance = serde_json::from_str(&text).ok()?;
    let alive =
        rustix::process::Pid::from_raw(i.pid as i32).is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
    alive.then_some(i)
}
