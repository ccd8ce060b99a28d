//! AWS Signature Version 4 for requests with a JSON body, as AWS KMS and Secrets Manager
//! take them.
//!
//! Folio signs its few AWS calls itself instead of pulling in the AWS SDK, whose crates
//! took longer to build than the rest of Folio together on the two-core machines the
//! project builds on. The signature is checked against botocore's signer in the tests.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::secret::SecretString;

type HmacSha256 = Hmac<Sha256>;

/// Credentials of one AWS principal.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Access key id (not secret; it names the key).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretString,
    /// Session token of temporary credentials, empty for long-term keys.
    pub session_token: SecretString,
}

/// One request to sign.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `POST`.
    pub method: &'a str,
    /// Host header value (`kms.ap-southeast-2.amazonaws.com`, or `127.0.0.1:5000`).
    pub host: &'a str,
    /// Path, `/` for the JSON APIs.
    pub path: &'a str,
    /// Extra headers to sign, lowercase names (`content-type`, `x-amz-target`).
    pub headers: &'a [(&'a str, &'a str)],
    /// Request body.
    pub body: &'a [u8],
}

/// Signs `request` for `service` in `region` at `amz_date` (`YYYYMMDDTHHMMSSZ`).
/// Returns the headers to add: `x-amz-date`, `x-amz-security-token` when the credentials
/// have one, and `authorization`.
pub fn sign(
    credentials: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    request: &Request<'_>,
) -> Vec<(String, String)> {
    let date = &amz_date[..8.min(amz_date.len())];
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    headers.push(("host".to_owned(), request.host.to_owned()));
    headers.push(("x-amz-date".to_owned(), amz_date.to_owned()));
    if !credentials.session_token.is_empty() {
        let token = credentials.session_token.expose().to_owned();
        headers.push(("x-amz-security-token".to_owned(), token));
    }
    headers.sort();

    let signed_headers = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let canonical_request = format!(
        "{}\n{}\n\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        request.path,
        hex::encode(Sha256::digest(request.body))
    );

    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let secret = format!("AWS4{}", credentials.secret_access_key.expose());
    let key = [date, region, service, "aws4_request"]
        .iter()
        .fold(secret.into_bytes(), |key, part| hmac(&key, part.as_bytes()));
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));

    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, \
         Signature={signature}",
        credentials.access_key_id
    );
    let mut out = vec![("x-amz-date".to_owned(), amz_date.to_owned())];
    if !credentials.session_token.is_empty() {
        out.push((
            "x-amz-security-token".to_owned(),
            credentials.session_token.expose().to_owned(),
        ));
    }
    out.push(("authorization".to_owned(), authorization));
    out
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The current time as SigV4 wants it, `YYYYMMDDTHHMMSSZ`.
pub fn amz_date_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}
