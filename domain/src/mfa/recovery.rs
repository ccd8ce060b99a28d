//! Recovery codes: single-use codes for an operator who has lost their authenticator.
//!
//! A code reads `abcd-efgh-ijkl-mnop-qrst`: the first group is a public lookup id
//! (20 bits, unique per operator) and the other four groups are the secret (80
//! bits). Only an Argon2id hash of the secret is stored; the id lets the server find
//! the one hash to check instead of trying every code.

use zeroize::Zeroizing;

use super::base32;

/// Codes issued at a time.
pub const CODES_PER_SET: usize = 10;
/// Characters of the lookup id.
const ID_CHARS: usize = 4;
/// Characters of the secret part (80 bits of base32).
const SECRET_CHARS: usize = 16;

/// A recovery code was malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryCodeError {
    /// The code does not have 20 base32 characters once dashes and spaces are removed.
    #[error(
        "a recovery code has 20 letters and digits in five groups of four \
         (such as abcd-efgh-ijkl-mnop-qrst); this one has {chars} after removing dashes"
    )]
    WrongLength {
        /// Characters after removing separators.
        chars: usize,
    },
    /// The code has a character outside the base32 alphabet.
    #[error("a recovery code uses the letters a to z and the digits 2 to 7 only")]
    InvalidCharacter,
    /// The random source failed.
    #[error("the system random source failed: {0}")]
    Random(String),
}

/// A recovery code split into its lookup id and its secret; the secret never prints.
pub struct RecoveryCode {
    /// Public lookup id, lower case.
    pub id: String,
    secret: Zeroizing<String>,
}

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryCode({}-redacted)", self.id)
    }
}

impl RecoveryCode {
    /// Parses a code as typed: case and separators do not matter.
    ///
    /// # Errors
    /// [`RecoveryCodeError::WrongLength`] or [`RecoveryCodeError::InvalidCharacter`].
    pub fn parse(text: &str) -> Result<Self, RecoveryCodeError> {
        let compact: Zeroizing<String> = Zeroizing::new(
            text.chars()
                .filter(|c| *c != '-' && !c.is_whitespace())
                .map(|c| c.to_ascii_lowercase())
                .collect(),
        );
        let chars = compact.chars().count();
        if chars != ID_CHARS + SECRET_CHARS {
            return Err(RecoveryCodeError::WrongLength { chars });
        }
        if base32::decode(&compact).is_none() {
            return Err(RecoveryCodeError::InvalidCharacter);
        }
        Ok(RecoveryCode {
            id: compact[..ID_CHARS].to_owned(),
            secret: Zeroizing::new(compact[ID_CHARS..].to_owned()),
        })
    }

    /// Returns the secret part, the input to the stored hash.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Returns the code in its display form, `abcd-efgh-ijkl-mnop-qrst`.
    pub fn display(&self) -> Zeroizing<String> {
        let whole = format!("{}{}", self.id, self.secret.as_str());
        let groups: Vec<&str> = (0..whole.len())
            .step_by(4)
            .map(|start| &whole[start..start + 4])
            .collect();
        Zeroizing::new(groups.join("-"))
    }
}

/// Generates a set of [`CODES_PER_SET`] codes with distinct lookup ids.
///
/// # Errors
/// [`RecoveryCodeError::Random`] if the system random source fails.
pub fn generate_set() -> Result<Vec<RecoveryCode>, RecoveryCodeError> {
    let mut codes: Vec<RecoveryCode> = Vec::with_capacity(CODES_PER_SET);
    while codes.len() < CODES_PER_SET {
        let mut bytes = Zeroizing::new([0u8; 15]);
        getrandom::getrandom(bytes.as_mut())
            .map_err(|e| RecoveryCodeError::Random(e.to_string()))?;
        // 15 bytes are 24 base32 characters; the first 20 are used (100 random bits).
        let text = Zeroizing::new(base32::encode(bytes.as_ref()).to_ascii_lowercase());
        let code = RecoveryCode::parse(&text[..ID_CHARS + SECRET_CHARS])?;
        if codes.iter().all(|existing| existing.id != code.id) {
            codes.push(code);
        }
    }
    Ok(codes)
}

/// Renders a set as the plain-text file an operator downloads and keeps.
pub fn render_file(operator: &str, codes: &[RecoveryCode]) -> Zeroizing<String> {
    let mut text = format!(
        "Folio recovery codes for {operator}\n\n\
         Each code works once, in place of a code from your authenticator app.\n\
         Keep this file offline. Generating new codes voids every code below.\n\n"
    );
    for code in codes {
        text.push_str(&code.display());
        text.push('\n');
    }
    Zeroizing::new(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_parse_back_and_have_distinct_ids() {
        let codes = generate_set().unwrap();
        assert_eq!(codes.len(), CODES_PER_SET);
        for code in &codes {
            let shown = code.display();
            assert_eq!(shown.len(), 24);
            let parsed = RecoveryCode::parse(&shown.to_uppercase()).unwrap();
            assert_eq!(parsed.id, code.id);
            assert_eq!(parsed.secret(), code.secret());
        }
        let mut ids: Vec<&str> = codes.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CODES_PER_SET);
    }

    #[test]
    fn malformed_codes_rejected() {
        assert_eq!(
            RecoveryCode::parse("abcd-efgh").unwrap_err(),
            RecoveryCodeError::WrongLength { chars: 8 }
        );
        assert_eq!(
            RecoveryCode::parse("abcd-efgh-ijkl-mnop-qrs1").unwrap_err(),
            RecoveryCodeError::InvalidCharacter
        );
        assert!(RecoveryCode::parse(" ABCD efgh-ijkl-mnop-qrst ").is_ok());
    }

    #[test]
    fn file_lists_every_code_and_debug_hides_secret() {
        let codes = generate_set().unwrap();
        let file = render_file("alice", &codes);
        for code in &codes {
            assert!(file.contains(code.display().as_str()));
            assert!(!format!("{code:?}").contains(code.secret()));
        }
    }
}
