// The demo's persisted state, and the only code that changes it.
//
// Node runs this file as plain JavaScript, which has no decorator syntax yet, so
// the decorator is applied as a function: `persist(key)(class …)` is what
// `@persist(key) class …` compiles to.
import { randomUUID } from "node:crypto";
import { persist } from "persist-session";

export const MAX_TODO_LENGTH = 200;
export const MAX_TODOS = 100;
export const MAX_NOTE_LENGTH = 140;
export const MAX_NOTES = 20;

/** One browser's counter and todo list; `new AppState()` inside a request returns that browser's copy. */
export const AppState = persist("app-state")(
  class AppState {
    count = 0;
    /** @type {Array<{ id: string, text: string, done: boolean }>} */
    todos = [];
  },
);

/**
 * A signed-in user's counter and notes: one record per user, shared by every
 * device signed in with that name. No cookie carries it; persist-session picks
 * the record from the `user` resolver (the verified demo-user cookie).
 *
 * Signed out, the server's `anonymous: "browser"` keeps it per browser (a
 * visitor can count, not write notes), and at the first request after sign-in
 * `merge` adds the visitor's count to the user's; persist-session then deletes
 * the browser's record and expires its cookie (README, "Signing in and out").
 */
export const SharedNotes = persist("shared-notes", {
  scope: "user",
  // The note routes need a name, so a visitor's state has no notes: only the count moves over.
  merge: (user, visitor) => void (user.count += visitor.count),
})(
  class SharedNotes {
    count = 0;
    /** @type {Array<{ id: string, text: string }>} */
    notes = [];
  },
);

/**
 * Why a change was refused; the page turns the code into a sentence.
 * The codes travel in the redirect's query string, so never put user text in them.
 */
export class Refusal extends Error {
  /** @param {"empty" | "too-long" | "too-many" | "not-found" | "note-empty" | "note-too-long" | "notes-full" | "note-not-found" | "signed-out"} code */
  constructor(code) {
    super(code);
    this.code = code;
  }
}

/** @param {{ count: number }} state @param {1 | -1} step */
export function bump(state, step) {
  state.count += step;
}

/** @param {InstanceType<typeof AppState>} state @param {unknown} input */
export function addTodo(state, input) {
  const text = typeof input === "string" ? input.replace(/\s+/g, " ").trim() : "";
  if (text === "") throw new Refusal("empty");
  // Count characters as a person does (code points), not UTF-16 units.
  if ([...text].length > MAX_TODO_LENGTH) throw new Refusal("too-long");
  if (state.todos.length >= MAX_TODOS) throw new Refusal("too-many");
  state.todos.push({ id: randomUUID().slice(0, 8), text, done: false });
}

/** @param {InstanceType<typeof AppState>} state @param {unknown} id */
export function toggleTodo(state, id) {
  const todo = state.todos.find((item) => item.id === id);
  if (todo === undefined) throw new Refusal("not-found");
  todo.done = !todo.done;
}

/** @param {InstanceType<typeof AppState>} state @param {unknown} id */
export function removeTodo(state, id) {
  const index = state.todos.findIndex((item) => item.id === id);
  if (index === -1) throw new Refusal("not-found");
  state.todos.splice(index, 1);
}

/** @param {InstanceType<typeof SharedNotes>} shared @param {unknown} input */
export function addNote(shared, input) {
  const text = typeof input === "string" ? input.replace(/\s+/g, " ").trim() : "";
  if (text === "") throw new Refusal("note-empty");
  if ([...text].length > MAX_NOTE_LENGTH) throw new Refusal("note-too-long");
  if (shared.notes.length >= MAX_NOTES) throw new Refusal("notes-full");
  shared.notes.push({ id: randomUUID().slice(0, 8), text });
}

/** @param {InstanceType<typeof SharedNotes>} shared @param {unknown} id */
export function removeNote(shared, id) {
  const index = shared.notes.findIndex((note) => note.id === id);
  if (index === -1) throw new Refusal("note-not-found");
  shared.notes.splice(index, 1);
}
