#!/usr/bin/env python3
"""Independent verifier for Folio ledger export files.

Written from docs/ledger-format.md alone, with no Folio code: it checks the
hash chain, strict Ed25519 signatures, key rotations, checkpoints (with their
Merkle roots) and the signed head, and reports the first failure with the same
codes as Folio's own verifier.

Usage: folio_verify.py [--json] FILE [FILE ...]

Exit status: 0 when every ledger is intact, 1 when one is not, 2 when a FILE
cannot be read.
"""

import argparse
import functools
import json
import struct
import sys

try:
    import blake3
    import nacl.exceptions
    import nacl.signing
except ImportError as error:  # pragma: no cover - depends on the environment
    sys.stderr.write(
        f"missing Python package ({error}); install them with "
        "pip install -r tests/verifier/requirements-verifier.txt\n"
    )
    sys.exit(2)

EXPORT_MAGIC = b"FOLIOLDG"
HEAD_MAGIC = b"folio/head/v1\x00"
EVENT_HASH_PREFIX = b"folio/event/v1\x00"
EVENT_SIGNATURE_PREFIX = b"folio/event-signature/v1\x00"
HEAD_SIGNATURE_PREFIX = b"folio/head-signature/v1\x00"
KEY_ID_PREFIX = b"folio/key-id/v1\x00"

MAX_STRING_LEN = 1024
MAX_PAYLOAD_LEN = 1 << 20
MAX_RECORD_LEN = 2 << 20
SIGNED_HEAD_LEN = 154
SEAL_LEN = 32 + 64
LEDGER_STREAM = "ledger"
GENESIS_TYPE = "ledger.created"
ROTATION_TYPE = "ledger.key_rotated"
CHECKPOINT_TYPE = "ledger.checkpoint"
CHECKPOINT_STREAM = "$checkpoints"
MERKLE_LEAF_PREFIX = b"folio/merkle-leaf/v1\x00"
MERKLE_NODE_PREFIX = b"folio/merkle-node/v1\x00"
CHECKPOINT_MAGIC = b"folio/checkpoint/v1\x00"
CHECKPOINT_SIGNATURE_PREFIX = b"folio/checkpoint-signature/v1\x00"


class Failure(Exception):
    """The first failure: a code, a position (or None) and a sentence."""

    def __init__(self, code, position, message):
        super().__init__(message)
        self.code = code
        self.position = position
        self.message = message


# --- Edwards25519 arithmetic (RFC 8032, section 5.1), for the strictness rules.

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY = (0, 1, 1, 0)


