"use strict";
// The citizen's page: everything is read from the gateway's JSON APIs with
// the session cookie; nothing is fetched from another origin.
const D = JSON.parse(document.body.dataset.i18n);
const $ = (id) => document.getElementById(id);
const T = (k) => D.t[k] || k;
const member = (n) => D.members[n] || n;
// A released field is named by its path (person.names.latin.family): it is
// shown by the label of its nearest labelled ancestor (person.names).
function field(f) {
  for (let p = f; p; p = p.includes(".") ? p.slice(0, p.lastIndexOf(".")) : "") if (D.fields[p]) return D.fields[p];
  return f;
}
const fieldList = (fs) => [...new Set((fs || []).map(field))].join(sep);
const purpose = (p) => D.purposes[p] || p;
const basis = (b) => D.t["basis_" + b] || b;
const sep = D.lang === "ar" ? "، " : ", ";
const dateFmt = new Intl.DateTimeFormat(D.locale, { dateStyle: "long", timeStyle: "short" });
const fmtDate = (s) => dateFmt.format(new Date(s));
const days = (d) => Math.max(1, Math.round(parseDuration(d) / 86400));
function parseDuration(s) { // Go's "720h0m0s"
  let t = 0; for (const m of String(s).matchAll(/([\d.]+)(h|m|s)/g)) t += parseFloat(m[1]) * { h: 3600, m: 60, s: 1 }[m[2]];
  return t;
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) { if (k === "text") e.textContent = v; else e.setAttribute(k, v); }
  for (const k of kids) if (k) e.append(k);
  return e;
}
// Assisted access: the minor the signed-in parent acts for ("" for
// themselves). The gateway checks the relation with the civil registry at
// each request; the page only names the minor.
let actFor = "";
const forPath = (path) => actFor ? path + (path.includes("?") ? "&" : "?") + "for=" + encodeURIComponent(actFor) : path;
async function api(method, path, body) {
  if (!path.startsWith("/access-log/logout") && path !== "/v1/wards") path = forPath(path);
  const r = await fetch(path, { method, credentials: "same-origin", headers: body ? { "Content-Type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
  let j = {}; try { j = await r.json(); } catch (e) { /* empty */ }
  return { status: r.status, ok: r.ok, j };
}
function say(k) { $("live").textContent = T(k); }
function fail() { $("error").textContent = T("error"); }

// --- Inclusion proofs (RFC 9162) and signed checkpoints (C2SP signed note), checked here.
function b64(s) { return Uint8Array.from(atob(s), c => c.charCodeAt(0)); }
function concat(...parts) { const n = parts.reduce((a, p) => a + p.length, 0); const out = new Uint8Array(n); let o = 0; for (const p of parts) { out.set(p, o); o += p.length; } return out; }
async function sha256(b) { return new Uint8Array(await crypto.subtle.digest("SHA-256", b)); }
function eq(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }
const leafHash = (d) => sha256(concat(new Uint8Array([0]), d));
const nodeHash = (l, r) => sha256(concat(new Uint8Array([1]), l, r));
async function rootFromProof(index, size, leaf, path) {
  let fn = BigInt(index), sn = BigInt(size) - 1n, r = leaf;
  for (const p of path) {
    if (sn === 0n) return null;
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) { while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; } }
    } else { r = await nodeHash(r, p); }
    fn >>= 1n; sn >>= 1n;
  }
  return sn === 0n ? r : null;
}
let keys = null;
async function loadKeys() {
  const j = await (await fetch("/access-log/v1/keys")).json();
  keys = (j.keys || []).map(k => {
    // name+hash+key: the key is base64, which may itself hold "+".
    const [name, hash, ...rest] = k.split("+");
    const data = rest.join("+");
    const h = parseInt(hash, 16);
    return { name, hash: new Uint8Array([h >>> 24, (h >>> 16) & 255, (h >>> 8) & 255, h & 255]), pub: b64(data).slice(1) };
  });
}
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
async function verify(a) {
  if (!a.proof) return ["pending", T("proof_pending")];
  const leaf = await leafHash(b64(a.record));
  const root = await rootFromProof(a.proof.leafIndex || 0, a.proof.treeSize, leaf, (a.proof.hashes || []).map(b64));
  const note = await checkNote(a.proof.checkpoint);
  if (!root || !note || note.size !== BigInt(a.proof.treeSize) || !eq(root, note.root)) return ["bad", T("proof_bad")];
  return note.unsigned ? ["unsigned", T("proof_unsigned")] : ["ok", T("proof_ok")];
}

