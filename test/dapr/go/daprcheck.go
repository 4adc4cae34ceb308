// Standard library only (Debian golang-go, run offline with `go run`): what daprd does with
// crypto/x509 and crypto/tls, against meshward.
//
// go run daprcheck.go csr ed25519|p256 OUT_DIR
//   Builds the CSR as dapr/kit's crypto/spiffe fetchIdentity does (x509.CreateCertificateRequest
//   with an empty template: empty subject, no extensions) and PEM-encodes it as dapr/dapr's
//   pkg/security/sentry.go does ("CERTIFICATE REQUEST"). Writes OUT_DIR/csr.pem and
//   OUT_DIR/key.pem (PKCS#8). The stored dapr/kit versions generate ECDSA P-256 keys; Dapr >= 1.18
//   uses Ed25519 (issue 16), so both are offered.
//
// go run daprcheck.go verify ROOTS_PEM CHAIN_PEM KEY_PEM EXPECTED_SPIFFE_ID PEER_SPIFFE_ID
// 1. Parses CHAIN_PEM (leaf then issuer), verifies the leaf with x509.Certificate.Verify against
//    ROOTS_PEM (ExtKeyUsageAny, as go-spiffe's x509svid.Verify does), requires an Ed25519 leaf and
//    issuer, exactly one URI SAN equal to EXPECTED_SPIFFE_ID, and a leaf that is not a CA.
// 2. Listens on 127.0.0.1:0 with that chain and key (TLS 1.3, client certificates required and
//    verified against ROOTS_PEM), prints "LISTENING <port>", accepts one connection, completes the
//    handshake, requires the client's URI SAN to equal PEER_SPIFFE_ID, writes "hello from go\n"
//    and prints "HANDSHAKE OK <peer id> <tls version>".
// Any failure prints "FAIL: reason" and exits 1.
package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"time"
)

func fail(format string, args ...any) {
	fmt.Printf("FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func readCerts(path string) []*x509.Certificate {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("read %s: %v", path, err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			fail("parse certificate in %s: %v", path, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		fail("no certificate in %s", path)
	}
	return certs
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == "csr" {
		makeCsr(os.Args[2], os.Args[3])
		return
	}
	if len(os.Args) == 5 && os.Args[1] == "x509" {
		verifyX509(os.Args[2], os.Args[3], os.Args[4])
		return
	}
	if len(os.Args) != 7 || os.Args[1] != "verify" {
		fail("usage: daprcheck csr ed25519|p256 OUT_DIR | daprcheck verify ROOTS CHAIN KEY EXPECTED_ID PEER_ID")
	}
	os.Args = os.Args[1:]
	roots := verifyX509(os.Args[1], os.Args[2], os.Args[4])
	serveOnce(roots)
}

// verifyX509 is step 1 alone (go run daprcheck.go x509 ROOTS CHAIN EXPECTED_ID).
func verifyX509(rootsPath, chainPath, expected string) *x509.CertPool {
	roots := x509.NewCertPool()
	for _, root := range readCerts(rootsPath) {
		roots.AddCert(root)
	}
	chain := readCerts(chainPath)
	leaf := chain[0]
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		fail("x509 verify: %v", err)
	}
	if _, ok := leaf.PublicKey.(ed25519.PublicKey); !ok || leaf.SignatureAlgorithm != x509.PureEd25519 {
		fail("leaf key %T signed with %v, expected Ed25519 signed with Ed25519", leaf.PublicKey, leaf.SignatureAlgorithm)
	}
	if len(chain) > 1 && chain[1].PublicKeyAlgorithm != x509.Ed25519 {
		fail("issuer key is %v, expected Ed25519", chain[1].PublicKeyAlgorithm)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != expected {
		fail("leaf URIs %v, expected exactly %s", leaf.URIs, expected)
	}
	if leaf.IsCA {
		fail("leaf is a CA")
	}
	fmt.Println("X509 OK")
	return roots
}

func serveOnce(roots *x509.CertPool) {
	pair, err := tls.LoadX509KeyPair(os.Args[2], os.Args[3])
	if err != nil {
		fail("load key pair: %v", err)
	}
	config := &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
		MinVersion:   tls.VersionTLS13,
	}
	listener, err := tls.Listen("tcp", "127.0.0.1:0", config)
	if err != nil {
		fail("listen: %v", err)
	}
	defer listener.Close()
	fmt.Printf("LISTENING %d\n", listener.Addr().(*net.TCPAddr).Port)
	conn, err := listener.Accept()
	if err != nil {
		fail("accept: %v", err)
	}
	defer conn.Close()
	tlsConn := conn.(*tls.Conn)
	_ = tlsConn.SetDeadline(time.Now().Add(20 * time.Second))
	if err := tlsConn.Handshake(); err != nil {
		fail("handshake: %v", err)
	}
	state := tlsConn.ConnectionState()
	peer := state.PeerCertificates[0]
	if len(peer.URIs) != 1 || peer.URIs[0].String() != os.Args[5] {
		fail("client URIs %v, expected exactly %s", peer.URIs, os.Args[5])
	}
	if _, err := tlsConn.Write([]byte("hello from go\n")); err != nil {
		fail("write: %v", err)
	}
	version := "TLS1.3"
	if state.Version != tls.VersionTLS13 {
		version = fmt.Sprintf("0x%x", state.Version)
	}
	fmt.Printf("HANDSHAKE OK %s %s\n", peer.URIs[0].String(), version)
}

func makeCsr(kind, dir string) {
	var key any
	var err error
	switch kind {
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "p256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		fail("unknown key kind %s", kind)
	}
	if err != nil {
		fail("generate key: %v", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, new(x509.CertificateRequest), key)
	if err != nil {
		fail("create csr: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		fail("marshal key: %v", err)
	}
	if err := os.WriteFile(dir+"/csr.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}), 0o644); err != nil {
		fail("write csr: %v", err)
	}
	if err := os.WriteFile(dir+"/key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		fail("write key: %v", err)
	}
	fmt.Println("CSR OK")
}
