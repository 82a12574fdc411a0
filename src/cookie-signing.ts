import { createHmac, randomUUID } from "node:crypto";

/**
 * RFC 4122 version 4, lowercase only: `crypto.randomUUID()` mints lowercase, so anything else
 * was not minted by us. This is the only gate between a cookie and a file name
 * (React Router's file storage skipped it: GHSA-9583-h5hc-x8cw).
 */
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** 32 bytes of HMAC-SHA256 in unpadded base64url. */
const SIGNATURE = /^[A-Za-z0-9_-]{43}$/;
const SIGNATURE_LENGTH = 43;
/** `<uuid>.<signature>` */
export const SIGNED_VALUE_LENGTH = 36 + 1 + SIGNATURE_LENGTH;
/** Versioned so a future format can never be confused with this one. */
const SIGNING_CONTEXT = "persist-session/v1";
export const MIN_SECRET_LENGTH = 32;
/** Signatures of recently verified (key, id) pairs kept per signer; see {@link CookieSigner.verify}. */
const VERIFIED_CACHE_SIZE = 1000;

/** A (key, id) pair that verified: which secret signed it, and the canonical base64url text of its MAC. */
interface KnownSignature {
  readonly key: string;
  readonly secretIndex: number;
  readonly text: string;
}

/**
 * A fresh record id: a random lowercase UUIDv4.
 *
 * Node builds `randomUUID()`'s text by adding up its 20 pieces (16 bytes in hex, 4 dashes),
 * which V8 keeps as a tree of about 14 string nodes until something reads it whole: 489
 * bytes of heap per id where the flat text takes 65 (100,000 ids measured). An id lives as
 * long as its record (the store's map key in MemoryStore, the record cache), so a load of
 * new sessions carried those trees through every young-generation collection into the old
 * generation. `Number()` has to read every character, so V8 flattens the text in place,
 * and the collector then drops the tree.
 */
export function mintId(): string {
  const id = randomUUID();
  Number(id);
  return id;
}

/** Strict lowercase UUIDv4 syntax check; run it before an id goes near a store. */
export function isUuidV4(id: string): boolean {
  return id.length === 36 && UUID_V4.test(id);
}

/** What a verified cookie proves: this id was minted for this key by a holder of one of our secrets. */
export interface VerifiedCookie {
  readonly id: string;
  /** Signed with a secret other than the first: re-sign it on this response. */
  readonly stale: boolean;
}

/** Signs and verifies `<uuidv4>.<base64url HMAC-SHA256(key, id)>` cookie values. */
export class CookieSigner {
  readonly #secrets: readonly string[];
  /** By id, oldest first: the expected signature of (key, id) pairs that verified lately. */
  readonly #known = new Map<string, KnownSignature>();

  constructor(secrets: readonly string[]) {
    assertSecrets(secrets);
    this.#secrets = secrets;
  }

  /** The cookie value for `id` under `key`, signed with the first secret. */
  sign(key: string, id: string): string {
    return `${id}.${signature(this.#secrets[0]!, key, id).toString("base64url")}`;
  }

  /**
   * The id carried by `value` when its signature holds for `key`, else `undefined`.
   * Never throws: a cookie is client input, and bad input means "no session".
   */
  verify(key: string, value: string): VerifiedCookie | undefined {
    if (value.length !== SIGNED_VALUE_LENGTH || value[36] !== ".") return undefined;
    const id = value.slice(0, 36);
    const given = value.slice(37);
    // The HMAC was a tenth of a hot-session request's CPU (bench/README.md), and a browser
    // sends the same value with every request: the MAC of a (key, id) pair that verified is
    // kept and compared again. The cache is looked up by id only, never by the signature a
    // client sent, so a wrong signature is still compared character by character in constant
    // time, and a miss (or a mismatch) computes the MACs afresh. A hit needs no syntax check:
    // only ids that passed it get in, and the text matched is our canonical one.
    const known = this.#known.get(id);
    if (known !== undefined && known.key === key && sameText(given, known.text)) {
      return { id, stale: known.secretIndex !== 0 };
    }
    if (!isUuidV4(id) || !SIGNATURE.test(given)) return undefined;
    // The text itself is compared with the canonical base64url text of the MAC: base64url has
    // 4 spellings of the last character's low bits, and only the canonical one is ours.
    for (let i = 0; i < this.#secrets.length; i++) {
      const text = signature(this.#secrets[i]!, key, id).toString("base64url");
      if (sameText(given, text)) {
        this.#remember(id, { key, secretIndex: i, text });
        return { id, stale: i !== 0 };
      }
    }
    return undefined;
  }

  /** Only values that verified get in, so clients cannot flush the cache with made-up ids. */
  #remember(id: string, known: KnownSignature): void {
    this.#known.delete(id);
    if (this.#known.size >= VERIFIED_CACHE_SIZE) this.#known.delete(this.#known.keys().next().value!);
    this.#known.set(id, known);
  }
}

/**
 * Whether `given` is `expected`, in time that does not depend on where they differ: every
 * character is read, and the only branch is on the length (the same for every valid value).
 * Cheaper than `timingSafeEqual`, which needs both as buffers.
 */
function sameText(given: string, expected: string): boolean {
  if (given.length !== expected.length) return false;
  let difference = 0;
  for (let i = 0; i < expected.length; i++) difference |= given.charCodeAt(i) ^ expected.charCodeAt(i);
  return difference === 0;
}

function signature(secret: string, key: string, id: string): Buffer {
  // The key is part of the MAC so a value minted for `cart` cannot open `admin-prefs`.
  return createHmac("sha256", secret).update(`${SIGNING_CONTEXT}\n${key}\n${id}`).digest();
}

/** Throws a `TypeError` naming the rule; never echoes a secret. */
export function assertSecrets(secrets: readonly unknown[]): asserts secrets is readonly string[] {
  if (secrets.length === 0) {
    throw new TypeError("persist-session: option secret is invalid: an empty list. Give at least one secret of 32 or more characters.");
  }
  secrets.forEach((secret, index) => {
    if (typeof secret !== "string" || secret.length < MIN_SECRET_LENGTH) {
      const which = secrets.length > 1 ? `secret[${index}]` : "secret";
      const got = typeof secret === "string" ? `${secret.length} characters` : typeof secret;
      throw new TypeError(
        `persist-session: option ${which} is invalid: ${got}. Use a random string of at least ${MIN_SECRET_LENGTH} characters (for example \`openssl rand -base64 48\`).`,
      );
    }
  });
}
