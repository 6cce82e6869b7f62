//! Whom hookd trusts and how it identifies itself over TLS (API.md §13): the system's root
//! certificates plus `delivery.ca_file`, and per endpoint an extra CA and a client
//! certificate. Each distinct identity gets one rustls configuration and one reqwest client,
//! so endpoints that share one share its connection pool.
//!
//! Invariants: an endpoint's `tls` is checked when it is stored ([`check`]), so building its
//! client later fails only on a record stored by a laxer hookd; private keys never appear in
//! an error message.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};

use crate::model::EndpointTls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("delivery.ca_file {path}: {message}")]
    CaFile { path: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The certificates of a PEM text; `field` names it in errors.
fn certificates(pem: &str, field: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(field, format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(field, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The private key of a PEM text. Its bytes are never part of an error.
fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        invalid(
            "tls.client_key",
            "not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })
}

fn add_all(
    roots: &mut RootCertStore,
    certs: Vec<CertificateDer<'static>>,
    field: &str,
) -> Result<(), TlsError> {
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| invalid(field, format!("not a usable CA certificate ({e})")))?;
    }
    Ok(())
}

/// The roots every endpoint trusts: the system's (which honours `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`), or the bundled Mozilla roots on a system without any, plus `ca_file`.
pub fn base_roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!(
            errors = native.errors.len(),
            "no system root certificates found; trusting hookd's bundled roots"
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = ca_file {
        let ca_error = |message: String| TlsError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| ca_error(e.to_string()))?;
        let certs = certificates(&pem, "delivery.ca_file").map_err(|e| ca_error(e.to_string()))?;
        add_all(&mut roots, certs, "delivery.ca_file").map_err(|e| ca_error(e.to_string()))?;
    }
    Ok(roots)
}

/// The rustls configuration for an endpoint's `tls` (none: the base roots, no client
/// certificate).
pub fn client_config(
    base: &RootCertStore,
    tls: Option<&EndpointTls>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = base.clone();
    if let Some(ca) = tls.and_then(|t| t.ca.as_deref()) {
        add_all(&mut roots, certificates(ca, "tls.ca")?, "tls.ca")?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("tls", e.to_string()))?
            .with_root_certificates(roots);
    let cert = tls.and_then(|t| t.client_cert.as_deref());
    let key = tls.and_then(|t| t.client_key.as_ref().map(|k| k.expose()));
    match (cert, key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates(cert, "tls.client_cert")?, private_key(key)?)
            .map_err(|e| {
                invalid(
                    "tls.client_key",
                    format!("does not go with tls.client_cert ({e})"),
                )
            }),
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(invalid(
            "tls.client_key",
            "is required with tls.client_cert",
        )),
        (None, Some(_)) => Err(invalid(
            "tls.client_cert",
            "is required with tls.client_key",
        )),
    }
}

/// Whether `tls` can be used: every PEM parses, and the key goes with the certificate.
pub fn check(tls: &EndpointTls) -> Result<(), TlsError> {
    client_config(&RootCertStore::empty(), Some(tls)).map(|_| ())
}

/// What tells two identities apart (the cache key of their client).
pub fn identity(tls: Option<&EndpointTls>) -> [u8; 32] {
    let mut h = Sha256::new();
    if let Some(t) = tls {
        for part in [
            t.ca.as_deref(),
            t.client_cert.as_deref(),
            t.client_key.as_ref().map(|k| k.expose()),
        ] {
            h.update([u8::from(part.is_some())]);
            h.update(part.unwrap_or_default().as_bytes());
            h.update([0]);
        }
    }
    h.finalize().into()
}
