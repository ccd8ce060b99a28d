//! The Merkle tree over a ledger's event hashes, with inclusion and consistency proofs.
//!
//! The tree has the shape of RFC 9162 (section 2.1): the leaves are the event hashes in
//! position order, and a tree of `n > 1` leaves splits into a left subtree of the largest
//! power of two smaller than `n` leaves and a right subtree of the rest. Hashing is BLAKE3
//! with ASCII domain-separation prefixes instead of the RFC's single `0x00` and `0x01` bytes,
//! so no Merkle hash can be confused with an event hash or any other Folio hash:
//!
//! ```text
//! leaf  = BLAKE3( "folio/merkle-leaf/v1" NUL || event_hash )
//! node  = BLAKE3( "folio/merkle-node/v1" NUL || left || right )
//! empty = BLAKE3( "folio/merkle-empty/v1" NUL )
//! ```
//!
//! Proof verification follows the algorithms of RFC 9162 sections 2.1.3.2 and 2.1.4.2, so a
//! proof is the same list of hashes that an RFC 9162 log would produce for the same tree.
//! `docs/ledger-format.md` describes the construction byte by byte.

use crate::record::HASH_LEN;

/// A 32-byte hash: an event hash, a leaf hash, a node hash or a root.
pub type Hash = [u8; HASH_LEN];

/// Domain-separation prefix of leaf hashes (the trailing NUL is part of the prefix).
pub const LEAF_PREFIX: &[u8] = b"folio/merkle-leaf/v1\0";

/// Domain-separation prefix of interior node hashes (the trailing NUL is part of the prefix).
pub const NODE_PREFIX: &[u8] = b"folio/merkle-node/v1\0";

/// Domain-separation prefix of the root of the empty tree.
pub const EMPTY_PREFIX: &[u8] = b"folio/merkle-empty/v1\0";

/// Hashes one leaf: the event hash under the leaf prefix.
pub fn leaf_hash(event_hash: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(LEAF_PREFIX);
    hasher.update(event_hash);
    *hasher.finalize().as_bytes()
}

/// Hashes an interior node from its two children.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(NODE_PREFIX);
    hasher.update(left);
    hasher.update(right);
    *hasher.finalize().as_bytes()
}

/// Returns the root of the tree with no leaves.
pub fn empty_root() -> Hash {
    *blake3::hash(EMPTY_PREFIX).as_bytes()
}

/// A proof is malformed or does not match the root it is checked against.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The older tree of a consistency proof is empty or larger than the newer one.
    #[error("consistency from size {old} to size {new} needs 0 < old <= new")]
    BadSizes {
        /// Older tree size.
        old: u64,
        /// Newer tree size.
        new: u64,
    },
    /// The proof has more or fewer hashes than the tree shape needs.
    #[error("proof has {got} hashes, the tree shape needs {expected}")]
    WrongLength {
        /// Hashes in the proof.
        got: usize,
        /// Hashes the shape needs.
        expected: usize,
    },
    /// The proof's hashes do not lead to the expected root.
    #[error("proof does not lead to the expected root")]
    RootMismatch,
}

/// Returns the largest power of two strictly smaller than `n`, for `n >= 2`.
fn split_point(n: u64) -> u64 {
    assert!(n >= 2, "only a tree of two or more leaves splits");
    1 << (63 - (n - 1).leading_zeros())
}

/// Computes the root of the tree over `event_hashes` (leaves in position order).
pub fn root(event_hashes: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for hash in event_hashes {
        frontier.push(hash);
    }
    frontier.root()
}

