"""Tests of the independent bundle verifier's own parts: the Merkle code against the RFC 9162
definitions, CSV neutralisation and the archive reader's path rules.

Run: python3 -m unittest discover -s tests/verifier -p 'test_*.py'
"""

import io
import os
import tarfile
import tempfile
import unittest

import folio_merkle
import verify_bundle


class MerkleTest(unittest.TestCase):
    def test_every_proof_verifies_and_a_changed_one_fails(self):
        hashes = folio_merkle.sample_hashes(19)
        for size in range(1, 20):
            root = folio_merkle.mth(hashes[:size])
            for index in range(size):
                path = folio_merkle.inclusion_path(index, hashes[:size])
                self.assertTrue(folio_merkle.verify_inclusion(hashes[index], index, size, path, root))
                if path:
                    bad = [bytes(32)] + path[1:]
                    self.assertFalse(folio_merkle.verify_inclusion(hashes[index], index, size, bad, root))
            for old in range(1, size + 1):
                proof = folio_merkle.consistency_path(old, hashes[:size])
                old_root = folio_merkle.mth(hashes[:old])
                self.assertTrue(folio_merkle.verify_consistency(old, size, old_root, root, proof))
                self.assertFalse(folio_merkle.verify_consistency(old, size, root if old != size else bytes(32), root, proof))

    def test_documented_root_of_seven(self):
        root = folio_merkle.mth(folio_merkle.sample_hashes(7)).hex()
        self.assertEqual(root, "abf0741510c81d1c9103b0b92d1379ba01230afb8ec60eab538f51ab2775c29c")


class BundleHelpersTest(unittest.TestCase):
    def test_formula_cells_are_neutral(self):
        for cell in ("=1", "+1", "-1", "@1", "\t1", "\r1"):
            self.assertEqual(verify_bundle.neutral(cell), "'" + cell)
        self.assertEqual(verify_bundle.neutral("plain"), "plain")

    def test_archive_with_parent_path_is_rejected(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "evil.tar")
            with tarfile.open(path, "w") as archive:
                info = tarfile.TarInfo("../escape.txt")
                info.size = 1
                archive.addfile(info, io.BytesIO(b"x"))
            with self.assertRaises(verify_bundle.Invalid):
                verify_bundle.extract(path, os.path.join(folder, "out"))
            self.assertFalse(os.path.exists(os.path.join(folder, "escape.txt")))


if __name__ == "__main__":
    unittest.main()
