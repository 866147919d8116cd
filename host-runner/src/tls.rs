//! TLS for the listener (`--tls-cert`, `--tls-key`): so that a client that
//! always connects with `wss://` (google-genai's Live client) can reach the
//! proxy directly, and so that keys need not cross a LAN in clear.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Why the certificate or its key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read as PEM.
    #[error("cannot read {what} from {path}: {why}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        why: String,
    },
    /// rustls refused the pair.
    #[error("the TLS certificate and key do not make a configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server configuration of a PEM certificate chain and its private
/// key (ring; HTTP/2 and HTTP/1.1 offered by ALPN).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let pem = |what, path: &Path, why: String| TlsError::Pem { what, path: path.display().to_string(), why };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem("certificates", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem("certificates", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem("certificates", cert, "no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem("a private key", key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
