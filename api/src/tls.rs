//! PKI helpers for the bank link: a development PKI generated with rcgen, and PEM loading
//! with errors that name the file and the fix.
//!
//! The development PKI is for the bank simulator and for tests. In production the bank
//! issues the client certificate and names the CA to pin; only the loaders are used there.

use std::fs::{self, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// Days a development certificate stays valid, counted from the day it is generated.
const DEV_VALIDITY_DAYS: i64 = 365;

/// Names the development server certificate is valid for by default.
pub const DEV_SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Paths of the PEM files written by [`generate_dev_pki`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    /// CA certificate: the trust anchor the client pins and the server uses to check clients.
    pub ca_cert: PathBuf,
    /// Server certificate chain (leaf only), signed by the CA.
    pub server_cert: PathBuf,
    /// Server private key (PKCS#8), mode 0600.
    pub server_key: PathBuf,
    /// Client certificate for mutual TLS, signed by the CA.
    pub client_cert: PathBuf,
    /// Client private key (PKCS#8), mode 0600.
    pub client_key: PathBuf,
}

impl PkiPaths {
    /// Returns the file names [`generate_dev_pki`] uses inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        PkiPaths {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// A PEM file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The file could not be read.
    #[error("cannot read {}: {source}; check the path and its permissions", path.display())]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Operating system error.
        source: std::io::Error,
    },
    /// The file is not valid PEM.
    #[error("invalid PEM in {}: {source}; expected BEGIN/END blocks", path.display())]
    Parse {
        /// File that failed.
        path: PathBuf,
        /// Parser error.
        source: rustls::pki_types::pem::Error,
    },
    /// The file contains no `CERTIFICATE` block.
    #[error(
        "no certificate found in {}; expected a PEM file with a BEGIN CERTIFICATE block",
        path.display()
    )]
    NoCertificate {
        /// File that failed.
        path: PathBuf,
    },
    /// The file contains no private key block.
    #[error(
        "no private key found in {}; expected a PKCS#8, PKCS#1 or SEC1 PEM private key",
        path.display()
    )]
    NoPrivateKey {
        /// File that failed.
        path: PathBuf,
    },
    /// A certificate could not be added to the root store.
    #[error(
        "invalid CA certificate in {}: {source}; expected an X.509 CA certificate",
        path.display()
    )]
    InvalidCa {
        /// File that failed.
        path: PathBuf,
        /// Reason from rustls.
        source: rustls::Error,
    },
}

/// Builds the API listener's TLS configuration: TLS 1.3 only, on the ring provider, with
/// the certificate chain and key read from PEM files. Client certificates are not requested,
/// because API clients authenticate with bearer tokens and operator sessions.
///
/// # Errors
/// Names the file that cannot be read or the pair that does not match.
pub fn api_server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(cert)?;
    let key_der = load_private_key(key)?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("the ring provider does not offer TLS 1.3")?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| {
            format!(
                "server.tls_cert {} and server.tls_key {} do not form a valid pair",
                cert.display(),
                key.display()
            )
        })
}

/// Generates a development PKI for `localhost` and `127.0.0.1` into `dir`.
///
/// Writes a CA certificate, a server certificate and a client certificate, each signed by
/// the CA and valid for 365 days from yesterday (one day of slack for clock skew). The CA
/// private key is not written, so nothing more can be signed with it: generate a new PKI
/// to rotate.
///
/// # Errors
/// Fails if `dir` cannot be created, if any target file already exists (existing keys are
/// never overwritten) or if certificate generation fails.
pub fn generate_dev_pki(dir: &Path) -> anyhow::Result<PkiPaths> {
    generate_dev_pki_for(dir, &DEV_SERVER_NAMES)
}

