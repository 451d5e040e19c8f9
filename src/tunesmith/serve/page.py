"""The server's web page at ``/``: one offline HTML file (inline style and script, no CDN, no fonts).

It reads ``GET /v1/model`` (defaults, the attributes the model knows and their values), sends
``POST /v1/generate`` and plays the answer in an ``<audio>`` element with a download link, and shows
the queue from ``GET /v1/status`` every 2 s. With an API key set, the browser authenticates with the
cookie :mod:`tunesmith.serve.auth` describes; without it, ``/`` shows only a sign-in form.
"""

from __future__ import annotations

import html
import secrets
from typing import Any

HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}

_STYLE = """
body{font:15px/1.4 system-ui,sans-serif;max-width:44em;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.3em} label{display:block;margin:.5em 0 .1em;font-weight:600}
input,select,textarea{font:inherit;padding:.25em;box-sizing:border-box}
textarea{width:100%} .row{display:flex;gap:1em;flex-wrap:wrap} .row>div{flex:1;min-width:8em}
.row input,.row select{width:100%} button{font:inherit;padding:.4em 1.2em;margin-top:1em}
#error{color:#b00020;white-space:pre-wrap} #queue,#info{color:#555;font-size:.9em} audio{width:100%;margin-top:1em}
"""

# The helpers both pages' scripts use (this page's and :mod:`tunesmith.serve.speech_page`'s): a page script
# defines loadModel() and requestBody() (the POST /v1/generate JSON, possibly async), then calls start(...).
_SHARED_SCRIPT = """
const $ = id => document.getElementById(id);
async function getJSON(path) {
  const r = await fetch(path, {credentials: 'same-origin'});
  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
  return r.json();
}
async function pollQueue() {
  try {
    const s = await getJSON('/v1/status');
    $('queue').textContent = 'queue: ' + s.queued + ' waiting, ' + s.running + ' generating, ' +
      s.completed + ' done, ' + s.rejected + ' turned away';
  } catch (e) { $('queue').textContent = 'queue: unknown (' + e.message + ')'; }
}
async function generate(event, busyText, filePrefix, requestBody) {
  event.preventDefault();
  $('error').textContent = ''; $('go').disabled = true; $('info').textContent = busyText;
  try {
    const body = await requestBody();
    const r = await fetch('/v1/generate', {method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
    if (!r.ok) {
      let message = 'HTTP ' + r.status;
      try { message = (await r.json()).error || message; } catch (e) {}
      throw new Error(message);
    }
    const seed = r.headers.get('X-Seed');
    const url = URL.createObjectURL(await r.blob());
    const old = $('player').src;
    $('player').src = url; $('download').href = url; $('download').download = filePrefix + seed + '.wav';
    $('result').hidden = false;
    if (old.startsWith('blob:')) URL.revokeObjectURL(old);
    $('info').textContent = 'seed ' + seed + ' · ' + Number(r.headers.get('X-Audio-Seconds')).toFixed(2) +
      ' s of audio in ' + Number(r.headers.get('X-Generation-Seconds')).toFixed(2) + ' s';
  } catch (e) {
    $('error').textContent = e.message; $('info').textContent = '';
  } finally {
    $('go').disabled = false; pollQueue();
  }
}
function start(busyText, filePrefix, requestBody) {
  $('form').addEventListener('submit', event => generate(event, busyText, filePrefix, requestBody));
  loadModel().catch(e => { $('error').textContent = 'cannot read the model: ' + e.message; });
  pollQueue(); setInterval(pollQueue, 2000);
}
"""

