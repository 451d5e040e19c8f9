"""Experiments at cluster scale: grid files, their runs' states, and the launchers that run them.

``grid`` reads a grid file (a base ``tunesmith train`` command and override combinations), ``plan``
turns it into runs with the signatures ``tunesmith train`` would give them, ``state`` tells what each
run is doing (its folder's status.json and launch.json), ``local`` runs them on this machine (one
after another, or N at once with one GPU each), ``submit`` sends them to Slurm (or submitit's local
executor) as requeueable jobs (``job``), and ``compare`` sets runs side by side.

Every job runs ``python -m tunesmith train ...``: the same code, the same run folder and the same exact
resume as a hand-typed command.
"""