/// Generates a development PKI whose server certificate is valid for `server_names`.
///
/// Each name is a DNS name or an IP address literal. Use this when the simulator runs
/// under another host name, such as a container name.
///
/// # Errors
/// As [`generate_dev_pki`], and if `server_names` is empty or a name is invalid.
pub fn generate_dev_pki_for(dir: &Path, server_names: &[&str]) -> anyhow::Result<PkiPaths> {
    anyhow::ensure!(
        !server_names.is_empty(),
        "at least one server name is required"
    );
    let paths = PkiPaths::in_dir(dir);
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_cert = ca_params()?
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;

    let names: Vec<String> = server_names.iter().map(|name| name.to_string()).collect();
    let server_key = KeyPair::generate().context("generating the server key")?;
    let server_params = leaf_params(names, "folio-dev-bank", ExtendedKeyUsagePurpose::ServerAuth)?;
    let server_cert = server_params
        .signed_by(&server_key, &ca_cert, &ca_key)
        .context("signing the server certificate")?;

    let client_key = KeyPair::generate().context("generating the client key")?;
    let client_params = leaf_params(
        Vec::new(),
        "folio-dev-client",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let client_cert = client_params
        .signed_by(&client_key, &ca_cert, &ca_key)
        .context("signing the client certificate")?;

    write_new_file(&paths.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_new_file(&paths.server_cert, server_cert.pem().as_bytes(), false)?;
    write_new_file(
        &paths.server_key,
        server_key.serialize_pem().as_bytes(),
        true,
    )?;
    write_new_file(&paths.client_cert, client_cert.pem().as_bytes(), false)?;
    write_new_file(
        &paths.client_key,
        client_key.serialize_pem().as_bytes(),
        true,
    )?;
    Ok(paths)
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "Folio development bank CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params);
    Ok(params)
}

fn leaf_params(
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(names).context("invalid server name")?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    Ok(params)
}

/// Sets a validity window from yesterday to [`DEV_VALIDITY_DAYS`] from today (UTC dates).
fn set_validity(params: &mut CertificateParams) {
    let today = days_since_epoch(SystemTime::now());
    let (year, month, day) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(year, month, day);
    let (year, month, day) = civil_from_days(today + DEV_VALIDITY_DAYS);
    params.not_after = rcgen::date_time_ymd(year, month, day);
}

fn days_since_epoch(now: SystemTime) -> i64 {
    // A clock before 1970 is a broken clock; day 0 still yields a usable window.
    let seconds = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(seconds / 86_400).unwrap_or(0)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// This is Howard Hinnant's `civil_from_days` algorithm; it avoids a date crate for the one
/// conversion rcgen's `date_time_ymd` needs.
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Day is 1..=31 and month 1..=12 by construction; the year fits in i32 for any date a
    // certificate can carry.
    (year as i32, month as u8, day as u8)
}

/// Writes `bytes` to a file that must not exist yet; private keys get mode 0600.
fn write_new_file(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;

    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create {}; remove the old file or choose an empty directory",
            path.display()
        )
    })?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// Loads every certificate in a PEM file, in file order.
///
/// # Errors
/// Returns [`PemError`] naming the file if it cannot be read, is not PEM or contains no
/// certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    read_certs(open_pem(path)?, path)
}

/// Parses every certificate of PEM text read from a secret; `source` names it in errors.
///
/// # Errors
/// As [`load_certs`].
pub fn parse_certs(pem: &[u8], source: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    read_certs(pem, source)
}

/// Parses the first private key of PEM text read from a secret; `source` names it in
/// errors.
///
/// # Errors
/// As [`load_private_key`].
pub fn parse_private_key(pem: &[u8], source: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    read_private_key(pem, source)
}

fn read_certs(
    reader: impl std::io::Read,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_reader_iter(reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemError::Parse {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Loads the first private key in a PEM file.
///
/// # Errors
/// Returns [`PemError`] naming the file if it cannot be read, is not PEM or contains no key.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    read_private_key(open_pem(path)?, path)
}

fn read_private_key(
    reader: impl std::io::Read,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, PemError> {
    match PrivateKeyDer::from_pem_reader(reader) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(PemError::NoPrivateKey {
            path: path.to_owned(),
        }),
        Err(source) => Err(PemError::Parse {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Builds a root store holding only the certificates in `path`.
///
/// This is how the bank link pins its CA: no system or Mozilla roots are added.
///
/// # Errors
/// Returns [`PemError`] if the file cannot be loaded or a certificate is not a valid anchor.
pub fn load_root_store(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| PemError::InvalidCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

fn open_pem(path: &Path) -> Result<BufReader<fs::File>, PemError> {
    fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| PemError::Read {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_from_days_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn dev_pki_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let paths = generate_dev_pki(dir.path()).unwrap();

        assert_eq!(load_certs(&paths.server_cert).unwrap().len(), 1);
        assert_eq!(load_certs(&paths.client_cert).unwrap().len(), 1);
        assert_eq!(load_root_store(&paths.ca_cert).unwrap().len(), 1);
        assert!(load_private_key(&paths.server_key).is_ok());
        assert!(load_private_key(&paths.client_key).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn dev_pki_key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = generate_dev_pki(dir.path()).unwrap();

        for key in [&paths.server_key, &paths.client_key] {
            let mode = fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }

    #[test]
    fn dev_pki_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        generate_dev_pki(dir.path()).unwrap();
        let error = generate_dev_pki(dir.path()).unwrap_err();

        assert!(format!("{error:#}").contains("ca.pem"), "{error:#}");
    }

    #[test]
    fn load_errors_name_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let not_pem = dir.path().join("empty.pem");
        fs::write(&not_pem, b"hello\n").unwrap();

        let read = load_certs(&missing).unwrap_err();
        assert!(matches!(read, PemError::Read { .. }));
        assert!(read.to_string().contains("missing.pem"));
        let empty = load_certs(&not_pem).unwrap_err();
        assert!(matches!(empty, PemError::NoCertificate { .. }));
        assert!(empty.to_string().contains("empty.pem"));
        let no_key = load_private_key(&not_pem).unwrap_err();
        assert!(matches!(no_key, PemError::NoPrivateKey { .. }));
    }
}
