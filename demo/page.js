// HTML of the demo page. Every value that reaches the markup goes through
// escapeHtml(); todo texts are user input and must never become markup.
import { MAX_NOTE_LENGTH, MAX_NOTES, MAX_TODO_LENGTH, MAX_TODOS } from "./state.js";

/** Where the demo serves persist-session/client (dist/client.js); an app would bundle it instead. */
export const CLIENT_PATH = "/persist-session/client.js";

/** The sentences behind the refusal codes of state.js; unknown codes show nothing. */
const ERRORS = new Map([
  ["empty", "Write something first: a todo cannot be empty."],
  ["too-long", `That todo is too long. Keep it to ${MAX_TODO_LENGTH} characters.`],
  ["too-many", `The list is full (${MAX_TODOS} todos). Remove one before adding another.`],
  ["not-found", "That todo is gone already. Perhaps another tab removed it."],
  ["note-empty", "Write something first: a note cannot be empty."],
  ["note-too-long", `That note is too long. Keep it to ${MAX_NOTE_LENGTH} characters.`],
  ["notes-full", `There are ${MAX_NOTES} notes already. Delete one before adding another.`],
  ["note-not-found", "That note is gone already. Perhaps another device deleted it."],
  ["signed-out", "Sign in first: shared notes belong to a signed-in name."],
]);

/**
 * The whole page for one browser's state, and its user's shared notes (signed out: the browser's shared count).
 * @param {{ state: { count: number, todos: Array<{ id: string, text: string, done: boolean }> },
 *           info: import("persist-session").StateInfo, user?: string,
 *           shared?: { count: number, notes: Array<{ id: string, text: string }> },
 *           sharedInfo?: import("persist-session").StateInfo,
 *           error: string | null, nonce: string, now?: number }} view
 */
export function renderPage({ state, info, user, shared, sharedInfo, error, nonce, now = Date.now() }) {
  const message = error === null ? undefined : ERRORS.get(error);
  // For the live-sync script: the versions shown (a change event at or below them is old news).
  const versions = { [info.key]: info.version };
  if (sharedInfo !== undefined) versions[sharedInfo.key] = sharedInfo.version;
  return layout({
    nonce,
    title: "persist-session demo",
    body: `
  <main id="app" data-versions="${escapeHtml(JSON.stringify(versions))}">
    <header>
      <h1>persist-session <span class="live" title="Changes made in other tabs and devices show here as they happen">live</span></h1>
      <p class="lede">This counter and list live on the server, not in the page. Reload, open a second tab, restart the server: they stay, and a change in one tab shows in the others at once. Another browser gets its own.</p>
    </header>
    ${message === undefined ? "" : `<p class="alert" role="alert">${escapeHtml(message)}</p>`}
    ${counter(state.count)}
    ${todoList(state.todos)}
    ${user === undefined ? signInPanel(shared) : sharedPanel(user, shared)}
    ${storePanel(info, now)}
    <footer>Works without JavaScript too: every button is a plain form (other tabs then update on reload).</footer>
  </main>
  <script type="module" nonce="${escapeHtml(nonce)}">${ENHANCE}</script>`,
  });
}

/** A small page for 404, 405, 413 and friends. */
export function renderMessage({ title, text, nonce }) {
  return layout({
    nonce,
    title,
    body: `
  <main id="app">
    <header><h1>${escapeHtml(title)}</h1></header>
    <section class="card"><p>${escapeHtml(text)}</p><p><a href="/">Back to the demo</a></p></section>
  </main>`,
  });
}

/** Escapes text for use between tags and inside double- or single-quoted attributes. */
export function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

