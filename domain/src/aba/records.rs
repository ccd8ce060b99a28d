//! The three record types of an ABA file and their field-by-field checks.

use super::error::AbaError;
use super::fields::{descriptive, detail, total, Record};
use crate::payments::{AccountNumber, Bsb};

/// The descriptive record (type 0): who sends the file and when it is processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptiveRecord {
    /// Reel sequence number, from 1.
    pub reel_sequence: u8,
    /// Abbreviation of the user's financial institution, such as `WBC`.
    pub financial_institution: String,
    /// Name of the user supplying the file, blank fill removed.
    pub user_name: String,
    /// User identification number allocated by APCA: six digits, leading zeros kept.
    pub user_id: String,
    /// Description of the entries, such as `PAYROLL`.
    pub description: String,
    /// Processing date as written, `DDMMYY`.
    pub processing_date: String,
}

/// A detail record (type 1): one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailRecord {
    /// 1-based line number in the file.
    pub line: u32,
    /// BSB of the account credited or debited.
    pub bsb: Bsb,
    /// Account number, leading zeros kept and blank fill removed.
    pub account_number: AccountNumber,
    /// Indicator: blank, `N` (new or varied details), or a withholding tax
    /// indicator `W`, `X` or `Y`.
    pub indicator: char,
    /// Transaction code.
    pub transaction_code: TransactionCode,
    /// Amount in cents, exactly as in the file.
    pub amount_minor: u64,
    /// Title of the account, blank fill removed.
    pub account_title: String,
    /// Lodgement reference shown to the payee, blank fill removed; may be empty.
    pub lodgement_reference: String,
    /// BSB of the trace account, which receives returned entries.
    pub trace_bsb: Bsb,
    /// Trace account number.
    pub trace_account_number: AccountNumber,
    /// Name of the remitter, blank fill removed.
    pub remitter_name: String,
    /// Withholding tax in cents.
    pub withholding_tax_minor: u64,
}

/// The file total record (type 7), as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTotalRecord {
    /// Net total in cents: the difference between credits and debits.
    pub net_total_minor: u64,
    /// Credit total in cents.
    pub credit_total_minor: u64,
    /// Debit total in cents.
    pub debit_total_minor: u64,
    /// Number of detail records.
    pub record_count: u32,
}

/// A transaction code of a detail record.
///
/// The format defines 13 (externally initiated debit) and 50 to 57 (credits:
/// 50 general, 51 Australian Government security interest, 52 family allowance,
/// 53 pay, 54 pension, 55 allotment, 56 dividend, 57 debenture or note
/// interest). Other codes are rejected when the file is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionCode(u8);

impl TransactionCode {
    /// Checks a code against the codes the format defines.
    pub fn new(code: u8) -> Option<Self> {
        (code == 13 || (50..=57).contains(&code)).then_some(Self(code))
    }

    /// Returns the two-digit code as a number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Returns whether the code debits the account (only 13).
    pub fn is_debit(self) -> bool {
        self.0 == 13
    }
}

pub(crate) fn parse_descriptive(record: &Record<'_>) -> Result<DescriptiveRecord, AbaError> {
    use descriptive::*;
    record.blank(BLANK_2_18)?;
    let reel_sequence = record.number(REEL_SEQUENCE)?;
    if reel_sequence == 0 {
        return Err(AbaError::new(
            record.line,
            REEL_SEQUENCE.name,
            "00",
            "01 or more",
        ));
    }
    let financial_institution = record.raw(FINANCIAL_INSTITUTION);
    if !financial_institution
        .bytes()
        .all(|b| b.is_ascii_uppercase())
    {
        let expected = "three upper-case letters, such as WBC";
        return Err(AbaError::new(
            record.line,
            "financial_institution",
            financial_institution,
            expected,
        ));
    }
    record.blank(BLANK_24_30)?;
    let user_name = record.text(USER_NAME, true)?;
    record.number(USER_ID)?;
    let description = record.text(DESCRIPTION, true)?;
    let processing_date = record.raw(PROCESSING_DATE);
    check_date(record.line, processing_date)?;
    record.blank(BLANK_81_120)?;

    Ok(DescriptiveRecord {
        // Two digits, so at most 99.
        reel_sequence: u8::try_from(reel_sequence).expect("two digits fit in u8"),
        financial_institution: financial_institution.to_owned(),
        user_name,
        user_id: record.raw(USER_ID).to_owned(),
        description,
        processing_date: processing_date.to_owned(),
    })
}

