// A VM's generated passwords, opened in the browser with the wallet: the same scheme as the SDK's
// `credentials` module (sdk/src/credentials.rs), so a key the CLI registered opens here and the
// other way round.
//
// The sealing key is an X25519 key pair derived (HPKE DeriveKeyPair, RFC 9180 §7.1.3) from the
// wallet's EIP-191 signature of `keyMessage(chainId)`: ECDSA signatures are deterministic, so the
// same wallet derives the same key anywhere. Passwords are sealed with HPKE base mode,
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, with the VM id as associated data.
import { Chacha20Poly1305 } from '@hpke/chacha20poly1305';
import { CipherSuite, HkdfSha256 } from '@hpke/core';
import { DhkemX25519HkdfSha256 } from '@hpke/dhkem-x25519';
import { bytesToHex, type Hex, hexToBytes } from 'viem';

/** Prefix of a sealed blob (its format's version). */
const SEALED_PREFIX = 'hpke-v1:';
/** HPKE `info`: keeps these blobs apart from any other use of the key. */
const INFO = new TextEncoder().encode('decloud vm credentials v1');
/** Size of an X25519 public key, and of HPKE's encapsulated key for it. */
const X25519_LEN = 32;

const suite = new CipherSuite({
  kem: new DhkemX25519HkdfSha256(),
  kdf: new HkdfSha256(),
  aead: new Chacha20Poly1305(),
});

/** The message whose signature derives the sealing key: byte for byte the SDK's `key_message`. */
export function keyMessage(chainId: number): string {
  return (
    `DeCloud credentials key v1 · chain ${chainId}\n\n` +
    'Signing this derives the key that opens the passwords of your DeCloud VMs. ' +
    'It costs nothing and sends no transaction. Sign it only on DeCloud.'
  );
}

/** What a tenant logs into a VM with, as sealed. */
export interface Credentials {
  user: string;
  password: string;
  template_password?: string | null;
}

/** A sealing key pair derived from the wallet's signature; `publicHex` is what the profile holds. */
export interface SealingKey {
  publicHex: Hex;
  /** Opens a blob sealed for `vmId`; throws `CredentialsError` in words. */
  open: (sealed: string, vmId: string) => Promise<Credentials>;
}

export class CredentialsError extends Error {}

/** The key pair of a signature of `keyMessage` (65 bytes, `0x` hex). */
export async function sealingKeyFromSignature(signature: Hex): Promise<SealingKey> {
  const pair = await suite.kem.deriveKeyPair(hexToBytes(signature));
  const publicHex = bytesToHex(new Uint8Array(await suite.kem.serializePublicKey(pair.publicKey)));
  return {
    publicHex,
    async open(sealed, vmId) {
      const raw = decodeSealed(sealed);
      let plaintext: ArrayBuffer;
      try {
        plaintext = await suite.open(
          { recipientKey: pair, enc: raw.slice(0, X25519_LEN), info: INFO },
          raw.slice(X25519_LEN),
          new TextEncoder().encode(vmId),
        );
      } catch {
        throw new CredentialsError('These credentials were not sealed to this wallet’s key (another wallet or another chain?).');
      }
      try {
        const parsed = JSON.parse(new TextDecoder().decode(plaintext)) as Credentials;
        if (typeof parsed.user !== 'string' || typeof parsed.password !== 'string') throw new Error('fields');
        return parsed;
      } catch {
        throw new CredentialsError('The opened credentials are not readable.');
      }
    },
  };
}

function decodeSealed(sealed: string): Uint8Array {
  if (!sealed.startsWith(SEALED_PREFIX)) throw new CredentialsError('The sealed credentials are malformed.');
  let raw: Uint8Array;
  try {
    raw = Uint8Array.from(atob(sealed.slice(SEALED_PREFIX.length)), (c) => c.charCodeAt(0));
  } catch {
    throw new CredentialsError('The sealed credentials are malformed.');
  }
  if (raw.length <= X25519_LEN) throw new CredentialsError('The sealed credentials are malformed.');
  return raw;
}
