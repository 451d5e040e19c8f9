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

Modules: ``images`` (mel spectrogram → PNG), ``charts`` (history.jsonl → SVG), ``checkpoints`` (listing,
selecting, per-checkpoint sample folders), ``run_config`` (a run's task and config), ``grid`` (the sample
grid), ``lm_samples`` and ``codec_samples`` (what each kind of run is reviewed on), ``page`` (the HTML),
and ``runner`` (``review_run``). The subcommand is ``tunesmith.commands.review``.
"""

from __future__ import annotations

from tunesmith.review.charts import (
    MAX_CHARTS,
    PALETTE,
    Chart,
    Series,
    history_charts,
    nice_ticks,
    read_history,
    svg_chart,
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
from tunesmith.review.grid import Cell, Grid
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
from tunesmith.review.page import render_page
from tunesmith.review.run_config import resolve_relative, run_task
from tunesmith.review.runner import INDEX, ReviewResult, review_run

__all__ = [
    "DEFAULT_NUM_PROMPTS",
    "INDEX",
    "MAX_CHARTS",
    "MEL_SUFFIX",
    "PALETTE",
    "PROMPTS_FILE",
    "REVIEW_DIR",
    "SOURCE_FILE",
    "Cell",
    "Chart",
    "CheckpointRef",
    "Grid",
    "ReviewResult",
    "ReviewStats",
    "Series",
    "codec_clips",
    "codec_grid",
    "colorize",
    "default_prompt_lines",
    "ensure_mel_png",
    "generate_lm_samples",
    "generation_defaults",
    "history_charts",
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
    "write_mel_png",
]
