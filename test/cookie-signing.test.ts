import { describe, expect, it } from "vitest";
import { CookieSigner, isUuidV4 } from "../src/cookie-signing.js";

const SECRET = "a".repeat(16) + "b".repeat(16);
const OTHER = "c".repeat(40);
const ID = "3b241101-e2bb-4255-8caf-4136c566a962";

describe("CookieSigner", () => {
  const signer = new CookieSigner([SECRET]);
  const value = signer.sign("app-state", ID);

  it("signs as <uuid>.<43 base64url characters> and verifies its own value", () => {
    expect(value).toMatch(/^3b241101-e2bb-4255-8caf-4136c566a962\.[A-Za-z0-9_-]{43}$/);
    expect(signer.verify("app-state", value)).toEqual({ id: ID, stale: false });
  });

  const flip = (text: string, index: number) => text.slice(0, index) + (text[index] === "A" ? "B" : "A") + text.slice(index + 1);
  const attacks: Array<[string, string, string?]> = [
    ["a value minted for another key", value, "admin-prefs"],
    ["one signature character changed", flip(value, 50)],
    ["the last signature character changed", flip(value, value.length - 1)],
    ["one id character changed", ID.replace("3b24", "3b25") + value.slice(36)],
    ["a truncated signature", value.slice(0, -1)],
    ["a padded signature", value + "="],
    ["an upper-cased id", ID.toUpperCase() + value.slice(36)],
    ["a version 1 uuid", "3b241101-e2bb-1255-8caf-4136c566a962" + value.slice(36)],
    ["a path in place of the id", "../../../../../../../../etc/passwd/x" + value.slice(36)],
    ["an empty value", ""],
    ["the id alone", ID],
    ["a value signed with another secret", new CookieSigner([OTHER]).sign("app-state", ID)],
    ["a 10 KB value", "x".repeat(10_240)],
  ];
  it.each(attacks)("rejects %s", (_name, attack, key = "app-state") => {
    expect(signer.verify(key, attack)).toBeUndefined();
  });

  it("rejects a non-canonical base64url spelling of a valid signature", () => {
    // The last of 43 characters carries 2 unused bits; another spelling decodes to the same bytes.
    const last = value.at(-1)!;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const index = alphabet.indexOf(last);
    const twin = alphabet[(index & ~3) | ((index + 1) & 3)]!;
    const spelled = value.slice(0, -1) + twin;
    expect(Buffer.from(spelled.slice(37), "base64url")).toEqual(Buffer.from(value.slice(37), "base64url"));
    expect(signer.verify("app-state", spelled)).toBeUndefined();
  });

  it("accepts an older secret as stale and signs with the first", () => {
    const rotated = new CookieSigner([OTHER, SECRET]);
    expect(rotated.verify("app-state", value)).toEqual({ id: ID, stale: true });
    expect(rotated.sign("app-state", ID)).toBe(new CookieSigner([OTHER]).sign("app-state", ID));
  });

  it.each([
    [[], "option secret is invalid: an empty list"],
    [["short"], "option secret is invalid: 5 characters"],
    [[SECRET, "x".repeat(31)], "option secret[1] is invalid: 31 characters"],
  ])("refuses the secrets %j with a message that does not echo them", (secrets, message) => {
    expect(() => new CookieSigner(secrets)).toThrow(TypeError);
    expect(() => new CookieSigner(secrets)).toThrow(message);
    try {
      new CookieSigner(secrets);
    } catch (error) {
      for (const secret of secrets) expect((error as Error).message).not.toContain(secret);
    }
  });
});

describe("CookieSigner after a value verified (its MAC is remembered)", () => {
  const freshSigner = () => new CookieSigner([SECRET]);
  const value = freshSigner().sign("app-state", ID);
  const spellings = (signed: string) => {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const index = alphabet.indexOf(signed.at(-1)!);
    return [1, 2, 3].map((step) => signed.slice(0, -1) + alphabet[(index & ~3) | ((index + step) & 3)]!);
  };

  it("still refuses a wrong signature for that id, and another spelling of the right one", () => {
    const signer = freshSigner();
    expect(signer.verify("app-state", value)).toEqual({ id: ID, stale: false });
    for (let index = 37; index < value.length; index += 7) {
      const flipped = value.slice(0, index) + (value[index] === "A" ? "B" : "A") + value.slice(index + 1);
      expect(signer.verify("app-state", flipped), `signature character ${index} changed`).toBeUndefined();
    }
    for (const twin of spellings(value)) expect(signer.verify("app-state", twin)).toBeUndefined();
    // The remembered pair is untouched by those attempts.
    expect(signer.verify("app-state", value)).toEqual({ id: ID, stale: false });
  });

  it("refuses the signature spelled with characters whose low byte is the right one", () => {
    const signer = freshSigner();
    expect(signer.verify("app-state", value)).toEqual({ id: ID, stale: false });
    // U+0100 + c: the same byte as c in latin1, so a comparison of latin1 bytes would pass it.
    for (const index of [37, 50, value.length - 1]) {
      const wide = value.slice(0, index) + String.fromCharCode(0x100 + value.charCodeAt(index)) + value.slice(index + 1);
      expect(signer.verify("app-state", wide), `character ${index}`).toBeUndefined();
    }
    expect(signer.verify("app-state", value)).toEqual({ id: ID, stale: false });
  });

  it("does not let the value open another key", () => {
    const signer = freshSigner();
    for (let i = 0; i < 3; i++) expect(signer.verify("app-state", value)).toEqual({ id: ID, stale: false });
    expect(signer.verify("admin-prefs", value)).toBeUndefined();
  });

  it("keeps reporting a value of an older secret as stale, every time", () => {
    const rotated = new CookieSigner([OTHER, SECRET]);
    for (let i = 0; i < 3; i++) expect(rotated.verify("app-state", value)).toEqual({ id: ID, stale: true });
    const current = rotated.sign("app-state", ID);
    for (let i = 0; i < 3; i++) expect(rotated.verify("app-state", current)).toEqual({ id: ID, stale: false });
  });

  it("verifies every one of more values than it remembers, again and again", () => {
    const signer = freshSigner();
    const ids = Array.from({ length: 1500 }, (_, i) => `3b241101-e2bb-4255-8caf-${i.toString(16).padStart(12, "0")}`);
    const values = ids.map((id) => signer.sign("app-state", id));
    for (let round = 0; round < 2; round++) {
      values.forEach((signed, i) => expect(signer.verify("app-state", signed)).toEqual({ id: ids[i], stale: false }));
    }
  });
});

describe("isUuidV4", () => {
  it.each([
    [ID, true],
    [ID.toUpperCase(), false],
    ["3b241101-e2bb-4255-7caf-4136c566a962", false],
    ["3b241101e2bb42558caf4136c566a962", false],
    [`${ID}\n`, false],
    ["", false],
  ])("%j → %s", (id, expected) => {
    expect(isUuidV4(id)).toBe(expected);
  });
});
