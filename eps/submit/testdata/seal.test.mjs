// Node tests of static/kurier-seal.js on Node's WebCrypto. Run by the Go
// test TestSealJSNode (eps/submit), which hands in cases through the file
// named by KURIER_SEAL_CASES and opens what this writes to KURIER_SEAL_OUT:
//
//   {"cases": [{"name", "to": <sealFor's first argument>, "plaintext": <base64>,
//               "ephemeral": {"private": <hex scalar>, "public": <base64>} | null,
//               "want": <envelope> | null}]}
//
// A case with an ephemeral key must reproduce want byte for byte (the same
// envelope Go's crypto/hpke made with that ephemeral key); the envelopes of
// all cases are written out for Go to open.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import * as mod from "../static/kurier-seal.js";

const { sealFor } = mod;
const casesFile = process.env.KURIER_SEAL_CASES;
const outFile = process.env.KURIER_SEAL_OUT;

const fromHex = (h) => Uint8Array.from(h.match(/../g) || [], (b) => parseInt(b, 16));
const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

// withEphemeral makes crypto.subtle.generateKey return the given X25519 key
// pair while fn runs: the test seam for known-answer vectors. It is the only
// randomness sealFor uses.
async function withEphemeral(eph, fn) {
  const subtle = globalThis.crypto.subtle;
  const pkcs8 = new Uint8Array([...fromHex("302e020100300506032b656e04220420"), ...fromHex(eph.private)]);
  let calls = 0;
  subtle.generateKey = async (alg, extractable, usages) => {
    assert.equal(alg.name, "X25519");
    calls++;
    return {
      privateKey: await subtle.importKey("pkcs8", pkcs8, { name: "X25519" }, extractable, usages),
      publicKey: await subtle.importKey("raw", fromB64(eph.public), { name: "X25519" }, true, []),
    };
  };
  try {
    const out = await fn();
    assert.equal(calls, 1, "sealFor made its ephemeral key with crypto.subtle.generateKey once");
    return out;
  } finally {
    delete subtle.generateKey; // the prototype's method again
  }
}

const cases = casesFile ? JSON.parse(readFileSync(casesFile, "utf8")).cases : [];

test("seals the cases from Go", { skip: casesFile ? false : "KURIER_SEAL_CASES not set (run through go test ./eps/submit)" }, async (t) => {
  const out = {};
  for (const c of cases) {
    await t.test(c.name, async () => {
      const pt = fromB64(c.plaintext);
      const env = c.ephemeral ? await withEphemeral(c.ephemeral, () => sealFor(c.to, pt)) : await sealFor(c.to, pt);
      if (c.want) {
        // Byte for byte: the same JSON as Go's Envelope.Marshal.
        assert.equal(JSON.stringify(env), JSON.stringify(c.want));
      }
      out[c.name] = env;
    });
  }
  if (outFile) writeFileSync(outFile, JSON.stringify(out));
});

const to = {
  recipientKey: { id: "browser-1", kem: 32, public: "QYUjIP82dJX6UiyUy4OvOR5OiQGDknJbvyCY3ZMbxCQ=" },
  recipient: "hd-1",
  service: "contacts",
  kind: "notification",
  messageId: "0123456789abcdef0123456789abcdef",
};

test("a fresh ephemeral key for every envelope", async () => {
  const pt = new TextEncoder().encode("x");
  const a = await sealFor(to, pt);
  const b = await sealFor(to, pt);
  assert.notEqual(a.enc, b.enc);
  assert.deepEqual(Object.keys(a), ["v", "kem", "kdf", "aead", "key_id", "enc", "ct"]);
  assert.equal(fromB64(a.enc).length, 32);
  assert.equal(fromB64(a.ct).length, 1 + 16);
});

test("AES-256-GCM on request", async () => {
  const env = await sealFor({ ...to, aead: mod.AEAD_AES_256_GCM }, new Uint8Array(0));
  assert.equal(env.aead, 2);
  assert.equal(fromB64(env.ct).length, 16);
});

test("refuses what eps/seal would refuse", async () => {
  const pt = new Uint8Array(1);
  for (const [name, bad] of [
    ["recipient anonymous", { ...to, recipient: "anonymous" }],
    ["recipient with a dot", { ...to, recipient: "hd.1" }],
    ["recipient with a leading hyphen", { ...to, recipient: "-hd" }],
    ["service upper case", { ...to, service: "Contacts" }],
    ["service starting with _", { ...to, service: "_ping" }],
    ["kind", { ...to, kind: "reply" }],
    ["message id upper case", { ...to, messageId: "0123456789ABCDEF0123456789ABCDEF" }],
    ["message id short", { ...to, messageId: "0123" }],
    ["ML-KEM key", { ...to, recipientKey: { ...to.recipientKey, kem: 0x647a } }],
    ["short public key", { ...to, recipientKey: { ...to.recipientKey, public: "AAAA" } }],
    ["public key base64url", { ...to, recipientKey: { ...to.recipientKey, public: "QYUjIP82dJX6UiyUy4OvOR5OiQGDknJbvyCY3ZMbxCQ" } }],
    ["key id", { ...to, recipientKey: { ...to.recipientKey, id: "Browser 1" } }],
    ["ChaCha20-Poly1305", { ...to, aead: 3 }],
    ["no key", { ...to, recipientKey: undefined }],
  ]) {
    await assert.rejects(sealFor(bad, pt), TypeError, name);
  }
  await assert.rejects(sealFor(to, "a string"), TypeError, "plaintext must be bytes");
});

test("exports only what browsers need", () => {
  assert.deepEqual(Object.keys(mod).sort(), ["AEAD_AES_128_GCM", "AEAD_AES_256_GCM", "KDF_HKDF_SHA256", "KEM_X25519", "sealFor"]);
});