function layout({ nonce, title, body }) {
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="color-scheme" content="light dark">
  <title>${escapeHtml(title)}</title>
  <link rel="icon" href="${FAVICON}">
  <style nonce="${escapeHtml(nonce)}">${CSS}</style>
</head>
<body>${body}
</body>
</html>
`;
}

function counter(count) {
  return `<section class="card" aria-labelledby="counter-title">
      <h2 id="counter-title">Counter</h2>
      <div class="counter">
        <form method="post" action="/count/decrement"><button class="round" aria-label="Decrease" title="Decrease">&minus;</button></form>
        <output id="count" aria-live="polite" aria-label="Count">${escapeHtml(count)}</output>
        <form method="post" action="/count/increment"><button class="round" aria-label="Increase" title="Increase">+</button></form>
      </div>
    </section>`;
}

function todoList(todos) {
  const done = todos.filter((todo) => todo.done).length;
  const full = todos.length >= MAX_TODOS;
  const summary = todos.length === 0 ? "" : `<span class="muted">${done} of ${todos.length} done</span>`;
  const items = todos
    .map((todo) => {
      const text = escapeHtml(todo.text);
      const id = escapeHtml(todo.id);
      return `<li class="todo${todo.done ? " done" : ""}">
          <form method="post" action="/todos/toggle"><input type="hidden" name="id" value="${id}"><button class="tick" aria-pressed="${todo.done}" aria-label="Done: ${text}" title="${todo.done ? "Mark as not done" : "Mark as done"}">${todo.done ? "&#10003;" : ""}</button></form>
          <span class="text">${text}</span>
          <form method="post" action="/todos/remove"><input type="hidden" name="id" value="${id}"><button class="remove" aria-label="Remove: ${text}" title="Remove">&times;</button></form>
        </li>`;
    })
    .join("\n        ");
  return `<section class="card" aria-labelledby="todos-title">
      <h2 id="todos-title">Todos ${summary}</h2>
      <form method="post" action="/todos" class="add">
        <label for="todo-text" class="visually-hidden">New todo</label>
        <input id="todo-text" name="text" maxlength="${MAX_TODO_LENGTH}" required autocomplete="off"
          placeholder="${full ? `The list is full (${MAX_TODOS})` : "What needs doing?"}"${full ? " disabled" : ""}>
        <button${full ? " disabled" : ""}>Add</button>
      </form>
      ${todos.length === 0 ? `<p class="empty muted">Nothing to do. Add something above.</p>` : `<ul class="todos">\n        ${items}\n      </ul>`}
    </section>`;
}

/** Signed out: the sign-in form, and this browser's shared count, which is added to the name's at sign-in. */
function signInPanel(visitor) {
  const count = visitor === undefined ? "" : `
      <div class="counter small">
        <form method="post" action="/shared/decrement"><button class="round" aria-label="Visitor count down" title="Visitor count down">&minus;</button></form>
        <output id="visitor-count" aria-live="polite" aria-label="Visitor count">${escapeHtml(visitor.count)}</output>
        <form method="post" action="/shared/increment"><button class="round" aria-label="Visitor count up" title="Visitor count up">+</button></form>
      </div>
      <p class="muted intro" id="visitor-hint">Counted in this browser for now: when you sign in, it is added to your name's count.</p>`;
  return `<section class="card" aria-labelledby="shared-title">
      <h2 id="shared-title">Shared notes</h2>
      <p class="muted intro">Sign in to get a counter and notes that follow you: every browser and device signed in with the same name shares them, live. No password: it is a demo.</p>${count}
      <form method="post" action="/login" class="add login">
        <label for="login-name">Sign in as</label>
        <input id="login-name" name="name" required minlength="1" maxlength="32" pattern="[a-z0-9_\\-]{1,32}" placeholder="alice"
          autocomplete="username" autocapitalize="none" spellcheck="false" title="1 to 32 characters: a-z, 0-9, _ and -">
        <button>Sign in</button>
      </form>
    </section>`;
}

function sharedPanel(user, shared) {
  const name = escapeHtml(user);
  const full = shared.notes.length >= MAX_NOTES;
  const items = shared.notes
    .map((note) => {
      const text = escapeHtml(note.text);
      return `<li class="note">
          <span class="text">${text}</span>
          <form method="post" action="/shared/notes/remove"><input type="hidden" name="id" value="${escapeHtml(note.id)}"><button class="remove" aria-label="Delete note: ${text}" title="Delete">&times;</button></form>
        </li>`;
    })
    .join("\n        ");
  return `<section class="card shared" aria-labelledby="shared-title">
      <h2 id="shared-title">Shared notes <span class="muted">signed in as <b id="user-name">${name}</b></span></h2>
      <p class="muted intro" id="shared-hint">Shared with every device signed in as ${name}.</p>
      <div class="counter small">
        <form method="post" action="/shared/decrement"><button class="round" aria-label="Shared count down" title="Shared count down">&minus;</button></form>
        <output id="shared-count" aria-live="polite" aria-label="Shared count">${escapeHtml(shared.count)}</output>
        <form method="post" action="/shared/increment"><button class="round" aria-label="Shared count up" title="Shared count up">+</button></form>
      </div>
      <form method="post" action="/shared/notes" class="add">
        <label for="note-text" class="visually-hidden">New note</label>
        <input id="note-text" name="text" maxlength="${MAX_NOTE_LENGTH}" required autocomplete="off"
          placeholder="${full ? `That is ${MAX_NOTES} notes already` : "A note for all your devices"}"${full ? " disabled" : ""}>
        <button${full ? " disabled" : ""}>Save note</button>
      </form>
      ${shared.notes.length === 0 ? `<p class="empty muted">No notes yet.</p>` : `<ul class="notes">\n        ${items}\n      </ul>`}
      <form method="post" action="/logout" class="logout"><button>Sign out</button></form>
    </section>`;
}

