//! The ledger export file: what `folio verify FILE` and auditors read.
//!
//! Layout (all integers big-endian, see `docs/ledger-format.md`):
//! magic `FOLIOLDG` | file format version u16 | repeated (u32 length, record)
//! | u32 zero | u32 length, signed head.
//!
//! A file that ends right after a record has no trailer. That is not a decode
//! error: the verifier reports it as a truncated tail.

use std::io::Write;

use crate::record::{MAX_PAYLOAD_LEN, SIGNED_HEAD_LEN};

/// Magic bytes that open an export file.
pub const MAGIC: &[u8; 8] = b"FOLIOLDG";

/// Version of the export file layout written by this code.
pub const FILE_FORMAT_VERSION: u16 = 1;

/// Largest record length accepted when decoding (2 MiB: the 1 MiB payload cap
/// plus generous room for the other fields).
pub const MAX_RECORD_LEN: usize = 2 * MAX_PAYLOAD_LEN;

/// A decoded export file: the raw records and the raw signed head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedLedger {
    /// Encoded records, in file order.
    pub records: Vec<Vec<u8>>,
    /// Encoded signed head, or `None` when the file has no trailer.
    pub signed_head: Option<Vec<u8>>,
}

/// An export file could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The file does not start with `FOLIOLDG`.
    #[error("not a folio export: missing magic bytes FOLIOLDG")]
    BadMagic,
    /// The file format version is not known to this build.
    #[error("unsupported export file format version {0}")]
    UnsupportedVersion(u16),
    /// The file ends inside a length prefix or a record.
    #[error("export truncated at byte offset {offset} while reading {what}")]
    Truncated {
        /// Offset where the missing bytes start.
        offset: usize,
        /// Name of the field being read.
        what: &'static str,
    },
    /// A record length prefix is over [`MAX_RECORD_LEN`].
    #[error("record {index} declares {len} bytes, over the limit of {max}")]
    RecordTooLong {
        /// 0-based record index in the file.
        index: usize,
        /// Declared length.
        len: u32,
        /// Limit.
        max: usize,
    },
    /// The signed head length is not the signed-head record length.
    #[error("signed head declares {len} bytes, expected {expected}")]
    BadHeadLength {
        /// Declared length.
        len: u32,
        /// Expected length.
        expected: usize,
    },
    /// Bytes follow the trailer.
    #[error("{count} trailing bytes after the signed head")]
    TrailingBytes {
        /// Number of extra bytes.
        count: usize,
    },
}

/// Encodes an export file from encoded records and an encoded signed head.
pub fn encode<'a>(records: impl Iterator<Item = &'a [u8]>, signed_head: &[u8]) -> Vec<u8> {
    let mut writer = ExportWriter::new(Vec::new()).expect("writing to a Vec cannot fail");
    for record in records {
        writer
            .write_record(record)
            .expect("writing to a Vec cannot fail");
    }
    writer
        .finish(signed_head)
        .expect("writing to a Vec cannot fail")
}

/// Writes an export file record by record, so a large ledger need not be held in memory.
#[derive(Debug)]
pub struct ExportWriter<W: Write> {
    out: W,
}

impl<W: Write> ExportWriter<W> {
    /// Writes the file header and returns the writer.
    ///
    /// # Errors
    /// Returns the error of the underlying writer.
    pub fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&FILE_FORMAT_VERSION.to_be_bytes())?;
        Ok(ExportWriter { out })
    }

    /// Appends one encoded record.
    ///
    /// # Errors
    /// Returns the error of the underlying writer.
    ///
    /// # Panics
    /// Panics on an empty record or one over [`MAX_RECORD_LEN`], because a
    /// decoder would read it as the trailer or reject it.
    pub fn write_record(&mut self, record: &[u8]) -> std::io::Result<()> {
        assert!(
            !record.is_empty() && record.len() <= MAX_RECORD_LEN,
            "invalid record length"
        );
        self.write_prefixed(record)
    }

    /// Writes the trailer (zero length, then the signed head) and returns the inner writer.
    ///
    /// # Errors
    /// Returns the error of the underlying writer.
    pub fn finish(mut self, signed_head: &[u8]) -> std::io::Result<W> {
        self.out.write_all(&0u32.to_be_bytes())?;
        self.write_prefixed(signed_head)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn write_prefixed(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(bytes.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "record too long")
        })?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(bytes)
    }
}

/// Decodes an export file into raw records and the raw signed head.
///
/// # Errors
/// [`ExportError`] for a bad header, a length prefix or record cut short, an
/// oversized record, a malformed trailer or trailing bytes.
pub fn decode(bytes: &[u8]) -> Result<ExportedLedger, ExportError> {
    let mut cursor = Cursor { bytes, offset: 0 };
    if cursor
        .take(MAGIC.len(), "magic")
        .map_err(|_| ExportError::BadMagic)?
        != MAGIC
    {
        return Err(ExportError::BadMagic);
    }
    let version = cursor.u16_version()?;
    if version != FILE_FORMAT_VERSION {
        return Err(ExportError::UnsupportedVersion(version));
    }

    let mut records = Vec::new();
    loop {
        if cursor.is_at_end() {
            return Ok(ExportedLedger {
                records,
                signed_head: None,
            });
        }
        let len = cursor.u32("record length")?;
        if len == 0 {
            break;
        }
        if len as usize > MAX_RECORD_LEN {
            return Err(ExportError::RecordTooLong {
                index: records.len(),
                len,
                max: MAX_RECORD_LEN,
            });
        }
        records.push(cursor.take(len as usize, "record")?.to_vec());
    }

    let signed_head = decode_trailer(&mut cursor)?;
    Ok(ExportedLedger {
        records,
        signed_head: Some(signed_head),
    })
}

/// Reads the signed head after the zero-length marker and checks nothing follows.
fn decode_trailer(cursor: &mut Cursor<'_>) -> Result<Vec<u8>, ExportError> {
    let len = cursor.u32("signed head length")?;
    if len as usize != SIGNED_HEAD_LEN {
        return Err(ExportError::BadHeadLength {
            len,
            expected: SIGNED_HEAD_LEN,
        });
    }
    let head = cursor.take(len as usize, "signed head")?.to_vec();
    let rest = cursor.bytes.len() - cursor.offset;
    if rest != 0 {
        return Err(ExportError::TrailingBytes { count: rest });
    }
    Ok(head)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn is_at_end(&self) -> bool {
        self.offset == self.bytes.len()
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], ExportError> {
        let end = self
            .offset
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(ExportError::Truncated {
                offset: self.offset,
                what,
            });
        };
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ExportError> {
        let mut buf = [0u8; 4];
        buf.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_be_bytes(buf))
    }

    fn u16_version(&mut self) -> Result<u16, ExportError> {
        let mut buf = [0u8; 2];
        buf.copy_from_slice(self.take(2, "file format version")?);
        Ok(u16::from_be_bytes(buf))
    }
}