/// Root of the subtree over `leaves` (already leaf-hashed), which must not be empty.
fn subtree_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => panic!("a subtree has at least one leaf"),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// Builds the inclusion proof of leaf `index` in the tree over the first `size` event hashes.
///
/// # Errors
/// [`ProofError::IndexOutOfRange`] when `index >= size`, or when `size` is over the number of
/// hashes given.
pub fn inclusion_proof(
    event_hashes: &[Hash],
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size || size > event_hashes.len() as u64 {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // `size` is at most the slice length, so it fits in usize.
    let leaves: Vec<Hash> = event_hashes[..size as usize]
        .iter()
        .map(leaf_hash)
        .collect();
    let mut proof = Vec::new();
    inclusion_path(&leaves, index as usize, &mut proof);
    Ok(proof)
}

/// Appends the audit path of `index` in `leaves`, deepest sibling first.
fn inclusion_path(leaves: &[Hash], index: usize, proof: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split_point(leaves.len() as u64) as usize;
    if index < k {
        inclusion_path(&leaves[..k], index, proof);
        proof.push(subtree_root(&leaves[k..]));
    } else {
        inclusion_path(&leaves[k..], index - k, proof);
        proof.push(subtree_root(&leaves[..k]));
    }
}

/// Builds the inclusion proofs of many leaves in the tree over the first `size` event hashes,
/// hashing the tree once instead of once per proof.
///
/// The RFC 9162 tree is the tree built level by level, pairing nodes from the left and
/// carrying an unpaired last node up unchanged, so each proof is the list of siblings met on
/// the way up, skipping the levels where the node has none.
///
/// # Errors
/// [`ProofError::IndexOutOfRange`] for an index not below `size`, or a `size` over the
/// number of hashes given.
pub fn inclusion_proofs(
    event_hashes: &[Hash],
    size: u64,
    indexes: &[u64],
) -> Result<Vec<Vec<Hash>>, ProofError> {
    if let Some(&index) = indexes.iter().find(|&&index| index >= size) {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    if size > event_hashes.len() as u64 {
        return Err(ProofError::IndexOutOfRange { index: 0, size });
    }
    let mut levels: Vec<Vec<Hash>> = vec![event_hashes[..size as usize]
        .iter()
        .map(leaf_hash)
        .collect()];
    while levels.last().is_some_and(|level| level.len() > 1) {
        let below = &levels[levels.len() - 1];
        let above = below
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node_hash(left, right),
                [single] => *single,
                _ => unreachable!("chunks of two"),
            })
            .collect();
        levels.push(above);
    }
    let proofs = indexes
        .iter()
        .map(|&index| {
            let mut proof = Vec::new();
            let mut at = index as usize;
            for level in &levels[..levels.len() - 1] {
                let sibling = at ^ 1;
                if sibling < level.len() {
                    proof.push(level[sibling]);
                }
                at /= 2;
            }
            proof
        })
        .collect();
    Ok(proofs)
}

/// Builds the consistency proof from the tree of the first `old` event hashes to the tree of
/// the first `new` ones.
///
/// # Errors
/// [`ProofError::BadSizes`] unless `0 < old <= new <= event_hashes.len()`.
pub fn consistency_proof(
    event_hashes: &[Hash],
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, ProofError> {
    if old == 0 || old > new || new > event_hashes.len() as u64 {
        return Err(ProofError::BadSizes { old, new });
    }
    let leaves: Vec<Hash> = event_hashes[..new as usize].iter().map(leaf_hash).collect();
    let mut proof = Vec::new();
    subproof(old as usize, &leaves, true, &mut proof);
    Ok(proof)
}

/// Appends RFC 9162's SUBPROOF(m, D[n], b). The flag `complete` is true while the old tree is
/// a complete subtree of the one walked, because the verifier then knows its root already.
fn subproof(m: usize, leaves: &[Hash], complete: bool, proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            proof.push(subtree_root(leaves));
        }
        return;
    }
    let k = split_point(n as u64) as usize;
    if m <= k {
        subproof(m, &leaves[..k], complete, proof);
        proof.push(subtree_root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, proof);
        proof.push(subtree_root(&leaves[..k]));
    }
}

