"use strict";
const $ = (id) => document.getElementById(id);
let next = "";
let keys = null;

function b64(s) { return Uint8Array.from(atob(s), c => c.charCodeAt(0)); }
function concat(...parts) { const n = parts.reduce((a, p) => a + p.length, 0); const out = new Uint8Array(n); let o = 0; for (const p of parts) { out.set(p, o); o += p.length; } return out; }
async function sha256(b) { return new Uint8Array(await crypto.subtle.digest("SHA-256", b)); }
function eq(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }
const leafHash = (d) => sha256(concat(new Uint8Array([0]), d));
const nodeHash = (l, r) => sha256(concat(new Uint8Array([1]), l, r));

// RFC 9162 section 2.1.3.2: verify an inclusion proof.
async function rootFromProof(index, size, leaf, path) {
  let fn = BigInt(index), sn = BigInt(size) - 1n, r = leaf;
  for (const p of path) {
    if (sn === 0n) return null;
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) { while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; } }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n; sn >>= 1n;
  }
  return sn === 0n ? r : null;
}

// A C2SP signed note: body, blank line, "— <name> <base64(keyhash || sig)>".
async function checkNote(text) {
  const i = text.indexOf("\n\n");
  const body = text.slice(0, i + 1);
  const lines = body.split("\n");
  const root = b64(lines[2]);
  for (const line of text.slice(i + 2).split("\n")) {
    const m = line.match(/^\u2014 (\S+) (\S+)$/);
    if (!m) continue;
    const key = keys.find(k => k.name === m[1]);
    if (!key) continue;
    const sig = b64(m[2]);
    if (!eq(sig.slice(0, 4), key.hash)) continue;
    try {
      const pk = await crypto.subtle.importKey("raw", key.pub, { name: "Ed25519" }, false, ["verify"]);
      if (await crypto.subtle.verify({ name: "Ed25519" }, pk, sig.slice(4), new TextEncoder().encode(body))) return { size: BigInt(lines[1]), root };
    } catch (e) { return { size: BigInt(lines[1]), root, unsigned: true }; }
  }
  return null;
}

async function loadKeys() {
  const r = await fetch("v1/keys");
  const j = await r.json();
  keys = (j.keys || []).map(k => {
    // name+hash+key: the key is base64, which may itself hold "+".
    const [name, hash, ...rest] = k.split("+");
    const data = rest.join("+");
    const raw = b64(data);
    const h = parseInt(hash, 16);
    return { name, hash: new Uint8Array([h >>> 24, (h >>> 16) & 255, (h >>> 8) & 255, h & 255]), pub: raw.slice(1) };
  });
}

async function verify(a) {
  if (!a.proof) return "pending (next checkpoint)";
  const leaf = await leafHash(b64(a.record));
  const root = await rootFromProof(a.proof.leafIndex || 0, a.proof.treeSize, leaf, (a.proof.hashes || []).map(b64));
  const note = await checkNote(a.proof.checkpoint);
  if (!root || !note || note.size !== BigInt(a.proof.treeSize) || !eq(root, note.root)) return "✗ does not verify";
  return note.unsigned ? "✓ in the log (signature not checked: no Ed25519 in this browser)" : "✓ in the signed log";
}

async function showLogin() {
  $("login").hidden = false; $("log").hidden = true;
  const s = await (await fetch("session", { credentials: "same-origin" })).json();
  $("oidc").hidden = !s.oidc;
  $("login-form").hidden = !s.demo_login;
  $("no-login").hidden = s.oidc || s.demo_login;
}

function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; }

async function load(reset) {
  $("error").textContent = "";
  if (reset) { $("rows").textContent = ""; next = ""; }
  const q = new URLSearchParams({ page_size: "50" });
  if (next) q.set("page_token", next);
  if ($("refused").checked) q.set("include_refused", "true");
  const r = await fetch("v1/accesses?" + q, { credentials: "same-origin" });
  if (r.status === 401) { await showLogin(); return; }
  const j = await r.json();
  if (!r.ok) { $("error").textContent = j.error || r.statusText; return; }
  $("login").hidden = true; $("log").hidden = false;
  if (!keys) await loadKeys();
  for (const a of j.accesses || []) {
    const tr = document.createElement("tr");
    cell(tr, new Date(a.time).toLocaleString());
    cell(tr, a.consumer ? (a.consumer.title || a.consumer.name) : "—");
    cell(tr, a.provider ? (a.provider.title || a.provider.name) : "—");
    const refused = a.decision !== "DECISION_ALLOWED";
    cell(tr, refused ? "refused (" + a.reason + "): nothing released" : ((a.fields || []).join(", ") || "the whole answer"), refused ? "refused" : "");
    cell(tr, a.purpose || "—");
    cell(tr, (a.legalBasis || "—") + (a.law ? " — " + a.law : ""));
    const p = cell(tr, "checking…");
    $("rows").appendChild(tr);
    verify(a).then(v => { p.textContent = v; p.className = v.startsWith("✓") ? "ok" : (v.startsWith("✗") ? "refused" : "muted"); });
  }
  next = j.nextPageToken || "";
  $("more").hidden = !next;
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ eid: $("eid").value }), credentials: "same-origin" });
  $("eid").value = "";
  if (!r.ok) { const j = await r.json(); $("error").textContent = j.error || r.statusText; return; }
  load(true);
});
$("refused").addEventListener("change", () => load(true));
$("more").addEventListener("click", () => load(false));
$("logout").addEventListener("click", async () => { await fetch("logout", { method: "POST", credentials: "same-origin" }); await showLogin(); });
load(true);
