//! Input rules of the simulated bank. Each rule has its own problem title, so the adapter
//! can keep the title without the request values.

use domain::events::PayeeAccount;

use crate::bank::BankPaymentRequest;

/// Maximum length of the payee name and the reference, in characters.
const MAX_TEXT_CHARS: usize = 140;

/// Maximum idempotency key length, in bytes.
const MAX_KEY_BYTES: usize = 255;

/// Checks the `Idempotency-Key` header value; returns the problem title on failure.
pub(super) fn check_key(key: Option<&str>) -> Result<&str, &'static str> {
    let key = key.ok_or("missing Idempotency-Key header")?;
    let visible = key.bytes().all(|byte| byte.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !visible {
        return Err("invalid Idempotency-Key: expected 1 to 255 visible ASCII characters");
    }
    Ok(key)
}

/// Checks a payment body; returns the problem title of the first broken rule.
pub(super) fn check_payment(payment: &BankPaymentRequest) -> Result<(), &'static str> {
    if payment.amount_minor == 0 {
        return Err("invalid amount_minor: must be greater than zero");
    }
    if payment.currency != "AUD" {
        return Err("invalid currency: this bank takes AUD only");
    }
    check_text(
        &payment.payee_name,
        1,
        "invalid payee_name: expected 1 to 140 characters",
    )?;
    check_text(
        &payment.reference,
        0,
        "invalid reference: expected at most 140 characters",
    )?;
    match &payment.account {
        PayeeAccount::Bsb { bsb, account } => check_bsb(bsb, account),
        PayeeAccount::Iban { iban } => check_iban(iban),
        PayeeAccount::Unavailable { .. } => Err("invalid account: erased or sealed"),
    }
}

fn check_text(text: &str, min_chars: usize, title: &'static str) -> Result<(), &'static str> {
    let chars = text.chars().count();
    let printable = !text.chars().any(char::is_control);
    if chars < min_chars || chars > MAX_TEXT_CHARS || !printable {
        return Err(title);
    }
    Ok(())
}

fn check_bsb(bsb: &str, account: &str) -> Result<(), &'static str> {
    if bsb.len() != 6 || !bsb.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err("invalid bsb: expected six digits");
    }
    // The account number field of an ABA detail record is nine characters.
    if account.is_empty() || account.len() > 9 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid account: expected 1 to 9 digits");
    }
    Ok(())
}

/// Checks the IBAN shape and its ISO 13616 mod-97 check digits.
fn check_iban(iban: &str) -> Result<(), &'static str> {
    let bytes = iban.as_bytes();
    let shaped = (15..=34).contains(&bytes.len())
        && bytes[..2].iter().all(u8::is_ascii_uppercase)
        && bytes[2..4].iter().all(u8::is_ascii_digit)
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit());
    if !shaped {
        return Err("invalid iban: expected 15 to 34 upper-case letters and digits");
    }
    if iban_remainder(bytes) != 1 {
        return Err("invalid iban: check digits do not match");
    }
    Ok(())
}

/// Computes the IBAN mod-97 remainder with the country and check digits moved to the end
/// and letters replaced by 10 to 35, one digit at a time so nothing overflows.
fn iban_remainder(bytes: &[u8]) -> u32 {
    let rearranged = bytes[4..].iter().chain(&bytes[..4]);
    rearranged.fold(0, |remainder, byte| {
        let value = if byte.is_ascii_digit() {
            u32::from(byte - b'0')
        } else {
            u32::from(byte - b'A') + 10
        };
        if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(account: PayeeAccount) -> BankPaymentRequest {
        BankPaymentRequest {
            idempotency_key: String::new(),
            amount_minor: 100,
            currency: "AUD".into(),
            account,
            payee_name: "Payee".into(),
            reference: String::new(),
        }
    }

    fn bsb(bsb: &str, account: &str) -> PayeeAccount {
        PayeeAccount::Bsb {
            bsb: bsb.into(),
            account: account.into(),
        }
    }

    #[test]
    fn valid_payments_pass() {
        assert_eq!(check_payment(&payment(bsb("123456", "00012345"))), Ok(()));
        let iban = PayeeAccount::Iban {
            iban: "GB82WEST12345698765432".into(),
        };
        assert_eq!(check_payment(&payment(iban)), Ok(()));
    }

    #[test]
    fn broken_rules_rejected() {
        let mut zero = payment(bsb("123456", "1"));
        zero.amount_minor = 0;
        let mut usd = payment(bsb("123456", "1"));
        usd.currency = "USD".into();
        let mut unnamed = payment(bsb("123456", "1"));
        unnamed.payee_name.clear();
        let cases = [
            (zero, "invalid amount_minor"),
            (usd, "invalid currency"),
            (unnamed, "invalid payee_name"),
            (payment(bsb("12345", "1")), "invalid bsb"),
            (payment(bsb("123456", "1234567890")), "invalid account"),
            (
                payment(PayeeAccount::Iban {
                    iban: "GB82WEST12345698765433".into(),
                }),
                "check digits",
            ),
            (
                payment(PayeeAccount::Iban {
                    iban: "gb82west12345698765432".into(),
                }),
                "invalid iban",
            ),
        ];
        for (payment, expected) in cases {
            let title = check_payment(&payment).unwrap_err();
            assert!(title.contains(expected), "{title}");
        }
    }

    #[test]
    fn keys_checked() {
        assert_eq!(check_key(Some("abc-1")), Ok("abc-1"));
        assert!(check_key(None).is_err());
        assert!(check_key(Some("")).is_err());
        assert!(check_key(Some("has space")).is_err());
        assert!(check_key(Some(&"k".repeat(256))).is_err());
    }
}
