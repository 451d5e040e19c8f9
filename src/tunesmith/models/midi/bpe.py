"""A learned byte-pair-encoding (BPE) tokenizer over a MIDI tokenizer's base tokens.

``tokenizer.bpe_vocab_size=N`` (0: off) learns ``N - base vocabulary`` merges on the base token sequences
of the training split (:func:`learn_bpe`) and wraps the base tokenizer in a :class:`BpeTokenizer`:

- **Words.** Merges never cross a note event: a base sequence is cut into words, each the time tokens
  before one event plus the event (``[TimeShift_k ...] Pitch Velocity Duration`` or a pedal token with
  the seconds tokenizer; ``[Bar] [Position] Pitch Velocity Duration`` with REMI). A word ends after a
  duration or pedal token; special tokens (BOS, EOS, SEP, task, reserved and conditioning tokens) are
  words of their own and are never merged. So a merged token is a piece of one note event, and at
  best a note costs one token.
- **Learning** (:func:`learn_merges`) is classic BPE over the distinct words weighted by their counts:
  the most frequent adjacent pair becomes a new token, ties broken by the smaller ``(left, right)`` ids,
  until the vocabulary is full or no pair occurs ``min_count`` times. Deterministic for a given corpus.
- **Encoding** merges each word by applying, in turn, the earliest-learned merge present (all its
  non-overlapping occurrences, left to right), until none applies. **Decoding** expands each token to
  its base tokens and decodes those with the base tokenizer, so ``expand(encode(x)) == base.encode(x)``.
- **Ids.** Base tokens keep their ids; merge ``k`` is token ``base.vocab_size + k``, named by its base
  tokens joined with ``+`` and of type ``merged``. The description (``describe()``, stored in every
  checkpoint as ``extra.tokenizer_desc``) carries the base tokenizer's description and the merges, so
  :func:`~tunesmith.models.midi.tokenizer.tokenizer_from_desc` rebuilds it exactly.
- **Grammar.** A merged token is allowed after a token of class ``c`` iff its first base token is, and
  its own base tokens follow each other by the base grammar; the state after it is the class of its last
  base token. That is the base grammar's own question (which tokens may follow the previous token's
  class) for a longer vocabulary, so :class:`~tunesmith.models.midi.tokenizer.TokenGrammar` holds it
  unchanged: one mask row per class, computed once and cached; constrained decoding needs no repair.
- **Piano tasks.** Partition tasks (and continuation) work on merged tokens. Velocity tasks address one
  velocity token per note, which merged tokens hide: they are refused (:func:`require_base_tokens`).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np

from tunesmith.errors import UserError
from tunesmith.models.midi.notes import Notes
from tunesmith.models.midi.tokenizer import (
    GRAMMAR_CLASSES,
    MERGED,
    MidiTokenizer,
    TokenGrammar,
)

BPE_DESC_VERSION = 1
MERGE_SEP = "+"
MIN_PAIR_COUNT = 2  # a pair seen fewer times in the corpus is never merged
# grammar classes after which a word ends, and classes that are always a word of their own
_END_CLASSES = np.asarray([GRAMMAR_CLASSES.index(c) for c in ("duration", "pedal")])
_SINGLE_CLASSES = np.asarray([GRAMMAR_CLASSES.index(c) for c in ("boundary", "eos", "never")])
_CACHE_LIMIT = 1 << 20  # distinct words remembered by encode


def word_starts(token_class: np.ndarray) -> np.ndarray:
    """Start index of each word of a base sequence, from its tokens' grammar classes ``[T]`` → int64 ``[W]``."""
    n = len(token_class)
    if n == 0:
        return np.zeros(0, np.int64)
    single = np.isin(token_class, _SINGLE_CLASSES)
    end = np.isin(token_class, _END_CLASSES)
    start = np.zeros(n, bool)
    start[0] = True
    start[1:] |= single[1:] | single[:-1] | end[:-1]
    return np.flatnonzero(start)


def count_words(sequences: Iterable[np.ndarray], base: MidiTokenizer) -> Counter:
    """Distinct words of base token sequences (each ``[T]`` int) → how often each occurs; one-token words
    (specials, lone tokens) are left out: they hold no pair."""
    token_class = base.grammar().token_class
    words: Counter = Counter()
    for seq in sequences:
        seq = np.asarray(seq, np.int64)
        if not len(seq):
            continue
        bounds = [*word_starts(token_class[seq]).tolist(), len(seq)]
        toks = seq.tolist()
        words.update(tuple(toks[s:e]) for s, e in zip(bounds[:-1], bounds[1:], strict=True) if e - s > 1)
    return words


