import { CorruptRecordError, isStoredRecordHeader, type StoredRecord } from "./store.js";

/** Bumped if the layout changes, so an old reader sets a newer record aside instead of misreading it. */
const HEADER_VERSION = 1;

/**
 * The stored form of a record, shared by the file and Redis stores: one JSON
 * header line (format version, key, version, time of the write, expiry), then
 * the devalue data. The header can be read without parsing the data.
 */
export function formatRecordText(record: StoredRecord): string {
  const { key, version, updatedAt, expires, data } = record;
  return `${JSON.stringify({ v: HEADER_VERSION, key, version, updatedAt, expires })}\n${data}`;
}

/** Reads what {@link formatRecordText} wrote; anything else is a {@link CorruptRecordError}. `container` names the empty case ("file", "value"). */
export function parseRecordText(text: string, container: string): StoredRecord {
  const newline = text.indexOf("\n");
  if (newline === -1) throw new CorruptRecordError(text.length === 0 ? `empty ${container}` : "no header line");
  const { key, version, updatedAt, expires } = parseRecordHeader(text.slice(0, newline));
  const data = text.slice(newline + 1);
  if (data === "") throw new CorruptRecordError("no data after the header");
  return { key, version, updatedAt, expires, data };
}

/**
 * The first line of a record's text; a {@link CorruptRecordError} when it is not a header.
 * (The sweep's listing reads only `expires` from it, on the file thread: see file-thread.ts.)
 */
function parseRecordHeader(line: string): Omit<StoredRecord, "data"> {
  let header: unknown;
  try {
    header = JSON.parse(line);
  } catch {
    throw new CorruptRecordError("unreadable header");
  }
  if (!isStoredRecordHeader(header) || (header as { v?: unknown }).v !== HEADER_VERSION) {
    throw new CorruptRecordError("header of an unknown shape");
  }
  return header;
}
