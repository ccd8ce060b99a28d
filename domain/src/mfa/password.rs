//! Password rules for operators: length, a small list of breached passwords, the
//! user name, and repeated or sequential patterns.

/// Minimum length in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Maximum length in characters, because Argon2 work grows with the length.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Passwords (and stems of passwords) found most often in breach corpora. A password
/// whose letters, with digits and symbols at either end removed, equal one of these is
/// refused, so `Password2024!` is refused along with `password`.
const COMMON: &[&str] = &[
    "password",
    "passw0rd",
    "qwerty",
    "qwertyuiop",
    "letmein",
    "welcome",
    "admin",
    "administrator",
    "iloveyou",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "sunshine",
    "princess",
    "trustno",
    "master",
    "superman",
    "batman",
    "shadow",
    "michael",
    "starwars",
    "whatever",
    "freedom",
    "computer",
    "secret",
    "changeme",
    "default",
    "login",
    "abc",
    "qazwsx",
    "asdfgh",
    "zxcvbn",
    "summer",
    "winter",
    "spring",
    "autumn",
    "hello",
    "charlie",
    "ninja",
    "mustang",
    "access",
    "flower",
    "cheese",
    "pokemon",
    "liverpool",
    "chelsea",
    "arsenal",
    "payroll",
    "folio",
    "australia",
    "melbourne",
    "sydney",
    "brisbane",
];

/// A password broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// Too short.
    #[error("the password has {chars} characters; use at least {MIN_PASSWORD_CHARS}")]
    TooShort {
        /// Characters given.
        chars: usize,
    },
    /// Too long.
    #[error("the password has {chars} characters; use at most {MAX_PASSWORD_CHARS}")]
    TooLong {
        /// Characters given.
        chars: usize,
    },
    /// On the list of breached passwords.
    #[error("the password is a variant of one of the most breached passwords; choose another")]
    Common,
    /// Contains the user name.
    #[error("the password contains the user name; choose one that does not")]
    ContainsUserName,
    /// Made of one short unit repeated, or a run such as `123456789abc`.
    #[error("the password is a repeated or sequential pattern; choose one that is not")]
    Pattern,
}

impl PasswordError {
    /// Returns the stable snake_case code of the rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "password_too_short",
            Self::TooLong { .. } => "password_too_long",
            Self::Common => "password_breached",
            Self::ContainsUserName => "password_contains_user_name",
            Self::Pattern => "password_pattern",
        }
    }
}

/// Checks a new password against the rules.
///
/// # Errors
/// The first [`PasswordError`] that applies.
pub fn check_password(password: &str, user_name: &str) -> Result<(), PasswordError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort { chars });
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordError::TooLong { chars });
    }
    let lower = password.to_lowercase();
    let name = user_name.trim().to_lowercase();
    if name.chars().count() >= 3 && lower.contains(&name) {
        return Err(PasswordError::ContainsUserName);
    }
    let stem = lower.trim_matches(|c: char| !c.is_alphabetic());
    if COMMON.contains(&stem) || COMMON.contains(&lower.as_str()) {
        return Err(PasswordError::Common);
    }
    if is_repeated_unit(&lower) || is_mostly_sequential(&lower) {
        return Err(PasswordError::Pattern);
    }
    Ok(())
}

/// Returns whether the text is one unit of up to four characters repeated (`aaaa`, `abab`).
fn is_repeated_unit(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    (1..=4).any(|unit| {
        chars.len() >= unit * 2 && chars.iter().enumerate().all(|(i, c)| *c == chars[i % unit])
    })
}

/// Returns whether every step between neighbouring characters is the same +1 or -1, apart from
/// at most two breaks (`1234567890ab`, `abcdefghijkl`).
fn is_mostly_sequential(text: &str) -> bool {
    let codes: Vec<i64> = text.chars().map(|c| i64::from(u32::from(c))).collect();
    let steps: Vec<i64> = codes.windows(2).map(|pair| pair[1] - pair[0]).collect();
    let up = steps.iter().filter(|step| **step == 1).count();
    let down = steps.iter().filter(|step| **step == -1).count();
    let runs = up.max(down);
    steps.len().saturating_sub(runs) <= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_password_accepted() {
        assert_eq!(check_password("correct horse battery", "alice"), Ok(()));
    }

    #[test]
    fn each_rule_rejects() {
        let cases = [
            ("short1!", PasswordError::TooShort { chars: 7 }),
            ("Password2024!", PasswordError::Common),
            ("!!Qwertyuiop99", PasswordError::Common),
            ("my-alice-secret-x", PasswordError::ContainsUserName),
            ("abababababababab", PasswordError::Pattern),
            ("zzzzzzzzzzzzzzzz", PasswordError::Pattern),
            ("1234567890abcd", PasswordError::Pattern),
            ("mnopqrstuvwxyz", PasswordError::Pattern),
        ];
        for (password, expected) in cases {
            assert_eq!(
                check_password(password, "alice"),
                Err(expected),
                "{password}"
            );
        }
        let long = "x9".repeat(65);
        assert_eq!(
            check_password(&long, "alice"),
            Err(PasswordError::TooLong { chars: 130 })
        );
    }
}