/// Verifies that `event_hash` is leaf `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 section 2.1.3.2).
///
/// # Errors
/// [`ProofError`] naming why the proof fails.
pub fn verify_inclusion(
    event_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = leaf_hash(event_hash);
    for p in proof {
        if s_n == 0 {
            return Err(wrong_length(proof.len(), index, size));
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(wrong_length(proof.len(), index, size));
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Builds the error for an inclusion proof of the wrong length, naming the length the shape needs.
fn wrong_length(got: usize, index: u64, size: u64) -> ProofError {
    ProofError::WrongLength {
        got,
        expected: inclusion_proof_len(index, size),
    }
}

/// Number of hashes in the inclusion proof of `index` in a tree of `size` leaves.
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let (mut index, mut size, mut len) = (index, size, 0);
    while size > 1 {
        let k = split_point(size);
        if index < k {
            size = k;
        } else {
            index -= k;
            size -= k;
        }
        len += 1;
    }
    len
}

/// Verifies that the tree of `new_size` leaves with root `new_root` extends the tree of
/// `old_size` leaves with root `old_root` (RFC 9162 section 2.1.4.2).
///
/// # Errors
/// [`ProofError`] naming why the proof fails.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::BadSizes {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                expected: 0,
            });
        }
        return match old_root == new_root {
            true => Ok(()),
            false => Err(ProofError::RootMismatch),
        };
    }

    // When the old size is a power of two, the old root is the first node of the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength {
            got: 0,
            expected: 1,
        });
    };

    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = *first;
    let mut s_r = *first;
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::RootMismatch);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 || f_r != *old_root || s_r != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Builds inclusion proofs of chosen leaves while the event hashes stream past, for a tree
/// whose final size is known up front, keeping only the frontier and the nodes the proofs
/// need instead of every hash.
///
/// When leaf `i` arrives, the frontier's subtrees are exactly the left siblings on its path.
/// Its right siblings are either perfect subtrees, taken when they complete, or the right
/// edge of the tree, folded from the final frontier.
#[derive(Debug, Clone)]
pub struct ProofCollector {
    size: u64,
    /// Perfect subtrees so far, largest first, with their level.
    frontier: Vec<(u32, Hash)>,
    count: u64,
    /// Right siblings still needed, by level and index, and their hash once complete.
    needed: std::collections::HashMap<(u32, u64), Option<Hash>>,
    /// Chosen leaves, with the left siblings taken from the frontier when they arrived.
    chosen: Vec<(u64, Vec<(u32, Hash)>)>,
}

impl ProofCollector {
    /// Starts a collector for a tree of `size` leaves.
    pub fn new(size: u64) -> Self {
        ProofCollector {
            size,
            frontier: Vec::new(),
            count: 0,
            needed: std::collections::HashMap::new(),
            chosen: Vec::new(),
        }
    }

    /// Number of nodes at `level` in the level-built tree.
    fn width(&self, level: u32) -> u64 {
        // Ceiling division of the size by 2^level.
        ((self.size - 1) >> level) + 1
    }

    /// Adds the next leaf, and chooses it for a proof when `choose` is set.
    ///
    /// # Panics
    /// Panics when more than `size` leaves are pushed.
    pub fn push(&mut self, event_hash: &Hash, choose: bool) {
        let index = self.count;
        assert!(index < self.size, "more leaves than the tree size");
        if choose {
            self.choose(index);
        }
        let mut node = leaf_hash(event_hash);
        let mut level = 0;
        self.take_if_needed(level, index, node);
        while self.frontier.last().is_some_and(|(top, _)| *top == level) {
            // The loop condition saw a node on top.
            let (_, left) = self.frontier.pop().expect("a frontier node");
            node = node_hash(&left, &node);
            level += 1;
            self.take_if_needed(level, index >> level, node);
        }
        self.frontier.push((level, node));
        self.count += 1;
    }

    fn take_if_needed(&mut self, level: u32, index: u64, node: Hash) {
        if let Some(slot) = self.needed.get_mut(&(level, index)) {
            *slot = Some(node);
        }
    }

    fn choose(&mut self, index: u64) {
        let left: Vec<(u32, Hash)> = self.frontier.clone();
        let mut level = 0;
        while self.width(level) > 1 {
            let at = index >> level;
            let sibling = at ^ 1;
            if at & 1 == 0 && sibling < self.width(level) {
                self.needed.insert((level, sibling), None);
            }
            level += 1;
        }
        self.chosen.push((index, left));
    }

