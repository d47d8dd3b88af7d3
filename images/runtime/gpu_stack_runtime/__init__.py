"""In-cluster runtime of llmops.gpu_stack: model stager and Ray/vLLM head launcher."""
