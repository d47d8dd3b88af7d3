"""In-cluster runtime of llmops.gpu_stack (model stager, head launcher)."""

__version__ = "0.1.0"
