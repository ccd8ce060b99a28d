//! Parser for ABA files (Cemtex direct entry), the bulk payment format that
//! Australian banks accept.
//!
//! A file is a sequence of fixed-width records of 120 printable ASCII characters,
//! each ending in CRLF or LF (the last line may lack its line ending). The first
//! record is the descriptive record (type 0), the last is the file total record
//! (type 7), and every record between them is a detail record (type 1). The
//! parser checks every field, and the file totals against the detail records.
//!
//! Parsing checks the format only. [`AbaFile::check_payments`] then applies
//! Folio's rule on which transactions it imports as payments.

mod error;
mod fields;
mod records;

use uuid::Uuid;

use crate::events::{AbaBatchImported, PayeeAccount, PaymentSource};
use crate::payments::{AllowList, PaymentRejection, PaymentRequest};
use fields::{Record, RECORD_TYPE};

pub use error::AbaError;
pub use records::{DescriptiveRecord, DetailRecord, FileTotalRecord, TransactionCode};

/// Transaction codes that Folio imports as payments: 50 (general credit) and
/// 53 (pay).
///
/// Folio sends money to allow-listed payees and never draws it, so the debit
/// code 13 is rejected. The other credit codes (51, 52, 54 to 57) mark
/// government interest, family allowance, pension, allotment, dividend and
/// debenture payments, which payroll and tax remittance clients do not send.
pub const PAYMENT_TRANSACTION_CODES: [u8; 2] = [50, 53];

/// A parsed ABA file whose totals match its detail records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbaFile {
    /// The descriptive record (line 1).
    pub descriptive: DescriptiveRecord,
    /// The detail records, in file order; never empty.
    pub details: Vec<DetailRecord>,
    /// The file total record (last line).
    pub total: FileTotalRecord,
}

/// Parses and checks an ABA file.
///
/// # Errors
/// The first [`AbaError`] found, reading from the top. A line may not be 120
/// printable ASCII characters, a record may have the wrong type for its place, a
/// field may break the format, or the file totals or record count may not match
/// the detail records.
pub fn parse(bytes: &[u8]) -> Result<AbaFile, AbaError> {
    let lines = split_lines(bytes)?;
    let records = lines
        .iter()
        .enumerate()
        .map(|(i, line)| Record::new(line_number(i), line))
        .collect::<Result<Vec<_>, _>>()?;

    let (first, rest) = records
        .split_first()
        .ok_or_else(|| AbaError::new(1, "record", "empty file", "a descriptive record (type 0)"))?;
    expect_type(first, b'0', "0 (descriptive record) as the first record")?;
    let descriptive = records::parse_descriptive(first)?;

    let Some((last, middle)) = rest.split_last() else {
        let expected = "detail records (type 1) and a file total record (type 7) after line 1";
        return Err(AbaError::new(1, "record", "end of file", expected));
    };
    let details = middle
        .iter()
        .map(parse_detail_line)
        .collect::<Result<Vec<_>, _>>()?;
    expect_type(last, b'7', "7 (file total record) as the last record")?;
    if details.is_empty() {
        let expected = "at least one detail record (type 1) before the file total record";
        return Err(AbaError::new(last.line, "record_type", "7", expected));
    }
    let total = records::parse_total(last)?;

    check_totals(last.line, &details, &total)?;
    Ok(AbaFile {
        descriptive,
        details,
        total,
    })
}

impl AbaFile {
    /// Checks that every detail record can be imported as a payment: its
    /// transaction code is in [`PAYMENT_TRANSACTION_CODES`] and it carries no
    /// withholding tax.
    ///
    /// # Errors
    /// An [`AbaError`] for the first detail record that breaks the rule.
    pub fn check_payments(&self) -> Result<(), AbaError> {
        for detail in &self.details {
            let code = detail.transaction_code.get();
            if !PAYMENT_TRANSACTION_CODES.contains(&code) {
                let expected = "50 (general credit) or 53 (pay); Folio imports credits to payees \
                                only, so debits (13) and codes 51, 52 and 54 to 57 are rejected";
                return Err(AbaError::new(
                    detail.line,
                    "transaction_code",
                    code.to_string(),
                    expected,
                ));
            }
            if detail.withholding_tax_minor != 0 {
                let value = detail.withholding_tax_minor.to_string();
                let expected = "0: Folio does not import payments with withholding tax";
                return Err(AbaError::new(
                    detail.line,
                    "withholding_tax",
                    value,
                    expected,
                ));
            }
        }
        Ok(())
    }

    /// Builds the `aba.batch_imported` event for this file.
    pub fn batch_imported(&self, batch_id: Uuid, file_bytes: &[u8]) -> AbaBatchImported {
        // `parse` checked that the count equals the six-digit record count field.
        let detail_count = u32::try_from(self.details.len()).expect("at most 999,999 details");
        assert_eq!(detail_count, self.total.record_count);
        AbaBatchImported {
            batch_id,
            file_blake3: *blake3::hash(file_bytes).as_bytes(),
            detail_count,
            credit_total_minor: self.total.credit_total_minor,
            debit_total_minor: self.total.debit_total_minor,
            user_name: self.descriptive.user_name.clone(),
            processing_date: self.descriptive.processing_date.clone(),
        }
    }
}

