//! Native wss: the rustls server configuration built from the `[tls]` PEM files, swappable on
//! reload.
//!
//! [`TlsAcceptor::load`] reads the certificate chain and the private key, checks that they belong
//! together and builds a rustls [`ServerConfig`] (TLS 1.2 and 1.3, ALPN `http/1.1`). The config in
//! force lives behind an [`ArcSwap`]: [`TlsAcceptor::reload`] builds a new one from the files and
//! swaps it in for the handshakes that follow, while open connections keep the session they
//! negotiated. A pair that cannot be loaded leaves the previous one in force.
//!
//! [`WssListener`] is the wss listener: the bound socket and the acceptor its connections'
//! handshakes use, one value, so that neither exists without the other.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::ops::config::TlsConfig;

/// A certificate or key file that cannot be used. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file does not exist.
    #[error("{path}: no such file")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but cannot be read (permissions, a directory, ...).
    #[error("{path}: cannot read: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("{path}: not a valid PEM file: {problem}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The PEM parser's message.
        problem: String,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{path}: no certificate (-----BEGIN CERTIFICATE-----) in the file")]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The first certificate of the chain cannot be parsed.
    #[error("{path}: the certificate is invalid: {problem}")]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// rustls' message.
        problem: String,
    },
    /// The key file holds no unencrypted private key.
    #[error(
        "{path}: no private key (-----BEGIN PRIVATE KEY-----, or an RSA or EC PRIVATE KEY) in the \
         file; encrypted keys are not supported"
    )]
    NoKey {
        /// The key file.
        path: PathBuf,
    },
    /// The private key is of a kind rustls cannot sign with.
    #[error("{path}: unusable private key: {problem}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// rustls' message.
        problem: String,
    },
    /// The private key is not the one of the certificate.
    #[error("{key}: the private key does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// What `tagcast check` says of the wss certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// The subject, e.g. `CN=localhost`.
    pub subject: String,
    /// The end of its validity, e.g. `Dec  2 18:41:00 2027 +00:00`.
    pub not_after: String,
    /// Whole days until then; `None` once it has expired.
    pub days_left: Option<i64>,
}

/// Performs TLS handshakes with the certificate in force, and reloads it from its files.
pub struct TlsAcceptor {
    /// Where wss is served.
    address: SocketAddr,
    /// The PEM chain, re-read on reload.
    cert: PathBuf,
    /// The PEM private key, re-read on reload.
    key: PathBuf,
    /// The config new handshakes use; replaced whole on reload so that a handshake never sees a
    /// certificate from one pair and a key from another.
    active: ArcSwap<ServerConfig>,
}

impl TlsAcceptor {
    /// Loads the certificate chain and key that `[tls]` names, for wss served on `address`.
    pub fn load(address: SocketAddr, config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
        let active = server_config(&config.cert, &config.key)?;
        Ok(TlsAcceptor {
            address,
            cert: config.cert.clone(),
            key: config.key.clone(),
            active: ArcSwap::from_pointee(active),
        })
    }

    /// Re-reads the certificate and key files. On success new handshakes use the new pair (open
    /// connections are not touched); on error the pair in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.cert, &self.key)?;
        self.active.store(Arc::new(fresh));
        Ok(())
    }

    /// Where wss is served: the address its listener binds.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The certificate chain file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The private key file.
    pub fn key_path(&self) -> &Path {
        &self.key
    }

    /// The subject and validity of the first certificate of the chain file, for `tagcast check`.
    pub fn describe_certificate(&self) -> Result<CertificateSummary, TlsError> {
        let chain = read_certificates(&self.cert)?;
        let bad = |problem: String| TlsError::BadCertificate {
            path: self.cert.clone(),
            problem,
        };
        let (_, certificate) = x509_parser::parse_x509_certificate(&chain[0])
            .map_err(|error| bad(error.to_string()))?;
        let validity = certificate.validity();
        Ok(CertificateSummary {
            subject: certificate.subject().to_string(),
            not_after: validity.not_after.to_string(),
            days_left: validity.time_to_expiration().map(|left| left.whole_days()),
        })
    }

    /// Runs the server side of a TLS handshake on `stream` with the certificate in force.
    pub async fn accept<S>(&self, stream: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tokio_rustls::TlsAcceptor::from(self.active.load_full())
            .accept(stream)
            .await
    }
}

/// The wss listener: a socket bound to the acceptor's address, and the acceptor that runs the
/// TLS handshake of each connection accepted on it.
pub struct WssListener {
    socket: TcpListener,
    acceptor: Arc<TlsAcceptor>,
}

impl WssListener {
    /// Binds the address `acceptor` serves wss on.
    pub async fn bind(acceptor: Arc<TlsAcceptor>) -> io::Result<WssListener> {
        let socket = TcpListener::bind(acceptor.address).await?;
        Ok(WssListener { socket, acceptor })
    }

    /// The address it is bound to (the port the system chose, for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The socket to accept connections on, and the acceptor for their handshakes: for the
    /// accept loop, which runs the handshakes in the connections' own tasks.
    pub fn into_parts(self) -> (TcpListener, Arc<TlsAcceptor>) {
        (self.socket, self.acceptor)
    }
}

/// Builds the rustls config for one certificate chain and key.
fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = read_certificates(cert)?;
    let private_key = read_key(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
            rustls::Error::InvalidCertificate(problem) => TlsError::BadCertificate {
                path: cert.to_owned(),
                problem: problem.to_string(),
            },
            other => TlsError::BadKey {
                path: key.to_owned(),
                problem: other.to_string(),
            },
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(path, error))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        other => pem_error(path, other),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::Missing {
            path: path.to_owned(),
        },
        _ => TlsError::Unreadable {
            path: path.to_owned(),
            source,
        },
    })
}

fn pem_error(path: &Path, error: pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        problem: error.to_string(),
    }
}
