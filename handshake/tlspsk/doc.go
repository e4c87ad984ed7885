// Package tlspsk is a TLS 1.2 pre-shared-key server (and a small client) over TCP, because
// Go's crypto/tls has no PSK.
//
// It sits at the handshake step of mqtls's accept → handshake → bind → pipe path: Server
// wraps an accepted net.Conn, HandshakeContext runs RFC 4279's handshake (PSK or, for
// forward secrecy, RFC 5489's ECDHE_PSK over X25519 or P-256), and the resulting Conn is the
// secure net.Conn the proxy pipes, with the PSK identity in ConnectionState. OffersPSK lets
// a listener that also serves certificates route a connection by its ClientHello.
//
// Only TLS 1.2 is spoken. A TLS 1.3 client that also offers TLS 1.2 PSK suites (OpenSSL,
// GnuTLS, mosquitto_pub) gets a plain TLS 1.2 answer. The suites are AEAD — ChaCha20-Poly1305
// (RFC 7905), AES-GCM (RFC 5487, RFC 8442), AES-CCM and CCM-8 (RFC 6655) — plus AES-CBC with
// HMAC-SHA256 only when the client offers encrypt_then_mac (RFC 7366), so the MAC covers
// the ciphertext and is checked before any padding is looked at. The key schedule comes
// from pion/dtls's pkg/crypto/prf, CCM from its pkg/crypto/ccm.
//
// Refused, each with an *Error whose Reason is stable: TLS 1.0/1.1 (protocol_version),
// MAC-then-encrypt CBC (cbc_without_etm: Lucky13-style padding oracles), compression,
// renegotiation (no_renegotiation warning, renegotiation_refused: it has a history of
// attacks and no use here), session resumption (the session ID is ignored and an empty one
// sent; no tickets: every connection proves the key afresh). Unknown identities get
// unknown_psk_identity, a wrong key decrypt_error (RFC 4279 §2). Extended master secret
// (RFC 7627) is used whenever the client offers it.
package tlspsk
