// A minimal mbedTLS (2.28) DTLS 1.2 PSK client for TestDTLSMbedTLSClient: handshake with
// the cookie exchange, send an MQTT CONNECT, print the bytes that come back.
// Build: cc -o client dtls_psk_client.c -lmbedtls -lmbedx509 -lmbedcrypto
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include "mbedtls/net_sockets.h"
#include "mbedtls/ssl.h"
#include "mbedtls/entropy.h"
#include "mbedtls/ctr_drbg.h"
#include "mbedtls/timing.h"
#include "mbedtls/error.h"

static int hex(const char *s, unsigned char *out) {
	int n = 0;
	for (; s[0] && s[1]; s += 2) { unsigned v; sscanf(s, "%2x", &v); out[n++] = v; }
	return n;
}

int main(int argc, char **argv) {
	if (argc != 5) { fprintf(stderr, "usage: client host port identity hexkey\n"); return 2; }
	mbedtls_net_context net; mbedtls_ssl_context ssl; mbedtls_ssl_config conf;
	mbedtls_entropy_context ent; mbedtls_ctr_drbg_context drbg; mbedtls_timing_delay_context timer;
	mbedtls_net_init(&net); mbedtls_ssl_init(&ssl); mbedtls_ssl_config_init(&conf);
	mbedtls_entropy_init(&ent); mbedtls_ctr_drbg_init(&drbg);
	unsigned char key[64]; int klen = hex(argv[4], key);
	int ret;
	char err[200];
	if ((ret = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent, NULL, 0)) != 0) goto fail;
	if ((ret = mbedtls_net_connect(&net, argv[1], argv[2], MBEDTLS_NET_PROTO_UDP)) != 0) goto fail;
	if ((ret = mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_DATAGRAM, MBEDTLS_SSL_PRESET_DEFAULT)) != 0) goto fail;
	mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
	static const int suites[] = {MBEDTLS_TLS_PSK_WITH_AES_128_CCM_8, 0};
	mbedtls_ssl_conf_ciphersuites(&conf, suites);
	if ((ret = mbedtls_ssl_conf_psk(&conf, key, klen, (const unsigned char *)argv[3], strlen(argv[3]))) != 0) goto fail;
	if ((ret = mbedtls_ssl_setup(&ssl, &conf)) != 0) goto fail;
	mbedtls_ssl_set_bio(&ssl, &net, mbedtls_net_send, mbedtls_net_recv, mbedtls_net_recv_timeout);
	mbedtls_ssl_set_timer_cb(&ssl, &timer, mbedtls_timing_set_delay, mbedtls_timing_get_delay);
	mbedtls_ssl_conf_read_timeout(&conf, 5000);
	while ((ret = mbedtls_ssl_handshake(&ssl)) == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {}
	if (ret != 0) goto fail;
	printf("handshake ok: %s\n", mbedtls_ssl_get_ciphersuite(&ssl));
	// MQTT 3.1.1 CONNECT, client ID "dev-1", clean session, keep-alive 60.
	unsigned char connect[] = {0x10, 17, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 5, 'd', 'e', 'v', '-', '1'};
	if ((ret = mbedtls_ssl_write(&ssl, connect, sizeof connect)) < 0) goto fail;
	unsigned char buf[64];
	if ((ret = mbedtls_ssl_read(&ssl, buf, sizeof buf)) < 0) goto fail;
	printf("connack:");
	for (int i = 0; i < ret; i++) printf(" %02x", buf[i]);
	printf("\n");
	mbedtls_ssl_close_notify(&ssl);
	return 0;
fail:
	mbedtls_strerror(ret, err, sizeof err);
	fprintf(stderr, "mbedtls: -0x%04x %s\n", -ret, err);
	return 1;
}
