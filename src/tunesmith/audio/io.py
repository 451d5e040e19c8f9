"""Audio decoding, resampling, channel conversion and writing (atomically, through tunesmith.fileio).

Arrays are float32 ``[C, T]`` (channels first, like torch audio) in ``[-1, 1]``.
Decoding uses soundfile (libsndfile: wav, flac, aiff, ogg/vorbis, opus, mp3) where it can and
PyAV (ffmpeg: m4a/aac, wma, webm, ... and anything libsndfile refuses) otherwise; the format is
sniffed from the content, so a file with a wrong extension still decodes. Resampling is soxr HQ.

Long files are read with :func:`stream_audio`, which yields blocks and never holds the whole
decoded file in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError
from tunesmith.fileio import atomic_path

# Formats whose headers give an exact frame count, so a shortfall means the file is truncated.
# (libsndfile reports the frames actually present for WAV, so WAV's header is read by _wav_data_frames.)
_EXACT_LENGTH_FORMATS = frozenset({"WAV", "WAVEX", "FLAC"})
_WRITE_SUBTYPES = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}
DEFAULT_BLOCK_SECONDS = 5.0


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: native sample rate (Hz), channels, frames (None when unknown)."""

    sample_rate: int
    channels: int
    frames: int | None
    backend: str  # "soundfile" or "pyav"
    format: str  # container/codec name as the backend reports it

    @property
    def duration(self) -> float | None:
        """Declared duration in seconds, or None when the container does not say."""
        return None if self.frames is None else self.frames / self.sample_rate

    @property
    def exact_length(self) -> bool:
        """True when ``frames`` is exact (PCM/FLAC headers), not a bitrate estimate."""
        return self.backend == "soundfile" and self.format in _EXACT_LENGTH_FORMATS


# --------------------------------------------------------------------------- conversions


def convert_channels(wav: np.ndarray, channels: int) -> np.ndarray:
    """``[C, T]`` → ``[channels, T]``: mean for mono, copy of mono to all, else the first channels."""
    have = wav.shape[0]
    if channels < 1:
        raise UserError(f"channels must be at least 1, got {channels}")
    if have == channels:
        return wav
    if channels == 1:
        weights = np.full(have, 1.0 / have, np.float32)
        if wav.T.flags.c_contiguous:  # frames-first data seen through .T: one BLAS pass (numpy's mean is slow here)
            return (wav.T @ weights)[None]
        return (weights @ wav)[None]
    if have == 1:
        return np.repeat(wav, channels, axis=0)
    if have > channels:
        return wav[:channels]
    raise UserError(f"cannot make {channels} channels from {have}; use --channels 1 or {have}")


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample ``[C, T]`` float32 with soxr HQ; returns ``[C, round(T * to_rate / from_rate)]``."""
    if from_rate == to_rate:
        return wav
    import soxr

    out = soxr.resample(np.ascontiguousarray(wav.T), from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def _as_channels_first(wav: Any) -> np.ndarray:
    """np.ndarray or torch.Tensor, ``[C, T]`` or ``[T]`` → float32 ``[C, T]`` numpy."""
    if hasattr(wav, "detach"):  # torch.Tensor without importing torch
        wav = wav.detach().to("cpu").float().numpy()
    wav = np.asarray(wav)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise UserError(f"audio must be [channels, samples] or [samples], got shape {tuple(wav.shape)}")
    if wav.shape[0] > 64 and wav.shape[1] <= 64:
        raise UserError(f"audio of shape {tuple(wav.shape)} looks like [samples, channels]; pass [channels, samples]")
    return wav.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- probing


def _check_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes)")


def probe_audio(path: str | Path) -> AudioInfo:
    """Read the header of ``path`` (no decoding). UserError when neither backend can open it."""
    path = Path(path)
    _check_file(path)
    import soundfile as sf

    try:
        info = sf.info(str(path))
        frames = int(info.frames) or None
        if info.format in ("WAV", "WAVEX"):
            frames = _wav_data_frames(path) or frames
        return AudioInfo(int(info.samplerate), int(info.channels), frames, "soundfile", info.format)
    except Exception as sf_err:  # libsndfile refuses: try ffmpeg
        try:
            return _probe_pyav(path)
        except UserError:
            raise
        except Exception as av_err:
            raise _undecodable(path, sf_err, av_err) from None


def _wav_data_frames(path: Path) -> int | None:
    """Frames the RIFF header's ``data`` chunk declares (None if unknown, e.g. a streamed WAV)."""
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(size + (size & 1))
                if len(fmt) >= 14:
                    block_align = struct.unpack("<H", fmt[12:14])[0]
            elif cid == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + (size & 1), 1)