function storePanel(info, now) {
  const rows = info.stored
    ? `<dl>
        <dt>Session</dt><dd><code>${escapeHtml(info.id.slice(0, 8))}&hellip;</code></dd>
        <dt>Size</dt><dd>${escapeHtml(formatBytes(info.bytes))}</dd>
        <dt>Last written</dt><dd><time datetime="${info.updatedAt.toISOString()}" title="${info.updatedAt.toISOString()}">${escapeHtml(relative(info.updatedAt.getTime(), now))}</time></dd>
        <dt>Version</dt><dd>${escapeHtml(info.version)}</dd>
        <dt>Expires</dt><dd><time datetime="${info.expires.toISOString()}" title="${info.expires.toISOString()}">${escapeHtml(relative(info.expires.getTime(), now))}</time> unless you come back</dd>
        <dt>Lives in</dt><dd><code>${escapeHtml(info.location)}</code></dd>
      </dl>`
    : `<p class="muted" id="nothing-stored">Nothing stored for this browser yet. Your first change creates a record and its cookie.</p>
      <dl><dt>Would live in</dt><dd><code>${escapeHtml(info.location)}</code></dd></dl>`;
  return `<section class="card store" aria-labelledby="store-title">
      <h2 id="store-title">Stored for this browser</h2>
      ${rows}
      <form method="post" action="/clear"><button class="danger">Clear cookies and temporary files</button></form>
      <p class="hint muted">The cookie is HttpOnly: scripts in this page cannot read it, only the server can.</p>
    </section>`;
}

function formatBytes(bytes) {
  return bytes < 1024 ? `${bytes} bytes` : `${(bytes / 1024).toFixed(1)} KiB`;
}

/** "just now", "12 seconds ago", "in 14 days". */
function relative(time, now) {
  const seconds = Math.round((time - now) / 1000);
  const size = Math.abs(seconds);
  if (size < 5) return "just now";
  const [amount, unit] =
    size < 90 ? [size, "second"] : size < 5400 ? [Math.round(size / 60), "minute"] : size < 129_600 ? [Math.round(size / 3600), "hour"] : [Math.round(size / 86_400), "day"];
  const phrase = `${amount} ${unit}${amount === 1 ? "" : "s"}`;
  return seconds < 0 ? `${phrase} ago` : `in ${phrase}`;
}