// --- Pending requests.
function renderPending(reqs) {
  const box = $("pending");
  const pending = reqs.filter(r => r.state === "PENDING");
  // A form already shown is kept as it is: a live update never undoes the
  // citizen's choices in progress.
  const shown = new Map([...box.querySelectorAll("form.request")].map(f => [f.dataset.request, f]));
  box.textContent = "";
  if (!pending.length) { box.append(el("p", { class: "muted", text: T("pending_none") })); return; }
  for (const r of pending) {
    const id = r.id;
    if (shown.has(id)) { box.append(shown.get(id)); continue; }
    const form = el("form", { class: "request", "data-request": id, "aria-labelledby": "rq-" + id });
    form.append(el("h3", { id: "rq-" + id, text: member(r.consumer) + " " + T("asks") }));
    const dl = el("dl");
    for (const [k, v] of [["from", member(r.provider)], ["purpose", purpose(r.purpose)], ["basis", basis(r.legal_basis)], ["asked_on", fmtDate(r.created)]]) dl.append(el("dt", { text: T(k) }), el("dd", { text: v }));
    form.append(dl);
    const fs = el("fieldset", {}, el("legend", { text: T("fields_legend") }));
    const offered = (r.asked && r.asked.length) ? r.asked : (r.rule_fields || []);
    if (!offered.length) fs.append(el("p", { text: T("whole") }));
    offered.forEach((f, i) => {
      const cid = "f-" + id + "-" + i;
      fs.append(el("div", { class: "check" }, el("input", { type: "checkbox", id: cid, name: "field", value: f, checked: "" }), el("label", { for: cid, text: field(f) })));
    });
    form.append(fs);
    const max = days(r.ttl);
    const did = "d-" + id;
    form.append(el("p", {}, el("label", { for: did, text: T("duration").replace("{n}", String(max)) }), " ",
      el("input", { type: "number", id: did, name: "days", min: "1", max: String(max), value: String(max), required: "" })));
    if (r.max_uses) form.append(el("p", { text: T("uses") + " : " + r.max_uses }));
    const reject = el("button", { type: "button", class: "danger", "data-action": "reject", text: T("reject") });
    const pv = el("button", { type: "button", class: "secondary", "data-action": "preview", text: T("preview") });
    const pvBox = el("div", { class: "preview", "aria-live": "polite" });
    pv.addEventListener("click", async () => {
      const res = await api("POST", "/v1/consent-requests/" + encodeURIComponent(id) + "/preview");
      if (!res.ok) return fail();
      pvBox.textContent = "";
      const dl = el("dl");
      for (const [label, v] of previewRows(res.j.values || {})) dl.append(el("dt", { text: label }), el("dd", { text: v }));
      pvBox.append(el("h4", { text: T("preview_h") }), dl, el("p", { class: "muted", text: T("preview_note") }));
      pv.hidden = true;
    });
    form.append(el("p", {}, pv), pvBox);
    form.append(el("p", { class: "actions" }, el("button", { type: "submit", "data-action": "approve", text: T("approve") }), " ", reject));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const fields = [...form.querySelectorAll("input[name=field]:checked")].map(c => c.value);
      if (offered.length && !fields.length) { form.querySelector("input[name=field]").focus(); return; }
      const n = Math.min(max, Math.max(1, parseInt(form.querySelector("input[name=days]").value, 10) || max));
      // A shorter duration only when the citizen chose one: the asked one
      // may be no whole number of days (a few hours), and more is refused.
      const body = n < max ? { ttl: (n * 24) + "h" } : {};
      if (fields.length && fields.length < offered.length || !(r.asked && r.asked.length)) body.fields = fields;
      const res = await api("POST", "/v1/consent-requests/" + encodeURIComponent(id) + "/approve", body);
      if (!res.ok) return fail();
      say("done_approve"); loadAll();
    });
    reject.addEventListener("click", async () => {
      const res = await api("POST", "/v1/consent-requests/" + encodeURIComponent(id) + "/reject");
      if (!res.ok) return fail();
      say("done_reject"); loadAll();
    });
    box.append(form);
  }
}

