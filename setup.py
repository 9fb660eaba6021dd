"""mrt_distill: data-free streaming consistency distillation of Magenta RealTime."""

import pathlib
import re

from setuptools import find_namespace_packages, setup

_HERE = pathlib.Path(__file__).parent
_VERSION = re.search(r'__version__ = "([^"]+)"',
                     (_HERE / "mrt_distill" / "__init__.py").read_text()).group(1)

CORE = [
    "jax>=0.6",
    "jaxlib>=0.6",
    "flax>=0.10",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "grain>=0.2.10",
    "ml-collections>=1.0",
    "gin-config>=0.5",
    "numpy>=1.26",
    "msgpack>=1.0",
    "tensorstore>=0.1.70",
    "soundfile>=0.12",
    "librosa>=0.10",
    "jaxtyping>=0.2.36",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    # TensorBoard event files without TensorFlow.
    "tensorboardX>=2.6",
    # Reference world: General MIDI rendering (tinysoundfont is installed
    # separately with --no-deps: its wheel declares pyaudio, which only live
    # playback needs and which needs PortAudio headers to build).
    "pretty_midi>=0.2.10",
    # Live serving: the local web player and OSC control.
    "websockets>=15",
    "python-osc>=1.10",
]

EXTRAS = {
    # Browser test drives Debian's /usr/bin/chromium (never a downloaded
    # browser); the notebook test executes colab/ headless.
    # tests/test_wheel.py builds the wheel without build isolation: a fresh
    # venv's setuptools (65) needs the `wheel` package for bdist_wheel.
    "test": ["pytest>=8", "pytest-timeout>=2.3", "playwright>=1.50",
             "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
             "ipywidgets>=8.1", "wheel>=0.42"],
    # Cloud TPU VMs: the libtpu build that matches jax.
    "tpu": ["jax[tpu]"],
    "gpu": ["jax[cuda12]"],
    # TensorFlow-side interop, never in core: seqio / TFDS prompt sets, and
    # the real Magenta RT assets (SpectroStream and MusicCoCa are TF
    # SavedModels; tf2jax makes the codec a JAX function; MusicCoCa's text
    # tokeniser is SentencePiece).
    "interop": ["seqio", "tensorflow-datasets", "tensorflow>=2.18",
                "tf2jax>=0.3.8", "sentencepiece>=0.2"],
}

setup(
    name="mrt_distill",
    version=_VERSION,
    description=("Data-free streaming consistency distillation of Magenta "
                 "RealTime into a one-step streaming student, in JAX/Flax."),
    long_description=(_HERE / "README.md").read_text() if (
        _HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The repository's configs/ and gin/ ship as mrt_distill.configs and
    # mrt_distill.gin, so `mrt-distill distill` finds its default config and
    # the teacher gin files in any install (a wheel on a TPU VM too). The
    # data folders (assets, the web player) are namespace packages, so
    # setuptools packages them as such instead of warning.
    packages=find_namespace_packages(include=["mrt_distill", "mrt_distill.*"],
                                     exclude=["*.__pycache__"])
    + ["mrt_distill.configs", "mrt_distill.gin"],
    package_dir={"mrt_distill.configs": "configs", "mrt_distill.gin": "gin"},
    package_data={"mrt_distill.assets.reference": ["*"],
                  "mrt_distill.serve.web": ["*"],
                  "mrt_distill.gin": ["*.gin"]},
    include_package_data=True,
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["mrt-distill=mrt_distill.main:main"]},
    license="Apache-2.0",
)
