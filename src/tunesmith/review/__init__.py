"""`tunesmith review RUN`: the same prompts and seeds at every checkpoint, on one offline HTML page.

For an LM run, every selected checkpoint (numbered ``epoch_NNNN``, ``best``, ``last``) generates the
same prompt items with the same seeds into ``RUN/samples/review/<checkpoint>/<item id>.wav``; for a
codec run, every checkpoint reconstructs the same fixed valid clips (originals beside reconstructions,
with SI-SNR). Each wav gets a mel-spectrogram PNG, and ``RUN/samples/index.html`` shows the grid
(prompts × checkpoints, each cell an ``<audio>`` player and its spectrogram), the loss/metric curves
of ``history.jsonl`` as inline SVG and the run's config delta. The page is self-contained and works
offline: relative links only, styles inlined, no script.

Resumable and incremental: a sample whose file exists is not generated again. Each checkpoint folder
records the sha256 of the weights it was made with (``source.json``); when ``last`` (or a re-saved
``best``) has new weights its stale samples are replaced, and checkpoints with identical weights (``best``
and the numbered checkpoint it was copied from) share files instead of generating twice.

Modules: ``images`` (mel spectrogram → PNG), ``charts`` (history.jsonl → SVG charts, single measurements as
numbers), ``checkpoints`` (listing, selecting, per-checkpoint sample folders), ``run_config`` (a run's task and
config), ``grid`` (the sample grid, one column per distinct checkpoint), ``lm_samples`` and ``codec_samples``
(what each kind of run is reviewed on), ``audio_samples`` (the generation loop of LM and tts reviews),
``baseline`` (an LM's unigram cross-entropy), ``notes`` (hidden checkpoints, clip sets, baselines in words),
``page`` (the HTML), and ``runner`` (``review_run``).
The subcommand is ``tunesmith.commands.review``.
"""

from __future__ import annotations

from tunesmith.review.baseline import UnigramBaseline, code_counts, lm_unigram_baseline, unigram_cross_entropy
from tunesmith.review.charts import (
    MAX_CHARTS,
    PALETTE,
    Baseline,
    Chart,
    Figures,
    Number,
    Series,
    format_step,
    format_value,
    history_charts,
    history_figures,
    nice_ticks,
    read_history,
    svg_chart,
    tick_labels,
)
from tunesmith.review.checkpoints import (
    REVIEW_DIR,
    SOURCE_FILE,
    CheckpointRef,
    ReviewStats,
    list_checkpoints,
    prepare_output,
    select_checkpoints,
)
from tunesmith.review.codec_samples import codec_clips, codec_grid, reconstruct_codec_samples
from tunesmith.review.grid import Cell, Grid, column_label, distinct_checkpoints
from tunesmith.review.images import MEL_SUFFIX, colorize, ensure_mel_png, mel_image, png_bytes, write_mel_png
from tunesmith.review.lm_samples import (
    DEFAULT_NUM_PROMPTS,
    PROMPTS_FILE,
    default_prompt_lines,
    generate_lm_samples,
    generation_defaults,
    lm_grid,
    review_prompts,
)
from tunesmith.review.page import PageNotes, render_page
from tunesmith.review.run_config import resolve_relative, run_task
from tunesmith.review.runner import INDEX, ReviewResult, review_run

__all__ = [
    "DEFAULT_NUM_PROMPTS",
    "INDEX",
    "MAX_CHARTS",
    "MEL_SUFFIX",
    "PALETTE",
    "PROMPTS_FILE",
    "Baseline",
    "Figures",
    "Number",
    "PageNotes",
    "UnigramBaseline",
    "REVIEW_DIR",
    "SOURCE_FILE",
    "Cell",
    "Chart",
    "CheckpointRef",
    "Grid",
    "ReviewResult",
    "ReviewStats",
    "Series",
    "code_counts",
    "codec_clips",
    "column_label",
    "codec_grid",
    "colorize",
    "default_prompt_lines",
    "distinct_checkpoints",
    "format_step",
    "format_value",
    "ensure_mel_png",
    "generate_lm_samples",
    "generation_defaults",
    "history_charts",
    "history_figures",
    "lm_unigram_baseline",
    "list_checkpoints",
    "lm_grid",
    "mel_image",
    "nice_ticks",
    "png_bytes",
    "prepare_output",
    "read_history",
    "reconstruct_codec_samples",
    "render_page",
    "resolve_relative",
    "review_prompts",
    "review_run",
    "run_task",
    "select_checkpoints",
    "svg_chart",
    "tick_labels",
    "unigram_cross_entropy",
    "write_mel_png",
]
