// kurier-seal.js — seal data in the browser for a Kurier member.
//
// A standalone ES module without dependencies. It produces the anonymous
// sealed envelope of Kurier's eps/seal (docs/eps-design.md, "Sealed
// envelope"): HPKE (RFC 9180) base mode, single shot, with
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and AES-128-GCM (or AES-256-GCM),
// built on WebCrypto (crypto.subtle: X25519, HMAC-SHA256, AES-GCM). Only the
// holder of the recipient's private key can open it; this module cannot.
//
//   import { sealFor } from "./kurier-seal.js";
//   const envelope = await sealFor({
//     recipientKey: { id: "browser-1", kem: 32, public: "<base64>" },
//     recipient: "hd-1", service: "contacts", kind: "request",
//     messageId: "0123456789abcdef0123456789abcdef",
//   }, new TextEncoder().encode(JSON.stringify(data)));
//   // envelope: {v:1, kem:32, kdf:1, aead:1, key_id, enc, ct}; send it as JSON.
//
// The HPKE info binds the envelope to its message:
//   "kurier-seal/v1\0" || "anonymous" || "\0" || recipient || "\0" ||
//   service || "\0" || kind || "\0" || messageId
//
// The ephemeral key is made with crypto.subtle.generateKey at every call and
// never leaves the call. (Tests that check known-answer vectors replace that
// one method of crypto.subtle; there is deliberately no API to choose it.)

/** HPKE KEM id of DHKEM(X25519, HKDF-SHA256), the only KEM browsers have. */
export const KEM_X25519 = 0x0020;
/** HPKE KDF id of HKDF-SHA256. */
export const KDF_HKDF_SHA256 = 0x0001;
/** HPKE AEAD ids. */
export const AEAD_AES_128_GCM = 0x0001;
export const AEAD_AES_256_GCM = 0x0002;

/** The sender name of unsigned envelopes. */
const ANONYMOUS = "anonymous";
const INFO_PREFIX = "kurier-seal/v1\0";
const MAX_PLAINTEXT = ((8 << 20) / 4) * 3 - 1024; // the envelope is at most 8 MiB

const NAME_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/; // pki.ValidName
const SERVICE_RE = /^[a-z][a-z0-9._-]{0,63}$/; // pki.ValidServiceName
const KEY_ID_RE = /^[a-z0-9-]{1,64}$/;
const MESSAGE_ID_RE = /^[0-9a-f]{32}$/;
const KINDS = ["request", "response", "notification"];

const utf8 = new TextEncoder();

function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let i = 0;
  for (const p of parts) {
    out.set(p, i);
    i += p.length;
  }
  return out;
}

function i2osp(v, n) {
  const out = new Uint8Array(n);
  for (let i = n - 1; i >= 0; i--) {
    out[i] = v & 0xff;
    v >>>= 8;
  }
  return out;
}

function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function fromBase64(s, what) {
  if (typeof s !== "string" || !/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s)) {
    throw new TypeError(`kurier-seal: ${what} is not standard base64`);
  }
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function bytesOf(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("kurier-seal: plaintext must be a Uint8Array, an ArrayBuffer or a typed array");
}

function subtle() {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) {
    throw new Error("kurier-seal: WebCrypto (crypto.subtle) is not available; the page must be served over HTTPS");
  }
  return s;
}

// HKDF-SHA256 (RFC 5869) on HMAC-SHA256, so that Extract and Expand can be
// used on their own as RFC 9180's LabeledExtract and LabeledExpand need.

async function hmac(key, data) {
  // An empty HMAC key is the same key as HashLen zero bytes (both are padded
  // with zeros to the block size), and WebCrypto refuses empty HMAC keys.
  const k = await subtle().importKey("raw", key.length ? key : new Uint8Array(32),
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle().sign("HMAC", k, data));
}

const extract = (salt, ikm) => hmac(salt, ikm);

async function expand(prk, info, length) {
  if (length > 255 * 32) throw new RangeError("kurier-seal: HKDF output too long");
  const out = new Uint8Array(length);
  let t = new Uint8Array(0);
  for (let i = 1, off = 0; off < length; i++) {
    t = await hmac(prk, concat(t, info, Uint8Array.of(i)));
    out.set(t.subarray(0, Math.min(t.length, length - off)), off);
    off += t.length;
  }
  return out;
}

const HPKE_V1 = utf8.encode("HPKE-v1");

// RFC 9180 §4: LabeledExtract(salt, label, ikm) and LabeledExpand(prk, label, info, L).
function labeledExtract(suiteID, salt, label, ikm) {
  return extract(salt, concat(HPKE_V1, suiteID, utf8.encode(label), ikm));
}

function labeledExpand(suiteID, prk, label, info, length) {
  return expand(prk, concat(i2osp(length, 2), HPKE_V1, suiteID, utf8.encode(label), info), length);
}

const KEM_SUITE = concat(utf8.encode("KEM"), i2osp(KEM_X25519, 2));

// DHKEM(X25519, HKDF-SHA256) Encap (RFC 9180 §4.1) → {sharedSecret, enc}.
async function encap(pkRm) {
  const s = subtle();
  const pkR = await s.importKey("raw", pkRm, { name: "X25519" }, false, []);
  const eph = await s.generateKey({ name: "X25519" }, false, ["deriveBits"]);
  // WebCrypto fails for an all-zero X25519 output (a low-order point), as
  // RFC 9180 §7.1.4 requires.
  const dh = new Uint8Array(await s.deriveBits({ name: "X25519", public: pkR }, eph.privateKey, 256));
  const enc = new Uint8Array(await s.exportKey("raw", eph.publicKey));
  const kemContext = concat(enc, pkRm);
  const eaePRK = await labeledExtract(KEM_SUITE, new Uint8Array(0), "eae_prk", dh);
  const sharedSecret = await labeledExpand(KEM_SUITE, eaePRK, "shared_secret", kemContext, 32);
  dh.fill(0);
  eaePRK.fill(0);
  return { sharedSecret, enc };
}

