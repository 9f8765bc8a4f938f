"""vicuna-ops: fine-tune and serve Vicuna-style chat models on spot GPUs, around SkyPilot."""

__version__ = "0.1.0"