const FAVICON =
  "data:image/svg+xml," +
  encodeURIComponent(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="8" fill="#4f46e5"/><path d="M9 17l5 5 9-11" stroke="#fff" stroke-width="3.5" fill="none" stroke-linecap="round" stroke-linejoin="round"/></svg>`);

const CSS = `
:root { --bg: #f6f7fb; --card: #fff; --ink: #1c1e26; --muted: #6b7080; --line: #e3e5ee; --accent: #4f46e5; --accent-ink: #fff; --danger: #c2410c; --alert: #fff4e5; --alert-ink: #7a3e00; --live: #15803d; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #14151b; --card: #1d1f27; --ink: #e9eaf0; --muted: #9a9fb2; --line: #2e3140; --accent: #8b85ff; --accent-ink: #111; --danger: #fb923c; --alert: #3a2a12; --alert-ink: #ffd9a8; --live: #4ade80; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 34rem; margin: 0 auto; padding: 2.5rem 1rem 3rem; }
h1 { margin: 0; font-size: 1.75rem; letter-spacing: -0.02em; }
h2 { margin: 0 0 0.75rem; font-size: 1rem; display: flex; justify-content: space-between; align-items: baseline; }
.lede { margin: 0.25rem 0 1.5rem; color: var(--muted); }
.muted { color: var(--muted); font-weight: normal; font-size: 0.9rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 14px; padding: 1.1rem 1.25rem; margin-bottom: 1rem; box-shadow: 0 1px 2px rgb(0 0 0 / 0.04); }
.alert { background: var(--alert); color: var(--alert-ink); border-radius: 10px; padding: 0.6rem 0.9rem; margin: 0 0 1rem; }
form { margin: 0; }
button { font: inherit; cursor: pointer; border: 1px solid var(--line); background: var(--card); color: var(--ink); border-radius: 8px; padding: 0.4rem 0.9rem; }
button:hover { border-color: var(--accent); }
button:focus-visible, input:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
button:disabled { opacity: 0.5; cursor: not-allowed; }
.counter { display: flex; align-items: center; justify-content: center; gap: 1.5rem; }
.round { width: 3rem; height: 3rem; border-radius: 50%; font-size: 1.5rem; line-height: 1; padding: 0; }
#count { min-width: 4ch; text-align: center; font-size: 2.75rem; font-weight: 650; font-variant-numeric: tabular-nums; }
.add { display: flex; gap: 0.5rem; margin-bottom: 0.75rem; }
.add input { flex: 1; min-width: 0; font: inherit; padding: 0.45rem 0.7rem; border: 1px solid var(--line); border-radius: 8px; background: var(--bg); color: var(--ink); }
.add button { background: var(--accent); color: var(--accent-ink); border-color: var(--accent); }
.todos { list-style: none; margin: 0; padding: 0; }
.todo { display: flex; align-items: center; gap: 0.65rem; padding: 0.4rem 0; border-top: 1px solid var(--line); }
.todo form { display: flex; }
.todo .text { flex: 1; overflow-wrap: anywhere; }
.todo.done .text { color: var(--muted); text-decoration: line-through; }
.tick { width: 1.5rem; height: 1.5rem; padding: 0; border-radius: 6px; font-size: 0.9rem; line-height: 1; }
.todo.done .tick { background: var(--accent); border-color: var(--accent); color: var(--accent-ink); }
.remove { border: none; background: none; color: var(--muted); font-size: 1.25rem; padding: 0 0.4rem; }
.remove:hover { color: var(--danger); }
.empty { margin: 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.3rem 1rem; margin: 0 0 1rem; font-size: 0.9rem; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.85em; }
.danger { color: var(--danger); border-color: currentColor; background: none; }
.hint { margin: 0.75rem 0 0; }
.live { display: none; margin-left: 0.4rem; vertical-align: middle; font-size: 0.75rem; font-weight: 600; letter-spacing: 0.02em; color: var(--live); border: 1px solid currentColor; border-radius: 999px; padding: 0.05rem 0.5rem 0.05rem 0.4rem; }
.live::before { content: ""; display: inline-block; width: 0.45rem; height: 0.45rem; margin-right: 0.3rem; border-radius: 50%; background: currentColor; vertical-align: 0.05rem; }
html[data-live="on"] .live { display: inline-block; }
.intro { margin: 0 0 0.75rem; }
.counter.small { margin-bottom: 0.75rem; }
.counter.small .round { width: 2.4rem; height: 2.4rem; font-size: 1.25rem; }
#shared-count, #visitor-count { min-width: 4ch; text-align: center; font-size: 2rem; font-weight: 650; font-variant-numeric: tabular-nums; }
.login { align-items: center; }
.login label { color: var(--muted); white-space: nowrap; }
.notes { list-style: none; margin: 0 0 0.75rem; padding: 0; }
.note { display: flex; align-items: center; gap: 0.65rem; padding: 0.4rem 0; border-top: 1px solid var(--line); }
.note form { display: flex; }
.note .text { flex: 1; overflow-wrap: anywhere; }
.shared .empty { margin: 0 0 0.75rem; }
.logout { text-align: right; }
footer { text-align: center; color: var(--muted); font-size: 0.85rem; margin-top: 1.5rem; }
main[aria-busy="true"] button { cursor: progress; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

// Progressive enhancement: with JavaScript, forms are sent with fetch() and the
// new <main> replaces the old one, so the page does not flash or lose scroll.
// Submissions go one after another, so the page always shows the latest state.
//
// Live sync: persist-session/client tells the page whenever this browser's (or
// its signed-in user's) state is stored, by any tab or device; the page then
// fetches itself again and swaps in the new <main>, keeping what is typed in
// its inputs. The client keeps one events stream for all the tabs of the
// browser and follows new records by itself (after a first change, "Clear", or
// signing in or out), so the page has nothing else to do.
const ENHANCE = `
import { watchState } from "${CLIENT_PATH}";

const root = document.documentElement;
let queue = Promise.resolve();
let refreshQueued = false;

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || form.method !== "post") return;
  event.preventDefault();
  const body = new URLSearchParams(new FormData(form));
  const action = form.action;
  // An add form empties at once (a second Enter must not add it twice) and gets its text back if refused.
  const input = form.classList.contains("add") ? form.querySelector("input[id]") : null;
  const typed = input === null ? null : { id: input.id, text: input.value };
  if (typed !== null) form.reset();
  queue = queue.then(() => send(action, body, typed));
});

async function send(action, body, typed) {
  document.querySelector("main").setAttribute("aria-busy", "true");
  try {
    const response = await fetch(action, { method: "POST", body, headers: { accept: "text/html" } });
    const html = await response.text();
    if (!response.ok) throw new Error(messageOf(html) ?? "The server answered " + response.status + ". Try again.");
    const next = swap(html);
    history.replaceState(null, "", "/");
    const input = typed === null ? null : next.querySelector("#" + typed.id);
    if (input !== null) {
      if (new URL(response.url).searchParams.has("error")) input.value = typed.text;
      input.focus();
    }
  } catch (error) {
    const current = document.querySelector("main");
    current.removeAttribute("aria-busy");
    current.querySelector(".alert")?.remove();
    const alert = document.createElement("p");
    alert.className = "alert";
    alert.setAttribute("role", "alert");
    alert.textContent = error instanceof TypeError ? "Cannot reach the server. Is it running?" : error.message;
    current.querySelector("header").after(alert);
    const input = typed === null ? null : current.querySelector("#" + typed.id);
    if (input !== null && input.value === "") input.value = typed.text;
  }
}

/**
 * Puts the <main> of a page's HTML in place of this one, keeping what is typed
 * in the inputs and where the cursor is. Only <main> is taken: parsing the whole
 * page would meet its <style>, whose nonce is not this page's, and the
 * Content-Security-Policy would complain.
 */
function swap(html) {
  const next = mainOf(html);
  if (next === null) throw new Error("The server sent an unexpected page. Reload to continue.");
  const current = document.querySelector("main");
  for (const input of current.querySelectorAll("input[id]:not([type=hidden])")) {
    const twin = next.querySelector("#" + input.id);
    if (input.value !== "" && twin instanceof HTMLInputElement && !twin.disabled) twin.value = input.value;
  }
  const active = document.activeElement;
  const focused = active instanceof HTMLInputElement && active.id !== "" && current.contains(active) ? active : null;
  current.replaceWith(next);
  const twin = focused === null ? null : next.querySelector("#" + focused.id);
  if (twin instanceof HTMLInputElement && !twin.disabled) {
    twin.focus();
    try { twin.setSelectionRange(focused.selectionStart, focused.selectionEnd, focused.selectionDirection); } catch {}
  }
  return next;
}

function mainOf(html) {
  const start = html.indexOf("<main");
  const end = html.indexOf("</main>");
  if (start === -1 || end === -1) return null;
  const template = document.createElement("template");
  template.innerHTML = html.slice(start, end + "</main>".length);
  return template.content.querySelector("main");
}

/** The sentence of an error page (400, 403, 413 …), if it is one. */
function messageOf(html) {
  return mainOf(html)?.querySelector(".card p")?.textContent ?? null;
}

/** Fetches the page again and shows it; repeated calls while one waits are one refresh. */
function refresh() {
  if (refreshQueued) return;
  refreshQueued = true;
  queue = queue.then(async () => {
    refreshQueued = false;
    try {
      const response = await fetch("/", { headers: { accept: "text/html" }, cache: "no-store" });
      if (!response.ok) return;
      // A message on the page stays: it answers something this tab did, and the next action replaces it.
      const alert = document.querySelector("main .alert");
      const next = swap(await response.text());
      if (alert !== null && next.querySelector(".alert") === null) next.querySelector("header").after(alert);
      history.replaceState(null, "", "/");
    } catch {
      // Offline or restarting: the client reconnects, and a change it missed comes as a change.
    }
  });
}

/** The versions the page shows, by key (a change at or below them is old news). */
function shownVersions() {
  try { return JSON.parse(document.querySelector("main").dataset.versions); } catch { return {}; }
}

const LIVE = { connecting: "connecting", live: "on", offline: "off" };
// Given the versions the page was rendered with, the client reports at once what changed since.
const sync = watchState({ url: "/events", versions: shownVersions() });
root.dataset.live = LIVE[sync.status];
sync.on("status", (status) => (root.dataset.live = LIVE[status]));
sync.on("change", ({ key, version }) => {
  // This page's own change comes back as an event too: no need to fetch what is shown.
  if (version > 0 && version <= shownVersions()[key]) return;
  refresh();
});
`;
