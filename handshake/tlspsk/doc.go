// Package tlspsk is a TLS 1.3 and TLS 1.2 pre-shared-key server (and a small client) over
// TCP, because Go's crypto/tls has no PSK.
//
// It sits at the handshake step of mqtls's accept → handshake → bind → pipe path: Server
// wraps an accepted net.Conn, HandshakeContext runs the handshake, and the resulting Conn is
// the secure net.Conn the proxy pipes, with the PSK identity in ConnectionState. OffersPSK
// lets a listener that also serves certificates route a connection by its ClientHello.
//
// A ClientHello that offers TLS 1.3 with a pre_shared_key gets TLS 1.3 (RFC 8446 §4.2.11,
// external PSKs as RFC 9257 describes them, each bound to SHA-256): psk_dhe_ke over X25519
// or P-256, with a HelloRetryRequest when the client's shares hold neither, or psk_ke (no
// forward secrecy) when Config.AllowPSKKE says so; suites TLS_AES_128_GCM_SHA256,
// TLS_CHACHA20_POLY1305_SHA256, TLS_AES_128_CCM_SHA256 and TLS_AES_128_CCM_8_SHA256. The
// binder is checked in constant time before anything depends on the identity. The record
// layer hides content types, strips padding, follows KeyUpdate both ways (answering
// update_requested; a flood ends the session), drops the middlebox-compatibility
// ChangeCipherSpec only where RFC 8446 §5 allows it, skips refused early data up to 16 KiB,
// and honours a client's record_size_limit (RFC 8449). No session tickets are issued.
//
// Any other ClientHello gets TLS 1.2 (RFC 4279; for forward secrecy RFC 5489's ECDHE_PSK
// over X25519 or P-256): ChaCha20-Poly1305 (RFC 7905), AES-GCM (RFC 5487, RFC 8442),
// AES-CCM and CCM-8 (RFC 6655), plus AES-CBC with HMAC-SHA256 only when the client offers
// encrypt_then_mac (RFC 7366), so the MAC covers the ciphertext and is checked before any
// padding is looked at. Config.MinVersion and MaxVersion bound the versions. The TLS 1.2
// key schedule comes from pion/dtls's pkg/crypto/prf, the TLS 1.3 one is HKDF (RFC 5869)
// over crypto/hmac, and CCM comes from pion/dtls's pkg/crypto/ccm.
//
// Refused, each with an *Error whose Reason is stable: TLS 1.0/1.1 (protocol_version),
// MAC-then-encrypt CBC (cbc_without_etm: Lucky13-style padding oracles), compression,
// renegotiation (no_renegotiation warning, renegotiation_refused: it has a history of
// attacks and no use here), session resumption (the session ID is ignored and an empty one
// sent; no tickets: every connection proves the key afresh). A wrong key is decrypt_error.
// An unknown identity is answered exactly like a wrong key — the handshake goes on with a
// random key and ends in decrypt_error — so identities cannot be enumerated (RFC 4279 §2,
// RFC 8446 §6.2); its Reason still says unknown_psk_identity, and
// Config.RevealUnknownIdentity brings the explicit alert back for debugging. Extended
// master secret (RFC 7627) is used whenever a TLS 1.2 client offers it.
package tlspsk
