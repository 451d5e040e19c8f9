"""The speech server's web page at ``/`` (HiggsAudio v2): text, an optional voice reference file and its
transcript, seed and sampling settings, a player and a download link, and the queue state.

One offline HTML file (inline style and script under a per-response CSP nonce, like
:mod:`tunesmith.serve.page`, whose document frame, headers and sign-in form it reuses). The reference file is
read in the browser (``FileReader.readAsDataURL``) and sent as the ``data:`` URL ``POST /v1/generate`` accepts.
"""

from __future__ import annotations

import secrets
from typing import Any

from tunesmith.serve.page import _document, _headers

_SCRIPT = """
const $ = id => document.getElementById(id);
async function getJSON(path) {
  const r = await fetch(path, {credentials: 'same-origin'});
  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
  return r.json();
}
async function loadModel() {
  const model = await getJSON('/v1/model');
  const d = model.defaults, lim = model.limits;
  $('name').textContent = model.name + ' · speech · ' + model.sample_rate + ' Hz · ' + model.precision;
  $('duration').value = d.duration; $('duration').max = lim.max_duration;
  $('temperature').value = d.temperature; $('temperature').max = lim.max_temperature;
  $('top_k').value = d.top_k; $('top_k').max = lim.max_top_k; $('top_p').value = d.top_p;
  $('text').maxLength = lim.max_prompt_chars; $('reference_text').maxLength = lim.max_prompt_chars;
  $('go').disabled = false;
}
async function pollQueue() {
  try {
    const s = await getJSON('/v1/status');
    $('queue').textContent = 'queue: ' + s.queued + ' waiting, ' + s.running + ' generating, ' +
      s.completed + ' done, ' + s.rejected + ' turned away';
  } catch (e) { $('queue').textContent = 'queue: unknown (' + e.message + ')'; }
}
function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error('cannot read ' + file.name));
    reader.readAsDataURL(file);
  });
}
async function generate(event) {
  event.preventDefault();
  $('error').textContent = ''; $('go').disabled = true; $('info').textContent = 'speaking…';
  const body = {text: $('text').value, duration: Number($('duration').value),
                temperature: Number($('temperature').value), top_k: Number($('top_k').value),
                top_p: Number($('top_p').value), format: 'wav'};
  if ($('seed').value !== '') body.seed = Number($('seed').value);
  try {
    const file = $('reference').files[0];
    if (file) { body.reference = await readFile(file); body.reference_text = $('reference_text').value; }
    else if ($('reference_text').value !== '') body.reference_text = $('reference_text').value;
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
    $('player').src = url; $('download').href = url; $('download').download = 'tunesmith-speech-seed-' + seed + '.wav';
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
$('form').addEventListener('submit', generate);
loadModel().catch(e => { $('error').textContent = 'cannot read the model: ' + e.message; });
pollQueue(); setInterval(pollQueue, 2000);
"""

_BODY = """
<h1>tunesmith · speech</h1>
<p id="name"></p>
<form id="form">
  <label for="text">Text</label>
  <textarea id="text" rows="3" required placeholder="e.g. The quick brown fox jumps over the lazy dog."></textarea>
  <label for="reference">Voice reference (optional: a wav or flac of the voice to use)</label>
  <input id="reference" type="file" accept="audio/wav,audio/x-wav,audio/flac,.wav,.flac">
  <label for="reference_text">What is said in the reference</label>
  <textarea id="reference_text" rows="2"></textarea>
  <div class="row">
    <div><label for="duration">Longest (s)</label>
      <input id="duration" type="number" min="0.01" step="any" required></div>
    <div><label for="seed">Seed</label><input id="seed" type="number" min="0" step="1" placeholder="random"></div>
    <div><label for="temperature">Temperature</label><input id="temperature" type="number" min="0" step="any"></div>
    <div><label for="top_k">Top-k</label><input id="top_k" type="number" min="0" step="1"></div>
    <div><label for="top_p">Top-p</label><input id="top_p" type="number" min="0" max="1" step="any"></div>
  </div>
  <button id="go" type="submit" disabled>Speak</button>
</form>
<p id="error" role="alert"></p>
<p id="info"></p>
<div id="result" hidden>
  <audio id="player" controls></audio>
  <p><a id="download" href="#">Download the WAV</a></p>
</div>
<p id="queue">queue: …</p>
"""


def speech_page() -> Any:
    """The page (an HTMLResponse with a fresh CSP nonce)."""
    from fastapi.responses import HTMLResponse

    nonce = secrets.token_urlsafe(16)
    return HTMLResponse(_document("tunesmith speech", _BODY, nonce, _SCRIPT), headers=_headers(nonce))