// The preview's values, flattened and grouped under the fields' labels; an
// enum value is shown by its label from the federation file.
function previewRows(obj) {
  const rows = new Map();
  const walk = (o, path) => {
    if (o !== null && typeof o === "object" && !Array.isArray(o)) { for (const [k, v] of Object.entries(o)) walk(v, path ? path + "." + k : k); return; }
    const vals = Array.isArray(o) ? o : [o];
    for (const v of vals) {
      if (v !== null && typeof v === "object") { walk(v, path); continue; }
      const text = typeof v === "string" && /^[A-Z][A-Z_]+$/.test(v) ? (D.values[v] || v) : String(v);
      const label = field(path);
      rows.set(label, rows.has(label) ? rows.get(label) + " " + text : text);
    }
  };
  walk(obj, "");
  return [...rows.entries()];
}

// --- Consents.
function memberOf(spiffe) { const i = spiffe.lastIndexOf("/member/"); return i < 0 ? spiffe : spiffe.slice(i + 8); }
function stateOf(g) {
  if (g.revoked) return "REVOKED";
  if (g.used_up) return "USED_UP";
  if (new Date(g.expires) < new Date()) return "EXPIRED";
  return g.paused ? "PAUSED" : "ACTIVE";
}
function renderConsents(grants) {
  const box = $("consents"); box.textContent = "";
  if (!grants.length) { box.append(el("p", { class: "muted", text: T("consents_none") })); return; }
  const ul = el("ul", { class: "consents" });
  grants.sort((a, b) => new Date(b.issued_at) - new Date(a.issued_at));
  for (const g of grants) {
    const st = stateOf(g);
    const li = el("li", { "data-jti": g.jti, "data-state": st });
    li.append(el("h3", { text: member(memberOf(g.consumer)) + " — " + purpose(g.purpose) }));
    const dl = el("dl");
    for (const [k, v] of [["state", T("state_" + st)], ["col_what", fieldList(g.fields) || T("whole")], ["basis", basis(g.legal_basis)], ["until", fmtDate(g.expires)]]) dl.append(el("dt", { text: T(k) }), el("dd", { text: v }));
    li.append(dl);
    const acts = el("p", { class: "actions" });
    const act = (name, cls) => {
      const b = el("button", { type: "button", class: cls, "data-action": name, text: T(name) });
      b.addEventListener("click", async () => {
        const path = "/v1/consents/" + encodeURIComponent(g.jti) + (name === "revoke" ? "" : "/" + name);
        const res = await api(name === "revoke" ? "DELETE" : "POST", path);
        if (!res.ok) return fail();
        say("done_" + name); loadAll();
      });
      acts.append(b, " ");
    };
    if (st === "ACTIVE") act("pause", "secondary");
    if (st === "PAUSED") act("resume", "secondary");
    if (st === "ACTIVE" || st === "PAUSED") act("revoke", "danger");
    li.append(acts);
    ul.append(li);
  }
  box.append(ul);
}

