// Package kubernetes is the Kubernetes example: Mosquitto and the mqtls sidecar in one pod,
// with the Service, PodDisruptionBudget, TLS Secret (from cert-manager or by hand) and
// PodMonitor around them. See README.md in this directory.
//
// It holds no code, only the manifests and the tests that keep them honest: every mqtls
// container's flags and MQTLS_* environment are run through the real binary's
// `mqtls check` against a throw-away PKI laid out as the Secret volume would be, and the
// probes, ports, Secret mounts, security settings, shutdown timing, Service and broker
// configuration are checked against those flags. The Dockerfile the pod's image comes from
// is checked against the manifests too.
package kubernetes
