"""The review page of a MIDI run: for a few fixed pieces of the eval split and each piano task of the run,
piano rolls of the task's prompt, the true target and each selected checkpoint's generated target (greedy,
through :func:`~tunesmith.models.midi.generation.generate_target`, as ``generate-midi`` and the free-running
evaluation decode), each checkpoint's free-running metrics with their baselines (read from ``history.jsonl``),
the loss curves, and audio players where ``fluidsynth`` and a General MIDI soundfont are installed.

The records are those of the evaluation: the first note slice of ``num_pieces`` pieces spread evenly over the
``valid`` split (``test`` when it has none), seeded as the evaluate stage seeds them. Generated tokens are kept
in ``RUN/samples/review/<checkpoint>/pianoroll.json`` (stamped with the weights, like the audio samples).
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import shutil
import subprocess
from pathlib import Path

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


def _generate(run_dir: Path, group: list[CheckpointRef], rows: list[RollRow], device: str, index_only: bool,
              stats: ReviewStats) -> tuple[dict[str, list[int]], Path | None]:  # fmt: skip
    """The generated target tokens of every row by the weights of ``group`` (cached in ``pianoroll.json``) and
    the checkpoint's sample folder holding them (None: not generated, with ``index_only``)."""
    base = run_dir / "samples" / REVIEW_DIR
    for ref in group:  # a checkpoint of the group with a fresh cache holding every row
        path = base / ref.name / ROLLS_FILE
        if path.is_file() and not weights_changed(base / ref.name, ref):
            cached = json.loads(path.read_text())
            if all(row.key in cached for row in rows):
                stats.existing += len(rows)
                return cached, base / ref.name
    if index_only or not rows:
        return {}, None
    import torch

    from tunesmith.fileio import atomic_write_text
    from tunesmith.models.midi.generation import SamplingConfig, generate_target
    from tunesmith.models.midi.loading import load_midi_model

    ref = group[0]
    loaded = load_midi_model(ref.folder, device=torch.device(device))
    greedy = SamplingConfig(temperature=0.0, seed=0)
    out = {
        row.key: generate_target(
            loaded.model, loaded.tokenizer, row.task, row.prompt, greedy, num_velocities=len(row.target)
        ).tolist()
        for row in rows
    }
    stats.generated += len(rows)
    prepare_output(base / ref.name, ref)
    atomic_write_text(base / ref.name / ROLLS_FILE, json.dumps(out) + "\n")
    return out, base / ref.name


def row_notes(tok, row: RollRow, generated: np.ndarray | None):
    """(prompt, target, generated or None) notes of a row. Velocity tasks: the target and generated notes are
    the prompt's notes with the true and the generated velocities."""
    from tunesmith.models.midi.tasks import VELOCITY_TASKS, merge_velocities
    from tunesmith.models.midi.tokenizer import VELOCITY

    prompt = tok.decode(row.prompt)
    if row.task in VELOCITY_TASKS:
        bare = row.prompt[tok.types_of(row.prompt) != VELOCITY]
        target = tok.decode(merge_velocities(tok, bare, row.target))
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
        mid = write_midi(notes, folder / f"{name}.mid")
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
    from tunesmith.review.runner import _trained_epochs

    if num_pieces is not None and num_pieces < 1:
        raise UserError(f"--num-prompts={num_pieces}: must be at least 1")
    all_refs = list_checkpoints(run_dir)
    refs = select_checkpoints(all_refs, epochs)
    stats = ReviewStats()
    history = read_history(run_dir / "history.jsonl")
    groups = distinct_checkpoints(refs)
    rows: list[RollRow] = []
    tasks: list[str] = []
    split = "valid"
    tok = None
    if groups:
        loaded = load_midi_model(groups[0][0].folder)
        tok = loaded.tokenizer
        tasks = list(loaded.piano_task.tasks) if loaded.stage == "piano_task" else []
        if tasks:  # a pretrain-stage run has no task records to draw
            store = MidiNotesStore(_store_dir(run_dir, config, data))
            rows, split = review_rows(store, loaded, num_pieces or DEFAULT_NUM_PIECES)
    generated = [_generate(run_dir, g, rows, device, index_only, stats) for g in groups]
    sf2 = soundfont()
    samples_dir = run_dir / "samples"
    audio_dir = samples_dir / REVIEW_DIR / "midi_audio"
    head = "".join(
        f"<th>{html.escape(column_label(g))}<div class='muted'>{html.escape(step_note(g[0]))}</div></th>"
        for g in groups
    )
    body = []
    for row in rows:
        parts = [row_notes(tok, row, np.asarray(made[row.key]) if row.key in made else None) for made, _ in generated]
        prompt, target = parts[0][0], parts[0][1]  # rows exist only when there are checkpoints
        extent = roll_extent([prompt, target, *[p[2] for p in parts if p[2] is not None]])
        hidden = row.task == "velocity"
        truth = _figure(
            pianoroll_svg(prompt, extent, role="prompt", title=f"prompt: {row.name}", velocity_known=not hidden),
            f"prompt ({len(prompt)} notes{', velocities hidden' if hidden else ''})",
            _audio(audio_dir / f"piece{row.piece}", f"{row.task}_prompt", prompt, sf2, samples_dir),
        ) + _figure(
            pianoroll_svg(target, extent, role="target", title=f"target: {row.name}"),
            f"true target ({len(target)} notes)",
            _audio(audio_dir / f"piece{row.piece}", f"{row.task}_target", target, sf2, samples_dir),
        )
        cells = []
        for group, (_, _, made), (_, folder) in zip(groups, parts, generated, strict=True):
            if made is None or folder is None:
                cells.append('<td><div class="cell missing">not generated yet</div></td>')
                continue
            svg = pianoroll_svg(made, extent, role="generated", title=f"generated by {column_label(group)}")
            audio = _audio(folder, f"piece{row.piece}_{row.task}", made, sf2, samples_dir)
            cells.append(f'<td><div class="rolls">{_figure(svg, f"generated ({len(made)} notes)", audio)}</div></td>')
        body.append(
            f'<tr><td class="prompt">{html.escape(row.name)}<div class="muted">{html.escape(row.task)}</div>'
            f'<div class="rolls">{truth}</div></td>{"".join(cells)}</tr>'
        )
    if rows:
        grid_html = (
            f'<div class="grid-wrap"><table class="grid pianorolls"><thead><tr><th>piece · task: prompt and true '
            f"target</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        )
    elif groups and not tasks:
        grid_html = (
            '<p class="muted">a pretrain-stage run: piano rolls are drawn for runs fine-tuned on piano tasks</p>'
        )
    else:
        grid_html = '<p class="muted">no checkpoints yet</p>'
    metric_html = "".join(
        f"<h3>{html.escape(column_label(g))}</h3>{metrics_table(metrics_for(history, g[0].epoch), tasks)}"
        for g in groups
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
        if rows
        else "",
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
