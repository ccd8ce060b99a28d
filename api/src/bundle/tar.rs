//! A reproducible ustar archive of a bundle directory, and a strict reader for it.
//!
//! Entries are regular files only, in sorted path order, with mode 0644, owner and group 0,
//! modification time 0 and no owner names, so the same files always give the same bytes.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};

const BLOCK: usize = 512;

/// Writes `files` (paths relative to `root`, sorted by the caller) as a ustar archive.
///
/// # Errors
/// A read or write error, or a path longer than the 100 bytes of a ustar name.
pub fn write_archive(root: &Path, files: &[String], out: &mut impl Write) -> anyhow::Result<()> {
    for name in files {
        let mut file = std::fs::File::open(root.join(name))
            .with_context(|| format!("cannot open {name} for the archive"))?;
        let size = file.metadata()?.len();
        out.write_all(&header(name, size)?)?;
        let copied = std::io::copy(&mut file, out)?;
        assert_eq!(copied, size, "the file changed while it was archived");
        let padding = (BLOCK - (size as usize % BLOCK)) % BLOCK;
        out.write_all(&vec![0; padding])?;
    }
    out.write_all(&[0; 2 * BLOCK])?;
    Ok(())
}

fn header(name: &str, size: u64) -> anyhow::Result<[u8; BLOCK]> {
    if name.len() > 100 {
        bail!("bundle path {name} is over the 100 bytes of a ustar name");
    }
    let mut block = [0u8; BLOCK];
    block[..name.len()].copy_from_slice(name.as_bytes());
    put_octal(&mut block[100..108], 0o644);
    put_octal(&mut block[108..116], 0);
    put_octal(&mut block[116..124], 0);
    put_octal(&mut block[124..136], size);
    put_octal(&mut block[136..148], 0);
    block[156] = b'0';
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
    Ok(block)
}

/// Writes `value` as zero-padded octal digits and a NUL, filling `field`.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

fn read_octal(field: &[u8]) -> anyhow::Result<u64> {
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    u64::from_str_radix(&text, 8).with_context(|| format!("{text:?} is not an octal number"))
}

/// Extracts an archive into `dest`, accepting only regular files with relative paths that
/// stay inside `dest`, and returns their paths.
///
/// # Errors
/// A read error, a bad checksum, or an entry of another type or with an unsafe path.
pub fn extract(archive: &mut impl Read, dest: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    loop {
        let mut block = [0u8; BLOCK];
        archive
            .read_exact(&mut block)
            .context("archive ends before its end marker")?;
        if block.iter().all(|&b| b == 0) {
            return Ok(names);
        }
        let name = entry_name(&block)?;
        let size = read_octal(&block[124..136])?;
        let target = safe_path(dest, &name)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .with_context(|| format!("archive entry {name} appears twice or cannot be created"))?;
        let copied = std::io::copy(&mut archive.by_ref().take(size), &mut file)?;
        if copied != size {
            bail!("archive entry {name} is cut short");
        }
        let padding = (BLOCK - (size as usize % BLOCK)) % BLOCK;
        std::io::copy(
            &mut archive.by_ref().take(padding as u64),
            &mut std::io::sink(),
        )?;
        names.push(name);
    }
}

fn entry_name(block: &[u8; BLOCK]) -> anyhow::Result<String> {
    let stored = read_octal(&block[148..156])?;
    let mut copy = *block;
    copy[148..156].copy_from_slice(b"        ");
    let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
    if sum != stored {
        bail!("archive header checksum is {stored}, the header sums to {sum}");
    }
    if block[156] != b'0' && block[156] != 0 {
        bail!(
            "archive entry of type {:?}: a bundle holds regular files only",
            block[156] as char
        );
    }
    let end = block[..100].iter().position(|&b| b == 0).unwrap_or(100);
    let name = std::str::from_utf8(&block[..end]).context("archive entry name is not UTF-8")?;
    Ok(name.to_owned())
}

/// Joins a relative archive path to `dest`, rejecting absolute paths and `..`.
pub fn safe_path(dest: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let relative = Path::new(name);
    let safe = !name.is_empty()
        && relative
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
    if !safe {
        bail!("path {name:?} is not a plain relative path inside the bundle");
    }
    Ok(dest.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_round_trips_and_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("a.txt"), b"alpha").unwrap();
        std::fs::write(dir.path().join("data/b.bin"), vec![7u8; 1000]).unwrap();
        let files = vec!["a.txt".to_owned(), "data/b.bin".to_owned()];
        let (mut first, mut second) = (Vec::new(), Vec::new());
        write_archive(dir.path(), &files, &mut first).unwrap();
        write_archive(dir.path(), &files, &mut second).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 512 + 512 + 512 + 1024 + 1024);

        let out = tempfile::tempdir().unwrap();
        let names = extract(&mut first.as_slice(), out.path()).unwrap();
        assert_eq!(names, files);
        assert_eq!(
            std::fs::read(out.path().join("data/b.bin")).unwrap(),
            vec![7u8; 1000]
        );
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        let dest = Path::new("/tmp/x");
        for name in ["../evil", "/etc/passwd", "a/../../b", ""] {
            assert!(safe_path(dest, name).is_err(), "{name:?}");
        }
        assert!(safe_path(dest, "data/events.folio").is_ok());
    }
}
