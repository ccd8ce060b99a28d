//! A string-similarity score for payee names: one minus the normalised Levenshtein
//! distance, in thousandths.

/// Longest input compared, in characters; payee names are at most 70 after
/// normalisation, so nothing real is cut.
const MAX_CHARS: usize = 128;

/// Returns the Levenshtein distance (insertions, deletions and substitutions of one
/// character each cost 1) between the first [`MAX_CHARS`] characters of each string.
pub fn levenshtein(left: &str, right: &str) -> usize {
    let left: Vec<char> = left.chars().take(MAX_CHARS).collect();
    let right: Vec<char> = right.chars().take(MAX_CHARS).collect();
    if left.is_empty() || right.is_empty() {
        return left.len().max(right.len());
    }

    // One row of the edit-distance table at a time: `row[j]` is the distance between
    // the prefix of `left` read so far and the first `j` characters of `right`.
    let mut row: Vec<usize> = (0..=right.len()).collect();
    for (i, l) in left.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, r) in right.iter().enumerate() {
            let substitution = diagonal + usize::from(l != r);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[right.len()]
}

/// Returns how alike two strings are, from 0 (nothing in common) to 1000 (equal):
/// `1000 * (longest length - distance) / longest length`, rounded down.
pub fn similarity_permille(left: &str, right: &str) -> u32 {
    let longest = left
        .chars()
        .take(MAX_CHARS)
        .count()
        .max(right.chars().take(MAX_CHARS).count());
    if longest == 0 {
        return 1000;
    }
    let distance = levenshtein(left, right);
    assert!(
        distance <= longest,
        "edit distance beyond the longer string"
    );
    let same = longest - distance;
    // Both are at most MAX_CHARS, so the product fits any integer type used here.
    u32::try_from(same * 1000 / longest).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_of_known_pairs() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("acme", "acme"), 0);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("acmeplumbing", "acmepiumbing"), 1);
        assert_eq!(levenshtein("flaw", "lawn"), 2);
    }

    #[test]
    fn similarity_in_thousandths() {
        // 12 characters, one substitution: 11 / 12 = 0.916...
        assert_eq!(similarity_permille("acmeplumbing", "acmepiumbing"), 916);
        assert_eq!(similarity_permille("kitten", "sitting"), 571);
        assert_eq!(similarity_permille("same", "same"), 1000);
        assert_eq!(similarity_permille("abc", "xyz"), 0);
        assert_eq!(similarity_permille("", ""), 1000);
    }

    #[test]
    fn similarity_is_symmetric() {
        for (a, b) in [("northwind", "northwinds"), ("globex", "gl0bex"), ("a", "")] {
            assert_eq!(similarity_permille(a, b), similarity_permille(b, a));
        }
    }
}
