//! A small deterministic PDF writer for the bundle's report: plain text in Courier on A4
//! pages, no creation date, and a document id derived from the content, so the same text
//! always gives the same bytes.

use std::fmt::Write as _;

/// Characters per line before a line wraps (Courier 9 pt on A4 with 40 pt margins).
const COLUMNS: usize = 95;

/// Lines per page.
const LINES_PER_PAGE: usize = 64;

/// Renders `lines` as a PDF 1.4 document.
pub fn render(lines: &[String]) -> Vec<u8> {
    let wrapped = wrap(lines);
    let pages: Vec<&[String]> = if wrapped.is_empty() {
        vec![&[]]
    } else {
        wrapped.chunks(LINES_PER_PAGE).collect()
    };

    // Objects 1 to 3 are the catalog, the page tree and the font; each page then takes two
    // objects, the page and its content stream.
    let mut objects: Vec<String> = Vec::new();
    let kids: Vec<String> = (0..pages.len())
        .map(|i| format!("{} 0 R", 4 + 2 * i))
        .collect();
    objects.push("<< /Type /Catalog /Pages 2 0 R >>".to_owned());
    objects.push(format!(
        "<< /Type /Pages /Kids [{}] /Count {} >>",
        kids.join(" "),
        pages.len()
    ));
    objects.push("<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>".to_owned());
    for (index, page) in pages.iter().enumerate() {
        let content_id = 5 + 2 * index;
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>"
        ));
        let stream = page_stream(page);
        objects.push(format!(
            "<< /Length {} >>\nstream\n{stream}\nendstream",
            stream.len()
        ));
    }
    assemble(&objects)
}

fn page_stream(lines: &[String]) -> String {
    let mut stream = String::from("BT /F1 9 Tf 12 TL 40 800 Td");
    for line in lines {
        let _ = write!(stream, " ({}) Tj T*", escape(line));
    }
    stream.push_str(" ET");
    stream
}

/// Writes the header, the objects, the cross-reference table and the trailer.
fn assemble(objects: &[String]) -> Vec<u8> {
    let mut out = String::from("%PDF-1.4\n");
    let mut offsets = Vec::with_capacity(objects.len());
    for (index, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        let _ = write!(out, "{} 0 obj\n{object}\nendobj\n", index + 1);
    }
    let xref = out.len();
    let _ = write!(out, "xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for offset in offsets {
        let _ = writeln!(out, "{offset:010} 00000 n ");
    }
    // The document id is a digest of everything before it, never a time or random value.
    let id = &blake3::hash(out.as_bytes()).to_hex()[..32];
    let _ = write!(
        out,
        "trailer\n<< /Size {} /Root 1 0 R /ID [<{id}> <{id}>] >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    );
    out.into_bytes()
}

/// Wraps long lines and replaces characters outside printable ASCII with `?`, because the
/// standard Courier font has no encoding for them here.
fn wrap(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines {
        let ascii: Vec<char> = line
            .chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
            .collect();
        if ascii.is_empty() {
            out.push(String::new());
        }
        for chunk in ascii.chunks(COLUMNS) {
            out.push(chunk.iter().collect());
        }
    }
    out
}

/// Escapes a PDF literal string.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('(', "\\(")
        .replace(')', "\\)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_is_deterministic_and_well_formed() {
        let lines: Vec<String> = (0..150)
            .map(|i| format!("line {i} (with parens) \\ é"))
            .collect();
        let first = render(&lines);
        assert_eq!(first, render(&lines));
        let text = String::from_utf8(first.clone()).unwrap();
        assert!(text.starts_with("%PDF-1.4\n"));
        assert!(text.ends_with("%%EOF\n"));
        assert!(text.contains("/Count 3"), "150 lines make three pages");
        assert!(text.contains("(line 7 \\(with parens\\) \\\\ ?) Tj"));
        assert!(!text.contains("CreationDate"));

        // Every cross-reference offset points at its object.
        let xref = text.find("xref\n").unwrap();
        for (index, line) in text[xref..].lines().skip(3).take(9).enumerate() {
            let offset: usize = line[..10].parse().unwrap();
            assert!(
                text[offset..].starts_with(&format!("{} 0 obj", index + 1)),
                "object {}",
                index + 1
            );
        }
    }
}