    /// Returns the proofs of the chosen leaves, in the order they were chosen.
    ///
    /// # Panics
    /// Panics unless exactly `size` leaves were pushed.
    pub fn finish(self) -> Vec<(u64, Vec<Hash>)> {
        assert_eq!(self.count, self.size, "every leaf of the tree was pushed");
        let mut proofs = Vec::with_capacity(self.chosen.len());
        for (index, left) in &self.chosen {
            let mut proof = Vec::new();
            let mut level = 0;
            while self.width(level) > 1 {
                let at = index >> level;
                let sibling = at ^ 1;
                if at & 1 == 1 {
                    // The frontier at the leaf's arrival has one subtree per set bit.
                    let (_, hash) = left
                        .iter()
                        .find(|(l, _)| *l == level)
                        .expect("left sibling");
                    proof.push(*hash);
                } else if sibling < self.width(level) {
                    proof.push(self.right_sibling(level, sibling));
                }
                level += 1;
            }
            proofs.push((*index, proof));
        }
        proofs
    }

    /// Returns a right sibling: a perfect subtree taken when it completed, or the right edge
    /// of the tree, which is the fold of the final frontier's subtrees below its level.
    fn right_sibling(&self, level: u32, index: u64) -> Hash {
        if let Some(Some(hash)) = self.needed.get(&(level, index)) {
            return *hash;
        }
        let mut smaller = self.frontier.iter().rev().take_while(|(l, _)| *l < level);
        // A right-edge node that is not perfect covers at least one smaller subtree.
        let (_, first) = smaller.next().expect("a right-edge subtree");
        smaller.fold(*first, |right, (_, left)| node_hash(left, &right))
    }
}

/// The compact state of a growing tree: the roots of its perfect subtrees, largest first.
///
/// A tree of `n` leaves has one perfect subtree per set bit of `n`, so the frontier contains at
/// most 64 hashes. Appending a leaf merges equal-sized subtrees like a binary counter, and the
/// root folds the subtrees from the smallest up, which gives the RFC 9162 shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of the perfect subtrees, largest (leftmost) first.
    nodes: Vec<Hash>,
}

impl Frontier {
    /// Returns the frontier of the empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf of one event hash.
    ///
    /// # Panics
    /// Panics if the tree already has `u64::MAX` leaves.
    pub fn push(&mut self, event_hash: &Hash) {
        let mut node = leaf_hash(event_hash);
        let mut merged = self.size;
        // Each trailing one bit of the old size is a subtree of the same height to merge with.
        while merged & 1 == 1 {
            // The frontier contains one node per set bit of `size`, so a node is present.
            let left = self.nodes.pop().expect("a subtree per set bit of the size");
            node = node_hash(&left, &node);
            merged >>= 1;
        }
        self.nodes.push(node);
        self.size = self.size.checked_add(1).expect("Merkle tree size overflow");
        assert_eq!(
            self.nodes.len() as u32,
            self.size.count_ones(),
            "one subtree per set bit"
        );
    }