// KeySchedule for mode_base (RFC 9180 §5.1) → {key, baseNonce}.
async function keySchedule(aead, sharedSecret, info) {
  const suite = concat(utf8.encode("HPKE"), i2osp(KEM_X25519, 2), i2osp(KDF_HKDF_SHA256, 2), i2osp(aead, 2));
  const empty = new Uint8Array(0);
  const pskIDHash = await labeledExtract(suite, empty, "psk_id_hash", empty);
  const infoHash = await labeledExtract(suite, empty, "info_hash", info);
  const context = concat(Uint8Array.of(0x00), pskIDHash, infoHash); // mode_base
  const secret = await labeledExtract(suite, sharedSecret, "secret", empty); // psk = ""
  const nk = aead === AEAD_AES_256_GCM ? 32 : 16;
  const key = await labeledExpand(suite, secret, "key", context, nk);
  const baseNonce = await labeledExpand(suite, secret, "base_nonce", context, 12);
  secret.fill(0);
  return { key, baseNonce };
}

function infoFor(recipient, service, kind, messageId) {
  if (typeof recipient !== "string" || !NAME_RE.test(recipient) || recipient === ANONYMOUS) {
    throw new TypeError(`kurier-seal: invalid recipient ${JSON.stringify(recipient)}`);
  }
  if (typeof service !== "string" || !SERVICE_RE.test(service)) {
    throw new TypeError(`kurier-seal: invalid service ${JSON.stringify(service)}`);
  }
  if (!KINDS.includes(kind)) {
    throw new TypeError(`kurier-seal: invalid kind ${JSON.stringify(kind)}: want request, response or notification`);
  }
  if (typeof messageId !== "string" || !MESSAGE_ID_RE.test(messageId)) {
    throw new TypeError(`kurier-seal: invalid message id ${JSON.stringify(messageId)}: want 32 lowercase hex digits`);
  }
  return utf8.encode(INFO_PREFIX + [ANONYMOUS, recipient, service, kind, messageId].join("\0"));
}

/**
 * sealFor encrypts plaintext to the recipient key, as an anonymous sender,
 * bound to the message (recipient, service, kind, messageId), and returns
 * the envelope as a plain object in the canonical field order of eps/seal
 * (JSON.stringify gives the same bytes as Go's Envelope.Marshal).
 *
 * @param {object} to
 * @param {{id: string, kem: number, public: string}} to.recipientKey
 *   the recipient's seal key as in the directory: KEM 32 (X25519), public
 *   key in standard base64.
 * @param {string} to.recipient the receiving member's name, e.g. "hd-1".
 * @param {string} to.service the service, e.g. "contacts".
 * @param {string} [to.kind="request"] request, response or notification.
 * @param {string} to.messageId 32 lowercase hex digits.
 * @param {number} [to.aead=AEAD_AES_128_GCM] AEAD_AES_128_GCM or AEAD_AES_256_GCM.
 * @param {Uint8Array|ArrayBuffer|ArrayBufferView} plaintext
 * @returns {Promise<{v: number, kem: number, kdf: number, aead: number,
 *   key_id: string, enc: string, ct: string}>}
 */
export async function sealFor(to, plaintext) {
  const { recipientKey, recipient, service, kind = "request", messageId, aead = AEAD_AES_128_GCM } = to || {};
  const info = infoFor(recipient, service, kind, messageId);
  if (!recipientKey || typeof recipientKey !== "object") {
    throw new TypeError("kurier-seal: no recipient key");
  }
  if (typeof recipientKey.id !== "string" || !KEY_ID_RE.test(recipientKey.id)) {
    throw new TypeError(`kurier-seal: invalid recipient key id ${JSON.stringify(recipientKey.id)}`);
  }
  if (recipientKey.kem !== KEM_X25519) {
    throw new TypeError(`kurier-seal: recipient key ${recipientKey.id} has KEM ${recipientKey.kem}, this module seals only to X25519 (32)`);
  }
  const pkRm = fromBase64(recipientKey.public, "recipient public key");
  if (pkRm.length !== 32) {
    throw new TypeError(`kurier-seal: recipient public key is ${pkRm.length} bytes, X25519 needs 32`);
  }
  if (aead !== AEAD_AES_128_GCM && aead !== AEAD_AES_256_GCM) {
    throw new TypeError(`kurier-seal: unsupported AEAD ${aead}: want 1 (AES-128-GCM) or 2 (AES-256-GCM)`);
  }
  const pt = bytesOf(plaintext);
  if (pt.length > MAX_PLAINTEXT) {
    throw new RangeError(`kurier-seal: plaintext is ${pt.length} bytes, at most ${MAX_PLAINTEXT}`);
  }

  const { sharedSecret, enc } = await encap(pkRm);
  const { key, baseNonce } = await keySchedule(aead, sharedSecret, info);
  sharedSecret.fill(0);
  const s = subtle();
  const k = await s.importKey("raw", key, { name: "AES-GCM" }, false, ["encrypt"]);
  key.fill(0);
  // Single shot: sequence number 0, so the nonce is base_nonce; no AAD.
  const ct = new Uint8Array(await s.encrypt({ name: "AES-GCM", iv: baseNonce, tagLength: 128 }, k, pt));
  return {
    v: 1,
    kem: KEM_X25519,
    kdf: KDF_HKDF_SHA256,
    aead,
    key_id: recipientKey.id,
    enc: toBase64(enc),
    ct: toBase64(ct),
  };
}
