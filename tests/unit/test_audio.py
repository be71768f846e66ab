"""Worker-side audio decoding (any file to float32 mono at one rate, clear errors) and crops."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from launcher.data.encode import audio
from launcher.data.encode.audio import (
    MAX_FILE_SECONDS,
    AudioError,
    AudioInfo,
    crop,
    crop_seed,
    load_audio,
    log_mel_sheet,
    mel_filterbank,
    probe,
)
from launcher.data.encode.images import augmentation_seed
from tests.conftest import REPO

FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
JACKSON = FSDD / "0_jackson_0.wav"


def _tone(rate: int, seconds: float, hz: float = 440.0, amplitude: float = 0.8) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(round(rate * seconds)) / rate)
            ).astype(np.float32)


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(samples, dtype=np.float64) ** 2)))


def test_a_real_recording_loads_at_16k_with_duration_and_content_kept() -> None:
    original, _ = soundfile.read(JACKSON, dtype="float32")
    info = probe(str(JACKSON), "row 1")
    assert info == AudioInfo(seconds=len(original) / 8000, sample_rate=8000, channels=1)
    samples = load_audio(str(JACKSON), "row 1", 16000)
    assert samples.dtype == np.float32 and samples.ndim == 1 and samples.flags.c_contiguous
    assert abs(len(samples) - info.seconds * 16000) <= 1
    assert _rms(samples) == pytest.approx(_rms(original), rel=0.03)
    # every other sample of a 2x upsampling is (nearly) the original
    assert np.abs(samples[::2] - original).max() < 0.05 * np.abs(original).max()
    from_bytes = load_audio(JACKSON.read_bytes(), "row 1", 16000)
    np.testing.assert_array_equal(from_bytes, samples)


def test_stereo_24_bit_48k_is_down_mixed_and_resampled(tmp_path: Path) -> None:
    left = _tone(48000, 1.0)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, np.zeros_like(left)], axis=1), 48000, subtype="PCM_24")
    assert probe(str(path), "clip").channels == 2
    samples = load_audio(path, "clip", 16000)
    assert len(samples) == 16000
    middle = samples[1000:-1000]  # away from the filter's edge effects
    assert np.abs(middle).max() == pytest.approx(0.4, rel=0.01)  # half of the left's 0.8
    assert _peak_hz(samples, 16000) == pytest.approx(440.0, abs=1.0)


def _formats() -> list[tuple[str, str]]:
    return [("FLAC", "PCM_16"), ("OGG", "VORBIS")]


@pytest.mark.parametrize(("container", "subtype"), _formats())
def test_compressed_formats_decode(tmp_path: Path, container: str, subtype: str) -> None:
    if subtype not in soundfile.available_subtypes(container):
        pytest.skip(f"this libsndfile cannot write {container}/{subtype}")
    path = tmp_path / f"tone.{container.lower()}"
    try:
        soundfile.write(path, _tone(44100, 1.0), 44100, format=container, subtype=subtype)
    except soundfile.SoundFileError as exc:
        pytest.skip(f"this libsndfile cannot write {container}/{subtype}: {exc}")
    samples = load_audio(str(path), "clip", 16000)
    assert abs(len(samples) - 16000) <= 1
    assert _peak_hz(samples, 16000) == pytest.approx(440.0, abs=1.0)
    assert _rms(samples[1000:-1000]) == pytest.approx(0.8 / np.sqrt(2), rel=0.03)


def test_float_wav_is_kept_and_integer_pcm_scaled(tmp_path: Path) -> None:
    values = np.array([0.0, 0.25, -0.5, 1.0, -1.0, 0.125], dtype=np.float32)
    soundfile.write(tmp_path / "f.wav", values, 8000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "f.wav", "f", 8000), values)
    soundfile.write(tmp_path / "i.wav", np.array([0, 16384, -32768], dtype=np.int16), 8000)
    np.testing.assert_array_equal(load_audio(tmp_path / "i.wav", "i", 8000), [0.0, 0.5, -1.0])


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _header_only(path: Path) -> Path:
    soundfile.write(path, np.zeros((0, 1), dtype=np.float32), 8000)
    return path


def _nan_wav(path: Path) -> Path:
    soundfile.write(path, np.array([0.1, np.nan, 0.2], dtype=np.float32), 8000, subtype="FLOAT")
    return path


@pytest.mark.parametrize(("make", "expected"), [
    (lambda d: _written(d / "a.wav", b""), "empty file (0 bytes)"),
    (lambda d: _written(d / "a.wav", b"hello, not a recording"),
     "not audio (libsndfile cannot read it); it starts with b'hello"),
    (lambda d: d / "missing.wav", "file not found"),
    (lambda d: b"\x00garbage" * 64, "not audio"),
    (lambda d: b"", "empty audio data"),
    (lambda d: d, "is a folder"),
    (lambda d: 3.5, "float is not a path or audio bytes"),
    (lambda d: _header_only(d / "h.wav"), "no samples (0 frames"),
    (lambda d: _nan_wav(d / "n.wav"), "NaN or infinite"),
], ids=["zero-byte", "text", "missing", "garbage-bytes", "empty-bytes", "folder", "not-a-source",
        "header-only", "nan"])
def test_unreadable_sources_are_audio_errors_starting_with_the_origin(tmp_path: Path, make,
                                                                      expected: str) -> None:
    source = make(tmp_path)
    with pytest.raises(AudioError) as caught:
        load_audio(source, "data/train.jsonl:7", 16000)
    message = str(caught.value)
    assert message.startswith("data/train.jsonl:7: ") and expected in message
    if expected.startswith("not audio"):
        assert "WAV, FLAC, OGG/Vorbis" in message


def test_an_hour_long_file_is_refused_from_its_header(tmp_path: Path, monkeypatch) -> None:
    """A real 3600 s silent 8 kHz 16-bit WAV (57.6 MB of zeros; a sparse file where the disk
    allows), refused by probe and load_audio without decoding a sample."""
    path, frames = tmp_path / "hour.wav", 3600 * 8000
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)  # PCM, mono, 8 kHz, 16-bit
    with open(path, "wb") as file:
        file.write(b"RIFF" + struct.pack("<I", 36 + 2 * frames) + b"WAVEfmt " + fmt
                   + b"data" + struct.pack("<I", 2 * frames))
        file.truncate(44 + 2 * frames)
    try:
        assert soundfile.info(path).frames == frames  # it is a valid hour of silence
        start = time.perf_counter()
        with pytest.raises(AudioError) as caught:
            probe(str(path), "long.wav")
        assert time.perf_counter() - start < 1.0
        assert str(caught.value) == ("long.wav: 3600.0 s long, longer than the 600 s a training "
                                     "example may be; cut it into clips")
        monkeypatch.setattr(audio, "_decode_mono", lambda *a: pytest.fail("decoded it"))
        with pytest.raises(AudioError, match=r"^long\.wav: 3600\.0 s long"):
            load_audio(str(path), "long.wav", 16000)
    finally:
        path.unlink()


def test_a_file_at_the_limit_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "limit.wav"
    soundfile.write(path, np.zeros(int(MAX_FILE_SECONDS * 100), dtype=np.int16), 100)
    assert probe(path, "x").seconds == MAX_FILE_SECONDS


def test_bad_sample_rate_argument_is_a_value_error(tmp_path: Path) -> None:
    for rate in (0, -16000, 16000.5, True):
        with pytest.raises(ValueError, match="sample_rate"):
            load_audio(b"whatever", "x", rate)


def test_crop_is_seeded_training_and_first_window_evaluation() -> None:
    samples = np.arange(10000, dtype=np.float32)
    first = crop(samples, 1000, seed=7)
    assert len(first) == 1000 and np.array_equal(first, crop(samples, 1000, seed=7))
    assert np.all(np.diff(first) == 1)  # one contiguous window
    starts = {int(crop(samples, 1000, seed=s)[0]) for s in range(20)}
    assert len(starts) > 15  # different seeds, different windows
    np.testing.assert_array_equal(crop(samples, 1000, seed=None), samples[:1000])
    assert crop(samples, 20000, seed=3) is samples  # shorter: as is
    assert crop(samples, 10000, seed=None) is samples
    whole = {int(crop(samples, 9999, seed=s)[0]) for s in range(64)}
    assert whole == {0, 1}  # every start that fits, and only those
    with pytest.raises(ValueError, match="max_samples"):
        crop(samples, 0, seed=1)


def test_crop_seed_is_stable_and_the_image_scheme() -> None:
    assert crop_seed(1234, 2, 17) == 721994507125541284
    for args in [(0, 0, 0), (1234, 2, 17), (7, 99, 123456)]:
        assert crop_seed(*args) == augmentation_seed(*args)
        assert 0 <= crop_seed(*args) < 2**63
    assert crop_seed(1234, 2, 17) != crop_seed(1234, 3, 17)


def test_mel_filterbank_covers_the_spectrum() -> None:
    bank = mel_filterbank(16000, 512, 80)
    assert bank.shape == (80, 257)
    assert np.all(bank.max(axis=1) > 0.3) and bank.max() <= 1.0
    assert np.argmax(bank[0]) < np.argmax(bank[-1])


def test_log_mel_sheet_draws_each_recording(tmp_path: Path) -> None:
    samples = load_audio(JACKSON, "row 1", 16000)
    out = tmp_path / "mel.png"
    log_mel_sheet([samples, samples[:10]], 16000, ["zero", "under one window"], out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 5_000 < len(data) < 1_000_000
    with Image.open(out) as picture:
        assert picture.size == (800, 440)  # 2.2 inches a recording at 100 dpi