def _replace(seq: list[int], a: int, b: int, new: int) -> list[int]:
    """``seq`` with every non-overlapping ``a b`` (left to right) replaced by ``new``."""
    out: list[int] = []
    i, n = 0, len(seq)
    while i < n:
        if i + 1 < n and seq[i] == a and seq[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out


def learn_merges(
    words: dict[tuple[int, ...], int], first_id: int, num_merges: int, *, min_count: int = MIN_PAIR_COUNT
) -> list[tuple[int, int]]:
    """BPE merges over ``words`` (distinct token tuples → count): merge ``k`` joins the pair ``(left, right)``
    into token ``first_id + k``. Each step takes the pair with the highest count (ties: the smallest
    ``(left, right)``); stops after ``num_merges`` or when no pair occurs ``min_count`` times."""
    keys = sorted(words)  # a fixed order, whatever order the counts came in
    seqs = [list(w) for w in keys]
    freqs = [int(words[w]) for w in keys]
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, seq in enumerate(seqs):
        for pair in zip(seq, seq[1:], strict=False):
            counts[pair] += freqs[wi]
            where[pair].add(wi)
    heap = [(-c, a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while heap and len(merges) < num_merges:
        neg, a, b = heapq.heappop(heap)
        if counts.get((a, b), 0) != -neg:
            continue  # stale entry: the pair's count changed since (a newer entry holds it)
        if -neg < min_count:
            break
        new = first_id + len(merges)
        merges.append((a, b))
        changed: set[tuple[int, int]] = set()
        for wi in sorted(where.pop((a, b))):
            seq, f = seqs[wi], freqs[wi]
            merged = _replace(seq, a, b, new)
            if len(merged) == len(seq):
                continue  # the word lost this pair to an earlier merge
            for pair in zip(seq, seq[1:], strict=False):
                counts[pair] -= f
                changed.add(pair)
            for pair in zip(merged, merged[1:], strict=False):
                counts[pair] += f
                where[pair].add(wi)
                changed.add(pair)
            seqs[wi] = merged
        counts.pop((a, b), None)
        changed.discard((a, b))
        for pair in sorted(changed):
            c = counts.get(pair, 0)
            if c > 0:
                heapq.heappush(heap, (-c, *pair))
            else:
                counts.pop(pair, None)
                where.pop(pair, None)
    return merges


class BpeTokenizer(MidiTokenizer):
    """A base tokenizer (seconds or REMI) plus learned merges (see the module docstring)."""

    def __init__(self, base: MidiTokenizer, merges: Iterable[Iterable[int]]) -> None:
        if isinstance(base, BpeTokenizer):
            raise UserError("a BPE tokenizer's base must be a plain tokenizer (seconds or REMI)")
        self.base = base
        self.merges: list[tuple[int, int]] = []
        base_class = base.grammar().token_class
        single = set(_SINGLE_CLASSES.tolist())
        expansions: list[tuple[int, ...]] = [(i,) for i in range(base.vocab_size)]
        for k, pair in enumerate(merges):
            a, b = (int(x) for x in pair)
            size = len(expansions)
            if not (0 <= a < size and 0 <= b < size):
                raise UserError(f"BPE merge {k} ({a}, {b}) names a token outside 0..{size - 1}")
            joined = expansions[a] + expansions[b]
            if any(int(base_class[t]) in single for t in joined):
                raise UserError(f"BPE merge {k} joins a special token: {[base.vocab[t] for t in joined]}")
            self.merges.append((a, b))
            expansions.append(joined)
        self._expansions = expansions
        lengths = np.asarray([len(e) for e in expansions], np.int64)
        self._exp_len = lengths
        self._exp_start = np.cumsum(lengths) - lengths
        self._exp_flat = np.asarray([t for e in expansions for t in e], np.int64)
        self._first = base.vocab_size
        self._rank = {pair: k for k, pair in reversed(list(enumerate(self.merges)))}  # first-learned wins
        self._cache: dict[tuple[int, ...], tuple[int, ...]] = {}
        names = list(base.vocab) + [MERGE_SEP.join(base.vocab[t] for t in e) for e in expansions[self._first :]]
        types = np.concatenate([base.token_types, np.full(len(self.merges), MERGED, np.int8)])
        super().__init__(names, types)
        self.pitch_min, self.pitch_max = base.pitch_min, base.pitch_max

    # -- identity
    @property
    def num_merges(self) -> int:
        return len(self.merges)

    def id(self, name: str) -> int:  # base names (and REMI's aliases) first
        try:
            return self.base.id(name)
        except KeyError:
            return super().id(name)

    def describe(self) -> dict:
        return {
            "kind": "bpe",
            "version": BPE_DESC_VERSION,
            "base": self.base.describe(),
            "merges": [[a, b] for a, b in self.merges],
            "vocab_size": self.vocab_size,
        }

    # -- merged ↔ base tokens
    def expansion(self, token: int) -> tuple[int, ...]:
        """The base tokens of one token (itself for a base token)."""
        return self._expansions[int(token)]

    def expand(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens ``[T]`` → their base tokens ``[T']`` (int64), T' >= T."""
        tokens = np.asarray(tokens, np.int64)
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"token ids outside 0..{self.vocab_size - 1}")
        lengths = self._exp_len[tokens]
        first = np.cumsum(lengths) - lengths
        index = np.repeat(self._exp_start[tokens] - first, lengths) + np.arange(int(lengths.sum()))
        return self._exp_flat[index]

    def apply(self, base_tokens: np.ndarray) -> np.ndarray:
        """Base tokens ``[T]`` (specials allowed) → merged tokens ``[T']`` (int64), T' <= T."""
        tokens = np.asarray(base_tokens, np.int64)
        if not len(tokens) or not self.merges:
            return tokens.copy()
        if tokens.min() < 0 or tokens.max() >= self._first:
            raise ValueError(f"apply() takes base token ids (0..{self._first - 1})")
        bounds = [*word_starts(self.base.grammar().token_class[tokens]).tolist(), len(tokens)]
        toks = tokens.tolist()
        out: list[int] = []
        cache = self._cache
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            if e - s == 1:
                out.append(toks[s])
                continue
            word = tuple(toks[s:e])
            merged = cache.get(word)
            if merged is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                merged = cache[word] = self._merge_word(word)
            out.extend(merged)
        return np.asarray(out, np.int64)

    def _merge_word(self, word: tuple[int, ...]) -> tuple[int, ...]:
        seq, rank = list(word), self._rank
        while len(seq) > 1:
            best = min((rank.get(pair, len(rank)) for pair in zip(seq, seq[1:], strict=False)), default=len(rank))
            if best == len(rank):
                break
            a, b = self.merges[best]
            seq = _replace(seq, a, b, self._first + best)
        return tuple(seq)

    # -- the tokenizer interface
    def encode(self, notes: Notes, origin: float = 0.0) -> np.ndarray:
        return self.apply(self.base.encode(notes, origin))

    def decode_with_report(self, tokens: np.ndarray) -> tuple[Notes, int]:
        return self.base.decode_with_report(self.expand(tokens))

    def grammar(self) -> TokenGrammar:
        """The base grammar over the merged vocabulary (see the module docstring); built once."""
        cached = getattr(self, "_grammar", None)
        if cached is None:
            g = self.base.grammar()
            n_base = self.base.vocab_size
            token_class = np.empty(self.vocab_size, np.int64)
            token_class[:n_base] = g.token_class
            follows = np.zeros((len(g.open), self.vocab_size), bool)
            follows[:, :n_base] = g.follows
            for k in range(self.num_merges):
                exp = np.asarray(self._expansions[n_base + k], np.int64)
                token_class[n_base + k] = g.token_class[exp[-1]]
                if bool(g.follows[g.token_class[exp[:-1]], exp[1:]].all()):
                    follows[:, n_base + k] = g.follows[:, exp[0]]
            cached = self._grammar = TokenGrammar(token_class, follows, g.open.copy())
        return cached


def learn_bpe(
    base: MidiTokenizer, sequences: Iterable[np.ndarray], vocab_size: int, *, min_count: int = MIN_PAIR_COUNT
) -> BpeTokenizer:
    """A :class:`BpeTokenizer` of at most ``vocab_size`` tokens learned on base token ``sequences`` (the
    training split's pieces, each ``[T]``). Fewer merges when the corpus has no more pairs seen
    ``min_count`` times."""
    if vocab_size <= base.vocab_size:
        raise UserError(
            f"tokenizer.bpe_vocab_size={vocab_size}: must exceed the base vocabulary ({base.vocab_size} tokens), "
            "or be 0 for no BPE"
        )
    words = count_words(sequences, base)
    merges = learn_merges(words, base.vocab_size, vocab_size - base.vocab_size, min_count=min_count)
    return BpeTokenizer(base, merges)


def bpe_from_desc(desc: dict, base: MidiTokenizer) -> BpeTokenizer:
    """Rebuild a :class:`BpeTokenizer` from its description (``base``: the rebuilt ``desc["base"]``)."""
    if desc.get("version", 0) > BPE_DESC_VERSION:
        raise UserError(f"BPE tokenizer description version {desc['version']} is newer than this tunesmith supports")
    merges = desc.get("merges")
    if not isinstance(merges, list) or any(not isinstance(m, list | tuple) or len(m) != 2 for m in merges):
        raise UserError("BPE tokenizer description: 'merges' must be a list of [left, right] token id pairs")
    return BpeTokenizer(base, merges)


def require_base_tokens(tok: MidiTokenizer, task: str) -> None:
    """UserError when ``task`` (a velocity task: one velocity token per note) meets merged tokens."""
    if isinstance(tok, BpeTokenizer):
        raise UserError(
            f"piano task {task!r} predicts one velocity token per note, which a BPE tokenizer merges with "
            "the notes' other tokens; train velocity tasks with tokenizer.bpe_vocab_size=0 (partition tasks "
            "and continuation work with BPE)"
        )


def compression(tok: BpeTokenizer, sequences: Iterable[np.ndarray]) -> tuple[int, int]:
    """(base tokens, merged tokens) over base token ``sequences``: their ratio is the length reduction."""
    base = merged = 0
    for seq in sequences:
        base += len(seq)
        merged += len(tok.apply(seq))
    return base, merged
