//! How the command-line clients (`tagcast send`, `tagcast listen`, `tagcast bench`) trust a
//! `wss://` server: the `--ca` and `--insecure` options they share, and the rustls client
//! configuration those give (on aws-lc-rs, the server's provider).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// Why the trust asked for cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The CA file is unreadable or holds no certificate.
    #[error("cannot load CA certificates from {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// `wss://` without `--ca` or `--insecure`.
    #[error("wss:// needs --ca PEM (the server's CA or self-signed certificate) or --insecure")]
    NoTrust,
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
}

/// How to trust the server's certificate on `wss://`: the `--ca` and `--insecure` options of
/// `tagcast bench`, `send` and `listen`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsTrust {
    /// CA certificate (PEM) to trust for wss://: the server's CA, or its self-signed
    /// certificate (one without CA:TRUE).
    #[arg(long, value_name = "PEM")]
    pub ca: Option<std::path::PathBuf>,
    /// Accept any certificate for wss:// (local tries with test certificates only).
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
}

/// The TLS client configuration `trust` asks for; [`TrustError::NoTrust`] when it names none.
pub fn client_config(trust: &TlsTrust) -> Result<ClientConfig, TrustError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    if trust.insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth());
    }
    let Some(path) = &trust.ca else {
        return Err(TrustError::NoTrust);
    };
    let ca_error = |reason: String| TrustError::Ca {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(Path::new(path))
        .map_err(|error| ca_error(error.to_string()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|error| ca_error(error.to_string()))?;
        roots
            .add(certificate)
            .map_err(|error| ca_error(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_error("no certificate in the file".into()));
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `--insecure`: accepts any certificate, still checking the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
