package tlspsk

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// TestKeySchedule13KnownAnswers checks the TLS 1.3 key schedule against RFC 8448 §3 (the
// simple 1-RTT handshake, whose early secret is the one of an all-zero PSK): the stages, the
// handshake traffic secrets and the server's handshake key and IV.
func TestKeySchedule13KnownAnswers(t *testing.T) {
	h := func(s string) []byte { return mustHex(s) }
	early := earlySecret(zeroHash[:])
	if want := h("33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a"); !bytes.Equal(early, want) {
		t.Fatalf("early secret %x, want %x", early, want)
	}
	if got, want := deriveSecret(early, "derived", emptyHash), h("6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba"); !bytes.Equal(got, want) {
		t.Errorf("derived %x, want %x", got, want)
	}
	hs := handshakeSecret(early, h("8bd4054fb55b9d63fdfbacf9f04b9f0d35e6d63f537563efd46272900f89492d"))
	if want := h("1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac"); !bytes.Equal(hs, want) {
		t.Fatalf("handshake secret %x, want %x", hs, want)
	}
	th := h("860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8") // CH..SH
	keys, err := trafficKeys(tls13Suites[0], hs, "hs", th)
	if err != nil {
		t.Fatal(err)
	}
	if want := h("b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21"); !bytes.Equal(keys.clientSecret, want) {
		t.Errorf("c hs traffic %x, want %x", keys.clientSecret, want)
	}
	if want := h("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38"); !bytes.Equal(keys.serverSecret, want) {
		t.Errorf("s hs traffic %x, want %x", keys.serverSecret, want)
	}
	if got, want := expandLabel(keys.serverSecret, "key", nil, 16), h("3fce516009c21727d0f2e4e86ee403bc"); !bytes.Equal(got, want) {
		t.Errorf("server handshake key %x, want %x", got, want)
	}
	if got, want := hex.EncodeToString(keys.server.iv[:]), "5d313eb2671276ee13000b30"; got != want {
		t.Errorf("server handshake IV %s, want %s", got, want)
	}
}