def _probe_pyav(path: Path) -> AudioInfo:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise UserError(f"{path}: has no audio stream (not an audio file?)")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        if rate <= 0:
            raise UserError(f"{path}: audio stream has no sample rate")
        frames = None
        if stream.duration is not None and stream.time_base is not None:
            frames = round(float(stream.duration * stream.time_base) * rate)
        elif container.duration is not None:
            frames = round(container.duration / 1_000_000 * rate)
        channels = int(stream.codec_context.channels or len(stream.layout.channels))
        return AudioInfo(rate, channels, frames or None, "pyav", container.format.name)


def _undecodable(path: Path, sf_err: BaseException, av_err: BaseException) -> UserError:
    first = str(av_err).strip().splitlines()[0] if str(av_err).strip() else type(av_err).__name__
    return UserError(
        f"{path}: cannot decode audio (soundfile: {str(sf_err).strip() or type(sf_err).__name__}; "
        f"ffmpeg: {first}). Is it an audio file? Convert it to wav/flac/mp3 or remove it."
    )


# --------------------------------------------------------------------------- decoding


def _blocks_soundfile(path: Path, block_frames: int) -> Iterator[np.ndarray]:
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        while True:
            block = f.read(block_frames, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                return
            yield block.T  # a [C, n] view: downmixing reads it in place, soxr gets the contiguous original back


def _blocks_pyav(path: Path) -> Iterator[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        to_float = av.AudioResampler(format="fltp")  # keeps layout and rate, gives planar float32
        for frame in container.decode(stream):
            for converted in to_float.resample(frame):
                yield converted.to_ndarray().astype(np.float32, copy=False)
        for converted in to_float.resample(None):
            yield converted.to_ndarray().astype(np.float32, copy=False)


class AudioStream:
    """Decode ``path`` block by block, channel-converted and resampled on the fly.

    Iterating yields float32 ``[channels, n]`` blocks at ``sample_rate`` (the native rate when
    None; a block may then be a strided view); peak memory is a few blocks whatever the file's
    length. ``info`` is the header before decoding. After iteration ``frames_in`` is the number of
    native frames decoded and ``truncated`` says whether the header promised clearly more.
    Undecodable files raise UserError, from the constructor or (for errors mid-file) from iteration.
    """

    def __init__(
        self,
        path: str | Path,
        sample_rate: int | None = None,
        channels: int | None = None,
        block_seconds: float = DEFAULT_BLOCK_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.info = probe_audio(self.path)
        self.sample_rate = int(sample_rate or self.info.sample_rate)
        self.channels = int(channels or self.info.channels)
        if self.info.channels > 1 and self.channels > self.info.channels:
            convert_channels(np.zeros((self.info.channels, 1), np.float32), self.channels)  # raises the UserError
        self.block_frames = max(1024, int(block_seconds * self.info.sample_rate))
        self.frames_in = 0
        # Frames the header promises and how many may be missing before the file counts as truncated:
        # exact for PCM/FLAC, a tolerance for an MP3's Xing/size-based estimate, unknown otherwise.
        self.declared_frames: int | None = None
        self._tolerance = 0
        if self.info.frames and self.info.exact_length:
            self.declared_frames = self.info.frames
        elif self.info.frames and self.info.backend == "soundfile" and self.info.format == "MP3":
            self.declared_frames = self.info.frames
            self._tolerance = max(self.info.sample_rate, self.info.frames // 50)

    @property
    def truncated(self) -> bool:
        """True when the header declared (clearly) more frames than could be decoded."""
        return self.declared_frames is not None and self.frames_in < self.declared_frames - self._tolerance

    def _native_blocks(self) -> Iterator[np.ndarray]:
        if self.info.backend == "soundfile":
            try:
                yield from _blocks_soundfile(self.path, self.block_frames)
                if self.frames_in:
                    return
                sf_error: BaseException = RuntimeError("libsndfile decoded no frames")
            except Exception as sf_err:
                if self.frames_in:  # failed mid-file: do not restart with another decoder
                    where = f"{self.path}: decoding failed after {self._seconds_in():.2f} s"
                    raise UserError(f"{where}: {sf_err}") from None
                sf_error = sf_err
            try:  # libsndfile opened the header but could not decode: ffmpeg may
                self.info = _probe_pyav(self.path)
            except Exception as av_err:
                raise _undecodable(self.path, sf_error, av_err) from None
        try:
            yield from _blocks_pyav(self.path)
        except UserError:
            raise
        except Exception as av_err:
            if self.frames_in:
                raise UserError(f"{self.path}: decoding failed after {self._seconds_in():.2f} s: {av_err}") from None
            raise UserError(f"{self.path}: cannot decode audio (ffmpeg: {av_err}); is it an audio file?") from None

    def _seconds_in(self) -> float:
        return self.frames_in / self.info.sample_rate

    def __iter__(self) -> Iterator[np.ndarray]:
        resampler = None
        native_rate = None
        for block in self._native_blocks():
            if block.shape[1] == 0:
                continue
            self.frames_in += block.shape[1]
            block = convert_channels(block, self.channels)
            if native_rate is None:
                native_rate = self.info.sample_rate
                if native_rate != self.sample_rate:
                    import soxr

                    resampler = soxr.ResampleStream(
                        native_rate, self.sample_rate, self.channels, dtype="float32", quality="HQ"
                    )
            if resampler is not None:
                out = resampler.resample_chunk(np.ascontiguousarray(block.T))
                if out.shape[0]:
                    yield np.ascontiguousarray(out.T)
            else:
                yield block
        if resampler is not None:
            out = resampler.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
            if out.shape[0]:
                yield np.ascontiguousarray(out.T)


def stream_audio(
    path: str | Path,
    sample_rate: int | None = None,
    channels: int | None = None,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
) -> AudioStream:
    """Iterable of float32 ``[channels, n]`` blocks of ``path`` at ``sample_rate``; see :class:`AudioStream`."""
    return AudioStream(path, sample_rate, channels, block_seconds)


def load_audio(path: str | Path, sample_rate: int | None = None, channels: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a whole file → (float32 ``[C, T]`` in [-1, 1], sample rate in Hz).

    ``sample_rate``/``channels`` convert when given (soxr HQ; mean to mono, mono copied to all
    channels, else the first channels). UserError for a missing, empty or undecodable file.
    """
    stream = AudioStream(path, None, channels)
    blocks = list(stream)
    if not blocks:
        raise UserError(f"{stream.path}: contains no audio frames")
    wav = np.concatenate(blocks, axis=1) if len(blocks) > 1 else np.ascontiguousarray(blocks[0])
    rate = stream.info.sample_rate
    if sample_rate and sample_rate != rate:
        wav, rate = resample(wav, rate, int(sample_rate)), int(sample_rate)
    return wav, rate


# --------------------------------------------------------------------------- writing


def _write_wav_pcm16(path: Path, wav: np.ndarray, sample_rate: int) -> None:
    """Plain PCM16 WAV of float ``[C, T]`` (C <= 2): round(x * 32767) clipped to int16, three times
    faster than libsndfile's float conversion (which rounds differently, by at most 1 LSB)."""
    import struct

    channels, frames = wav.shape
    data = np.empty((frames, channels), np.float32)  # interleaved frames
    np.multiply(wav.T, np.float32(32767.0), out=data)
    np.clip(data, -32768.0, 32767.0, out=data)
    np.rint(data, out=data)
    pcm = data.astype("<i2")
    block_align = 2 * channels
    header = b"RIFF" + struct.pack("<I", 36 + pcm.nbytes) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16)
    header += b"data" + struct.pack("<I", pcm.nbytes)
    with open(path, "wb") as f:
        f.write(header)
        f.write(memoryview(pcm).cast("B"))


def save_audio(path: str | Path, wav: Any, sample_rate: int) -> None:
    """Write ``wav`` (np.ndarray or torch.Tensor, ``[C, T]`` or ``[T]``, float in [-1, 1]) atomically.

    Format from the suffix: ``.wav`` (PCM 16-bit) or ``.flac`` (16-bit). Values outside [-1, 1]
    are clipped. The file appears complete or not at all (temp file + rename).
    """
    import soundfile as sf

    path = Path(path)
    fmt = _WRITE_SUBTYPES.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: cannot write {path.suffix or 'no suffix'!r}; use .wav or .flac")
    if int(sample_rate) <= 0:
        raise UserError(f"{path}: sample_rate must be positive, got {sample_rate}")
    wav = _as_channels_first(wav)
    with atomic_path(path, fsync=False) as tmp:
        if fmt[0] == "WAV" and wav.shape[0] <= 2 and wav.nbytes // 2 < 2**32 - 64:
            _write_wav_pcm16(tmp, wav, int(sample_rate))
        else:
            sf.write(str(tmp), np.clip(wav, -1.0, 1.0).T, int(sample_rate), format=fmt[0], subtype=fmt[1])