def point_add(a, b):
    """Add two points in extended coordinates (X, Y, Z, T)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    pa = (y1 - x1) * (y2 - x2) % P
    pb = (y1 + x1) * (y2 + x2) % P
    pc = 2 * t1 * t2 * D % P
    pd = 2 * z1 * z2 % P
    e, f, g, h = pb - pa, pd - pc, pd + pc, pb + pa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def point_mul(scalar, point):
    """Multiply a point by a non-negative integer (double and add)."""
    result = IDENTITY
    while scalar > 0:
        if scalar & 1:
            result = point_add(result, point)
        point = point_add(point, point)
        scalar >>= 1
    return result


def is_identity(point):
    x, y, z, _ = point
    return x % P == 0 and (y - z) % P == 0


def decompress_canonical(data):
    """Decode a 32-byte point encoding, or return None if it is not canonical."""
    value = int.from_bytes(data, "little")
    sign = value >> 255
    y = value & ((1 << 255) - 1)
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if x == 0 and sign == 1:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


@functools.lru_cache(maxsize=1024)
def check_point(data, label):
    """Strict rules for a public key or R: canonical, not small order, torsion-free."""
    point = decompress_canonical(data)
    if point is None:
        return f"{label} is not a canonical curve point"
    if is_identity(point_mul(8, point)):
        return f"{label} has small order"
    if not is_identity(point_mul(L, point)):
        return f"{label} is not in the prime-order subgroup"
    return None


def verify_strict(public_key, message, signature):
    """Return None when the signature verifies strictly, else the reason."""
    problem = check_point(public_key, "public key") or check_point(signature[:32], "signature R")
    if problem:
        return problem
    if int.from_bytes(signature[32:], "little") >= L:
        return "signature S is not canonical"
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError):
        return "signature does not verify"
    return None


def key_id(public_key):
    return blake3.blake3(KEY_ID_PREFIX + bytes([1]) + public_key).digest()[:16]


# --- Decoding.


class Malformed(Exception):
    """Bytes that break the layout."""


class Reader:
    def __init__(self, data):
        self.data = data
        self.offset = 0

    def take(self, length, field):
        if self.offset + length > len(self.data):
            raise Malformed(f"truncated in field {field}")
        chunk = self.data[self.offset:self.offset + length]
        self.offset += length
        return chunk

    def uint(self, size, field):
        return int.from_bytes(self.take(size, field), "big")

    def var(self, field, limit):
        length = self.uint(4, field)
        if length > limit:
            raise Malformed(f"field {field} is {length} bytes, over the limit of {limit}")
        return self.take(length, field)

    def text(self, field):
        try:
            return self.var(field, MAX_STRING_LEN).decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(f"field {field} is not valid UTF-8") from None

    def remaining(self):
        return len(self.data) - self.offset


def decode_record(data):
    """Decode a stored record into a dict, per the record table of the format doc."""
    r = Reader(data)
    if r.uint(2, "format_version") != 1:
        raise Malformed("unsupported record format version")
    if r.uint(1, "hash_alg") != 1 or r.uint(1, "sig_alg") != 1:
        raise Malformed("unknown algorithm id")
    event = {"ledger_id": r.take(16, "ledger_id"), "position": r.uint(8, "position")}
    event["stream_id"] = r.text("stream_id")
    event["stream_version"] = r.uint(8, "stream_version")
    r.take(16, "event_id")
    event["event_type"] = r.text("event_type")
    event["schema_version"] = r.uint(2, "schema_version")
    event["recorded_at"] = struct.unpack(">q", r.take(8, "recorded_at_micros"))[0]
    if r.uint(1, "actor_kind") not in (0, 1, 2):
        raise Malformed("unknown actor kind")
    r.text("actor_id")
    r.text("actor_credential")
    r.take(16, "correlation_id")
    flag = r.uint(1, "causation_flag")
    if flag not in (0, 1):
        raise Malformed(f"invalid causation flag {flag}")
    if flag == 1:
        r.take(16, "causation_id")
    event["payload"] = r.var("payload", MAX_PAYLOAD_LEN)
    event["prev_hash"] = r.take(32, "prev_hash")
    event["key_id"] = r.take(16, "key_id")
    event["hash"] = r.take(32, "hash")
    event["signature"] = r.take(64, "signature")
    if r.remaining():
        raise Malformed(f"{r.remaining()} trailing bytes after the signature")
    event["body"] = data[:-SEAL_LEN]
    return event


def merkle_node(left, right):
    return blake3.blake3(MERKLE_NODE_PREFIX + left + right).digest()


def encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_key_payload(payload):
    """Decode ledger.created / ledger.key_rotated: u8, 32 raw bytes, varint-length UTF-8.

    Returns (key_algorithm, public_key) or raises Malformed unless the bytes are
    the canonical (shortest) postcard encoding with nothing left over.
    """
    if len(payload) < 34:
        raise Malformed("payload truncated")
    algorithm, public_key = payload[0], payload[1:33]
    length, shift, offset = 0, 0, 33
    while True:
        if offset >= len(payload) or offset - 33 >= 10:
            raise Malformed("invalid varint length")
        byte = payload[offset]
        length |= (byte & 0x7F) << shift
        shift += 7
        offset += 1
        if not byte & 0x80:
            break
    text = payload[offset:offset + length]
    if len(text) != length:
        raise Malformed("payload string truncated")
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("payload string is not valid UTF-8") from None
    canonical = bytes([algorithm]) + public_key + encode_varint(length) + text
    if canonical != payload:
        raise Malformed("payload is not the canonical postcard encoding")
    return algorithm, public_key


def decode_export(data):
    """Split an export file into records and the signed head (None without a trailer)."""
    r = Reader(data)
    try:
        if r.take(8, "magic") != EXPORT_MAGIC:
            raise Malformed("missing magic bytes FOLIOLDG")
        if r.uint(2, "file format version") != 1:
            raise Malformed("unsupported export file format version")
        records = []
        while True:
            if r.remaining() == 0:
                return records, None
            length = r.uint(4, "record length")
            if length == 0:
                break
            if length > MAX_RECORD_LEN:
                raise Malformed(f"record declares {length} bytes, over the limit")
            records.append(r.take(length, "record"))
        if r.uint(4, "signed head length") != SIGNED_HEAD_LEN:
            raise Malformed("signed head length is not 154")
        head = r.take(SIGNED_HEAD_LEN, "signed head")
        if r.remaining():
            raise Malformed(f"{r.remaining()} trailing bytes after the signed head")
        return records, head
    except Malformed as error:
        raise Failure("bad_export", None, f"export cannot be decoded: {error}") from None


# --- The checks, in the order of the format doc.


class Chain:
    def __init__(self, records):
        self.records = records
        self.ledger_id = None
        self.expected = 0
        self.prev_hash = bytes(32)
        self.last_time = None
        self.active_key = None
        self.streams = {}
        # Roots of the perfect subtrees of the Merkle tree so far, left to right, with sizes.
        self.subtrees = []

    def fail(self, code, message):
        raise Failure(code, self.expected, message)

    def check_all(self):
        for index, data in enumerate(self.records):
            self.check_record(index, data)

    def check_record(self, index, data):
        try:
            event = decode_record(data)
        except Malformed as error:
            self.fail("undecodable", f"record cannot be decoded: {error}")
        if self.ledger_id is None:
            self.ledger_id = event["ledger_id"]
        if event["ledger_id"] != self.ledger_id:
            self.fail("wrong_ledger", "event names another ledger")
        self.check_position(index, event)
        if blake3.blake3(EVENT_HASH_PREFIX + event["body"]).digest() != event["hash"]:
            self.fail("changed_bytes", "event bytes do not match its stored hash")
        if event["prev_hash"] != self.prev_hash:
            self.fail("broken_link", "previous hash is not the hash of the event before")
        public_key = self.signing_key(event)
        message = EVENT_SIGNATURE_PREFIX + event["hash"]
        problem = verify_strict(public_key, message, event["signature"])
        if problem:
            self.fail("bad_signature", f"signature rejected: {problem}")
        self.check_late(event)
        self.advance(event)

    def check_position(self, index, event):
        position = event["position"]
        if position < self.expected:
            self.fail("reordered_event", f"found position {position}, events out of order")
        if position > self.expected:
            for later in self.records[index + 1:]:
                try:
                    if decode_record(later)["position"] == self.expected:
                        self.fail("reordered_event", "the expected event appears later")
                except Malformed:
                    continue
            self.fail("missing_event", f"found position {position}, event missing")

    def signing_key(self, event):
        if self.expected == 0:
            return self.genesis_key(event)
        if event["event_type"] == GENESIS_TYPE:
            self.fail("bad_genesis", "a second ledger.created event appears")
        if event["key_id"] != key_id(self.active_key):
            self.fail("unknown_key", "event is not signed by the active key")
        return self.active_key

    def genesis_key(self, event):
        if event["event_type"] != GENESIS_TYPE or event["schema_version"] != 1:
            self.fail("bad_genesis", "first event is not ledger.created schema 1")
        if event["stream_id"] != LEDGER_STREAM or event["stream_version"] != 0:
            self.fail("bad_genesis", "genesis is not on stream ledger version 0")
        try:
            algorithm, public_key = decode_key_payload(event["payload"])
        except Malformed as error:
            self.fail("bad_genesis", f"genesis payload: {error}")
        if algorithm != 1:
            self.fail("bad_genesis", "genesis key algorithm is not 1")
        problem = check_point(public_key, "genesis key")
        if problem:
            self.fail("bad_genesis", problem)
        if event["key_id"] != key_id(public_key):
            self.fail("bad_genesis", "genesis is not signed by the key it names")
        self.active_key = public_key
        return public_key

    def check_late(self, event):
        if self.last_time is not None and event["recorded_at"] < self.last_time:
            self.fail("time_went_backwards", "recorded time is earlier than the previous event's")
        expected_version = self.streams.get(event["stream_id"], 0)
        if event["stream_version"] != expected_version:
            self.fail("stream_version_gap", f"stream version is not {expected_version}")
        if event["event_type"] == ROTATION_TYPE:
            self.check_rotation(event)
        if event["event_type"] == CHECKPOINT_TYPE or event["stream_id"] == CHECKPOINT_STREAM:
            self.check_checkpoint(event)

    def merkle_root(self):
        """Fold the subtrees right to left: the RFC 9162 tree hash of every event so far."""
        root = None
        for _, subtree in reversed(self.subtrees):
            root = subtree if root is None else merkle_node(subtree, root)
        return root

    def check_checkpoint(self, event):
        if event["stream_id"] != CHECKPOINT_STREAM or event["event_type"] != CHECKPOINT_TYPE:
            self.fail("bad_checkpoint", "checkpoint type and stream do not go together")
        if event["schema_version"] != 1:
            self.fail("bad_checkpoint", "checkpoint schema is not 1")
        payload = event["payload"]
        # Postcard bytes: a varint length of 192 (c0 01), then the signed checkpoint.
        if payload[:2] != b"\xc0\x01" or len(payload) != 194:
            self.fail("bad_checkpoint", "checkpoint payload is not 192 length-prefixed bytes")
        data = payload[2:]
        if data[:20] != CHECKPOINT_MAGIC or data[20:24] != b"\x00\x01\x01\x01":
            self.fail("bad_checkpoint", "checkpoint header is not folio/checkpoint/v1 1 1 1")
        ledger_id, tree_size = data[24:40], struct.unpack(">Q", data[40:48])[0]
        head_hash, root, signer = data[48:80], data[80:112], data[112:128]
        if ledger_id != self.ledger_id:
            self.fail("bad_checkpoint", "checkpoint names another ledger")
        if tree_size != event["position"] or head_hash != event["prev_hash"]:
            self.fail("bad_checkpoint", "checkpoint tree size or head does not match its place")
        if root != self.merkle_root():
            self.fail("bad_checkpoint", "checkpoint root is not the root of the events before it")
        if signer != key_id(self.active_key):
            self.fail("bad_checkpoint", "checkpoint is not signed by the active key")
        message = CHECKPOINT_SIGNATURE_PREFIX + data[24:48] + head_hash + root
        problem = verify_strict(self.active_key, message, data[128:192])
        if problem:
            self.fail("bad_checkpoint", f"checkpoint signature rejected: {problem}")

    def check_rotation(self, event):
        if event["stream_id"] != LEDGER_STREAM or event["schema_version"] != 1:
            self.fail("bad_rotation", "rotation is not on stream ledger schema 1")
        try:
            algorithm, new_key = decode_key_payload(event["payload"])
        except Malformed as error:
            self.fail("bad_rotation", f"rotation payload: {error}")
        if algorithm != 1:
            self.fail("bad_rotation", "new key algorithm is not 1")
        problem = check_point(new_key, "new key")
        if problem:
            self.fail("bad_rotation", problem)
        if new_key == self.active_key:
            self.fail("bad_rotation", "new key is the active key")
        event["new_key"] = new_key

    def advance(self, event):
        self.expected += 1
        size, subtree = 1, blake3.blake3(MERKLE_LEAF_PREFIX + event["hash"]).digest()
        while self.subtrees and self.subtrees[-1][0] == size:
            _, left = self.subtrees.pop()
            size, subtree = size * 2, merkle_node(left, subtree)
        self.subtrees.append((size, subtree))
        self.prev_hash = event["hash"]
        self.last_time = event["recorded_at"]
        self.streams[event["stream_id"]] = event["stream_version"] + 1
        if "new_key" in event:
            self.active_key = event["new_key"]

    def check_head(self, head):
        last = self.expected - 1
        if self.expected == 0:
            raise Failure("bad_genesis", 0, "the ledger has no events")
        if head is None:
            raise Failure("truncated_tail", self.expected, "no signed head: the tail may be cut off")
        r = Reader(head)
        ok_header = (
            r.take(len(HEAD_MAGIC), "magic") == HEAD_MAGIC
            and r.uint(2, "format_version") == 1
            and r.uint(1, "hash_alg") == 1
            and r.uint(1, "sig_alg") == 1
        )
        ledger_id, position = r.take(16, "ledger_id"), r.uint(8, "position")
        head_hash, head_key_id, signature = r.take(32, "hash"), r.take(16, "key_id"), r.take(64, "sig")
        if not ok_header:
            raise Failure("bad_head", None, "signed head cannot be decoded")
        if ledger_id != self.ledger_id:
            raise Failure("bad_head", None, "signed head names another ledger")
        if position > last:
            raise Failure("truncated_tail", self.expected, "signed head is past the last event")
        if head_key_id != key_id(self.active_key):
            raise Failure("bad_head", None, "signed head is not signed by the active key")
        message = HEAD_SIGNATURE_PREFIX + ledger_id + struct.pack(">Q", position) + head_hash
        problem = verify_strict(self.active_key, message, signature)
        if problem:
            raise Failure("bad_head", None, f"signed head signature rejected: {problem}")
        if position != last or head_hash != self.prev_hash:
            raise Failure("head_mismatch", position, "signed head does not match the last event")


def verify(data):
    """Return None when the export is intact, else the first Failure."""
    try:
        records, head = decode_export(data)
        chain = Chain(records)
        chain.check_all()
        chain.check_head(head)
    except Failure as failure:
        return failure
    return None


def report(path, failure, as_json, name_file):
    """Print one file's verdict, as text or as one JSON object on one line."""
    if as_json:
        verdict = {
            "intact": failure is None,
            "position": None if failure is None else failure.position,
            "code": "ok" if failure is None else failure.code,
        }
        if name_file:
            verdict = {"file": path, **verdict}
        print(json.dumps(verdict))
    elif failure is None:
        print(f"{path}: intact")
    else:
        where = "" if failure.position is None else f" at position {failure.position}"
        print(f"{path}: NOT intact{where}: {failure.code}: {failure.message}")


def main():
    parser = argparse.ArgumentParser(description="Verify Folio ledger export files.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="path of an export file")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print each verdict as JSON; with several files, one object per line with a file key",
    )
    args = parser.parse_args()

    all_intact = True
    for path in args.files:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            sys.stderr.write(f"cannot read {path}: {error}\n")
            return 2
        failure = verify(data)
        all_intact = all_intact and failure is None
        report(path, failure, args.json, len(args.files) > 1)
    return 0 if all_intact else 1


if __name__ == "__main__":
    sys.exit(main())
