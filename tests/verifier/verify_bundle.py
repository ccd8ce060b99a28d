#!/usr/bin/env python3
"""Independent verifier for Folio evidence bundles, written from docs/evidence.md and
docs/ledger-format.md with no Folio code.

It checks the BagIt layout and SHA-256 manifests, the BLAKE3 Folio manifest and its
Ed25519 signature by the ledger key, the whole chain in data/events.folio (with
folio_verify.py), that the chain ends with a checkpoint, that data/checkpoints.json lists
the chain's checkpoints, every inclusion proof in data/proofs.json, and that each row of
data/audit.csv matches the sealed event at its position. It does not decode event payloads,
so payments.csv, dlq_actions.csv and the reports are covered by the manifest signature
only, and `folio verify-bundle` is what rebuilds them.

Usage: verify_bundle.py BUNDLE      (a directory or a .tar archive)
Exit status: 0 when the bundle is valid, 1 when it is not, 2 when it cannot be read.
"""

import csv
import hashlib
import io
import json
import os
import struct
import sys
import tarfile
import tempfile

try:
    import blake3
except ImportError as error:  # pragma: no cover - depends on the environment
    sys.stderr.write(
        f"missing Python package ({error}); install them with "
        "pip install -r tests/verifier/requirements-verifier.txt\n"
    )
    sys.exit(2)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import folio_merkle  # noqa: E402
import folio_verify  # noqa: E402

BAGIT_TXT = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
DATA_FILES = [
    "data/anomaly_decisions.csv", "data/audit.csv", "data/checkpoints.json",
    "data/controls.csv", "data/dlq_actions.csv", "data/events.folio", "data/events.jsonl", "data/keys.json",
    "data/payments.csv", "data/proofs.json", "data/report.html", "data/report.pdf",
]
TAG_FILES = ["bag-info.txt", "bagit.txt", "folio-manifest.sig", "folio-manifest.txt",
             "manifest-sha256.txt"]
MANIFEST_PREFIX = b"folio/bundle-manifest/v1\x00"


