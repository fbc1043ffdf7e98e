"""A thin ctypes binding to libespeak-ng that returns audio *and* word timing events.

Why ctypes and not the ``espeak-ng`` command line: the command line cannot report where each word
starts in the generated audio, and those positions are what give whole-phrase synthesis exact
ground-truth letter spans. The library is installed with the ``espeak-ng`` Debian package
(``libespeak-ng1``), so no development headers or extra Python packages are needed; the structure
layouts below mirror ``/usr/include/espeak-ng/speak_lib.h`` (espeak-ng 1.51).

libespeak-ng keeps global state (one voice, one callback), so :class:`Espeak` is a per-process
singleton guarded by a lock. Worker processes each get their own instance. The library also carries
synthesis state from one call to the next (measured: re-synthesizing the same text gives outputs a
few samples apart), and it cannot be re-initialized in-process (``espeak_Terminate`` followed by
``espeak_Initialize`` hangs the next synthesis). So output is reproducible per *sequence of calls
from a fresh process* -- which is how the command line and the training-data workers run -- not per
isolated call. Labels are always measured on the audio actually produced, so this never makes a
label wrong.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass

import numpy as np
import soxr

#: Output sample rate of every synthesized clip. 16 kHz mono is what the pipeline decodes to.
TARGET_SR = 16_000

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SSML = 0x10
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_INITIALIZE_PHONEME_EVENTS = 0x0001
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_WORDGAP = 7


class _EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h (the union ``id`` is 8 bytes, pointer-aligned)."""

    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    )


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


class EspeakError(RuntimeError):
    """libespeak-ng is missing, or refused a voice or a synthesis request."""


@dataclass(frozen=True)
class PhonemeEvent:
    """Start of one phoneme (espeak-ng mnemonic, e.g. ``b``, ``i:``, ``_:`` for a pause)."""

    name: str
    start_s: float

    @property
    def is_pause(self) -> bool:
        return self.name.startswith("_")


@dataclass(frozen=True)
class WordEvent:
    """One word of the output: character offset into the input text, start time, and the
    phoneme events espeak-ng reported after this word's event and before the next word's.

    Grouping follows the order of the event stream, not the timestamps: a word's last phoneme can
    carry the same timestamp as the next word's event (seen for ``l`` in ``L``), and grouping by
    time would hand it to the wrong letter.
    """

    text_position: int
    start_s: float
    phonemes: tuple[PhonemeEvent, ...]


@dataclass(frozen=True)
class Synthesis:
    """Float32 audio at :data:`TARGET_SR` plus the word and phoneme events of the utterance."""

    audio: np.ndarray
    words: tuple[WordEvent, ...]

    @property
    def duration_s(self) -> float:
        return len(self.audio) / TARGET_SR


def _load_library() -> ctypes.CDLL:
    for name in ("libespeak-ng.so.1", ctypes.util.find_library("espeak-ng")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise EspeakError("libespeak-ng not found; install it with `apt-get install -y espeak-ng`")


class Espeak:
    """Process-wide synthesizer. Use :meth:`get` rather than constructing it."""

    _instance: Espeak | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._lib = _load_library()
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Synth.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        self._lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        self._lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        self._lib.espeak_ng_GetSampleRate.restype = ctypes.c_int
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_DONT_EXIT | _INITIALIZE_PHONEME_EVENTS
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate})")
        self._chunks: list[np.ndarray] = []
        # (event type, text position, sample index at the native rate, phoneme name)
        self._events: list[tuple[int, int, int, str]] = []
        # Keep a reference: ctypes callbacks are freed when the Python object is collected.
        self._callback = _CALLBACK(self._on_audio)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    @classmethod
    def get(cls) -> Espeak:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav: ctypes.Array, n: int, events: ctypes.Array) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            # `sample` is the exact sample index; `audio_position` is the same in whole ms.
            if ev.type == _EVENT_WORD:
                self._events.append((_EVENT_WORD, ev.text_position, ev.sample, ""))
            elif ev.type == _EVENT_PHONEME:
                name = bytes(ev.id).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._events.append((_EVENT_PHONEME, ev.text_position, ev.sample, name))
            i += 1
        return 0

    def synthesize(
        self,
        text: str,
        voice: str,
        *,
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        volume: int = 100,
        ssml: bool = True,
    ) -> Synthesis:
        """Synthesize ``text`` and return 16 kHz float32 audio with word and phoneme events.

        ``voice`` is an espeak-ng voice name with an optional variant, e.g. ``en-gb+f3``.
        ``rate`` is words per minute (80-450), ``pitch`` and ``pitch_range`` are 0-100.
        """
        with self._lock:
            self._chunks.clear()
            self._events.clear()
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise EspeakError(f"unknown espeak-ng voice {voice!r}")
            # An MBROLA voice switches the output to its diphone database's rate (16 kHz for
            # the English ones) while espeak_Initialize reported the formant synthesizer's
            # 22,050 Hz: sample positions and audio must be read at the voice's own rate.
            voice_sr = int(self._lib.espeak_ng_GetSampleRate())
            for param, value in (
                (_PARAM_RATE, rate),
                (_PARAM_PITCH, pitch),
                (_PARAM_RANGE, pitch_range),
                (_PARAM_VOLUME, volume),
                (_PARAM_WORDGAP, 0),
            ):
                self._lib.espeak_SetParameter(param, int(value), 0)
            data = text.encode("utf-8")
            flags = _CHARS_UTF8 | (_SSML if ssml else 0)
            err = self._lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None
            )
            if err != 0:
                raise EspeakError(f"espeak_Synth failed ({err}) for {text!r}")
            self._lib.espeak_Synchronize()
            native = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
            events = list(self._events)
        audio = native.astype(np.float32) / 32768.0
        if voice_sr != TARGET_SR and len(audio):
            audio = soxr.resample(audio, voice_sr, TARGET_SR, quality="HQ")
        audio = np.asarray(audio, dtype=np.float32)
        return Synthesis(audio=audio, words=self._group_words(events, voice_sr))

    def _group_words(
        self, events: list[tuple[int, int, int, str]], sample_rate: int
    ) -> tuple[WordEvent, ...]:
        words: list[WordEvent] = []
        current: tuple[int, int] | None = None
        phones: list[PhonemeEvent] = []
        for kind, text_pos, sample, name in events:
            if kind == _EVENT_WORD:
                if current is not None:
                    words.append(_word(current, phones, sample_rate))
                current, phones = (text_pos, sample), []
            elif current is not None:
                phones.append(PhonemeEvent(name=name, start_s=sample / sample_rate))
        if current is not None:
            words.append(_word(current, phones, sample_rate))
        return tuple(words)


def _word(head: tuple[int, int], phones: list[PhonemeEvent], sample_rate: int) -> WordEvent:
    return WordEvent(text_position=head[0], start_s=head[1] / sample_rate, phonemes=tuple(phones))
