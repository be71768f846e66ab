"""Audio decoding in the data-loader workers: any readable file to float32 mono at one rate, crops.

`probe` reads a recording's header (duration, rate, channels) without decoding its samples;
`load_audio` decodes the whole recording. Either raises `AudioError` (a `ValueError`) whose
message starts with the example's origin and says what to do; no other exception leaves them.
Conversion rules:

- any channel count: down-mixed to mono by the mean of the channels (a left-only tone at
  amplitude a becomes a/2 in stereo);
- integer PCM (8/16/24/32-bit): scaled to [-1, 1) by libsndfile (``dtype="float32"``); float
  files are returned as stored (values beyond +-1 kept, NaN or infinity: an error);
- another rate: ``scipy.signal.resample_poly`` with up/down = target/source over their gcd
  (44.1 kHz to 16 kHz: up 160, down 441); its anti-alias filter may overshoot +-1 slightly;
- recordings longer than `MAX_FILE_SECONDS` are refused from the header alone (never decoded),
  so one hour-long file cannot stall or exhaust a worker.

`crop` is a pure function of (samples, max_samples, seed): a window drawn from one
``numpy.random.Generator(PCG64(seed))`` when training, the first samples when evaluating.
`log_mel_sheet` draws what `sft-launch preview` shows. numpy, soundfile and scipy only (matplotlib
for the picture, imported when drawing): no torch here.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from scipy.signal import resample_poly, stft

from launcher.data.encode.images import augmentation_seed
from launcher.data.encode.sources import head, open_source

# longer recordings are refused (an hour-long WAV is a mistake in a training set)
MAX_FILE_SECONDS = 600.0
_HAS_MP3 = "MP3" in soundfile.available_formats()
READ_FORMATS = "WAV, FLAC, OGG/Vorbis" + (" and MP3" if _HAS_MP3 else "")
FORMATS_HINT = (f"audio files are read as {READ_FORMATS}"
                + ("" if _HAS_MP3 else " (not MP3: this libsndfile lacks it; convert with ffmpeg)")
                + "; convert it to one of these, or drop the example")


class AudioError(ValueError):
    """A file or value that is not readable audio; the message starts with its origin."""


@dataclass(frozen=True)
class AudioInfo:
    """What the header says: duration in seconds, samples per second, channel count."""

    seconds: float
    sample_rate: int
    channels: int


def _check_source(source: Any, origin: str) -> str | io.BytesIO:
    """A path that exists and is not empty, or the bytes as a stream."""
    return open_source(source, origin, AudioError, "audio", FORMATS_HINT)


def _probe_stream(stream: str | io.BytesIO, origin: str) -> AudioInfo:
    try:
        header = soundfile.info(stream)
    except FileNotFoundError:
        raise AudioError(f"{origin}: file not found; check the path") from None
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError):
        raise AudioError(f"{origin}: not audio (libsndfile cannot read it); it starts with "
                         f"{head(stream)!r}; {FORMATS_HINT}") from None
    finally:
        if isinstance(stream, io.BytesIO):
            stream.seek(0)
    rate, frames, channels = int(header.samplerate), int(header.frames), int(header.channels)
    if rate <= 0 or channels <= 0:
        raise AudioError(f"{origin}: header says {rate} Hz, {channels} channels; "
                         f"re-export the file")
    seconds = frames / rate
    if seconds > MAX_FILE_SECONDS:
        raise AudioError(f"{origin}: {seconds:.1f} s long, longer than the "
                         f"{MAX_FILE_SECONDS:g} s a training example may be; cut it into clips")
    if frames <= 0:
        raise AudioError(f"{origin}: no samples (0 frames, a header only); re-export it, "
                         f"or drop the example")
    return AudioInfo(seconds=seconds, sample_rate=rate, channels=channels)


def probe(source: str | bytes, origin: str) -> AudioInfo:
    """Duration, rate and channels of `source` (a file path, or the encoded bytes of a
    recording) from its header (soundfile.info), without decoding the samples. Not found, empty,
    not audio, no frames, or longer than `MAX_FILE_SECONDS`: an `AudioError` whose message
    starts with `origin`."""
    return _probe_stream(_check_source(source, origin), origin)


def _decode_mono(stream: str | io.BytesIO, origin: str) -> np.ndarray:
    """All frames as float32, channels averaged (block by block: memory for mono only)."""
    try:
        with soundfile.SoundFile(stream) as file:
            if file.channels == 1:
                return file.read(dtype="float32", always_2d=True)[:, 0]
            blocks = [block.mean(axis=1, dtype=np.float32)
                      for block in file.blocks(blocksize=1 << 16, dtype="float32",
                                               always_2d=True)]
    except (soundfile.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"{origin}: truncated or corrupt audio ({type(exc).__name__}: {exc}); "
                         f"re-download or re-encode it, or drop the example") from exc
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def load_audio(source: str | bytes, origin: str, sample_rate: int) -> np.ndarray:
    """The whole recording as a 1-D float32 array, mono at `sample_rate`: channels averaged,
    integer PCM scaled to [-1, 1], resampled with scipy.signal.resample_poly when its own rate
    differs (the module docstring has the rules). It probes first, so it raises the same
    `AudioError`s as `probe`, and one for samples that are NaN or infinite."""
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a whole number of Hz > 0, got {sample_rate!r}")
    target = int(sample_rate)
    stream = _check_source(source, origin)
    info = _probe_stream(stream, origin)
    samples = _decode_mono(stream, origin)
    if not samples.size:
        raise AudioError(f"{origin}: no samples could be decoded; re-export it, "
                         f"or drop the example")
    if not np.isfinite(samples).all():
        raise AudioError(f"{origin}: samples that are NaN or infinite (a corrupt float file); "
                         f"re-export it, or drop the example")
    if info.sample_rate != target:
        common = math.gcd(info.sample_rate, target)
        samples = resample_poly(samples, target // common, info.sample_rate // common)
    return np.ascontiguousarray(samples, dtype=np.float32)


def crop(samples: np.ndarray, max_samples: int, seed: int | None) -> np.ndarray:
    """At most `max_samples` along the first axis: a random window (numpy Generator(PCG64(seed)),
    start uniform over all that fit) when `seed` is given (training), the first `max_samples`
    otherwise (evaluation: deterministic). Shorter input is returned as is; a window is a view."""
    if isinstance(max_samples, bool) or int(max_samples) != max_samples or max_samples < 1:
        raise ValueError(f"max_samples must be a whole number >= 1, got {max_samples!r}")
    length, size = len(samples), int(max_samples)
    if length <= size:
        return samples
    if seed is None:
        return samples[:size]
    rng = np.random.Generator(np.random.PCG64(seed))
    start = int(rng.integers(0, length - size + 1))
    return samples[start:start + size]


def crop_seed(seed: int, epoch: int, index: int) -> int:
    """A stable 63-bit seed for one example's crop in one epoch, so a resumed or elastic run
    hears the same clips: the scheme of `images.augmentation_seed` (the same value for the same
    inputs; one example is either an image or a recording)."""
    return augmentation_seed(seed, epoch, index)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, evenly spaced on the HTK mel scale from 0 Hz
    to the Nyquist frequency, each peaking at 1, weighed at the FFT bins' frequencies."""
    def to_mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    edges_mel = np.linspace(0.0, float(to_mel(np.array(sample_rate / 2.0))), n_mels + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - low) / (centre - low)
    falling = (high - bins[None, :]) / (high - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def log_mel(samples: np.ndarray, sample_rate: int, n_mels: int = 80) -> np.ndarray:
    """(n_mels, frames) power in dB (floor: 80 dB under the peak), 25 ms Hann windows every
    10 ms, FFT length the next power of two."""
    signal = np.asarray(samples, dtype=np.float64).reshape(-1)
    if not signal.size:
        raise ValueError("no samples to draw")
    window = max(2, round(0.025 * sample_rate))
    hop = max(1, round(0.010 * sample_rate))
    n_fft = 1 << (window - 1).bit_length()
    if signal.size < window:
        signal = np.pad(signal, (0, window - signal.size))
    _, _, spectrum = stft(signal, fs=sample_rate, window="hann", nperseg=window,
                          noverlap=window - hop, nfft=n_fft)
    power = mel_filterbank(sample_rate, n_fft, n_mels) @ (np.abs(spectrum) ** 2)
    decibels = 10.0 * np.log10(np.maximum(power, 1e-12))
    return np.maximum(decibels, decibels.max() - 80.0)


def log_mel_sheet(clips: list[np.ndarray], sample_rate: int, captions: list[str],
                  out: Path, n_mels: int = 80) -> None:
    """One PNG at `out` of several recordings' log-mel spectrograms, one above the other, each
    titled with its caption (what `sft-launch preview` draws for audio)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 2.2 * len(clips)), dpi=100)
    FigureCanvasAgg(figure)
    for index, (samples, caption) in enumerate(zip(clips, captions, strict=True), 1):
        axis = figure.add_subplot(len(clips), 1, index)
        seconds = len(samples) / sample_rate
        axis.imshow(log_mel(samples, sample_rate, n_mels), origin="lower", aspect="auto",
                    cmap="magma", extent=(0.0, seconds, 0.0, float(n_mels)),
                    interpolation="nearest")
        axis.set_title(f"{caption}: {seconds:.2f} s", fontsize=9)
        axis.set_ylabel("mel band")
    figure.tight_layout()
    figure.savefig(Path(out), format="png")


FRAMES_PER_SECOND = 100  # a recording's length is counted in 10 ms frames (grouping sorts by it)


def frames(seconds: float) -> int:
    """A duration in 10 ms frames (at least one)."""
    return max(1, round(seconds * FRAMES_PER_SECOND))


def frames_computed(shape: tuple[int, ...], sample_rate: int) -> int:
    """10 ms frames a batch of model inputs computes, padding included: features are batch x
    bins x frames (Whisper's: its whole window per clip), raw samples batch x samples."""
    if len(shape) == 3:
        return shape[0] * shape[-1]
    return shape[0] * shape[-1] * FRAMES_PER_SECOND // sample_rate


def fit_window(extractor: Any, seconds: float) -> bool:
    """Cut a feature extractor's fixed window (Whisper's 30 s) to `seconds` when that is
    shorter, in whole samples and frames (also once saved and reloaded); False when it has no
    fixed window (it pads to the longest clip)."""
    if not hasattr(extractor, "nb_max_frames"):
        return False
    seconds = min(seconds, extractor.chunk_length)
    extractor.chunk_length = int(seconds) if float(seconds).is_integer() else seconds
    extractor.n_samples = round(seconds * extractor.sampling_rate)
    extractor.nb_max_frames = extractor.n_samples // extractor.hop_length
    return True