impl DetailRecord {
    /// Returns the account of this record in the form the allow-list stores.
    pub fn payee_account(&self) -> PayeeAccount {
        PayeeAccount::Bsb {
            bsb: self.bsb.digits().to_owned(),
            account: self.account_number.as_str().to_owned(),
        }
    }

    /// Builds the payment request for this record: AUD, paid to the active payee
    /// whose account matches, with the lodgement reference as the reference.
    ///
    /// The request still has to pass [`crate::payments::decide_submission`].
    ///
    /// # Errors
    /// [`PaymentRejection::AccountNotAllowListed`] if no active payee has the
    /// record's BSB and account number.
    pub fn payment_request(
        &self,
        allow_list: &AllowList,
        payment_id: Uuid,
        batch_id: Uuid,
    ) -> Result<PaymentRequest, PaymentRejection> {
        let payee = allow_list
            .find_by_account(&self.payee_account())
            .ok_or_else(|| {
                let account = format!("{} {}", self.bsb, self.account_number);
                PaymentRejection::AccountNotAllowListed { account }
            })?;
        Ok(PaymentRequest {
            payment_id,
            payee_id: payee.payee_id,
            amount_minor: self.amount_minor,
            currency: "AUD".to_owned(),
            reference: self.lodgement_reference.clone(),
            source: PaymentSource::AbaFile {
                batch_id,
                line: self.line,
            },
        })
    }
}

/// Splits a file into lines without their endings.
///
/// The first line decides the ending: CRLF if it ends in "\r\n", LF otherwise.
/// Every other line must end the same way, except that the last line may have no
/// ending at all.
fn split_lines(bytes: &[u8]) -> Result<Vec<&[u8]>, AbaError> {
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // A final line ending leaves an empty piece after it, which is not a line.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let ended = bytes.ends_with(b"\n");
    let first_has_ending = lines.len() > 1 || ended;
    let crlf = first_has_ending && lines.first().is_some_and(|l| l.ends_with(b"\r"));

    let count = lines.len();
    for (i, line) in lines.iter_mut().enumerate() {
        let has_ending = i + 1 < count || ended;
        if !(crlf && has_ending) {
            continue;
        }
        *line = line.strip_suffix(b"\r").ok_or_else(|| {
            let expected = "CRLF line ending, like the first line";
            AbaError::new(line_number(i), "line_ending", "LF", expected)
        })?;
    }
    Ok(lines)
}

fn parse_detail_line(record: &Record<'_>) -> Result<DetailRecord, AbaError> {
    expect_type(
        record,
        b'1',
        "1 (detail record) between the first and last records",
    )?;
    records::parse_detail(record)
}

fn expect_type(record: &Record<'_>, expected_type: u8, expected: &str) -> Result<(), AbaError> {
    if record.record_type() == expected_type {
        return Ok(());
    }
    Err(AbaError::new(
        record.line,
        RECORD_TYPE.name,
        record.raw(RECORD_TYPE),
        expected,
    ))
}

/// Compares the file total record with sums over the detail records.
fn check_totals(
    line: u32,
    details: &[DetailRecord],
    total: &FileTotalRecord,
) -> Result<(), AbaError> {
    let mismatch = |field: &'static str, found: u64, computed: u64| {
        let expected = format!("{computed}, computed from the detail records");
        AbaError::new(line, field, found.to_string(), expected)
    };

    let count = u64::try_from(details.len()).unwrap_or(u64::MAX);
    if u64::from(total.record_count) != count {
        return Err(mismatch("record_count", total.record_count.into(), count));
    }
    let (credit, debit) = sum_details(line, details)?;
    if total.credit_total_minor != credit {
        return Err(mismatch("credit_total", total.credit_total_minor, credit));
    }
    if total.debit_total_minor != debit {
        return Err(mismatch("debit_total", total.debit_total_minor, debit));
    }
    let net = credit.abs_diff(debit);
    if total.net_total_minor != net {
        return Err(mismatch("net_total", total.net_total_minor, net));
    }
    Ok(())
}

/// Sums credit and debit amounts in cents, without wrapping.
fn sum_details(line: u32, details: &[DetailRecord]) -> Result<(u64, u64), AbaError> {
    let (mut credit, mut debit) = (0u64, 0u64);
    for detail in details {
        let sum = if detail.transaction_code.is_debit() {
            &mut debit
        } else {
            &mut credit
        };
        *sum = sum.checked_add(detail.amount_minor).ok_or_else(|| {
            AbaError::new(
                line,
                "credit_total",
                "overflow",
                "totals that fit in 64 bits",
            )
        })?;
    }
    Ok((credit, debit))
}

fn line_number(index: usize) -> u32 {
    // A file with more than 4 billion lines is over 480 GB; saturate rather than wrap.
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
