"""The review page of a MIDI run: for a few fixed pieces of the eval split and each piano task of the run,
piano rolls of the task's prompt, the true target and each selected checkpoint's generated target (greedy,
through :func:`~tunesmith.models.midi.generation.generate_target`, as ``generate-midi`` and the free-running
evaluation decode), each checkpoint's free-running metrics with their baselines (read from ``history.jsonl``),
the loss curves, and audio players where ``fluidsynth`` and a General MIDI soundfont are installed.

The records are those of the evaluation: the first note slice of ``num_pieces`` pieces spread evenly over the
``valid`` split (``test`` when it has none), seeded as the evaluate stage seeds them. Generated tokens are kept
in ``RUN/samples/review/<checkpoint>/pianoroll.json`` (stamped with the weights, like the audio samples) and
every generated row as ``piece<N>_<task>.mid`` beside it (what ``--list-epochs`` counts); checkpoints with
identical weights share these files. A pretrain-stage run shows, for the same pieces, each checkpoint's
sampled continuation of the piece's opening (:mod:`tunesmith.review.midi_continuation`).
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError
from tunesmith.review.charts import history_figures, read_history
from tunesmith.review.checkpoints import (
    REVIEW_DIR,
    CheckpointRef,
    ReviewStats,
    list_checkpoints,
    prepare_output,
    select_checkpoints,
    weights_changed,
)
from tunesmith.review.grid import column_label, distinct_checkpoints, step_note
from tunesmith.review.midi_continuation import (
    ContinuationRow,
    continuation_caption,
    continuation_rows,
    continuation_svg,
    generate_continuation,
    generate_settings,
    new_notes,
    notes_from_json,
    prompt_figure_caption,
    samples_note,
)
from tunesmith.review.notes import hidden_checkpoints_note, pruned_checkpoints_note
from tunesmith.review.page import _chart_figure, _kv_table, _numbers_table, _paragraphs, html_head
from tunesmith.review.pianoroll import pianoroll_svg, roll_extent
from tunesmith.review.run_config import resolve_relative
from tunesmith.review.runner import INDEX, ReviewResult

log = logging.getLogger("tunesmith.review")

DEFAULT_NUM_PIECES = 2
ROLLS_FILE = "pianoroll.json"
SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
)
NO_AUDIO_NOTE = (
    "Audio needs fluidsynth and a General MIDI soundfont (Debian/Ubuntu: apt-get install fluidsynth "
    "fluid-soundfont-gm); rerun the review once they are installed to hear prompt, target and generated notes."
)
EXTRA_CSS = """
table.pianorolls td.prompt { max-width: none; }
.rolls { display: flex; gap: 6px; flex-wrap: nowrap; }
.rolls figure { margin: 0; }
.rolls figcaption { font-size: 12px; color: var(--muted); }
svg.pianoroll { background: #fff; display: block; }
.rolls audio { width: 300px; display: block; }
"""


@dataclasses.dataclass
class RollRow:
    """One record shown: piece ``piece`` (store id, ``name``), task ``task``, its prompt and target tokens."""

    key: str
    piece: int
    name: str
    task: str
    prompt: np.ndarray
    target: np.ndarray


def soundfont() -> Path | None:
    """The first General MIDI soundfont found at a usual path (None without fluidsynth or a soundfont)."""
    if shutil.which("fluidsynth") is None:
        return None
    return next((Path(p) for p in SOUNDFONTS if Path(p).is_file()), None)


def _store_dir(run_dir: Path, config: dict, data: Path | None) -> Path:
    value = str(data) if data is not None else str(config.get("data") or "")
    found = resolve_relative(value, run_dir) if value else None
    if found is None or not (found / "midi_dataset.json").is_file():
        raise UserError(
            f"{run_dir}: its prepared MIDI data {value or '(none)'} is not there (relative paths are read from the "
            "current folder and the run's parents); pass --data DIR"
        )
    return found


def review_rows(store, loaded, num_pieces: int) -> tuple[list[RollRow], str]:
    """The fixed records of the page (see the module docstring) and the split they come from."""
    from tunesmith.data.datasets.midi import PianoTaskRecords
    from tunesmith.engine.sampler import VALID_SEED
    from tunesmith.models.midi.task_eval import evenly_spaced, record_parts

    split = "valid" if store.select("valid") else "test"
    ids = evenly_spaced(store.select(split), num_pieces)
    rows: list[RollRow] = []
    if loaded.stage != "piano_task":
        return rows, split
    max_len = loaded.model.cfg.max_seq_len
    for piece in ids:
        records = PianoTaskRecords(
            store, [piece], loaded.tokenizer, loaded.piano_task, max_len, train=False, conditioner=loaded.conditioner
        )
        first = records.items[0][1] if records.items else None
        for index, (_, start, task) in enumerate(records.items):
            if start != first:
                continue
            prompt, target = record_parts(records.record((index, VALID_SEED)))
            name = str(store.pieces[piece].get("title") or store.pieces[piece].get("midi_filename") or piece)
            rows.append(RollRow(f"{piece}:{start}:{task}", piece, name, task, prompt, target))
    return rows, split


def _fresh_cache(base: Path, ref: CheckpointRef, rows: list) -> dict | None:
    """``ref``'s cached generations when they are of its current weights and hold every row."""
    path = base / ref.name / ROLLS_FILE
    if not path.is_file() or weights_changed(base / ref.name, ref):
        return None
    cached = json.loads(path.read_text())
    return cached if all(row.key in cached for row in rows) else None


def _generate(run_dir: Path, group: list[CheckpointRef], rows: list, device: str, index_only: bool,
              stats: ReviewStats) -> tuple[dict[str, Any], Path | None]:  # fmt: skip
    """What the weights of ``group`` generated for every row (cached in ``pianoroll.json``: target tokens of
    a task row, notes of a continuation) and the checkpoint's sample folder holding them (None: not generated,
    with ``index_only``). The other checkpoints of the group get the same files (links)."""
    base = run_dir / "samples" / REVIEW_DIR
    source, out = None, None
    for ref in group:  # a checkpoint of the group with a fresh cache holding every row
        out = _fresh_cache(base, ref, rows)
        if out is not None:
            source = ref
            stats.existing += len(rows)
            break
    if source is None:
        if index_only or not rows:
            return {}, None
        source = group[0]
        out = _generate_rows(source, rows, device, base / source.name)
        stats.generated += len(rows)
    if not index_only:
        _share(base, source, group, rows, stats)
    return out or {}, base / source.name


def _generate_rows(ref: CheckpointRef, rows: list, device: str, folder: Path) -> dict[str, Any]:
    """Generate every row with ``ref``'s weights; write ``pianoroll.json`` and a MIDI file per row."""
    import torch

    from tunesmith.fileio import atomic_write_text
    from tunesmith.models.midi.generation import SamplingConfig, generate_target
    from tunesmith.models.midi.loading import load_midi_model
    from tunesmith.models.midi.notes import write_midi

    loaded = load_midi_model(ref.folder, device=torch.device(device))
    tok = loaded.tokenizer
    greedy = SamplingConfig(temperature=0.0, seed=0)
    out: dict[str, Any] = {}
    prepare_output(folder, ref)
    for row in rows:
        if isinstance(row, ContinuationRow):
            out[row.key] = generate_continuation(loaded, row)
            made = notes_from_json(out[row.key])
        else:
            tokens = generate_target(loaded.model, tok, row.task, row.prompt, greedy, frame=row.target)
            out[row.key] = tokens.tolist()
            made = row_notes(tok, row, tokens)[2]
        write_midi(made, folder / f"{row_stem(row)}.mid")
    atomic_write_text(folder / ROLLS_FILE, json.dumps(out) + "\n")
    return out


def row_stem(row) -> str:
    """The file name (no suffix) of a row's generated notes in a checkpoint's sample folder."""
    return f"piece{row.piece}_{row.task}"


def _share(base: Path, source: CheckpointRef, group: list[CheckpointRef], rows: list, stats: ReviewStats) -> None:
    """Give every other checkpoint of ``group`` (identical weights) ``source``'s generations (hard links)."""
    from tunesmith.fileio import link_or_copy

    for ref in group:
        if ref.name == source.name or _fresh_cache(base, ref, rows) is not None:
            continue
        prepare_output(base / ref.name, ref)
        for name in [*(f"{row_stem(row)}.mid" for row in rows), ROLLS_FILE]:  # the cache last: complete
            if (base / source.name / name).is_file():
                link_or_copy(base / source.name / name, base / ref.name / name)
        stats.reused += len(rows)


def row_notes(tok, row: RollRow, generated: np.ndarray | None):
    """(prompt, target, generated or None) notes of a row. Velocity tasks: the target and generated notes are
    the prompt's notes with the true and the generated velocities."""
    from tunesmith.models.midi.tasks import VELOCITY_TASKS, merge_velocities
    from tunesmith.models.midi.tokenizer import VELOCITY

    prompt = tok.decode(row.prompt)
    if row.task in VELOCITY_TASKS:
        bare = row.prompt[tok.types_of(row.prompt) != VELOCITY]
        target = tok.decode(merge_velocities(tok, bare, row.target[tok.types_of(row.target) == VELOCITY]))
        made = None if generated is None else tok.decode(merge_velocities(tok, bare, generated))
        return prompt, target, made
    return prompt, tok.decode(row.target), None if generated is None else tok.decode(generated)


def _audio(folder: Path, name: str, notes, sf2: Path | None, samples_dir: Path) -> str:
    """An <audio> element of ``notes`` rendered by fluidsynth (written once), or "" without audio."""
    if sf2 is None or not len(notes):
        return ""
    from tunesmith.models.midi.notes import write_midi

    wav = folder / f"{name}.wav"
    if not wav.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        mid = folder / f"{name}.mid"
        if not mid.is_file():  # a checkpoint's generated row is written (and shared) when it is made
            write_midi(notes, mid)
        cmd = ["fluidsynth", "-ni", "-q", "-F", str(wav), "-r", "22050", str(sf2), str(mid)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as err:
            log.warning("fluidsynth failed on %s: %s", mid, err)
            return ""
    rel = wav.relative_to(samples_dir).as_posix()
    return f'<audio controls preload="none" src="{html.escape(rel)}"></audio>'


def _figure(svg: str, caption: str, audio: str = "") -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption>{audio}</figure>"


def metrics_for(history: list[dict], epoch: int | None) -> dict[str, float]:
    """The free-running metrics (``split/task/metric``) of the last evaluate record of ``epoch``."""
    records = [r for r in history if r.get("stage") == "evaluate" and r.get("epoch") == epoch]
    if not records:
        return {}
    return {k: float(v) for k, v in records[-1].items() if k.count("/") == 2 and isinstance(v, (int, float))}


def metrics_table(metrics: dict[str, float], tasks: list[str]) -> str:
    """HTML table: split, task, metric, model value, baselines (``baseline_*`` of the same split and task)."""
    if not metrics:
        return '<p class="muted">no free-running metrics in history.jsonl for this checkpoint\'s epoch</p>'
    rows = []
    splits = sorted({k.split("/")[0] for k in metrics}, key=lambda s: (s != "valid", s))
    for split in splits:
        for task in tasks:
            p = f"{split}/{task}/"
            mine = {k[len(p) :]: v for k, v in metrics.items() if k.startswith(p)}
            for metric, value in mine.items():
                if metric.startswith("baseline_") or metric in ("records", "notes"):
                    continue
                bare = metric.removeprefix("sampled_")
                if bare.endswith("_corr"):
                    base = "0 (any constant prediction)"
                else:
                    base = ", ".join(
                        f"{k.removeprefix('baseline_')} {v:.4g}"
                        for k, v in sorted(mine.items())
                        if k.startswith("baseline_") and k.endswith(f"_{bare}")
                    )
                label = f"{metric} (teacher-forced)" if metric == "loss" else metric
                rows.append(
                    f"<tr><td>{html.escape(split)}</td><td>{html.escape(task)}</td><td><code>{html.escape(label)}"
                    f'</code></td><td class="num">{value:.4g}</td><td>{html.escape(base)}</td></tr>'
                )
    return (
        '<table class="numbers metrics"><thead><tr><th>split</th><th>task</th><th>metric</th><th>model</th>'
        f"<th>baselines</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


@dataclasses.dataclass
class _Audio:
    """Where audio of the rows goes: fluidsynth's soundfont (None: no audio), the samples folder the page's
    links are relative to, and the folder of the prompt/target renderings."""

    sf2: Path | None
    samples_dir: Path
    truth_dir: Path

    def player(self, folder: Path, name: str, notes) -> str:
        return _audio(folder, name, notes, self.sf2, self.samples_dir)


def _task_row(row: RollRow, groups: list, generated: list, tok, audio: _Audio) -> str:
    """A piano-task row: prompt and true target, then each checkpoint's greedy target."""
    parts = [row_notes(tok, row, np.asarray(made[row.key]) if row.key in made else None) for made, _ in generated]
    prompt, target = parts[0][0], parts[0][1]  # rows exist only when there are checkpoints
    extent = roll_extent([prompt, target, *[p[2] for p in parts if p[2] is not None]])
    hidden = row.task == "velocity"
    truth_dir = audio.truth_dir / f"piece{row.piece}"
    truth = _figure(
        pianoroll_svg(prompt, extent, role="prompt", title=f"prompt: {row.name}", velocity_known=not hidden),
        f"prompt ({len(prompt)} notes{', velocities hidden' if hidden else ''})",
        audio.player(truth_dir, f"{row.task}_prompt", prompt),
    ) + _figure(
        pianoroll_svg(target, extent, role="target", title=f"target: {row.name}"),
        f"true target ({len(target)} notes)",
        audio.player(truth_dir, f"{row.task}_target", target),
    )
    cells = []
    for group, (_, _, made), (_, folder) in zip(groups, parts, generated, strict=True):
        if made is None or folder is None:
            cells.append('<td><div class="cell missing">not generated yet</div></td>')
            continue
        svg = pianoroll_svg(made, extent, role="generated", title=f"generated by {column_label(group)}")
        player = audio.player(folder, row_stem(row), made)
        cells.append(f'<td><div class="rolls">{_figure(svg, f"generated ({len(made)} notes)", player)}</div></td>')
    return (
        f'<tr><td class="prompt">{html.escape(row.name)}<div class="muted">{html.escape(row.task)}</div>'
        f'<div class="rolls">{truth}</div></td>{"".join(cells)}</tr>'
    )


def _continuation_row(row: ContinuationRow, groups: list, generated: list, audio: _Audio, prompt_tokens: int) -> str:
    """A pretrain-stage row: the prompt, then each checkpoint's sampled continuation drawn after it."""
    fulls = [notes_from_json(made[row.key]) if row.key in made else None for made, _ in generated]
    news = [None if full is None else new_notes(full, row.prompt) for full in fulls]
    extent = roll_extent([row.prompt, *[f for f in fulls if f is not None]])
    prompt_svg = pianoroll_svg(row.prompt, extent, role="prompt", title=f"prompt: {row.name}")
    prompt_fig = (
        f"<figure>{prompt_svg}<figcaption>{prompt_figure_caption(row, prompt_tokens)}</figcaption>"
        f"{audio.player(audio.truth_dir / f'piece{row.piece}', 'continuation_prompt', row.prompt)}</figure>"
    )
    cells = []
    for group, full, made, (cache, folder) in zip(groups, fulls, news, generated, strict=True):
        if full is None or made is None or folder is None:
            cells.append('<td><div class="cell missing">not generated yet</div></td>')
            continue
        svg = continuation_svg(row.prompt, made, extent, f"continued by {column_label(group)}")
        caption = continuation_caption(row, made, int(cache[row.key].get("repairs", 0)))
        player = audio.player(folder, row_stem(row), full)
        cells.append(f'<td><div class="rolls">{_figure(svg, caption, player)}</div></td>')
    return (
        f'<tr><td class="prompt">{html.escape(row.name)}<div class="muted">continuation</div>'
        f'<div class="rolls">{prompt_fig}</div></td>{"".join(cells)}</tr>'
    )


def review_midi_run(
    run_dir: Path,
    config: dict,
    *,
    epochs: str = "all",
    index_only: bool = False,
    num_pieces: int | None = None,
    data: Path | None = None,
    device: str = "cpu",
) -> ReviewResult:
    """Write ``RUN/samples/index.html`` for a MIDI run (see the module docstring)."""
    from tunesmith.data.midi_prepare import MidiNotesStore
    from tunesmith.fileio import atomic_write_text
    from tunesmith.models.midi.loading import load_midi_model
    from tunesmith.models.midi.task_eval import evenly_spaced
    from tunesmith.review.runner import _trained_epochs

    if num_pieces is not None and num_pieces < 1:
        raise UserError(f"--num-prompts={num_pieces}: must be at least 1")
    all_refs = list_checkpoints(run_dir)
    refs = select_checkpoints(all_refs, epochs)
    stats = ReviewStats()
    history = read_history(run_dir / "history.jsonl")
    groups = distinct_checkpoints(refs)
    rows: list = []  # RollRow (piano-task run) or ContinuationRow (pretrain-stage run)
    tasks: list[str] = []
    split = "valid"
    tok = None
    prompt_tokens = 0
    if groups:
        loaded = load_midi_model(groups[0][0].folder)
        tok = loaded.tokenizer
        tasks = list(loaded.piano_task.tasks) if loaded.stage == "piano_task" else []
        store = MidiNotesStore(_store_dir(run_dir, config, data))
        if tasks:
            rows, split = review_rows(store, loaded, num_pieces or DEFAULT_NUM_PIECES)
        else:  # a pretrain-stage run: continuations of the pieces' openings
            split = "valid" if store.select("valid") else "test"
            settings = generate_settings(config)
            prompt_tokens = settings["prompt_tokens"]
            pieces = evenly_spaced(store.select(split), num_pieces or DEFAULT_NUM_PIECES)
            rows = continuation_rows(store, loaded, pieces, settings)
    generated = [_generate(run_dir, g, rows, device, index_only, stats) for g in groups]
    sf2 = soundfont()
    samples_dir = run_dir / "samples"
    audio = _Audio(sf2, samples_dir, samples_dir / REVIEW_DIR / "midi_audio")
    head = "".join(
        f"<th>{html.escape(column_label(g))}<div class='muted'>{html.escape(step_note(g[0]))}</div></th>"
        for g in groups
    )
    body = [
        _continuation_row(row, groups, generated, audio, prompt_tokens)
        if isinstance(row, ContinuationRow)
        else _task_row(row, groups, generated, tok, audio)
        for row in rows
    ]
    if rows:
        first = "piece: prompt" if not tasks else "piece · task: prompt and true target"
        grid_html = (
            f'<div class="grid-wrap"><table class="grid pianorolls"><thead><tr><th>{first}'
            f"</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        )
    elif groups:
        grid_html = f'<p class="muted">no pieces in the {split} split of the data to draw</p>'
    else:
        grid_html = '<p class="muted">no checkpoints yet</p>'
    metric_html = "".join(
        f"<h3>{html.escape(column_label(g))}</h3>{metrics_table(metrics_for(history, g[0].epoch), tasks)}"
        for g in groups
    )
    if groups and not tasks:
        metric_html = (
            '<p class="muted">a pretrain-stage run has no piano tasks to measure free-running; its samples are the '
            "continuations below (fine-tune it with stage=piano_task for these tables)</p>"
        )
    figures = history_figures(history)
    figures.numbers = [n for n in figures.numbers if n.metric.count("/") != 2]  # in the per-checkpoint tables
    checkpoint_notes = [
        hidden_checkpoints_note(all_refs, refs, run_dir),
        pruned_checkpoints_note(all_refs, config, _trained_epochs(run_dir, history)),
    ]
    samples_notes = [
        f"The first note slice of {len({r.piece for r in rows})} pieces of the {split} split, every piano task of "
        "the run: the prompt the model is given, the true target and each checkpoint's greedy generation "
        "(generate_target, as generate-midi). Colour and opacity: velocity (soft pale blue → loud dark red)."
        if rows and tasks
        else samples_note(rows, split, prompt_tokens),
        "" if sf2 is not None else NO_AUDIO_NOTE,
    ]
    index = samples_dir / INDEX
    index.parent.mkdir(parents=True, exist_ok=True)
    page = _page(run_dir, figures, checkpoint_notes, samples_notes, grid_html, metric_html)
    atomic_write_text(index, page)
    return ReviewResult(index, "midi", [r.name for r in refs], stats, [])


def _page(run_dir: Path, figures, checkpoint_notes: list[str], samples_notes: list[str], grid_html: str,
          metric_html: str) -> str:  # fmt: skip
    from tunesmith import __version__
    from tunesmith.artifacts.runs import RUN_FILE, STATUS_FILE, read_json

    meta = read_json(run_dir / RUN_FILE) or {}
    status = read_json(run_dir / STATUS_FILE) or {}
    summary = _kv_table(
        [
            ("run folder", f"<code>{html.escape(str(run_dir))}</code>"),
            ("task / preset", html.escape(f"midi / {meta.get('preset', '?')}")),
            ("signature", f"<code>{html.escape(str(meta.get('signature', '?')))}</code>"),
            ("status", html.escape(f"{status.get('state', '?')}, epoch {status.get('epoch', 0)}")),
        ]
    )
    charts = ""
    if figures.charts:
        charts = '<div class="charts">' + "".join(_chart_figure(c) for c in figures.charts) + "</div>"
    charts += _numbers_table(figures.numbers, {}) or ""
    if not (figures.charts or figures.numbers):
        charts += '<p class="muted">no history yet</p>'
    title = f"tunesmith review · midi {meta.get('signature', run_dir.name)}"
    return f"""{html_head(title, EXTRA_CSS)}
<body>
<h1>{html.escape(title)}</h1>
<p class="muted">The same fixed eval records at every checkpoint: piano rolls, free-running metrics, curves.</p>
<h2>Run</h2>
{summary}
<h2>Curves</h2>
{charts}
<h2>Free-running metrics per checkpoint</h2>
<p class="note">Measured by the evaluate stage during training (history.jsonl): the model's task done token by
token, beside constant baselines on the same records.</p>
{metric_html or '<p class="muted">no checkpoints yet</p>'}
<h2>Piano rolls</h2>
{_paragraphs(checkpoint_notes, "note checkpoints")}{_paragraphs(samples_notes, "note")}
{grid_html}
<footer>Made by tunesmith {html.escape(__version__)}. Update with
<code>tunesmith review {html.escape(str(run_dir))}</code>; files are under <code>samples/{REVIEW_DIR}/</code>.</footer>
</body>
</html>
"""
