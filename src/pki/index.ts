export { certificatesFromPem, pemBlocks, toPem } from "./pem.ts";
export type { PemBlock } from "./pem.ts";
export {
  assertAcceptableKey,
  decodePrivateKey,
  describePublicKey,
  encodePrivateKey,
  generateKeyPair,
  isEncryptedPrivateKeyPem,
  keysMatch,
  MIN_RSA_BITS,
} from "./keys.ts";
export type { KeyAlgorithm, KeyDescription, KeyPair } from "./keys.ts";
export { createCsr, parseCsr } from "./csr.ts";
export type { CsrRequest, ParsedCsr } from "./csr.ts";
export {
  createIssuerCertificate,
  createRootCertificate,
  issueLeafCertificate,
  normalizeSerial,
  randomSerial,
  SUBJECT_ORGANIZATION,
} from "./certificate.ts";
export type { IssuedCertificate, IssuerTemplate, LeafTemplate, RootTemplate, Signer, Validity } from "./certificate.ts";
export { inspectCertificate, subjectAltNames, toX509 } from "./inspect.ts";
export type { CertificateInfo } from "./inspect.ts";
export { verifyChain } from "./chain.ts";
export type { CertificateInput, ChainVerification } from "./chain.ts";
export { createCrl, parseCrl } from "./crl.ts";
export type { CrlEntry, CrlTemplate, ParsedCrl, RevocationReason } from "./crl.ts";