    /// Returns the root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(smallest) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*smallest, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| *blake3::hash(&i.to_be_bytes()).as_bytes())
            .collect()
    }

    fn naive_root(event_hashes: &[Hash]) -> Hash {
        if event_hashes.is_empty() {
            return empty_root();
        }
        let leaves: Vec<Hash> = event_hashes.iter().map(leaf_hash).collect();
        subtree_root(&leaves)
    }

    #[test]
    fn frontier_root_matches_recursive_definition() {
        let all = hashes(70);
        for n in 0..=70 {
            assert_eq!(root(&all[..n]), naive_root(&all[..n]), "size {n}");
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        let all = hashes(33);
        for size in 1..=33u64 {
            let tree_root = root(&all[..size as usize]);
            for index in 0..size {
                let proof = inclusion_proof(&all, index, size).unwrap();
                assert_eq!(proof.len(), inclusion_proof_len(index, size));
                let leaf = &all[index as usize];
                verify_inclusion(leaf, index, size, &proof, &tree_root).unwrap();
                let other = (index + 1) % size;
                if other != index {
                    assert!(verify_inclusion(leaf, other, size, &proof, &tree_root).is_err());
                }
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = leaf_hash(first);
                    assert!(verify_inclusion(leaf, index, size, &bad, &tree_root).is_err());
                    assert!(verify_inclusion(leaf, index, size, &proof[1..], &tree_root).is_err());
                }
            }
        }
    }

    #[test]
    fn level_built_proofs_match_recursive_ones() {
        let all = hashes(45);
        for size in 1..=45u64 {
            let indexes: Vec<u64> = (0..size).collect();
            let proofs = inclusion_proofs(&all, size, &indexes).unwrap();
            for index in 0..size {
                let expected = inclusion_proof(&all, index, size).unwrap();
                assert_eq!(
                    proofs[index as usize], expected,
                    "index {index} size {size}"
                );
            }
        }
        assert!(inclusion_proofs(&all, 4, &[4]).is_err());
    }

    #[test]
    fn streamed_proofs_match_recursive_ones() {
        let all = hashes(45);
        for size in 1..=45u64 {
            let mut collector = ProofCollector::new(size);
            for (index, hash) in all[..size as usize].iter().enumerate() {
                collector.push(hash, index % 2 == 0 || index + 1 == size as usize);
            }
            for (index, proof) in collector.finish() {
                let expected = inclusion_proof(&all, index, size).unwrap();
                assert_eq!(proof, expected, "index {index} size {size}");
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_tampering_fails() {
        let all = hashes(33);
        for new in 1..=33u64 {
            let new_root = root(&all[..new as usize]);
            for old in 1..=new {
                let old_root = root(&all[..old as usize]);
                let proof = consistency_proof(&all, old, new).unwrap();
                verify_consistency(old, new, &old_root, &new_root, &proof).unwrap();
                let wrong_old = leaf_hash(&old_root);
                assert!(verify_consistency(old, new, &wrong_old, &new_root, &proof).is_err());
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    let last = bad.len() - 1;
                    bad[last] = leaf_hash(&bad[last]);
                    assert!(verify_consistency(old, new, &old_root, &new_root, &bad).is_err());
                }
            }
        }
    }

    /// The test vectors printed in `docs/ledger-format.md` by the Python implementation.
    #[test]
    fn documented_vectors() {
        let all = hashes(7);
        let hex_root = |n: usize| hex::encode(root(&all[..n]));
        assert_eq!(
            hex_root(0),
            "00bb22c491b31b19ebc3102efb2adb38b5d44d9d6e5506fd89b21289d45ac118"
        );
        assert_eq!(
            hex_root(1),
            "c2d6d79f082705c2b74ca2bc7103f094915dc4d2bedd39e7f0a51152a9c0976b"
        );
        assert_eq!(
            hex_root(2),
            "0fbe615c5332dabdb2c7909f17abb595f32470cc5239374c6a5f43ac458d7ed5"
        );
        assert_eq!(
            hex_root(3),
            "e93243ee68b2fa93cb63fa330b9a9f4c147992d89f24927799b00816933f0d15"
        );
        assert_eq!(
            hex_root(7),
            "abf0741510c81d1c9103b0b92d1379ba01230afb8ec60eab538f51ab2775c29c"
        );
        let path: Vec<String> = inclusion_proof(&all, 2, 7)
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect();
        assert_eq!(
            path,
            [
                "c00561b61add43c309c49f8f8050f59521c8f50f453a4fbdf53d8a3b626ddd8d",
                "0fbe615c5332dabdb2c7909f17abb595f32470cc5239374c6a5f43ac458d7ed5",
                "db918b6a69960b946b0da146d77a8b6611027f9598502e5cdcb31c7a310d856c"
            ]
        );
        let path: Vec<String> = consistency_proof(&all, 3, 7)
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect();
        assert_eq!(
            path,
            [
                "66f3883c9847ebea12094e5ee960b402f9cec8dac7fbed2174f77941450b3a2d",
                "c00561b61add43c309c49f8f8050f59521c8f50f453a4fbdf53d8a3b626ddd8d",
                "0fbe615c5332dabdb2c7909f17abb595f32470cc5239374c6a5f43ac458d7ed5",
                "db918b6a69960b946b0da146d77a8b6611027f9598502e5cdcb31c7a310d856c"
            ]
        );
    }

    #[test]
    fn rejects_impossible_sizes() {
        let all = hashes(4);
        assert!(inclusion_proof(&all, 4, 4).is_err());
        assert!(inclusion_proof(&all, 0, 5).is_err());
        assert!(consistency_proof(&all, 0, 4).is_err());
        assert!(consistency_proof(&all, 3, 2).is_err());
        let r = root(&all);
        assert_eq!(
            verify_consistency(0, 4, &r, &r, &[]),
            Err(ProofError::BadSizes { old: 0, new: 4 })
        );
    }
}
