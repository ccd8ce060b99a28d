//! Payee name normalisation and a look-alike key for spotting impersonation.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Words dropped from the look-alike key because they do not tell payees apart.
const NOISE_WORDS: [&str; 8] = [
    "pty",
    "ltd",
    "limited",
    "the",
    "proprietary",
    "inc",
    "co",
    "llc",
];

/// Normalises a name for display comparison and storage in `PayeeAdded`.
///
/// The steps are, in order: Unicode NFKC, full Unicode lower case, removal of
/// format characters (general category Cf, such as U+200B ZERO WIDTH SPACE or
/// U+202E RIGHT-TO-LEFT OVERRIDE), then trimming and collapsing every run of
/// whitespace to one ASCII space.
pub fn normalize_name(name: &str) -> String {
    let lowered = name.nfkc().collect::<String>().to_lowercase();
    let visible = lowered
        .chars()
        .filter(|c| c.general_category() != GeneralCategory::Format);
    let visible: String = visible.collect();
    visible.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Builds a key under which names that look alike collide.
///
/// This is a heuristic, not Unicode's full confusables skeleton (UTS #39): it
/// catches the common tricks on a payee list and will miss others. Starting from
/// [`normalize_name`], it maps Cyrillic and Greek letters that look like Latin
/// ones to those Latin letters, drops accents and removes punctuation. It then
/// drops company-suffix words such as "pty", "ltd" and "the". Inside words that
/// also contain letters it maps `0`, `1` and `5` to `o`, `l` and `s`, and in all
/// words it maps `rn` to `m` and `i` to `l`. Finally it removes the spaces. So "ACME Pty Ltd", "Acme Pty. Ltd"
/// and "Αcme pty ltd" (with a Greek capital alpha) share one key.
pub fn lookalike_key(name: &str) -> String {
    let latin: String = normalize_name(name).chars().map(fold_confusable).collect();
    let unaccented: String = latin.nfd().filter(|c| !is_combining_mark(*c)).collect();
    let words = unaccented.split_whitespace().map(strip_punctuation);
    let words = words.filter(|w| !w.is_empty() && !NOISE_WORDS.contains(&w.as_str()));
    let key: String = words.map(|w| fold_word(&w)).collect();

    // A name made only of noise words ("The Pty Ltd") still needs a key that
    // collides with itself, so fall back to the punctuation-free name.
    if key.is_empty() {
        return unaccented
            .split_whitespace()
            .map(strip_punctuation)
            .collect();
    }
    key
}

/// Maps a lower-case Cyrillic or Greek letter to the Latin letter it looks like.
///
/// The input is already lower case, so upper-case look-alikes (Greek `Α`,
/// Cyrillic `В`, `Н`, `Т`, ...) arrive as their lower-case forms and are mapped
/// by the shape of the capital.
fn fold_confusable(c: char) -> char {
    match c {
        // Cyrillic.
        'а' => 'a',
        'в' => 'b',
        'е' | 'ё' | 'є' => 'e',
        'һ' | 'н' => 'h',
        'і' | 'ї' => 'i',
        'ј' => 'j',
        'к' => 'k',
        'ӏ' => 'l',
        'м' => 'm',
        'о' => 'o',
        'р' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'с' => 'c',
        'т' => 't',
        'у' | 'ү' => 'y',
        'ԝ' => 'w',
        'х' => 'x',
        'ԁ' => 'd',
        // Greek.
        'α' => 'a',
        'β' => 'b',
        'ε' => 'e',
        'ζ' => 'z',
        'η' => 'h',
        'ι' => 'i',
        'κ' => 'k',
        'μ' => 'm',
        'ν' => 'n',
        'ο' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'υ' => 'y',
        'χ' => 'x',
        'ϲ' => 'c',
        // Latin letters from other blocks that NFKC leaves alone.
        'ı' => 'i',
        'ɡ' => 'g',
        _ => c,
    }
}

fn strip_punctuation(word: &str) -> String {
    word.chars().filter(|c| c.is_alphanumeric()).collect()
}

/// Folds digit and letter pairs that look alike, inside one word.
fn fold_word(word: &str) -> String {
    let has_letter = word.chars().any(char::is_alphabetic);
    let folded: String = word
        .chars()
        .map(|c| match c {
            '0' if has_letter => 'o',
            '1' if has_letter => 'l',
            '5' if has_letter => 's',
            // Lower-case "i" and "l" both come from glyphs ("I", "l", "1") that
            // many fonts draw as one vertical bar.
            'i' => 'l',
            _ => c,
        })
        .collect();
    folded.replace("rn", "m")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases_and_collapses() {
        assert_eq!(normalize_name("  ACME   Pty\tLtd \n"), "acme pty ltd");
        assert_eq!(normalize_name("Acme"), "acme");
        assert_eq!(normalize_name(""), "");
        assert_eq!(normalize_name("   "), "");
    }

    #[test]
    fn normalize_applies_nfkc() {
        // Fullwidth letters and the "ﬁ" ligature are compatibility characters.
        assert_eq!(normalize_name("ＡＣＭＥ"), "acme");
        assert_eq!(normalize_name("ﬁnance"), "finance");
        // A decomposed "é" (e + U+0301) composes to the same string as "é".
        assert_eq!(normalize_name("Cafe\u{301}"), normalize_name("Café"));
    }

    #[test]
    fn normalize_full_unicode_lowercase() {
        assert_eq!(normalize_name("ÄÖÜ ΣΑΣ"), "äöü σας");
        assert_eq!(normalize_name("İstanbul"), "i\u{307}stanbul");
    }

    #[test]
    fn normalize_strips_format_characters() {
        let hidden = "Ac\u{200B}me\u{200D} Pty\u{FEFF} \u{202E}Ltd\u{00AD}";
        assert_eq!(normalize_name(hidden), "acme pty ltd");
    }

    #[test]
    fn normalize_collapses_unicode_spaces() {
        // NO-BREAK SPACE and IDEOGRAPHIC SPACE are whitespace after NFKC.
        assert_eq!(normalize_name("acme\u{00A0}\u{3000}pty"), "acme pty");
    }

    #[test]
    fn lookalike_brief_examples_collide() {
        let key = lookalike_key("ACME Pty Ltd");
        assert_eq!(key, "acme");
        assert_eq!(lookalike_key("Acme Pty. Ltd"), key);
        assert_eq!(lookalike_key("\u{391}cme pty ltd"), key);
        assert_eq!(lookalike_key("acme limited"), key);
        assert_eq!(lookalike_key("The ACME"), key);
    }

    #[test]
    fn lookalike_cyrillic_collides() {
        // Every letter here is Cyrillic: а с м е.
        assert_eq!(lookalike_key("\u{430}\u{441}\u{43C}\u{435}"), "acme");
        assert_eq!(lookalike_key("РАУРАL"), lookalike_key("PAYPAL"));
    }

    #[test]
    fn lookalike_digits_inside_words() {
        assert_eq!(lookalike_key("G00GLE"), lookalike_key("Google"));
        assert_eq!(lookalike_key("5mith"), lookalike_key("Smith"));
        assert_eq!(lookalike_key("SMlTH"), lookalike_key("Smith"));
        // A number on its own is not a word to fold.
        assert_eq!(lookalike_key("Acme 2015"), "acme2015");
    }

    #[test]
    fn lookalike_accents_and_rn() {
        assert_eq!(lookalike_key("Acmé"), lookalike_key("Acme"));
        assert_eq!(lookalike_key("Modern"), lookalike_key("Modem"));
    }

    #[test]
    fn lookalike_hidden_characters_collide() {
        assert_eq!(lookalike_key("Ac\u{200B}me"), lookalike_key("Acme"));
        assert_eq!(lookalike_key("A-C-M-E"), lookalike_key("Acme"));
    }

    #[test]
    fn lookalike_distinct_names_differ() {
        assert_ne!(lookalike_key("Acme Pty Ltd"), lookalike_key("Apex Pty Ltd"));
        assert_ne!(lookalike_key("Jones"), lookalike_key("Janes"));
    }

    #[test]
    fn lookalike_noise_only_name() {
        assert_eq!(lookalike_key("The Pty Ltd"), "theptyltd");
        assert_eq!(lookalike_key("THE PTY. LTD."), "theptyltd");
    }
}
