#!/usr/bin/env python3
"""Known-answer vectors for handshake/tlspsk, computed independently of the Go code.

Everything here follows the RFC text directly, with Python's hmac/hashlib for the TLS 1.2
PRF (RFC 5246 §5) and the `cryptography` package for AES-GCM, AES-CCM, ChaCha20-Poly1305
and AES-CBC. Nothing is shared with the Go implementation or with pion.

    python3 testdata/kat/vectors.py > testdata/kat/vectors.json

The inputs are fixed made-up values; none of them protects anything.
"""
import hashlib
import hmac
import json
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305


def p_hash(h, secret, seed, n):
    """RFC 5246 §5: P_hash(secret, seed) = HMAC(secret, A(1) + seed) + ..."""
    out, a = b"", seed
    while len(out) < n:
        a = hmac.new(secret, a, h).digest()
        out += hmac.new(secret, a + seed, h).digest()
    return out[:n]


def prf(h, secret, label, seed, n):
    return p_hash(h, secret, label + seed, n)


# id, name, ecdhe, kind, mac_len, key_len, iv_len, hash
SUITES = [
    (0xCCAC, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", True, "chacha", 0, 32, 12, hashlib.sha256),
    (0xD001, "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256", True, "gcm", 0, 16, 4, hashlib.sha256),
    (0xC037, "TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256", True, "cbc", 32, 16, 16, hashlib.sha256),
    (0xCCAB, "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256", False, "chacha", 0, 32, 12, hashlib.sha256),
    (0x00A8, "TLS_PSK_WITH_AES_128_GCM_SHA256", False, "gcm", 0, 16, 4, hashlib.sha256),
    (0x00A9, "TLS_PSK_WITH_AES_256_GCM_SHA384", False, "gcm", 0, 32, 4, hashlib.sha384),
    (0xC0A4, "TLS_PSK_WITH_AES_128_CCM", False, "ccm", 0, 16, 4, hashlib.sha256),
    (0xC0A8, "TLS_PSK_WITH_AES_128_CCM_8", False, "ccm8", 0, 16, 4, hashlib.sha256),
    (0x00AE, "TLS_PSK_WITH_AES_128_CBC_SHA256", False, "cbc", 32, 16, 16, hashlib.sha256),
]

PSK = bytes(range(0x40, 0x60))                      # 32 bytes
Z = bytes(range(0xA0, 0xC0))                        # a stand-in ECDH shared secret
CLIENT_RANDOM = bytes(range(0x00, 0x20))
SERVER_RANDOM = bytes(range(0x20, 0x40))
TRANSCRIPT = b"".join(bytes([i % 251]) for i in range(300))  # stands for the handshake messages
PLAINTEXTS = [b"hello, mqtls", bytes(range(61)), b""]


def premaster(ecdhe):
    if ecdhe:  # RFC 5489 §2
        return struct.pack(">H", len(Z)) + Z + struct.pack(">H", len(PSK)) + PSK
    # RFC 4279 §2
    return struct.pack(">H", len(PSK)) + bytes(len(PSK)) + struct.pack(">H", len(PSK)) + PSK


def aad(seq, typ, n):  # RFC 5246 §6.2.3.3
    return struct.pack(">QBHH", seq, typ, 0x0303, n)


def seal(kind, key, iv, mac_key, seq, typ, pt, cbc_iv):
    if kind in ("gcm", "ccm", "ccm8"):  # RFC 5288 §3 / RFC 6655 §3
        explicit = struct.pack(">Q", seq)
        nonce = iv + explicit
        if kind == "gcm":
            a = AESGCM(key)
        else:
            a = AESCCM(key, tag_length=16 if kind == "ccm" else 8)
        return explicit + a.encrypt(nonce, pt, aad(seq, typ, len(pt)))
    if kind == "chacha":  # RFC 7905 §2
        nonce = bytes(a ^ b for a, b in zip(iv, b"\0\0\0\0" + struct.pack(">Q", seq)))
        return ChaCha20Poly1305(key).encrypt(nonce, pt, aad(seq, typ, len(pt)))
    # RFC 7366 §3: encrypt-then-MAC
    pad = 15 - len(pt) % 16
    data = pt + bytes([pad]) * (pad + 1)
    e = Cipher(algorithms.AES(key), modes.CBC(cbc_iv)).encryptor()
    ct = cbc_iv + e.update(data) + e.finalize()
    mac = hmac.new(mac_key, aad(seq, typ, len(ct)) + ct, hashlib.sha256).digest()
    return ct + mac


vectors = []
for sid, name, ecdhe, kind, mac_len, key_len, iv_len, h in SUITES:
    pms = premaster(ecdhe)
    ms = prf(h, pms, b"master secret", CLIENT_RANDOM + SERVER_RANDOM, 48)
    ems = prf(h, pms, b"extended master secret", h(TRANSCRIPT).digest(), 48)
    kb = prf(h, ms, b"key expansion", SERVER_RANDOM + CLIENT_RANDOM, 2 * (mac_len + key_len + iv_len))
    o = 0
    parts = {}
    for part, n in (("client_mac", mac_len), ("server_mac", mac_len), ("client_key", key_len),
                    ("server_key", key_len), ("client_iv", iv_len), ("server_iv", iv_len)):
        parts[part] = kb[o:o + n]
        o += n
    records = []
    for direction in ("client", "server"):
        for seq, pt in enumerate(PLAINTEXTS):
            cbc_iv = bytes([seq + (0x10 if direction == "client" else 0x20)]) * 16
            frag = seal(kind, parts[direction + "_key"], parts[direction + "_iv"], parts[direction + "_mac"],
                        seq, 23, pt, cbc_iv)
            rec = struct.pack(">BHH", 23, 0x0303, len(frag)) + frag
            records.append({"direction": direction, "seq": seq, "plaintext": pt.hex(),
                            "cbc_iv": cbc_iv.hex() if kind == "cbc" else "", "record": rec.hex()})
    vectors.append({
        "suite": sid, "name": name, "ecdhe": ecdhe,
        "psk": PSK.hex(), "z": Z.hex() if ecdhe else "",
        "client_random": CLIENT_RANDOM.hex(), "server_random": SERVER_RANDOM.hex(),
        "transcript": TRANSCRIPT.hex(),
        "premaster": pms.hex(), "master": ms.hex(), "extended_master": ems.hex(),
        "client_verify": prf(h, ms, b"client finished", h(TRANSCRIPT).digest(), 12).hex(),
        "server_verify": prf(h, ms, b"server finished", h(TRANSCRIPT).digest(), 12).hex(),
        **{k: v.hex() for k, v in parts.items()},
        "records": records,
    })

print(json.dumps(vectors, indent=1))