// --- Access log and notifications.
function what(a) {
  const fs = fieldList(a.fields);
  if (a.provider && a.provider.name === "consent") return T("act_" + a.method) + (fs ? " : " + fs : "");
  if (a.decision !== "DECISION_ALLOWED") return T("refused");
  return fs || T("whole");
}
async function renderLog(accesses) {
  const rows = $("rows"); rows.textContent = "";
  $("log-none").hidden = accesses.length > 0;
  if (accesses.length && !keys) await loadKeys();
  const notifs = $("notifs"); notifs.textContent = "";
  for (const a of accesses) {
    const who = a.consumer && a.consumer.name ? member(a.consumer.name) : (a.purpose === "citizen" ? T("you") : "—");
    const tr = el("tr", { "data-method": a.method || "" });
    const proof = el("td", { class: "muted", text: T("proof_checking") });
    for (const v of [fmtDate(a.time), who, a.provider ? member(a.provider.name) : "—", what(a), a.purpose ? purpose(a.purpose) : "—", basis(a.legalBasis || "") + (a.law ? " — " + a.law : "")]) tr.append(el("td", { text: v }));
    tr.append(proof);
    rows.append(tr);
    verify(a).then(([cls, text]) => {
      proof.textContent = text; proof.className = cls; proof.parentElement.dataset.proof = cls;
      if (cls === "pending") recheck();
    }).catch(() => { proof.textContent = T("proof_bad"); proof.className = "bad"; });
    if (a.decision === "DECISION_ALLOWED" && a.consumer && a.consumer.name && !(a.provider && a.provider.name === "consent")) {
      notifs.append(el("li", { text: fmtDate(a.time) + " — " + who + " " + T("notif_access") + " : " + what(a) }));
    }
  }
  if (!notifs.children.length) notifs.append(el("li", { class: "muted", text: T("notif_none") }));
}

// A record not yet covered by a checkpoint is checked again a little later.
let rechecking = null;
function recheck() { if (!rechecking) rechecking = setTimeout(() => { rechecking = null; loadAll(); }, 3000); }

let live = null;
function startLive() {
  if (live) return;
  live = new EventSource(forPath("events"));
  live.addEventListener("ready", () => { $("live").dataset.live = "on"; $("live").textContent = T("live_on"); });
  live.addEventListener("change", () => { loadAll().then(() => say("updated")); });
  live.onerror = () => { $("live").dataset.live = "off"; $("live").textContent = T("live_off"); };
}

async function showLogin() {
  $("login").hidden = false; $("app").hidden = true; $("signout").hidden = true;
  if (live) { live.close(); live = null; }
  actFor = ""; wardsLoaded = false; $("acting").hidden = true;
  while ($("actfor").options.length > 1) $("actfor").remove(1);
}

let loading = null;
// A load asked for while one runs (an action done, a live change) runs once
// more after it: the one running may have read the state before the change.
let reload = false;
async function loadAll() {
  if (loading) { reload = true; return loading; }
  loading = (async () => {
    $("error").textContent = "";
    const [reqs, grants, acc] = await Promise.all([api("GET", "/v1/consent-requests"), api("GET", "/v1/consents"), api("GET", "/access-log/v1/accesses?page_size=50")]);
    if (reqs.status === 401 || grants.status === 401 || acc.status === 401) return showLogin();
    if (!reqs.ok || !grants.ok || !acc.ok) return fail();
    $("login").hidden = true; $("app").hidden = false; $("signout").hidden = false;
    renderPending(reqs.j.requests || []);
    renderConsents(grants.j.consents || []);
    await renderLog(acc.j.accesses || []);
    document.body.dataset.loaded = String(Date.now());
    startLive();
    loadWards();
  })().finally(() => {
    loading = null;
    if (reload) { reload = false; loadAll(); }
  });
  return loading;
}

// The minors the civil registry shows the citizen the parent of, once.
let wardsLoaded = false;
async function loadWards() {
  if (wardsLoaded) return;
  wardsLoaded = true;
  const res = await api("GET", "/v1/wards");
  const ws = (res.ok && res.j.wards) || [];
  if (!ws.length) return;
  for (const w of ws) $("actfor").append(el("option", { value: w.ckey, text: w.given_name + " (" + new Intl.DateTimeFormat(D.locale, { dateStyle: "long" }).format(new Date(w.birth_date)) + ")" }));
  $("acting").hidden = false;
}
$("actfor").addEventListener("change", () => {
  actFor = $("actfor").value;
  if (live) { live.close(); live = null; }
  loadAll();
});

$("signout").addEventListener("click", async () => { await api("POST", "/access-log/logout"); showLogin(); });
loadAll();
