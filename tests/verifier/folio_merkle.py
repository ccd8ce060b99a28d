"""Folio's Merkle tree, checkpoints and proofs, written from docs/ledger-format.md alone.

This module shares no code with Folio. It follows RFC 9162 section 2.1 with Folio's
domain-separation prefixes, and it is used both by the bundle verifier and, through its
command line, by the Rust tests that compare the two implementations.

Command line:
    python3 folio_merkle.py vectors        print the test vectors of docs/ledger-format.md
    python3 folio_merkle.py compare FILE   read a JSON job (see run_job) and print results
"""

import json
import sys

import blake3

LEAF_PREFIX = b"folio/merkle-leaf/v1\x00"
NODE_PREFIX = b"folio/merkle-node/v1\x00"
EMPTY_PREFIX = b"folio/merkle-empty/v1\x00"
CHECKPOINT_MAGIC = b"folio/checkpoint/v1\x00"
CHECKPOINT_SIGNATURE_PREFIX = b"folio/checkpoint-signature/v1\x00"
CHECKPOINT_LEN = 192


def h(data):
    return blake3.blake3(data).digest()


def leaf(event_hash):
    return h(LEAF_PREFIX + event_hash)


def node(left, right):
    return h(NODE_PREFIX + left + right)


def largest_power_of_two_below(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(event_hashes):
    """The Merkle tree hash of a list of event hashes (RFC 9162 MTH, Folio hashing)."""
    n = len(event_hashes)
    if n == 0:
        return h(EMPTY_PREFIX)
    if n == 1:
        return leaf(event_hashes[0])
    k = largest_power_of_two_below(n)
    return node(mth(event_hashes[:k]), mth(event_hashes[k:]))


def inclusion_path(m, event_hashes):
    """RFC 9162 PATH(m, D[n])."""
    n = len(event_hashes)
    if n <= 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return inclusion_path(m, event_hashes[:k]) + [mth(event_hashes[k:])]
    return inclusion_path(m - k, event_hashes[k:]) + [mth(event_hashes[:k])]


def consistency_path(m, event_hashes):
    """RFC 9162 PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""
    return _subproof(m, event_hashes, True)


def _subproof(m, event_hashes, complete):
    n = len(event_hashes)
    if m == n:
        return [] if complete else [mth(event_hashes)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return _subproof(m, event_hashes[:k], complete) + [mth(event_hashes[k:])]
    return _subproof(m - k, event_hashes[k:], False) + [mth(event_hashes[:k])]


def verify_inclusion(event_hash, index, size, proof, root):
    """RFC 9162 section 2.1.3.2; returns True when the proof leads to root."""
    if index >= size:
        return False
    fn, sn = index, size - 1
    r = leaf(event_hash)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size, new_size, old_root, new_root, proof):
    """RFC 9162 section 2.1.4.2; returns True when new extends old."""
    if old_size == 0 or old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def parse_checkpoint(data):
    """Splits the 192 bytes of a signed checkpoint into a dict; raises ValueError if malformed."""
    if len(data) != CHECKPOINT_LEN or data[:20] != CHECKPOINT_MAGIC:
        raise ValueError("not a folio checkpoint")
    if data[20:22] != b"\x00\x01" or data[22] != 1 or data[23] != 1:
        raise ValueError("unknown checkpoint version or algorithm")
    return {
        "ledger_id": data[24:40],
        "tree_size": int.from_bytes(data[40:48], "big"),
        "head_hash": data[48:80],
        "merkle_root": data[80:112],
        "key_id": data[112:128],
        "signature": data[128:192],
    }


def checkpoint_message(cp):
    return (CHECKPOINT_SIGNATURE_PREFIX + cp["ledger_id"] + cp["tree_size"].to_bytes(8, "big")
            + cp["head_hash"] + cp["merkle_root"])


def sample_hashes(n):
    """Event hashes for test vectors: BLAKE3 of the index as 8 big-endian bytes."""
    return [h(i.to_bytes(8, "big")) for i in range(n)]


def run_job(job):
    """Computes roots for every size, and the proofs the job requests, as hex."""
    hashes = [bytes.fromhex(x) for x in job["hashes"]]
    out = {"roots": [mth(hashes[:n]).hex() for n in range(len(hashes) + 1)]}
    out["inclusion"] = [[p.hex() for p in inclusion_path(i, hashes[:n])] for i, n in job["inclusion"]]
    out["consistency"] = [[p.hex() for p in consistency_path(m, hashes[:n])] for m, n in job["consistency"]]
    checks = []
    for item in job.get("verify_inclusion", []):
        proof = [bytes.fromhex(p) for p in item["proof"]]
        checks.append(verify_inclusion(bytes.fromhex(item["event_hash"]), item["index"], item["size"],
                                       proof, bytes.fromhex(item["root"])))
    out["verify_inclusion"] = checks
    checks = []
    for item in job.get("verify_consistency", []):
        proof = [bytes.fromhex(p) for p in item["proof"]]
        checks.append(verify_consistency(item["old_size"], item["new_size"], bytes.fromhex(item["old_root"]),
                                         bytes.fromhex(item["new_root"]), proof))
    out["verify_consistency"] = checks
    return out


def vectors():
    hashes = sample_hashes(7)
    lines = ["size 0 root " + mth([]).hex()]
    for n in (1, 2, 3, 7):
        lines.append("size %d root %s" % (n, mth(hashes[:n]).hex()))
    lines.append("inclusion of index 2 in size 7: " + " ".join(p.hex() for p in inclusion_path(2, hashes)))
    lines.append("consistency from size 3 to size 7: " + " ".join(p.hex() for p in consistency_path(3, hashes)))
    return "\n".join(lines)


def main(argv):
    if len(argv) == 2 and argv[1] == "vectors":
        print(vectors())
        return 0
    if len(argv) == 3 and argv[1] == "compare":
        with open(argv[2], encoding="utf-8") as f:
            job = json.load(f)
        print(json.dumps(run_job(job)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