class Invalid(Exception):
    """A failed check: a code and a sentence."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


def read(root, name):
    try:
        with open(os.path.join(root, name), "rb") as f:
            return f.read()
    except OSError:
        raise Invalid("file_set", f"{name} is missing") from None


def check_manifest(root, name, digest, code):
    listed = []
    for line in read(root, name).decode("utf-8").splitlines():
        expected, _, path = line.partition("  ")
        if path.startswith("/") or ".." in path.split("/"):
            raise Invalid(code, f"{name} lists the unsafe path {path!r}")
        if digest(read(root, path)) != expected:
            raise Invalid(code, f"{path} does not match its digest in {name}")
        listed.append(path)
    return listed


def present_files(root):
    found = set()
    for folder, _, files in os.walk(root):
        for file in files:
            found.add(os.path.relpath(os.path.join(folder, file), root).replace(os.sep, "/"))
    return found


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def blake(data):
    return blake3.blake3(data).hexdigest()


def check_files(root):
    if read(root, "bagit.txt") != BAGIT_TXT:
        raise Invalid("bagit", "bagit.txt is not BagIt 1.0 with UTF-8 tag files")
    listed = check_manifest(root, "manifest-sha256.txt", sha256, "file_hash")
    if sorted(listed) != DATA_FILES:
        raise Invalid("file_set", "manifest-sha256.txt does not list exactly the payload files")
    expected = set(DATA_FILES) | set(TAG_FILES) | {"tagmanifest-sha256.txt"}
    found = present_files(root)
    if found != expected:
        raise Invalid("file_set", f"files added {sorted(found - expected)}, removed {sorted(expected - found)}")
    check_manifest(root, "tagmanifest-sha256.txt", sha256, "file_hash")
    check_manifest(root, "folio-manifest.txt", blake, "manifest")


def check_chain(root):
    """Verify events.folio from genesis; return the decoded events and the final active key."""
    data = read(root, "data/events.folio")
    failure = folio_verify.verify(data)
    if failure is not None:
        raise Invalid("chain", f"{failure.code} at position {failure.position}: {failure}")
    records, _ = folio_verify.decode_export(data)
    events = [folio_verify.decode_record(r) for r in records]
    chain = folio_verify.Chain(records)
    chain.check_all()
    return events, chain.active_key


def check_signature(root, active_key):
    fields = dict(line.split(" ", 1) for line in read(root, "folio-manifest.sig").decode().splitlines())
    if bytes.fromhex(fields.get("key_id", "")) != folio_verify.key_id(active_key):
        raise Invalid("manifest_signature", "manifest is not signed by the chain's active key")
    message = MANIFEST_PREFIX + read(root, "folio-manifest.txt")
    problem = folio_verify.verify_strict(active_key, message, bytes.fromhex(fields.get("signature", "")))
    if problem:
        raise Invalid("manifest_signature", f"manifest signature rejected: {problem}")


def checkpoint_bytes(events):
    """The 192 signed bytes of every checkpoint event, in ledger order."""
    return [e["payload"][2:] for e in events if e["event_type"] == "ledger.checkpoint"]


def check_checkpoints(root, events):
    last = events[-1]
    info = read(root, "bag-info.txt").decode()
    if f"Folio-Checkpoint-Tree-Size: {last['position']}\n" not in info:
        raise Invalid("checkpoint", "bag-info.txt names another checkpoint than the chain ends with")
    if last["event_type"] != "ledger.checkpoint":
        raise Invalid("checkpoint", "the chain does not end with a checkpoint")
    listed = [bytes.fromhex(i["checkpoint"]) for i in json.loads(read(root, "data/checkpoints.json"))["items"]]
    if listed != checkpoint_bytes(events):
        raise Invalid("content", "checkpoints.json does not list the chain's checkpoints")


def check_proofs(root, events, active_key):
    anchor = folio_merkle.parse_checkpoint(checkpoint_bytes(events)[-1])
    items = json.loads(read(root, "data/proofs.json"))["items"]
    for item in items:
        signed = bytes.fromhex(item["checkpoint"]["checkpoint"])
        if folio_merkle.parse_checkpoint(signed) != anchor:
            raise Invalid("proof", "a proof names another checkpoint than the bundle's")
        position = item["position"]
        if not 0 <= position < anchor["tree_size"]:
            raise Invalid("proof", f"proof position {position} is outside the checkpoint")
        event_hash = events[position]["hash"]
        if bytes.fromhex(item["event_hash"]) != event_hash:
            raise Invalid("proof", f"proof for position {position} names another event hash")
        proof = [bytes.fromhex(p) for p in item["proof"]]
        if not folio_merkle.verify_inclusion(event_hash, position, anchor["tree_size"], proof,
                                             anchor["merkle_root"]):
            raise Invalid("proof", f"inclusion proof of position {position} does not verify")
    message = folio_merkle.checkpoint_message(anchor)
    if folio_verify.verify_strict(active_key, message, anchor["signature"]):
        raise Invalid("proof", "the bundle's checkpoint signature does not verify")
    return len(items)


def neutral(cell):
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


def check_audit(root, events):
    rows = list(csv.reader(io.StringIO(read(root, "data/audit.csv").decode("utf-8"), newline="")))
    if not rows or rows[0][0] != "position":
        raise Invalid("content", "audit.csv has no header")
    for row in rows[1:]:
        position = int(row[0])
        if not 0 <= position < len(events):
            raise Invalid("content", f"audit.csv names position {position}, outside the chain")
        e = events[position]
        expected = [str(position), str(e["recorded_at"]), neutral(e["stream_id"]),
                    str(e["stream_version"]), neutral(e["event_type"])]
        if row[:5] != expected or row[9] != e["hash"].hex():
            raise Invalid("content", f"audit.csv row of position {position} does not match the event")


def verify_dir(root):
    check_files(root)
    events, active_key = check_chain(root)
    check_signature(root, active_key)
    check_checkpoints(root, events)
    proofs = check_proofs(root, events, active_key)
    check_audit(root, events)
    return len(events), proofs


def extract(path, dest):
    with tarfile.open(path, "r:") as archive:
        for member in archive.getmembers():
            name = member.name
            if not member.isreg() or name.startswith("/") or ".." in name.split("/"):
                raise Invalid("archive", f"archive entry {name!r} is not a plain file inside the bundle")
            target = os.path.join(dest, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.extractfile(member) as source, open(target, "xb") as out:
                out.write(source.read())


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[1]
    if not os.path.exists(path):
        print(f"cannot read {path}", file=sys.stderr)
        return 2
    try:
        if os.path.isdir(path):
            count, proofs = verify_dir(path)
        else:
            with tempfile.TemporaryDirectory() as staging:
                extract(path, staging)
                count, proofs = verify_dir(staging)
    except Invalid as error:
        print(f"{path}: INVALID: {error}")
        return 1
    except (ValueError, KeyError, IndexError, struct.error, tarfile.TarError) as error:
        print(f"{path}: INVALID: malformed: {error!r}")
        return 1
    print(f"{path}: VALID: {count} events, {proofs} inclusion proof(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
