"""The curation page served by :mod:`diffface.app.dataset.curation`: one self-contained HTML document (no files to install).

Keys: ``k`` keep, ``r`` or ``x`` reject, ``u`` or ``Ctrl+Z`` undo, arrows move the focus, ``f`` cycles the
filter, ``s`` cycles the sort order. A decision is sent to the server at once and shown as saved only
after the server has appended it to ``curation.jsonl``. The session token of the page's address
(``?token=...``) goes with every request: in the ``X-Curation-Token`` header of the fetches, in the query of
image and export links.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>diffface curate</title>
<style>
  :root { --keep: #2e9d4f; --reject: #d33c3c; --focus: #3b82f6; }
  body { font-family: system-ui, sans-serif; margin: 0; background: #1d1f23; color: #e6e6e6; }
  header { position: sticky; top: 0; z-index: 2; background: #25282d; padding: 8px 14px;
           display: flex; gap: 16px; align-items: center; flex-wrap: wrap; border-bottom: 1px solid #3a3d44; }
  header h1 { font-size: 16px; margin: 0 8px 0 0; }
  header label { font-size: 13px; }
  select, button { background: #33373e; color: #e6e6e6; border: 1px solid #4a4e57; border-radius: 4px;
                   padding: 3px 8px; font-size: 13px; cursor: pointer; }
  a { color: #8ab4f8; font-size: 13px; }
  #counts span { margin-right: 10px; font-size: 13px; }
  #status { font-size: 13px; color: #9aa0a6; min-width: 140px; }
  #status.error { color: var(--reject); font-weight: bold; }
  #help { font-size: 12px; color: #9aa0a6; width: 100%; }
  #grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(336px, 1fr)); gap: 10px; padding: 12px; }
  .card { background: #2a2d33; border: 3px solid #3a3d44; border-radius: 6px; padding: 6px; cursor: pointer; }
  .card.keep { border-color: var(--keep); }
  .card.reject { border-color: var(--reject); opacity: 0.72; }
  .card.focus { outline: 3px solid var(--focus); outline-offset: 2px; }
  .card img { width: 100%; image-rendering: auto; display: block; border-radius: 3px; background: #111; }
  .meta { display: flex; justify-content: space-between; align-items: center; margin-top: 5px; font-size: 12px; }
  .name { font-family: ui-monospace, monospace; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .score { font-family: ui-monospace, monospace; }
  .flags { margin-top: 3px; min-height: 18px; }
  .flag { display: inline-block; font-size: 11px; background: #7a4b12; color: #ffe3b8; border-radius: 3px;
          padding: 0 5px; margin: 1px 3px 1px 0; }
  .actions { display: flex; gap: 6px; margin-top: 5px; align-items: center; }
  .actions .state { margin-left: auto; font-size: 12px; text-transform: uppercase; letter-spacing: 0.05em; }
  .keep .state { color: var(--keep); } .reject .state { color: var(--reject); }
  button.keep { border-color: var(--keep); } button.reject { border-color: var(--reject); }
  #empty { padding: 30px; color: #9aa0a6; }
</style>
</head>
<body>
<header>
  <h1>diffface curate</h1>
  <span id="counts"></span>
  <label>Show <select id="filter">
    <option value="all">all</option><option value="unreviewed">unreviewed</option>
    <option value="keep">kept</option><option value="reject">rejected</option>
  </select></label>
  <label>Sort <select id="sort">
    <option value="worst">worst fit first</option><option value="best">best fit first</option>
    <option value="name">name</option>
  </select></label>
  <button id="undo" title="u or Ctrl+Z">Undo</button>
  <a href="/api/export?format=json" download="decisions.json">export JSON</a>
  <a href="/api/export?format=text&amp;decision=keep" download="kept.txt">kept list</a>
  <a href="/api/export?format=text&amp;decision=reject" download="rejected.txt">rejected list</a>
  <span id="status">loading…</span>
  <div id="help">Click a card to focus it. <b>k</b> keep · <b>r</b>/<b>x</b> reject · <b>u</b>/<b>Ctrl+Z</b> undo ·
    <b>←→↑↓</b> move · <b>f</b> filter · <b>s</b> sort. Left: crop with the fitted mesh (green grid), observed
    (red) and fitted (cyan) landmarks; right: the rendered fit. Every decision is saved on the server at once.</div>
</header>
<div id="grid"></div>
<div id="empty" hidden>No items in this view.</div>
<script>
"use strict";
const state = { items: [], filter: "all", sort: "worst", focus: 0, pending: 0 };
window.curation = state;
// the server answers only requests carrying the session token of this page's address
const token = new URLSearchParams(location.search).get("token") || "";
const tokenHeaders = { "X-Curation-Token": token };
function withToken(url) {
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}
for (const link of document.querySelectorAll("a[download]")) link.href = withToken(link.getAttribute("href"));
const grid = document.getElementById("grid");
const statusLine = document.getElementById("status");

function esc(text) {
  return String(text).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function setStatus(text, error) {
  statusLine.textContent = text;
  statusLine.className = error ? "error" : "";
}

function visibleItems() {
  let list = state.items.filter(it => state.filter === "all" || it.decision === state.filter);
  const score = it => (it.quality && typeof it.quality.score === "number") ? it.quality.score : 0;
  if (state.sort === "worst") list.sort((a, b) => score(b) - score(a) || a.name.localeCompare(b.name));
  else if (state.sort === "best") list.sort((a, b) => score(a) - score(b) || a.name.localeCompare(b.name));
  else list.sort((a, b) => a.name.localeCompare(b.name));
  return list;
}

function updateCounts() {
  const n = { keep: 0, reject: 0, unreviewed: 0 };
  for (const it of state.items) n[it.decision] += 1;
  document.getElementById("counts").innerHTML =
    `<span>${state.items.length} items</span><span style="color:var(--keep)">${n.keep} kept</span>` +
    `<span style="color:var(--reject)">${n.reject} rejected</span><span>${n.unreviewed} unreviewed</span>`;
}

function card(it, index) {
  const div = document.createElement("div");
  div.className = "card " + it.decision + (index === state.focus ? " focus" : "");
  div.dataset.name = it.name;
  div.dataset.decision = it.decision;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = it.name;
  img.src = withToken(it.preview ? `/previews/${encodeURIComponent(it.name)}.png`
                                 : `/items/${encodeURIComponent(it.name)}.png`);
  div.appendChild(img);
  const q = it.quality || {};
  const score = typeof q.score === "number" ? q.score.toFixed(2) : "–";
  const tip = Object.entries(q).map(([k, v]) => `${k}: ${typeof v === "number" ? v.toFixed(3) : v}`).join("\n");
  div.insertAdjacentHTML("beforeend",
    `<div class="meta"><span class="name" title="${esc(it.source)}">${esc(it.name)}</span>` +
    `<span class="score" title="${esc(tip)}">score ${score} · ${esc(it.split)}</span></div>` +
    `<div class="flags">${(it.flags || []).map(f => `<span class="flag">${esc(f)}</span>`).join("")}</div>` +
    `<div class="actions"><button class="keep" data-action="keep">Keep (k)</button>` +
    `<button class="reject" data-action="reject">Reject (r)</button><span class="state">${it.decision}</span></div>`);
  div.addEventListener("click", ev => {
    setFocus(index);
    const action = ev.target.dataset ? ev.target.dataset.action : undefined;
    if (action) decide(it.name, action);
  });
  return div;
}

function render() {
  const list = visibleItems();
  state.focus = Math.max(0, Math.min(state.focus, list.length - 1));
  grid.replaceChildren(...list.map(card));
  document.getElementById("empty").hidden = list.length > 0;
  updateCounts();
  const focused = grid.children[state.focus];
  if (focused) focused.scrollIntoView({ block: "nearest" });
}

function setFocus(index) {
  const cards = grid.children;
  if (!cards.length) return;
  if (cards[state.focus]) cards[state.focus].classList.remove("focus");
  state.focus = Math.max(0, Math.min(index, cards.length - 1));
  cards[state.focus].classList.add("focus");
  cards[state.focus].scrollIntoView({ block: "nearest" });
}

// a changed decision: update its card in place while it stays in the view (a grid of thousands is not
// rebuilt per key press); rebuild the view when it leaves or enters the filter
function applyDecision(name, decision, focusAfter) {
  const it = state.items.find(x => x.name === name);
  it.decision = decision;
  const list = visibleItems();
  const index = list.findIndex(x => x.name === name);
  const shown = grid.querySelector(`.card[data-name="${CSS.escape(name)}"]`);
  if (index >= 0 && shown) {
    shown.className = "card " + decision + (shown.classList.contains("focus") ? " focus" : "");
    shown.dataset.decision = decision;
    shown.querySelector(".state").textContent = decision;
    updateCounts();
    setFocus(focusAfter(index));
  } else {
    state.focus = index >= 0 ? index : state.focus;
    render();
  }
}

async function post(url, body) {
  state.pending += 1;
  try {
    const headers = { "Content-Type": "application/json", ...tokenHeaders };
    const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body || {}) });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  } finally {
    state.pending -= 1;
  }
}

async function decide(name, decision) {
  setStatus("saving…");
  try {
    const saved = await post("/api/decision", { name, decision });
    applyDecision(saved.name, saved.decision, index => index + 1);
    setStatus(`saved: ${name} → ${saved.decision}`);
  } catch (err) {
    setStatus(`NOT saved: ${err.message}`, true);
  }
}

async function undo() {
  setStatus("undoing…");
  try {
    const saved = await post("/api/undo");
    if (!saved.name) { setStatus("nothing to undo"); return; }
    applyDecision(saved.name, saved.decision, index => index);
    setStatus(`undone: ${saved.name} → ${saved.decision}`);
  } catch (err) {
    setStatus(`undo NOT saved: ${err.message}`, true);
  }
}

function columns() {
  const cards = grid.children;
  if (!cards.length) return 1;
  const top = cards[0].offsetTop;
  let n = 0;
  while (n < cards.length && cards[n].offsetTop === top) n += 1;
  return Math.max(1, n);
}

function cycle(select) {
  select.selectedIndex = (select.selectedIndex + 1) % select.options.length;
  select.dispatchEvent(new Event("change"));
}

document.getElementById("filter").addEventListener("change", ev => { state.filter = ev.target.value; state.focus = 0; render(); });
document.getElementById("sort").addEventListener("change", ev => { state.sort = ev.target.value; state.focus = 0; render(); });
document.getElementById("undo").addEventListener("click", undo);

document.addEventListener("keydown", ev => {
  if (ev.target.tagName === "SELECT") return;
  const list = visibleItems();
  const current = list[state.focus];
  const key = ev.key.toLowerCase();
  if ((ev.ctrlKey || ev.metaKey) && key === "z") { ev.preventDefault(); undo(); return; }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const moves = { arrowright: 1, arrowleft: -1, arrowdown: columns(), arrowup: -columns() };
  if (key in moves) {
    ev.preventDefault();
    setFocus(state.focus + moves[key]);
  } else if (key === "k" && current) decide(current.name, "keep");
  else if ((key === "r" || key === "x") && current) decide(current.name, "reject");
  else if (key === "u") undo();
  else if (key === "f") cycle(document.getElementById("filter"));
  else if (key === "s") cycle(document.getElementById("sort"));
});

async function load() {
  const response = await fetch("/api/items", { headers: tokenHeaders });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  state.items = data.items;
  document.title = `diffface curate: ${data.root}`;
  render();
  setStatus(`${data.items.length} items loaded`);
}
load().catch(err => setStatus(`could not load items: ${err.message}`, true));
</script>
</body>
</html>
"""
