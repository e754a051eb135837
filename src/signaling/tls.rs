//! HTTPS beyond loopback: the owner's certificate (`--tls-cert/--tls-key`), or a self-signed one generated
//! once and kept under `$XDG_STATE_HOME/wl-webrtc/tls/` (so a browser exception made once keeps working).
//! Without TLS an on-path attacker could swap the DTLS fingerprint in the SDP and read or drive everything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("cannot keep the generated certificate in {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A server certificate ready to serve.
#[derive(Debug, Clone)]
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate, `AB:CD:…` (what a browser's certificate viewer shows).
    pub fingerprint: String,
    /// The certificate file (PEM).
    pub cert_path: PathBuf,
    /// Whether it was generated (self-signed) rather than the owner's.
    pub self_signed: bool,
}

/// The owner's certificate and key, if given; else the self-signed one kept in `dir` (generated on first
/// use, valid for `localhost`, loopback and `names`).
pub fn identity(owner: Option<(&Path, &Path)>, dir: &Path, names: &[String]) -> Result<Identity, TlsError> {
    let (cert_path, key_path, self_signed) = match owner {
        Some((c, k)) => (c.to_owned(), k.to_owned(), false),
        None => {
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !(c.exists() && k.exists()) {
                generate(dir, &c, &k, names)?;
            }
            (c, k, true)
        }
    };
    let read = |p: &Path| std::fs::read(p).map_err(|source| TlsError::Read { path: p.to_owned(), source });
    let pem_err = |p: &Path, what: String| TlsError::Pem { path: p.to_owned(), what };
    let cert_pem = read(&cert_path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(&cert_path, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = certs.first() else { return Err(pem_err(&cert_path, "holds no certificate".into())) };
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?)
        .map_err(|e| pem_err(&key_path, format!("not a PEM private key: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Identity { config: Arc::new(config), fingerprint, cert_path, self_signed })
}

/// `AB:CD:…` SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn generate(dir: &Path, cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Write { path, source }
    };
    let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    sans.extend(names.iter().filter(|n| !sans.contains(n)).cloned().collect::<Vec<_>>());
    let mut params = rcgen::CertificateParams::new(sans)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "wl-webrtc (self-signed)");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let pair = rcgen::KeyPair::generate()?;
    let c = params.self_signed(&pair)?;
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    write_private(key, pair.serialize_pem().as_bytes()).map_err(write_err(key))?;
    std::fs::write(cert, c.pem()).map_err(write_err(cert))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed certificate");
    Ok(())
}

/// Write `data` to a new file readable by its owner only (mode 0600), replacing any old one.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_kept_and_owner_files_checked() {
        let dir = std::env::temp_dir().join(format!("wl-webrtc-tls-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = identity(None, &dir, &["desk.example".into()]).expect("generate");
        assert!(a.self_signed);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1, "{}", a.fingerprint);
        let b = identity(None, &dir, &[]).expect("reuse");
        assert_eq!(a.fingerprint, b.fingerprint, "kept, not regenerated");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("key.pem")).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
        // The owner's files: the same pair works; a key file that is not PEM is a clear error.
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        let own = identity(Some((&c, &k)), &dir, &[]).expect("owner's pair");
        assert!(!own.self_signed);
        let e = identity(Some((&c, &c)), &dir, &[]).expect_err("a certificate is not a key");
        assert!(e.to_string().contains("private key"), "{e}");
        let e = identity(Some((&dir.join("nope.pem"), &k)), &dir, &[]).expect_err("missing");
        assert!(e.to_string().contains("cannot read"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
