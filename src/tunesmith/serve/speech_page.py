"""The speech server's web page at ``/`` (HiggsAudio v2): text, an optional voice reference file and its
transcript, seed and sampling settings, a player and a download link, and the queue state.

One offline HTML file (inline style and script under a per-response CSP nonce, like
:mod:`tunesmith.serve.page`, whose document frame, headers, script helpers, results block and sign-in form it
reuses). The reference file is read in the browser (``FileReader.readAsDataURL``) and sent as the ``data:`` URL
``POST /v1/generate`` accepts.
"""

from __future__ import annotations

from typing import Any

from tunesmith.serve.page import generation_page

_SCRIPT = """
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
function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error('cannot read ' + file.name));
    reader.readAsDataURL(file);
  });
}
async function requestBody() {
  const body = {text: $('text').value, duration: Number($('duration').value),
                temperature: Number($('temperature').value), top_k: Number($('top_k').value),
                top_p: Number($('top_p').value), format: 'wav'};
  if ($('seed').value !== '') body.seed = Number($('seed').value);
  const file = $('reference').files[0];
  if (file) { body.reference = await readFile(file); body.reference_text = $('reference_text').value; }
  else if ($('reference_text').value !== '') body.reference_text = $('reference_text').value;
  return body;
}
start('speaking…', 'tunesmith-speech-seed-', requestBody);
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
"""


def speech_page() -> Any:
    """The page (an HTMLResponse with a fresh CSP nonce)."""
    return generation_page("tunesmith speech", _BODY, _SCRIPT)