pub(crate) fn parse_detail(record: &Record<'_>) -> Result<DetailRecord, AbaError> {
    use detail::*;
    let bsb = record.bsb(BSB)?;
    let account_number = record.account(ACCOUNT_NUMBER)?;
    let indicator = char::from(record.raw(INDICATOR).as_bytes()[0]);
    if !matches!(indicator, ' ' | 'N' | 'W' | 'X' | 'Y') {
        let expected = "blank, N, W, X or Y";
        return Err(AbaError::new(
            record.line,
            INDICATOR.name,
            record.raw(INDICATOR),
            expected,
        ));
    }
    let transaction_code = transaction_code(record)?;
    let amount_minor = record.number(AMOUNT)?;
    if amount_minor == 0 {
        return Err(AbaError::new(
            record.line,
            AMOUNT.name,
            record.raw(AMOUNT),
            "more than 0",
        ));
    }
    let account_title = record.text(ACCOUNT_TITLE, true)?;
    let lodgement_reference = record.text(LODGEMENT_REFERENCE, false)?;
    let trace_bsb = record.bsb(TRACE_BSB)?;
    let trace_account_number = record.account(TRACE_ACCOUNT)?;
    let remitter_name = record.text(REMITTER_NAME, true)?;
    let withholding_tax_minor = record.number(WITHHOLDING_TAX)?;
    if withholding_tax_minor > 0 && !matches!(indicator, 'W' | 'X' | 'Y') {
        let expected = "00000000 unless the indicator is W, X or Y";
        let value = record.raw(WITHHOLDING_TAX);
        return Err(AbaError::new(
            record.line,
            WITHHOLDING_TAX.name,
            value,
            expected,
        ));
    }

    Ok(DetailRecord {
        line: record.line,
        bsb,
        account_number,
        indicator,
        transaction_code,
        amount_minor,
        account_title,
        lodgement_reference,
        trace_bsb,
        trace_account_number,
        remitter_name,
        withholding_tax_minor,
    })
}

fn transaction_code(record: &Record<'_>) -> Result<TransactionCode, AbaError> {
    let field = detail::TRANSACTION_CODE;
    let expected = "13 (debit) or 50 to 57 (credits)";
    let code = record.number(field).map_err(|e| AbaError {
        expected: expected.into(),
        ..e
    })?;
    u8::try_from(code)
        .ok()
        .and_then(TransactionCode::new)
        .ok_or_else(|| AbaError::new(record.line, field.name, record.raw(field), expected))
}

pub(crate) fn parse_total(record: &Record<'_>) -> Result<FileTotalRecord, AbaError> {
    use total::*;
    record.literal(BSB_FILLER, "999-999")?;
    record.blank(BLANK_9_20)?;
    let net_total_minor = record.number(NET_TOTAL)?;
    let credit_total_minor = record.number(CREDIT_TOTAL)?;
    let debit_total_minor = record.number(DEBIT_TOTAL)?;
    record.blank(BLANK_51_74)?;
    let record_count = record.number(RECORD_COUNT)?;
    record.blank(BLANK_81_120)?;

    Ok(FileTotalRecord {
        net_total_minor,
        credit_total_minor,
        debit_total_minor,
        // Six digits, so at most 999,999.
        record_count: u32::try_from(record_count).expect("six digits fit in u32"),
    })
}

/// Checks a `DDMMYY` date, reading `YY` as 20YY for the leap-year rule.
fn check_date(line: u32, text: &str) -> Result<(), AbaError> {
    let invalid = || AbaError::new(line, "processing_date", text, "a valid date as DDMMYY");
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let part = |i: usize| text[i..i + 2].parse::<u32>().map_err(|_| invalid());
    let (day, month, year) = (part(0)?, part(2)?, 2000 + part(4)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(invalid()),
    };
    if day == 0 || day > days {
        return Err(invalid());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_checked() {
        for ok in ["010126", "290224", "311226", "300426", "290200"] {
            assert_eq!(check_date(1, ok), Ok(()), "{ok}");
        }
        for bad in [
            "000126", "320126", "310426", "290226", "011326", "010026", "0101 6",
        ] {
            assert!(check_date(1, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transaction_codes() {
        assert!(TransactionCode::new(13).is_some_and(TransactionCode::is_debit));
        for code in 50..=57 {
            assert!(
                TransactionCode::new(code).is_some_and(|c| !c.is_debit()),
                "{code}"
            );
        }
        for code in [0, 12, 14, 49, 58, 99] {
            assert!(TransactionCode::new(code).is_none(), "{code}");
        }
    }
}