_SCRIPT = """
let model = null;
function attributeField(name, values) {
  const box = document.createElement('div');
  const label = document.createElement('label');
  label.textContent = name; label.htmlFor = 'attr-' + name;
  let input;
  if (name === 'bpm') {
    input = document.createElement('input'); input.type = 'number'; input.min = '1'; input.max = '1000';
    input.placeholder = 'any';
  } else {
    input = document.createElement('select');
    for (const v of [''].concat(values)) {
      const o = document.createElement('option'); o.value = v; o.textContent = v || '(any)'; input.appendChild(o);
    }
  }
  input.id = 'attr-' + name; input.dataset.attribute = name;
  box.append(label, input);
  return box;
}
async function loadModel() {
  model = await getJSON('/v1/model');
  const d = model.defaults, lim = model.limits;
  $('name').textContent = model.name + ' · ' + model.sample_rate + ' Hz · ' + model.precision;
  $('duration').value = d.duration; $('duration').max = lim.max_duration;
  $('cfg').value = d.cfg; $('cfg').max = lim.max_cfg;
  $('prompt').maxLength = lim.max_prompt_chars;
  if (!model.conditioning.text) { $('prompt').disabled = true; $('prompt').placeholder = 'unconditional model'; }
  const attrs = model.conditioning.attributes;
  $('attributes').replaceChildren(...attrs.map(a => attributeField(a, model.conditioning.attribute_values[a] || [])));
  $('attributes-box').hidden = attrs.length === 0;
  $('go').disabled = false;
}
function requestBody() {
  const body = {prompt: $('prompt').value, duration: Number($('duration').value), cfg: Number($('cfg').value),
                format: 'wav'};
  if ($('seed').value !== '') body.seed = Number($('seed').value);
  for (const el of document.querySelectorAll('[data-attribute]')) {
    if (el.value !== '') body[el.dataset.attribute] = el.dataset.attribute === 'bpm' ? Number(el.value) : el.value;
  }
  return body;
}
start('generating…', 'tunesmith-seed-', requestBody);
"""

_BODY = """
<h1>tunesmith</h1>
<p id="name"></p>
<form id="form">
  <label for="prompt">Prompt</label>
  <textarea id="prompt" rows="3" placeholder="e.g. calm piano over soft strings"></textarea>
  <div class="row">
    <div><label for="duration">Duration (s)</label>
      <input id="duration" type="number" min="0.01" step="any" required></div>
    <div><label for="seed">Seed</label><input id="seed" type="number" min="0" step="1" placeholder="random"></div>
    <div><label for="cfg">CFG</label><input id="cfg" type="number" min="0" step="any" required></div>
  </div>
  <div id="attributes-box" hidden><div id="attributes" class="row"></div></div>
  <button id="go" type="submit" disabled>Generate</button>
</form>
"""

# What both pages show below their form: errors, progress, the player and download link, the queue.
_RESULTS = """
<p id="error" role="alert"></p>
<p id="info"></p>
<div id="result" hidden>
  <audio id="player" controls></audio>
  <p><a id="download" href="#">Download the WAV</a></p>
</div>
<p id="queue">queue: …</p>
"""

_SIGN_IN = """
<h1>tunesmith</h1>
<p>This server needs its API key.</p>
<form method="post" action="/sign-in">
  <input name="username" autocomplete="username" value="tunesmith" hidden>
  <label for="key">API key</label>
  <input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
  <button type="submit">Open</button>
</form>
<p id="error">{message}</p>
"""


def _document(title: str, body: str, nonce: str, script: str = "") -> str:
    tag = f'<script nonce="{nonce}">{script}</script>' if script else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f'<style nonce="{nonce}">{_STYLE}</style></head><body>{body}{tag}</body></html>'
    )


def _headers(nonce: str) -> dict[str, str]:
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "media-src 'self' blob:; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return {**HEADERS, "Content-Security-Policy": csp}


def generation_page(title: str, form: str, script: str) -> Any:
    """A generation page (an HTMLResponse with a fresh CSP nonce): ``form`` (HTML with the ``form`` element
    and its ``go`` button) above the shared results block, and ``script`` (defining ``loadModel()`` and
    calling ``start(...)``) after the shared script helpers."""
    from fastapi.responses import HTMLResponse

    nonce = secrets.token_urlsafe(16)
    document = _document(title, form + _RESULTS, nonce, _SHARED_SCRIPT + script)
    return HTMLResponse(document, headers=_headers(nonce))


def web_page() -> Any:
    """The page (an HTMLResponse with a fresh CSP nonce)."""
    return generation_page("tunesmith", _BODY, _SCRIPT)


def sign_in(message: str = "") -> Any:
    """401 with the sign-in form (nothing about the model)."""
    from fastapi.responses import HTMLResponse

    nonce = secrets.token_urlsafe(16)
    body = _SIGN_IN.replace("{message}", html.escape(message))
    return HTMLResponse(_document("tunesmith: sign in", body, nonce), status_code=401, headers=_headers(nonce))
